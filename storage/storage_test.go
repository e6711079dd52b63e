package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rahatback/rahatback/storage"
)

const (
	crashEnvDir = "RAHATBACK_STORAGE_CRASH_DIR"
	crashKey    = "job-9/crash.sql.zst"
)

// payload returns n deterministic pseudo-random bytes.
func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newLocal(t *testing.T) *storage.Local {
	t.Helper()
	l, err := storage.NewLocal(filepath.Join(t.TempDir(), "backups", "root"))
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return l
}

func put(t *testing.T, l *storage.Local, key string, data []byte) {
	t.Helper()
	n, err := l.Put(context.Background(), key, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if n != int64(len(data)) {
		t.Fatalf("Put(%q) = %d bytes, want %d", key, n, len(data))
	}
}

func get(t *testing.T, l *storage.Local, key string, offset int64) []byte {
	t.Helper()
	rc, err := l.Get(context.Background(), key, offset)
	if err != nil {
		t.Fatalf("Get(%q, %d): %v", key, offset, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return b
}

func listKeys(t *testing.T, l *storage.Local, prefix string) []string {
	t.Helper()
	objs, err := l.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	keys := []string{}
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

// rawFiles walks the root directly on disk and returns every non-directory
// (relative, slash-separated), temporaries included.
func rawFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return files
}

func checkMode(t *testing.T, p string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %o, want %o", p, got, want)
	}
}

// assertEmpty checks that neither List nor the disk shows any file.
func assertEmpty(t *testing.T, l *storage.Local, key string) {
	t.Helper()
	if _, err := l.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat(%q) after failed Put: err = %v, want ErrNotFound", key, err)
	}
	if keys := listKeys(t, l, ""); len(keys) != 0 {
		t.Errorf("List after failed Put = %q, want nothing", keys)
	}
	if files := rawFiles(t, l.Root()); len(files) != 0 {
		t.Errorf("files on disk after failed Put = %q, want none", files)
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	l := newLocal(t)
	if !filepath.IsAbs(l.Root()) {
		t.Errorf("Root() = %q, not absolute", l.Root())
	}
	checkMode(t, l.Root(), 0o700)

	key := "job-7/2024-05-01T0300.sql.zst"
	data := payload(1, 5<<20+123)
	before := time.Now().Add(-time.Second)
	put(t, l, key, data)

	if got := get(t, l, key, 0); !bytes.Equal(got, data) {
		t.Fatalf("Get returned %d bytes, differing from the %d put", len(got), len(data))
	}
	obj, err := l.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if obj.Key != key || obj.Size != int64(len(data)) || obj.ModTime.Before(before) {
		t.Errorf("Stat = %+v, want key %q size %d recent mtime", obj, key, len(data))
	}
	objs, err := l.List(ctx, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(objs) != 1 || objs[0] != obj {
		t.Errorf("List = %+v, want [%+v]", objs, obj)
	}
	checkMode(t, filepath.Join(l.Root(), "job-7"), 0o700)
	checkMode(t, filepath.Join(l.Root(), "job-7", "2024-05-01T0300.sql.zst"), 0o600)
	if files := rawFiles(t, l.Root()); !slices.Equal(files, []string{key}) {
		t.Errorf("files on disk = %q, want only %q (no temporaries)", files, key)
	}

	if err := l.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := l.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat after Delete: err = %v, want ErrNotFound", err)
	}
	if keys := listKeys(t, l, ""); len(keys) != 0 {
		t.Errorf("List after Delete = %q", keys)
	}

	// An empty object is an object.
	put(t, l, "job-7/empty", nil)
	if got := get(t, l, "job-7/empty", 0); len(got) != 0 {
		t.Errorf("empty object read back %d bytes", len(got))
	}
}

func TestNewLocalReopen(t *testing.T) {
	dir := t.TempDir()
	l1, err := storage.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	put(t, l1, "a/b", []byte("kept"))
	l2, err := storage.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, l2, "a/b", 0); string(got) != "kept" {
		t.Errorf("reopened root reads %q", got)
	}
	if _, err := storage.NewLocal(""); err == nil {
		t.Error("NewLocal(\"\") succeeded")
	}
	file := filepath.Join(dir, "a", "b")
	if _, err := storage.NewLocal(file); err == nil {
		t.Error("NewLocal on a regular file succeeded")
	}
}

func TestGetOffset(t *testing.T) {
	l := newLocal(t)
	data := payload(2, 3<<20+7)
	put(t, l, "j/x", data)
	size := int64(len(data))

	for _, off := range []int64{0, 1, 1 << 20, size / 2, size - 1, size} {
		if got := get(t, l, "j/x", off); !bytes.Equal(got, data[off:]) {
			t.Errorf("Get at %d: %d bytes, want the %d from there", off, len(got), size-off)
		}
	}
	for _, off := range []int64{-1, size + 1, size + 1<<20} {
		rc, err := l.Get(context.Background(), "j/x", off)
		if !errors.Is(err, storage.ErrBadOffset) {
			t.Errorf("Get at %d: err = %v, want ErrBadOffset", off, err)
		}
		if rc != nil {
			rc.Close()
		}
	}
}

func TestGetOutlivesContext(t *testing.T) {
	l := newLocal(t)
	data := payload(3, 1<<20)
	put(t, l, "j/x", data)
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := l.Get(ctx, "j/x", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	cancel()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, data) {
		t.Errorf("reading after cancel: %d bytes, err %v", len(got), err)
	}
}

// failingReader yields n bytes, in chunks of random sizes, then fails.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p[:min(len(p), 300_000)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestPutReaderFails(t *testing.T) {
	l := newLocal(t)
	boom := errors.New("dump exploded")
	key := "job-1/dump.sql.zst"
	n, err := l.Put(context.Background(), key, &failingReader{data: payload(4, 3<<20), err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Put: err = %v, want %v", err, boom)
	}
	if n != 0 {
		t.Errorf("Put returned %d bytes with an error", n)
	}
	assertEmpty(t, l, key)
}

// cancellingReader produces data forever and cancels ctx once it has given
// after bytes, as if the job were aborted mid-dump.
type cancellingReader struct {
	given, after int
	cancel       context.CancelFunc
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if r.given >= r.after {
		r.cancel()
	}
	if r.given >= r.after+8<<20 {
		// Bounded so that a Put ignoring ctx fails instead of filling the disk.
		return 0, errors.New("Put kept reading long after ctx was cancelled")
	}
	for i := range p {
		p[i] = byte(r.given + i)
	}
	r.given += len(p)
	return len(p), nil
}

func TestPutContextCancelled(t *testing.T) {
	l := newLocal(t)
	key := "job-1/dump.sql.zst"

	t.Run("MidPut", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := l.Put(ctx, key, &cancellingReader{after: 2 << 20, cancel: cancel})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put: err = %v, want context.Canceled", err)
		}
		assertEmpty(t, l, key)
	})
	t.Run("Before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := l.Put(ctx, "other/x", strings.NewReader("x"))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put: err = %v, want context.Canceled", err)
		}
		if _, err := os.Stat(filepath.Join(l.Root(), "other")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Put with a done ctx created a directory: %v", err)
		}
	})
	t.Run("Deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		pr, pw := io.Pipe()
		go func() {
			// Feed slowly, and stop once Put gives up reading (or, should
			// Put ignore the deadline, after a while, failing it).
			for range 400 {
				if _, err := pw.Write(make([]byte, 64<<10)); err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			pw.CloseWithError(errors.New("Put kept reading past its deadline"))
		}()
		_, err := l.Put(ctx, key, pr)
		pr.CloseWithError(errors.New("test done"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Put: err = %v, want context.DeadlineExceeded", err)
		}
		assertEmpty(t, l, key)
	})
}

