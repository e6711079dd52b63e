package controlplane_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/rahatback/rahatback/testsupport"
)

// webhookSink is a local webhook endpoint that keeps every request.
type webhookSink struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []sinkRequest
}

type sinkRequest struct {
	Method, Path string
	Header       http.Header
	Body         []byte
	Event        string // the body's "event"
}

func newWebhookSink(t *testing.T) *webhookSink {
	s := &webhookSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct{ Event string }
		_ = json.Unmarshal(body, &m)
		s.mu.Lock()
		s.reqs = append(s.reqs, sinkRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body, Event: m.Event})
		s.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}

// wait returns the n-th (from 1) request to path with event, polling until
// within has passed.
func (s *webhookSink) wait(t *testing.T, path, event string, n int, within time.Duration) sinkRequest {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s.mu.Lock()
		var got []sinkRequest
		for _, r := range s.reqs {
			if r.Path == path && r.Event == event {
				got = append(got, r)
			}
		}
		total := len(s.reqs)
		s.mu.Unlock()
		if len(got) >= n {
			return got[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d %q requests on %s within %s (%d requests in all)", n, event, path, within, total)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantSigned checks a generic webhook's X-RahatBack-Signature.
func wantSigned(t *testing.T, r sinkRequest, secret string) {
	t.Helper()
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(r.Body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if r.Method != http.MethodPost || r.Header.Get("X-RahatBack-Signature") != want {
		t.Fatalf("%s with signature %q, want POST with %q; body %s", r.Method, r.Header.Get("X-RahatBack-Signature"), want, r.Body)
	}
}

// reloadUntil opens path again and again until cond holds on it: for what
// the dashboard shows of an asynchronous projection.
func (p *page) reloadUntil(what, path, cond string, within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		p.open(path)
		var ok bool
		if err := p.tryEval("!!("+cond+")", &ok, 20*time.Second); err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.shot("TIMEOUT-" + what)
			p.t.Fatalf("%s: not within %s\n%s", what, within, p.bodyText())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestWebNotify drives the notification, audit and backup-run pages in
// Chromium: a signed webhook channel added, tested and edited; a metadata
// URL refused on its field; default and per-job rules saved; the audit
// log of all that; and the page of one backup run, which notifications
// link to.
func TestWebNotify(t *testing.T) {
	t.Parallel() // see TestAgentKilledMidVerifyAndRestore
	chromiumPath(t)
	ctx := context.Background()
	dbURL, _ := testsupport.NewDatabase(t)
	sink := newWebhookSink(t)
	srcName := "notify_src_" + testsupport.RandomString(4)
	src := scratchDB(t, srcName)
	if _, err := src.Exec(ctx, `CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g`); err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--allow-endpoint", endpointHost(t, sink.URL)}, nil, base)
	defer sys.stop(t)

	const email, secret = "notify@example.com", "whsec-browser-0123456789"
	p := newPage(t, base, 1280, 900)
	p.signUp(email)
	c := client{t, base}
	var login struct {
		Tokens struct {
			Access struct{ Token string } `json:"access"`
		} `json:"tokens"`
	}
	c.want(c.call("POST", "/v1/auth/login", "", map[string]string{"email": email, "password": "browser-pw-1"}), 200).decode(t, &login)
	token := login.Tokens.Access.Token

	// rowID is the id of the channel row that names name.
	rowID := func(name string) string {
		t.Helper()
		var id string
		p.evalWhen("row "+name, fmt.Sprintf(`[...document.querySelectorAll('[data-channel]')].some(r => r.querySelector('td').textContent === %q)`, name),
			fmt.Sprintf(`[...document.querySelectorAll('[data-channel]')].find(r => r.querySelector('td').textContent === %q).dataset.channel`, name), &id, 20*time.Second)
		return id
	}

	// Channels. (No subtests: the browser belongs to this test.)
	p.open("/channels")
	// A new user has an email channel to their own address.
	p.waitJS("email channel listed", fmt.Sprintf(`document.querySelector('[data-channel] td.target')?.textContent === %q`, email), 20*time.Second)
	// The form shows each type's fields.
	p.fill(map[string]string{"#ch-type": "slack"})
	var shown string
	fields := `['#ch-address', '#ch-url', '#ch-secret'].map(s => !document.querySelector(s).closest('.field').hidden).join()`
	p.read(fields, &shown)
	if shown != "false,true,false" {
		t.Fatalf("slack shows address, url, secret: %s", shown)
	}
	p.fill(map[string]string{"#ch-type": "webhook"})
	p.read(fields, &shown)
	if shown != "false,true,true" {
		t.Fatalf("webhook shows address, url, secret: %s", shown)
	}
	p.shot("channel-form")

	// A metadata address is refused on the URL field; the page stays.
	p.fill(map[string]string{"#ch-name": "metadata", "#ch-url": "http://169.254.169.254/", "#ch-secret": secret})
	p.run("add metadata hook", chromedp.Click(chromedp.CSS(`form[data-channel-form] button[type="submit"]`)))
	p.waitJS("url error", `document.querySelector('[data-error-for="url"]').textContent.includes('metadata address')
		&& document.querySelector('#ch-url').getAttribute('aria-invalid') === 'true'`, 20*time.Second)
	p.shot("channel-url-refused")
	// A short secret is flagged on its own field.
	p.fill(map[string]string{"#ch-name": "ops hook", "#ch-url": sink.URL + "/hook?k=v", "#ch-secret": "short"})
	p.run("add short secret", chromedp.Click(chromedp.CSS(`form[data-channel-form] button[type="submit"]`)))
	p.waitJS("secret error", `document.querySelector('[data-error-for="secret"]').textContent.includes('at least 16')
		&& document.querySelector('[data-error-for="url"]').textContent === ''`, 20*time.Second)
	p.fill(map[string]string{"#ch-secret": secret})
	p.run("add hook", chromedp.Click(chromedp.CSS(`form[data-channel-form] button[type="submit"]`)))
	p.waitJS("hook listed", `location.pathname === '/channels' && [...document.querySelectorAll('[data-channel]')].some(r => r.innerText.includes('ops hook'))`, 20*time.Second)
	hookID := rowID("ops hook")
	var target string
	p.read(`document.querySelector('[data-channel="`+hookID+`"] td.target').textContent`, &target)
	if want := sink.URL + "/…"; !strings.HasPrefix(target, want) || strings.Contains(target, "k=v") {
		t.Fatalf("the hook's target shows %q, want %s and not its path", target, want)
	}

	// Send test: the result inline, the last success in its row, and
	// a POST signed with the secret.
	p.run("send test", chromedp.Click(chromedp.CSS(`[data-test-channel="`+hookID+`"]`)))
	p.waitJS("test sent", `document.querySelector('[data-test-result="`+hookID+`"].ok')?.textContent.includes('sent')
		&& document.querySelector('[data-channel="`+hookID+`"] [data-last-success] time')`, 40*time.Second)
	p.shot("channel-tested")
	wantSigned(t, sink.wait(t, "/hook", "test", 1, 20*time.Second), secret)

	// The email channel fails its test here (no SMTP server): the
	// reason is shown inline and in its row.
	mailID := rowID("My email")
	p.run("test email", chromedp.Click(chromedp.CSS(`[data-test-channel="`+mailID+`"]`)))
	p.waitJS("email test failed", `document.querySelector('[data-test-result="`+mailID+`"].bad')?.textContent.startsWith('✗ ')
		&& document.querySelector('[data-channel="`+mailID+`"] [data-last-error] .error')`, 40*time.Second)

	// Edit: a new name; URL and secret left empty keep theirs.
	p.run("edit hook", chromedp.Click(chromedp.CSS(`[data-channel="`+hookID+`"] a[href$="/edit"]`)))
	p.waitJS("edit form", `location.pathname.endsWith('/edit') && document.querySelector('#ch-name')?.value === 'ops hook'
		&& document.querySelector('#ch-type').disabled && document.querySelector('#ch-url').value === ''`, 20*time.Second)
	p.fill(map[string]string{"#ch-name": "ops hook renamed"})
	p.run("save hook", chromedp.Click(chromedp.CSS(`form[data-channel-form] button[type="submit"]`)))
	p.waitJS("renamed", `location.pathname === '/channels' && document.body.innerText.includes('ops hook renamed')`, 20*time.Second)
	p.run("send test again", chromedp.Click(chromedp.CSS(`[data-test-channel="`+hookID+`"]`)))
	p.waitJS("test sent again", `document.querySelector('[data-test-result="`+hookID+`"].ok')`, 40*time.Second)
	wantSigned(t, sink.wait(t, "/hook", "test", 2, 20*time.Second), secret)

	// Disable, then delete the email channel after a confirmation
	// that names it.
	p.run("disable email", chromedp.Click(chromedp.CSS(`[data-channel="`+mailID+`"] [data-body*="enabled"]`)))
	p.waitJS("disabled", `document.readyState === 'complete' && document.querySelector('[data-channel="`+mailID+`"] .badge.offline')`, 20*time.Second)
	p.run("delete email", chromedp.Click(chromedp.CSS(`[data-channel="`+mailID+`"] button.danger`)), chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog`)))
	var confirm string
	p.read(`document.querySelector('#confirm-dialog .confirm-text').textContent`, &confirm)
	if !strings.Contains(confirm, "“My email”") {
		t.Fatalf("delete confirmation %q does not name the channel", confirm)
	}
	p.run("confirm delete", chromedp.Click(chromedp.CSS(`#confirm-dialog .confirm-ok`)))
	p.waitJS("email gone", `document.readyState === 'complete' && location.pathname === '/channels'
		&& !document.querySelector('[data-channel="`+mailID+`"]') && document.querySelector('[data-channel="`+hookID+`"]')`, 20*time.Second)
	p.shot("channels")

	// Default rules: a bad number is flagged on its field; saved rules
	// are what the API answers.
	p.open("/channels")
	p.fill(map[string]string{"#rules-rpo": "-1"})
	p.run("save bad rules", chromedp.Click(chromedp.CSS(`form[data-rules-form] button[type="submit"]`)))
	p.waitJS("rpo error", `document.querySelector('[data-error-for="rpoHours"]').textContent.includes('must be 0-')`, 20*time.Second)
	p.fill(map[string]string{"#rules-rpo": "6", "#rules-offline": ""})
	p.eval(`(document.querySelector('#rules-skipped').checked = false, document.querySelector('#rules-restore').checked = true)`, nil)
	p.run("save rules", chromedp.Click(chromedp.CSS(`form[data-rules-form] button[type="submit"]`)))
	p.waitJS("rules saved", `document.readyState === 'complete' && location.search.includes('saved=rules') && document.querySelector('.notice')?.textContent.includes('saved')
		&& document.querySelector('#rules-rpo').value === '6' && !document.querySelector('#rules-skipped').checked`, 20*time.Second)
	p.shot("rules-saved")
	var rules map[string]any
	c.want(c.call("GET", "/v1/notification-rules", token, nil), 200).decode(t, &rules)
	if want := map[string]any{"backupFailed": true, "backupSkipped": false, "backupSucceeded": true, "verificationFailed": true,
		"restoreFinished": true, "rpoHours": float64(6)}; fmt.Sprint(rules) != fmt.Sprint(want) {
		t.Fatalf("GET /v1/notification-rules: %v, want %v", rules, want)
	}

	// A job's own rules: they start from the defaults, a bad number is
	// flagged, they are saved as the job's; then back to the defaults.
	dbID := c.createDB(token, "notify shop", srcName)
	p.open("/jobs/new")
	p.waitJS("defaults used", `document.querySelector('#job-notify-default').checked && document.querySelector('[data-notify-own]').hidden
		&& document.querySelector('[data-notify-defaults]').textContent.includes('no good backup for 6 h')`, 20*time.Second)
	p.fill(map[string]string{"#job-name": "notify job", "#job-db": dbID})
	p.run("own rules", chromedp.Click(chromedp.CSS(`#job-notify-default`)))
	p.waitJS("own rules shown", `!document.querySelector('[data-notify-own]').hidden
		&& document.querySelector('#job-notify-rpo').value === '6' && !document.querySelector('#job-notify-skipped').checked`, 20*time.Second)
	p.fill(map[string]string{"#job-notify-rpo": "-5"})
	p.run("create bad", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
	p.waitJS("job rpo error", `document.querySelector('[data-error-for="notificationRules.rpoHours"]').textContent.includes('must be 0-')`, 20*time.Second)
	p.shot("job-rules-error")
	p.fill(map[string]string{"#job-notify-rpo": "12"})
	p.run("skipped too", chromedp.Click(chromedp.CSS(`#job-notify-skipped`)))
	p.run("create job", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
	p.waitJS("job listed", `location.pathname === '/jobs' && document.body.innerText.includes('notify job')`, 20*time.Second)
	var jobs struct {
		Results []struct {
			ID                string
			NotificationRules map[string]any
		}
	}
	c.want(c.call("GET", "/v1/backups/jobs", token, nil), 200).decode(t, &jobs)
	if len(jobs.Results) != 1 {
		t.Fatalf("jobs: %+v", jobs)
	}
	jobID := jobs.Results[0].ID
	if got, want := jobs.Results[0].NotificationRules, (map[string]any{"backupFailed": true, "backupSkipped": true, "backupSucceeded": true,
		"verificationFailed": true, "restoreFinished": true, "rpoHours": float64(12)}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the job's rules: %v, want %v", got, want)
	}
	p.open("/jobs/" + jobID)
	p.waitJS("job page rules", `document.querySelector('[data-job-notify]').textContent.includes('no good backup for 12 h')`, 20*time.Second)
	p.open("/jobs/" + jobID + "/edit")
	p.waitJS("own rules in the form", `!document.querySelector('#job-notify-default').checked && document.querySelector('#job-notify-rpo').value === '12'`, 20*time.Second)
	p.run("use defaults", chromedp.Click(chromedp.CSS(`#job-notify-default`)))
	p.run("save job", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
	p.waitJS("saved", `location.pathname === '/jobs'`, 20*time.Second)
	var job map[string]any
	c.want(c.call("GET", "/v1/backups/jobs/"+jobID, token, nil), 200).decode(t, &job)
	if v, ok := job["notificationRules"]; !ok || v != nil {
		t.Fatalf("after choosing the defaults, notificationRules = %v (present %v), want null", v, ok)
	}

	// One backup run: the history links to its page, which shows its
	// facts and the tables of its manifest; the webhook's notification
	// links to it.
	c.waitAgents(token, 30*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	runID := c.runJob(token, jobID)
	h := c.waitHistory(token, runID, 90*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		t.Fatalf("backup %s: %s", h.Status, h.ErrorMessage)
	}
	p.open("/history")
	p.run("open run", chromedp.Click(chromedp.CSS(`[data-history="`+runID+`"] a[href="/history/`+runID+`"]`)))
	p.waitJS("run page", `location.pathname === '/history/`+runID+`' && document.querySelector('#run-detail [data-run-status]')?.textContent === 'success'`, 20*time.Second)
	var facts string
	p.read(`document.querySelector('#run-detail').innerText`, &facts)
	for _, want := range []string{"Backup of notify job", "notify shop", h.FileName, "public.items", "2000", "local"} {
		if !strings.Contains(facts, want) {
			t.Errorf("the run page lacks %q:\n%s", want, facts)
		}
	}
	p.shot("run-page")
	req := sink.wait(t, "/hook", "backup.succeeded", 1, 30*time.Second)
	wantSigned(t, req, secret)
	if !strings.Contains(string(req.Body), base+"/history/"+runID) {
		t.Errorf("the notification does not link to the run page: %s", req.Body)
	}
	// Signed out, the link goes through the sign-in and back.
	q := newPage(t, base, 1024, 800)
	q.open("/history/" + runID)
	if loc := mustLocation(q); !strings.Contains(loc, "/login?next=%2Fhistory%2F"+runID) {
		t.Fatalf("signed out, the run page went to %s", loc)
	}
	q.run("sign in", chromedp.SendKeys(chromedp.CSS(`#email`), email), chromedp.SendKeys(chromedp.CSS(`#password`), "browser-pw-1"),
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)))
	q.waitJS("back on the run page", `location.pathname === '/history/`+runID+`' && document.querySelector('#run-detail [data-run-status]')`, 20*time.Second)
	// Another run, or none: not found, not an error.
	for _, id := range []string{uuid.NewString(), "not-a-uuid"} {
		p.open("/history/" + id)
		var h1, msg string
		p.read(`document.querySelector('h1').textContent`, &h1)
		p.read(`document.querySelector('main .error').textContent`, &msg)
		if h1 != "Not Found" || !strings.Contains(msg, "not found") {
			t.Fatalf("/history/%s shows %q: %q", id, h1, msg)
		}
	}
	p.shot("run-not-found")

	// The audit log: the audit consumer fills it a moment after each
	// request.
	p.reloadUntil("audit entries", "/audit", `['channel.create', 'channel.test', 'channel.update', 'channel.delete', 'rules.update', 'job.create', 'backup.run']
		.every(a => document.querySelector('[data-audit-action="' + a + '"]'))`, 30*time.Second)
	p.shot("audit")
	// Each row: its time, action, object (linked), outcome, status, IP.
	p.reloadUntil("channel.test row", "/audit?action=channel.test", `document.querySelector('[data-audit-action="channel.test"]')`, 20*time.Second)
	var row []string
	p.read(`[...document.querySelector('[data-audit-action="channel.test"]').cells].map(c => c.innerText.trim())`, &row)
	if len(row) != 7 || row[1] != "channel.test" || row[2] != "channel "+hookID || row[3] != "success" || row[4] != "200" || row[5] != "127.0.0.1" {
		t.Fatalf("channel.test row: %q", row)
	}
	// Filtered by a prefix and an outcome: the two refused channels,
	// with their status and reason.
	p.fill(map[string]string{"#a-action": "channel.", "#a-outcome": "failure"})
	p.run("filter", chromedp.Click(chromedp.CSS(`form[data-date-filter] button[type="submit"]`)))
	failures := `[...document.querySelectorAll('[data-audit]')].filter(r => r.dataset.outcome === 'failure' && r.dataset.auditAction.startsWith('channel.'))`
	refused := `[...document.querySelectorAll('[data-audit-action="channel.create"]')]`
	p.waitJS("filtered", `location.search.includes('action=channel.') && location.search.includes('outcome=failure') && !location.search.includes('fromDate')
		&& document.querySelectorAll('[data-audit]').length > 0 && `+failures+`.length === document.querySelectorAll('[data-audit]').length
		&& `+refused+`.length === 2 && `+refused+`.every(r => r.cells[4].innerText === '400')
		&& `+refused+`.some(r => r.cells[6].innerText.includes('metadata address'))`, 20*time.Second)
	var filtered int
	p.read(`document.querySelectorAll('[data-audit]').length`, &filtered)
	// Today, the browser's own day: the same entries.
	p.eval(`(() => { const d = new Date(), z = n => String(n).padStart(2, '0');
		const today = d.getFullYear() + '-' + z(d.getMonth() + 1) + '-' + z(d.getDate());
		document.querySelector('#a-from').value = today; document.querySelector('#a-to').value = today; return true })()`, nil)
	p.run("filter today", chromedp.Click(chromedp.CSS(`form[data-date-filter] button[type="submit"]`)))
	p.waitJS("today", `document.readyState === 'complete' && location.search.includes('from=') && location.search.includes('fromDate=') && document.querySelectorAll('[data-audit]').length === `+fmt.Sprint(filtered), 20*time.Second)
	p.shot("audit-filtered")
	// Page links, once there are more than 25 entries.
	for range 12 {
		c.want(c.call("PUT", "/v1/notification-rules", token, rules), 200)
	}
	p.reloadUntil("two pages", "/audit", `document.querySelector('.pager a[rel="next"]')`, 30*time.Second)
	p.run("next page", chromedp.Click(chromedp.CSS(`.pager a[rel="next"]`)))
	p.waitJS("page 2", `location.search.includes('page=2') && document.querySelector('.pager a[rel="prev"]') && document.querySelectorAll('[data-audit]').length > 0`, 20*time.Second)
}
