package chunkstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
)

// dump is a synthetic SQL dump of n rows: COPY lines with a numeric key,
// text and random numbers, the shape a pg_dump table has.
func dump(rows int, seed uint64, edit func(i int) (string, bool)) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	var b bytes.Buffer
	b.WriteString("COPY public.t (id, name, a, b) FROM stdin;\n")
	for i := range rows {
		line := fmt.Sprintf("%d\tname-%x\t%d\t%d\n", i, r.Uint64(), r.IntN(1e9), r.IntN(1e6))
		if edit != nil {
			if l, ok := edit(i); ok {
				line = l
			}
		}
		b.WriteString(line)
	}
	b.WriteString("\\.\n")
	return b.Bytes()
}

func newLocal(t testing.TB) storage.Storage {
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func identity(t testing.TB) *age.X25519Identity {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// keys are the recipients and identities of an encrypted job (none for a
// plain one).
func keys(id *age.X25519Identity) ([]age.Recipient, []age.Identity) {
	if id == nil {
		return nil, nil
	}
	return []age.Recipient{id.Recipient()}, []age.Identity{id}
}

func readBack(t testing.TB, st storage.Storage, key string, raw []byte, ids []age.Identity) {
	t.Helper()
	ix, err := ReadIndex(context.Background(), st, key, "", ids...)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n, err := ix.Read(context.Background(), st, Dir(key), &out)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if n != int64(len(raw)) || !bytes.Equal(out.Bytes(), raw) {
		t.Fatalf("read %s: %d bytes, not the %d written", key, n, len(raw))
	}
}

func TestChainRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, compression string
		encrypted         bool
	}{{"zstd-encrypted", pipeline.Zstd, true}, {"gzip-plain", pipeline.Gzip, false}, {"none-plain", pipeline.None, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st := newLocal(t)
			var id *age.X25519Identity
			if tc.encrypted {
				id = identity(t)
			}
			recipients, ids := keys(id)
			const rows = 400_000 // ~17 MB
			full := dump(rows, 1, nil)
			w := Write{Store: st, Key: "job/a.sql" + IndexSuffix, BackupID: "a", JobID: "job", Compression: tc.compression, Recipients: recipients}
			fix, _, err := w.Run(ctx, bytes.NewReader(full))
			if err != nil {
				t.Fatal(err)
			}
			if fix.Type != Full || fix.Base != "a" || fix.NewRawBytes != int64(len(full)) || len(fix.DependsOn()) != 0 {
				t.Fatalf("full: %+v", fix.Type)
			}
			// 1% of the rows changed in 5 clusters, 0.5% appended.
			changed := dump(rows+rows/200, 1, func(i int) (string, bool) {
				if i%(rows/5) >= 1000 && i%(rows/5) < 1000+rows/100/5 {
					return fmt.Sprintf("%d\tchanged\t0\t0\n", i), true
				}
				return "", false
			})
			inc := Write{Store: st, Key: "job/b.sql" + IndexSuffix, BackupID: "b", JobID: "job", Compression: tc.compression, Recipients: recipients,
				Parent: fix, Type: Incremental}
			iix, _, err := inc.Run(ctx, bytes.NewReader(changed))
			if err != nil {
				t.Fatal(err)
			}
			ratio := float64(iix.StoredBytes) / float64(fix.StoredBytes)
			t.Logf("full %d raw → %d stored in %d chunks; incremental %d new chunks, %d stored (%.1f%% of the full)",
				fix.RawSize, fix.StoredBytes, len(fix.Chunks), iix.NewChunks, iix.StoredBytes, 100*ratio)
			if ratio > 0.15 {
				t.Errorf("incremental stored %.1f%% of the full", 100*ratio)
			}
			if iix.Parent != "a" || iix.Base != "a" || strings.Join(iix.DependsOn(), ",") != "a" {
				t.Errorf("incremental chain: parent %q base %q depends %v", iix.Parent, iix.Base, iix.DependsOn())
			}
			readBack(t, st, w.Key, full, ids)
			readBack(t, st, inc.Key, changed, ids)
			// Deleting the full's packs breaks the incremental, and the
			// error names the full.
			if _, err := DeletePacks(ctx, st, w.Key, "a"); err != nil {
				t.Fatal(err)
			}
			ix, err := ReadIndex(ctx, st, inc.Key, "", ids...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ix.Read(ctx, st, "job", io.Discard)
			var pe *PackError
			if !errors.As(err, &pe) || pe.Backup != "a" || !pe.Missing || !errors.Is(err, ErrDamaged) {
				t.Fatalf("read with the full's packs gone: %v", err)
			}
		})
	}
}

