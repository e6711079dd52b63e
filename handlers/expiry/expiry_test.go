package expiry_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/expiry"
	"github.com/rahatback/rahatback/testsupport"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

// deleter records deletions and fails while failing is set. The object
// deletion itself is tested end to end (controlplane's TestRetention);
// here it stands in for a storage that is down.
type deleter struct {
	mu      sync.Mutex
	failing bool
	deleted []uuid.UUID
}

func (d *deleter) DeleteObject(_ context.Context, h db.BackupHistory) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failing {
		return errors.New("storage unreachable")
	}
	d.deleted = append(d.deleted, h.ID)
	return nil
}

type fixture struct {
	t    *testing.T
	pool *pgxpool.Pool
	user uuid.UUID
	job  uuid.UUID
}

// newFixture makes a user with a database and a manual job keeping 7
// days of backups; it returns the database's id.
func newFixture(t *testing.T, pool *pgxpool.Pool) (*fixture, uuid.UUID) {
	f := &fixture{t: t, pool: pool, user: uuid.New(), job: uuid.New()}
	dbID := uuid.New()
	f.exec(`INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')`, f.user, f.user.String()+"@example.com")
	f.exec(`INSERT INTO databases (id, user_id, name, type, host, port, username, database_name)
		VALUES ($1, $2, 'd', 'postgresql', 'h', 5432, 'u', 'd')`, dbID, f.user)
	f.exec(`INSERT INTO backup_jobs (id, user_id, database_id, name, schedule_type, retention_days)
		VALUES ($1, $2, $3, 'j', 'manual', 7)`, f.job, f.user, dbID)
	return f, dbID
}

func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// backup inserts a successful backup of the job completed daysAgo.
func (f *fixture) backup(daysAgo int) uuid.UUID {
	id := uuid.New()
	at := time.Now().Add(-time.Duration(daysAgo) * 24 * time.Hour)
	f.exec(`INSERT INTO backup_history (id, user_id, backup_job_id, database_id, agent_id, status, queued_at, completed_at,
		storage_type, storage_key, compression) VALUES ($1, $2, $3, $4, $5, 'success', $6, $6, 's3', $7, 'zstd')`,
		id, f.user, f.job, uuid.New(), uuid.New(), at, "k/"+id.String())
	return id
}

type state struct {
	Status   string
	Reason   *string
	Purged   bool
	Attempts int32
	Error    *string
}

