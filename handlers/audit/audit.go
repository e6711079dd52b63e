// Package audit is the audit log's projector: it reads the audit trail
// (rahat.audit.>) from the EVENTS stream with its own durable consumer and
// writes each entry to audit_log once, whatever the redeliveries.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
)

// Opts configures Run.
type Opts struct {
	Pool    *pgxpool.Pool       // required
	JS      jetstream.JetStream // required
	Logger  *slog.Logger        // default slog.Default()
	Durable string              // default events.AuditConsumer
}

var errPoison = errors.New("poison audit event")

// Run consumes the audit trail until ctx ends. A database error is retried
// after a delay; a malformed entry is logged and terminated.
func Run(ctx context.Context, o Opts) error {
	if o.Pool == nil || o.JS == nil {
		return errors.New("audit: Pool and JS are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Durable == "" {
		o.Durable = events.AuditConsumer
	}
	cons, err := events.EnsureConsumer(ctx, o.JS, o.Durable, events.AuditEvents...)
	if err != nil {
		return err
	}
	applyCtx := context.WithoutCancel(ctx)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		actx, cancel := context.WithTimeout(applyCtx, 30*time.Second)
		err := Apply(actx, o.Pool, msg.Subject(), msg.Data())
		cancel()
		switch {
		case err == nil:
			_ = msg.Ack()
		case errors.Is(err, errPoison):
			o.Logger.Error("dropping audit event", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
		default:
			o.Logger.Warn("recording an audit entry failed; will retry", "err", err)
			_ = msg.NakWithDelay(2 * time.Second)
		}
	})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// Apply writes the entry received on subject; an entry already there is
// left as it is. The subject's user and action must be the payload's.
func Apply(ctx context.Context, dbtx db.DBTX, subject string, data []byte) error {
	user, action, ok := events.ParseAuditSubject(subject)
	if !ok {
		return fmt.Errorf("%w: subject %q", errPoison, subject)
	}
	var ev events.AuditEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	if ev.UserID != user || ev.Action != action {
		return fmt.Errorf("%w: payload does not match subject %q", errPoison, subject)
	}
	id, err := uuid.Parse(ev.ID)
	if err != nil {
		return fmt.Errorf("%w: id %q", errPoison, ev.ID)
	}
	uid, err := uuid.Parse(ev.UserID)
	if err != nil {
		return fmt.Errorf("%w: userId %q", errPoison, ev.UserID)
	}
	if ev.Outcome != "success" && ev.Outcome != "failure" {
		return fmt.Errorf("%w: outcome %q", errPoison, ev.Outcome)
	}
	return db.New().InsertAuditEntry(ctx, dbtx, db.InsertAuditEntryParams{ID: id, UserID: uid, At: ev.At.UTC(),
		Action: ev.Action, ObjectType: ev.ObjectType, ObjectID: ev.ObjectID, Ip: ev.IP, UserAgent: ev.UserAgent,
		Outcome: ev.Outcome, StatusCode: int32(ev.StatusCode), Detail: ev.Detail, RequestID: ev.RequestID})
}
