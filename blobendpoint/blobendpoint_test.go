package blobendpoint

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	azlease "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
)

const testContainer = "backups"

// memStore is an in-memory Store that records every Sink it hands out.
type memStore struct {
	mu         sync.Mutex
	blobs      map[string]*memBlob
	sinks      []*memSink
	failWrites error         // returned by every Sink.Write when set
	writeDelay time.Duration // how long every Sink.Write blocks
}

func newMemStore() *memStore { return &memStore{blobs: make(map[string]*memBlob)} }

func (m *memStore) Create(_ context.Context, name string) (Sink, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &memSink{store: m, name: name, fail: m.failWrites, delay: m.writeDelay, done: make(chan struct{})}
	m.sinks = append(m.sinks, s)
	return s, nil
}

func (m *memStore) Open(_ context.Context, name string) (Source, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[name]
	if !ok {
		return nil, fmt.Errorf("memstore: %q: %w", name, ErrNotFound)
	}
	return b, nil
}

func (m *memStore) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[name]; !ok {
		return ErrNotFound
	}
	delete(m.blobs, name)
	return nil
}

// put stores a blob directly, as a restore's backup would be.
func (m *memStore) put(name string, data []byte) Info {
	info := Info{Size: int64(len(data)), ModTime: time.Now().Truncate(time.Second)}
	m.mu.Lock()
	m.blobs[name] = &memBlob{data: data, info: info}
	m.mu.Unlock()
	return info
}

// lastSink is the latest Sink made for name.
func (m *memStore) lastSink(t *testing.T, name string) *memSink {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.sinks) - 1; i >= 0; i-- {
		if m.sinks[i].name == name {
			return m.sinks[i]
		}
	}
	t.Fatalf("no sink was created for %q", name)
	return nil
}

func (m *memStore) sinkCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sinks)
}

type memBlob struct {
	data []byte
	info Info
}

func (b *memBlob) Info() Info { return b.info }

func (b *memBlob) ReadRange(_ context.Context, offset, length int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.data[offset : offset+length])), nil
}

// memSink keeps what is written; Commit stores it in the memStore.
type memSink struct {
	store *memStore
	name  string
	fail  error
	delay time.Duration

	mu        sync.Mutex
	buf       bytes.Buffer
	writes    int
	ends      int
	committed bool
	abortErr  error
	done      chan struct{}
}

func (s *memSink) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ends != 0 {
		panic("write after the end")
	}
	if s.fail != nil {
		return 0, s.fail
	}
	s.writes++
	return s.buf.Write(p)
}

func (s *memSink) Commit(info Info) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int64(s.buf.Len()) != info.Size {
		panic(fmt.Sprintf("commit of %d bytes with Info.Size %d", s.buf.Len(), info.Size))
	}
	s.end()
	s.committed = true
	s.store.mu.Lock()
	s.store.blobs[s.name] = &memBlob{data: bytes.Clone(s.buf.Bytes()), info: info}
	s.store.mu.Unlock()
	return nil
}

func (s *memSink) Abort(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.end()
	s.abortErr = err
}

func (s *memSink) end() {
	s.ends++
	if s.ends == 1 {
		close(s.done)
	}
}

// wait returns the sink's end: its bytes, or its abort error.
func (s *memSink) wait(t *testing.T) ([]byte, error) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("sink %q never ended", s.name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ends != 1 {
		t.Errorf("sink %q ended %d times", s.name, s.ends)
	}
	if s.committed {
		return bytes.Clone(s.buf.Bytes()), nil
	}
	return nil, s.abortErr
}

func (s *memSink) writeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func (s *memSink) open() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// clock is the server's clock in tests: real time plus an offset.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

type env struct {
	srv   *Server
	ts    *httptest.Server
	store *memStore
	sas   SAS
	clock *clock
}

// newEnv serves a Server on a random loopback port; opts adjusts its
// Options and wrap, when set, wraps its handler.
func newEnv(t *testing.T, opts func(*Options), wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	sas, err := NewSAS("rwdl", time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: newMemStore(), sas: sas, clock: &clock{}}
	o := Options{Container: testContainer, SAS: sas, Store: e.store}
	if opts != nil {
		opts(&o)
	}
	e.srv, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.now = e.clock.now
	var h http.Handler = e.srv
	if wrap != nil {
		h = wrap(h)
	}
	e.ts = httptest.NewServer(h)
	t.Cleanup(func() {
		e.ts.Close()
		_ = e.srv.Close()
	})
	return e
}

func (e *env) url(name, sas string) string {
	u := e.ts.URL + "/" + testContainer + "/" + name
	if sas != "" {
		u += "?" + sas
	}
	return u
}

// client is azblob's block blob client for name with the env's SAS,
// retrying up to retries times (0: none).
func (e *env) client(t *testing.T, name string, retries int32) *blockblob.Client {
	t.Helper()
	return e.clientSAS(t, name, e.sas.Encode(), retries)
}

func (e *env) clientSAS(t *testing.T, name, sas string, retries int32) *blockblob.Client {
	t.Helper()
	if retries == 0 {
		retries = -1
	}
	c, err := blockblob.NewClientWithNoCredential(e.url(name, sas), &blockblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{
			MaxRetries: retries, RetryDelay: 5 * time.Millisecond, MaxRetryDelay: 40 * time.Millisecond,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantCode checks that err is an Azure error with that status and code.
func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v, want %d %s", err, status, code)
	}
	if re.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("error = %d %s, want %d %s", re.StatusCode, re.ErrorCode, status, code)
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// textID is a fixed-length block id for manual staging.
func textID(i int) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "block-%06d", i))
}

