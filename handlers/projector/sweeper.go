package projector

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/outbox"
)

// DefaultLostAfter is how long a queued or running backup may go without a
// word from its agent before it is declared failed.
const DefaultLostAfter = 90 * time.Second

// SweeperOpts configure Sweep.
type SweeperOpts struct {
	Pool   *pgxpool.Pool // required
	Logger *slog.Logger  // default slog.Default()
	// Outbox is told when a lost run was written to the outbox; nil
	// leaves it to whichever relay polls it.
	Outbox *outbox.Relay
	// LostAfter: default DefaultLostAfter.
	LostAfter time.Duration
	// Interval between sweeps; default LostAfter/6, at least one second.
	Interval time.Duration
}

// Sweep declares failed ("agent lost") every queued or running backup whose
// agent has been silent for LostAfter, until ctx ends. It applies the
// control plane's lost event and writes it to the outbox in one
// transaction, so the history stays a projection of the event stream;
// several sweepers write the same Nats-Msg-Id and the stream keeps one.
func Sweep(ctx context.Context, o SweeperOpts) error {
	if o.Pool == nil {
		return errors.New("sweeper: Pool is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.LostAfter == 0 {
		o.LostAfter = DefaultLostAfter
	}
	if o.Interval == 0 {
		o.Interval = max(o.LostAfter/6, time.Second)
	}
	q := db.New()
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		runs, err := q.LostBackupRuns(ctx, o.Pool, o.LostAfter.Seconds())
		if err != nil {
			o.Logger.Warn("looking for lost runs", "err", err)
			continue
		}
		for _, r := range runs {
			ev := events.BackupEvent{V: events.Version, ID: r.ID.String() + ":lost", RunID: r.ID.String(), At: time.Now().UTC(),
				Error: "agent lost: the agent stopped reporting during this backup. Check the agent and run it again", Lost: true}
			declared := false
			err := db.WithTx(ctx, o.Pool, func(tx pgx.Tx) error {
				// The run may have ended since it was listed (its agent
				// came back, another sweeper): then nothing is declared.
				if _, err := q.LockRunIfActive(ctx, tx, r.ID); errors.Is(err, pgx.ErrNoRows) {
					return nil
				} else if err != nil {
					return err
				}
				declared = true
				return Emit(ctx, tx, r.AgentID, events.KindBackup, events.PhaseLost, ev.ID, ev)
			})
			if err != nil {
				o.Logger.Warn("declaring a run lost", "runId", r.ID, "err", err)
				continue
			}
			if !declared {
				continue
			}
			o.Outbox.Kick()
			o.Logger.Warn("backup run lost with its agent", "runId", r.ID, "agentId", r.AgentID)
		}
	}
}