func TestPutReplaceIsAtomic(t *testing.T) {
	ctx := context.Background()
	l := newLocal(t)
	key := "job-3/latest.sql.zst"
	v1 := payload(5, 2<<20+1)
	v2 := payload(6, 4<<20+3)
	put(t, l, key, v1)

	// A reader opened before the replacement keeps reading v1 throughout.
	early, err := l.Get(ctx, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()

	pr, pw := io.Pipe()
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := l.Put(ctx, key, pr)
		// Unblock the writer below should Put return early.
		pr.CloseWithError(errors.New("Put returned before the pipe was closed"))
		done <- result{n, err}
	}()

	half := len(v2) / 2
	if _, err := pw.Write(v2[:half]); err != nil {
		t.Fatal(err)
	}
	// Put has consumed half of v2, so its temporary exists, but the key is still v1.
	if got := get(t, l, key, 0); !bytes.Equal(got, v1) {
		t.Fatalf("mid-replacement Get: %d bytes, not v1 (%d bytes)", len(got), len(v1))
	}
	if obj, err := l.Stat(ctx, key); err != nil || obj.Size != int64(len(v1)) {
		t.Fatalf("mid-replacement Stat = %+v, %v; want v1's size %d", obj, err, len(v1))
	}
	if keys := listKeys(t, l, ""); !slices.Equal(keys, []string{key}) {
		t.Fatalf("mid-replacement List = %q, want only %q", keys, key)
	}
	var temps []string
	for _, f := range rawFiles(t, l.Root()) {
		if strings.Contains(f, "/.") {
			temps = append(temps, f)
		}
	}
	if len(temps) != 1 || !strings.HasPrefix(temps[0], "job-3/.latest.sql.zst.partial-") {
		t.Errorf("temporaries mid-replacement = %q, want one job-3/.latest.sql.zst.partial-*", temps)
	} else {
		checkMode(t, filepath.Join(l.Root(), temps[0]), 0o600)
	}

	if _, err := pw.Write(v2[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	res := <-done
	if res.err != nil || res.n != int64(len(v2)) {
		t.Fatalf("Put v2 = %d, %v; want %d, nil", res.n, res.err, len(v2))
	}
	if got := get(t, l, key, 0); !bytes.Equal(got, v2) {
		t.Fatalf("after replacement: %d bytes, not v2 (%d bytes)", len(got), len(v2))
	}
	if got, err := io.ReadAll(early); err != nil || !bytes.Equal(got, v1) {
		t.Errorf("reader opened before the replacement: %d bytes, err %v; want v1", len(got), err)
	}
	if files := rawFiles(t, l.Root()); !slices.Equal(files, []string{key}) {
		t.Errorf("files on disk = %q, want only %q", files, key)
	}
}

func TestConcurrentPutSameKey(t *testing.T) {
	l := newLocal(t)
	key := "j/same"
	versions := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range versions {
		versions[i] = payload(uint64(100+i), 1<<20+i)
		wg.Go(func() {
			if _, err := l.Put(context.Background(), key, bytes.NewReader(versions[i])); err != nil {
				t.Errorf("Put %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got := get(t, l, key, 0)
	if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, got) }) {
		t.Errorf("content after concurrent Puts (%d bytes) is none of the versions", len(got))
	}
	if files := rawFiles(t, l.Root()); !slices.Equal(files, []string{key}) {
		t.Errorf("files on disk = %q, want only %q", files, key)
	}
}

func TestBadKeys(t *testing.T) {
	ctx := context.Background()
	l := newLocal(t)
	bad := []string{
		"", "/abs", "/", "../x", "..", ".", "a/../../x", "a/..", "a..b", `a\b`,
		".hidden/x", "a/.tmp", "./a", "a//b", "a/", "a\x00b", "a\nb", "a\tb", "a\x7fb",
		"a\u0085b", "a\xffb",
	}
	for _, key := range bad {
		if err := storage.CheckKey(key); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("CheckKey(%q) = %v, want ErrBadKey", key, err)
		}
		if _, err := l.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("Put(%q): err = %v, want ErrBadKey", key, err)
		}
		if _, err := l.Get(ctx, key, 0); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("Get(%q): err = %v, want ErrBadKey", key, err)
		}
		if _, err := l.Stat(ctx, key); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("Stat(%q): err = %v, want ErrBadKey", key, err)
		}
		if err := l.Delete(ctx, key); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("Delete(%q): err = %v, want ErrBadKey", key, err)
		}
	}
	if files := rawFiles(t, l.Root()); len(files) != 0 {
		t.Errorf("bad keys left files: %q", files)
	}
	if entries, _ := os.ReadDir(l.Root()); len(entries) != 0 {
		t.Errorf("bad keys left entries in the root: %v", entries)
	}
	if outside, _ := os.ReadDir(filepath.Dir(l.Root())); len(outside) != 1 {
		t.Errorf("bad keys wrote beside the root: %v", outside)
	}

	for _, key := range []string{"x", "7/a.sql.zst", "job-1/2024-05-01T03:00:00Z.sql.zst.age", "a.b/c d/é"} {
		if err := storage.CheckKey(key); err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", key, err)
		}
	}
}

