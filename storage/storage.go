// Package storage keeps backup objects: the Storage interface shared by every
// backend (local disk, S3, Google Drive) and the rules keys must follow.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNotFound is returned (wrapped) for a key that does not exist.
var ErrNotFound = errors.New("storage: object not found")

// ErrBadKey is returned (wrapped) for a key that CheckKey rejects.
var ErrBadKey = errors.New("storage: invalid key")

// ErrBadOffset is returned (wrapped) by Get for an offset that is negative or
// beyond the size of the object.
var ErrBadOffset = errors.New("storage: offset out of range")

// Object describes one stored object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Storage keeps backup objects under keys like "<jobId>/<name>.sql.zst"
// (slash-separated, see CheckKey). Implementations are safe for concurrent use.
type Storage interface {
	// Put stores everything read from r under key and returns the bytes
	// written. The object becomes visible only once complete: if r returns an
	// error, ctx ends, or anything fails, nothing is left under key (and no
	// temporary stays behind, except after a crash). An existing object under
	// key is replaced atomically. Errors wrap ErrBadKey, the reader's error,
	// or ctx.Err().
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Get opens key for reading from byte offset (0 = start). The caller
	// closes the reader. An offset equal to the size gives an empty reader;
	// a negative offset or one beyond the size returns ErrBadOffset; a missing
	// key returns ErrNotFound.
	Get(ctx context.Context, key string, offset int64) (io.ReadCloser, error)
	// Stat describes key; a missing key returns ErrNotFound.
	Stat(ctx context.Context, key string) (Object, error)
	// Delete removes key; a missing key returns ErrNotFound.
	Delete(ctx context.Context, key string) error
	// List returns the objects whose keys start with prefix ("" = all),
	// sorted by key, skipping temporaries. A prefix that no valid key can
	// start with gives an empty list, not an error.
	List(ctx context.Context, prefix string) ([]Object, error)
}

// CheckKey reports whether key is acceptable to every backend. A key is a
// slash-separated path of non-empty segments in valid UTF-8; it must not be
// absolute, end with "/", contain "..", backslashes, NUL or other control
// characters, or have a segment starting with "." (those names are reserved
// for temporaries). The error wraps ErrBadKey.
func CheckKey(key string) error {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrBadKey, key, why) }
	switch {
	case key == "":
		return bad("empty")
	case !utf8.ValidString(key):
		return bad("not valid UTF-8")
	case strings.HasPrefix(key, "/"):
		return bad("absolute")
	case strings.Contains(key, ".."):
		return bad(`contains ".."`)
	case strings.ContainsRune(key, '\\'):
		return bad("contains a backslash")
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return bad("contains a control character")
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" {
			return bad("empty segment")
		}
		if seg[0] == '.' {
			return bad(`segment starts with "."`)
		}
	}
	return nil
}
