package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/rahatback/rahatback/testsupport"
)

// mixedData returns n bytes of deterministic data mixing incompressible
// random runs, SQL-like repetitive lines and zeros, so that compressors use
// both their compressed and stored block kinds.
func mixedData(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, 0, n+4096)
	for i := 0; len(out) < n; i++ {
		switch i % 3 {
		case 0:
			chunk := make([]byte, 16<<10+r.IntN(64<<10))
			for j := range chunk {
				chunk[j] = byte(r.Uint32())
			}
			out = append(out, chunk...)
		case 1:
			for range 200 + r.IntN(800) {
				out = fmt.Appendf(out, "%d\tuser_%d\tuser%d@example.com\t2024-0%d-1%d 10:%02d:00+00\t\\N\n",
					r.IntN(1e6), r.IntN(1e4), r.IntN(1e4), 1+r.IntN(9), r.IntN(10), r.IntN(60))
			}
		case 2:
			out = append(out, make([]byte, r.IntN(32<<10))...)
		}
	}
	return out[:n]
}

// compress compresses data with c, writing it in pieces of an awkward size.
func compress(t testing.TB, c string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewCompressor(&buf, c)
	if err != nil {
		t.Fatalf("NewCompressor(%q): %v", c, err)
	}
	for p := data; len(p) > 0; {
		n := min(len(p), 7919)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// decompress returns what NewDecompressor's reader gives for data, and the
// first error of NewDecompressor, Read or Close.
func decompress(c string, data []byte) ([]byte, error) {
	return decompressWith(c, data, io.ReadAll)
}

// decompressCopy is decompress through io.Copy, which uses WriteTo.
func decompressCopy(c string, data []byte) ([]byte, error) {
	return decompressWith(c, data, func(r io.Reader) ([]byte, error) {
		var buf bytes.Buffer
		_, err := io.Copy(&buf, r)
		return buf.Bytes(), err
	})
}

func decompressWith(c string, data []byte, read func(io.Reader) ([]byte, error)) ([]byte, error) {
	r, err := NewDecompressor(bytes.NewReader(data), c)
	if err != nil {
		return nil, err
	}
	out, err := read(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return out, err
}

// closeRecorder is a real in-memory writer that remembers being closed.
type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestCompressionRoundTrip(t *testing.T) {
	t.Parallel()
	data := mixedData(5<<20, 1)
	for _, c := range []string{Zstd, Gzip, None} {
		t.Run(c, func(t *testing.T) {
			stored := compress(t, c, data)
			for name, dec := range map[string]func(string, []byte) ([]byte, error){"Read": decompress, "WriteTo": decompressCopy} {
				got, err := dec(c, stored)
				if err != nil {
					t.Fatalf("decompress with %s: %v", name, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("round trip with %s changed the data: got %d bytes, want %d", name, len(got), len(data))
				}
			}
			t.Logf("%s: %d -> %d bytes (%.1f%%)", c, len(data), len(stored), 100*float64(len(stored))/float64(len(data)))
			if c != None && len(stored) >= len(data) {
				t.Errorf("%s did not compress: %d >= %d", c, len(stored), len(data))
			}

			// Small and odd reads, checked by the standard reader tests.
			r, err := NewDecompressor(iotest.HalfReader(bytes.NewReader(stored)), c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := iotest.TestReader(r, data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCompressionEmptyAndClose(t *testing.T) {
	for _, c := range []string{Zstd, Gzip, None} {
		t.Run(c, func(t *testing.T) {
			var w closeRecorder
			cw, err := NewCompressor(&w, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := cw.Close(); err != nil {
				t.Fatal(err)
			}
			if w.closed {
				t.Error("Close closed the underlying writer")
			}
			if c != None && w.Len() == 0 {
				t.Error("empty input gave no stream at all")
			}
			got, err := decompress(c, w.Bytes())
			if err != nil || len(got) != 0 {
				t.Fatalf("decompress(empty stream) = %q, %v; want empty, nil", got, err)
			}
		})
	}
}

func TestDecompressCorrupt(t *testing.T) {
	t.Parallel()
	// Random data puts flipped bytes in stored blocks, SQL text in
	// entropy-coded ones.
	for _, tc := range []struct {
		c, data string
	}{{Zstd, "mixed"}, {Zstd, "sql"}, {Gzip, "mixed"}, {Gzip, "sql"}} {
		c := tc.c
		data := mixedData(1<<20, 2)
		if tc.data == "sql" {
			data = testsupport.SQLDump(1 << 20)
		}
		stored := compress(t, c, data)
		n := len(stored)
		cases := map[string][]byte{
			"Empty":     {},
			"Truncated": stored[:n/2],
			"NoTrailer": stored[:n-4],
			"OneByte":   stored[:1],
			"WrongKind": compress(t, map[string]string{Zstd: Gzip, Gzip: Zstd}[c], data[:1000]),
		}
		for _, pos := range []int{n / 4, n / 2, 3 * n / 4, n - 1} {
			bad := bytes.Clone(stored)
			bad[pos] ^= 0xff
			cases[fmt.Sprintf("FlipAt%d", pos)] = bad
		}
		for name, in := range cases {
			t.Run(c+"/"+tc.data+"/"+name, func(t *testing.T) {
				for how, dec := range map[string]func(string, []byte) ([]byte, error){"Read": decompress, "WriteTo": decompressCopy} {
					got, err := dec(c, in)
					if err == nil {
						same := bytes.Equal(got, data)
						t.Fatalf("%s: no error for corrupt input (output equal to the original: %v, %d bytes)", how, same, len(got))
					}
					t.Logf("%s: %v", how, err)
				}
			})
		}
	}
}

// TestDecompressWriteToError checks that a failing destination's error is
// passed on as is, not blamed on the stream.
func TestDecompressWriteToError(t *testing.T) {
	data := mixedData(1<<20, 4)
	for _, c := range []string{Zstd, Gzip} {
		t.Run(c, func(t *testing.T) {
			r, err := NewDecompressor(bytes.NewReader(compress(t, c, data)), c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			_, err = io.Copy(&failAfter{limit: 1000}, r)
			if !errors.Is(err, errFull) || strings.Contains(err.Error(), "decompressing") {
				t.Fatalf("io.Copy error = %v; want %v unlabelled", err, errFull)
			}
		})
	}
}

func TestCompressionNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		valid bool
		ext   string
	}{
		{Zstd, true, ".zst"},
		{Gzip, true, ".gz"},
		{None, true, ""},
		{"", false, ""},
		{"ZSTD", false, ""},
		{"lz4", false, ""},
	} {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			if got := ValidCompression(tc.name); got != tc.valid {
				t.Errorf("ValidCompression = %v, want %v", got, tc.valid)
			}
			if got := Extension(tc.name); got != tc.ext {
				t.Errorf("Extension = %q, want %q", got, tc.ext)
			}
			_, errC := NewCompressor(io.Discard, tc.name)
			_, errD := NewDecompressor(strings.NewReader("x"), tc.name)
			if tc.valid && errC != nil {
				t.Errorf("NewCompressor: %v", errC)
			}
			if !tc.valid && (errC == nil || errD == nil) {
				t.Errorf("unknown compression accepted: NewCompressor %v, NewDecompressor %v", errC, errD)
			}
		})
	}
}

// failAfter accepts limit bytes, then fails.
type failAfter struct {
	buf   bytes.Buffer
	limit int
}

var errFull = errors.New("full")

func (f *failAfter) Write(p []byte) (int, error) {
	room := f.limit - f.buf.Len()
	if len(p) <= room {
		return f.buf.Write(p)
	}
	f.buf.Write(p[:room])
	return room, errFull
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestDigest(t *testing.T) {
	data := mixedData(3<<20+17, 3)
	want := sha256Hex(data)

	t.Run("Writer", func(t *testing.T) {
		var buf bytes.Buffer
		d := NewDigestWriter(&buf)
		if d.Sum() != sha256Hex(nil) || d.Size() != 0 {
			t.Fatalf("fresh DigestWriter: %s, %d", d.Sum(), d.Size())
		}
		r := mrand.New(mrand.NewPCG(3, 3))
		for p := data; len(p) > 0; {
			n := min(len(p), 1+r.IntN(100000))
			if _, err := d.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if d.Sum() != want || d.Size() != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("got %s, %d bytes; want %s, %d", d.Sum(), d.Size(), want, len(data))
		}
	})
	t.Run("WriterFailure", func(t *testing.T) {
		f := &failAfter{limit: 1000}
		d := NewDigestWriter(f)
		n, err := d.Write(data[:1500])
		if n != 1000 || !errors.Is(err, errFull) {
			t.Fatalf("Write = %d, %v; want 1000, %v", n, err, errFull)
		}
		if d.Size() != 1000 || d.Sum() != sha256Hex(data[:1000]) {
			t.Fatalf("after a short write: %d bytes, %s; want what was accepted", d.Size(), d.Sum())
		}
	})
	t.Run("Reader", func(t *testing.T) {
		d := NewDigestReader(iotest.HalfReader(bytes.NewReader(data)))
		got, err := io.ReadAll(d)
		if err != nil {
			t.Fatal(err)
		}
		if d.Sum() != want || d.Size() != int64(len(data)) || !bytes.Equal(got, data) {
			t.Fatalf("got %s, %d bytes; want %s, %d", d.Sum(), d.Size(), want, len(data))
		}
	})
}

func validManifest() *Manifest {
	start := time.Date(2025, 3, 4, 5, 6, 7, 890000000, time.UTC)
	return &Manifest{
		Version:           ManifestVersion,
		BackupID:          "0195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		JobID:             "7",
		Engine:            "postgresql",
		ServerVersion:     "15.20",
		ToolVersion:       "pg_dump (PostgreSQL) 15.20",
		Database:          "shop",
		Format:            "plain",
		RawSize:           123456789,
		StoredSize:        12345678,
		Checksum:          sha256Hex([]byte("stored")),
		ChecksumAlgorithm: "sha256",
		Compression:       Zstd,
		Encryption:        "none",
		StartedAt:         start,
		CompletedAt:       start.Add(90 * time.Second),
		Tables:            []TableCount{{Schema: "public", Name: "users", Rows: 5}, {Schema: "public", Name: `Weird "Name" x`}},
	}
}

func TestManifest(t *testing.T) {
	t.Run("RoundTrip", func(t *testing.T) {
		m := validManifest()
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("\n  \"backupId\": ")) {
			t.Errorf("not indented JSON:\n%s", b)
		}
		got, err := ParseManifest(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got  %+v\n want %+v", got, m)
		}
	})
	t.Run("NilTables", func(t *testing.T) {
		m := validManifest()
		m.Tables = nil
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"tables": []`)) {
			t.Errorf("nil tables not written as []:\n%s", b)
		}
	})
	t.Run("UnknownFieldIgnored", func(t *testing.T) {
		b, _ := validManifest().Marshal()
		b = bytes.Replace(b, []byte("{"), []byte(`{"addedLater": {"x": 1},`), 1)
		if _, err := ParseManifest(b); err != nil {
			t.Fatal(err)
		}
	})

	reject := []struct {
		name   string
		edit   func(map[string]any)
		errHas string
	}{
		{"Version2", func(m map[string]any) { m["version"] = 2 }, "newer than the supported version 1"},
		{"Version0", func(m map[string]any) { m["version"] = 0 }, "invalid manifest version 0"},
		{"NoVersion", func(m map[string]any) { delete(m, "version") }, "no version"},
		{"MissingFields", func(m map[string]any) { delete(m, "backupId"); m["checksum"] = ""; delete(m, "startedAt") },
			"missing required fields: backupId, checksum, startedAt"},
		{"BadAlgorithm", func(m map[string]any) { m["checksumAlgorithm"] = "md5" }, `unsupported checksumAlgorithm "md5"`},
		{"BadChecksum", func(m map[string]any) { m["checksum"] = strings.Repeat("A", 64) }, "not 64 lowercase hex"},
		{"BadCompression", func(m map[string]any) { m["compression"] = "lz4" }, `unknown compression "lz4"`},
		{"NegativeSize", func(m map[string]any) { m["storedSize"] = -1 }, "negative storedSize"},
		{"TimeOrder", func(m map[string]any) { m["completedAt"] = "2025-03-04T05:00:00Z" }, "is before startedAt"},
		{"TableWithoutName", func(m map[string]any) { m["tables"] = []any{map[string]any{"schema": "public", "rows": 1}} }, "tables[0] has no name"},
	}
	for _, tc := range reject {
		t.Run("Reject"+tc.name, func(t *testing.T) {
			b, _ := validManifest().Marshal()
			var raw map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			tc.edit(raw)
			b, err := json.Marshal(raw)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseManifest(b)
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("ParseManifest error = %v; want one containing %q", err, tc.errHas)
			}
		})
	}
	for _, in := range []string{"", "null", "[]", "{", `{"version": "1"}`} {
		t.Run(fmt.Sprintf("RejectJSON%q", in), func(t *testing.T) {
			if _, err := ParseManifest([]byte(in)); err == nil {
				t.Fatal("no error")
			}
		})
	}
	t.Run("MarshalRefusesInvalid", func(t *testing.T) {
		m := validManifest()
		m.Version = 0
		if b, err := m.Marshal(); err == nil {
			t.Fatalf("Marshal of version 0 gave %s", b)
		}
	})
}

func BenchmarkZstdCompress(b *testing.B) {
	benchmarkCompress(b, Zstd)
}

func BenchmarkGzipCompress(b *testing.B) {
	benchmarkCompress(b, Gzip)
}

func benchmarkCompress(b *testing.B, c string) {
	data := testsupport.SQLDump(32 << 20)
	b.SetBytes(int64(len(data)))
	var stored int64
	for b.Loop() {
		d := NewDigestWriter(io.Discard)
		w, _ := NewCompressor(d, c)
		for p := data; len(p) > 0; {
			n := min(len(p), 32<<10)
			w.Write(p[:n])
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		stored = d.Size()
	}
	b.ReportMetric(100*float64(stored)/float64(len(data)), "%size")
}
