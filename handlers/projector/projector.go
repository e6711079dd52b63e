// Package projector turns the EVENTS stream into PostgreSQL tables. Each
// event type has one apply function made only of idempotent SQL, so a
// duplicated, late or replayed event changes nothing.
package projector

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
	Pool   *pgxpool.Pool       // required
	JS     jetstream.JetStream // required
	Logger *slog.Logger        // default slog.Default()
	// Durable names the consumer; default events.ProjectorConsumer. A new
	// name replays the whole stream.
	Durable string
}

func (o *Opts) validate() error {
	if o.Pool == nil || o.JS == nil {
		return errors.New("projector: Pool and JS are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Durable == "" {
		o.Durable = events.ProjectorConsumer
	}
	return nil
}

// errPoison marks an event that can never be applied; it is terminated, not
// retried.
var errPoison = errors.New("poison event")

// Run consumes events until ctx ends. A temporary failure (database down) is
// retried after a delay; a malformed event is logged and terminated.
func Run(ctx context.Context, o Opts) error {
	if err := o.validate(); err != nil {
		return err
	}
	cons, err := events.EnsureEventConsumer(ctx, o.JS, o.Durable)
	if err != nil {
		return err
	}
	p := &projector{pool: o.Pool, q: db.New(), log: o.Logger}
	// Events already delivered are applied even while shutting down (the
	// consumer drains), so their writes must not die with ctx.
	applyCtx := context.WithoutCancel(ctx)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		actx, cancel := context.WithTimeout(applyCtx, 30*time.Second)
		err := p.apply(actx, msg)
		cancel()
		switch {
		case err == nil:
			_ = msg.Ack()
		case errors.Is(err, errPoison):
			p.log.Error("dropping event", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
		default:
			p.log.Warn("applying event failed; will retry", "subject", msg.Subject(), "err", err)
			_ = msg.NakWithDelay(2 * time.Second)
		}
	})
	if err != nil {
		return fmt.Errorf("projector: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

type projector struct {
	pool *pgxpool.Pool
	q    *db.Queries
	log  *slog.Logger
}

func (p *projector) apply(ctx context.Context, msg jetstream.Msg) error {
	agentID, kind, phase, ok := events.ParseEventSubject(msg.Subject())
	if !ok {
		return fmt.Errorf("%w: subject %q", errPoison, msg.Subject())
	}
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	switch kind {
	case events.KindAgent:
		return p.applyPresence(ctx, agentID, phase, meta.Timestamp, msg.Data())
	default:
		// Later projections (backup, restore, verify history) start here.
		return nil
	}
}

// applyPresence records when the agent was last heard from. The time is the
// stream's (the server's clock), not the agent's.
func (p *projector) applyPresence(ctx context.Context, agentID, phase string, at time.Time, data []byte) error {
	id, err := uuid.Parse(agentID)
	if err != nil {
		return fmt.Errorf("%w: agent id %q", errPoison, agentID)
	}
	var ev events.AgentPresence
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	if ev.AgentID != agentID {
		return fmt.Errorf("%w: payload agent %q on subject of agent %q", errPoison, ev.AgentID, agentID)
	}
	switch phase {
	case events.PhaseOnline, events.PhaseHeartbeat, events.PhaseOffline:
	default:
		return fmt.Errorf("%w: presence phase %q", errPoison, phase)
	}
	return p.q.ApplyAgentPresence(ctx, p.pool, db.ApplyAgentPresenceParams{
		AgentID: id, Online: phase != events.PhaseOffline, LastSeenAt: at,
		Hostname: ev.Hostname, Os: ev.OS, Version: ev.Version,
	})
}
