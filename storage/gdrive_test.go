package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/rahatback/rahatback/drivefake"
	"github.com/rahatback/rahatback/storage"
)

const driveChunk = 256 << 10

func newFake(t *testing.T, opts drivefake.Options) *drivefake.Server {
	t.Helper()
	f := drivefake.New(opts)
	t.Cleanup(f.Close)
	return f
}

// newDrive returns a Drive on fake with 256 KiB chunks; edit adjusts the
// config first.
func newDrive(t *testing.T, fake *drivefake.Server, edit ...func(*storage.DriveConfig)) *storage.Drive {
	t.Helper()
	cfg := storage.DriveConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(),
		RefreshToken: fake.IssueRefreshToken(),
		Endpoint:     fake.APIEndpoint(), TokenURL: fake.TokenURL(),
		ChunkSize: driveChunk,
	}
	for _, e := range edit {
		e(&cfg)
	}
	d, err := storage.NewDrive(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewDrive: %v", err)
	}
	return d
}

func drivePut(t *testing.T, d *storage.Drive, key string, data []byte) {
	t.Helper()
	n, err := d.Put(context.Background(), key, bytes.NewReader(data))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("Put(%q) = %d, %v; want %d, nil", key, n, err, len(data))
	}
}

func driveGet(t *testing.T, d *storage.Drive, key string, offset int64) []byte {
	t.Helper()
	rc, err := d.Get(context.Background(), key, offset)
	if err != nil {
		t.Fatalf("Get(%q, %d): %v", key, offset, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q, %d): read: %v", key, offset, err)
	}
	return b
}

func driveKeys(t *testing.T, d *storage.Drive, prefix string) []string {
	t.Helper()
	objs, err := d.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	keys := []string{}
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

// fakeObjects returns the fake's files that are not folders.
func fakeObjects(fake *drivefake.Server) []drivefake.File {
	var out []drivefake.File
	for _, f := range fake.Files() {
		if f.MimeType != drivefake.FolderMimeType {
			out = append(out, f)
		}
	}
	return out
}

func fakeFolders(fake *drivefake.Server) []drivefake.File {
	var out []drivefake.File
	for _, f := range fake.Files() {
		if f.MimeType == drivefake.FolderMimeType {
			out = append(out, f)
		}
	}
	return out
}

// assertDriveEmpty checks that key is nowhere: not listed, not found, and
// no file at all (partial or not) is left on the fake.
func assertDriveEmpty(t *testing.T, fake *drivefake.Server, d *storage.Drive, key string) {
	t.Helper()
	if keys := driveKeys(t, d, ""); len(keys) != 0 {
		t.Errorf("List = %q, want none", keys)
	}
	if _, err := d.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat(%q) = %v, want ErrNotFound", key, err)
	}
	if files := fakeObjects(fake); len(files) != 0 {
		t.Errorf("the fake holds %d files, first %q", len(files), files[0].Name)
	}
}

