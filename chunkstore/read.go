package chunkstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"filippo.io/age"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
)

// Getter is the part of a storage.Storage that reading needs (so a
// backup can also be read through an agent, see package transfer). Get
// must return an error wrapping storage.ErrNotFound for a missing key.
type Getter interface {
	Get(ctx context.Context, key string, offset int64) (io.ReadCloser, error)
}

// ErrChecksum is returned (wrapped) when an index's stored bytes differ
// from what was recorded.
var ErrChecksum = errors.New("chunkstore: the backup does not match its recorded checksum")

// ErrDamaged is returned (wrapped) for a chunk or index that is missing,
// cannot be decrypted or decompressed, or has other content than its id.
var ErrDamaged = errors.New("chunkstore: the backup is damaged")

// PackError is a missing or damaged pack: Backup wrote it, so every backup
// that depends on Backup cannot be read either. It wraps ErrDamaged.
type PackError struct {
	Pack    string // "<backup>/<n>"
	Backup  string
	Missing bool
	Err     error
}

func (e *PackError) Error() string {
	what := "damaged"
	if e.Missing {
		what = "missing"
	}
	return fmt.Sprintf("pack %s written by backup %s is %s: %v", e.Pack, e.Backup, what, e.Err)
}

func (e *PackError) Unwrap() []error { return []error{ErrDamaged, e.Err} }

// Reading: chunks that follow each other in one pack are fetched as one
// segment of at most segmentSize stored and segmentRaw plaintext bytes;
// prefetch segments are fetched, opened and checked ahead of the writer,
// so memory stays below about (prefetch+1) × (segmentSize + segmentRaw)
// = 60 MiB, whatever the dump's size.
const (
	segmentSize = 4 << 20
	segmentRaw  = 8 << 20
	prefetch    = 4
)

// Read writes the dump of ix to w, in order, from the packs under dir (the
// job's directory, the directory of the index key). Every chunk is
// checked against its id, and the whole dump against the index's size and
// SHA-256, before Read returns nil; nothing is written to disk. A missing
// or damaged pack gives a *PackError; an error of w is returned as is.
func (ix *Index) Read(ctx context.Context, st Getter, dir string, w io.Writer) (int64, error) {
	keys, err := ix.keys()
	if err != nil {
		return 0, err
	}
	dec, err := newDecoder(ix.Compression)
	if err != nil {
		return 0, err
	}
	defer dec.close()
	segs := ix.segments()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type result struct {
		chunks [][]byte
		err    error
	}
	futures := make(chan chan result, prefetch)
	var fetching sync.WaitGroup
	defer fetching.Wait() // before the decoder closes (deferred earlier)
	defer cancel()
	fetching.Add(1)
	go func() {
		defer fetching.Done()
		defer close(futures)
		sem := make(chan struct{}, prefetch)
		for _, s := range segs {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			f := make(chan result, 1)
			select {
			case futures <- f:
			case <-ctx.Done():
				return
			}
			fetching.Add(1)
			go func() {
				defer func() { <-sem; fetching.Done() }()
				chunks, err := ix.fetch(ctx, st, dir, keys, dec, s)
				f <- result{chunks, err}
			}()
		}
	}()
	whole := sha256.New()
	var n int64
	for f := range futures {
		r := <-f
		if r.err != nil {
			return n, r.err
		}
		for _, c := range r.chunks {
			whole.Write(c)
			k, err := w.Write(c)
			n += int64(k)
			if err != nil {
				return n, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return n, err
	}
	if n != ix.RawSize || hex.EncodeToString(whole.Sum(nil)) != ix.SHA256 {
		return n, fmt.Errorf("%w: the dump read back (%d bytes) differs from the one stored (%d bytes)", ErrDamaged, n, ix.RawSize)
	}
	return n, nil
}

// segment is a run of chunks stored back to back in one pack.
type segment struct {
	pack     int
	off, end int64
	raw      int64 // plaintext bytes
	first, n int   // chunks[first : first+n]
}

func (ix *Index) segments() []segment {
	var out []segment
	for i, c := range ix.Chunks {
		if k := len(out) - 1; k >= 0 {
			s := &out[k]
			if s.pack == c.Pack && s.end == c.Off && c.Off+c.Len-s.off <= segmentSize && s.raw+c.Raw <= segmentRaw {
				s.end += c.Len
				s.raw += c.Raw
				s.n++
				continue
			}
		}
		out = append(out, segment{pack: c.Pack, off: c.Off, end: c.Off + c.Len, raw: c.Raw, first: i, n: 1})
	}
	return out
}

// fetch reads one segment and returns its chunks' plaintext, checked.
func (ix *Index) fetch(ctx context.Context, st Getter, dir string, keys *Keys, dec *decoder, s segment) ([][]byte, error) {
	name := ix.Packs[s.pack]
	writer, _, _ := strings.Cut(name, "/")
	perr := func(missing bool, err error) error {
		return &PackError{Pack: name, Backup: writer, Missing: missing, Err: err}
	}
	rc, err := st.Get(ctx, PackKey(dir, name), s.off)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil, perr(true, errors.New("not in storage"))
	case errors.Is(err, storage.ErrBadOffset):
		return nil, perr(false, errors.New("shorter than its index says"))
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("reading pack %s: %w", name, err)
	}
	data := make([]byte, s.end-s.off)
	_, err = io.ReadFull(rc, data)
	rc.Close()
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return nil, perr(false, errors.New("shorter than its index says"))
	} else if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("reading pack %s: %w", name, err)
	}
	mac := keys.newMAC()
	out := make([][]byte, 0, s.n)
	for _, c := range ix.Chunks[s.first : s.first+s.n] {
		blob := data[c.Off-s.off : c.Off-s.off+c.Len]
		comp, err := keys.open(blob, c.ID)
		if err != nil {
			return nil, perr(false, fmt.Errorf("a chunk at offset %d does not decrypt", c.Off))
		}
		plain, err := dec.decode(comp, c.Raw)
		if err != nil {
			return nil, perr(false, fmt.Errorf("a chunk at offset %d does not decompress: %v", c.Off, err))
		}
		if int64(len(plain)) != c.Raw || keys.id(mac, plain) != c.ID {
			return nil, perr(false, fmt.Errorf("a chunk at offset %d has other content than its id", c.Off))
		}
		out = append(out, plain)
	}
	return out, nil
}