func (f *fixture) state(id uuid.UUID) state {
	f.t.Helper()
	var s state
	err := f.pool.QueryRow(context.Background(), `SELECT status, expire_reason, purged_at IS NOT NULL, expire_attempts, expire_error
		FROM backup_history WHERE id = $1`, id).Scan(&s.Status, &s.Reason, &s.Purged, &s.Attempts, &s.Error)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// TestExpiryReadersAndRetries: a backup a restore or a verification is
// reading is left alone until it is done; a deletion that fails keeps the
// row expired with the error and is retried until it succeeds.
func TestExpiryReadersAndRetries(t *testing.T) {
	ctx := context.Background()
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	f, dbID := newFixture(t, pool)

	newest := f.backup(9) // older than 7 days, but the newest: kept
	restoring := f.backup(10)
	verifying := f.backup(11)
	plain := f.backup(12)
	f.exec(`INSERT INTO restore_history (id, user_id, backup_history_id, target_database_id, agent_id, status, queued_at)
		VALUES ($1, $2, $3, $4, $5, 'running', now())`, uuid.New(), f.user, restoring, dbID, uuid.New())
	f.exec(`UPDATE backup_history SET verifying_since = now() WHERE id = $1`, verifying)

	del := &deleter{failing: true}
	o := expiry.Opts{Pool: pool, Outbox: testsupport.RunOutbox(t, pool, n.JS), Deleter: del, Logger: testsupport.Logger(t), RetryMin: time.Hour}
	st, err := expiry.Pass(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired != 1 || st.Deferred != 2 || st.Purged != 0 || st.PurgeFailed != 1 {
		t.Fatalf("first pass: %+v", st)
	}
	for _, id := range []uuid.UUID{newest, restoring, verifying} {
		if s := f.state(id); s.Status != "success" {
			t.Fatalf("backup %s: %+v, want untouched", id, s)
		}
	}
	s := f.state(plain)
	if s.Status != "expired" || *s.Reason != "retention: older than 7 days" || s.Purged || s.Attempts != 1 || *s.Error != "storage unreachable" {
		t.Fatalf("expired backup whose deletion failed: %+v", s)
	}
	// Not due again before its backoff.
	if st, err = expiry.Pass(ctx, o); err != nil || st.PurgeFailed != 0 {
		t.Fatalf("second pass within the backoff: %+v %v", st, err)
	}

	// The storage is back, the backoff has passed, the readers are done.
	del.mu.Lock()
	del.failing = false
	del.mu.Unlock()
	f.exec(`UPDATE backup_history SET expire_after = now() WHERE id = $1`, plain)
	f.exec(`UPDATE restore_history SET status = 'success' WHERE backup_history_id = $1`, restoring)
	f.exec(`UPDATE backup_history SET verifying_since = NULL WHERE id = $1`, verifying)
	if st, err = expiry.Pass(ctx, o); err != nil {
		t.Fatal(err)
	}
	if st.Expired != 2 || st.Purged != 3 {
		t.Fatalf("pass after recovery: %+v", st)
	}
	for _, id := range []uuid.UUID{plain, restoring, verifying} {
		if s := f.state(id); s.Status != "expired" || !s.Purged || s.Error != nil {
			t.Fatalf("backup %s: %+v", id, s)
		}
	}
	if s := f.state(newest); s.Status != "success" {
		t.Fatalf("newest backup: %+v", s)
	}
	del.mu.Lock()
	defer del.mu.Unlock()
	if slices.Contains(del.deleted, newest) || len(del.deleted) != 3 {
		t.Fatalf("deleted %v", del.deleted)
	}
}

// TestExpiryDuringBrokerOutage: retention expires a backup, fails to
// delete it once and then deletes it, all while NATS is down; once NATS is
// back its expired, purge_failed and purged events reach the stream, once
// each.
func TestExpiryDuringBrokerOutage(t *testing.T) {
	ctx := context.Background()
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	f, _ := newFixture(t, pool)
	f.backup(9) // the newest: kept
	old := f.backup(12)
	var agent uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT agent_id FROM backup_history WHERE id = $1`, old).Scan(&agent); err != nil {
		t.Fatal(err)
	}

	n.Stop()
	del := &deleter{failing: true}
	o := expiry.Opts{Pool: pool, Outbox: testsupport.RunOutbox(t, pool, n.JS), Deleter: del, Logger: testsupport.Logger(t), RetryMin: time.Hour}
	if st, err := expiry.Pass(ctx, o); err != nil || st.Expired != 1 || st.PurgeFailed != 1 {
		t.Fatalf("pass with the storage down: %+v %v", st, err)
	}
	del.mu.Lock()
	del.failing = false
	del.mu.Unlock()
	f.exec(`UPDATE backup_history SET expire_after = now() WHERE id = $1`, old)
	if st, err := expiry.Pass(ctx, o); err != nil || st.Purged != 1 {
		t.Fatalf("pass with the storage back: %+v %v", st, err)
	}
	if s := f.state(old); s.Status != "expired" || !s.Purged {
		t.Fatalf("backup after the passes: %+v", s)
	}
	time.Sleep(time.Second) // the relay fails meanwhile
	n.Restart()

	want := map[string]uint64{}
	for _, phase := range []string{events.PhaseExpired, events.PhasePurgeFailed, events.PhasePurged} {
		want[events.ControlSubject(agent.String(), events.KindBackup, phase)] = 1
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string]uint64{}
		if st, err := n.JS.Stream(ctx, events.StreamEvents); err == nil {
			if info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.ControlSubject(agent.String(), events.KindBackup, "*"))); err == nil {
				maps.Copy(got, info.State.Subjects)
			}
		}
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the outage the stream holds %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