func TestDriveRoundTrip(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	key := "job-7/2024-05-01T02:00:00Z.sql.zst"
	data := payload(1, 3<<20+12345)
	drivePut(t, d, key, data)

	if got := driveGet(t, d, key, 0); !bytes.Equal(got, data) {
		t.Fatalf("Get returned %d bytes, not the %d put", len(got), len(data))
	}
	obj, err := d.Stat(context.Background(), key)
	if err != nil || obj.Key != key || obj.Size != int64(len(data)) || obj.ModTime.IsZero() {
		t.Fatalf("Stat = %+v, %v", obj, err)
	}
	st := fake.Stats()
	if st.UploadSessions != 1 || st.ChunkRequests != 13 || st.MultipartUploads != 0 || st.OpenSessions != 0 {
		t.Errorf("stats %+v: want 1 resumable session of 13 chunks", st)
	}
	folders := fakeFolders(fake)
	if len(folders) != 1 || folders[0].Name != storage.DriveFolderName || folders[0].Parents[0] != fake.RootID() {
		t.Fatalf("folders %+v, want one %q in the root", folders, storage.DriveFolderName)
	}
	files := fakeObjects(fake)
	if len(files) != 1 {
		t.Fatalf("the fake holds %d files, want 1", len(files))
	}
	f := files[0]
	if f.Name != key || f.Parents[0] != folders[0].ID || f.AppProperties["rahatbackKey"] != key ||
		len(f.AppProperties) != 1 || f.MimeType != "application/octet-stream" {
		t.Errorf("stored file %q parents %q props %v type %q", f.Name, f.Parents, f.AppProperties, f.MimeType)
	}

	// A small object goes in one multipart request; an empty one too.
	drivePut(t, d, "job-7/small", []byte("tiny"))
	drivePut(t, d, "job-7/empty", nil)
	if st := fake.Stats(); st.MultipartUploads != 2 || st.UploadSessions != 1 {
		t.Errorf("stats %+v: want 2 multipart uploads", st)
	}
	if got := driveGet(t, d, "job-7/empty", 0); len(got) != 0 {
		t.Errorf("empty object read back %d bytes", len(got))
	}
	// An object of exactly n chunks ends with an empty "bytes */total" chunk.
	exact := payload(2, 2*driveChunk)
	drivePut(t, d, "job-7/exact", exact)
	if got := driveGet(t, d, "job-7/exact", 0); !bytes.Equal(got, exact) {
		t.Errorf("exact-chunk object differs")
	}

	// A second Drive (a new process) finds the same folder.
	d2 := newDrive(t, fake)
	if got := driveGet(t, d2, key, 0); !bytes.Equal(got, data) {
		t.Errorf("second Drive reads different bytes")
	}
	if n := len(fakeFolders(fake)); n != 1 {
		t.Errorf("%d folders, want 1", n)
	}
}

func TestDriveGetOffset(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	key := "job-1/a.bin"
	data := payload(3, 1<<20+7)
	drivePut(t, d, key, data)
	size := int64(len(data))
	for _, off := range []int64{0, 1, 300_000, size - 1, size} {
		if got := driveGet(t, d, key, off); !bytes.Equal(got, data[off:]) {
			t.Errorf("Get at %d: %d bytes, want %d", off, len(got), size-off)
		}
	}
	for _, off := range []int64{-1, size + 1} {
		if _, err := d.Get(context.Background(), key, off); !errors.Is(err, storage.ErrBadOffset) {
			t.Errorf("Get at %d: %v, want ErrBadOffset", off, err)
		}
	}
}

func TestDriveReplace(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	key := "job-1/a.sql.zst"
	first, second, third := payload(4, 700_000), payload(5, 300_000), payload(6, 5)
	drivePut(t, d, key, first)
	drivePut(t, d, key, second)
	if got := driveGet(t, d, key, 0); !bytes.Equal(got, second) {
		t.Fatalf("after replace Get returned %d bytes, want the second object's %d", len(got), len(second))
	}
	if files := fakeObjects(fake); len(files) != 1 {
		t.Fatalf("after replace the fake holds %d files, want 1", len(files))
	}

	// A replace that cannot delete the older file still succeeds: the
	// newer file is the object, and the next Put cleans up.
	fake.Intercept(func(r drivefake.Request) int {
		if r.Op == "files.delete" {
			return http.StatusForbidden
		}
		return 0
	})
	drivePut(t, d, key, third)
	fake.Intercept(nil)
	if n := len(fakeObjects(fake)); n != 2 {
		t.Fatalf("the fake holds %d files, want 2 (old one left)", n)
	}
	if got := driveGet(t, d, key, 0); !bytes.Equal(got, third) {
		t.Fatalf("with a leftover, Get returned %q, want the newest", got)
	}
	if obj, err := d.Stat(context.Background(), key); err != nil || obj.Size != int64(len(third)) {
		t.Fatalf("Stat = %+v, %v", obj, err)
	}
	objs, err := d.List(context.Background(), "")
	if err != nil || len(objs) != 1 || objs[0].Size != int64(len(third)) {
		t.Fatalf("List = %+v, %v; want the newest once", objs, err)
	}
	drivePut(t, d, key, first)
	if files := fakeObjects(fake); len(files) != 1 || !bytes.Equal(files[0].Content, first) {
		t.Fatalf("the next Put left %d files", len(files))
	}
	// Delete removes every file under the key.
	fake.Intercept(func(r drivefake.Request) int {
		if r.Op == "files.delete" {
			return http.StatusForbidden
		}
		return 0
	})
	drivePut(t, d, key, second)
	fake.Intercept(nil)
	if err := d.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	assertDriveEmpty(t, fake, d, key)
}

func TestDriveConcurrentPutSameKey(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	key := "job-1/a"
	var wg sync.WaitGroup
	datas := [][]byte{payload(10, 600_000), payload(11, 10), payload(12, 300_000), payload(13, 1)}
	for _, data := range datas {
		wg.Go(func() {
			if _, err := d.Put(context.Background(), key, bytes.NewReader(data)); err != nil {
				t.Errorf("Put: %v", err)
			}
		})
	}
	wg.Wait()
	got := driveGet(t, d, key, 0)
	found := false
	for _, data := range datas {
		found = found || bytes.Equal(got, data)
	}
	if !found {
		t.Fatalf("Get returned %d bytes matching no Put", len(got))
	}
	if n := len(fakeFolders(fake)); n != 1 {
		t.Errorf("concurrent first Puts made %d folders", n)
	}
	if files := fakeObjects(fake); len(files) != 1 {
		t.Errorf("the fake holds %d files, want 1", len(files))
	}
}

func TestDriveList(t *testing.T) {
	// Pages of 2 make List follow nextPageToken.
	fake := newFake(t, drivefake.Options{MaxPageSize: 2})
	d := newDrive(t, fake)
	long := "job-2/" + strings.Repeat("x", 150) + ".sql.zst" // too long for an appProperty
	keys := []string{"job-1/b", "job-1/a", "job-10/a", "job-2/o'brien \"q\".sql", long, "top"}
	for i, k := range keys {
		drivePut(t, d, k, payload(uint64(20+i), 10+i))
	}
	// A partial file and a foreign one in the folder are not objects.
	fake.Intercept(func(r drivefake.Request) int {
		if r.Op == "files.update" || r.Op == "files.delete" {
			return http.StatusForbidden
		}
		return 0
	})
	if _, err := d.Put(context.Background(), "job-1/partial", bytes.NewReader([]byte("p"))); err == nil {
		t.Fatal("Put succeeded with updates refused")
	}
	fake.Intercept(nil)
	if n := len(fakeObjects(fake)); n != len(keys)+1 {
		t.Fatalf("the fake holds %d files, want %d", n, len(keys)+1)
	}

	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"job-1/a", "job-1/b", "job-10/a", "job-2/o'brien \"q\".sql", long, "top"}},
		{"job-1", []string{"job-1/a", "job-1/b", "job-10/a"}},
		{"job-1/", []string{"job-1/a", "job-1/b"}},
		{"job-2/x", []string{long}},
		{"nope", []string{}},
		{"../", []string{}},
	} {
		if got := driveKeys(t, d, tc.prefix); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	for i, k := range keys {
		if got := driveGet(t, d, k, 0); !bytes.Equal(got, payload(uint64(20+i), 10+i)) {
			t.Errorf("Get(%q) differs", k)
		}
	}
	objs, _ := d.List(context.Background(), "top")
	if len(objs) != 1 || objs[0].Size != int64(10+5) || objs[0].ModTime.IsZero() {
		t.Errorf("List(top) = %+v", objs)
	}
	// The fake's clock gives every file its own millisecond, so after a
	// burst of uploads its times run a few milliseconds ahead of ours: the
	// partial is "older than 0" once our clock passes its creation.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := d.CleanPartials(context.Background(), 0)
		if err != nil || n > 1 {
			t.Fatalf("CleanPartials = %d, %v; want 1", n, err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("CleanPartials removed nothing within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(fakeObjects(fake)); n != len(keys) {
		t.Errorf("after CleanPartials the fake holds %d files, want %d", n, len(keys))
	}
}

func TestDriveDelete(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	key := "job-1/a"
	drivePut(t, d, key, []byte("x"))
	drivePut(t, d, "job-1/b", []byte("y"))
	if err := d.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
	if keys := driveKeys(t, d, ""); len(keys) != 1 || keys[0] != "job-1/b" {
		t.Fatalf("List = %q", keys)
	}
}

func TestDriveNotFound(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	ctx := context.Background()
	check := func(t *testing.T, d *storage.Drive) {
		t.Helper()
		for _, key := range []string{"job-1/missing", "job-1", "job-1/a/b"} {
			if _, err := d.Get(ctx, key, 0); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Get(%q): %v", key, err)
			}
			if _, err := d.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Stat(%q): %v", key, err)
			}
			if err := d.Delete(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Delete(%q): %v", key, err)
			}
		}
	}
	d := newDrive(t, fake)
	t.Run("NoFolder", func(t *testing.T) {
		check(t, d)
		if keys := driveKeys(t, d, ""); len(keys) != 0 {
			t.Errorf("List = %q", keys)
		}
		if n := len(fakeFolders(fake)); n != 0 {
			t.Errorf("reads created %d folders", n)
		}
	})
	t.Run("Folder", func(t *testing.T) {
		drivePut(t, d, "job-1/a", []byte("a"))
		check(t, d)
	})
	t.Run("BadKey", func(t *testing.T) {
		for _, key := range []string{"", "/abs", "a/../b", "a/.partial", "a/"} {
			if _, err := d.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, storage.ErrBadKey) {
				t.Errorf("Put(%q): %v, want ErrBadKey", key, err)
			}
			if _, err := d.Get(ctx, key, 0); !errors.Is(err, storage.ErrBadKey) {
				t.Errorf("Get(%q): %v, want ErrBadKey", key, err)
			}
		}
	})
}

