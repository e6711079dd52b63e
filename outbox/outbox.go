// Package outbox makes what the control plane publishes as durable as the
// state it describes. A message (an event, or a command that follows one)
// is written with Add in the same transaction as the state change; a Relay
// publishes the outbox to JetStream in id order, each message with its
// Nats-Msg-Id, and deletes it once JetStream has acknowledged it. A broker
// outage or a restart of the control plane delays messages, never loses
// them; several control planes relay one outbox without duplicates.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
)

// Message is one message to publish.
type Message struct {
	Subject string
	// MsgID is its Nats-Msg-Id: a message relayed twice (a relay stopped
	// between JetStream's acknowledgement and its delete) is stored once
	// within the stream's duplicate window.
	MsgID string
	Data  []byte
}

// JSON is a Message with payload encoded as JSON.
func JSON(subject, msgID string, payload any) (Message, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return Message{}, fmt.Errorf("outbox: %s: %w", subject, err)
	}
	return Message{Subject: subject, MsgID: msgID, Data: data}, nil
}

// Add writes msgs to the outbox through dbtx, which should be the
// transaction of the state they describe; they are published in the order
// given; those of different transactions, in the order they are seen
// committed.
func Add(ctx context.Context, dbtx db.DBTX, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	p, err := params(msgs)
	if err != nil {
		return err
	}
	return db.New().OutboxAdd(ctx, dbtx, p)
}

// params is msgs as OutboxAdd's arrays; it fails for a message without a
// subject or an id.
func params(msgs []Message) (db.OutboxAddParams, error) {
	var p db.OutboxAddParams
	for _, m := range msgs {
		if m.Subject == "" || m.MsgID == "" {
			return p, errors.New("outbox: a message needs a subject and an id")
		}
		p.Subjects, p.MsgIds, p.Data = append(p.Subjects, m.Subject), append(p.MsgIds, m.MsgID), append(p.Data, m.Data)
	}
	return p, nil
}

// Held is messages written by AddHeld, for Flush.
type Held struct {
	rows []db.OutboxNextRow
}

// Len is how many messages h holds.
func (h Held) Len() int { return len(h.rows) }

// AddHeld is Add for a writer that publishes its messages itself right
// after its commit (Relay.Flush), so that a burst is published by the
// writers that made it, in parallel, rather than by the one leading relay.
// The relays leave the messages alone for hold (which should exceed
// Flush's timeout), then publish whatever is left as any other message.
// Only messages that nothing written later depends on should be held: the
// relays publish later messages meanwhile.
func AddHeld(ctx context.Context, dbtx db.DBTX, hold time.Duration, msgs ...Message) (Held, error) {
	if len(msgs) == 0 {
		return Held{}, nil
	}
	p, err := params(msgs)
	if err != nil {
		return Held{}, err
	}
	ids, err := db.New().OutboxAddHeld(ctx, dbtx, db.OutboxAddHeldParams{Subjects: p.Subjects, MsgIds: p.MsgIds, Data: p.Data,
		HoldSecs: hold.Seconds()})
	if err != nil {
		return Held{}, err
	}
	idOf := make(map[string]int64, len(ids))
	for _, r := range ids {
		idOf[r.MsgID] = r.ID
	}
	h := Held{rows: make([]db.OutboxNextRow, len(msgs))}
	for i, m := range msgs {
		id, ok := idOf[m.MsgID]
		if !ok {
			return Held{}, fmt.Errorf("outbox: message %s not written", m.MsgID)
		}
		h.rows[i] = db.OutboxNextRow{ID: id, Subject: m.Subject, MsgID: m.MsgID, Data: m.Data}
	}
	return h, nil
}

