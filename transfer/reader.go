package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/events"
)

// Reader reads one object from an agent. Read must not be called from
// several goroutines at once; Close may be called at any time, from any
// goroutine.
type Reader struct {
	nc      *nats.Conn
	agentID string
	key     string
	ctlSubj string
	cfg     config
	size    int64 // total size of the object
	want    int64 // bytes this transfer carries: size - offset
	ch      chan *nats.Msg
	credit  atomic.Int64 // last credit granted, repeated as keepalive
	closed  atomic.Bool

	// Owned by Read.
	cur   []byte
	seq   int64 // next expected chunk
	got   int64
	hash  hash.Hash
	err   error // sticky; io.EOF after the verified end
	timer *time.Timer

	mu       sync.Mutex
	sub      *nats.Subscription
	finished bool
	done     chan struct{} // closed by finish
	doneErr  error
}

// Open (control plane side) asks agentID for the object key from offset and
// returns a reader of its bytes. Size() is known before the first Read; Read
// yields Size()-offset bytes, in order, and io.EOF only after checking their
// count and SHA-256 against the agent's. A lost or duplicated chunk fails
// Read with ErrIntegrity, and a wait of IdleTimeout for a chunk with
// ErrTimeout: never silently wrong data. ctx bounds the whole transfer:
// when it ends, Read returns its error. Close must be called unless Read
// returned an error; it cancels the transfer on the agent.
//
// Open fails with ErrNoAgent (wrapping nats.ErrNoResponders) when the agent
// is not connected, ErrNotFound when it has no such object, ErrBusy when it
// already serves MaxTransfers transfers, ErrInvalidOffset when offset is
// negative or beyond the end, and ErrTimeout when it does not answer within
// events.DefaultRPCTimeout.
func Open(ctx context.Context, nc *nats.Conn, agentID, key string, offset int64) (*Reader, error) {
	return open(ctx, nc, agentID, key, offset, defaultConfig())
}

func open(ctx context.Context, nc *nats.Conn, agentID, key string, offset int64, cfg config) (*Reader, error) {
	switch {
	case nc == nil:
		return nil, errors.New("transfer: Open needs a NATS connection")
	case agentID == "":
		return nil, errors.New("transfer: Open needs an agent id")
	case offset < 0:
		return nil, fmt.Errorf("%w: negative offset %d", ErrInvalidOffset, offset)
	}
	id := uuid.NewString()
	r := &Reader{
		nc: nc, agentID: agentID, key: key, cfg: cfg,
		ctlSubj: events.TransferControlSubject(agentID, id),
		ch:      make(chan *nats.Msg, cfg.window),
		hash:    sha256.New(),
		timer:   time.NewTimer(cfg.idle),
		done:    make(chan struct{}),
	}
	r.timer.Stop()
	r.credit.Store(cfg.window)
	// Subscribed before the request, so the first chunks cannot be missed.
	sub, err := nc.Subscribe(events.TransferDataSubject(agentID, id), r.onMsg)
	if err != nil {
		return nil, fmt.Errorf("transfer: subscribe: %w", err)
	}
	r.mu.Lock()
	r.sub = sub
	r.mu.Unlock()

	data, err := json.Marshal(events.TransferRequest{
		V: events.Version, TransferID: id, Key: key, Offset: offset, Window: cfg.window,
	})
	if err != nil {
		r.finish(err, false)
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.requestTimeout)
	msg, err := nc.RequestWithContext(rctx, events.TransferRequestSubject(agentID), data)
	cancel()
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			r.finish(err, false)
			return nil, fmt.Errorf("%w (agent %s)", ErrNoAgent, agentID)
		}
		// The agent may have received the request: tell it to stop.
		r.finish(err, true)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: agent %s did not answer the transfer request for %q within %s", ErrTimeout, agentID, key, cfg.requestTimeout)
		}
		return nil, fmt.Errorf("transfer: asking agent %s for %q: %w", agentID, key, err)
	}
	var rep events.TransferReply
	if err := events.Decode(msg.Data, &rep); err != nil {
		r.finish(err, true)
		return nil, fmt.Errorf("transfer: reply of agent %s: %w", agentID, err)
	}
	if rep.Error != "" {
		err := fmt.Errorf("agent %s: %s", agentID, rep.Error)
		r.finish(err, false)
		switch rep.Code {
		case events.TransferCodeNotFound:
			return nil, fmt.Errorf("%w: %q on agent %s", ErrNotFound, key, agentID)
		case events.TransferCodeBusy:
			return nil, fmt.Errorf("%w: %w", ErrBusy, err)
		case events.TransferCodeInvalidOffset:
			return nil, fmt.Errorf("%w: %w", ErrInvalidOffset, err)
		}
		return nil, fmt.Errorf("transfer: %w", err)
	}
	if rep.Size < offset {
		err := fmt.Errorf("%w: agent %s announced %d bytes for an offset of %d", ErrInvalidOffset, agentID, rep.Size, offset)
		r.finish(err, true)
		return nil, err
	}
	r.size, r.want = rep.Size, rep.Size-offset
	go r.watch(ctx)
	return r, nil
}