func TestNotFound(t *testing.T) {
	ctx := context.Background()
	l := newLocal(t)
	put(t, l, "job/x", []byte("x"))

	for _, key := range []string{"missing", "job/missing", "nojob/x", "job", "job/x/y"} {
		t.Run(key, func(t *testing.T) {
			if err := l.Delete(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Delete: err = %v, want ErrNotFound", err)
			}
			if _, err := l.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Stat: err = %v, want ErrNotFound", err)
			}
			rc, err := l.Get(ctx, key, 0)
			if !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Get: err = %v, want ErrNotFound", err)
			}
			if rc != nil {
				rc.Close()
			}
		})
	}
	// Deleting the directory "job" must not have removed it or its object.
	if got := get(t, l, "job/x", 0); string(got) != "x" {
		t.Errorf("job/x = %q after Delete(\"job\")", got)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	l := newLocal(t)
	keys := []string{"a.b", "a/b", "a/c/d", "ab", "b/x", "b/y/z"}
	for i, k := range slices.Backward(keys) {
		put(t, l, k, bytes.Repeat([]byte{'k'}, i))
	}
	// Foreign dot files and dot directories are not objects.
	for _, p := range []string{"a/.DS_Store", ".hidden/x", "b/.cache/y"} {
		full := filepath.Join(l.Root(), filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("foreign"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{"", keys},
		{"a", []string{"a.b", "a/b", "a/c/d", "ab"}},
		{"a/", []string{"a/b", "a/c/d"}},
		{"a/c", []string{"a/c/d"}},
		{"a/c/d", []string{"a/c/d"}},
		{"a/c/d/", []string{}},
		{"b/y/", []string{"b/y/z"}},
		{"b/", []string{"b/x", "b/y/z"}},
		{"zz/", []string{}},
		{"zz", []string{}},
		{"../", []string{}},
		{".hidden/", []string{}},
		{"/", []string{}},
	}
	for _, tt := range tests {
		if got := listKeys(t, l, tt.prefix); !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}

	objs, err := l.List(ctx, "b/")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		st, err := l.Stat(ctx, o.Key)
		if err != nil || st != o {
			t.Errorf("List gave %+v, Stat gives %+v, %v", o, st, err)
		}
	}
}

func TestSymlinkEscape(t *testing.T) {
	ctx := context.Background()
	l := newLocal(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(l.Root(), "esc")); err != nil {
		t.Fatal(err)
	}

	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(l.Root(), "esc-file")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"esc/secret", "esc-file"} {
		if _, err := l.Stat(ctx, key); err == nil {
			t.Errorf("Stat(%q) through a symlink leaving the root succeeded", key)
		}
	}
	if rc, err := l.Get(ctx, "esc-file", 0); err == nil {
		rc.Close()
		t.Error("Get through a file symlink leaving the root succeeded")
	}
	if rc, err := l.Get(ctx, "esc/secret", 0); err == nil {
		rc.Close()
		t.Error("Get through a symlink leaving the root succeeded")
	}
	if _, err := l.Stat(ctx, "esc/secret"); err == nil {
		t.Error("Stat through a symlink leaving the root succeeded")
	}
	if _, err := l.Put(ctx, "esc/new", strings.NewReader("x")); err == nil {
		t.Error("Put through a symlink leaving the root succeeded")
	}
	if _, err := l.Put(ctx, "esc/sub/new", strings.NewReader("x")); err == nil {
		t.Error("Put (with MkdirAll) through a symlink leaving the root succeeded")
	}
	if err := l.Delete(ctx, "esc/secret"); err == nil {
		t.Error("Delete through a symlink leaving the root succeeded")
	}
	if files := rawFiles(t, outside); !slices.Equal(files, []string{"secret"}) {
		t.Errorf("outside directory now holds %q, want only secret", files)
	}
	if keys := listKeys(t, l, ""); len(keys) != 0 {
		t.Errorf("List followed the escaping symlink: %q", keys)
	}
}