// azblobID is an id in the Go SDK's format (see AzblobBlockNumber).
func azblobID(prefix byte, n uint32) string {
	var id [64]byte
	for i := range 16 {
		id[i] = prefix
	}
	binary.BigEndian.PutUint32(id[16:], n)
	return base64.StdEncoding.EncodeToString(id[:])
}

func body(b []byte) io.ReadSeekCloser { return streamingNop{bytes.NewReader(b)} }

type streamingNop struct{ *bytes.Reader }

func (streamingNop) Close() error { return nil }

var ctx = context.Background()

func TestStageAndCommit(t *testing.T) {
	e := newEnv(t, nil, nil)
	c := e.client(t, "db/full.bak", 0)
	parts := [][]byte{randomBytes(1000, 1), randomBytes(70_000, 2), randomBytes(3, 3)}
	var ids []string
	for i, p := range parts {
		ids = append(ids, textID(i))
		if _, err := c.StageBlock(ctx, ids[i], body(p), nil); err != nil {
			t.Fatal(err)
		}
	}
	sink := e.store.lastSink(t, "db/full.bak")
	if sink.writeCount() != len(parts) {
		t.Errorf("sink had %d writes before the commit, want %d (each block passed on as it came)", sink.writeCount(), len(parts))
	}
	list, err := c.GetBlockList(ctx, blockblob.BlockListTypeUncommitted, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.UncommittedBlocks); n != 3 || *list.UncommittedBlocks[1].Size != 70_000 || *list.UncommittedBlocks[2].Name != ids[2] {
		t.Errorf("uncommitted blocks = %d, want the 3 staged in order", n)
	}
	resp, err := c.CommitBlockList(ctx, ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := sink.wait(t)
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Join(parts, nil); !bytes.Equal(got, want) {
		t.Fatalf("sink got %d bytes, want the %d staged in order", len(got), len(want))
	}
	props, err := c.GetProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *props.ContentLength != 71_003 || *props.ETag != *resp.ETag || *props.BlobType != "BlockBlob" {
		t.Errorf("properties: size %d etag %s type %s; want 71003, %s, BlockBlob", *props.ContentLength, *props.ETag, *props.BlobType, *resp.ETag)
	}
	list, err = c.GetBlockList(ctx, blockblob.BlockListTypeAll, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.CommittedBlocks) != 3 || len(list.UncommittedBlocks) != 0 || *list.BlobContentLength != 71_003 {
		t.Errorf("after commit: %d committed, %d uncommitted blocks", len(list.CommittedBlocks), len(list.UncommittedBlocks))
	}
}

// delayBlock holds back the Put Block of azblob block number n, so that
// the blocks after it arrive first.
func delayBlock(n uint32, d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if id, err := base64.StdEncoding.DecodeString(r.URL.Query().Get("blockid")); err == nil {
				if num, ok := AzblobBlockNumber(id); ok && num == uint64(n) {
					time.Sleep(d)
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestUploadStream(t *testing.T) {
	data := randomBytes(21<<20+123, 7) // 6 blocks of 4 MiB, the last one short
	for _, tc := range []struct {
		name        string
		concurrency int
		opts        func(*Options)
		wrap        func(http.Handler) http.Handler
		retries     int32
		wantHeld    bool
		wantBusy    bool
	}{
		{name: "Sequential", concurrency: 1},
		{
			name: "Concurrent", concurrency: 4,
			opts:     func(o *Options) { o.BlockNumber = AzblobBlockNumber },
			wrap:     delayBlock(0, 200*time.Millisecond),
			wantHeld: true,
		},
		{
			name: "ConcurrentTightMemory", concurrency: 4,
			opts:     func(o *Options) { o.BlockNumber = AzblobBlockNumber; o.MaxHeldBytes = 4 << 20 },
			wrap:     delayBlock(0, 200*time.Millisecond),
			retries:  40,
			wantHeld: true, wantBusy: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts, tc.wrap)
			c := e.client(t, "big.bak", tc.retries)
			_, err := c.UploadStream(ctx, bytes.NewReader(data), &blockblob.UploadStreamOptions{
				BlockSize: 4 << 20, Concurrency: tc.concurrency,
			})
			if err != nil {
				t.Fatal(err)
			}
			sink := e.store.lastSink(t, "big.bak")
			got, err := sink.wait(t)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("sink got %d bytes, not the %d uploaded", len(got), len(data))
			}
			if sink.writeCount() != 6 || e.store.sinkCount() != 1 {
				t.Errorf("%d writes to %d sinks, want 6 writes to one", sink.writeCount(), e.store.sinkCount())
			}
			if held := e.srv.heldBlocks.Load(); (held > 0) != tc.wantHeld {
				t.Errorf("%d blocks held out of order, want some: %v", held, tc.wantHeld)
			}
			if busy := e.srv.busy.Load(); (busy > 0) != tc.wantBusy {
				t.Errorf("%d blocks refused as busy, want some: %v", busy, tc.wantBusy)
			}
			if e.srv.heldBytes() != 0 {
				t.Errorf("%d held bytes left after the commit", e.srv.heldBytes())
			}
		})
	}
}

// Without Options.BlockNumber a client that uploads blocks concurrently
// cannot commit them when they arrive out of order: the commit fails and
// the Sink is aborted, so no scrambled blob is ever stored.
func TestArrivalOrderMismatch(t *testing.T) {
	e := newEnv(t, nil, delayBlock(0, 200*time.Millisecond))
	c := e.client(t, "scrambled.bak", 0)
	_, err := c.UploadStream(ctx, bytes.NewReader(randomBytes(4<<20+1, 8)), &blockblob.UploadStreamOptions{
		BlockSize: 1 << 20, Concurrency: 3,
	})
	wantCode(t, err, http.StatusBadRequest, "InvalidBlockList")
	if _, err := e.store.lastSink(t, "scrambled.bak").wait(t); !errors.Is(err, ErrBlockList) {
		t.Fatalf("sink ended with %v, want ErrBlockList", err)
	}
	_, err = c.GetProperties(ctx, nil)
	wantCode(t, err, http.StatusNotFound, "BlobNotFound")
}

func TestOutOfOrderWithinBudget(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.BlockNumber = AzblobBlockNumber; o.MaxHeldBytes = 1 << 20 }, nil)
	c := e.client(t, "ooo.bak", 0)
	blocks := make([][]byte, 4)
	for i := range blocks {
		blocks[i] = randomBytes(1<<20, uint64(10+i))
	}
	stage := func(n int) error {
		_, err := c.StageBlock(ctx, azblobID(9, uint32(n)), body(blocks[n]), nil)
		return err
	}
	if err := stage(2); err != nil {
		t.Fatal(err)
	}
	sink := e.store.lastSink(t, "ooo.bak")
	if sink.writeCount() != 0 {
		t.Fatal("block 2 was passed on before blocks 0 and 1")
	}
	wantCode(t, stage(3), http.StatusServiceUnavailable, "ServerBusy")
	for _, n := range []int{0, 1, 3} {
		if err := stage(n); err != nil {
			t.Fatalf("block %d: %v", n, err)
		}
	}
	if sink.writeCount() != 4 || e.srv.heldBytes() != 0 {
		t.Fatalf("%d writes and %d bytes held, want 4 and 0", sink.writeCount(), e.srv.heldBytes())
	}
	ids := []string{azblobID(9, 0), azblobID(9, 1), azblobID(9, 2), azblobID(9, 3)}
	if _, err := c.CommitBlockList(ctx, ids, nil); err != nil {
		t.Fatal(err)
	}
	got, err := sink.wait(t)
	if err != nil || !bytes.Equal(got, bytes.Join(blocks, nil)) {
		t.Fatalf("sink: %d bytes, %v; want the 4 blocks in order", len(got), err)
	}
	// A block number the function cannot read is refused.
	_, err = c.StageBlock(ctx, textID(0), body([]byte("x")), nil)
	wantCode(t, err, http.StatusBadRequest, "InvalidBlockId")
}

