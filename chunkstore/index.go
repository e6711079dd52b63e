package chunkstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"github.com/restic/chunker"

	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
)

// IndexSuffix ends the storage key of a chunked backup's index.
const IndexSuffix = ".chunks"

// Backup types.
const (
	Full         = "full"
	Incremental  = "incremental"
	Differential = "differential"
)

// indexVersion is the index format written and the newest read.
const indexVersion = 1

// Index headers: the first line of an index object says whether the rest
// is encrypted. The rest is a zstd frame of the JSON index, for an
// encrypted job inside an age file to the job's recipients (so `tail -n +2
// index | age -d -i key | zstd -d` shows it).
const (
	headerPlain = "rahatback-chunk-index 1 plain\n"
	headerAge   = "rahatback-chunk-index 1 age\n"
)

// MaxIndexSize bounds a stored index, read or written. An index costs
// about 50 bytes per chunk stored (95 as JSON, held in memory while a
// backup is written or read), so this limits a chunked backup to some
// 10 million chunks: a dump of about 400 GB at the average chunk size.
// A backup whose index would be larger fails instead of being stored
// unreadable; such databases need a job of type full.
const MaxIndexSize = 512 << 20

// maxBlob bounds one stored chunk: MaxSize compressed (zstd and gzip add
// at most a few bytes per 128 KiB to incompressible data) and sealed.
const maxBlob = MaxSize + MaxSize/64 + 1024

// maxPack bounds a pack: it is closed once it reaches PackSize.
const maxPack = PackSize + maxBlob

// Index is one chunked backup: every chunk of its dump, in order.
type Index struct {
	Version  int    `json:"version"`
	BackupID string `json:"backupId"`
	JobID    string `json:"jobId"`
	// Type is Full, Incremental or Differential; Parent is the backup whose
	// chunks were looked for ("" for a full), Base the full its chain
	// starts at (itself for a full).
	Type        string `json:"type"`
	Parent      string `json:"parent,omitempty"`
	Base        string `json:"base"`
	Compression string `json:"compression"`
	Encrypted   bool   `json:"encrypted"`
	// IDKey, Polynomial and SealKey (encrypted chains only) are the
	// chain's keys; an encrypted index is itself encrypted with age.
	IDKey      []byte      `json:"idKey"`
	Polynomial chunker.Pol `json:"polynomial"`
	SealKey    []byte      `json:"sealKey,omitempty"`
	// Recipients identifies the recipients an encrypted chain's indexes
	// are encrypted to (RecipientsID): a chain whose recipients changed
	// is not continued, so a removed recipient reads nothing newer.
	Recipients string `json:"recipients,omitempty"`
	// RawSize and SHA256 describe the whole dump.
	RawSize int64  `json:"rawSize"`
	SHA256  string `json:"sha256"`
	// Packs are the packs chunks refer to, as "<backup>/<n>": pack n
	// written by that backup.
	Packs  []string `json:"packs"`
	Chunks []Ref    `json:"chunks"`
	// What this backup added: chunks and their raw bytes not found before,
	// the packs it wrote and their stored bytes.
	NewChunks    int   `json:"newChunks"`
	NewRawBytes  int64 `json:"newRawBytes"`
	PacksWritten int   `json:"packsWritten"`
	StoredBytes  int64 `json:"storedBytes"`
}

// Ref places one chunk: Pack indexes Index.Packs; Off and Len are its
// blob in the pack; Raw is its plaintext length.
type Ref struct {
	Pack int
	Off  int64
	Len  int64
	Raw  int64
	ID   ID
}

// MarshalJSON writes a Ref as [pack, off, len, raw, "id hex"].
func (r Ref) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `[%d,%d,%d,%d,"%x"]`, r.Pack, r.Off, r.Len, r.Raw, r.ID[:]), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Ref) UnmarshalJSON(b []byte) error {
	var a [5]json.RawMessage
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	for i, p := range []*int64{nil, &r.Off, &r.Len, &r.Raw} {
		if i == 0 {
			var n int
			if err := json.Unmarshal(a[0], &n); err != nil {
				return err
			}
			r.Pack = n
			continue
		}
		if err := json.Unmarshal(a[i], p); err != nil {
			return err
		}
	}
	var s string
	if err := json.Unmarshal(a[4], &s); err != nil {
		return err
	}
	id, err := hex.DecodeString(s)
	if err != nil || len(id) != len(r.ID) {
		return fmt.Errorf("chunkstore: bad chunk id %q", s)
	}
	copy(r.ID[:], id)
	return nil
}

