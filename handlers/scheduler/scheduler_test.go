package scheduler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/handlers/scheduler"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/secrets"
	"github.com/rahatback/rahatback/testsupport"
	"github.com/rahatback/rahatback/vault"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

// env is a database, a NATS server, the runs service (which builds
// commands), an outbox relay and a user with one agent and one database.
type env struct {
	t     *testing.T
	pool  *pgxpool.Pool
	nats  *testsupport.NATS
	dbURL string
	runs  *runs.Service
	relay *outbox.Relay
	user  uuid.UUID
	agent uuid.UUID
	dbID  uuid.UUID
	clock *scheduler.FakeClock
}

func newEnv(t *testing.T, start time.Time) *env {
	t.Helper()
	dbURL, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, api.AgentAuthenticator(pool))
	v, err := vault.New(map[uint32][]byte{1: bytes.Repeat([]byte{7}, vault.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	relay := testsupport.RunOutbox(t, pool, n.JS)
	svc, err := runs.New(runs.Config{Pool: pool, Secrets: secrets.Box{V: v}, NC: n.NC, JS: n.JS, Outbox: relay,
		Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dbURL: dbURL, pool: pool, nats: n, runs: svc, relay: relay, user: uuid.New(), agent: uuid.New(), dbID: uuid.New(),
		clock: scheduler.NewFakeClock(start)}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	e.exec(`INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')`, e.user, e.user.String()+"@example.com")
	e.exec(`INSERT INTO agents (id, user_id, name, public_key, nats_secret_hash) VALUES ($1, $2, 'db-host', $3, '\x00')`,
		e.agent, e.user, id.Recipient().String())
	e.setOnline(true)
	e.exec(`INSERT INTO databases (id, user_id, agent_id, name, type, host, port, username, database_name)
		VALUES ($1, $2, $3, 'shop', 'postgresql', '127.0.0.1', 5432, 'app', 'shop')`, e.dbID, e.user, e.agent)
	// The per-agent durable the agent would consume from.
	if err := events.EnsureAgentConsumer(context.Background(), n.JS, e.agent.String()); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) setOnline(online bool) {
	e.exec(`INSERT INTO agent_presence (agent_id, online, last_seen_at) VALUES ($1, $2, now())
		ON CONFLICT (agent_id) DO UPDATE SET online = $2, last_seen_at = now()`, e.agent, online)
}

// job creates an active job with a custom cron schedule, handled through
// `through`.
func (e *env) job(cron string, through time.Time) uuid.UUID {
	e.t.Helper()
	id := uuid.New()
	e.exec(`INSERT INTO backup_jobs (id, user_id, database_id, name, schedule_type, cron_expression, scheduled_through)
		VALUES ($1, $2, $3, $4, 'custom', $5, $6)`, id, e.user, e.dbID, "job "+cron, cron, through)
	return id
}

// start runs a scheduler until the test ends or stop is called.
func (e *env) start(mod ...func(*scheduler.Opts)) (stop func()) {
	e.t.Helper()
	o := scheduler.Opts{Pool: e.pool, Runs: e.runs, Outbox: e.relay, Clock: e.clock, Logger: testsupport.Logger(e.t),
		Poll: 20 * time.Millisecond, Resync: time.Hour, Settle: -1}
	for _, f := range mod {
		f(&o)
	}
	s, err := scheduler.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			e.t.Errorf("scheduler: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

// row is a backup_history row as the scheduler test checks it.
type row struct {
	ID     uuid.UUID
	Status string
	Slot   time.Time
	Error  string
}

func (e *env) rows(job uuid.UUID) []row {
	e.t.Helper()
	rs, err := e.pool.Query(context.Background(), `SELECT id, status, scheduled_for, coalesce(error_message, '')
		FROM backup_history WHERE backup_job_id = $1 ORDER BY scheduled_for, id`, job)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.ID, &r.Status, &r.Slot, &r.Error); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitRows waits until job has n history rows.
func (e *env) waitRows(job uuid.UUID, n int) []row {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs := e.rows(job)
		if len(rs) >= n || time.Now().After(deadline) {
			if len(rs) != n {
				e.t.Fatalf("job has %d history rows, want %d: %+v", len(rs), n, rs)
			}
			return rs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// complete finishes a queued run as its agent would.
func (e *env) complete(run uuid.UUID) {
	e.t.Helper()
	ctx := context.Background()
	for _, phase := range []string{events.PhaseStarted, events.PhaseCompleted} {
		ev := events.BackupEvent{V: events.Version, ID: run.String() + ":" + phase, RunID: run.String(), At: time.Now().UTC(),
			FileName: "x.sql.zst", StorageKey: "x.sql.zst", FileSize: 1, RawSize: 1, Checksum: "00", ChecksumAlgorithm: "sha256"}
		if err := events.Publish(ctx, e.nats.JS, events.EventSubject(e.agent.String(), events.KindBackup, phase), ev.ID, ev); err != nil {
			e.t.Fatal(err)
		}
		data, err := json.Marshal(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := projector.Apply(ctx, e.pool, events.EventSubject(e.agent.String(), events.KindBackup, phase), ev.At, data); err != nil {
			e.t.Fatal(err)
		}
	}
}

// commands returns the Nats-Msg-Id of every backup command waiting for
// the agent, in order.
func (e *env) commands() []string {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.nats.JS.Stream(ctx, events.StreamCommands)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		if m.Subject == events.CommandSubject(e.agent.String(), events.CommandBackup) {
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		}
	}
	return ids
}

// waitCommands waits up to 10 s for n commands, then returns them all
// after a moment for any extra to arrive.
func (e *env) waitCommands(n int) []string {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.commands()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return e.commands()
}

// minute is a whole hour in the past for the fake clock to start from.
func minute() time.Time { return time.Now().UTC().Truncate(time.Hour).Add(-time.Hour) }

// TestTwoSchedulersOneRunPerSlot: two replicas, a per-minute job, six
// slots, one replica restarted in the middle: exactly one run and one
// command per slot, none lost.
func TestTwoSchedulersOneRunPerSlot(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(10*time.Second))
	job := e.job("* * * * *", t0)
	stopA := e.start()
	e.start()

	var slots []time.Time
	for i := 1; i <= 6; i++ {
		slot := t0.Add(time.Duration(i) * time.Minute)
		slots = append(slots, slot)
		if i == 4 {
			stopA() // a replica goes away in the middle and comes back
		}
		e.clock.Set(slot.Add(300 * time.Millisecond))
		if i == 4 {
			e.start()
		}
		rs := e.waitRows(job, i)
		last := rs[len(rs)-1]
		if !last.Slot.Equal(slot) || last.Status != "queued" {
			t.Fatalf("slot %d: last row %+v, want queued for %s", i, last, slot)
		}
		if last.ID != scheduler.RunID(job, slot) {
			t.Fatalf("slot %d: run id %s, want %s", i, last.ID, scheduler.RunID(job, slot))
		}
		e.complete(last.ID)
	}
	// Let both replicas look again: nothing more may appear.
	e.clock.Set(slots[5].Add(20 * time.Second))
	time.Sleep(300 * time.Millisecond)
	rs := e.rows(job)
	if len(rs) != 6 {
		t.Fatalf("%d rows after six slots: %+v", len(rs), rs)
	}
	var want []string
	for i, r := range rs {
		if !r.Slot.Equal(slots[i]) || r.Status != "success" {
			t.Errorf("row %d: %+v, want success for %s", i, r, slots[i])
		}
		want = append(want, scheduler.MsgID(job, slots[i]))
	}
	if got := e.waitCommands(len(want)); !slices.Equal(got, want) {
		t.Fatalf("commands in the agent's queue:\n%q\nwant one per slot:\n%q", got, want)
	}
}

// TestMissedSlotsAfterDowntime: after downtime the latest slot within the
// grace period runs once; every other missed slot is a skipped row saying
// the control plane was down; nothing runs in a burst.
func TestMissedSlotsAfterDowntime(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	e := newEnv(t, t0.Add(30*time.Minute+10*time.Second))
	perMinute := e.job("* * * * *", t0)
	hourly := e.job("0 * * * *", t0.Add(-30*time.Minute)) // its slot t0 is 30 min late: beyond grace
	capped := e.job("*/2 * * * *", t0)
	e.start(func(o *scheduler.Opts) { o.Grace = 10 * time.Minute })
	e.start(func(o *scheduler.Opts) { o.Grace = 10 * time.Minute }) // a second replica changes nothing

	rs := e.waitRows(perMinute, 30)
	for i, r := range rs {
		slot := t0.Add(time.Duration(i+1) * time.Minute)
		if !r.Slot.Equal(slot) {
			t.Fatalf("row %d is for %s, want %s", i, r.Slot, slot)
		}
		if i < 29 && (r.Status != "skipped" || r.Error != runs.ReasonDown) {
			t.Fatalf("missed slot %s: %+v, want skipped (control plane was down)", slot, r)
		}
	}
	if last := rs[29]; last.Status != "queued" {
		t.Fatalf("latest slot within grace: %+v, want queued", last)
	}
	hr := e.waitRows(hourly, 1)
	if hr[0].Status != "skipped" || hr[0].Error != runs.ReasonDown || !hr[0].Slot.Equal(t0) {
		t.Fatalf("hourly slot missed by 30 min: %+v, want skipped for %s", hr[0], t0)
	}
	if got := e.waitCommands(2); len(got) != 2 || !slices.Contains(got, scheduler.MsgID(perMinute, t0.Add(30*time.Minute))) ||
		!slices.Contains(got, scheduler.MsgID(capped, t0.Add(30*time.Minute))) {
		t.Fatalf("commands sent: %q; want only the latest slot of each job within grace", got)
	}
}

// TestMissedSlotsCap: a job down for days records at most MaxMissed
// skipped rows, the oldest saying how many more were missed.
func TestMissedSlotsCap(t *testing.T) {
	t0 := minute().Add(-3 * time.Hour)
	e := newEnv(t, t0.Add(time.Hour+30*time.Second))
	job := e.job("* * * * *", t0)
	e.start(func(o *scheduler.Opts) { o.MaxMissed = 5 })
	rs := e.waitRows(job, 6)
	if !strings.Contains(rs[0].Error, "and 54 earlier slots") || rs[0].Status != "skipped" {
		t.Fatalf("oldest recorded row: %+v", rs[0])
	}
	if rs[5].Status != "queued" || !rs[5].Slot.Equal(t0.Add(time.Hour)) {
		t.Fatalf("latest row: %+v", rs[5])
	}
}

// TestSkippedSlots: an offline agent or a run still going make the slot a
// skipped row that says so.
func TestSkippedSlots(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(10*time.Second))
	job := e.job("* * * * *", t0)
	e.start()

	e.clock.Set(t0.Add(time.Minute))
	rs := e.waitRows(job, 1)
	if rs[0].Status != "queued" {
		t.Fatalf("first slot: %+v", rs[0])
	}
	// Not completed: the next slot finds it still running.
	e.clock.Set(t0.Add(2 * time.Minute))
	rs = e.waitRows(job, 2)
	if rs[1].Status != "skipped" || !strings.HasPrefix(rs[1].Error, runs.ReasonBusy) || !strings.Contains(rs[1].Error, rs[0].ID.String()) {
		t.Fatalf("slot while the previous run is still queued: %+v", rs[1])
	}
	e.complete(rs[0].ID)
	e.setOnline(false)
	e.clock.Set(t0.Add(3 * time.Minute))
	rs = e.waitRows(job, 3)
	if rs[2].Status != "skipped" || !strings.HasPrefix(rs[2].Error, runs.ReasonOffline) || !strings.Contains(rs[2].Error, "db-host") {
		t.Fatalf("slot with the agent offline: %+v", rs[2])
	}
	e.setOnline(true)
	e.clock.Set(t0.Add(4 * time.Minute))
	if rs = e.waitRows(job, 4); rs[3].Status != "queued" {
		t.Fatalf("slot with the agent back: %+v", rs[3])
	}
	if got := e.waitCommands(2); len(got) != 2 {
		t.Fatalf("commands sent: %q; want the two queued slots only", got)
	}
}

// TestJobChangesPickedUp: creates, schedule changes, pauses, resumes and
// deletes reach a running scheduler without a restart, and a resumed job
// does not count the paused slots as missed.
func TestJobChangesPickedUp(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(10*time.Second))
	e.start()
	// Give the scheduler time to load (nothing), then create a job.
	time.Sleep(100 * time.Millisecond)
	job := e.job("*/2 * * * *", t0)
	time.Sleep(100 * time.Millisecond) // a few polls
	e.clock.Set(t0.Add(time.Minute))
	time.Sleep(100 * time.Millisecond)
	if rs := e.rows(job); len(rs) != 0 {
		t.Fatalf("odd minute fired an every-2-minutes job: %+v", rs)
	}
	e.clock.Set(t0.Add(2 * time.Minute))
	rs := e.waitRows(job, 1)
	e.complete(rs[0].ID)

	// Every minute from now on.
	e.exec(`UPDATE backup_jobs SET cron_expression = '* * * * *', updated_at = now() WHERE id = $1`, job)
	time.Sleep(100 * time.Millisecond)
	e.clock.Set(t0.Add(3 * time.Minute))
	rs = e.waitRows(job, 2)
	e.complete(rs[1].ID)

	// Paused: its slots pass by. The API's update query is what the
	// dashboard's pause and resume use.
	e.exec(`UPDATE backup_jobs SET is_active = false, updated_at = now() WHERE id = $1`, job)
	time.Sleep(100 * time.Millisecond)
	e.clock.Set(t0.Add(6 * time.Minute))
	time.Sleep(200 * time.Millisecond)
	if rs := e.rows(job); len(rs) != 2 {
		t.Fatalf("paused job ran: %+v", rs)
	}
	// Resumed: like the API's update, scheduled_through moves to now.
	e.exec(`UPDATE backup_jobs SET is_active = true, scheduled_through = $2, updated_at = now() WHERE id = $1`, job, t0.Add(6*time.Minute))
	time.Sleep(100 * time.Millisecond)
	e.clock.Set(t0.Add(7 * time.Minute))
	rs = e.waitRows(job, 3)
	if rs[2].Status != "queued" || !rs[2].Slot.Equal(t0.Add(7*time.Minute)) {
		t.Fatalf("after resume: %+v", rs[2])
	}
	e.complete(rs[2].ID)

	e.exec(`DELETE FROM backup_jobs WHERE id = $1`, job)
	e.clock.Set(t0.Add(8 * time.Minute))
	time.Sleep(200 * time.Millisecond)
	if rs := e.rows(job); len(rs) != 3 {
		t.Fatalf("deleted job ran: %+v", rs)
	}
}

// lastCommand decodes the newest backup command waiting for the agent.
func (e *env) lastCommand() events.BackupCommand {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.nats.JS.Stream(ctx, events.StreamCommands)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, events.CommandSubject(e.agent.String(), events.CommandBackup))
	if err != nil {
		e.t.Fatal(err)
	}
	var cmd events.BackupCommand
	if err := json.Unmarshal(m.Data, &cmd); err != nil {
		e.t.Fatal(err)
	}
	return cmd
}

// TestPreparedCommands: a command built ahead of its slot is sent as
// built when nothing changed, and built again when its database changed
// in between.
func TestPreparedCommands(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(10*time.Second))
	job := e.job("* * * * *", t0)
	idle := make(chan struct{}, 1)
	e.start(func(o *scheduler.Opts) {
		o.Lead = 30 * time.Second
		o.Idle = func() {
			select {
			case idle <- struct{}{}:
			default:
			}
		}
	})
	waitIdle := func() {
		t.Helper()
		<-idle // possibly stale
		select {
		case <-idle:
		case <-time.After(10 * time.Second):
			t.Fatal("scheduler never idle")
		}
	}
	for i, host := range []string{"", "db2.internal"} {
		slot := t0.Add(time.Duration(i+1) * time.Minute)
		e.clock.Set(slot.Add(-20 * time.Second)) // within Lead: prepared now
		waitIdle()
		if host != "" {
			e.exec(`UPDATE databases SET host = $2, updated_at = now() WHERE id = $1`, e.dbID, host)
		}
		e.clock.Set(slot)
		rs := e.waitRows(job, i+1)
		e.waitCommands(i + 1)
		cmd := e.lastCommand()
		want := host
		if want == "" {
			want = "127.0.0.1"
		}
		if cmd.RunID != scheduler.RunID(job, slot).String() || cmd.Conn.Host != want {
			t.Fatalf("slot %d: command for run %s to host %q, want run %s to %q", i+1, cmd.RunID, cmd.Conn.Host,
				scheduler.RunID(job, slot), want)
		}
		e.complete(rs[i].ID)
	}
}

// TestSettleAfterStart: a scheduler that starts while the agent is still
// offline (as after a restart) waits Settle before catching up, so the
// agent that reconnects meanwhile runs the missed slot.
func TestSettleAfterStart(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(90*time.Second)) // the slot t0+1m was missed
	job := e.job("* * * * *", t0)
	e.setOnline(false)
	e.start(func(o *scheduler.Opts) { o.Settle = 15 * time.Second })
	time.Sleep(200 * time.Millisecond)
	if rs := e.rows(job); len(rs) != 0 {
		t.Fatalf("fired while settling: %+v", rs)
	}
	e.setOnline(true) // the agent is back
	e.clock.Set(t0.Add(90*time.Second + 15*time.Second))
	rs := e.waitRows(job, 1)
	if rs[0].Status != "queued" || !rs[0].Slot.Equal(t0.Add(time.Minute)) {
		t.Fatalf("missed slot after settling: %+v", rs[0])
	}
}

// TestPreparedThenChanged: a job read ahead of its slot and paused, or
// given another schedule, before the slot does not fire as read.
func TestPreparedThenChanged(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(10*time.Second))
	paused := e.job("* * * * *", t0)
	moved := e.job("* * * * *", t0)
	kept := e.job("* * * * *", t0)
	idle := make(chan struct{}, 1)
	e.start(func(o *scheduler.Opts) {
		o.Lead = 30 * time.Second
		o.Poll = time.Hour // the changes reach it only through the slot's claim
		o.Idle = func() {
			select {
			case idle <- struct{}{}:
			default:
			}
		}
	})
	<-idle
	e.clock.Set(t0.Add(40 * time.Second)) // within Lead of t0+1m: all three read ahead
	select {
	case <-idle:
	case <-time.After(10 * time.Second):
		t.Fatal("scheduler never idle")
	}
	time.Sleep(50 * time.Millisecond)
	e.exec(`UPDATE backup_jobs SET is_active = false, updated_at = now() WHERE id = $1`, paused)
	e.exec(`UPDATE backup_jobs SET cron_expression = '30 * * * *', updated_at = now() WHERE id = $1`, moved)
	e.clock.Set(t0.Add(time.Minute))
	e.waitRows(kept, 1)
	time.Sleep(200 * time.Millisecond)
	if rs := e.rows(paused); len(rs) != 0 {
		t.Fatalf("job paused after being read ahead ran: %+v", rs)
	}
	if rs := e.rows(moved); len(rs) != 0 {
		t.Fatalf("job moved to minute 30 after being read ahead ran at minute 1: %+v", rs)
	}
	if got := e.waitCommands(1); len(got) != 1 || got[0] != scheduler.MsgID(kept, t0.Add(time.Minute)) {
		t.Fatalf("commands %q", got)
	}
}

