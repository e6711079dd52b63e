// Package pipeline holds the pieces of the streaming backup pipeline that do
// not depend on an engine or a storage: compression, SHA-256 digests of the
// bytes passing through, row counting of a pg_dump plain-format stream, and
// the backup manifest stored beside every backup.
//
// Everything here works on streams: nothing buffers a whole dump, writes a
// temporary file or holds more than a few megabytes per pipeline.
package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	// klauspost's gzip rather than compress/gzip: the output is the same
	// standard gzip format (gunzip, zcat and compress/gzip read it), but its
	// flate encoder and decoder are several times faster at the low levels
	// used here, and the module is already a dependency for zstd.
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression names as stored in jobs and manifests.
const (
	Zstd = "zstd"
	Gzip = "gzip"
	None = "none"
)

// gzipLevel is the deflate level of NewCompressor for Gzip: 2, not gzip's
// default 6. On a 152 MB pg_dump here (klauspost 1.20, one core) level 6
// ran at 65 MB/s to 13.7% of the input, level 2 at 280 MB/s to 13.5%, and
// level 1 at 300 MB/s to 14.3%: level 2 keeps level 6's size at four times
// the speed, close to zstd -1's 250 MB/s (which gives 11.7%).
const gzipLevel = 2

// zstdDecoderMaxWindow bounds the window a zstd stream may ask for, and so
// the memory of a decompression. 128 MiB is the zstd command line's own
// default limit; NewCompressor's streams use far smaller windows.
const zstdDecoderMaxWindow = 128 << 20

// ValidCompression reports whether c is one of Zstd, Gzip or None. Names are
// case-sensitive.
func ValidCompression(c string) bool {
	switch c {
	case Zstd, Gzip, None:
		return true
	}
	return false
}

// Extension is the file suffix of a compression: ".zst", ".gz", "". It
// returns "" for None and for unknown names.
func Extension(c string) string {
	switch c {
	case Zstd:
		return ".zst"
	case Gzip:
		return ".gz"
	}
	return ""
}

func unknownCompression(c string) error {
	return fmt.Errorf("pipeline: unknown compression %q (want %q, %q or %q)", c, Zstd, Gzip, None)
}

