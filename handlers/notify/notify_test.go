package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/events"
	hnotify "github.com/rahatback/rahatback/handlers/notify"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/notify"
	"github.com/rahatback/rahatback/secrets"
	"github.com/rahatback/rahatback/testsupport"
	"github.com/rahatback/rahatback/vault"
)

// world is one user with an agent, a database and a job, in a fresh
// database, with an in-process JetStream.
type world struct {
	t     *testing.T
	pool  *pgxpool.Pool
	nats  *testsupport.NATS
	box   secrets.Box
	user  uuid.UUID
	agent uuid.UUID
	dbID  uuid.UUID
	job   uuid.UUID
}

func newWorld(t *testing.T) *world {
	t.Helper()
	_, pool := testsupport.NewDatabase(t)
	v, err := vault.New(map[uint32][]byte{1: bytes.Repeat([]byte{7}, vault.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, pool: pool, nats: testsupport.StartNATS(t, nil), box: secrets.Box{V: v},
		user: uuid.New(), agent: uuid.New(), dbID: uuid.New(), job: uuid.New()}
	w.exec(`INSERT INTO users (id, email, password_hash) VALUES ($1, 'n@example.com', 'x')`, w.user)
	w.exec(`INSERT INTO agents (id, user_id, name, public_key, nats_secret_hash) VALUES ($1, $2, 'edge-1', 'k', '\x00')`, w.agent, w.user)
	w.exec(`INSERT INTO databases (id, user_id, agent_id, name, type, host, port, username, database_name)
		VALUES ($1, $2, $3, 'orders', 'postgresql', '127.0.0.1', 5432, 'u', 'orders')`, w.dbID, w.user, w.agent)
	w.exec(`INSERT INTO backup_jobs (id, user_id, database_id, name, schedule_type) VALUES ($1, $2, $3, 'nightly orders', 'manual')`,
		w.job, w.user, w.dbID)
	return w
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	if _, err := w.pool.Exec(context.Background(), sql, args...); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

// webhook adds a webhook channel to url and returns its id.
func (w *world) webhook(name, url string) uuid.UUID {
	w.t.Helper()
	id := uuid.New()
	u, err := w.box.SealChannelURL(id, url)
	if err != nil {
		w.t.Fatal(err)
	}
	s, err := w.box.SealChannelSecret(id, "a-secret-of-sixteen+")
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := db.New().CreateNotificationChannel(context.Background(), w.pool, db.CreateNotificationChannelParams{
		ID: id, UserID: w.user, Name: name, Type: "webhook", Enabled: true, UrlEnc: u, UrlDisplay: &url, SecretEnc: s}); err != nil {
		w.t.Fatal(err)
	}
	return id
}

// run projects a queued backup and its end (completed, or failed with
// msg) and returns the subject and payload of the end event.
func (w *world) run(failMsg string) (uuid.UUID, string, []byte) {
	w.t.Helper()
	ctx := context.Background()
	run := uuid.New()
	now := time.Now().UTC()
	queued, _ := json.Marshal(events.BackupEvent{V: 1, ID: uuid.NewString(), RunID: run.String(), At: now,
		UserID: w.user.String(), JobID: w.job.String(), DatabaseID: w.dbID.String(), StorageType: "local", Compression: "zstd"})
	if err := projector.Apply(ctx, w.pool, events.ControlSubject(w.agent.String(), events.KindBackup, events.PhaseQueued), now, queued); err != nil {
		w.t.Fatal(err)
	}
	phase := events.PhaseCompleted
	end := events.BackupEvent{V: 1, ID: uuid.NewString(), RunID: run.String(), At: now.Add(time.Second),
		FileName: "x.sql.zst", FileSize: 4096, RawSize: 9000, StorageKey: "k", Checksum: "c", ChecksumAlgorithm: "sha256",
		DurationMs: 1500, Manifest: json.RawMessage(`{}`)}
	if failMsg != "" {
		phase, end = events.PhaseFailed, events.BackupEvent{V: 1, ID: uuid.NewString(), RunID: run.String(), At: now.Add(time.Second), Error: failMsg}
	}
	data, _ := json.Marshal(end)
	subject := events.EventSubject(w.agent.String(), events.KindBackup, phase)
	if err := projector.Apply(ctx, w.pool, subject, now, data); err != nil {
		w.t.Fatal(err)
	}
	return run, subject, data
}

func (w *world) publish(subject string, data []byte) {
	w.t.Helper()
	var payload json.RawMessage = data
	if err := events.Publish(context.Background(), w.nats.JS, subject, uuid.NewString(), payload); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) deliveries(channel uuid.UUID) []db.NotificationDelivery {
	w.t.Helper()
	rows, err := db.New().ListChannelDeliveries(context.Background(), w.pool, db.ListChannelDeliveriesParams{ChannelID: channel, Max: 100})
	if err != nil {
		w.t.Fatal(err)
	}
	return rows
}

// receiver records the notifications it answered 2xx, by notification id.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	ids  map[string]int
	hits atomic.Int32
}

// newReceiver answers with status(n) (n counts requests from 1); nil
// answers 200.
func newReceiver(t *testing.T, status func(n int32, r *http.Request) int) *receiver {
	rc := &receiver{ids: map[string]int{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := rc.hits.Add(1)
		body, _ := io.ReadAll(req.Body)
		var m struct{ ID string }
		_ = json.Unmarshal(body, &m)
		code := http.StatusOK
		if status != nil {
			code = status(n, req)
		}
		w.WriteHeader(code)
		if code < 300 {
			rc.mu.Lock()
			rc.ids[m.ID]++
			rc.mu.Unlock()
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (r *receiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func host(t *testing.T, url string) string {
	return strings.TrimPrefix(url, "http://")
}

// notifier runs the consumer and a dispatcher until the returned stop is
// called (which waits for both to return).
func (w *world) notifier(pol *egress.Policy, timeout time.Duration) (stop func()) {
	w.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	disp, err := hnotify.NewDispatcher(hnotify.DispatcherOpts{Pool: w.pool, Secrets: w.box,
		Sender:      notify.Senders{Webhook: &notify.WebhookSender{Client: pol.HTTPClient(), Timeout: timeout}},
		MaxAttempts: 3, Backoff: func(int) time.Duration { return 100 * time.Millisecond }, Poll: 100 * time.Millisecond,
		Logger: testsupport.Logger(w.t)})
	if err != nil {
		w.t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = disp.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := hnotify.Run(ctx, hnotify.Opts{Pool: w.pool, JS: w.nats.JS, PublicURL: "https://rb.example", Kick: disp.Kick,
			Logger: testsupport.Logger(w.t)}); err != nil {
			w.t.Error(err)
		}
	}()
	// The consumer starts with the events published after it exists.
	waitFor(w.t, 20*time.Second, "the notifier's consumer created", func() bool {
		_, err := w.nats.JS.Consumer(context.Background(), events.StreamEvents, events.NotifierConsumer)
		return err == nil
	})
	return func() { cancel(); wg.Wait() }
}

// TestOneNotificationPerEventAndChannel: an event delivered twice by the
// stream, and handled a third time, notifies each channel once; a channel
// that hangs delays no other; a channel that keeps failing gives up after
// its attempts and shows why; an event published while the notifier is
// down is delivered after its restart, and nothing earlier is sent again.
func TestOneNotificationPerEventAndChannel(t *testing.T) {
	w := newWorld(t)
	good := newReceiver(t, nil)
	release := make(chan struct{})
	var hanging atomic.Int32
	slow := newReceiver(t, func(n int32, r *http.Request) int {
		hanging.Add(1)
		defer hanging.Add(-1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return 200
	})
	flaky := newReceiver(t, func(int32, *http.Request) int { return http.StatusServiceUnavailable })
	pol, err := egress.New([]string{host(t, good.URL), host(t, slow.URL), host(t, flaky.URL)})
	if err != nil {
		t.Fatal(err)
	}
	goodCh, slowCh, flakyCh := w.webhook("good", good.URL), w.webhook("slow", slow.URL), w.webhook("flaky", flaky.URL)

	stop := w.notifier(pol, time.Minute)
	run1, subject, data := w.run("")
	w.publish(subject, data)
	w.publish(subject, data) // the same event again, as a redelivery would bring it
	id1 := notify.EventBackupSucceeded + ":" + run1.String()
	// The slow channel hangs until released below: the good one is served
	// all the same.
	waitFor(t, 20*time.Second, "delivered to the good channel", func() bool { return good.count(id1) == 1 })
	waitFor(t, 20*time.Second, "the slow channel's request hanging", func() bool { return hanging.Load() == 1 })
	n, err := hnotify.NewNotifier(hnotify.Opts{Pool: w.pool, JS: w.nats.JS})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Handle(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the flaky channel given up", func() bool {
		d := w.deliveries(flakyCh)
		return len(d) == 1 && d[0].Status == "failed"
	})
	close(release)
	waitFor(t, 20*time.Second, "delivered to the slow channel", func() bool { return slow.count(id1) == 1 })
	stop()

	fl, err := db.New().GetNotificationChannelByID(context.Background(), w.pool, flakyCh)
	if err != nil {
		t.Fatal(err)
	}
	if d := w.deliveries(flakyCh)[0]; d.Attempts != 3 || fl.LastError == nil || !strings.Contains(*fl.LastError, "503") ||
		!strings.Contains(*fl.LastError, "after 3 attempts") || fl.LastErrorAt == nil || fl.LastSuccessAt != nil {
		t.Fatalf("flaky channel: attempts %d, last error %v", d.Attempts, fl.LastError)
	}
	if flaky.hits.Load() != 3 {
		t.Fatalf("flaky channel got %d requests, want 3", flaky.hits.Load())
	}

	// Down: an event arrives meanwhile. Up again: it is delivered, and the
	// first one is not sent again.
	run2, subject2, data2 := w.run("disk full")
	w.publish(subject2, data2)
	stop = w.notifier(pol, time.Minute)
	defer stop()
	id2 := notify.EventBackupFailed + ":" + run2.String()
	waitFor(t, 20*time.Second, "the event published while down delivered", func() bool {
		return good.count(id2) == 1 && slow.count(id2) == 1
	})
	time.Sleep(500 * time.Millisecond) // a few dispatcher rounds
	if good.count(id1) != 1 || slow.count(id1) != 1 || good.count(id2) != 1 {
		t.Fatalf("duplicates after restart: %v %v", good.ids, slow.ids)
	}
	for _, ch := range []uuid.UUID{goodCh, slowCh} {
		d := w.deliveries(ch)
		if len(d) != 2 || d[0].Status != "sent" || d[1].Status != "sent" {
			t.Fatalf("deliveries of %s: %+v", ch, d)
		}
	}
}

// TestAbandonedDeliveryIsSentAgain: a delivery claimed by a dispatcher that
// died (its lease runs out) is sent by another.
func TestAbandonedDeliveryIsSentAgain(t *testing.T) {
	w := newWorld(t)
	good := newReceiver(t, nil)
	pol, _ := egress.New([]string{host(t, good.URL)})
	w.webhook("good", good.URL)
	_, subject, data := w.run("")
	n, _ := hnotify.NewNotifier(hnotify.Opts{Pool: w.pool, JS: w.nats.JS})
	if err := n.Handle(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
	claim := db.ClaimDeliveriesParams{Types: notify.Types, LeaseSecs: 1, Max: 10}
	held, err := db.New().ClaimDeliveries(context.Background(), w.pool, claim)
	if err != nil || len(held) != 1 {
		t.Fatalf("claim: %v %v", held, err)
	}
	again, _ := db.New().ClaimDeliveries(context.Background(), w.pool, claim)
	if len(again) != 0 {
		t.Fatalf("a held delivery was claimed twice: %v", again)
	}
	stop := w.notifier(pol, time.Minute)
	defer stop()
	waitFor(t, 20*time.Second, "the abandoned delivery sent", func() bool { return good.hits.Load() == 1 })
	if d := w.deliveries(held[0].ChannelID); d[0].Status != "sent" || d[0].Attempts != 2 {
		t.Fatalf("delivery after its lease: %+v", d[0])
	}
	// The dead dispatcher's late word changes nothing.
	for _, late := range []func() (int64, error){
		func() (int64, error) {
			return db.New().DeliveryFailed(context.Background(), w.pool, db.DeliveryFailedParams{ID: held[0].ID, Attempt: 1, Error: ptr("late")})
		},
		func() (int64, error) {
			return db.New().DeliveryRetry(context.Background(), w.pool, db.DeliveryRetryParams{ID: held[0].ID, Attempt: 1, Error: ptr("late")})
		},
	} {
		if n, err := late(); n != 0 || err != nil {
			t.Fatalf("a stale claim's update applied: %d %v", n, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestHungMailServerDelaysNoWebhook: email and webhooks have their own
// send slots: while the SMTP server accepts connections and never
// answers, every email slot is taken and webhooks still go out.
func TestHungMailServerDelaysNoWebhook(t *testing.T) {
	w := newWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns sync.WaitGroup
	stuck := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); <-stuck; c.Close() }()
		}
	}()
	smtp, err := notify.ParseSMTP("smtp://"+ln.Addr().String()+"?tls=none", "rb@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	good := newReceiver(t, nil)
	pol, _ := egress.New([]string{host(t, good.URL)})
	for i := range 3 {
		addr := fmt.Sprintf("ops%d@example.com", i)
		if _, err := db.New().CreateNotificationChannel(context.Background(), w.pool, db.CreateNotificationChannelParams{
			ID: uuid.New(), UserID: w.user, Name: addr, Type: "email", Enabled: true, Address: &addr}); err != nil {
			t.Fatal(err)
		}
	}
	w.webhook("good", good.URL)
	n, _ := hnotify.NewNotifier(hnotify.Opts{Pool: w.pool, JS: w.nats.JS, Email: true})
	run, subject, data := w.run("")
	if err := n.Handle(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	disp, err := hnotify.NewDispatcher(hnotify.DispatcherOpts{Pool: w.pool, Secrets: w.box, Parallel: 1, ParallelEmail: 1,
		Sender: notify.Senders{Email: &notify.EmailSender{SMTP: smtp, Timeout: time.Minute},
			Webhook: &notify.WebhookSender{Client: pol.HTTPClient()}},
		Poll: 100 * time.Millisecond, Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = disp.Run(ctx); close(done) }()
	// Released: the hung sends end, and the dispatcher with them.
	defer func() { close(stuck); cancel(); <-done; conns.Wait() }()
	waitFor(t, 20*time.Second, "the webhook sent while the mail server hangs", func() bool {
		return good.count(notify.EventBackupSucceeded+":"+run.String()) == 1
	})
	var sending int
	if err := w.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM notification_deliveries d JOIN notification_channels c ON c.id = d.channel_id
		 WHERE c.type = 'email' AND d.status = 'sending'`).Scan(&sending); err != nil {
		t.Fatal(err)
	}
	if sending != 1 {
		t.Fatalf("%d email deliveries held with one email slot", sending)
	}
}

// TestAgentCannotNotifyForOthers: an agent's event about a run sent to
// another agent is refused and notifies nobody.
func TestAgentCannotNotifyForOthers(t *testing.T) {
	w := newWorld(t)
	ch := w.webhook("good", "https://hooks.example/x")
	run, _, data := w.run("")
	other := uuid.New()
	n, _ := hnotify.NewNotifier(hnotify.Opts{Pool: w.pool, JS: w.nats.JS})
	err := n.Handle(context.Background(), events.EventSubject(other.String(), events.KindBackup, events.PhaseCompleted), data)
	if err == nil || len(w.deliveries(ch)) != 0 {
		t.Fatalf("another agent's event about run %s: err %v, deliveries %v", run, err, w.deliveries(ch))
	}
}

// outboxAlerts lists the alert events in the outbox, by subject.
func (w *world) outboxAlerts() []string {
	w.t.Helper()
	rows, err := w.pool.Query(context.Background(), `SELECT subject FROM outbox WHERE subject LIKE 'rahat.alert.%' ORDER BY id`)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		out = append(out, s)
	}
	return out
}

// TestAlertsFireOnceAndRecover: the RPO and agent-offline alerts are each
// announced once when breached, however many checkers run, and once when
// they recover; their events notify.
func TestAlertsFireOnceAndRecover(t *testing.T) {
	w := newWorld(t)
	ch := w.webhook("hook", "https://hooks.example/x")
	w.exec(`UPDATE users SET notify_rules = '{"backupFailed":true,"agentOfflineMinutes":5,"rpoHours":1}' WHERE id = $1`, w.user)
	w.exec(`UPDATE backup_jobs SET created_at = now() - interval '3 hours' WHERE id = $1`, w.job)
	w.exec(`INSERT INTO agent_presence (agent_id, online, last_seen_at) VALUES ($1, true, now() - interval '10 minutes')`, w.agent)
	ctx := context.Background()
	check := func() {
		var wg sync.WaitGroup
		for range 3 { // replicas
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, _ := hnotify.NewAlertChecker(hnotify.AlertCheckerOpts{Pool: w.pool})
				if _, err := a.Check(ctx); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	check()
	check()
	u := w.user.String()
	want := []string{events.AlertSubject(u, events.AlertRPO, events.PhaseBreached), events.AlertSubject(u, events.AlertAgentOffline, events.PhaseBreached)}
	if got := w.outboxAlerts(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after breaches: %v, want %v", got, want)
	}
	w.run("")
	w.exec(`UPDATE agent_presence SET last_seen_at = now() WHERE agent_id = $1`, w.agent)
	check()
	check()
	want = append(want, events.AlertSubject(u, events.AlertRPO, events.PhaseRecovered), events.AlertSubject(u, events.AlertAgentOffline, events.PhaseRecovered))
	if got := w.outboxAlerts(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after recoveries: %v, want %v", got, want)
	}

	// A rule removed while breached ends the alert without announcing a
	// recovery that did not happen.
	w.exec(`UPDATE agent_presence SET last_seen_at = now() - interval '1 hour', online = false WHERE agent_id = $1`, w.agent)
	check()
	w.exec(`UPDATE users SET notify_rules = '{"backupFailed":true,"rpoHours":1}' WHERE id = $1`, w.user)
	check()
	want = append(want, events.AlertSubject(u, events.AlertAgentOffline, events.PhaseBreached))
	if got := w.outboxAlerts(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after the rule went: %v, want %v", got, want)
	}
	var left int
	_ = w.pool.QueryRow(ctx, `SELECT count(*) FROM alert_states WHERE kind = 'agent_offline'`).Scan(&left)
	if left != 0 {
		t.Fatal("an alert whose rule went is still breached")
	}
	// A stored rule that is not a whole number stops nobody's alerts.
	w.exec(`UPDATE users SET notify_rules = '{"rpoHours":"soon","agentOfflineMinutes":1.5}' WHERE id = $1`, w.user)
	check()

	// The events notify, once each, whatever the redeliveries.
	n, _ := hnotify.NewNotifier(hnotify.Opts{Pool: w.pool, JS: w.nats.JS, PublicURL: "https://rb.example/"})
	// (The first four: a breach and a recovery of each.)
	rows, err := w.pool.Query(ctx, `SELECT subject, data FROM outbox WHERE subject LIKE 'rahat.alert.%' ORDER BY id LIMIT 4`)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][2][]byte
	for rows.Next() {
		var s string
		var d []byte
		_ = rows.Scan(&s, &d)
		msgs = append(msgs, [2][]byte{[]byte(s), d})
	}
	rows.Close()
	for range 2 {
		for _, m := range msgs {
			if err := n.Handle(ctx, string(m[0]), m[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	var kinds []string
	for _, d := range w.deliveries(ch) {
		kinds = append([]string{d.Kind}, kinds...)
	}
	if got := strings.Join(kinds, " "); got != "rpo.breached agent.offline rpo.recovered agent.online" {
		t.Fatalf("deliveries: %s", got)
	}
	var nt notify.Notification
	_ = json.Unmarshal(w.deliveries(ch)[3].Payload, &nt)
	if nt.Job == nil || nt.Job.Name != "nightly orders" || !strings.Contains(nt.Title, "for 1 hours") ||
		nt.Link != "https://rb.example/jobs/"+w.job.String() || !strings.Contains(nt.Text(), "Last good backup: never") {
		t.Fatalf("RPO breach notification: %+v\n%s", nt, nt.Text())
	}
	_ = json.Unmarshal(w.deliveries(ch)[1].Payload, &nt)
	if !strings.Contains(nt.Title, "within its recovery point objective") || strings.Contains(nt.Text(), "never") {
		t.Fatalf("RPO recovery notification: %s", nt.Text())
	}
}

// TestWebhookRedirectRefused: a webhook that redirects to an address the
// policy refuses fails for good, and the redirect's target gets nothing.
func TestWebhookRedirectRefused(t *testing.T) {
	inner := newReceiver(t, nil)
	front := httptest.NewServer(http.RedirectHandler(inner.URL+"/x", http.StatusTemporaryRedirect))
	defer front.Close()
	pol, _ := egress.New([]string{host(t, front.URL)})
	s := &notify.WebhookSender{Client: pol.HTTPClient()}
	err := s.Send(context.Background(), notify.Channel{Type: notify.TypeWebhook, URL: front.URL + "/hook", Secret: "s"},
		notify.Notification{V: 1, ID: "x", Event: notify.EventTest}, "1")
	if err == nil || !notify.IsPermanent(err) || inner.hits.Load() != 0 {
		t.Fatalf("redirect to a refused address: %v (permanent %v), inner hits %d", err, notify.IsPermanent(err), inner.hits.Load())
	}
	if _, ok := egress.IsRefused(err); !ok {
		t.Fatalf("not an egress refusal: %v", err)
	}
	// Without any allowance, loopback itself is refused before a request.
	err = (&notify.WebhookSender{Client: (*egress.Policy)(nil).HTTPClient()}).Send(context.Background(),
		notify.Channel{Type: notify.TypeSlack, URL: inner.URL + "/T/B/secret"}, notify.Notification{V: 1, Title: "x"}, "2")
	if _, ok := egress.IsRefused(err); !ok || inner.hits.Load() != 0 || strings.Contains(err.Error(), "secret") {
		t.Fatalf("loopback without allowance: %v", err)
	}
}

// TestFirstStartSkipsHistory: a notifier started for the first time on an
// installation with events in its stream (an upgrade) announces only what
// happens from then on.
func TestFirstStartSkipsHistory(t *testing.T) {
	w := newWorld(t)
	good := newReceiver(t, nil)
	pol, _ := egress.New([]string{host(t, good.URL)})
	w.webhook("good", good.URL)
	old, subject, data := w.run("")
	w.publish(subject, data)
	stop := w.notifier(pol, time.Minute)
	defer stop()
	fresh, subject, data := w.run("")
	w.publish(subject, data)
	waitFor(t, 20*time.Second, "the new event delivered", func() bool {
		return good.count(notify.EventBackupSucceeded+":"+fresh.String()) == 1
	})
	if n := good.count(notify.EventBackupSucceeded + ":" + old.String()); n != 0 {
		t.Fatalf("an event from before the first start was announced %d times", n)
	}
}

// TestRulesChooseEvents: the user's default and a job's own rules decide
// which events notify: successes, failures, skipped runs, failed
// verifications (with the failed checks) and finished restores.
func TestRulesChooseEvents(t *testing.T) {
	w := newWorld(t)
	ch := w.webhook("hook", "https://hooks.example/x")
	ctx := context.Background()
	n, _ := hnotify.NewNotifier(hnotify.Opts{Pool: w.pool, JS: w.nats.JS, PublicURL: "https://rb.example"})
	handle := func(subject string, payload any) {
		t.Helper()
		data, _ := json.Marshal(payload)
		if strings.Contains(subject, ".verify.") { // as the projector does first
			if err := projector.Apply(ctx, w.pool, subject, time.Now(), data); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.Handle(ctx, subject, data); err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
	}
	kinds := func() string {
		var out []string
		for _, d := range w.deliveries(ch) {
			out = append([]string{d.Kind}, out...)
		}
		return strings.Join(out, " ")
	}

	// The default: a success notifies; a restore does not.
	run, subject, data := w.run("")
	if err := n.Handle(ctx, subject, data); err != nil {
		t.Fatal(err)
	}
	agent := w.agent.String()
	restore := uuid.New()
	queued, _ := json.Marshal(events.RestoreEvent{V: 1, ID: uuid.NewString(), RestoreID: restore.String(), At: time.Now(),
		UserID: w.user.String(), BackupID: run.String(), TargetDatabaseID: w.dbID.String()})
	if err := projector.Apply(ctx, w.pool, events.ControlSubject(agent, events.KindRestore, events.PhaseQueued), time.Now(), queued); err != nil {
		t.Fatal(err)
	}
	done := events.RestoreEvent{V: 1, ID: uuid.NewString(), RestoreID: restore.String(), At: time.Now(), Error: "relation exists"}
	raw, _ := json.Marshal(done)
	// Not yet projected: the notifier waits for the history.
	if err := n.Handle(ctx, events.EventSubject(agent, events.KindRestore, events.PhaseFailed), raw); err == nil {
		t.Fatal("a restore event ahead of its projection was handled")
	}
	if err := projector.Apply(ctx, w.pool, events.EventSubject(agent, events.KindRestore, events.PhaseFailed), time.Now(), raw); err != nil {
		t.Fatal(err)
	}
	handle(events.EventSubject(agent, events.KindRestore, events.PhaseFailed), done)
	if got := kinds(); got != "backup.succeeded" {
		t.Fatalf("default rules: %s", got)
	}

	// Verification: a pass says nothing, a failure names its checks.
	result := &events.VerificationResult{OverallStatus: "PASSED", VerificationMethod: "FULL", Checks: []events.Check{{Check: "checksum", Passed: true}}}
	handle(events.EventSubject(agent, events.KindVerify, events.PhaseCompleted),
		events.VerifyEvent{V: 1, ID: uuid.NewString(), VerifyID: "v1", BackupID: run.String(), At: time.Now(), Level: "FULL", Result: result})
	failed := &events.VerificationResult{OverallStatus: "FAILED", VerificationMethod: "FULL", Checks: []events.Check{
		{Check: "checksum", Passed: true}, {Check: "test restore", Passed: false, Message: "psql: syntax error at line 12"}}}
	handle(events.EventSubject(agent, events.KindVerify, events.PhaseCompleted),
		events.VerifyEvent{V: 1, ID: uuid.NewString(), VerifyID: "v2", BackupID: run.String(), At: time.Now(), Level: "FULL", Result: failed})
	if got := kinds(); got != "backup.succeeded verification.failed" {
		t.Fatalf("after verifications: %s", got)
	}
	var nt notify.Notification
	_ = json.Unmarshal(w.deliveries(ch)[0].Payload, &nt)
	if !strings.Contains(nt.Text(), "Check test restore: psql: syntax error at line 12") || strings.Contains(nt.Text(), "Check checksum") {
		t.Fatalf("verification notification:\n%s", nt.Text())
	}
	// A failure older than the result the history holds says nothing.
	stale, _ := json.Marshal(events.VerifyEvent{V: 1, ID: uuid.NewString(), VerifyID: "v0", BackupID: run.String(),
		At: time.Now().Add(-time.Hour), Level: "FULL", Result: failed})
	if err := n.Handle(ctx, events.EventSubject(agent, events.KindVerify, events.PhaseCompleted), stale); err != nil {
		t.Fatal(err)
	}
	if got := kinds(); got != "backup.succeeded verification.failed" {
		t.Fatalf("after a stale verification: %s", got)
	}

	// The job's own rules: failures and restores, no successes.
	w.exec(`UPDATE backup_jobs SET notify_rules = '{"backupFailed":true,"restoreFinished":true}' WHERE id = $1`, w.job)
	_, subject, data = w.run("")
	if err := n.Handle(ctx, subject, data); err != nil {
		t.Fatal(err)
	}
	handle(events.EventSubject(agent, events.KindRestore, events.PhaseFailed), done)
	run3, subject, data := w.run("connection refused")
	if err := n.Handle(ctx, subject, data); err != nil {
		t.Fatal(err)
	}
	if got := kinds(); got != "backup.succeeded verification.failed restore.failed backup.failed" {
		t.Fatalf("job rules: %s", got)
	}
	_ = json.Unmarshal(w.deliveries(ch)[0].Payload, &nt)
	if nt.Run.ID != run3.String() || nt.Error != "connection refused" || nt.Job.Name != "nightly orders" || nt.DB.Engine != "postgresql" {
		t.Fatalf("failure notification: %+v", nt)
	}
	// A disabled channel gets nothing.
	w.exec(`UPDATE notification_channels SET enabled = false WHERE id = $1`, ch)
	_, subject, data = w.run("again")
	if err := n.Handle(ctx, subject, data); err != nil {
		t.Fatal(err)
	}
	if len(w.deliveries(ch)) != 4 {
		t.Fatalf("a disabled channel got a delivery: %s", kinds())
	}
}

// TestSkippedNotifies: a backup skipped because its agent was offline (a
// control-plane event) notifies under the default rules.
func TestSkippedNotifies(t *testing.T) {
	w := newWorld(t)
	ch := w.webhook("hook", "https://hooks.example/x")
	ctx := context.Background()
	run := uuid.New()
	subject := events.ControlSubject(w.agent.String(), events.KindBackup, events.PhaseSkipped)
	data, _ := json.Marshal(events.BackupEvent{V: 1, ID: uuid.NewString(), RunID: run.String(), At: time.Now().UTC(),
		UserID: w.user.String(), JobID: w.job.String(), DatabaseID: w.dbID.String(), StorageType: "local", Compression: "zstd",
		Error: "agent edge-1 is offline"})
	if err := projector.Apply(ctx, w.pool, subject, time.Now(), data); err != nil {
		t.Fatal(err)
	}
	n, _ := hnotify.NewNotifier(hnotify.Opts{Pool: w.pool, JS: w.nats.JS})
	if err := n.Handle(ctx, subject, data); err != nil {
		t.Fatal(err)
	}
	d := w.deliveries(ch)
	var nt notify.Notification
	if len(d) == 1 {
		_ = json.Unmarshal(d[0].Payload, &nt)
	}
	if len(d) != 1 || nt.Event != notify.EventBackupSkipped || nt.Error != "agent edge-1 is offline" || !strings.Contains(nt.Title, "skipped") {
		t.Fatalf("skipped run: %d deliveries, %+v", len(d), nt)
	}
	// An agent cannot claim a skip: that phase is the control plane's.
	if err := n.Handle(ctx, events.EventSubject(w.agent.String(), events.KindBackup, events.PhaseSkipped), data); err == nil {
		t.Fatal("an agent's skipped event was accepted")
	}
}

// TestWaitsForProjector: an event about a run the history projector has
// not applied yet waits for it, however long the projector is away, and
// notifies once it has.
func TestWaitsForProjector(t *testing.T) {
	w := newWorld(t)
	good := newReceiver(t, nil)
	pol, _ := egress.New([]string{host(t, good.URL)})
	w.webhook("good", good.URL)
	ctx := context.Background()
	run := uuid.New()
	now := time.Now().UTC()
	queued, _ := json.Marshal(events.BackupEvent{V: 1, ID: uuid.NewString(), RunID: run.String(), At: now,
		UserID: w.user.String(), JobID: w.job.String(), DatabaseID: w.dbID.String(), StorageType: "local", Compression: "zstd"})
	if err := projector.Apply(ctx, w.pool, events.ControlSubject(w.agent.String(), events.KindBackup, events.PhaseQueued), now, queued); err != nil {
		t.Fatal(err)
	}
	stop := w.notifier(pol, time.Minute)
	defer stop()
	done, _ := json.Marshal(events.BackupEvent{V: 1, ID: uuid.NewString(), RunID: run.String(), At: now.Add(time.Second),
		FileName: "x", FileSize: 1, StorageKey: "k", Checksum: "c", ChecksumAlgorithm: "sha256", DurationMs: 5, Manifest: json.RawMessage(`{}`)})
	w.publish(events.EventSubject(w.agent.String(), events.KindBackup, events.PhaseCompleted), done)
	id := notify.EventBackupSucceeded + ":" + run.String()
	time.Sleep(3 * retryWait) // several redeliveries while no projector runs
	if good.count(id) != 0 {
		t.Fatal("notified before the history said so")
	}
	pctx, cancel := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() {
		_ = projector.Run(pctx, projector.Opts{Pool: w.pool, JS: w.nats.JS, Logger: testsupport.Logger(t)})
		close(pdone)
	}()
	defer func() { cancel(); <-pdone }()
	waitFor(t, 30*time.Second, "notified once the projector applied the run", func() bool { return good.count(id) == 1 })
}

// retryWait is how long the notifier leaves an event that waits for the
// projector.
const retryWait = 2 * time.Second