// TestSlotDuringBrokerOutage: a slot that comes while NATS is down is
// decided as usual (its run is queued in the history), and once NATS is
// back its "queued" event and its command reach their streams, once each
// and in that order, from the outbox.
func TestSlotDuringBrokerOutage(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(10*time.Second))
	job := e.job("* * * * *", t0)
	e.start()
	e.nats.Stop()
	slot := t0.Add(time.Minute)
	e.clock.Set(slot.Add(300 * time.Millisecond))
	rs := e.waitRows(job, 1)
	if rs[0].Status != "queued" || !rs[0].Slot.Equal(slot) {
		t.Fatalf("slot during the outage: %+v, want queued", rs[0])
	}
	time.Sleep(time.Second) // the relay fails meanwhile
	e.nats.Restart()

	if got := e.waitCommands(1); !slices.Equal(got, []string{scheduler.MsgID(job, slot)}) {
		t.Fatalf("commands after the outage: %q", got)
	}
	ctx := context.Background()
	st, err := e.nats.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	subject := events.ControlSubject(e.agent.String(), events.KindBackup, events.PhaseQueued)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[subject]; n != 1 {
		t.Fatalf("%d queued events in the stream, want 1", n)
	}
	ev, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := e.nats.JS.Stream(ctx, events.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := cmds.GetLastMsgForSubject(ctx, events.CommandSubject(e.agent.String(), events.CommandBackup))
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Time.Before(ev.Time) {
		t.Fatalf("the command was stored at %s, before its queued event at %s", cmd.Time, ev.Time)
	}
	var got events.BackupEvent
	if err := events.Decode(ev.Data, &got); err != nil || got.RunID != scheduler.RunID(job, slot).String() {
		t.Fatalf("queued event %s: %+v %v", ev.Data, got, err)
	}
}