// decoder decompresses chunks, safe for concurrent use.
type decoder struct {
	c    string
	zdec *zstd.Decoder
}

func newDecoder(c string) (*decoder, error) {
	if !pipeline.ValidCompression(c) {
		return nil, fmt.Errorf("chunkstore: unknown compression %q", c)
	}
	d := &decoder{c: c}
	if c == pipeline.Zstd {
		var err error
		if d.zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(prefetch), zstd.WithDecoderMaxMemory(2*MaxSize)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *decoder) decode(data []byte, raw int64) ([]byte, error) {
	switch d.c {
	case pipeline.Zstd:
		return d.zdec.DecodeAll(data, make([]byte, 0, raw))
	case pipeline.Gzip:
		gz, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		out := bytes.NewBuffer(make([]byte, 0, raw))
		if _, err := io.Copy(out, io.LimitReader(gz, MaxSize+1)); err != nil {
			return nil, err
		}
		return out.Bytes(), gz.Close()
	}
	return bytes.Clone(data), nil
}

func (d *decoder) close() {
	if d.zdec != nil {
		d.zdec.Close()
	}
}

// dirOf is the job directory of an index key.
func dirOf(indexKey string) string { return path.Dir(indexKey) }

// Dir is the job directory of the backup whose index is under indexKey:
// where its packs are.
func Dir(indexKey string) string { return dirOf(indexKey) }

// Open reads the index stored under key (see ReadIndex) and returns a
// reader of its dump, streamed from its packs as Read does; the reader's
// Close stops the stream. The error of a damaged pack comes from Read of
// the returned reader.
func Open(ctx context.Context, st Getter, key, checksum string, identities ...age.Identity) (*Index, io.ReadCloser, error) {
	ix, err := ReadIndex(ctx, st, key, checksum, identities...)
	if err != nil {
		return nil, nil, err
	}
	return ix, ix.Reader(ctx, st, dirOf(key)), nil
}

// Reader is Read as a reader; its Close stops the stream.
func (ix *Index) Reader(ctx context.Context, st Getter, dir string) io.ReadCloser {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, err := ix.Read(ctx, st, dir, pw)
		pw.CloseWithError(err)
	}()
	return &pipeReader{pr, cancel}
}

type pipeReader struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (p *pipeReader) Close() error {
	p.cancel()
	return p.PipeReader.Close()
}
