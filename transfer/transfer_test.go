package transfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/events/natsd"
	"github.com/rahatback/rahatback/testsupport"
)

const mb = 1 << 20

// env is a NATS server with the control plane's connection (cp) and an
// agent's (agent), and the agent's object store in a directory.
type env struct {
	t       testing.TB
	agentID string
	nats    *testsupport.NATS
	cp      *nats.Conn
	agent   *nats.Conn
	store   *store
	// agentOpts connect as the agent (again).
	agentOpts []nats.Option
}

// newEnv connects the agent with its own credentials when
// events.AgentPermissions allows transfers, otherwise as the control plane.
func newEnv(t testing.TB) *env {
	t.Helper()
	agentID := uuid.NewString()
	secret := testsupport.RandomString(16)
	n := testsupport.StartNATS(t, func(id, password string) bool { return id == agentID && password == secret })
	e := &env{t: t, agentID: agentID, nats: n, cp: n.NC, store: newStore(t)}
	user, password := natsd.ControlPlaneUser, n.ControlPlanePassword
	if permitsTransfers(events.AgentPermissions(agentID), agentID) {
		user, password = events.AgentNATSUser(agentID), secret
	} else {
		t.Log("events.AgentPermissions does not allow rahat.xfer.<agent>.> yet: the agent side connects as the control plane")
	}
	e.agentOpts = []nats.Option{nats.UserInfo(user, password), nats.CustomInboxPrefix(events.AgentInboxPrefix(agentID))}
	e.agent = connect(t, n.Server.ClientURL(), e.agentOpts...)
	return e
}

// connect connects to url; the test fails if the connection reports an
// asynchronous error (a permission violation, a slow consumer).
func connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	var mu sync.Mutex
	var asyncErrs []error
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		asyncErrs = append(asyncErrs, err)
		mu.Unlock()
	}))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, err := range asyncErrs {
			t.Errorf("NATS connection: %v", err)
		}
	})
	return nc
}

func permitsTransfers(p events.Permissions, agentID string) bool {
	return slices.Contains(p.Publish, events.TransferSubjects(agentID)) &&
		slices.Contains(p.Subscribe, events.TransferSubjects(agentID))
}

// proposedPermissions is events.AgentPermissions with the lines this package
// asks for.
func proposedPermissions(agentID string) events.Permissions {
	p := events.AgentPermissions(agentID)
	if !permitsTransfers(p, agentID) {
		p.Publish = append(p.Publish, events.TransferSubjects(agentID))
		p.Subscribe = append(p.Subscribe, events.TransferSubjects(agentID))
	}
	return p
}

func testConfig() config {
	cfg := defaultConfig()
	cfg.requestTimeout = 5 * time.Second
	return cfg
}

// agentServer is a running Serve with a record of finished transfers.
type agentServer struct {
	done    chan transferResult
	stop    func() // cancels Serve and waits for it, at most once
	stopped chan struct{}
}

type transferResult struct {
	id  string
	err error
}

// serve runs the agent side on e.agent with cfg (its done hook is replaced)
// until the test ends. When it stops, every object it opened must be closed.
func (e *env) serve(cfg config) *agentServer {
	e.t.Helper()
	return e.serveOn(e.agent, cfg)
}

func (e *env) serveOn(nc *nats.Conn, cfg config) *agentServer {
	e.t.Helper()
	as := &agentServer{done: make(chan transferResult, 100), stopped: make(chan struct{})}
	cfg.done = func(id string, err error) { as.done <- transferResult{id, err} }
	ctx, cancel := context.WithCancel(context.Background())
	s, err := startServer(ctx, nc, e.agentID, e.store.open, testsupport.Logger(e.t), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	go func() {
		s.wait(ctx)
		close(as.stopped)
	}()
	var once sync.Once
	as.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-as.stopped:
			case <-time.After(10 * time.Second):
				e.t.Error("Serve did not return within 10s of its context ending")
			}
			if n := e.store.openCount.Load(); n != 0 {
				e.t.Errorf("%d objects still open after Serve returned", n)
			}
		})
	}
	e.t.Cleanup(as.stop)
	return as
}

