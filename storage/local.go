package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

const (
	dirPerm  = 0o700
	filePerm = 0o600
	// copyBufSize is the chunk Put reads and writes; ctx is checked between chunks.
	copyBufSize = 1 << 20
	// partialMarker follows the base name in a temporary: ".<base>.partial-<16 hex>".
	partialMarker = ".partial-"
	partialRandom = 8 // bytes, hex-encoded
	// maxTempBase keeps a temporary's name under NAME_MAX (255) for long bases.
	maxTempBase = 200
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Local stores objects as files under a root directory on the agent's host:
// key "7/a.sql.zst" is the file <root>/7/a.sql.zst. Files are 0600 and
// directories 0700. Every access goes through os.Root, so no key, symbolic
// link or rename can reach outside the root.
//
// The root is reopened for every call rather than held open, so a root that
// is removed (or unmounted) makes calls fail instead of writing into a
// deleted directory, and it is never recreated behind the operator's back.
type Local struct {
	dir string
}

var _ Storage = (*Local)(nil)

// NewLocal returns a Local rooted at dir, creating it (0700, with parents) if
// needed. It returns an error if dir is empty or is not a usable directory.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("storage: local: empty root directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: local: %w", err)
	}
	if err := os.MkdirAll(abs, dirPerm); err != nil {
		return nil, fmt.Errorf("storage: local: %w", err)
	}
	l := &Local{dir: abs}
	root, err := l.open()
	if err != nil {
		return nil, err
	}
	root.Close()
	return l, nil
}

// Root returns the absolute path of the root directory.
func (l *Local) Root() string { return l.dir }

func (l *Local) open() (*os.Root, error) {
	root, err := os.OpenRoot(l.dir)
	if err != nil {
		return nil, fmt.Errorf("storage: local: open root: %w", err)
	}
	return root, nil
}

// notExist reports whether err means the path is not there, including a
// parent that is a file ("a/b" with "a" a regular file).
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func notFound(op, key string, err error) error {
	if err == nil {
		return fmt.Errorf("storage: %s %q: %w", op, key, ErrNotFound)
	}
	return fmt.Errorf("storage: %s %q: %w: %w", op, key, ErrNotFound, err)
}

// tempName returns the name of a fresh temporary for the file base.
func tempName(base string) (string, error) {
	var rnd [partialRandom]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	if len(base) > maxTempBase {
		base = base[:maxTempBase]
	}
	return "." + base + partialMarker + hex.EncodeToString(rnd[:]), nil
}

// isPartial reports whether name is a temporary made by tempName.
func isPartial(name string) bool {
	if !strings.HasPrefix(name, ".") {
		return false
	}
	i := strings.LastIndex(name, partialMarker)
	if i < 1 {
		return false
	}
	suffix := name[i+len(partialMarker):]
	if len(suffix) != 2*partialRandom {
		return false
	}
	for _, c := range suffix {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Put implements Storage. It writes to a temporary ".<base>.partial-<random>"
// in the key's directory (creating directories 0700), fsyncs it, renames it
// over the key and fsyncs the directory. ctx is checked between 1 MiB chunks,
// so a reader that blocks must end on its own when ctx does. If syncing the
// directory fails after the rename, the new object is removed again so that a
// failed Put never leaves an object behind.
func (l *Local) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := CheckKey(key); err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) {
		return 0, fmt.Errorf("storage: put %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	root, err := l.open()
	if err != nil {
		return 0, err
	}
	defer root.Close()

	dir, base := path.Split(key)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	} else if err := root.MkdirAll(dir, dirPerm); err != nil {
		return fail(err)
	}
	name, err := tempName(base)
	if err != nil {
		return fail(err)
	}
	tmp := path.Join(dir, name)
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fail(err)
	}
	renamed := false
	defer func() {
		if !renamed {
			f.Close() // may already be closed; the error is of no interest here
			root.Remove(tmp)
		}
	}()

	n, err := copyCtx(ctx, f, r)
	if err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	// The last chance to honour a cancellation: after the rename the object is visible.
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if err := root.Rename(tmp, key); err != nil {
		return fail(err)
	}
	renamed = true
	if err := syncDir(root, dir); err != nil {
		root.Remove(key)
		return fail(fmt.Errorf("sync directory: %w", err))
	}
	return n, nil
}

