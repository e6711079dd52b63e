// Package expiry is the retention worker: it expires the backups their
// job's retention policy (package retention) lets go and deletes their
// stored objects.
//
// Expiring is two steps. First, under the backup's row lock, a backup no
// restore or verification is reading becomes "expired" (an event, so the
// history says why); from then on nothing new can read it. Then its object
// is deleted from its storage; a deletion that fails is retried with
// backoff, the last error kept on the row, until it succeeds.
package expiry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/retention"
)

// Deleter deletes a backup's stored object (runs.Service).
type Deleter interface {
	DeleteObject(ctx context.Context, h db.BackupHistory) error
}

// Opts configures Run and Pass. Zero values take the defaults named.
type Opts struct {
	Pool    *pgxpool.Pool // required
	Deleter Deleter       // required
	Logger  *slog.Logger  // default slog.Default()
	// Outbox is told when an event (expired, purged, purge failed) was
	// written to the outbox; nil leaves it to whichever relay polls it.
	Outbox *outbox.Relay

	// Interval is the time between passes; default 5 min.
	Interval time.Duration
	// Now is the clock retention ages are measured by; default time.Now.
	Now func() time.Time
	// StaleAfter is how long a queued or running restore or verification
	// protects its backup; older ones are taken as lost. Default 25 h
	// (beyond the default command lifetime).
	StaleAfter time.Duration
	// RetryMin and RetryMax bound the backoff between deletion attempts;
	// default 1 min and 6 h.
	RetryMin, RetryMax time.Duration
}

func (o *Opts) validate() error {
	if o.Pool == nil || o.Deleter == nil {
		return errors.New("expiry: Pool and Deleter are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Interval == 0 {
		o.Interval = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = 25 * time.Hour
	}
	if o.RetryMin == 0 {
		o.RetryMin = time.Minute
	}
	if o.RetryMax == 0 {
		o.RetryMax = 6 * time.Hour
	}
	return nil
}

// Run makes a pass every Interval until ctx ends; errors are logged and
// the next pass tries again. It returns nil when ctx ends.
func Run(ctx context.Context, o Opts) error {
	if err := o.validate(); err != nil {
		return err
	}
	for {
		st, err := Pass(ctx, o)
		if err != nil && ctx.Err() == nil {
			o.Logger.Error("retention pass", "err", err)
		} else if st != (Stats{}) {
			o.Logger.Info("retention pass", "expired", st.Expired, "deferred", st.Deferred, "purged", st.Purged, "purgeFailed", st.PurgeFailed)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.Interval):
		}
	}
}

// Stats counts what a pass did.
type Stats struct {
	Expired     int // backups newly expired
	Deferred    int // due to expire but being read by a restore or verification
	Purged      int // objects deleted
	PurgeFailed int // deletions that failed (retried later)
}

const jobPage = 500

// Pass applies every job's retention once, then deletes the objects of
// expired backups whose (next) attempt is due.
func Pass(ctx context.Context, o Opts) (Stats, error) {
	var st Stats
	if err := o.validate(); err != nil {
		return st, err
	}
	q := db.New()
	now := o.Now()
	after := uuid.Nil
	for {
		jobs, err := q.RetentionJobs(ctx, o.Pool, db.RetentionJobsParams{AfterID: after, Lim: jobPage})
		if err != nil {
			return st, err
		}
		if len(jobs) == 0 {
			break
		}
		after = jobs[len(jobs)-1].ID
		ids := make([]uuid.UUID, len(jobs))
		for i, j := range jobs {
			ids[i] = j.ID
		}
		rows, err := q.SuccessfulBackupsOfJobs(ctx, o.Pool, ids)
		if err != nil {
			return st, err
		}
		byJob := map[uuid.UUID][]retention.Backup{}
		pinned := map[uuid.UUID][]uuid.UUID{} // needs of backups being made
		for _, r := range rows {
			if r.Status != "success" {
				pinned[r.BackupJobID] = append(pinned[r.BackupJobID], r.DependsOn...)
				continue
			}
			byJob[r.BackupJobID] = append(byJob[r.BackupJobID], retention.Backup{ID: r.ID, At: *r.CompletedAt, Needs: r.DependsOn})
		}
		for _, j := range jobs {
			backups := byJob[j.ID]
			if len(backups) < 2 {
				continue // the newest is always kept
			}
			p := retention.FromColumns(j.RetentionDays, j.KeepLast, j.KeepDaily, j.KeepWeekly, j.KeepMonthly, j.Timezone)
			for _, d := range retention.Plan(p, backups, now, pinned[j.ID]...) {
				if d.Keep {
					continue
				}
				done, err := expire(ctx, o, q, d.ID, d.Reason)
				if err != nil {
					return st, err
				}
				if done {
					st.Expired++
				} else {
					st.Deferred++
				}
			}
		}
		if len(jobs) < jobPage {
			break
		}
	}
	return st, purge(ctx, o, q, &st)
}