// Flush publishes held messages h once their transaction has committed,
// in order and with the barrier between streams that Round keeps, and
// deletes those JetStream acknowledged. What it cannot publish (the broker
// is down) it releases to the relays, which publish it as any other
// message; when even that fails, the relays take it once the hold has
// passed. Its error says what failed; nothing is lost either way. A nil
// relay leaves h to the relays.
func (r *Relay) Flush(ctx context.Context, h Held) error {
	if r == nil || len(h.rows) == 0 {
		return nil
	}
	acked, pubErr := r.publish(ctx, h.rows)
	q := db.New()
	if len(acked) > 0 && r.running.Load() {
		r.deleting.mu.Lock()
		for i := range acked {
			r.deleting.subject[h.rows[i].ID] = h.rows[i].Subject
		}
		r.deleting.mu.Unlock()
	}
	if len(acked) > 0 {
		if err := r.forget(ctx, acked); err != nil {
			return errors.Join(pubErr, err)
		}
	}
	if pubErr == nil {
		return nil
	}
	rest := make([]int64, 0, len(h.rows)-len(acked))
	for _, row := range h.rows[len(acked):] {
		rest = append(rest, row.ID)
	}
	if err := q.OutboxRelease(ctx, r.Pool, rest); err != nil {
		return errors.Join(pubErr, err)
	}
	r.Kick()
	return pubErr
}

// forget deletes the messages Flush published: through Run's deleter when
// it runs (so the writer does not wait for it; until then the messages are
// still held), else at once.
func (r *Relay) forget(ctx context.Context, ids []int64) error {
	if r.running.Load() {
		select {
		case r.flushed <- ids:
			return nil
		default: // the deleter is behind: delete here
		}
	}
	defer r.deleting.done(ids)
	return db.New().OutboxDelete(ctx, r.Pool, ids)
}

// deleteFlushed deletes, a few statements at a time, the messages Flush
// published, until ctx ends; then it deletes what is still waiting. What it
// fails to delete stays held, and is published again once the hold has
// passed (JetStream keeps it once, by its Nats-Msg-Id).
func (r *Relay) deleteFlushed(ctx context.Context) {
	del := func(ctx context.Context, ids []int64) {
		defer r.deleting.done(ids) // deleted, or held again until its hold passes
		if err := db.New().OutboxDelete(ctx, r.Pool, ids); err != nil {
			r.Logger.Warn("outbox: deleting published messages failed; they will be published again", "messages", len(ids), "err", err)
		}
	}
	for {
		var ids []int64
		select {
		case <-ctx.Done():
			for {
				select {
				case more := <-r.flushed:
					ids = append(ids, more...)
				default:
					if len(ids) > 0 {
						dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
						del(dctx, ids)
						cancel()
					}
					return
				}
			}
		case ids = <-r.flushed:
		}
	more:
		for len(ids) < 8192 {
			select {
			case m := <-r.flushed:
				ids = append(ids, m...)
			default:
				break more
			}
		}
		del(ctx, ids)
	}
}

// leadKey is the advisory lock that makes one relay at a time the one
// publishing.
const leadKey = 0x7261686174626f78 // "rahatbox"

// Defaults of Relay.
const (
	DefaultBatch    = 2048
	DefaultWindow   = 512
	DefaultInterval = time.Second
	DefaultTimeout  = 5 * time.Second
)

// Relay publishes the outbox. Run it in every control plane; one leads at
// a time.
type Relay struct {
	Pool   *pgxpool.Pool       // required
	JS     jetstream.JetStream // required
	Logger *slog.Logger        // default slog.Default()
	// Batch is how many messages one round reads, publishes and deletes
	// in one transaction; default DefaultBatch.
	Batch int
	// Window is how many published messages may await JetStream's
	// acknowledgement at once; default DefaultWindow. Keep it well below
	// JS's limit of pending asynchronous publishes
	// (jetstream.WithPublishAsyncMaxPending, 4000 by default), which
	// every asynchronous publisher on JS shares.
	Window int
	// Interval is how often the outbox is read when nothing signals new
	// messages (another replica wrote them, or a round failed); default
	// DefaultInterval.
	Interval time.Duration
	// Timeout bounds the wait for JetStream's acknowledgement of each
	// message, counted from its publication, and the wait for room among
	// JS's pending asynchronous publishes; default DefaultTimeout. A
	// round holds a database connection (its lead) meanwhile.
	Timeout time.Duration

	kick chan struct{}
	// flushed carries the ids of messages Flush published to Run's
	// deleter; running says whether Run is there to take them.
	flushed chan []int64
	running *atomic.Bool
	// deleting is what Flush published and handed to the deleter, by id:
	// those rows are in JetStream already while still in the table.
	deleting *deleting
}