// copyCtx copies r to w in 1 MiB chunks, checking ctx before each read.
// Errors from r are returned as they are, so callers can match them.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		nr, rerr := r.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get implements Storage. The reader is the *os.File itself, positioned at
// offset; ctx governs only the opening, so the caller may keep reading after
// ctx ends and must Close the file.
func (l *Local) Get(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: get %q: %w", key, err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("storage: get %q: %w: %d", key, ErrBadOffset, offset)
	}
	root, err := l.open()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(key)
	if notExist(err) {
		return nil, notFound("get", key, err)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get %q: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("storage: get %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notFound("get", key, nil)
	}
	if offset > fi.Size() {
		f.Close()
		return nil, fmt.Errorf("storage: get %q: %w: %d > size %d", key, ErrBadOffset, offset, fi.Size())
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("storage: get %q: %w", key, err)
		}
	}
	return f, nil
}

// Stat implements Storage. Only regular files (or symbolic links inside the
// root to one) are objects; a directory returns ErrNotFound.
func (l *Local) Stat(ctx context.Context, key string) (Object, error) {
	if err := CheckKey(key); err != nil {
		return Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return Object{}, fmt.Errorf("storage: stat %q: %w", key, err)
	}
	root, err := l.open()
	if err != nil {
		return Object{}, err
	}
	defer root.Close()
	fi, err := root.Stat(key)
	if notExist(err) {
		return Object{}, notFound("stat", key, err)
	}
	if err != nil {
		return Object{}, fmt.Errorf("storage: stat %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return Object{}, notFound("stat", key, nil)
	}
	return Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete implements Storage. A directory is not an object: deleting one
// returns ErrNotFound and leaves it. Emptied directories are left in place
// (removing them would race with a Put creating a file in them).
func (l *Local) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	root, err := l.open()
	if err != nil {
		return err
	}
	defer root.Close()
	fi, err := root.Lstat(key)
	if notExist(err) {
		return notFound("delete", key, err)
	}
	if err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	if fi.IsDir() {
		return notFound("delete", key, nil)
	}
	if err := root.Remove(key); notExist(err) {
		return notFound("delete", key, err)
	} else if err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	return nil
}

// List implements Storage. It walks only the directory named by prefix up
// to its last "/", skips names starting with "." (temporaries and foreign
// dot files) and names that are not valid keys, and does not descend into
// symbolic links to directories. Objects that vanish during the walk are
// left out.
func (l *Local) List(ctx context.Context, prefix string) ([]Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
		if CheckKey(start) != nil {
			return []Object{}, nil // no valid key lies below it
		}
	}
	root, err := l.open()
	if err != nil {
		return nil, err
	}
	defer root.Close()

	objs := []Object{}
	err = fs.WalkDir(root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if notExist(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == start {
			if d.IsDir() {
				return nil
			}
		} else if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			// Descend only where a matching key can lie.
			if dp := p + "/"; !strings.HasPrefix(dp, prefix) && !strings.HasPrefix(prefix, dp) {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(p, prefix) || CheckKey(p) != nil {
			return nil
		}
		var fi fs.FileInfo
		switch {
		case d.Type().IsRegular():
			if fi, err = d.Info(); err != nil {
				if notExist(err) {
					return nil
				}
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			// A dangling, looping or escaping link is not an object; it must
			// not make the whole listing fail either.
			if fi, err = root.Stat(p); err != nil {
				return nil
			}
		default:
			return nil
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		objs = append(objs, Object{Key: p, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// CleanPartials removes temporaries left by a process killed mid-Put: files
// named ".<base>.partial-<16 hex digits>" anywhere under the root (it does
// not descend into directories whose names start with "."). Call it at agent
// start, before any Put: it would also remove the temporary of a Put in
// progress, making that Put fail. It returns how many files it removed; on
// error, the count so far.
func (l *Local) CleanPartials() (int, error) {
	root, err := l.open()
	if err != nil {
		return 0, err
	}
	defer root.Close()
	removed := 0
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if notExist(err) {
				return nil
			}
			return err
		}
		if p == "." {
			return nil
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !isPartial(d.Name()) {
			return nil
		}
		if err := root.Remove(p); err != nil {
			if notExist(err) {
				return nil
			}
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("storage: clean partials: %w", err)
	}
	return removed, nil
}