func TestDamageAndKeys(t *testing.T) {
	ctx := context.Background()
	st := newLocal(t)
	dir := t.TempDir()
	local, _ := storage.NewLocal(dir)
	st = local
	id := identity(t)
	recipients, ids := keys(id)
	raw := dump(100_000, 2, nil)
	w := Write{Store: st, Key: "job/a.sql" + IndexSuffix, BackupID: "a", JobID: "job", Compression: pipeline.Zstd, Recipients: recipients}
	_, data, err := w.Run(ctx, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if _, err := ReadIndex(ctx, st, w.Key, fmt.Sprintf("%x", sum), identity(t)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another key: %v", err)
	}
	if _, err := ReadIndex(ctx, st, w.Key, fmt.Sprintf("%x", sum)); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("no key: %v", err)
	}
	if _, err := ReadIndex(ctx, st, w.Key, strings.Repeat("0", 64), ids...); !errors.Is(err, ErrChecksum) {
		t.Fatalf("other checksum: %v", err)
	}
	// Nothing in storage shows the dump's content or a plain hash of it.
	objs, _ := st.List(ctx, "")
	for _, o := range objs {
		b, _ := os.ReadFile(path.Join(dir, o.Key))
		if bytes.Contains(b, []byte("COPY public.t")) || bytes.Contains(b, []byte("name-")) {
			t.Fatalf("%s holds plaintext", o.Key)
		}
	}
	// Flip one byte in the middle of the pack.
	p := path.Join(dir, PackKey("job", "a/0"))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ix, err := ReadIndex(ctx, st, w.Key, "", ids...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ix.Read(ctx, st, "job", io.Discard)
	var pe *PackError
	if !errors.As(err, &pe) || pe.Missing || pe.Backup != "a" {
		t.Fatalf("damaged pack: %v", err)
	}
	t.Log(err)
}

// failingReader returns err after n bytes.
type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestFailedBackupLeavesNothing(t *testing.T) {
	ctx := context.Background()
	st := newLocal(t)
	raw := dump(800_000, 3, nil) // several packs
	boom := errors.New("pg_dump: connection lost")
	w := Write{Store: st, Key: "job/a.sql" + IndexSuffix, BackupID: "a", JobID: "job", Compression: pipeline.None}
	_, _, err := w.Run(ctx, &failingReader{r: bytes.NewReader(raw), n: len(raw) - 100, err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	objs, _ := st.List(ctx, "")
	if len(objs) != 0 {
		t.Fatalf("a failed backup left %d objects, the first %s", len(objs), objs[0].Key)
	}
}

func BenchmarkWrite(b *testing.B) {
	raw := dump(2_000_000, 4, nil)
	recipients, _ := keys(identity(b))
	st := newLocal(b)
	b.SetBytes(int64(len(raw)))
	for i := 0; b.Loop(); i++ {
		w := Write{Store: st, Key: fmt.Sprintf("job/%d.sql.chunks", i), BackupID: fmt.Sprint(i), JobID: "job", Compression: pipeline.Zstd, Recipients: recipients}
		if _, _, err := w.Run(context.Background(), bytes.NewReader(raw)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTamperedIndex: an index whose entries point outside any pack, or
// claim more chunks than bytes, is refused when it is decoded: a reader
// (the control plane, for a download) never allocates what it says.
func TestTamperedIndex(t *testing.T) {
	ctx := context.Background()
	st := newLocal(t)
	w := Write{Store: st, Key: "job/a.sql" + IndexSuffix, BackupID: "a", JobID: "job", Compression: pipeline.Zstd}
	_, data, err := w.Run(ctx, bytes.NewReader(dump(50_000, 5, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for name, tamper := range map[string]func(ix *Index){
		"huge length":    func(ix *Index) { ix.Chunks[0].Len = 1 << 62 },
		"past the pack":  func(ix *Index) { ix.Chunks[0].Off = PackSize * 4 },
		"negative":       func(ix *Index) { ix.Chunks[0].Off = -1 },
		"raw too large":  func(ix *Index) { ix.Chunks[0].Raw = MaxSize + 1 },
		"sizes disagree": func(ix *Index) { ix.RawSize++ },
		"no such pack":   func(ix *Index) { ix.Chunks[0].Pack = len(ix.Packs) },
	} {
		ix, err := DecodeIndex(data)
		if err != nil {
			t.Fatal(err)
		}
		tamper(ix)
		bad, err := ix.encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeIndex(bad); err == nil {
			t.Errorf("%s: a tampered index was accepted", name)
		}
	}
}
