package controlplane_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/rahatback/rahatback/controlplane"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/testsupport"
)

// hookRequest is one request a webhook receiver got.
type hookRequest struct {
	Path    string
	Header  http.Header
	Body    []byte
	Decoded map[string]any
}

// hookReceiver is a local HTTP server standing for a webhook endpoint,
// Slack and Discord: it keeps every request and answers 200 (204 on
// /discord, as Discord does).
type hookReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []hookRequest
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		h.mu.Lock()
		h.reqs = append(h.reqs, hookRequest{Path: r.URL.Path, Header: r.Header.Clone(), Body: body, Decoded: m})
		h.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/discord") {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(h.Close)
	return h
}

// requests returns the requests to path whose match accepts them.
func (h *hookReceiver) requests(path string, match func(hookRequest) bool) []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookRequest
	for _, r := range h.reqs {
		if r.Path == path && (match == nil || match(r)) {
			out = append(out, r)
		}
	}
	return out
}

func (h *hookReceiver) wait(t *testing.T, path, what string, within time.Duration, match func(hookRequest) bool) hookRequest {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if got := h.requests(path, match); len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("no %s on %s within %s; received %d requests", what, path, within, len(h.reqs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func eventOf(event string) func(hookRequest) bool {
	return func(r hookRequest) bool { return r.Decoded["event"] == event }
}

func str(m map[string]any, path ...string) string {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[p]
	}
	switch x := v.(type) {
	case string:
		return x
	case float64:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return ""
}

// TestNotificationsAuditMetrics runs the control plane with SMTP (a real
// mailpit, STARTTLS and authentication), webhook channels on a local
// receiver, metrics behind a token, and checks what a user sees: the
// emails and signed webhooks of a successful and a failed backup, the
// "no good backup for N hours" alert and its recovery, each once; the
// audit log of what they did; and a /metrics scrape.
func TestNotificationsAuditMetrics(t *testing.T) {
	t.Parallel() // see TestAgentKilledMidVerifyAndRestore
	ctx := context.Background()
	dbURL, pool := testsupport.NewDatabase(t)
	mp := testsupport.StartMailpit(t, testsupport.MailpitOptions{TLS: "starttls", Auth: true})
	hooks := newHookReceiver(t)
	srcName := "alerts src " + testsupport.RandomString(4)
	src := scratchDB(t, srcName)
	if _, err := src.Exec(ctx, `CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	const metricsToken = "metrics-token-for-the-test-0123456789"
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s",
		"--allow-endpoint", endpointHost(t, hooks.URL), "--smtp-from", "RahatBack <backups@rahatback.test>",
		"--smtp-ca-file", mp.CAFile, "--alert-interval", "300ms"},
		map[string]string{"RAHATBACK_SMTP_URL": mp.SMTPURL(), "RAHATBACK_METRICS_TOKEN": metricsToken}, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("alerts@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	// Every user starts with an email channel to their own address.
	var channels []map[string]any
	c.want(c.call("GET", "/v1/notification-channels", token, nil), 200).decode(t, &channels)
	if len(channels) != 1 || channels[0]["type"] != "email" || channels[0]["address"] != "alerts@example.com" {
		t.Fatalf("a new user's channels: %v", channels)
	}

	const hookSecret = "whsec-0123456789-abcdef-signing"
	slackToken := "T000/B000/" + testsupport.RandomString(24)
	var webhook, slack, discord map[string]any
	c.want(c.call("POST", "/v1/notification-channels", token, map[string]any{"name": "ops hook", "type": "webhook",
		"url": hooks.URL + "/hook?k=v", "secret": hookSecret}), 201).decode(t, &webhook)
	c.want(c.call("POST", "/v1/notification-channels", token, map[string]any{"name": "slack", "type": "slack",
		"url": hooks.URL + "/slack/services/" + slackToken}), 201).decode(t, &slack)
	c.want(c.call("POST", "/v1/notification-channels", token, map[string]any{"name": "discord", "type": "discord",
		"url": hooks.URL + "/discord/api/webhooks/1/" + slackToken}), 201).decode(t, &discord)
	for _, ch := range []map[string]any{webhook, slack, discord} {
		raw, _ := json.Marshal(ch)
		if strings.Contains(string(raw), hookSecret) || strings.Contains(string(raw), slackToken) || strings.Contains(string(raw), "/hook") {
			t.Fatalf("a channel's secret or URL path is in its response: %s", raw)
		}
	}

	t.Run("SSRF", func(t *testing.T) {
		closed := freeAddr(t)
		for _, u := range []string{"http://" + closed + "/x", "http://169.254.169.254/latest/meta-data/",
			"http://localhost:" + strings.Split(closed, ":")[1] + "/x", "http://[::1]/x", "http://10.1.2.3/x"} {
			r := c.want(c.call("POST", "/v1/notification-channels", token, map[string]any{"name": "bad", "type": "webhook",
				"url": u, "secret": hookSecret}), 400)
			var e struct{ Fields map[string]string }
			r.decode(t, &e)
			if e.Fields["url"] == "" {
				t.Fatalf("%s: no error on url: %s", u, r.body)
			}
		}
		r := c.want(c.call("POST", "/v1/notification-channels", token, map[string]any{"name": "bad", "type": "slack",
			"url": "http://169.254.169.254/"}), 400)
		if !strings.Contains(string(r.body), "metadata") {
			t.Fatalf("metadata address: %s", r.body)
		}
	})

	t.Run("SendTest", func(t *testing.T) {
		var res struct {
			Success bool
			Message string
		}
		c.want(c.call("POST", "/v1/notification-channels/"+webhook["id"].(string)+"/test", token, nil), 200).decode(t, &res)
		if !res.Success {
			t.Fatalf("test of the webhook: %s", res.Message)
		}
		req := hooks.wait(t, "/hook", "test notification", 10*time.Second, eventOf("test"))
		checkSignature(t, req, hookSecret)
		c.want(c.call("POST", "/v1/notification-channels/"+channels[0]["id"].(string)+"/test", token, nil), 200).decode(t, &res)
		if !res.Success {
			t.Fatalf("test of the email channel: %s", res.Message)
		}
		msgs := mp.WaitMessages(t, 1, 20*time.Second)
		if !strings.Contains(msgs[0].Subject, "Test notification") || msgs[0].To[0] != "alerts@example.com" {
			t.Fatalf("test email: %+v", msgs[0])
		}
		mp.Clear(t)
	})

	srcID := c.createDB(token, "alerts shop", srcName)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "hourly shop"}), 201).decode(t, &job)
	runID := c.runJob(token, job.ID)
	h := c.waitHistory(token, runID, 60*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		t.Fatalf("backup failed: %s", h.ErrorMessage)
	}

	t.Run("BackupSucceeded", func(t *testing.T) {
		req := hooks.wait(t, "/hook", "backup.succeeded webhook", 30*time.Second, eventOf("backup.succeeded"))
		checkSignature(t, req, hookSecret)
		d := req.Decoded
		if str(d, "job", "name") != "hourly shop" || str(d, "database", "name") != "alerts shop" ||
			str(d, "database", "engine") != "postgresql" || str(d, "status") != "success" ||
			str(d, "run", "id") != runID || str(d, "run", "sizeBytes") != jsonNumber(h.FileSize) ||
			str(d, "run", "durationMs") == "" || str(d, "link") != base+"/history/"+runID {
			t.Fatalf("webhook body: %s", req.Body)
		}
		if req.Header.Get("X-RahatBack-Delivery") == "" || req.Header.Get("X-RahatBack-Event") != "backup.succeeded" {
			t.Fatalf("webhook headers: %v", req.Header)
		}
		sl := hooks.wait(t, "/slack/services/"+slackToken, "Slack message", 30*time.Second, func(r hookRequest) bool {
			return strings.Contains(str(r.Decoded, "text"), "succeeded")
		})
		if blocks, _ := sl.Decoded["blocks"].([]any); len(blocks) < 2 || !strings.Contains(string(sl.Body), "alerts shop (postgresql)") {
			t.Fatalf("Slack message: %s", sl.Body)
		}
		dc := hooks.wait(t, "/discord/api/webhooks/1/"+slackToken, "Discord message", 30*time.Second, func(r hookRequest) bool {
			return strings.Contains(str(r.Decoded, "content"), "succeeded")
		})
		if embeds, _ := dc.Decoded["embeds"].([]any); len(embeds) != 1 || !strings.Contains(string(dc.Body), base+"/history/"+runID) {
			t.Fatalf("Discord message: %s", dc.Body)
		}
		msgs := mp.WaitMessages(t, 1, 30*time.Second)
		m := msgs[0]
		if !strings.Contains(m.Subject, "Backup of hourly shop succeeded") || m.To[0] != "alerts@example.com" ||
			!strings.Contains(m.From, "backups@rahatback.test") ||
			!strings.Contains(m.Text, "alerts shop (postgresql)") || !strings.Contains(m.Text, base+"/history/"+runID) ||
			!strings.Contains(m.HTML, "<table") || !strings.Contains(m.HTML, "hourly shop") {
			t.Fatalf("email: subject %q from %q text %q html %q", m.Subject, m.From, m.Text, m.HTML)
		}
	})

	t.Run("BackupFailed", func(t *testing.T) {
		badID := c.createDB(token, "gone", "no_such_database_"+testsupport.RandomString(4))
		var bad struct{ ID string }
		c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": badID, "name": "broken"}), 201).decode(t, &bad)
		run := c.runJob(token, bad.ID)
		c.waitHistory(token, run, 60*time.Second, "failed", func(h historyView) bool { return h.Status == "failed" })
		req := hooks.wait(t, "/hook", "backup.failed webhook", 30*time.Second, eventOf("backup.failed"))
		if str(req.Decoded, "run", "id") != run || !strings.Contains(str(req.Decoded, "error"), "no_such_database") {
			t.Fatalf("failure webhook: %s", req.Body)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			var failed []testsupport.MailpitMessage
			for _, m := range mp.Messages(t) {
				if strings.Contains(m.Subject, "Backup of broken failed") && strings.Contains(m.Text, "no_such_database") {
					failed = append(failed, m)
				}
			}
			if len(failed) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("failure emails: %d", len(failed))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("RPO", func(t *testing.T) {
		c.want(c.call("PATCH", "/v1/backups/jobs/"+job.ID, token, map[string]any{"notificationRules": map[string]any{
			"backupFailed": true, "rpoHours": 1}}), 200)
		// The newest good backup is now two hours old.
		if _, err := pool.Exec(ctx, `UPDATE backup_history SET completed_at = now() - interval '2 hours' WHERE backup_job_id = $1`, job.ID); err != nil {
			t.Fatal(err)
		}
		req := hooks.wait(t, "/hook", "rpo.breached webhook", 30*time.Second, eventOf("rpo.breached"))
		if str(req.Decoded, "job", "id") != job.ID || !strings.Contains(str(req.Decoded, "title"), "for 1 hours") {
			t.Fatalf("RPO alert: %s", req.Body)
		}
		// A new good backup recovers it: a success is not notified (the
		// job's rules say failures only), the recovery is.
		run := c.runJob(token, job.ID)
		c.waitHistory(token, run, 60*time.Second, "succeeded", func(h historyView) bool { return h.Status == "success" })
		hooks.wait(t, "/hook", "rpo.recovered webhook", 30*time.Second, eventOf("rpo.recovered"))
		// Several more checks pass: still one breach and one recovery.
		time.Sleep(1500 * time.Millisecond)
		for _, ev := range []string{"rpo.breached", "rpo.recovered"} {
			if n := len(hooks.requests("/hook", eventOf(ev))); n != 1 {
				t.Fatalf("%d %s webhooks, want 1", n, ev)
			}
		}
		if n := len(hooks.requests("/hook", func(r hookRequest) bool { return str(r.Decoded, "run", "id") == run })); n != 0 {
			t.Fatalf("the job's own rules exclude successes, yet %d webhooks named run %s", n, run)
		}
	})

	t.Run("NoDuplicates", func(t *testing.T) {
		seen := map[string]int{}
		for _, r := range hooks.requests("/hook", nil) {
			seen[str(r.Decoded, "id")]++
		}
		for id, n := range seen {
			if n != 1 && !strings.HasPrefix(id, "test:") {
				t.Fatalf("notification %s delivered %d times", id, n)
			}
		}
		var ch map[string]any
		c.want(c.call("GET", "/v1/notification-channels/"+webhook["id"].(string), token, nil), 200).decode(t, &ch)
		if ch["lastSuccessAt"] == nil || ch["lastError"] != nil {
			t.Fatalf("webhook channel after deliveries: %v", ch)
		}
	})

	// Every other action the audit log records, once each.
	const s3Secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	t.Run("EveryAction", func(t *testing.T) {
		c.want(c.call("POST", "/v1/auth/login", "", map[string]string{"email": "alerts@example.com", "password": "wrong-password-1"}), 401)
		var login struct {
			Tokens struct{ Refresh struct{ Token string } }
		}
		c.want(c.call("POST", "/v1/auth/login", "", map[string]string{"email": "alerts@example.com", "password": "first-user-pw-1"}), 200).decode(t, &login)
		c.want(c.call("POST", "/v1/auth/logout", "", map[string]string{"refreshToken": login.Tokens.Refresh.Token}), 204)

		var enroll struct{ Token string }
		c.want(c.call("POST", "/v1/agents/enrollment-tokens", token, nil), 201).decode(t, &enroll)
		id, err := sealed.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		var agent struct{ AgentID string }
		c.want(c.call("POST", "/v1/agents/enroll", "", map[string]string{"token": enroll.Token, "name": "edge",
			"publicKey": id.Recipient().String()}), 201).decode(t, &agent)
		c.want(c.call("DELETE", "/v1/agents/"+agent.AgentID, token, nil), 204)

		var st struct{ ID string }
		c.want(c.call("POST", "/v1/cloud-storage", token, map[string]any{"name": "aws", "storageType": "s3",
			"s3AccessKeyId": "AKIAIOSFODNN7EXAMPLE", "s3SecretAccessKey": s3Secret, "s3Region": "us-east-1", "s3Bucket": "rb-audit"}), 201).decode(t, &st)
		c.want(c.call("PATCH", "/v1/cloud-storage/"+st.ID, token, map[string]any{"name": "aws 2"}), 200)
		c.want(c.call("DELETE", "/v1/cloud-storage/"+st.ID, token, nil), 204)

		dstName := "alerts restore " + testsupport.RandomString(4)
		scratchDB(t, dstName)
		dst := c.createDB(token, "restore target", dstName)
		c.want(c.call("PATCH", "/v1/databases/"+dst, token, map[string]any{"name": "restore target 2"}), 200)
		var rs struct{ RestoreHistoryID string }
		c.want(c.call("POST", "/v1/backups/history/"+runID+"/restore", token, map[string]any{"targetDatabaseId": dst}), 202).decode(t, &rs)
		c.waitRestore(token, rs.RestoreHistoryID, 60*time.Second)
		c.want(c.call("POST", "/v1/backups/history/"+runID+"/verify", token, map[string]any{"verificationLevel": "BASIC"}), 202)
		c.want(c.call("GET", "/v1/backups/history/"+runID+"/download", token, nil), 200)
		c.want(c.call("GET", "/v1/backups/jobs/"+job.ID+"/encryption-key", token, nil), 404)
		c.want(c.call("PATCH", "/v1/notification-channels/"+discord["id"].(string), token, map[string]any{"name": "discord 2"}), 200)
		c.want(c.call("DELETE", "/v1/notification-channels/"+discord["id"].(string), token, nil), 204)
		c.want(c.call("PUT", "/v1/notification-rules", token, map[string]any{"backupFailed": true, "agentOfflineMinutes": 30}), 200)

		var other struct{ ID string }
		c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": dst, "name": "to delete"}), 201).decode(t, &other)
		run := c.runJob(token, other.ID)
		c.waitHistory(token, run, 60*time.Second, "succeeded", func(h historyView) bool { return h.Status == "success" })
		c.want(c.call("DELETE", "/v1/backups/history/"+run, token, nil), 204)
		c.want(c.call("DELETE", "/v1/backups/jobs/"+other.ID, token, nil), 204)
		c.want(c.call("DELETE", "/v1/databases/"+dst, token, nil), 204)
	})

	t.Run("Audit", func(t *testing.T) {
		type entry struct {
			Action, ObjectType, ObjectID, IP, Outcome, Detail string
			StatusCode                                        int
		}
		var list struct {
			Results      []entry
			TotalResults int
		}
		want := []string{"auth.register", "auth.login", "auth.logout", "agent.enrollment_token", "agent.enroll", "agent.revoke",
			"database.create", "database.update", "database.delete", "storage.create", "storage.update", "storage.delete",
			"job.create", "job.update", "job.delete", "channel.create", "channel.update", "channel.delete", "channel.test",
			"rules.update", "backup.run", "backup.restore", "backup.verify", "backup.download", "backup.delete", "job.key_export"}
		deadline := time.Now().Add(30 * time.Second)
		for {
			c.want(c.call("GET", "/v1/audit?limit=100", token, nil), 200).decode(t, &list)
			got := map[string]bool{}
			for _, e := range list.Results {
				got[e.Action] = true
			}
			missing := ""
			for _, a := range want {
				if !got[a] {
					missing = a
				}
			}
			if missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("audit log lacks %s: %+v", missing, list.Results)
			}
			time.Sleep(200 * time.Millisecond)
		}
		var refused, created, badLogins int
		for _, e := range list.Results {
			if e.Action == "auth.login" && e.Outcome == "failure" && e.StatusCode == 401 {
				badLogins++
			}
			if e.IP != "127.0.0.1" {
				t.Fatalf("entry without the client's IP: %+v", e)
			}
			if e.Action == "channel.create" && e.Outcome == "failure" && e.StatusCode == 400 && strings.Contains(e.Detail, "url: ") {
				refused++
			}
			if e.Action == "channel.create" && e.Outcome == "success" && e.ObjectID != "" {
				created++
			}
		}
		if badLogins != 1 {
			t.Fatalf("failed logins recorded: %d, want 1", badLogins)
		}
		if refused != 6 || created != 3 {
			t.Fatalf("channel.create entries: %d refused (want 6), %d created (want 3)", refused, created)
		}
		c.want(c.call("GET", "/v1/audit?action=channel.&outcome=success", token, nil), 200).decode(t, &list)
		for _, e := range list.Results {
			if !strings.HasPrefix(e.Action, "channel.") || e.Outcome != "success" {
				t.Fatalf("filtered entry %+v", e)
			}
		}
		c.want(c.call("GET", "/v1/audit?from=nonsense", token, nil), 400)
		other := c.register("other-auditor@example.com")
		c.want(c.call("GET", "/v1/audit?action=channel.create", other, nil), 200).decode(t, &list)
		if list.TotalResults != 0 {
			t.Fatalf("another user sees %d channel.create entries", list.TotalResults)
		}
		c.want(c.call("GET", "/v1/notification-channels/"+webhook["id"].(string), other, nil), 404)
	})

	t.Run("SecretsAtRest", func(t *testing.T) {
		for _, q := range []string{`SELECT row_to_json(c)::text FROM notification_channels c`,
			`SELECT row_to_json(a)::text FROM audit_log a`, `SELECT row_to_json(d)::text FROM notification_deliveries d`} {
			rows, err := pool.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				if strings.Contains(s, hookSecret) || strings.Contains(s, slackToken) || strings.Contains(s, s3Secret) ||
					strings.Contains(s, "first-user-pw-1") || strings.Contains(s, "wrong-password-1") {
					t.Fatalf("plaintext secret in %q: %s", q, s)
				}
			}
			rows.Close()
		}
		_ = filepath.WalkDir(filepath.Join(dataDir, "nats"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), hookSecret) || strings.Contains(string(b), slackToken) {
				t.Fatalf("plaintext secret in the broker's store: %s", p)
			}
			return nil
		})
	})

	t.Run("Metrics", func(t *testing.T) {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/metrics without the token: %d", resp.StatusCode)
		}
		fams := scrape(t, base+"/metrics", metricsToken)
		var successes, failures int
		var lastDone time.Time
		var hist []historyView
		var l struct{ Results []historyView }
		c.want(c.call("GET", "/v1/backups/history?limit=100", token, nil), 200).decode(t, &l)
		hist = l.Results
		for _, h := range hist {
			switch h.Status {
			case "success":
				successes++
				if h.BackupJobID == job.ID && h.CompletedAt != nil && h.CompletedAt.After(lastDone) {
					lastDone = *h.CompletedAt
				}
			case "failed":
				failures++
			}
		}
		if v := gauge(t, fams, "rahatback_backups", map[string]string{"engine": "postgresql", "status": "success"}); int(v) != successes {
			t.Fatalf("rahatback_backups success = %v, history has %d", v, successes)
		}
		if v := gauge(t, fams, "rahatback_backups", map[string]string{"engine": "postgresql", "status": "failed"}); int(v) != failures || failures != 1 {
			t.Fatalf("rahatback_backups failed = %v, history has %d", v, failures)
		}
		hd := metric(t, fams, "rahatback_backup_duration_seconds", map[string]string{"engine": "postgresql"}).GetHistogram()
		hs := metric(t, fams, "rahatback_backup_size_bytes", map[string]string{"engine": "postgresql"}).GetHistogram()
		if int(hd.GetSampleCount()) != successes || int(hs.GetSampleCount()) != successes || hs.GetSampleSum() <= 0 {
			t.Fatalf("histograms: durations %v, sizes %v, want %d samples", hd, hs, successes)
		}
		last := gauge(t, fams, "rahatback_job_last_success_timestamp_seconds", map[string]string{"job_id": job.ID, "job": "hourly shop"})
		if d := last - float64(lastDone.UnixMilli())/1000; d < -1 || d > 1 {
			t.Fatalf("last success %v, history says %v", last, lastDone)
		}
		if v := gauge(t, fams, "rahatback_agents", map[string]string{"state": "online"}); v != 1 {
			t.Fatalf("agents online %v", v)
		}
		metric(t, fams, "rahatback_agent_commands_waiting", nil)
		metric(t, fams, "rahatback_consumer_pending_events", map[string]string{"consumer": "projector"})
		metric(t, fams, "rahatback_consumer_pending_events", map[string]string{"consumer": "notifier"})
		if v := gauge(t, fams, "rahatback_notification_deliveries", map[string]string{"type": "webhook", "status": "sent"}); v < 4 {
			t.Fatalf("webhook deliveries sent: %v", v)
		}
		if v := metric(t, fams, "rahatback_notification_attempts_total", map[string]string{"type": "email", "outcome": "sent"}).GetCounter().GetValue(); v < 2 {
			t.Fatalf("email attempts sent: %v", v)
		}
	})
}

func jsonNumber(n int64) string {
	b, _ := json.Marshal(float64(n))
	return string(b)
}

// checkSignature checks a generic webhook's HMAC-SHA256 signature and
// that its timestamp header is the body's sentAt.
func checkSignature(t *testing.T, r hookRequest, secret string) {
	t.Helper()
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(r.Body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if got := r.Header.Get("X-RahatBack-Signature"); !hmac.Equal([]byte(got), []byte(want)) {
		t.Fatalf("signature %q, want %q", got, want)
	}
	sent, err := time.Parse(time.RFC3339, str(r.Decoded, "sentAt"))
	if err != nil || r.Header.Get("X-RahatBack-Timestamp") != jsonNumber(sent.Unix()) || time.Since(sent) > time.Minute {
		t.Fatalf("timestamp header %q, body sentAt %q", r.Header.Get("X-RahatBack-Timestamp"), str(r.Decoded, "sentAt"))
	}
}

// scrape reads url with the bearer token and parses the text format.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metric is the sample of family name whose labels include want.
func metric(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no %s with labels %v", name, want)
	return nil
}

func gauge(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	return metric(t, fams, name, want).GetGauge().GetValue()
}

// TestMetricsOwnAddress: with --metrics-listen, /metrics is served there
// without a token, and not on the API's address; an SMTP password in a
// flag (visible in the process list) is refused.
func TestMetricsOwnAddress(t *testing.T) {
	t.Parallel() // see TestAgentKilledMidVerifyAndRestore
	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--metrics-listen", metricsAddr}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("metrics@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	fams := scrape(t, "http://"+metricsAddr+"/metrics", "")
	if v := gauge(t, fams, "rahatback_agents", map[string]string{"state": "online"}); v != 1 {
		t.Fatalf("agents online: %v", v)
	}
	if fams["go_goroutines"] == nil || fams["process_resident_memory_bytes"] == nil {
		t.Fatal("no runtime or process metrics")
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "rahatback_agents") {
		t.Fatal("metrics served on the API's address too")
	}

	err = controlplane.Run(context.Background(), []string{"migrate", "--database-url", dbURL, "--data-dir", t.TempDir(),
		"--smtp-url", "smtp://u:hunter2@mail.example:587", "--smtp-from", "rb@example.com"},
		func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "RAHATBACK_SMTP_URL") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("a password in --smtp-url: %v", err)
	}
}
