package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/outbox"
)

// AlertCheckerOpts configures NewAlertChecker.
type AlertCheckerOpts struct {
	Pool   *pgxpool.Pool // required
	Outbox *outbox.Relay // kicked after alerts were written; nil: the relay polls
	Logger *slog.Logger  // default slog.Default()
	// Interval between checks; default 1 min.
	Interval time.Duration
	Now      func() time.Time // default time.Now
}

// AlertChecker computes the alerts no event carries, from the tables:
// "no good backup for N hours" per job and "agent offline for N minutes"
// per agent, as the rules say. A breach and its recovery are each
// recorded once (alert_states), with their alert event written to the
// outbox in the same transaction, so any number of replicas announce each
// once and none is lost.
type AlertChecker struct {
	o AlertCheckerOpts
	q *db.Queries
}

// NewAlertChecker validates o.
func NewAlertChecker(o AlertCheckerOpts) (*AlertChecker, error) {
	if o.Pool == nil {
		return nil, errors.New("notify: AlertChecker needs a Pool")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Interval == 0 {
		o.Interval = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &AlertChecker{o: o, q: db.New()}, nil
}

// Run checks every Interval until ctx ends.
func (a *AlertChecker) Run(ctx context.Context) error {
	t := time.NewTicker(a.o.Interval)
	defer t.Stop()
	for {
		if n, err := a.Check(ctx); err != nil && ctx.Err() == nil {
			a.o.Logger.Warn("checking alerts failed", "err", err)
		} else if n > 0 {
			a.o.Logger.Info("alerts changed", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check records the breaches and recoveries at now and writes their
// events; it returns how many it wrote.
func (a *AlertChecker) Check(ctx context.Context) (int, error) {
	now := a.o.Now().UTC()
	var msgs []outbox.Message
	err := db.WithTx(ctx, a.o.Pool, func(tx pgx.Tx) error {
		msgs = msgs[:0]
		add := func(kind, phase string, object, user uuid.UUID, breached time.Time) error {
			id := kind + ":" + object.String() + ":" + strconv.FormatInt(breached.UnixNano(), 10)
			ev := events.AlertEvent{V: events.Version, ID: id, UserID: user.String(), Kind: kind, Phase: phase,
				ObjectID: object.String(), BreachedAt: breached, At: now}
			// The facts as they are now, not when the event is read.
			switch kind {
			case events.AlertRPO:
				c, err := a.q.RPOAlertContext(ctx, tx, object)
				if err != nil {
					return err
				}
				ev.Threshold = int(c.Hours)
				if c.LastGoodUnix > 0 {
					t := time.UnixMilli(int64(c.LastGoodUnix * 1000)).UTC()
					ev.LastGoodAt = &t
				}
			case events.AlertAgentOffline:
				c, err := a.q.AgentAlertContext(ctx, tx, object)
				if err != nil {
					return err
				}
				ev.Threshold, ev.LastSeenAt = int(c.Minutes), c.LastSeenAt
			}
			m, err := outbox.JSON(events.AlertSubject(user.String(), kind, phase), id+":"+phase, ev)
			msgs = append(msgs, m)
			return err
		}
		rpo, err := a.q.BreachRPO(ctx, tx, now)
		if err != nil {
			return fmt.Errorf("rpo breaches: %w", err)
		}
		for _, r := range rpo {
			if err := add(events.AlertRPO, events.PhaseBreached, r.ObjectID, r.UserID, r.BreachedAt); err != nil {
				return err
			}
		}
		back, err := a.q.RecoverRPO(ctx, tx, now)
		if err != nil {
			return fmt.Errorf("rpo recoveries: %w", err)
		}
		for _, r := range back {
			if !r.Watched {
				continue // the rule went, or the job was paused or deleted: nothing recovered
			}
			if err := add(events.AlertRPO, events.PhaseRecovered, r.ObjectID, r.UserID, r.BreachedAt); err != nil {
				return err
			}
		}
		off, err := a.q.BreachAgentOffline(ctx, tx, now)
		if err != nil {
			return fmt.Errorf("agent breaches: %w", err)
		}
		for _, r := range off {
			if err := add(events.AlertAgentOffline, events.PhaseBreached, r.ObjectID, r.UserID, r.BreachedAt); err != nil {
				return err
			}
		}
		on, err := a.q.RecoverAgentOffline(ctx, tx)
		if err != nil {
			return fmt.Errorf("agent recoveries: %w", err)
		}
		for _, r := range on {
			if !r.Watched {
				continue
			}
			if err := add(events.AlertAgentOffline, events.PhaseRecovered, r.ObjectID, r.UserID, r.BreachedAt); err != nil {
				return err
			}
		}
		return outbox.Add(ctx, tx, msgs...)
	})
	if err != nil {
		return 0, err
	}
	if len(msgs) > 0 && a.o.Outbox != nil {
		a.o.Outbox.Kick()
	}
	return len(msgs), nil
}
