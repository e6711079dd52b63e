package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/events"
)

// headroom is left under the server's max_payload for a chunk's headers.
const headroom = 4 << 10

var (
	errCancelled = errors.New("cancelled by the receiver")
	errIdle      = errors.New("no credit from the receiver")
	errShutdown  = errors.New("agent shutting down")
)

// Serve (agent side) answers transfer requests for agentID until ctx ends,
// then waits for the transfers in progress to stop and returns nil. It
// subscribes to events.TransferRequestSubject(agentID); each accepted request
// runs in its own goroutine (at most MaxTransfers at once, others are
// refused as busy), opens the object with open and streams it to the
// requester under the flow control described in the package comment. An
// error from open is sent back to the requester: ErrNotFound for errors
// matching ErrNotFound or fs.ErrNotExist, its text otherwise. log nil means
// slog.Default(). Serve returns an error only when it cannot subscribe.
func Serve(ctx context.Context, nc *nats.Conn, agentID string, open Opener, log *slog.Logger) error {
	s, err := startServer(ctx, nc, agentID, open, log, defaultConfig())
	if err != nil {
		return err
	}
	s.wait(ctx)
	return nil
}

type server struct {
	nc      *nats.Conn
	agentID string
	open    Opener
	log     *slog.Logger
	cfg     config
	sub     *nats.Subscription
	sem     chan struct{}

	mu      sync.Mutex // orders wg.Add against stopping
	stopped bool
	wg      sync.WaitGroup
}