func TestInvalidBlockList(t *testing.T) {
	ids := []string{textID(0), textID(1), textID(2)}
	for _, tc := range []struct {
		name   string
		commit []string
	}{
		{"Reordered", []string{ids[1], ids[0], ids[2]}},
		{"Missing", ids[:2]},
		{"Extra", append(slicesClone(ids), textID(3))},
		{"Repeated", []string{ids[0], ids[1], ids[2], ids[2]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, nil)
			c := e.client(t, "x.bak", 0)
			for i, id := range ids {
				if _, err := c.StageBlock(ctx, id, body(randomBytes(100, uint64(i))), nil); err != nil {
					t.Fatal(err)
				}
			}
			_, err := c.CommitBlockList(ctx, tc.commit, nil)
			wantCode(t, err, http.StatusBadRequest, "InvalidBlockList")
			if _, err := e.store.lastSink(t, "x.bak").wait(t); !errors.Is(err, ErrBlockList) {
				t.Fatalf("sink ended with %v, want ErrBlockList", err)
			}
			_, err = c.GetProperties(ctx, nil)
			wantCode(t, err, http.StatusNotFound, "BlobNotFound")
			// The aborted blocks are gone: committing them again fails too.
			_, err = c.CommitBlockList(ctx, ids, nil)
			wantCode(t, err, http.StatusBadRequest, "InvalidBlockList")
		})
	}
	t.Run("CommittedTag", func(t *testing.T) {
		e := newEnv(t, nil, nil)
		c := e.client(t, "x.bak", 0)
		if _, err := c.StageBlock(ctx, ids[0], body([]byte("abc")), nil); err != nil {
			t.Fatal(err)
		}
		xmlBody := `<?xml version="1.0" encoding="utf-8"?><BlockList><Committed>` + ids[0] + `</Committed></BlockList>`
		req, _ := http.NewRequest(http.MethodPut, e.url("x.bak", "comp=blocklist&"+e.sas.Encode()), strings.NewReader(xmlBody))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var azErr struct{ Code, Message string }
		if err := xml.NewDecoder(resp.Body).Decode(&azErr); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadRequest || azErr.Code != "InvalidBlockList" || resp.Header.Get("x-ms-error-code") != "InvalidBlockList" {
			t.Fatalf("got %d %q (header %q)", resp.StatusCode, azErr.Code, resp.Header.Get("x-ms-error-code"))
		}
	})
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

func TestBlockSentAgain(t *testing.T) {
	e := newEnv(t, nil, nil)
	c := e.client(t, "again.bak", 0)
	a := randomBytes(5000, 1)
	for range 2 { // a retry: same id, same bytes
		if _, err := c.StageBlock(ctx, textID(0), body(a), nil); err != nil {
			t.Fatal(err)
		}
	}
	sink := e.store.lastSink(t, "again.bak")
	if sink.writeCount() != 1 {
		t.Fatalf("a retried block was written %d times", sink.writeCount())
	}
	_, err := c.StageBlock(ctx, textID(0), body(randomBytes(5000, 2)), nil)
	wantCode(t, err, http.StatusBadRequest, "InvalidBlockList")
	if _, err := sink.wait(t); !errors.Is(err, ErrBlockList) {
		t.Fatalf("sink ended with %v, want ErrBlockList", err)
	}
}

func TestPutBlob(t *testing.T) {
	e := newEnv(t, nil, nil)
	c := e.client(t, "small.bak", 0)
	data := randomBytes(300_000, 3)
	resp, err := c.Upload(ctx, body(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(data)
	if !bytes.Equal(resp.ContentMD5, sum[:]) {
		t.Error("Put Blob answered a wrong Content-MD5")
	}
	got, err := e.store.lastSink(t, "small.bak").wait(t)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("sink: %d bytes, %v", len(got), err)
	}
	props, err := c.GetProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *props.ContentLength != int64(len(data)) || *props.ETag != *resp.ETag {
		t.Errorf("properties size %d etag %s, want %d %s", *props.ContentLength, *props.ETag, len(data), *resp.ETag)
	}

	t.Run("Overwrite", func(t *testing.T) {
		resp2, err := c.Upload(ctx, body([]byte("second")), nil)
		if err != nil {
			t.Fatal(err)
		}
		if *resp2.ETag == *resp.ETag {
			t.Error("an overwrite kept the ETag")
		}
		props, err := c.GetProperties(ctx, nil)
		if err != nil || *props.ContentLength != 6 {
			t.Fatalf("after overwrite: %v", err)
		}
	})
	t.Run("BadMD5", func(t *testing.T) {
		bad := md5.Sum([]byte("other"))
		_, err := c.Upload(ctx, body([]byte("content")), &blockblob.UploadOptions{TransactionalContentMD5: bad[:]})
		wantCode(t, err, http.StatusBadRequest, "Md5Mismatch")
		if _, err := e.store.lastSink(t, "small.bak").wait(t); !errors.Is(err, ErrChecksum) {
			t.Fatalf("sink ended with %v, want ErrChecksum", err)
		}
		_, err = c.StageBlock(ctx, textID(0), body([]byte("content")), &blockblob.StageBlockOptions{
			TransactionalValidation: blob.TransferValidationTypeMD5(bad[:]),
		})
		wantCode(t, err, http.StatusBadRequest, "Md5Mismatch")
	})
	t.Run("CancelsBlocks", func(t *testing.T) {
		if _, err := c.StageBlock(ctx, textID(0), body([]byte("block")), nil); err != nil {
			t.Fatal(err)
		}
		blocks := e.store.lastSink(t, "small.bak")
		if _, err := c.Upload(ctx, body([]byte("whole")), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := blocks.wait(t); !errors.Is(err, ErrCanceled) {
			t.Fatalf("block upload ended with %v, want ErrCanceled", err)
		}
	})
	t.Run("PageBlobRefused", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPut, e.url("page.bak", e.sas.Encode()), strings.NewReader(""))
		req.Header.Set("x-ms-blob-type", "PageBlob")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("x-ms-error-code") != "InvalidHeaderValue" {
			t.Fatalf("got %d %s", resp.StatusCode, resp.Header.Get("x-ms-error-code"))
		}
	})
}

func TestRangeReads(t *testing.T) {
	e := newEnv(t, nil, nil)
	data := randomBytes(5<<20+17, 5)
	info := e.store.put("restore.bak", data)
	c := e.client(t, "restore.bak", 0)
	size := int64(len(data))

	props, err := c.GetProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *props.ContentLength != size || string(*props.ETag) != etagOf(info) || *props.AcceptRanges != "bytes" ||
		string(*props.LeaseState) != "available" || string(*props.LeaseStatus) != "unlocked" ||
		!props.LastModified.Equal(info.ModTime) {
		t.Errorf("properties = size %d etag %s ranges %s lease %s/%s modified %v",
			*props.ContentLength, *props.ETag, *props.AcceptRanges, *props.LeaseState, *props.LeaseStatus, props.LastModified)
	}

	for _, tc := range []struct {
		name          string
		rng           blob.HTTPRange
		start, end    int64 // bytes expected, end exclusive
		contentRanged bool
	}{
		{"Whole", blob.HTTPRange{}, 0, size, false},
		{"Middle", blob.HTTPRange{Offset: 100, Count: 1000}, 100, 1100, true},
		{"OpenEnded", blob.HTTPRange{Offset: size - 4000}, size - 4000, size, true},
		{"PastEndCut", blob.HTTPRange{Offset: size - 10, Count: 100}, size - 10, size, true},
		{"LastByte", blob.HTTPRange{Offset: size - 1, Count: 1}, size - 1, size, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: tc.rng})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[tc.start:tc.end]) {
				t.Fatalf("got %d bytes, want bytes %d-%d", len(got), tc.start, tc.end)
			}
			wantRange := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end-1, size)
			if tc.contentRanged && (resp.ContentRange == nil || *resp.ContentRange != wantRange) {
				t.Errorf("Content-Range = %v, want %s", resp.ContentRange, wantRange)
			}
		})
	}
	t.Run("InvalidRange", func(t *testing.T) {
		_, err := c.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: size, Count: 10}})
		wantCode(t, err, http.StatusRequestedRangeNotSatisfiable, "InvalidRange")
	})
	t.Run("RangeMD5", func(t *testing.T) {
		resp, err := c.DownloadStream(ctx, &blob.DownloadStreamOptions{
			Range: blob.HTTPRange{Offset: 1 << 20, Count: 1 << 20}, RangeGetContentMD5: to.Ptr(true),
		})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		sum := md5.Sum(data[1<<20 : 2<<20])
		if !bytes.Equal(resp.ContentMD5, sum[:]) {
			t.Error("wrong range Content-MD5")
		}
	})
	t.Run("ParallelDownload", func(t *testing.T) {
		buf := make([]byte, size)
		n, err := c.DownloadBuffer(ctx, buf, &blob.DownloadBufferOptions{BlockSize: 1 << 20, Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		if n != size || !bytes.Equal(buf, data) {
			t.Fatalf("DownloadBuffer got %d bytes, not the blob", n)
		}
	})
	t.Run("IfMatch", func(t *testing.T) {
		other := azcore.ETag(`"0xOTHER"`)
		_, err := c.DownloadStream(ctx, &blob.DownloadStreamOptions{
			AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &other}},
		})
		wantCode(t, err, http.StatusPreconditionFailed, "ConditionNotMet")
	})
	t.Run("NotFound", func(t *testing.T) {
		_, err := e.client(t, "missing.bak", 0).DownloadStream(ctx, nil)
		wantCode(t, err, http.StatusNotFound, "BlobNotFound")
	})
}