// next waits for the next finished transfer on the agent.
func (as *agentServer) next(t testing.TB) transferResult {
	t.Helper()
	select {
	case r := <-as.done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no transfer finished on the agent within 10s")
		return transferResult{}
	}
}

// store serves files of a directory and records which are open.
type store struct {
	root      string
	openCount atomic.Int32
	closed    chan string // keys, as their files are closed
	// wrap, if set, wraps the reader of every opened object.
	wrap func(io.ReadCloser) io.ReadCloser
}

func newStore(t testing.TB) *store {
	return &store{root: t.TempDir(), closed: make(chan string, 100)}
}

func (s *store) put(t testing.TB, key string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.root, key), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *store) open(_ context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	f, err := os.OpenInRoot(s.root, key)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	s.openCount.Add(1)
	var rc io.ReadCloser = &trackedFile{f: f, key: key, s: s}
	if s.wrap != nil {
		rc = s.wrap(rc)
	}
	return rc, fi.Size(), nil
}

type trackedFile struct {
	f    *os.File
	key  string
	s    *store
	once sync.Once
}

func (f *trackedFile) Read(p []byte) (int, error) { return f.f.Read(p) }

func (f *trackedFile) Close() error {
	err := f.f.Close()
	f.once.Do(func() {
		f.s.openCount.Add(-1)
		f.s.closed <- f.key
	})
	return err
}

