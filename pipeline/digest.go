package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
)

// DigestWriter passes writes through to the wrapped writer while hashing
// them with SHA-256 and counting bytes. Only the bytes the wrapped writer
// accepted are hashed and counted, so after a failed write Sum and Size
// still describe exactly what reached it. Not safe for concurrent use.
type DigestWriter struct {
	w    io.Writer
	h    hash.Hash
	size int64
}

// NewDigestWriter returns a DigestWriter writing to w.
func NewDigestWriter(w io.Writer) *DigestWriter {
	return &DigestWriter{w: w, h: sha256.New()}
}

// Write writes p to the wrapped writer and returns its result unchanged.
func (d *DigestWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	if n > 0 {
		d.h.Write(p[:n]) // never fails
		d.size += int64(n)
	}
	return n, err
}

// Size is the number of bytes written so far.
func (d *DigestWriter) Size() int64 { return d.size }

// Sum is the lowercase hex SHA-256 of the bytes written so far. Calling it
// does not end the digest: writing may continue.
func (d *DigestWriter) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// DigestReader passes reads through from the wrapped reader while hashing
// the bytes read with SHA-256 and counting them. Not safe for concurrent use.
type DigestReader struct {
	r    io.Reader
	h    hash.Hash
	size int64
}

// NewDigestReader returns a DigestReader reading from r.
func NewDigestReader(r io.Reader) *DigestReader {
	return &DigestReader{r: r, h: sha256.New()}
}

// Read reads from the wrapped reader and returns its result unchanged.
func (d *DigestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if n > 0 {
		d.h.Write(p[:n]) // never fails
		d.size += int64(n)
	}
	return n, err
}

// Size is the number of bytes read so far.
func (d *DigestReader) Size() int64 { return d.size }

// Sum is the lowercase hex SHA-256 of the bytes read so far (of the whole
// stream once Read has returned io.EOF). Calling it does not end the digest.
func (d *DigestReader) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }
