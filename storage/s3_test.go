package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rahatback/rahatback/storage"
	"github.com/rahatback/rahatback/testsupport"
)

const mib = 1 << 20

// s3Data returns n deterministic pseudo-random bytes.
func s3Data(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// s3Config is a configuration for g's bucket under the prefix "backups".
func s3Config(g *testsupport.VersityGW) storage.S3Config {
	return storage.S3Config{Endpoint: g.Endpoint, Region: g.Region, Bucket: g.Bucket, AccessKeyID: g.AccessKey,
		SecretAccessKey: g.SecretKey, ForcePathStyle: true, Prefix: "backups"}
}

func newS3(t *testing.T, cfg storage.S3Config) *storage.S3 {
	t.Helper()
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readAll reads key from offset.
func readAll(t *testing.T, s storage.Storage, key string, offset int64) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key, offset)
	if err != nil {
		t.Fatalf("get %s@%d: %v", key, offset, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s@%d: %v", key, offset, err)
	}
	return b
}

// uploadsLeft lists the multipart uploads in g's bucket.
func uploadsLeft(t *testing.T, g *testsupport.VersityGW) []string {
	t.Helper()
	out, err := g.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &g.Bucket})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

func assertGone(t *testing.T, g *testsupport.VersityGW, s *storage.S3, key string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat %s after a failed put: %v, want ErrNotFound", key, err)
	}
	if left := uploadsLeft(t, g); len(left) != 0 {
		t.Errorf("multipart uploads left behind: %q", left)
	}
}

// chunkReader hands out r in reads of at most n bytes.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// failAfter returns data then fails with err.
func failAfter(data []byte, err error) io.Reader {
	return io.MultiReader(&chunkReader{bytes.NewReader(data), 64 << 10}, iotestErr{err})
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// hookTransport lets a test see or replace S3 requests before they reach
// the server.
type hookTransport struct {
	base http.RoundTripper
	hook func(req *http.Request) (*http.Response, error) // nil, nil: pass on
}

func (h *hookTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if resp, err := h.hook(req); resp != nil || err != nil {
		return resp, err
	}
	return h.base.RoundTrip(req)
}

var baseTransport = http.DefaultTransport.(*http.Transport).Clone()

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func hookedClient(hook func(*http.Request) (*http.Response, error)) *http.Client {
	return &http.Client{Transport: &hookTransport{base: http.DefaultTransport.(*http.Transport).Clone(), hook: hook}}
}

// partNumber is the part an UploadPart request sends, 0 for other requests.
func partNumber(req *http.Request) int {
	if req.Method != http.MethodPut {
		return 0
	}
	var n int
	fmt.Sscan(req.URL.Query().Get("partNumber"), &n)
	return n
}

func TestS3RoundTrip(t *testing.T) {
	g := testsupport.StartVersityGW(t)
	s := newS3(t, s3Config(g))
	ctx := context.Background()

	objects := map[string][]byte{
		"7/a.sql.zst":   s3Data(1, 1000),
		"7/b.sql.zst":   s3Data(2, 3*mib),
		"7/empty":       {},
		"8/c.dump.gz":   s3Data(3, 10),
		"unicode/é ü 1": []byte("x"),
	}
	for k, v := range objects {
		n, err := s.Put(ctx, k, bytes.NewReader(v))
		if err != nil || n != int64(len(v)) {
			t.Fatalf("put %s: %d, %v", k, n, err)
		}
	}
	for k, v := range objects {
		if got := readAll(t, s, k, 0); !bytes.Equal(got, v) {
			t.Errorf("get %s: %d bytes differ from the %d put", k, len(got), len(v))
		}
		o, err := s.Stat(ctx, k)
		if err != nil || o.Key != k || o.Size != int64(len(v)) || time.Since(o.ModTime) > time.Hour {
			t.Errorf("stat %s: %+v, %v", k, o, err)
		}
	}
	// The keys live under the prefix.
	if _, err := g.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &g.Bucket, Key: aws.String("backups/7/a.sql.zst")}); err != nil {
		t.Errorf("raw head backups/7/a.sql.zst: %v", err)
	}

	// Replacing an object.
	if _, err := s.Put(ctx, "7/a.sql.zst", strings.NewReader("new")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, "7/a.sql.zst", 0); string(got) != "new" {
		t.Errorf("after replace: %q", got)
	}

	// List: relative, sorted, prefix-aware, without foreign or hidden keys.
	for _, raw := range []string{"backups/.rahatback-probe-x", "backups/7/", "elsewhere/7/z", "backups-old/7/y"} {
		if _, err := g.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: &g.Bucket, Key: aws.String(raw), Body: strings.NewReader("")}); err != nil {
			t.Fatalf("raw put %s: %v", raw, err)
		}
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"7/a.sql.zst", "7/b.sql.zst", "7/empty", "8/c.dump.gz", "unicode/é ü 1"}},
		{"7/", []string{"7/a.sql.zst", "7/b.sql.zst", "7/empty"}},
		{"7/b", []string{"7/b.sql.zst"}},
		{"9/", nil},
		{"/7", nil},
		{"../", nil},
	} {
		objs, err := s.List(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("list %q: %v", tc.prefix, err)
		}
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
			if want, ok := objects[o.Key]; ok && o.Key != "7/a.sql.zst" && o.Size != int64(len(want)) {
				t.Errorf("list %q: %s has size %d, want %d", tc.prefix, o.Key, o.Size, len(want))
			}
		}
		if strings.Join(keys, ",") != strings.Join(tc.want, ",") {
			t.Errorf("list %q = %q, want %q", tc.prefix, keys, tc.want)
		}
	}

	// Without a prefix, keys are the bucket's.
	whole := newS3(t, func() storage.S3Config { c := s3Config(g); c.Prefix = "/"; return c }())
	if objs, err := whole.List(ctx, "elsewhere/"); err != nil || len(objs) != 1 || objs[0].Key != "elsewhere/7/z" {
		t.Errorf("list without prefix: %+v, %v", objs, err)
	}

	// Delete, and what is missing.
	if err := s.Delete(ctx, "7/b.sql.zst"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "7/b.sql.zst"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat after delete: %v", err)
	}
	if err := s.Delete(ctx, "7/b.sql.zst"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if _, err := s.Get(ctx, "7/b.sql.zst", 0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if _, err := s.Get(ctx, "7/b.sql.zst", 5); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("get@5 after delete: %v", err)
	}

	// Bad keys never reach the server.
	for _, k := range []string{"", "/abs", "a/../b", "a/.partial", "a/"} {
		if _, err := s.Put(ctx, k, strings.NewReader("x")); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("put %q: %v, want ErrBadKey", k, err)
		}
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("get %q: %v, want ErrBadKey", k, err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("stat %q: %v, want ErrBadKey", k, err)
		}
		if err := s.Delete(ctx, k); !errors.Is(err, storage.ErrBadKey) {
			t.Errorf("delete %q: %v, want ErrBadKey", k, err)
		}
	}
}

func TestS3GetOffset(t *testing.T) {
	g := testsupport.StartVersityGW(t)
	s := newS3(t, s3Config(g))
	ctx := context.Background()
	data := s3Data(4, 100_000)
	if _, err := s.Put(ctx, "1/x", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "1/empty", bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1, 65_536, 99_999, 100_000} {
		if got := readAll(t, s, "1/x", off); !bytes.Equal(got, data[off:]) {
			t.Errorf("offset %d: got %d bytes, want %d", off, len(got), len(data)-int(off))
		}
	}
	if got := readAll(t, s, "1/empty", 0); len(got) != 0 {
		t.Errorf("empty object: %d bytes", len(got))
	}
	for _, tc := range []struct {
		key string
		off int64
	}{{"1/x", -1}, {"1/x", 100_001}, {"1/x", 1 << 40}, {"1/empty", 1}} {
		if rc, err := s.Get(ctx, tc.key, tc.off); !errors.Is(err, storage.ErrBadOffset) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("get %s@%d: %v, want ErrBadOffset", tc.key, tc.off, err)
		}
	}
}

func TestS3Multipart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		parts int
	}{
		{"Uneven", 23*mib + 12345, 5},
		{"ExactParts", 10 * mib, 2}, // the reader ends right after a full part
		{"OnePart", 5 * mib, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := testsupport.StartVersityGW(t)
			var inFlight, maxInFlight, parts atomic.Int32
			part2 := make(chan struct{})
			client := &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				num := partNumber(req)
				if num == 0 {
					return baseTransport.RoundTrip(req)
				}
				parts.Add(1)
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
				}
				switch num {
				case 1: // hold part 1 until part 2 is on its way too
					select {
					case <-part2:
					case <-time.After(5 * time.Second):
					}
				case 2:
					close(part2)
				}
				time.Sleep(20 * time.Millisecond) // give a third part the chance to overtake, were it allowed
				return baseTransport.RoundTrip(req)
			})}
			cfg := s3Config(g)
			cfg.PartSize = storage.MinS3PartSize
			cfg.HTTPClient = client
			s := newS3(t, cfg)
			data := s3Data(5, tc.size)
			n, err := s.Put(context.Background(), "big/dump.sql", &chunkReader{bytes.NewReader(data), 100_003})
			if err != nil || n != int64(len(data)) {
				t.Fatalf("put: %d, %v", n, err)
			}
			if got := readAll(t, s, "big/dump.sql", 0); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differing from the %d put", len(got), len(data))
			}
			if parts.Load() != int32(tc.parts) {
				t.Errorf("%d UploadPart calls, want %d", parts.Load(), tc.parts)
			}
			if want := int32(min(tc.parts, 2)); maxInFlight.Load() != want {
				t.Errorf("at most %d parts were in flight, want %d", maxInFlight.Load(), want)
			}
			if left := uploadsLeft(t, g); len(left) != 0 {
				t.Errorf("multipart uploads left: %q", left)
			}
		})
	}
}