// waitClosed waits until the file of key has been closed.
func (s *store) waitClosed(t testing.TB, key string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case k := <-s.closed:
			if k == key {
				return
			}
		case <-deadline:
			t.Fatalf("%s was not closed within 10s", key)
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// readAll opens key and reads it to the end.
func readAll(t testing.TB, e *env, cfg config, key string, offset int64) ([]byte, int64, error) {
	t.Helper()
	r, err := open(context.Background(), e.cp, e.agentID, key, offset, cfg)
	if err != nil {
		t.Fatalf("Open(%s, %d): %v", key, offset, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	return data, r.Size(), err
}

func TestTransfer(t *testing.T) {
	t.Run("Success", func(t *testing.T) {
		e := newEnv(t)
		e.serve(testConfig())
		want := randomBytes(20 * mb)
		e.store.put(t, "big.dump", want)
		got, size, err := readAll(t, e, testConfig(), "big.dump", 0)
		if err != nil {
			t.Fatal(err)
		}
		if size != int64(len(want)) {
			t.Errorf("Size() = %d, want %d", size, len(want))
		}
		if sha256.Sum256(got) != sha256.Sum256(want) || !bytes.Equal(got, want) {
			t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(want))
		}
		e.store.waitClosed(t, "big.dump")
	})

	t.Run("Offset", func(t *testing.T) {
		e := newEnv(t)
		e.serve(testConfig())
		want := randomBytes(5*mb + 12345)
		e.store.put(t, "f", want)
		for _, off := range []int64{1, ChunkSize, int64(len(want)) / 2, int64(len(want)) - 1, int64(len(want))} {
			got, size, err := readAll(t, e, testConfig(), "f", off)
			if err != nil {
				t.Fatalf("offset %d: %v", off, err)
			}
			if size != int64(len(want)) {
				t.Errorf("offset %d: Size() = %d, want the total %d", off, size, len(want))
			}
			if !bytes.Equal(got, want[off:]) {
				t.Fatalf("offset %d: got %d bytes, want the %d from the offset", off, len(got), len(want[off:]))
			}
		}
	})

	t.Run("Empty", func(t *testing.T) {
		e := newEnv(t)
		e.serve(testConfig())
		e.store.put(t, "empty", nil)
		got, size, err := readAll(t, e, testConfig(), "empty", 0)
		if err != nil || size != 0 || len(got) != 0 {
			t.Fatalf("got %d bytes, Size() %d, err %v; want nothing", len(got), size, err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		e := newEnv(t)
		e.serve(testConfig())
		for _, key := range []string{"missing.dump", "../../etc/passwd"} {
			r, err := open(context.Background(), e.cp, e.agentID, key, 0, testConfig())
			if key == "missing.dump" && !errors.Is(err, ErrNotFound) {
				t.Fatalf("Open(%q) = %v, %v; want ErrNotFound", key, r, err)
			}
			if err == nil {
				t.Fatalf("Open(%q) succeeded", key)
			}
			if !strings.Contains(err.Error(), key) {
				t.Errorf("error %q does not name the key", err)
			}
		}
	})

	t.Run("InvalidOffset", func(t *testing.T) {
		e := newEnv(t)
		e.serve(testConfig())
		e.store.put(t, "f", randomBytes(1000))
		for _, off := range []int64{-1, 1001} {
			if _, err := open(context.Background(), e.cp, e.agentID, "f", off, testConfig()); !errors.Is(err, ErrInvalidOffset) {
				t.Errorf("offset %d: err = %v, want ErrInvalidOffset", off, err)
			}
		}
	})

	t.Run("NoAgent", func(t *testing.T) {
		e := newEnv(t)
		start := time.Now()
		_, err := Open(context.Background(), e.cp, e.agentID, "f", 0)
		if !errors.Is(err, ErrNoAgent) || !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("err = %v, want ErrNoAgent wrapping nats.ErrNoResponders", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("ErrNoAgent after %s, want at once", d)
		}
	})

	t.Run("NotStored", func(t *testing.T) {
		e := newEnv(t)
		for _, subj := range []string{
			events.TransferDataSubject(e.agentID, "x"),
			events.TransferControlSubject(e.agentID, "x"),
			events.TransferRequestSubject(e.agentID),
		} {
			name, err := e.nats.JS.StreamNameBySubject(context.Background(), subj)
			if !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("stream for %s: %q, %v; want none", subj, name, err)
			}
		}
	})

	t.Run("SlowReader", func(t *testing.T) {
		// The agent may never have more than Window chunks sent and not yet
		// consumed by the Reader; a slow reader makes it wait for credit.
		e := newEnv(t)
		var consumed, maxOut atomic.Int64
		scfg := testConfig()
		scfg.publish = func(seq int64, _ *nats.Msg) int {
			out := seq + 1 - consumed.Load()
			for {
				m := maxOut.Load()
				if out <= m || maxOut.CompareAndSwap(m, out) {
					break
				}
			}
			return 1
		}
		e.serve(scfg)
		want := randomBytes(12 * mb)
		e.store.put(t, "f", want)
		rcfg := testConfig()
		rcfg.consumed = func(seq int64) { consumed.Store(seq + 1) }
		r, err := open(context.Background(), e.cp, e.agentID, "f", 0, rcfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var got bytes.Buffer
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatal("received bytes differ")
		}
		if m := maxOut.Load(); m != Window {
			t.Fatalf("at most %d chunks were outstanding; want exactly Window = %d", m, Window)
		}
	})

	t.Run("CloseMidway", func(t *testing.T) {
		e := newEnv(t)
		as := e.serve(testConfig())
		e.store.put(t, "f", randomBytes(20*mb))
		r, err := open(context.Background(), e.cp, e.agentID, "f", 0, testConfig())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, r, mb); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(make([]byte, 10)); !errors.Is(err, ErrClosed) {
			t.Errorf("Read after Close: %v, want ErrClosed", err)
		}
		res := as.next(t)
		if !errors.Is(res.err, errCancelled) {
			t.Errorf("agent transfer ended with %v, want cancelled", res.err)
		}
		e.store.waitClosed(t, "f")
	})

	t.Run("ContextCancelled", func(t *testing.T) {
		e := newEnv(t)
		as := e.serve(testConfig())
		e.store.put(t, "f", randomBytes(20*mb))
		ctx, cancel := context.WithCancel(context.Background())
		r, err := open(ctx, e.cp, e.agentID, "f", 0, testConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := io.CopyN(io.Discard, r, mb); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := io.Copy(io.Discard, r); !errors.Is(err, context.Canceled) {
			t.Errorf("Read after the context ended: %v, want context.Canceled", err)
		}
		if res := as.next(t); !errors.Is(res.err, errCancelled) {
			t.Errorf("agent transfer ended with %v, want cancelled", res.err)
		}
		e.store.waitClosed(t, "f")
	})

	t.Run("DroppedChunk", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig()
		cfg.publish = func(seq int64, _ *nats.Msg) int {
			if seq == 3 {
				return 0
			}
			return 1
		}
		as := e.serve(cfg)
		e.store.put(t, "f", randomBytes(8*mb))
		_, _, err := readAll(t, e, testConfig(), "f", 0)
		if !errors.Is(err, ErrIntegrity) {
			t.Fatalf("err = %v, want ErrIntegrity", err)
		}
		t.Log(err)
		as.next(t)
		e.store.waitClosed(t, "f")
	})

	t.Run("DuplicatedChunk", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig()
		cfg.publish = func(seq int64, _ *nats.Msg) int {
			if seq == 2 {
				return 2
			}
			return 1
		}
		e.serve(cfg)
		e.store.put(t, "f", randomBytes(2*mb))
		if _, _, err := readAll(t, e, testConfig(), "f", 0); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("err = %v, want ErrIntegrity", err)
		}
	})

	t.Run("CorruptedChunk", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig()
		cfg.publish = func(seq int64, m *nats.Msg) int {
			if seq == 1 {
				m.Data[100] ^= 1
			}
			return 1
		}
		e.serve(cfg)
		e.store.put(t, "f", randomBytes(2*mb))
		if _, _, err := readAll(t, e, testConfig(), "f", 0); !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "SHA-256") {
			t.Fatalf("err = %v, want a SHA-256 mismatch", err)
		}
	})

	t.Run("LostLastChunk", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig()
		cfg.publish = func(seq int64, m *nats.Msg) int {
			if m.Header.Get(events.TransferEOFHeader) != "" {
				return 0
			}
			return 1
		}
		e.serve(cfg)
		e.store.put(t, "f", randomBytes(3*ChunkSize))
		rcfg := testConfig()
		rcfg.idle = 300 * time.Millisecond
		start := time.Now()
		got, _, err := readAll(t, e, rcfg, "f", 0)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if len(got) != 2*ChunkSize {
			t.Errorf("read %d bytes before the timeout, want %d", len(got), 2*ChunkSize)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("timed out after %s", d)
		}
	})

	t.Run("ReadErrorOnAgent", func(t *testing.T) {
		e := newEnv(t)
		e.store.wrap = func(rc io.ReadCloser) io.ReadCloser { return &failingReader{ReadCloser: rc, left: 3 * mb / 2} }
		as := e.serve(testConfig())
		e.store.put(t, "f", randomBytes(4*mb))
		got, _, err := readAll(t, e, testConfig(), "f", 0)
		if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("err = %v, want ErrAborted with the agent's reason", err)
		}
		if len(got) > 3*mb/2 {
			t.Errorf("read %d bytes, more than the agent could read", len(got))
		}
		as.next(t)
		e.store.waitClosed(t, "f")
	})

	t.Run("AgentShutdown", func(t *testing.T) {
		e := newEnv(t)
		as := e.serve(testConfig())
		e.store.put(t, "f", randomBytes(20*mb))
		r, err := open(context.Background(), e.cp, e.agentID, "f", 0, testConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := io.CopyN(io.Discard, r, mb); err != nil {
			t.Fatal(err)
		}
		as.stop() // returns once the transfer has stopped and closed its file
		if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), errShutdown.Error()) {
			t.Fatalf("err = %v, want ErrAborted: %v", err, errShutdown)
		}
		// A new request finds nobody.
		if _, err := open(context.Background(), e.cp, e.agentID, "f", 0, testConfig()); !errors.Is(err, ErrNoAgent) {
			t.Fatalf("Open after Serve returned: %v, want ErrNoAgent", err)
		}
	})

	t.Run("Busy", func(t *testing.T) {
		e := newEnv(t)
		as := e.serve(testConfig())
		e.store.put(t, "f", randomBytes(20*mb))
		var readers []*Reader
		for range MaxTransfers {
			r, err := open(context.Background(), e.cp, e.agentID, "f", 0, testConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			readers = append(readers, r)
		}
		if _, err := open(context.Background(), e.cp, e.agentID, "f", 0, testConfig()); !errors.Is(err, ErrBusy) {
			t.Fatalf("transfer %d: err = %v, want ErrBusy", MaxTransfers+1, err)
		}
		readers[0].Close()
		as.next(t)
		r, err := open(context.Background(), e.cp, e.agentID, "f", 0, testConfig())
		if err != nil {
			t.Fatalf("after one transfer ended: %v", err)
		}
		r.Close()
	})

	t.Run("ReceiverGone", func(t *testing.T) {
		// A receiver that vanishes without cancelling (crash, partition):
		// the agent gives up after the idle timeout and closes the file.
		e := newEnv(t)
		cfg := testConfig()
		cfg.idle = 300 * time.Millisecond
		as := e.serve(cfg)
		e.store.put(t, "f", randomBytes(mb))
		var rep events.TransferReply
		req := events.TransferRequest{V: events.Version, TransferID: "gone", Key: "f", Window: 2}
		if err := events.Request(context.Background(), e.cp, events.TransferRequestSubject(e.agentID), req, &rep, 5*time.Second); err != nil || rep.Error != "" {
			t.Fatalf("request: %v %+v", err, rep)
		}
		start := time.Now()
		if res := as.next(t); !errors.Is(res.err, errIdle) {
			t.Fatalf("agent transfer ended with %v, want %v", res.err, errIdle)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("agent gave up after %s, want about 300ms", d)
		}
		e.store.waitClosed(t, "f")
	})

	t.Run("Keepalive", func(t *testing.T) {
		// A receiver that pauses longer than the idle timeout but stays
		// alive keeps the transfer. Keepalives come every idle/3: a second
		// of idle leaves room for a busy machine's pauses.
		e := newEnv(t)
		cfg := testConfig()
		cfg.idle = time.Second
		e.serve(cfg)
		want := randomBytes(8 * mb)
		e.store.put(t, "f", want)
		r, err := open(context.Background(), e.cp, e.agentID, "f", 0, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		time.Sleep(3 * time.Second)
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after a pause: %d bytes, %v", len(got), err)
		}
	})

	t.Run("TwoAgentConnections", func(t *testing.T) {
		// An agent restarting while its old connection lingers serves from
		// two connections: each request must still be streamed once.
		e := newEnv(t)
		e.serve(testConfig())
		e.serveOn(connect(t, e.nats.Server.ClientURL(), e.agentOpts...), testConfig())
		want := randomBytes(3 * mb)
		e.store.put(t, "f", want)
		for range 4 {
			got, _, err := readAll(t, e, testConfig(), "f", 0)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%d bytes, %v", len(got), err)
			}
		}
	})

	t.Run("BadRequest", func(t *testing.T) {
		e := newEnv(t)
		e.serve(testConfig())
		e.store.put(t, "f", randomBytes(10))
		for _, req := range []events.TransferRequest{
			{V: events.Version, TransferID: "a.b", Key: "f", Window: 1},
			{V: events.Version, TransferID: "*", Key: "f", Window: 1},
			{V: events.Version, TransferID: ">", Key: "f", Window: 1},
			{V: events.Version, TransferID: "", Key: "f", Window: 1},
			{V: events.Version, TransferID: "ok", Key: "f", Window: 0},
			{V: events.Version + 1, TransferID: "ok", Key: "f", Window: 1},
		} {
			var rep events.TransferReply
			if err := events.Request(context.Background(), e.cp, events.TransferRequestSubject(e.agentID), req, &rep, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if rep.Code != events.TransferCodeBadRequest || rep.Error == "" {
				t.Errorf("%+v: reply %+v, want bad_request", req, rep)
			}
		}
	})
}