func TestDrivePutFails(t *testing.T) {
	boom := errors.New("dump exploded")
	key := "job-1/dump.sql.zst"
	for _, tc := range []struct {
		name string
		r    func() io.Reader
	}{
		{"Midway", func() io.Reader { return &failingReader{data: payload(30, 3<<20), err: boom} }},
		{"FirstChunk", func() io.Reader { return &failingReader{data: payload(31, 1000), err: boom} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t, drivefake.Options{})
			d := newDrive(t, fake)
			n, err := d.Put(context.Background(), key, tc.r())
			if !errors.Is(err, boom) || n != 0 {
				t.Fatalf("Put = %d, %v; want 0, %v", n, err, boom)
			}
			assertDriveEmpty(t, fake, d, key)
		})
	}
	t.Run("ContextCancelled", func(t *testing.T) {
		fake := newFake(t, drivefake.Options{})
		d := newDrive(t, fake)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := d.Put(ctx, key, &cancellingReader{after: 1 << 20, cancel: cancel})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put: %v, want context.Canceled", err)
		}
		assertDriveEmpty(t, fake, d, key)
	})
	t.Run("ChunkRefused", func(t *testing.T) {
		fake := newFake(t, drivefake.Options{})
		d := newDrive(t, fake)
		fake.FailNextChunks(1, http.StatusBadRequest)
		if _, err := d.Put(context.Background(), key, bytes.NewReader(payload(32, 1<<20))); err == nil {
			t.Fatal("Put succeeded with a chunk refused")
		}
		assertDriveEmpty(t, fake, d, key)
	})
	t.Run("MakingVisibleFails", func(t *testing.T) {
		fake := newFake(t, drivefake.Options{})
		d := newDrive(t, fake)
		fake.Intercept(func(r drivefake.Request) int {
			if r.Op == "files.update" {
				return http.StatusForbidden
			}
			return 0
		})
		if _, err := d.Put(context.Background(), key, bytes.NewReader(payload(33, 1<<20))); err == nil {
			t.Fatal("Put succeeded with the update refused")
		}
		assertDriveEmpty(t, fake, d, key)
	})
	t.Run("ReplaceFails", func(t *testing.T) {
		fake := newFake(t, drivefake.Options{})
		d := newDrive(t, fake)
		old := payload(34, 1000)
		drivePut(t, d, key, old)
		if _, err := d.Put(context.Background(), key, &failingReader{data: payload(35, 1<<20), err: boom}); !errors.Is(err, boom) {
			t.Fatalf("Put: %v", err)
		}
		if got := driveGet(t, d, key, 0); !bytes.Equal(got, old) {
			t.Fatal("a failed replace changed the object")
		}
		if n := len(fakeObjects(fake)); n != 1 {
			t.Fatalf("the fake holds %d files, want 1", n)
		}
	})
}

func TestDriveChunkRetried(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	fake.FailNextChunks(2, http.StatusServiceUnavailable)
	data := payload(40, 1<<20+1)
	drivePut(t, d, "job-1/a", data)
	if got := driveGet(t, d, "job-1/a", 0); !bytes.Equal(got, data) {
		t.Fatal("retried upload stored different bytes")
	}
	if st := fake.Stats(); st.Intercepted != 2 || st.ChunkRequests != 5+2 {
		t.Errorf("stats %+v: want 5 chunks and 2 retries", st)
	}
}

