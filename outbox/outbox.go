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
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
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
	DefaultBatch    = 256
	DefaultInterval = time.Second
	DefaultTimeout  = 5 * time.Second
)

// Relay publishes the outbox. Run it in every control plane; one leads at
// a time.
type Relay struct {
	Pool   *pgxpool.Pool       // required
	JS     jetstream.JetStream // required
	Logger *slog.Logger        // default slog.Default()
	// Batch is how many messages one round publishes; default DefaultBatch.
	Batch int
	// Interval is how often the outbox is read when nothing signals new
	// messages (another replica wrote them, or a round failed); default
	// DefaultInterval.
	Interval time.Duration
	// Timeout bounds the wait for JetStream's acknowledgement of one
	// message; default DefaultTimeout. A round holds a database
	// connection (its lead) meanwhile.
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

// Round publishes up to Batch messages from the head of the outbox, unless
// another relay leads, and returns how many it published and deleted. When
// publishing fails, what JetStream acknowledged, in order, is deleted and
// the rest is left for the next round.
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

// publish sends rows one at a time, each once the one before it is
// stored, and returns the ids JetStream acknowledged: a prefix of rows,
// ended by the first failure. Waiting for each acknowledgement keeps the
// stream in the outbox's order even when a publish fails midway (an
// event then never lands after the command that follows it).
func (r *Relay) publish(ctx context.Context, rows []db.OutboxNextRow) ([]int64, error) {
	var acked []int64
	for _, row := range rows {
		msg := nats.NewMsg(row.Subject)
		msg.Data = row.Data
		msg.Header.Set(jetstream.MsgIDHeader, row.MsgID)
		pctx, cancel := context.WithTimeout(ctx, r.Timeout)
		_, err := r.JS.PublishMsg(pctx, msg)
		cancel()
		if err != nil {
			return acked, fmt.Errorf("publish %s: %w", row.Subject, err)
		}
		acked = append(acked, row.ID)
	}
	return acked, nil
}