// TestCommandsBuiltInBatchesWithFewConnections: with no command built
// ahead, four workers decide single-job batches at one slot on a pool of
// two connections; each batch builds its commands inside its own
// transaction without waiting for another connection, so every slot runs.
func TestCommandsBuiltInBatchesWithFewConnections(t *testing.T) {
	t0 := minute()
	e := newEnv(t, t0.Add(10*time.Second))
	var jobs []uuid.UUID
	for range 12 {
		jobs = append(jobs, e.job("* * * * *", t0))
	}
	cfg, err := pgxpool.ParseConfig(e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns, cfg.AfterConnect = 2, db.RegisterTypes
	small, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(small.Close)
	e.start(func(o *scheduler.Opts) { o.Pool, o.Lead, o.Batch, o.Workers = small, -1, 1, 4 })
	e.clock.Set(t0.Add(time.Minute))
	for _, j := range jobs {
		if rs := e.waitRows(j, 1); rs[0].Status != "queued" {
			t.Fatalf("job %s: %+v, want queued", j, rs[0])
		}
	}
	if got := e.waitCommands(len(jobs)); len(got) != len(jobs) {
		t.Fatalf("%d commands, want %d", len(got), len(jobs))
	}
}

// verifyCommands counts the verify commands waiting for the agent.
func (e *env) verifyCommands() int {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.nats.JS.Stream(ctx, events.StreamCommands)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.CommandSubject(e.agent.String(), events.CommandVerify)))
	if err != nil {
		e.t.Fatal(err)
	}
	return len(info.State.Subjects)
}