// NewCompressor returns a writer compressing into w. Close flushes and ends
// the stream but does not close w; the stream is incomplete until Close
// returns nil. Errors of w come back from a later Write or from Close.
//
//   - Zstd: level SpeedFastest (zstd -1), encoder concurrency 2 (one block
//     is compressed while the next fills, so at most two cores), and an
//     xxhash content checksum in the frame so that corruption is detected on
//     decompression. Empty input still gives a complete frame.
//   - Gzip: deflate level 2, as small as gzip's default level 6 on SQL dumps
//     at about four times the speed; gzip's trailer carries a CRC-32 and the
//     length, checked on decompression. No file name or time in the header,
//     so equal input gives equal output.
//   - None: writes pass through unchanged; Close does nothing.
//
// It returns an error only for an unknown compression name.
func NewCompressor(w io.Writer, c string) (io.WriteCloser, error) {
	switch c {
	case Zstd:
		enc, err := zstd.NewWriter(w,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(2),
			zstd.WithEncoderCRC(true),
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			return nil, fmt.Errorf("pipeline: zstd encoder: %w", err)
		}
		return enc, nil
	case Gzip:
		gz, err := gzip.NewWriterLevel(w, gzipLevel)
		if err != nil {
			return nil, fmt.Errorf("pipeline: gzip encoder: %w", err)
		}
		return gz, nil
	case None:
		return nopWriteCloser{w}, nil
	}
	return nil, unknownCompression(c)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// Stream magics, checked before decoding so that a stored object of the
// wrong kind, or an empty one (a truncated upload), fails at once with a
// clear error instead of decoding to nothing.
var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// zstdSkippable reports whether b (4 bytes) starts a zstd skippable frame,
// which pzstd and seekable-format writers put before the data frames.
func zstdSkippable(b []byte) bool {
	return b[0]&0xf0 == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18
}

// NewDecompressor returns a reader of the decompressed stream of r, which
// it reads but does not close. Close releases the decoder (for Zstd, its
// goroutines) and must be called; it does not close r.
//
// Corrupted input gives an error, never silently different bytes: zstd
// frames are checked against their content checksum and gzip members
// against their CRC-32 and length, and a truncated stream gives
// io.ErrUnexpectedEOF. A flipped bit inside an uncompressed (stored) block
// is only noticed at the checksum at the end of the frame or member, so a
// consumer must treat any error, including one after much output, as the
// whole stream being bad.
//
// Zstd streams may ask for a window of at most 128 MiB (the zstd command
// line's default limit) and are decoded with concurrency 2. Concatenated
// zstd frames and gzip members are read as one stream, as zstd -d and
// gunzip do.
//
// NewDecompressor reads the first bytes of r and returns an error if r is
// empty or does not start like the named format, or if c is unknown. For
// None, r is returned unchanged except for a no-op Close.
func NewDecompressor(r io.Reader, c string) (io.ReadCloser, error) {
	switch c {
	case Zstd:
		head, err := readMagic(r, Zstd, len(zstdMagic))
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(head, zstdMagic) && !zstdSkippable(head) {
			return nil, fmt.Errorf("pipeline: not a zstd stream (starts with %x)", head)
		}
		dec, err := zstd.NewReader(io.MultiReader(bytes.NewReader(head), r),
			zstd.WithDecoderConcurrency(2),
			zstd.WithDecoderMaxWindow(zstdDecoderMaxWindow),
		)
		if err != nil {
			return nil, fmt.Errorf("pipeline: zstd decoder: %w", err)
		}
		return &decompressReader{c: Zstd, dec: dec, close: func() error { dec.Close(); return nil }}, nil
	case Gzip:
		head, err := readMagic(r, Gzip, len(gzipMagic))
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(head, gzipMagic) {
			return nil, fmt.Errorf("pipeline: not a gzip stream (starts with %x)", head)
		}
		gz, err := gzip.NewReader(io.MultiReader(bytes.NewReader(head), r))
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("pipeline: gzip header: %w", err)
		}
		return &decompressReader{c: Gzip, dec: gz, close: gz.Close}, nil
	case None:
		return io.NopCloser(r), nil
	}
	return nil, unknownCompression(c)
}

// readMagic reads the first n bytes of r.
func readMagic(r io.Reader, c string, n int) ([]byte, error) {
	head := make([]byte, n)
	k, err := io.ReadFull(r, head)
	switch {
	case err == nil:
		return head, nil
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("pipeline: empty %s stream: %w", c, io.ErrUnexpectedEOF)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("pipeline: %s stream of %d bytes is truncated: %w", c, k, err)
	}
	return nil, fmt.Errorf("pipeline: reading %s stream: %w", c, err)
}

// decompressReader labels the decoder's errors with the format, so that
// "unexpected EOF" or "CRC check failed" reaching a log says what was being
// read. io.EOF is passed on as is, and errors of the destination of WriteTo
// unlabelled.
type decompressReader struct {
	c     string
	dec   decoder
	close func() error
}

type decoder interface {
	io.Reader
	io.WriterTo // both decoders have their own buffers: io.Copy saves a copy
}

func (d *decompressReader) Read(p []byte) (int, error) {
	n, err := d.dec.Read(p)
	return n, d.label(err)
}

func (d *decompressReader) WriteTo(w io.Writer) (int64, error) {
	dst := &writeErr{w: w}
	n, err := d.dec.WriteTo(dst)
	if err != nil && dst.err != nil && errors.Is(err, dst.err) {
		return n, err
	}
	return n, d.label(err)
}

// Close releases the decoder; it does not close the source.
func (d *decompressReader) Close() error { return d.close() }

func (d *decompressReader) label(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return fmt.Errorf("pipeline: decompressing %s: %w", d.c, err)
}

// writeErr remembers the error of w.
type writeErr struct {
	w   io.Writer
	err error
}

func (e *writeErr) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}