func TestDriveTokens(t *testing.T) {
	t.Run("Reused", func(t *testing.T) {
		fake := newFake(t, drivefake.Options{})
		d := newDrive(t, fake)
		for i := range 3 {
			drivePut(t, d, "job-1/a", []byte{byte(i)})
		}
		if st := fake.Stats(); st.RefreshGrants != 1 || st.Unauthorized != 0 {
			t.Errorf("stats %+v: want one refresh for the Drive's life", st)
		}
	})
	t.Run("Refreshed", func(t *testing.T) {
		// oauth2 renews tokens 10 s before they expire: at 5 s, every call.
		fake := newFake(t, drivefake.Options{TokenLifetime: 5 * time.Second})
		d := newDrive(t, fake)
		drivePut(t, d, "job-1/a", payload(50, 600_000))
		if st := fake.Stats(); st.RefreshGrants < 3 || st.Unauthorized != 0 {
			t.Errorf("stats %+v: want a refresh per request", st)
		}
	})
	t.Run("NewDriveOutlivesContext", func(t *testing.T) {
		fake := newFake(t, drivefake.Options{})
		ctx, cancel := context.WithCancel(context.Background())
		d, err := storage.NewDrive(ctx, storage.DriveConfig{ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(),
			RefreshToken: fake.IssueRefreshToken(), Endpoint: fake.APIEndpoint(), TokenURL: fake.TokenURL()})
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		drivePut(t, d, "job-1/a", []byte("x"))
	})
	t.Run("Revoked", func(t *testing.T) {
		fake := newFake(t, drivefake.Options{})
		tok := fake.IssueRefreshToken()
		fake.RevokeRefreshToken(tok)
		d := newDrive(t, fake, func(c *storage.DriveConfig) { c.RefreshToken = tok })
		err := d.Probe(context.Background())
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("Probe: %v, want invalid_grant", err)
		}
		if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), fake.ClientSecret()) {
			t.Errorf("error shows a secret: %v", err)
		}
	})
	t.Run("BadConfig", func(t *testing.T) {
		for _, cfg := range []storage.DriveConfig{
			{ClientSecret: "s", RefreshToken: "r"},
			{ClientID: "c", RefreshToken: "r"},
			{ClientID: "c", ClientSecret: "s"},
			{ClientID: "c", ClientSecret: "s", RefreshToken: "r", ChunkSize: -1},
			{ClientID: "c", ClientSecret: "s", RefreshToken: "r", Endpoint: "not a url"},
		} {
			if _, err := storage.NewDrive(context.Background(), cfg); err == nil {
				t.Errorf("NewDrive(%+v) succeeded", cfg)
			}
		}
	})
}

func TestDriveConfiguredFolder(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	drivePut(t, d, "job-1/a", []byte("a"))
	folder := fakeFolders(fake)[0].ID
	d2 := newDrive(t, fake, func(c *storage.DriveConfig) { c.FolderID = folder })
	if keys := driveKeys(t, d2, ""); len(keys) != 1 {
		t.Fatalf("List with FolderID = %q", keys)
	}
	d3 := newDrive(t, fake, func(c *storage.DriveConfig) { c.FolderID = "missing-folder" })
	if _, err := d3.Put(context.Background(), "job-1/b", strings.NewReader("b")); err == nil {
		t.Fatal("Put into a missing folder succeeded")
	}
}

func TestDriveProbe(t *testing.T) {
	fake := newFake(t, drivefake.Options{})
	d := newDrive(t, fake)
	if err := d.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if files := fakeObjects(fake); len(files) != 0 {
		t.Fatalf("Probe left %d files", len(files))
	}
	err := storage.Probe(context.Background(), storage.Config{Type: "google_drive", Drive: &storage.DriveConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), RefreshToken: fake.IssueRefreshToken(),
		Endpoint: fake.APIEndpoint(), TokenURL: fake.TokenURL()}})
	if err != nil {
		t.Fatalf("storage.Probe: %v", err)
	}
	fake.Intercept(func(r drivefake.Request) int {
		if r.Op == "files.download" {
			return http.StatusForbidden
		}
		return 0
	})
	if err := d.Probe(context.Background()); err == nil || !strings.Contains(err.Error(), "read") {
		t.Fatalf("Probe with downloads refused: %v", err)
	}
	fake.Intercept(nil)
	if files := fakeObjects(fake); len(files) != 0 {
		t.Fatalf("a failed Probe left %d files", len(files))
	}
}