func TestCleanPartialsKeepsOthers(t *testing.T) {
	l := newLocal(t)
	put(t, l, "j/a", []byte("a"))
	for _, p := range []string{"j/.keep", "j/.a.partial-xyz", ".hidden/.a.partial-0123456789abcdef"} {
		full := filepath.Join(l.Root(), filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err := l.CleanPartials()
	if err != nil || n != 0 {
		t.Fatalf("CleanPartials = %d, %v; want 0, nil", n, err)
	}
	if got := len(rawFiles(t, l.Root())); got != 4 {
		t.Errorf("%d files left, want all 4", got)
	}
}

// endlessReader never reaches EOF: it gives limit bytes, then blocks forever,
// so the child cannot fill the disk if the parent is slow to kill it.
type endlessReader struct{ given, limit int }

func (r *endlessReader) Read(p []byte) (int, error) {
	if r.given >= r.limit {
		select {}
	}
	n := min(len(p), r.limit-r.given)
	for i := range n {
		p[i] = byte(r.given + i)
	}
	r.given += n
	return n, nil
}

// TestMain doubles as the child process of TestCleanPartialsAfterCrash:
// with crashEnvDir set it starts a Put that never finishes and waits to be
// killed, instead of running the tests.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnvDir); dir != "" {
		l, err := storage.NewLocal(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_, err = l.Put(context.Background(), crashKey, &endlessReader{limit: 4 << 20})
		fmt.Fprintf(os.Stderr, "Put returned (%v); it should have been killed\n", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

func TestCleanPartialsAfterCrash(t *testing.T) {
	l := newLocal(t)
	put(t, l, "job-9/older.sql.zst", []byte("an older backup"))

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashEnvDir+"="+l.Root())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Wait until the child's temporary holds a couple of MiB, then SIGKILL it.
	var partial string
	deadline := time.After(30 * time.Second)
wait:
	for {
		select {
		case err := <-exited:
			t.Fatalf("helper exited before being killed: %v\n%s", err, out.String())
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			t.Fatalf("no partial of 2 MiB appeared in 30s\n%s", out.String())
		case <-time.After(5 * time.Millisecond):
		}
		for _, f := range rawFiles(t, l.Root()) {
			if !strings.HasPrefix(f, "job-9/.crash.sql.zst.partial-") {
				continue
			}
			if fi, err := os.Stat(filepath.Join(l.Root(), f)); err == nil && fi.Size() >= 2<<20 {
				partial = f
				break wait
			}
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited

	if _, err := l.Stat(context.Background(), crashKey); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat of the crashed key: err = %v, want ErrNotFound", err)
	}
	if files := rawFiles(t, l.Root()); !slices.Contains(files, partial) {
		t.Fatalf("partial %q gone before CleanPartials: %q", partial, files)
	}
	checkMode(t, filepath.Join(l.Root(), partial), 0o600)
	if keys := listKeys(t, l, ""); !slices.Equal(keys, []string{"job-9/older.sql.zst"}) {
		t.Errorf("List before clean = %q, want only the older backup", keys)
	}

	n, err := l.CleanPartials()
	if err != nil || n != 1 {
		t.Fatalf("CleanPartials = %d, %v; want 1, nil", n, err)
	}
	if files := rawFiles(t, l.Root()); !slices.Equal(files, []string{"job-9/older.sql.zst"}) {
		t.Errorf("files after clean = %q, want only the older backup", files)
	}
	if err := l.Delete(context.Background(), "job-9/older.sql.zst"); err != nil {
		t.Fatal(err)
	}
	if keys := listKeys(t, l, ""); len(keys) != 0 {
		t.Errorf("List after clean = %q, want empty", keys)
	}
	if n, err := l.CleanPartials(); err != nil || n != 0 {
		t.Errorf("second CleanPartials = %d, %v; want 0, nil", n, err)
	}
}