type failingReader struct {
	io.ReadCloser
	left int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, errors.New("disk on fire")
	}
	n, err := f.ReadCloser.Read(p[:min(len(p), f.left)])
	f.left -= n
	return n, err
}

// TestAgentPermissions runs transfers with the agent connected under the
// permissions this package asks events.AgentPermissions for, applied as
// natsd applies them, on a plain server.
func TestAgentPermissions(t *testing.T) {
	agentID := uuid.NewString()
	cpPassword, agentPassword := testsupport.RandomString(16), testsupport.RandomString(16)
	p := proposedPermissions(agentID)
	perms := &natsserver.Permissions{
		Publish:   &natsserver.SubjectPermission{Allow: p.Publish},
		Subscribe: &natsserver.SubjectPermission{Allow: p.Subscribe},
	}
	if p.AllowResponses {
		perms.Response = &natsserver.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoSigs: true, NoLog: true, MaxPayload: mb,
		Users: []*natsserver.User{
			{Username: natsd.ControlPlaneUser, Password: cpPassword},
			{Username: events.AgentNATSUser(agentID), Password: agentPassword, Permissions: perms},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	e := &env{t: t, agentID: agentID, store: newStore(t)}
	e.cp = connect(t, ns.ClientURL(), nats.UserInfo(natsd.ControlPlaneUser, cpPassword))
	e.agent = connect(t, ns.ClientURL(),
		nats.UserInfo(events.AgentNATSUser(agentID), agentPassword), nats.CustomInboxPrefix(events.AgentInboxPrefix(agentID)))
	as := e.serve(testConfig())

	want := randomBytes(3*mb + 7)
	e.store.put(t, "f", want)
	got, _, err := readAll(t, e, testConfig(), "f", 0)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("transfer as the agent user: %d bytes, %v", len(got), err)
	}
	as.next(t)
	if _, err := open(context.Background(), e.cp, agentID, "missing", 0, testConfig()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	as.next(t)
	// Larger than Window chunks, so the agent must wait for credit.
	e.store.put(t, "big", randomBytes(2*Window*ChunkSize))
	r, err := open(context.Background(), e.cp, agentID, "big", 0, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // the agent receives the cancel on its control subject
	if res := as.next(t); !errors.Is(res.err, errCancelled) {
		t.Fatalf("agent transfer ended with %v, want cancelled", res.err)
	}

	// Another agent may neither read nor forge this agent's transfers.
	other := uuid.NewString()
	op := events.AgentPermissions(other)
	for _, subj := range []string{events.TransferDataSubject(agentID, "x"), events.TransferControlSubject(agentID, "x")} {
		for _, allowed := range [][]string{op.Publish, op.Subscribe, proposedPermissions(other).Publish, proposedPermissions(other).Subscribe} {
			for _, pat := range allowed {
				if subjectMatches(pat, subj) {
					t.Errorf("agent %s may use %s through %s", other, subj, pat)
				}
			}
		}
	}
}

// subjectMatches reports whether the NATS pattern pat matches subj.
func subjectMatches(pat, subj string) bool {
	p, s := strings.Split(pat, "."), strings.Split(subj, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func TestRequestJSON(t *testing.T) {
	// The wire format is the contract with agents of other versions.
	data, err := json.Marshal(events.TransferRequest{V: 1, TransferID: "t", Key: "k", Offset: 5, Window: 16})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"v":1,"transferId":"t","key":"k","offset":5,"window":16}`; string(data) != want {
		t.Errorf("request = %s, want %s", data, want)
	}
	data, _ = json.Marshal(events.TransferReply{V: 1, Size: 0})
	if want := `{"v":1,"size":0}`; string(data) != want {
		t.Errorf("reply = %s, want %s", data, want)
	}
	data, _ = json.Marshal(events.TransferControl{V: 1, Credit: 17})
	if want := `{"v":1,"credit":17}`; string(data) != want {
		t.Errorf("control = %s, want %s", data, want)
	}
	for _, tc := range []struct{ got, want string }{
		{events.TransferRequestSubject("a"), "rahat.rpc.a.transfer"},
		{events.TransferDataSubject("a", "t"), "rahat.xfer.a.t.data"},
		{events.TransferControlSubject("a", "t"), "rahat.xfer.a.t.ctl"},
		{events.TransferSubjects("a"), "rahat.xfer.a.>"},
	} {
		if tc.got != tc.want {
			t.Errorf("subject %q, want %q", tc.got, tc.want)
		}
	}
}

// BenchmarkTransfer measures the throughput of a 100 MB transfer over
// loopback: go test -run '^$' -bench Transfer -benchtime 3x ./transfer/
func BenchmarkTransfer(b *testing.B) {
	e := newEnv(b)
	e.serve(defaultConfig())
	const size = 100 * mb
	e.store.put(b, "f", randomBytes(size))
	b.SetBytes(size)
	for b.Loop() {
		r, err := Open(context.Background(), e.cp, e.agentID, "f", 0)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		r.Close()
		if err != nil || n != size {
			b.Fatal(n, err)
		}
	}
}