// TestDriveOAuthCodeFlow walks the consent flow the API's auth-url and
// callback routes use, with PKCE, then uses the refresh token it yields.
func TestDriveOAuthCodeFlow(t *testing.T) {
	redirect := "http://127.0.0.1:1/v1/cloud-storage/google/callback"
	fake := newFake(t, drivefake.Options{RedirectURIs: []string{redirect}})
	cfg := storage.OAuthConfig(fake.ClientID(), fake.ClientSecret(), redirect, fake.AuthURL(), fake.TokenURL())
	state := "st-4f2a9c"
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL(state, oauth2.AccessTypeOffline, oauth2.ApprovalForce, oauth2.S256ChallengeOption(verifier))
	u, _ := url.Parse(authURL)
	if u.Query().Get("scope") != "https://www.googleapis.com/auth/drive.file" {
		t.Errorf("scope %q", u.Query().Get("scope"))
	}

	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	consent := func() url.Values {
		res, err := browser.Get(authURL)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		back, err := url.Parse(res.Header.Get("Location"))
		if res.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(back.String(), redirect+"?") {
			t.Fatalf("consent: %d Location %q", res.StatusCode, res.Header.Get("Location"))
		}
		if back.Query().Get("state") != state {
			t.Fatalf("state came back as %q, want %q", back.Query().Get("state"), state)
		}
		return back.Query()
	}
	ctx := context.Background()
	q := consent()
	if _, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption("wrong-verifier-wrong-verifier-wrong-verifier")); err == nil {
		t.Fatal("Exchange succeeded with the wrong PKCE verifier")
	}
	q = consent()
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.RefreshToken == "" || tok.AccessToken == "" || tok.Expiry.IsZero() {
		t.Fatalf("token %+v", tok)
	}
	if _, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier)); err == nil {
		t.Fatal("a code was exchanged twice")
	}

	d := newDrive(t, fake, func(c *storage.DriveConfig) { c.RefreshToken = tok.RefreshToken })
	if err := d.Probe(ctx); err != nil {
		t.Fatalf("Probe with the exchanged refresh token: %v", err)
	}

	// Without access_type=offline Google gives no refresh token.
	authURL = cfg.AuthCodeURL(state)
	tok, err = cfg.Exchange(ctx, consent().Get("code"))
	if err != nil || tok.RefreshToken != "" {
		t.Fatalf("online exchange: %+v, %v; want no refresh token", tok, err)
	}
	// The user refusing comes back as error=access_denied with the state.
	fake.DenyNextConsent()
	if q := consent(); q.Get("error") != "access_denied" || q.Get("code") != "" {
		t.Fatalf("denied consent came back as %v", q)
	}
}

// TestDriveKeyLengths stores keys around Drive's 124-byte appProperty limit,
// under both property names the backend writes, including RahatBack's own
// manifest keys (a job id, a time, a run id and .sql.zst.manifest.json).
func TestDriveKeyLengths(t *testing.T) {
	fake := drivefake.New(drivefake.Options{})
	defer fake.Close()
	d := newDrive(t, fake)
	ctx := context.Background()
	keys := []string{
		"cd14783c-9906-4f9c-bf1c-3bf003cd8fee/20261126T000250Z-5d3b2c85-3d3f-416d-8a82-0bfbb9606a95.sql.zst.manifest.json",
	}
	for n := 100; n <= 116; n++ {
		keys = append(keys, "k/"+strings.Repeat("x", n-2))
	}
	for _, key := range keys {
		if _, err := d.Put(ctx, key, strings.NewReader("v")); err != nil {
			t.Fatalf("put key of %d bytes: %v", len(key), err)
		}
		rc, err := d.Get(ctx, key, 0)
		if err != nil {
			t.Fatalf("get key of %d bytes: %v", len(key), err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "v" {
			t.Fatalf("key of %d bytes read %q", len(key), b)
		}
	}
}
