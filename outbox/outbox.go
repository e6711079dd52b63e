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
	var p db.OutboxAddParams
	for _, m := range msgs {
		if m.Subject == "" || m.MsgID == "" {
			return errors.New("outbox: a message needs a subject and an id")
		}
		p.Subjects, p.MsgIds, p.Data = append(p.Subjects, m.Subject), append(p.MsgIds, m.MsgID), append(p.Data, m.Data)
	}
	return db.New().OutboxAdd(ctx, dbtx, p)
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