// Size is the total size of the object, whatever the offset.
func (r *Reader) Size() int64 { return r.size }

// Read reads the next bytes of the object. After the last byte it returns
// io.EOF, once the count and SHA-256 match the agent's.
func (r *Reader) Read(p []byte) (int, error) {
	if r.closed.Load() {
		return 0, ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if err := r.next(); err != nil {
			r.cur, r.err = nil, err
			r.finish(err, true)
			return 0, err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	if len(r.cur) == 0 && r.err == nil {
		// The chunk is fully handed over: the agent may send one more.
		if r.cfg.consumed != nil {
			r.cfg.consumed(r.seq - 1)
		}
		r.credit.Store(r.seq + r.cfg.window)
		if err := r.control(events.TransferControl{Credit: r.seq + r.cfg.window}); err != nil {
			r.err = fmt.Errorf("transfer: granting credit: %w", err)
			r.finish(r.err, false)
		}
	}
	return n, nil
}

// next takes the next chunk into r.cur, checking its place in the sequence,
// and at the end of the stream the byte count and checksum.
func (r *Reader) next() error {
	select {
	case <-r.done:
		return r.doneErr
	default:
	}
	r.timer.Reset(r.cfg.idle)
	var m *nats.Msg
	select {
	case m = <-r.ch:
		r.timer.Stop()
	case <-r.done:
		r.timer.Stop()
		return r.doneErr
	case <-r.timer.C:
		return fmt.Errorf("%w: no data from agent %s for %s (transfer of %q, %d of %d bytes received)",
			ErrTimeout, r.agentID, r.cfg.idle, r.key, r.got, r.want)
	}
	seqHdr := m.Header.Get(events.TransferSeqHeader)
	seq, err := strconv.ParseInt(seqHdr, 10, 64)
	if err != nil || seq != r.seq {
		return fmt.Errorf("%w: chunk %q received when %d was expected (a chunk was lost or duplicated)", ErrIntegrity, seqHdr, r.seq)
	}
	r.seq++
	r.got += int64(len(m.Data))
	if r.got > r.want {
		return fmt.Errorf("%w: more than the %d bytes announced", ErrIntegrity, r.want)
	}
	r.hash.Write(m.Data)
	r.cur = m.Data
	if m.Header.Get(events.TransferEOFHeader) != "1" {
		return nil
	}
	total, err := strconv.ParseInt(m.Header.Get(events.TransferTotalHeader), 10, 64)
	if err != nil || total != r.got {
		return fmt.Errorf("%w: agent sent %q bytes, %d received", ErrIntegrity, m.Header.Get(events.TransferTotalHeader), r.got)
	}
	if r.got != r.want {
		return fmt.Errorf("%w: stream ended after %d of %d bytes", ErrIntegrity, r.got, r.want)
	}
	if sum := hex.EncodeToString(r.hash.Sum(nil)); sum != m.Header.Get(events.TransferSHA256Header) {
		return fmt.Errorf("%w: SHA-256 %s received, agent sent %s", ErrIntegrity, sum, m.Header.Get(events.TransferSHA256Header))
	}
	r.err = io.EOF
	r.finish(io.EOF, false)
	return nil
}

// Close stops the transfer: the agent is told to cancel unless it has sent
// everything. Read then returns ErrClosed. It always returns nil.
func (r *Reader) Close() error {
	r.closed.Store(true)
	r.finish(ErrClosed, true)
	return nil
}

// onMsg runs on the subscription's goroutine and never blocks: the agent
// sends only what was credited, so r.ch (capacity window) has room unless
// the agent misbehaves.
func (r *Reader) onMsg(m *nats.Msg) {
	if reason := m.Header.Get(events.TransferErrorHeader); reason != "" {
		r.finish(fmt.Errorf("%w: agent %s, %q: %s", ErrAborted, r.agentID, r.key, reason), false)
		return
	}
	select {
	case r.ch <- m:
	default:
		r.finish(fmt.Errorf("%w: agent %s sent more than %d chunks ahead", ErrIntegrity, r.agentID, r.cfg.window), true)
	}
}

// watch repeats the last credit every idle/3 so the agent knows the
// receiver is alive while it is slow (a paused download), and cancels the
// transfer when ctx ends.
func (r *Reader) watch(ctx context.Context) {
	t := time.NewTicker(r.cfg.idle / 3)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-ctx.Done():
			r.finish(fmt.Errorf("transfer: %w", context.Cause(ctx)), true)
			return
		case <-t.C:
			_ = r.control(events.TransferControl{Credit: r.credit.Load()})
		}
	}
}

// finish ends the transfer once: it records err for Read, stops the
// subscription and, if cancel, tells the agent to stop.
func (r *Reader) finish(err error, cancel bool) {
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return
	}
	r.finished, r.doneErr = true, err
	close(r.done)
	sub := r.sub
	r.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	if cancel {
		_ = r.control(events.TransferControl{Cancel: true, Reason: err.Error()})
	}
}

func (r *Reader) control(c events.TransferControl) error {
	c.V = events.Version
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return r.nc.Publish(r.ctlSubj, data)
}