// TestScheduledVerification: a job's verification schedule starts one FULL
// verification of its newest successful backup per slot, however many
// replicas tick, and moves to the next slot; without a successful backup
// a slot passes with nothing started.
func TestScheduledVerification(t *testing.T) {
	start := minute()
	e := newEnv(t, start)
	job := e.job("0 0 1 1 *", start)
	e.exec(`UPDATE backup_jobs SET verify_schedule = '*/5 * * * *', verify_next_at = $2 WHERE id = $1`, job, start.Add(5*time.Minute))
	newVerifier := func() *scheduler.Verifier {
		v, err := scheduler.NewVerifier(scheduler.VerifierOpts{Pool: e.pool, Runs: e.runs, Clock: e.clock, Logger: testsupport.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b := newVerifier(), newVerifier()
	ctx := context.Background()
	tick := func(v *scheduler.Verifier) int {
		n, err := v.Tick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	nextAt := func() time.Time {
		var at time.Time
		if err := e.pool.QueryRow(ctx, `SELECT verify_next_at FROM backup_jobs WHERE id = $1`, job).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at.UTC()
	}
	if n := tick(a); n != 0 {
		t.Fatalf("%d verifications started before the slot", n)
	}
	// The first slot comes before any backup: it passes.
	e.clock.Set(start.Add(5 * time.Minute))
	if n := tick(a); n != 0 || !nextAt().Equal(start.Add(10*time.Minute)) {
		t.Fatalf("without a backup: %d started, next %s", n, nextAt())
	}
	// A successful backup, then the next slot: one verification.
	run := uuid.New()
	e.exec(`INSERT INTO backup_history (id, backup_job_id, database_id, user_id, agent_id, status, storage_type, compression, queued_at)
		VALUES ($1, $2, $3, $4, $5, 'queued', 'local', 'zstd', now())`, run, job, e.dbID, e.user, e.agent)
	e.complete(run)
	e.clock.Set(start.Add(10*time.Minute + time.Second))
	if got := tick(a) + tick(b); got != 1 {
		t.Fatalf("two replicas at one slot started %d verifications, want 1", got)
	}
	if !nextAt().Equal(start.Add(15 * time.Minute)) {
		t.Fatalf("next slot %s", nextAt())
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.verifyCommands() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d verify commands sent, want 1", e.verifyCommands())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var status string
	if err := e.pool.QueryRow(ctx, `SELECT verification_status FROM backup_history WHERE id = $1`, run).Scan(&status); err != nil || status != "PENDING" {
		t.Fatalf("the backup's verification: %q, %v", status, err)
	}
	// A schedule removed: nothing more is due.
	e.exec(`UPDATE backup_jobs SET verify_schedule = NULL, verify_next_at = NULL WHERE id = $1`, job)
	e.clock.Set(start.Add(time.Hour))
	if n := tick(a); n != 0 {
		t.Fatalf("%d verifications after the schedule was removed", n)
	}
}
