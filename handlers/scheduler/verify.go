package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/schedule"
)

// VerifierOpts configures a Verifier. Zero values take the defaults named.
type VerifierOpts struct {
	Pool   *pgxpool.Pool // required
	Runs   *runs.Service // required
	Logger *slog.Logger  // default slog.Default()
	Clock  Clock         // default WallClock
	// Every is how often due verifications are looked for; default 15 s.
	Every time.Duration
}

// Verifier starts the FULL verification of each job's newest successful
// backup at the slots of the job's verification schedule (verify_schedule,
// verify_next_at), so test restores need not follow every backup. Each
// slot is claimed by moving verify_next_at from the value read to the next
// slot: any number of replicas start one verification per slot. Slots
// missed while no scheduler ran are not caught up: the next due slot runs
// once. A slot whose verification cannot start (no successful backup yet,
// its agent offline or busy) is logged and passes.
type Verifier struct {
	o VerifierOpts
	q *db.Queries
}

// NewVerifier checks o and returns a Verifier; an error names a missing
// required field.
func NewVerifier(o VerifierOpts) (*Verifier, error) {
	if o.Pool == nil || o.Runs == nil {
		return nil, errors.New("scheduler: VerifierOpts needs Pool and Runs")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = WallClock{}
	}
	if o.Every <= 0 {
		o.Every = 15 * time.Second
	}
	return &Verifier{o: o, q: db.New()}, nil
}

// Run starts due verifications every Every until ctx ends; it returns nil
// then.
func (v *Verifier) Run(ctx context.Context) error {
	for {
		if _, err := v.Tick(ctx); err != nil && ctx.Err() == nil {
			v.o.Logger.Warn("scheduled verifications", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-v.o.Clock.After(v.o.Every):
		}
	}
}

// Tick starts the verifications due now and returns how many it started.
func (v *Verifier) Tick(ctx context.Context) (int, error) {
	now := v.o.Clock.Now()
	due, err := v.q.DueVerifications(ctx, v.o.Pool, db.DueVerificationsParams{Now: &now, MaxJobs: 1000})
	if err != nil {
		return 0, err
	}
	started := 0
	for _, j := range due {
		var next *time.Time
		if sc, err := schedule.Parse(schedule.VerifySpec(derefString(j.VerifySchedule), j.Timezone)); err == nil {
			if n := sc.Next(now, 1); len(n) == 1 {
				next = &n[0]
			}
		}
		n, err := v.q.ClaimVerifySlot(ctx, v.o.Pool, db.ClaimVerifySlotParams{ID: j.ID, Next: next, Old: j.VerifyNextAt})
		if err != nil {
			return started, err
		}
		if n == 0 {
			continue // another replica has it
		}
		h, err := v.q.NewestSuccessfulBackup(ctx, v.o.Pool, j.ID)
		if errors.Is(db.MapErr(err), db.ErrNotFound) {
			v.o.Logger.Info("scheduled verification: no successful backup yet", "jobId", j.ID)
			continue
		} else if err != nil {
			return started, err
		}
		id, err := v.o.Runs.StartVerify(ctx, h, "FULL")
		if err != nil {
			v.o.Logger.Warn("scheduled verification not started", "jobId", j.ID, "backupId", h.ID, "err", err)
			continue
		}
		v.o.Logger.Info("scheduled verification started", "jobId", j.ID, "backupId", h.ID, "verificationId", id)
		started++
	}
	return started, nil
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