type deleting struct {
	mu      sync.Mutex
	subject map[int64]string
}

// Deleting returns the ids of messages whose subject starts with prefix
// that were published but whose rows are not deleted yet: a count of the
// outbox that leaves them out does not count them twice with JetStream's.
// Nil for a nil relay.
func (r *Relay) Deleting(prefix string) []int64 {
	if r == nil {
		return nil
	}
	r.deleting.mu.Lock()
	defer r.deleting.mu.Unlock()
	var ids []int64
	for id, subj := range r.deleting.subject {
		if strings.HasPrefix(subj, prefix) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (d *deleting) done(ids []int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		delete(d.subject, id)
	}
}

// New returns a Relay with its defaults set; it fails without Pool or JS.
func New(r Relay) (*Relay, error) {
	if r.Pool == nil || r.JS == nil {
		return nil, errors.New("outbox: Pool and JS are required")
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.Batch <= 0 {
		r.Batch = DefaultBatch
	}
	if r.Window <= 0 {
		r.Window = DefaultWindow
	}
	if r.Interval <= 0 {
		r.Interval = DefaultInterval
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	r.kick = make(chan struct{}, 1)
	r.flushed = make(chan []int64, 256)
	r.running = new(atomic.Bool)
	r.deleting = &deleting{subject: map[int64]string{}}
	return &r, nil
}

// Kick tells the relay that messages were committed; it never blocks. A nil
// relay ignores it.
func (r *Relay) Kick() {
	if r == nil {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends. A round that fails (the broker or the
// database unavailable) is retried with a backoff from Interval up to 30 s,
// which Kick does not cut short.
func (r *Relay) Run(ctx context.Context) error {
	deleted := make(chan struct{})
	go func() { defer close(deleted); r.deleteFlushed(ctx) }()
	r.running.Store(true)
	defer func() { r.running.Store(false); <-deleted }()
	backoff := r.Interval
	for {
		n, err := r.Round(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.Logger.Warn("outbox: relaying failed; will retry", "err", err, "in", backoff)
		case n == r.Batch:
			backoff = r.Interval
			continue // more are waiting
		default:
			backoff = r.Interval
		}
		wait := r.Interval
		if err != nil {
			wait = backoff
			backoff = min(2*backoff, 30*time.Second)
		}
		kick := r.kick
		if err != nil {
			kick = nil // during an outage, writes do not start a round each
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// Round publishes up to Batch messages from the head of the outbox, in
// order, unless another relay leads, and returns how many it published and
// deleted (0 when another relay leads or the outbox is empty). Up to Window
// messages await their acknowledgement at once, but a message bound for
// another stream than the one before it is published only once everything
// before it is acknowledged: a message is never stored before one ahead of
// it in the outbox bound for another stream (an event before the command
// written after it). The first failure (an error, or no acknowledgement
// within Timeout) stops the round: it deletes the messages acknowledged
// before that failure, returns their number with the error, and leaves the
// rest for the next round. Messages of the same stream published after the
// failed one may have been stored anyway; the next round publishes them
// again and JetStream keeps them once, by their Nats-Msg-Id.
func (r *Relay) Round(ctx context.Context) (int, error) {
	var done int
	var pubErr error
	err := db.WithTx(ctx, r.Pool, func(tx pgx.Tx) error {
		q := db.New()
		lead, err := q.OutboxLead(ctx, tx, leadKey)
		if err != nil || !lead {
			return err
		}
		rows, err := q.OutboxNext(ctx, tx, int32(r.Batch))
		if err != nil || len(rows) == 0 {
			return err
		}
		var acked []int64
		acked, pubErr = r.publish(ctx, rows)
		done = len(acked)
		if len(acked) == 0 {
			return nil
		}
		return q.OutboxDelete(ctx, tx, acked)
	})
	if err != nil {
		return 0, err
	}
	return done, pubErr
}

// publish sends rows in order, up to Window of them awaiting their
// acknowledgement at once, and returns the ids JetStream acknowledged: the
// longest prefix of rows acknowledged with no failure before it. The first
// failure (an error, or no acknowledgement within Timeout) ends it: no
// further row is published, and the error is returned with that prefix.
//
// Before a row that goes to another stream than the row before it
// (streamOf), publish waits until every row before it is acknowledged, so
// a message is never stored before one ahead of it in the outbox that
// goes to another stream: an event is stored before the command written
// after it, and an agent never reports on a command whose "queued" event
// the stream lacks. Within one stream, rows published after a failed one
// may be stored anyway; they stay in the outbox, are published again by
// the next round and stored once, by their Nats-Msg-Id.
func (r *Relay) publish(ctx context.Context, rows []db.OutboxNextRow) ([]int64, error) {
	acked := make([]int64, 0, len(rows))
	type pending struct {
		row  *db.OutboxNextRow
		ack  jetstream.PubAckFuture
		sent time.Time
	}
	// inflight is a ring of the n messages awaiting their acknowledgement,
	// in the order sent, from head.
	inflight := make([]pending, min(len(rows), r.Window))
	head, n := 0, 0
	// gather waits, in order, for the acknowledgements of all but the
	// last keep messages in flight.
	gather := func(keep int) error {
		for n > keep {
			p := inflight[head]
			var err error
			select {
			case <-p.ack.Ok():
			case err = <-p.ack.Err():
			default:
				t := time.NewTimer(time.Until(p.sent.Add(r.Timeout)))
				select {
				case <-p.ack.Ok():
				case err = <-p.ack.Err():
				case <-t.C:
					err = fmt.Errorf("no acknowledgement within %s", r.Timeout)
				case <-ctx.Done():
					err = ctx.Err()
				}
				t.Stop()
			}
			if err != nil {
				return fmt.Errorf("publish %s: %w", p.row.Subject, err)
			}
			acked = append(acked, p.row.ID)
			inflight[head] = pending{}
			head, n = (head+1)%len(inflight), n-1
		}
		return nil
	}
	for i := range rows {
		row := &rows[i]
		if i > 0 && streamOf(row.Subject) != streamOf(rows[i-1].Subject) {
			if err := gather(0); err != nil {
				return acked, err
			}
		}
		if err := gather(len(inflight) - 1); err != nil {
			return acked, err
		}
		msg := nats.NewMsg(row.Subject)
		msg.Data = row.Data
		msg.Header.Set(jetstream.MsgIDHeader, row.MsgID)
		ack, err := r.JS.PublishMsgAsync(msg, jetstream.WithStallWait(r.Timeout))
		if err != nil {
			if gerr := gather(0); gerr != nil {
				return acked, gerr
			}
			return acked, fmt.Errorf("publish %s: %w", row.Subject, err)
		}
		inflight[(head+n)%len(inflight)] = pending{row: row, ack: ack, sent: time.Now()}
		n++
	}
	return acked, gather(0)
}

// commandsPrefix is rahat.cmd., the start of every command subject.
var commandsPrefix = strings.TrimSuffix(events.CommandSubject("", ""), ".")

// streamOf is the stream class of subject: events.StreamCommands for a
// command (rahat.cmd.>), events.StreamEvents for anything else.
func streamOf(subject string) string {
	if strings.HasPrefix(subject, commandsPrefix) {
		return events.StreamCommands
	}
	return events.StreamEvents
}