// Writers returns the backups whose packs the index uses, itself
// included when it wrote any, in the order first used.
func (ix *Index) Writers() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ix.Packs {
		w, _, _ := strings.Cut(p, "/")
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// DependsOn is Writers without the backup itself: the earlier backups
// whose packs must stay for this one to be read.
func (ix *Index) DependsOn() []string {
	var out []string
	for _, w := range ix.Writers() {
		if w != ix.BackupID {
			out = append(out, w)
		}
	}
	return out
}

// PackKey is the storage key of pack p ("<backup>/<n>") of the job whose
// directory is dir.
func PackKey(dir, p string) string { return path.Join(dir, "packs", p+".pack") }

// PacksPrefix is the storage prefix of every pack of the job whose
// directory is dir.
func PacksPrefix(dir string) string { return path.Join(dir, "packs") + "/" }

// PackPrefix is the storage prefix of the packs backup wrote, in the job
// whose directory is dir: deleting a backup deletes what is under it.
func PackPrefix(dir, backup string) string { return path.Join(dir, "packs", backup) + "/" }

// keys are the keys of the index's chain.
func (ix *Index) keys() (*Keys, error) {
	if ix.Encrypted != (ix.SealKey != nil) {
		return nil, fmt.Errorf("%w: the index's encryption does not match its keys", ErrDamaged)
	}
	return keysOf(ix.IDKey, ix.Polynomial, ix.SealKey)
}

func (ix *Index) validate() error {
	if ix.Version != indexVersion {
		return fmt.Errorf("chunkstore: index version %d is not supported (want %d)", ix.Version, indexVersion)
	}
	if !pipeline.ValidCompression(ix.Compression) {
		return fmt.Errorf("chunkstore: index has unknown compression %q", ix.Compression)
	}
	var raw int64
	if int64(len(ix.Chunks)) > ix.RawSize {
		return fmt.Errorf("%w: the index lists more chunks than its dump has bytes", ErrDamaged)
	}
	for i, c := range ix.Chunks {
		if c.Pack < 0 || c.Pack >= len(ix.Packs) || c.Off < 0 || c.Len <= 0 || c.Len > maxBlob || c.Off+c.Len > maxPack ||
			c.Raw <= 0 || c.Raw > MaxSize {
			return fmt.Errorf("%w: index entry %d is invalid", ErrDamaged, i)
		}
		raw += c.Raw
	}
	if raw != ix.RawSize {
		return fmt.Errorf("chunkstore: index chunks add up to %d bytes, not its rawSize %d", raw, ix.RawSize)
	}
	for _, p := range ix.Packs {
		if w, n, ok := strings.Cut(p, "/"); !ok || w == "" || n == "" || storage.CheckKey(p) != nil {
			return fmt.Errorf("chunkstore: index names an invalid pack %q", p)
		}
	}
	return nil
}

// encode is the stored form of ix, encrypted to recipients when ix is.
func (ix *Index) encode(recipients []age.Recipient) ([]byte, error) {
	js, err := json.Marshal(ix)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	body := enc.EncodeAll(js, nil)
	enc.Close()
	if !ix.Encrypted {
		return append([]byte(headerPlain), body...), nil
	}
	var out bytes.Buffer
	out.WriteString(headerAge)
	w, err := age.Encrypt(&out, recipients...)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(body); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ErrWrongKey is returned (wrapped) when an encrypted index does not open
// with the identities given.
var ErrWrongKey = errors.New("chunkstore: the backup cannot be decrypted with this key")

// ErrNoIdentity is returned when an encrypted index is read without an
// identity.
var ErrNoIdentity = errors.New("chunkstore: the backup is encrypted and no key was given")

// ReadIndex reads and checks the index stored under key. When checksum is
// not "", the stored bytes must have that SHA-256 (hex). identities open
// an encrypted index (the job's identity, or an extra recipient's).
// Errors: storage.ErrNotFound (wrapped) for a missing index, ErrChecksum
// for other bytes than recorded, ErrNoIdentity, ErrWrongKey, and
// ErrDamaged for an index that cannot be decoded.
func ReadIndex(ctx context.Context, st Getter, key, checksum string, identities ...age.Identity) (*Index, error) {
	rc, err := st.Get(ctx, key, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("chunkstore: reading the index %s: %w", key, err)
	}
	if len(data) > MaxIndexSize {
		return nil, fmt.Errorf("%w: the index %s is larger than %d bytes", ErrDamaged, key, MaxIndexSize)
	}
	if checksum != "" {
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != checksum {
			return nil, fmt.Errorf("%w (the index %s)", ErrChecksum, key)
		}
	}
	return DecodeIndex(data, identities...)
}

// DecodeIndex parses a stored index (see ReadIndex for the errors).
func DecodeIndex(data []byte, identities ...age.Identity) (*Index, error) {
	var body []byte
	switch {
	case bytes.HasPrefix(data, []byte(headerPlain)):
		body = data[len(headerPlain):]
	case bytes.HasPrefix(data, []byte(headerAge)):
		if len(identities) == 0 {
			return nil, ErrNoIdentity
		}
		r, err := age.Decrypt(bytes.NewReader(data[len(headerAge):]), identities...)
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, ErrWrongKey
		} else if err != nil {
			return nil, fmt.Errorf("%w: index: %v", ErrDamaged, err)
		}
		if body, err = io.ReadAll(r); err != nil {
			return nil, fmt.Errorf("%w: index: %v", ErrDamaged, err)
		}
	default:
		return nil, fmt.Errorf("%w: not a RahatBack chunk index", ErrDamaged)
	}
	// JSON of hex ids compresses about 2:1; a body that claims far more
	// is refused rather than inflated.
	limit := min(uint64(len(body))*16+1<<20, 4*MaxIndexSize)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(limit), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	js, err := dec.DecodeAll(body, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrDamaged, err)
	}
	var ix Index
	if err := json.Unmarshal(js, &ix); err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrDamaged, err)
	}
	if err := ix.validate(); err != nil {
		return nil, err
	}
	return &ix, nil
}

// RecipientsID identifies a set of age recipients, whatever their order:
// the SHA-256 of their sorted string forms ("" for none).
func RecipientsID(rs []age.Recipient) string {
	if len(rs) == 0 {
		return ""
	}
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = fmt.Sprint(r)
	}
	slices.Sort(names)
	sum := sha256.Sum256([]byte(strings.Join(names, "\n")))
	return hex.EncodeToString(sum[:])
}