func TestS3PartRetry(t *testing.T) {
	injected500 := func(req *http.Request) (*http.Response, error) {
		body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>`
		return &http.Response{StatusCode: 500, Status: "500 Internal Server Error", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/xml"}}, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: req}, nil
	}
	reset := func(*http.Request) (*http.Response, error) {
		return nil, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)}
	}
	for _, tc := range []struct {
		name     string
		fail     func(*http.Request) (*http.Response, error)
		failures int // of part 2
		wantErr  bool
	}{
		{"ServerErrorOnce", injected500, 1, false},
		{"ConnectionResetTwice", reset, 2, false},
		{"AlwaysFailing", injected500, 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := testsupport.StartVersityGW(t)
			var attempts atomic.Int32
			cfg := s3Config(g)
			cfg.PartSize = storage.MinS3PartSize
			cfg.HTTPClient = hookedClient(func(req *http.Request) (*http.Response, error) {
				if partNumber(req) == 2 {
					if attempts.Add(1) <= int32(tc.failures) {
						return tc.fail(req)
					}
				}
				return nil, nil
			})
			s := newS3(t, cfg)
			data := s3Data(6, 12*mib)
			_, err := s.Put(context.Background(), "r/x", bytes.NewReader(data))
			if tc.wantErr {
				if err == nil {
					t.Fatal("put succeeded")
				}
				if attempts.Load() != 4 {
					t.Errorf("part 2 was sent %d times, want 4 (3 retries)", attempts.Load())
				}
				assertGone(t, g, s, "r/x")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if attempts.Load() != int32(tc.failures)+1 {
				t.Errorf("part 2 was sent %d times, want %d", attempts.Load(), tc.failures+1)
			}
			if got := readAll(t, s, "r/x", 0); !bytes.Equal(got, data) {
				t.Error("object differs")
			}
		})
	}
}

func TestS3PutReaderFails(t *testing.T) {
	boom := errors.New("dump failed")
	for _, tc := range []struct {
		name string
		size int
	}{{"SmallObject", 1000}, {"Multipart", 12 * mib}} {
		t.Run(tc.name, func(t *testing.T) {
			g := testsupport.StartVersityGW(t)
			cfg := s3Config(g)
			cfg.PartSize = storage.MinS3PartSize
			s := newS3(t, cfg)
			ctx := context.Background()
			// An existing object stays as it was.
			if _, err := s.Put(ctx, "f/kept", strings.NewReader("old")); err != nil {
				t.Fatal(err)
			}
			_, err := s.Put(ctx, "f/x", failAfter(s3Data(7, tc.size), boom))
			if !errors.Is(err, boom) {
				t.Fatalf("put: %v, want the reader's error", err)
			}
			assertGone(t, g, s, "f/x")
			_, err = s.Put(ctx, "f/kept", failAfter(s3Data(7, tc.size), boom))
			if !errors.Is(err, boom) {
				t.Fatalf("put over an object: %v, want the reader's error", err)
			}
			if got := readAll(t, s, "f/kept", 0); string(got) != "old" {
				t.Errorf("the object a failed put would replace is now %d bytes", len(got))
			}
		})
	}
}

func TestS3PutContextCancelled(t *testing.T) {
	t.Run("WhileReading", func(t *testing.T) {
		g := testsupport.StartVersityGW(t)
		cfg := s3Config(g)
		cfg.PartSize = storage.MinS3PartSize
		s := newS3(t, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := io.MultiReader(bytes.NewReader(s3Data(8, 11*mib)), readerFunc(func(p []byte) (int, error) {
			cancel()
			return copy(p, "more"), nil
		}), bytes.NewReader(s3Data(9, 8*mib)))
		_, err := s.Put(ctx, "c/x", r)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("put: %v, want context.Canceled", err)
		}
		assertGone(t, g, s, "c/x")
	})
	t.Run("PartInFlight", func(t *testing.T) {
		g := testsupport.StartVersityGW(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cfg := s3Config(g)
		cfg.PartSize = storage.MinS3PartSize
		cfg.HTTPClient = hookedClient(func(req *http.Request) (*http.Response, error) {
			if partNumber(req) == 2 {
				cancel()
				<-req.Context().Done()
				return nil, req.Context().Err()
			}
			return nil, nil
		})
		s := newS3(t, cfg)
		_, err := s.Put(ctx, "c/y", bytes.NewReader(s3Data(10, 16*mib)))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("put: %v, want context.Canceled", err)
		}
		assertGone(t, g, s, "c/y")
	})
	t.Run("Before", func(t *testing.T) {
		g := testsupport.StartVersityGW(t)
		s := newS3(t, s3Config(g))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.Put(ctx, "c/z", strings.NewReader("x")); !errors.Is(err, context.Canceled) {
			t.Fatalf("put: %v, want context.Canceled", err)
		}
		assertGone(t, g, s, "c/z")
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestS3AbortStale(t *testing.T) {
	g := testsupport.StartVersityGW(t)
	ctx := context.Background()
	raw := g.Client()
	// Uploads a killed agent would leave: one part sent, never completed.
	leave := func(key string) {
		t.Helper()
		up, err := raw.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &g.Bucket, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		_, err = raw.UploadPart(ctx, &s3.UploadPartInput{Bucket: &g.Bucket, Key: &key, UploadId: up.UploadId,
			PartNumber: aws.Int32(1), Body: bytes.NewReader(s3Data(11, 1000))})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"backups/7/a.sql.zst", "backups/8/b.sql.zst", "backups-old/7/c", "other/d"} {
		leave(k)
	}
	s := newS3(t, s3Config(g))

	if n, err := s.AbortStale(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("abort uploads older than an hour: %d, %v; want 0", n, err)
	}
	// Narrowed to one key, as the agent's upload journal does.
	one := s3Config(g)
	one.Prefix = "backups/8/b.sql.zst"
	if n, err := newS3(t, one).AbortStale(ctx, 0); err != nil || n != 1 {
		t.Fatalf("abort one key: %d, %v; want 1", n, err)
	}
	if n, err := s.AbortStale(ctx, 0); err != nil || n != 1 {
		t.Fatalf("abort under the prefix: %d, %v; want 1", n, err)
	}
	if left := strings.Join(uploadsLeft(t, g), ","); left != "backups-old/7/c,other/d" {
		t.Errorf("uploads left: %s; want those outside the prefix", left)
	}
	all := s3Config(g)
	all.Prefix = ""
	if n, err := newS3(t, all).AbortStale(ctx, 0); err != nil || n != 2 {
		t.Fatalf("abort the whole bucket: %d, %v; want 2", n, err)
	}
	if left := uploadsLeft(t, g); len(left) != 0 {
		t.Errorf("uploads left: %q", left)
	}
}

// cutProxy serves g through a reverse proxy that cuts the body of GET
// responses after cut bytes, for the first cuts of them (-1: all).
type cutProxy struct {
	URL    string
	mu     sync.Mutex
	gets   []*http.Request // GetObject requests seen
	onCut  func()          // called when a body is cut, before the connection drops
	cuts   int
	cutted int
	cutAt  int64
}

func startCutProxy(t *testing.T, g *testsupport.VersityGW, cutAt int64, cuts int) *cutProxy {
	p := &cutProxy{cutAt: cutAt, cuts: cuts}
	target, _ := url.Parse(g.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method != http.MethodGet || strings.Count(strings.Trim(req.URL.Path, "/"), "/") < 1 || resp.StatusCode/100 != 2 {
			return nil
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.gets = append(p.gets, req)
		if p.cuts >= 0 && p.cutted >= p.cuts {
			return nil
		}
		p.cutted++
		resp.Body = &cutBody{rc: resp.Body, left: p.cutAt, onCut: p.onCut}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *cutProxy) requests() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*http.Request(nil), p.gets...)
}

type cutBody struct {
	rc    io.ReadCloser
	left  int64
	onCut func()
}

func (c *cutBody) Read(b []byte) (int, error) {
	if c.left <= 0 {
		if c.onCut != nil {
			c.onCut()
			c.onCut = nil
		}
		return 0, errors.New("connection cut by the test") // the proxy drops the connection
	}
	n, err := c.rc.Read(b[:min(int64(len(b)), c.left)])
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.rc.Close() }

func TestS3GetResume(t *testing.T) {
	g := testsupport.StartVersityGW(t)
	ctx := context.Background()
	data := s3Data(12, 3*mib+17)
	direct := newS3(t, s3Config(g))
	if _, err := direct.Put(ctx, "g/x", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	viaProxy := func(p *cutProxy) *storage.S3 {
		cfg := s3Config(g)
		cfg.Endpoint = p.URL
		return newS3(t, cfg)
	}

	t.Run("Success", func(t *testing.T) {
		for _, off := range []int64{0, 1000} {
			p := startCutProxy(t, g, 200_000, 1)
			got := readAll(t, viaProxy(p), "g/x", off)
			if !bytes.Equal(got, data[off:]) {
				t.Fatalf("offset %d: read %d bytes, not the object's %d", off, len(got), len(data)-int(off))
			}
			reqs := p.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d GETs, want 2", len(reqs))
			}
			if r := reqs[1].Header.Get("Range"); r != fmt.Sprintf("bytes=%d-", off+200_000) {
				t.Errorf("resumed with Range %q", r)
			}
			if reqs[1].Header.Get("If-Match") == "" {
				t.Error("resumed without If-Match")
			}
		}
	})

	t.Run("GivesUp", func(t *testing.T) {
		p := startCutProxy(t, g, 100_000, -1)
		rc, err := viaProxy(p).Get(ctx, "g/x", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		n, err := io.Copy(io.Discard, rc)
		if err == nil {
			t.Fatal("read through a connection cut every 100 kB succeeded")
		}
		if n != 6*100_000 || len(p.requests()) != 6 {
			t.Errorf("read %d bytes in %d GETs; want 600000 in 6 (5 resumes)", n, len(p.requests()))
		}
	})

	t.Run("ObjectReplaced", func(t *testing.T) {
		if _, err := direct.Put(ctx, "g/y", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		p := startCutProxy(t, g, 100_000, 1)
		p.onCut = func() {
			if _, err := direct.Put(ctx, "g/y", bytes.NewReader(s3Data(13, len(data)))); err != nil {
				t.Error(err)
			}
		}
		rc, err := viaProxy(p).Get(ctx, "g/y", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		n, err := io.Copy(io.Discard, rc)
		if err == nil {
			t.Fatalf("read %d bytes spliced from two versions of the object", n)
		}
		t.Logf("read %d bytes, then: %v", n, err)
	})

	t.Run("ContextCancelled", func(t *testing.T) {
		p := startCutProxy(t, g, 100_000, 0)
		cctx, cancel := context.WithCancel(ctx)
		rc, err := viaProxy(p).Get(cctx, "g/x", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		buf := make([]byte, 1000)
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := io.Copy(io.Discard, rc); !errors.Is(err, context.Canceled) {
			t.Errorf("read after cancel: %v, want context.Canceled", err)
		}
		if n := len(p.requests()); n != 1 {
			t.Errorf("%d GETs after a cancellation, want 1 (no resume)", n)
		}
	})
}

func TestS3Probe(t *testing.T) {
	g := testsupport.StartVersityGW(t)
	ctx := context.Background()

	t.Run("Success", func(t *testing.T) {
		if err := newS3(t, s3Config(g)).Probe(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := g.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &g.Bucket})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			t.Errorf("probe left %s behind", aws.ToString(o.Key))
		}
	})

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	// An HTTP server that is not S3: it answers every request with a page.
	notS3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "<html><body>internal admin console at http://10.9.8.7/ Forbidden</body></html>")
	}))
	defer notS3.Close()

	for _, tc := range []struct {
		name   string
		modify func(*storage.S3Config)
		want   error
	}{
		{"BadSecret", func(c *storage.S3Config) { c.SecretAccessKey = "wrong-" + c.SecretAccessKey }, storage.ErrS3BadCredentials},
		{"BadAccessKey", func(c *storage.S3Config) { c.AccessKeyID = "nobody" }, storage.ErrS3BadCredentials},
		{"NoBucket", func(c *storage.S3Config) { c.Bucket = "no-such-bucket-" + testsupport.RandomString(4) }, storage.ErrS3NoBucket},
		{"Denied", func(c *storage.S3Config) { c.AccessKeyID, c.SecretAccessKey = g.NewUser(t) }, storage.ErrS3Denied},
		{"ClosedPort", func(c *storage.S3Config) { c.Endpoint = closedURL }, storage.ErrS3Unreachable},
		{"UnknownHost", func(c *storage.S3Config) { c.Endpoint = "http://rahatback-s3.invalid" }, storage.ErrS3Unreachable},
		{"NotS3", func(c *storage.S3Config) { c.Endpoint = notS3.URL }, storage.ErrS3NotS3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s3Config(g)
			tc.modify(&cfg)
			err := newS3(t, cfg).Probe(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("probe: %v, want %v", err, tc.want)
			}
			for _, secret := range []string{g.SecretKey, cfg.SecretAccessKey} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error holds the secret key: %v", err)
				}
			}
			// Classified text only: no URL, no SDK text, nothing the server sent.
			for _, echo := range []string{"http", "127.0.0.1", "10.9.8.7", "console", "api error", "operation error"} {
				if strings.Contains(err.Error(), echo) {
					t.Errorf("the error holds %q: %v", echo, err)
				}
			}
			t.Log(err)
		})
	}

	t.Run("Deadline", func(t *testing.T) {
		// A server that accepts connections and never answers.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		cfg := s3Config(g)
		cfg.Endpoint = "http://" + l.Addr().String()
		dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		err = newS3(t, cfg).Probe(dctx)
		if !errors.Is(err, storage.ErrS3Unreachable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("probe: %v, want ErrS3Unreachable and DeadlineExceeded", err)
		}
	})
}

func TestNewS3Validation(t *testing.T) {
	const secret = "very-secret-key-1234"
	good := storage.S3Config{Region: "eu-central-1", Bucket: "b", AccessKeyID: "AKID", SecretAccessKey: secret}
	for _, tc := range []struct {
		name   string
		modify func(*storage.S3Config)
	}{
		{"NoBucket", func(c *storage.S3Config) { c.Bucket = "" }},
		{"SlashInBucket", func(c *storage.S3Config) { c.Bucket = "a/b" }},
		{"NoAccessKey", func(c *storage.S3Config) { c.AccessKeyID = "" }},
		{"NoSecret", func(c *storage.S3Config) { c.SecretAccessKey = "" }},
		{"NoRegionForAWS", func(c *storage.S3Config) { c.Region = "" }},
		{"EndpointNotURL", func(c *storage.S3Config) { c.Endpoint = "minio:9000" }},
		{"EndpointFTP", func(c *storage.S3Config) { c.Endpoint = "ftp://minio:9000" }},
		{"EndpointWithCredentials", func(c *storage.S3Config) { c.Endpoint = "https://AKID:" + secret + "@minio:9000" }},
		{"EndpointWithPath", func(c *storage.S3Config) { c.Endpoint = "https://minio:9000/bucket" }},
		{"BadPrefix", func(c *storage.S3Config) { c.Prefix = "a/../b" }},
		{"DotPrefix", func(c *storage.S3Config) { c.Prefix = ".hidden" }},
		{"SmallParts", func(c *storage.S3Config) { c.PartSize = 1 << 20 }},
		{"HugeParts", func(c *storage.S3Config) { c.PartSize = 6 << 30 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.modify(&cfg)
			_, err := storage.NewS3(cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error holds the secret: %v", err)
			}
		})
	}
	for _, tc := range []struct {
		name, endpoint, region, prefix, wantPrefix string
	}{
		{"AWS", "", "eu-central-1", "", ""},
		{"EndpointDefaultsRegion", "https://minio.example:9000/", "", "/backups/", "backups"},
		{"NestedPrefix", "http://127.0.0.1:9000", "us-west-2", "a/b/c", "a/b/c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			cfg.Endpoint, cfg.Region, cfg.Prefix = tc.endpoint, tc.region, tc.prefix
			s, err := storage.NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if s.Prefix() != tc.wantPrefix || s.Bucket() != "b" {
				t.Errorf("prefix %q bucket %q", s.Prefix(), s.Bucket())
			}
		})
	}
}

func TestMaxS3ObjectSize(t *testing.T) {
	// 1000 parts at each of 1, 2, 4, … 512 times the first size.
	if got, want := storage.MaxS3ObjectSize(0), int64(1000*1023*8*mib); got != want {
		t.Errorf("default: %d, want %d", got, want)
	}
	if got := storage.MaxS3ObjectSize(storage.MinS3PartSize); got < 4<<40 {
		t.Errorf("with 5 MiB parts: %d, under 4 TiB", got)
	}
	// Parts never exceed 5 GiB.
	if got, want := storage.MaxS3ObjectSize(1<<30), int64(1000*(1+2+4)<<30+7000*(5<<30)); got != want {
		t.Errorf("1 GiB parts: %d, want %d", got, want)
	}
}