// startServer subscribes and returns once the NATS server has registered the
// subscription, so requests sent afterwards reach it.
func startServer(ctx context.Context, nc *nats.Conn, agentID string, open Opener, log *slog.Logger, cfg config) (*server, error) {
	switch {
	case nc == nil:
		return nil, errors.New("transfer: Serve needs a NATS connection")
	case agentID == "":
		return nil, errors.New("transfer: Serve needs an agent id")
	case open == nil:
		return nil, errors.New("transfer: Serve needs an Opener")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &server{
		nc: nc, agentID: agentID, open: open, cfg: cfg,
		log: log.With("component", "transfer"),
		sem: make(chan struct{}, cfg.maxActive),
	}
	// A queue group: should two connections of one agent serve at once
	// (a restart racing the old connection's timeout), only one of them
	// answers and streams each request.
	sub, err := nc.QueueSubscribe(events.TransferRequestSubject(agentID), events.TransferQueueGroup, func(m *nats.Msg) { s.handle(ctx, m) })
	if err != nil {
		return nil, fmt.Errorf("transfer: subscribe: %w", err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("transfer: subscribe: %w", err)
	}
	s.sub = sub
	return s, nil
}

func (s *server) wait(ctx context.Context) {
	<-ctx.Done()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	_ = s.sub.Unsubscribe()
	s.wg.Wait()
}

// handle runs on the subscription's goroutine: it only validates and hands
// the request to a transfer goroutine, so one slow Opener delays no other.
func (s *server) handle(ctx context.Context, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var req events.TransferRequest
	if err := events.Decode(m.Data, &req); err != nil {
		s.refuse(m, events.TransferCodeBadRequest, err.Error())
		return
	}
	switch {
	case !validTransferID(req.TransferID):
		s.refuse(m, events.TransferCodeBadRequest, fmt.Sprintf("invalid transfer id %q", req.TransferID))
		return
	case req.Window < 1:
		s.refuse(m, events.TransferCodeBadRequest, "window must be at least 1")
		return
	case req.Offset < 0:
		s.refuse(m, events.TransferCodeInvalidOffset, fmt.Sprintf("negative offset %d", req.Offset))
		return
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		s.refuse(m, events.TransferCodeBusy, errShutdown.Error())
		return
	}
	select {
	case s.sem <- struct{}{}:
	default:
		s.mu.Unlock()
		s.refuse(m, events.TransferCodeBusy, fmt.Sprintf("%d transfers already running", cap(s.sem)))
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		err := func() error {
			defer func() { <-s.sem }()
			return s.transfer(ctx, m, req)
		}()
		if s.cfg.done != nil {
			s.cfg.done(req.TransferID, err)
		}
	}()
}

func (s *server) refuse(m *nats.Msg, code, msg string) {
	s.log.Warn("transfer refused", "subject", m.Subject, "code", code, "reason", msg)
	_ = s.reply(m, events.TransferReply{Code: code, Error: msg})
}

func (s *server) reply(m *nats.Msg, rep events.TransferReply) error {
	rep.V = events.Version
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if err := m.Respond(data); err != nil {
		s.log.Warn("transfer reply not sent", "err", err)
		return fmt.Errorf("reply: %w", err)
	}
	return nil
}

// transfer opens the object, answers the request and streams the object. It
// returns nil when every byte was sent, otherwise why it stopped.
func (s *server) transfer(ctx context.Context, m *nats.Msg, req events.TransferRequest) error {
	log := s.log.With("transferId", req.TransferID, "key", req.Key, "offset", req.Offset)
	r, size, err := s.open(ctx, req.Key, req.Offset)
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			log.Info("transfer of a missing object refused")
			_ = s.reply(m, events.TransferReply{Code: events.TransferCodeNotFound, Error: fmt.Sprintf("no object %q", req.Key)})
		} else {
			log.Warn("transfer: opening the object failed", "err", err)
			_ = s.reply(m, events.TransferReply{Error: fmt.Sprintf("opening %q: %v", req.Key, err)})
		}
		return err
	}
	defer func() {
		if err := r.Close(); err != nil {
			log.Warn("transfer: closing the object", "err", err)
		}
	}()
	if size < 0 {
		err := fmt.Errorf("opening %q: negative size %d", req.Key, size)
		_ = s.reply(m, events.TransferReply{Error: err.Error()})
		return err
	}
	if req.Offset > size {
		err := fmt.Errorf("offset %d beyond the end of %q (%d bytes)", req.Offset, req.Key, size)
		_ = s.reply(m, events.TransferReply{Code: events.TransferCodeInvalidOffset, Error: err.Error()})
		return err
	}
	f := &flow{limit: min(req.Window, s.cfg.window), window: s.cfg.window, wake: make(chan struct{}, 1), log: log}
	// Subscribed before replying, so no credit or cancel sent after the
	// reply is missed.
	ctl, err := s.nc.Subscribe(events.TransferControlSubject(s.agentID, req.TransferID), f.onControl)
	if err != nil {
		_ = s.reply(m, events.TransferReply{Error: "agent cannot subscribe to the control subject"})
		return fmt.Errorf("subscribe: %w", err)
	}
	defer func() { _ = ctl.Unsubscribe() }()
	if err := s.reply(m, events.TransferReply{Size: size}); err != nil {
		return err
	}
	start := time.Now()
	log.Info("transfer started", "size", size)
	dataSubj := events.TransferDataSubject(s.agentID, req.TransferID)
	sent, err := s.stream(ctx, dataSubj, r, size-req.Offset, f)
	if err != nil {
		if errors.Is(err, errCancelled) {
			log.Info("transfer cancelled by the receiver", "bytes", sent, "reason", err)
			return err
		}
		abort := nats.NewMsg(dataSubj)
		abort.Header.Set(events.TransferErrorHeader, headerSafe(err.Error()))
		_ = s.nc.PublishMsg(abort)
		log.Warn("transfer aborted", "bytes", sent, "err", err)
		return err
	}
	log.Info("transfer finished", "bytes", sent, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// stream sends n bytes of r as chunks on subj, each only once the receiver
// has granted credit for it, and returns how many bytes it sent.
func (s *server) stream(ctx context.Context, subj string, r io.Reader, n int64, f *flow) (int64, error) {
	chunk := int64(s.cfg.chunkSize)
	if mp := s.nc.MaxPayload() - headroom; mp > 0 && mp < chunk {
		chunk = mp
	}
	buf := make([]byte, min(chunk, n))
	h := sha256.New()
	var sent int64
	for seq := int64(0); ; seq++ {
		if err := f.await(ctx, seq, s.cfg.idle); err != nil {
			return sent, err
		}
		k := min(int64(len(buf)), n-sent)
		if _, err := io.ReadFull(r, buf[:k]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return sent, fmt.Errorf("object shorter than announced: ended before %d of %d bytes", sent+k, n)
			}
			return sent, fmt.Errorf("reading the object: %w", err)
		}
		h.Write(buf[:k])
		sent += k
		m := nats.NewMsg(subj)
		m.Data = buf[:k]
		m.Header.Set(events.TransferSeqHeader, strconv.FormatInt(seq, 10))
		last := sent == n
		if last {
			m.Header.Set(events.TransferEOFHeader, "1")
			m.Header.Set(events.TransferTotalHeader, strconv.FormatInt(sent, 10))
			m.Header.Set(events.TransferSHA256Header, hex.EncodeToString(h.Sum(nil)))
		}
		f.setSent(seq + 1)
		times := 1
		if s.cfg.publish != nil {
			times = s.cfg.publish(seq, m)
		}
		for range times {
			// PublishMsg copies m.Data into the connection's buffer, so buf
			// is free again when it returns.
			if err := s.nc.PublishMsg(m); err != nil {
				return sent, fmt.Errorf("publishing: %w", err)
			}
		}
		if last {
			return sent, nil
		}
	}
}

// flow is the agent's view of one transfer's control subject.
type flow struct {
	window int64
	wake   chan struct{} // capacity 1: "something arrived"
	log    *slog.Logger

	mu        sync.Mutex
	limit     int64 // chunks with seq below it may be sent
	sent      int64 // chunks sent so far
	cancelled bool
	reason    string
}

func (f *flow) onControl(m *nats.Msg) {
	var c events.TransferControl
	if err := events.Decode(m.Data, &c); err != nil {
		f.log.Warn("transfer: bad control message ignored", "err", err)
		return
	}
	f.mu.Lock()
	if c.Cancel {
		f.cancelled, f.reason = true, c.Reason
	}
	// The receiver cannot have consumed more than was sent, so a credit
	// beyond sent+window is a receiver bug: never let more than window
	// chunks be outstanding.
	if lim := min(c.Credit, f.sent+f.window); lim > f.limit {
		f.limit = lim
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *flow) setSent(n int64) {
	f.mu.Lock()
	f.sent = n
	f.mu.Unlock()
}

// await returns nil once chunk seq may be sent; an error if the receiver
// cancelled, sent nothing for idle while there was no credit, or ctx ended.
func (f *flow) await(ctx context.Context, seq int64, idle time.Duration) error {
	var timer *time.Timer
	for {
		if ctx.Err() != nil {
			return errShutdown
		}
		f.mu.Lock()
		limit, cancelled, reason := f.limit, f.cancelled, f.reason
		f.mu.Unlock()
		if cancelled {
			return fmt.Errorf("%w: %s", errCancelled, reason)
		}
		if seq < limit {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(idle)
			defer timer.Stop()
		}
		select {
		case <-f.wake:
			timer.Reset(idle)
		case <-timer.C:
			return fmt.Errorf("%w for %s", errIdle, idle)
		case <-ctx.Done():
			return errShutdown
		}
	}
}

// headerSafe keeps a header value on one line.
func headerSafe(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