// expire marks backup id expired for reason unless a restore or
// verification is reading it (then it reports false; a later pass tries
// again).
func expire(ctx context.Context, o Opts, q *db.Queries, id uuid.UUID, reason string) (bool, error) {
	expired := false
	err := db.WithTx(ctx, o.Pool, func(tx pgx.Tx) error {
		row, err := q.LockBackupForExpiry(ctx, tx, db.LockBackupForExpiryParams{ID: id, StaleSecs: o.StaleAfter.Seconds()})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
		if row.Status != "success" || row.Verifying || row.Restoring {
			return nil
		}
		// A later backup of its chain, kept or being made since the plan
		// was read, needs it: a statement of its own, after the lock, so
		// that it sees one committed meanwhile.
		if deps, err := q.BackupDependents(ctx, tx, id); err != nil || len(deps) > 0 {
			return err
		}
		ev := events.BackupEvent{V: events.Version, ID: id.String() + ":expired", RunID: id.String(), At: time.Now().UTC(),
			Reason: "retention: " + reason}
		expired = true
		return emitTx(ctx, tx, row.AgentID, events.PhaseExpired, ev)
	})
	if err != nil || !expired {
		return false, err
	}
	o.Outbox.Kick()
	return true, nil
}

// purge deletes the objects of expired backups that are due, oldest
// first, a page at a time.
func purge(ctx context.Context, o Opts, q *db.Queries, st *Stats) error {
	for {
		rows, err := q.UnpurgedBackups(ctx, o.Pool, 100)
		if err != nil {
			return err
		}
		for _, h := range rows {
			if err := o.Deleter.DeleteObject(ctx, h); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				st.PurgeFailed++
				retry := o.RetryMin << min(h.ExpireAttempts, 20)
				retry = min(retry, o.RetryMax)
				o.Logger.Warn("deleting an expired backup failed; will retry", "historyId", h.ID, "retryIn", retry, "err", err)
				now := time.Now().UTC()
				retryAt := now.Add(retry)
				ev := events.BackupEvent{V: events.Version, ID: fmt.Sprintf("%s:purge_failed:%d", h.ID, h.ExpireAttempts+1), RunID: h.ID.String(),
					At: now, Error: err.Error(), Attempt: int(h.ExpireAttempts) + 1, RetryAt: &retryAt}
				if err := emit(ctx, o, h.AgentID, events.PhasePurgeFailed, ev); err != nil {
					return err
				}
				continue
			}
			st.Purged++
			ev := events.BackupEvent{V: events.Version, ID: h.ID.String() + ":purged", RunID: h.ID.String(), At: time.Now().UTC()}
			if err := emit(ctx, o, h.AgentID, events.PhasePurged, ev); err != nil {
				return err
			}
		}
		if len(rows) < 100 {
			return nil
		}
	}
}

// emit is projector.Emit of a backup event in a transaction of its own.
func emit(ctx context.Context, o Opts, agent uuid.UUID, phase string, ev events.BackupEvent) error {
	err := db.WithTx(ctx, o.Pool, func(tx pgx.Tx) error { return emitTx(ctx, tx, agent, phase, ev) })
	if err == nil {
		o.Outbox.Kick()
	}
	return err
}

// emitTx is projector.Emit of a backup event in the caller's transaction; the
// caller kicks the relay after its commit.
func emitTx(ctx context.Context, tx pgx.Tx, agent uuid.UUID, phase string, ev events.BackupEvent) error {
	return projector.Emit(ctx, tx, agent, events.KindBackup, phase, ev.ID, ev)
}