func leaseAccess(id string) *blob.AccessConditions {
	return &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: &id}}
}

func TestLeases(t *testing.T) {
	e := newEnv(t, nil, nil)
	c := e.client(t, "leased.bak", 0)
	if _, err := c.Upload(ctx, body([]byte("v1")), nil); err != nil {
		t.Fatal(err)
	}
	newLease := func(id string) *azlease.BlobClient {
		t.Helper()
		l, err := azlease.NewBlobClient(c, &azlease.BlobClientOptions{LeaseID: &id})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	state := func() (string, string, string) {
		t.Helper()
		p, err := c.GetProperties(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		d := ""
		if p.LeaseDuration != nil {
			d = string(*p.LeaseDuration)
		}
		return string(*p.LeaseState), string(*p.LeaseStatus), d
	}
	wantState := func(st, status, dur string) {
		t.Helper()
		if a, b, c := state(); a != st || b != status || c != dur {
			t.Fatalf("lease = %s/%s/%s, want %s/%s/%s", a, b, c, st, status, dur)
		}
	}
	const idA, idB, idC = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", "33333333-3333-3333-3333-333333333333"
	la := newLease(idA)

	t.Run("AcquireFixed", func(t *testing.T) {
		resp, err := la.AcquireLease(ctx, 15, nil)
		if err != nil {
			t.Fatal(err)
		}
		if *resp.LeaseID != idA {
			t.Fatalf("lease id %s", *resp.LeaseID)
		}
		wantState("leased", "locked", "fixed")
		_, err = newLease(idB).AcquireLease(ctx, 15, nil)
		wantCode(t, err, http.StatusConflict, "LeaseAlreadyPresent")
	})
	t.Run("WritesNeedTheLease", func(t *testing.T) {
		_, err := c.Upload(ctx, body([]byte("v2")), nil)
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMissing")
		_, err = c.Upload(ctx, body([]byte("v2")), &blockblob.UploadOptions{AccessConditions: leaseAccess(idB)})
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMismatchWithBlobOperation")
		_, err = c.StageBlock(ctx, textID(0), body([]byte("b")), nil)
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMissing")
		_, err = c.CommitBlockList(ctx, nil, nil)
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMissing")
		_, err = c.Delete(ctx, nil)
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMissing")
		_, err = c.Delete(ctx, &blob.DeleteOptions{AccessConditions: leaseAccess(idB)})
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMismatchWithBlobOperation")
		_, err = c.DownloadStream(ctx, &blob.DownloadStreamOptions{AccessConditions: leaseAccess(idB)})
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMismatchWithBlobOperation")

		if _, err := c.Upload(ctx, body([]byte("v2")), &blockblob.UploadOptions{AccessConditions: leaseAccess(idA)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.StageBlock(ctx, textID(0), body([]byte("v3")), &blockblob.StageBlockOptions{
			LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: to.Ptr(idA)},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CommitBlockList(ctx, []string{textID(0)}, &blockblob.CommitBlockListOptions{AccessConditions: leaseAccess(idA)}); err != nil {
			t.Fatal(err)
		}
		wantState("leased", "locked", "fixed") // the lease survives an overwrite
	})
	t.Run("ExpireAndRenew", func(t *testing.T) {
		e.clock.advance(16 * time.Second)
		wantState("expired", "unlocked", "")
		_, err := c.Upload(ctx, body([]byte("v4")), &blockblob.UploadOptions{AccessConditions: leaseAccess(idA)})
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseLost")
		if _, err := c.Upload(ctx, body([]byte("v4")), nil); err != nil {
			t.Fatalf("a write without lease on an expired lease: %v", err)
		}
		_, err = newLease(idB).RenewLease(ctx, nil)
		wantCode(t, err, http.StatusConflict, "LeaseIdMismatchWithLeaseOperation")
		if _, err := la.RenewLease(ctx, nil); err != nil {
			t.Fatal(err)
		}
		wantState("leased", "locked", "fixed")
	})
	t.Run("Change", func(t *testing.T) {
		resp, err := la.ChangeLease(ctx, idB, nil)
		if err != nil {
			t.Fatal(err)
		}
		if *resp.LeaseID != idB {
			t.Fatalf("changed lease id = %s", *resp.LeaseID)
		}
		_, err = c.Upload(ctx, body([]byte("v5")), &blockblob.UploadOptions{AccessConditions: leaseAccess(idA)})
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseIdMismatchWithBlobOperation")
		if _, err := c.Upload(ctx, body([]byte("v5")), &blockblob.UploadOptions{AccessConditions: leaseAccess(idB)}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Release", func(t *testing.T) {
		_, err := newLease(idA).ReleaseLease(ctx, nil)
		wantCode(t, err, http.StatusConflict, "LeaseIdMismatchWithLeaseOperation")
		if _, err := newLease(idB).ReleaseLease(ctx, nil); err != nil {
			t.Fatal(err)
		}
		wantState("available", "unlocked", "")
		_, err = newLease(idB).ReleaseLease(ctx, nil)
		wantCode(t, err, http.StatusConflict, "LeaseNotPresentWithLeaseOperation")
		_, err = c.Upload(ctx, body([]byte("v6")), &blockblob.UploadOptions{AccessConditions: leaseAccess(idB)})
		wantCode(t, err, http.StatusPreconditionFailed, "LeaseNotPresentWithBlobOperation")
	})
	t.Run("InfiniteAndBreak", func(t *testing.T) {
		if _, err := newLease(idC).AcquireLease(ctx, -1, nil); err != nil {
			t.Fatal(err)
		}
		wantState("leased", "locked", "infinite")
		e.clock.advance(2 * time.Hour)
		wantState("leased", "locked", "infinite")
		resp, err := newLease(idA).BreakLease(ctx, &azlease.BlobBreakOptions{BreakPeriod: to.Ptr(int32(10))})
		if err != nil {
			t.Fatal(err)
		}
		if *resp.LeaseTime != 10 {
			t.Errorf("break period = %d, want 10", *resp.LeaseTime)
		}
		wantState("breaking", "locked", "")
		_, err = newLease(idC).RenewLease(ctx, nil)
		wantCode(t, err, http.StatusConflict, "LeaseIsBreakingAndCannotBeRenewed")
		_, err = newLease(idA).AcquireLease(ctx, 15, nil)
		wantCode(t, err, http.StatusConflict, "LeaseIsBreakingAndCannotBeAcquired")
		e.clock.advance(11 * time.Second)
		wantState("broken", "unlocked", "")
		if _, err := c.Upload(ctx, body([]byte("v7")), nil); err != nil {
			t.Fatalf("a write without lease on a broken lease: %v", err)
		}
		// An infinite lease without a break period breaks at once.
		if _, err := newLease(idA).AcquireLease(ctx, -1, nil); err != nil {
			t.Fatal(err)
		}
		resp, err = newLease(idB).BreakLease(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if *resp.LeaseTime != 0 {
			t.Errorf("lease time = %d, want 0", *resp.LeaseTime)
		}
		wantState("broken", "unlocked", "")
	})
	t.Run("DeleteWithLease", func(t *testing.T) {
		if _, err := newLease(idB).AcquireLease(ctx, 60, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Delete(ctx, &blob.DeleteOptions{AccessConditions: leaseAccess(idB)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Upload(ctx, body([]byte("new")), nil); err != nil {
			t.Fatalf("a new blob under the name kept the old lease: %v", err)
		}
	})
	t.Run("BadDurationAndMissingBlob", func(t *testing.T) {
		_, err := newLease(idC).AcquireLease(ctx, 10, nil)
		wantCode(t, err, http.StatusBadRequest, "InvalidHeaderValue")
		l, err := azlease.NewBlobClient(e.client(t, "missing.bak", 0), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.AcquireLease(ctx, 15, nil)
		wantCode(t, err, http.StatusNotFound, "BlobNotFound")
	})
}

func TestSAS(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.store.put("a.bak", []byte("data"))
	q, err := url.ParseQuery(e.sas.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("sr") != "c" || q.Get("sp") != "rwdl" || q.Get("sv") != SASVersion || q.Get("sig") != e.sas.Signature || q.Get("se") == "" {
		t.Fatalf("Encode() = %s", e.sas.Encode())
	}
	other, _ := NewSAS("rwdl", e.sas.Expiry)
	if other.Signature == e.sas.Signature {
		t.Fatal("two SAS share a signature")
	}
	with := func(key, value string) string {
		q, _ := url.ParseQuery(e.sas.Encode())
		if value == "" {
			q.Del(key)
		} else {
			q.Set(key, value)
		}
		return q.Encode()
	}
	for _, tc := range []struct{ name, sas string }{
		{"WrongSig", with("sig", other.Signature)},
		{"NoSig", with("sig", "")},
		{"NoSAS", ""},
		{"LaterExpiry", with("se", e.sas.Expiry.Add(time.Hour).Format(sasTime))},
		{"MorePermissions", with("sp", "racwdl")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.clientSAS(t, "a.bak", tc.sas, 0).GetProperties(ctx, nil)
			wantCode(t, err, http.StatusForbidden, "AuthenticationFailed")
			_, err = e.clientSAS(t, "a.bak", tc.sas, 0).Upload(ctx, body([]byte("x")), nil)
			wantCode(t, err, http.StatusForbidden, "AuthenticationFailed")
		})
	}
	t.Run("Expired", func(t *testing.T) {
		e.clock.advance(25 * time.Hour)
		defer e.clock.advance(-25 * time.Hour)
		_, err := e.client(t, "a.bak", 0).GetProperties(ctx, nil)
		wantCode(t, err, http.StatusForbidden, "AuthenticationFailed")
	})
	t.Run("ReadOnly", func(t *testing.T) {
		ro, err := NewSAS("rl", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, func(o *Options) { o.SAS = ro }, nil)
		e.store.put("a.bak", []byte("data"))
		c := e.clientSAS(t, "a.bak", ro.Encode(), 0)
		if _, err := c.GetProperties(ctx, nil); err != nil {
			t.Fatal(err)
		}
		_, err = c.Upload(ctx, body([]byte("x")), nil)
		wantCode(t, err, http.StatusForbidden, "AuthorizationPermissionMismatch")
		_, err = c.Delete(ctx, nil)
		wantCode(t, err, http.StatusForbidden, "AuthorizationPermissionMismatch")
	})
	t.Run("NewSASErrors", func(t *testing.T) {
		for _, p := range []string{"", "rwx"} {
			if _, err := NewSAS(p, time.Now()); err == nil {
				t.Errorf("NewSAS(%q) accepted", p)
			}
		}
		if _, err := NewSAS("r", time.Time{}); err == nil {
			t.Error("NewSAS accepted a zero expiry")
		}
	})
}

func TestDelete(t *testing.T) {
	e := newEnv(t, nil, nil)
	c := e.client(t, "gone.bak", 0)
	if _, err := c.Upload(ctx, body([]byte("data")), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.GetProperties(ctx, nil)
	wantCode(t, err, http.StatusNotFound, "BlobNotFound")
	_, err = c.DownloadStream(ctx, nil)
	wantCode(t, err, http.StatusNotFound, "BlobNotFound")
	_, err = c.Delete(ctx, nil)
	wantCode(t, err, http.StatusNotFound, "BlobNotFound")

	// Deleting a blob whose blocks are being uploaded aborts the upload.
	if _, err := c.StageBlock(ctx, textID(0), body([]byte("b")), nil); err != nil {
		t.Fatal(err)
	}
	_, err = c.Delete(ctx, nil)
	wantCode(t, err, http.StatusNotFound, "BlobNotFound")
	if _, err := e.store.lastSink(t, "gone.bak").wait(t); !errors.Is(err, ErrCanceled) {
		t.Fatalf("sink ended with %v, want ErrCanceled", err)
	}
}

func TestIdleTimeoutAndClose(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.IdleTimeout = 500 * time.Millisecond }, nil)
	c := e.client(t, "slow.bak", 0)
	if _, err := c.StageBlock(ctx, textID(0), body([]byte("a")), nil); err != nil {
		t.Fatal(err)
	}
	sink := e.store.lastSink(t, "slow.bak")
	time.Sleep(300 * time.Millisecond)
	if _, err := c.StageBlock(ctx, textID(1), body([]byte("b")), nil); err != nil {
		t.Fatal(err)
	}
	if e.store.lastSink(t, "slow.bak") != sink {
		t.Fatal("the second block started a new upload")
	}
	time.Sleep(300 * time.Millisecond)
	if !sink.open() {
		t.Fatal("an upload whose last block came 300 ms ago was aborted by a 500 ms idle timeout")
	}
	if _, err := sink.wait(t); !errors.Is(err, ErrIdle) {
		t.Fatalf("sink ended with %v, want ErrIdle", err)
	}
	_, err := c.CommitBlockList(ctx, []string{textID(0), textID(1)}, nil)
	wantCode(t, err, http.StatusBadRequest, "InvalidBlockList")

	if _, err := c.StageBlock(ctx, textID(0), body([]byte("a")), nil); err != nil {
		t.Fatal(err)
	}
	sink = e.store.lastSink(t, "slow.bak")
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.wait(t); !errors.Is(err, ErrClosed) {
		t.Fatalf("sink ended with %v, want ErrClosed", err)
	}
	_, err = c.GetProperties(ctx, nil)
	wantCode(t, err, http.StatusServiceUnavailable, "ServerBusy")
}

// A Sink whose Write blocks longer than IdleTimeout (storage stalling
// upstream) keeps a healthy upload alive: idle counts from the end of the
// last Write, and expiry never fires while one runs.
func TestIdleTimeoutSlowSink(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.IdleTimeout = 200 * time.Millisecond }, nil)
	e.store.writeDelay = 600 * time.Millisecond
	c := e.client(t, "stall.bak", 0)
	parts := [][]byte{randomBytes(1000, 21), randomBytes(2000, 22)}
	var ids []string
	for i, p := range parts {
		ids = append(ids, textID(i))
		if _, err := c.StageBlock(ctx, ids[i], body(p), nil); err != nil {
			t.Fatal(err)
		}
	}
	sink := e.store.lastSink(t, "stall.bak")
	if e.store.sinkCount() != 1 || !sink.open() {
		t.Fatalf("%d sinks, the last one open: %v; want the one upload still open", e.store.sinkCount(), sink.open())
	}
	if _, err := c.CommitBlockList(ctx, ids, nil); err != nil {
		t.Fatal(err)
	}
	got, err := sink.wait(t)
	if err != nil {
		t.Fatalf("sink ended with %v, want a commit", err)
	}
	if want := bytes.Join(parts, nil); !bytes.Equal(got, want) {
		t.Fatalf("sink got %d bytes, want %d", len(got), len(want))
	}
}

func TestSinkFailure(t *testing.T) {
	var logs bytes.Buffer
	e := newEnv(t, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }, nil)
	e.store.failWrites = errors.New("disk on fire")
	c := e.client(t, "fail.bak", 0)
	_, err := c.StageBlock(ctx, textID(0), body([]byte("a")), nil)
	wantCode(t, err, http.StatusInternalServerError, "InternalError")
	var re *azcore.ResponseError
	if errors.As(err, &re) && strings.Contains(re.Error(), "disk on fire") {
		t.Error("the sink's error reached the client")
	}
	if _, err := e.store.lastSink(t, "fail.bak").wait(t); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("sink aborted with %v, want its write error", err)
	}
	if !strings.Contains(logs.String(), "disk on fire") || !strings.Contains(logs.String(), "request_id=") {
		t.Errorf("log = %q, want the error with its request id", logs.String())
	}
	_, err = c.Upload(ctx, body([]byte("a")), nil)
	wantCode(t, err, http.StatusInternalServerError, "InternalError")
}

func TestRawProtocol(t *testing.T) {
	e := newEnv(t, nil, nil)
	do := func(method, path, query string, header map[string]string) *http.Response {
		t.Helper()
		u := e.ts.URL + path + "?" + query
		req, _ := http.NewRequest(method, u, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	sas := e.sas.Encode()
	t.Run("ErrorBody", func(t *testing.T) {
		resp := do(http.MethodGet, "/backups/missing.bak", sas, map[string]string{"x-ms-version": "2020-04-08", "x-ms-client-request-id": "abc"})
		var azErr struct{ Code, Message string }
		if err := xml.NewDecoder(resp.Body).Decode(&azErr); err != nil {
			t.Fatal(err)
		}
		h := resp.Header
		if resp.StatusCode != 404 || azErr.Code != "BlobNotFound" || h.Get("x-ms-error-code") != "BlobNotFound" ||
			!strings.Contains(azErr.Message, "RequestId:"+h.Get("x-ms-request-id")) || h.Get("x-ms-request-id") == "" ||
			h.Get("x-ms-version") != "2020-04-08" || h.Get("x-ms-client-request-id") != "abc" {
			t.Fatalf("got %d %+v, headers %v", resp.StatusCode, azErr, h)
		}
	})
	for _, tc := range []struct {
		name, method, path, query string
		header                    map[string]string
		status                    int
		code                      string
	}{
		{"OtherContainer", http.MethodGet, "/other/a.bak", sas, nil, 404, "ContainerNotFound"},
		{"UnknownComp", http.MethodPut, "/backups/a.bak", "comp=metadata&" + sas, nil, 400, "InvalidQueryParameterValue"},
		{"WrongVerb", http.MethodPost, "/backups/a.bak", "comp=block&" + sas, nil, 405, "UnsupportedHttpVerb"},
		{"NoBlockID", http.MethodPut, "/backups/a.bak", "comp=block&" + sas, nil, 400, "MissingRequiredQueryParameter"},
		{"BadBlockID", http.MethodPut, "/backups/a.bak", "comp=block&blockid=%25%25&" + sas, nil, 400, "InvalidBlockId"},
		{"NoBlobType", http.MethodPut, "/backups/a.bak", sas, nil, 400, "MissingRequiredHeader"},
		{"BadRange", http.MethodGet, "/backups/r.bak", sas, map[string]string{"x-ms-range": "bytes=9-2"}, 400, "InvalidHeaderValue"},
		{"NoLeaseAction", http.MethodPut, "/backups/r.bak", "comp=lease&" + sas, nil, 400, "MissingRequiredHeader"},
		{"BadLeaseID", http.MethodPut, "/backups/r.bak", "comp=lease&" + sas,
			map[string]string{"x-ms-lease-action": "acquire", "x-ms-proposed-lease-id": "nope"}, 400, "InvalidHeaderValue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.store.put("r.bak", []byte("0123456789"))
			resp := do(tc.method, tc.path, tc.query, tc.header)
			if resp.StatusCode != tc.status || resp.Header.Get("x-ms-error-code") != tc.code {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, resp.Header.Get("x-ms-error-code"), tc.status, tc.code)
			}
		})
	}
	t.Run("ContainerProperties", func(t *testing.T) {
		resp := do(http.MethodGet, "/backups", "restype=container&"+sas, nil)
		if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("StandardRange", func(t *testing.T) {
		e.store.put("r.bak", []byte("0123456789"))
		resp := do(http.MethodGet, "/backups/r.bak", sas, map[string]string{"Range": "bytes=3-"})
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 206 || string(got) != "3456789" || resp.Header.Get("Content-Range") != "bytes 3-9/10" {
			t.Fatalf("got %d %q %s", resp.StatusCode, got, resp.Header.Get("Content-Range"))
		}
		resp = do(http.MethodGet, "/backups/r.bak", sas, map[string]string{"Range": "bytes=10-"})
		if resp.StatusCode != 416 || resp.Header.Get("Content-Range") != "bytes */10" {
			t.Fatalf("got %d %s", resp.StatusCode, resp.Header.Get("Content-Range"))
		}
	})
}

func TestNew(t *testing.T) {
	sas, _ := NewSAS("rw", time.Now().Add(time.Hour))
	good := Options{Container: "backups", SAS: sas, Store: newMemStore()}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Options){
		"BadContainer":  func(o *Options) { o.Container = "Backups" },
		"LongContainer": func(o *Options) { o.Container = strings.Repeat("a-", 32) + "a" },
		"ShortSig":      func(o *Options) { o.SAS.Signature = "short" },
		"NoExpiry":      func(o *Options) { o.SAS.Expiry = time.Time{} },
		"NoStore":       func(o *Options) { o.Store = nil },
		"NegativeBlock": func(o *Options) { o.MaxBlockSize = -1 },
	} {
		o := good
		mutate(&o)
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}

func TestAzblobBlockNumber(t *testing.T) {
	id, _ := base64.StdEncoding.DecodeString(azblobID(3, 70000))
	if n, ok := AzblobBlockNumber(id); !ok || n != 70000 {
		t.Fatalf("got %d %v", n, ok)
	}
	id[63] = 1
	if _, ok := AzblobBlockNumber(id); ok {
		t.Error("accepted an id with a non-zero tail")
	}
	if _, ok := AzblobBlockNumber(id[:20]); ok {
		t.Error("accepted a short id")
	}
}
