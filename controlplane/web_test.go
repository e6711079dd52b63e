package controlplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/drivefake"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/mariadbserver"
	"github.com/rahatback/rahatback/testsupport"
)

// chromiumPath finds Debian's Chromium (scripts/deps.sh installs it). The
// browser tests are skipped without one, unless RAHATBACK_BROWSER_TESTS is
// "required" (scripts/test sets it): then they fail.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("RAHATBACK_BROWSER_TESTS") == "required" {
		t.Fatal("no Chromium on PATH (scripts/deps.sh ensure_chromium installs Debian's chromium)")
	}
	t.Skip("no Chromium on PATH; scripts/test installs Debian's chromium")
	return ""
}

// screenshotDir is where each step's screenshot goes: $RAHATBACK_SCREENSHOTS
// (created), else a temporary directory. The pages of one test share it;
// a test run again (-count) has a directory of its own.
func screenshotDir(t *testing.T) string {
	if d, ok := shotDirs.Load(t); ok {
		return d.(string)
	}
	d := screenshotDirFor(t)
	shotDirs.Store(t, d)
	t.Cleanup(func() { shotDirs.Delete(t) })
	return d
}

var shotDirs sync.Map

func screenshotDirFor(t *testing.T) string {
	if d := os.Getenv("RAHATBACK_SCREENSHOTS"); d != "" {
		d = filepath.Join(d, t.Name())
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// browserZone is the time zone the browser runs in: not the server's UTC.
const browserZone = "Asia/Tokyo"

// page is one headless Chromium with a fresh profile, driven by chromedp.
type page struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
	n     int
}

// newPage starts Chromium with the flags this machine needs (its network
// is closed: no background or component traffic) and a new profile.
func newPage(t *testing.T, base string, width, height int) *page {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	// Times must show in the browser's zone, whatever the server's.
	if _, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: browserZone}); err != nil {
		t.Fatal(err)
	}
	p := &page{t: t, ctx: ctx, base: base, shots: screenshotDir(t)}
	// Any uncaught exception in the dashboard's script fails the test.
	var mu sync.Mutex
	var thrown []string
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			mu.Lock()
			thrown = append(thrown, fmt.Sprintf("%s (%s:%d)", msg, d.URL, d.LineNumber))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range thrown {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return p
}

// run runs actions with a deadline, failing the test with a screenshot.
func (p *page) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.shot("FAILED-" + what)
		loc, _ := chromedp.Run(p.ctx, chromedp.Location())
		p.t.Fatalf("%s: %v\nat %s\n%s", what, err, loc, p.bodyText())
	}
}

// shot saves a full-page screenshot named after the step.
func (p *page) shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p.n++
	path := filepath.Join(p.shots, fmt.Sprintf("%02d-%s.png", p.n, name))
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression (awaited when it is a promise)
// and decodes its JSON value into out, unless out is nil. A script
// exception fails the test at once: use waitJS or evalWhen for anything a
// navigation may still be replacing.
func (p *page) eval(expr string, out any) {
	p.t.Helper()
	if err := p.tryEval(expr, out, 60*time.Second); err != nil {
		p.shot("FAILED-eval")
		p.t.Fatalf("eval %s: %v", expr, err)
	}
}

// tryEval is eval returning its error (a script exception, a document
// replaced mid-evaluation, an undecodable value) instead of failing.
func (p *page) tryEval(expr string, out any, within time.Duration) error {
	ctx, cancel := context.WithTimeout(p.ctx, within)
	defer cancel()
	js := "(async () => JSON.stringify(await (" + expr + ")) ?? 'null')()"
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, func(e *runtime.EvaluateParams) { e.AwaitPromise = new(true) }))
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal([]byte(v), out); err != nil {
			return fmt.Errorf("%s: %w", v, err)
		}
	}
	return nil
}

// bodyText is the start of the page's text for a failure message, or what
// prevented reading it.
func (p *page) bodyText() string {
	var body string
	if err := p.tryEval(`document.body ? document.body.innerText.slice(0, 3000) : '(no body)'`, &body, 10*time.Second); err != nil {
		return "(page text unavailable: " + err.Error() + ")"
	}
	return body
}

// waitJS polls a JavaScript condition until it holds. While a page
// navigates, document.body or an element is briefly missing and the
// condition throws: an exception means "not yet", and the last one is
// reported if the deadline passes.
func (p *page) waitJS(what, cond string, within time.Duration) {
	p.t.Helper()
	p.evalWhen(what, cond, "", nil, within)
}

// evalWhen waits until cond holds (as waitJS), then evaluates expr into
// out, unless expr is empty; either throwing (a navigation is replacing
// the page) means "not yet". For reading or setting what a page shows
// right after it changed; expr must be safe to run again.
func (p *page) evalWhen(what, cond, expr string, out any, within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for {
		var ok bool
		err := p.tryEval("!!("+cond+")", &ok, 10*time.Second)
		if err == nil && ok {
			if expr == "" {
				return
			}
			if err = p.tryEval(expr, out, 10*time.Second); err == nil {
				return
			}
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			p.shot("TIMEOUT-" + what)
			last := "none"
			if lastErr != nil {
				last = lastErr.Error()
			}
			p.t.Fatalf("%s: not within %s (last script exception: %s)\n%s", what, within, last, p.bodyText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// read evaluates an expression without side effects into out, retrying
// while it throws (an element being re-rendered or a page being replaced)
// for up to 20 s.
func (p *page) read(expr string, out any) {
	p.t.Helper()
	p.evalWhen("read "+expr, "true", expr, out, 20*time.Second)
}

// open navigates to a dashboard path and waits for its script to be ready.
func (p *page) open(path string) {
	p.t.Helper()
	p.run("open "+path, chromedp.Navigate(p.base+path), chromedp.WaitReady(`html[data-ready="true"]`))
}

func (p *page) signUp(email string) {
	p.t.Helper()
	p.open("/register")
	p.run("register "+email,
		chromedp.SendKeys(chromedp.CSS(`#email`), email),
		chromedp.SendKeys(chromedp.CSS(`#password`), "browser-pw-1"),
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`body h1`)),
	)
	p.waitJS("signed in as "+email, fmt.Sprintf(`document.querySelector('.who')?.textContent === %q`, email), 10*time.Second)
}

// fill sets form fields by selector, each firing input and change; selects
// are set by value. It retries until every field is on the page and has
// taken its value (a select whose options are still loading has not).
func (p *page) fill(fields map[string]string) {
	p.t.Helper()
	b, _ := json.Marshal(fields)
	p.waitJS("fill "+string(b), `Object.entries(`+string(b)+`).map(([sel, v]) => { const el = document.querySelector(sel);
		if (!el) return false;
		el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); return el.value === v })
		.every(Boolean)`, 20*time.Second)
}

func pgCredentials(t *testing.T) (user, password string) {
	u, err := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	return u.User, u.Password
}

// TestWebDashboard drives the dashboard in real Chromium against `rahatback
// up`: a new user's whole first backup, inline validation errors, and
// another user's pages.
func TestWebDashboard(t *testing.T) {
	chromiumPath(t)
	ctx := context.Background()
	dbURL, _ := testsupport.NewDatabase(t)
	suffix := testsupport.RandomString(4)
	srcName, dstName := "web_src_"+suffix, "web_dst_"+suffix
	src := scratchDB(t, srcName)
	dst := scratchDB(t, dstName)
	_, err := src.Exec(ctx, `
		CREATE TABLE customers (id bigint PRIMARY KEY, name text, note text);
		INSERT INTO customers SELECT g, 'customer ' || g, md5(g::text) FROM generate_series(1, 1200000) g;
		CREATE TABLE orders (id serial PRIMARY KEY, customer bigint, total numeric(10,2));
		INSERT INTO orders (customer, total) SELECT g % 1000, g * 0.5 FROM generate_series(1, 20000) g;`)
	if err != nil {
		t.Fatal(err)
	}
	want := digest(t, src)

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	drive := drivefake.New(drivefake.Options{})
	defer drive.Close()
	closedStorage := freeAddr(t) // an allowed storage endpoint nothing listens on
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--allow-endpoint", closedStorage,
		"--google-client-id", drive.ClientID(), "--google-auth-url", drive.AuthURL(), "--google-token-url", drive.TokenURL(),
		"--google-drive-endpoint", drive.APIEndpoint()}, map[string]string{"RAHATBACK_GOOGLE_CLIENT_SECRET": drive.ClientSecret()}, base)
	defer sys.stop(t)
	pgUser, pgPassword := pgCredentials(t)
	pgPort := fmt.Sprint(testsupport.Cluster().Port())

	t.Run("NewUser", func(t *testing.T) {
		p := newPage(t, base, 1280, 900)
		p.signUp("first@example.com")
		p.open("/agents")
		p.waitJS("local agent online", `document.querySelector('[data-agent] [data-agent-status]')?.textContent === 'online'`, 30*time.Second)
		p.shot("agents-online")

		p.run("connect an agent", chromedp.Click(chromedp.CSS(`[data-enroll]`)))
		p.waitJS("enroll command", `document.querySelector('#enroll-command').textContent.includes('rahatback-agent enroll --server')`, 10*time.Second)
		p.shot("enroll-command")

		// Add the source database: the port follows the type, the test
		// shows the server version.
		p.open("/databases/new")
		var port string
		// MongoDB: its port, and its own fields (authentication database,
		// replica set, TLS), which the other types hide.
		mongoFields := `[document.querySelector('#db-port').value, ...['#db-authsource', '#db-replicaset', '#db-tls'].map((s) => document.querySelector(s).closest('.field').hidden)].join()`
		p.fill(map[string]string{`#db-type`: "mongodb"})
		p.eval(`(document.querySelector('#db-type').dispatchEvent(new Event('change')), `+mongoFields+`)`, &port)
		if port != "27017,false,false,false" {
			t.Fatalf("after choosing mongodb: port and hidden fields %q, want 27017 and MongoDB's fields shown", port)
		}
		p.fill(map[string]string{`#db-type`: "mysql"})
		p.eval(`(document.querySelector('#db-type').dispatchEvent(new Event('change')), `+mongoFields+`)`, &port)
		if port != "3306,true,true,true" {
			t.Fatalf("after choosing mysql: port and hidden fields %q, want 3306 and MongoDB's fields hidden", port)
		}
		// A MariaDB database tests through the agent and shows its version.
		maria := testsupport.MariaDB(t)
		mariaName := "web maria " + testsupport.RandomString(3)
		mariaDB(t, mariaName)
		p.fill(map[string]string{"#db-name": "shop-mysql", "#db-host": "127.0.0.1", "#db-port": strconv.Itoa(maria.Port()),
			"#db-username": mariadbserver.Admin, "#db-password": maria.Password(), "#db-database": mariaName})
		p.run("test mysql connection", chromedp.Click(chromedp.CSS(`[data-test-connection]`)))
		p.waitJS("mysql connection tested", `document.querySelector('#test-result.ok, #test-result.bad')`, 40*time.Second)
		var mysqlResult string
		p.read(`document.querySelector('#test-result').textContent`, &mysqlResult)
		if !strings.Contains(mysqlResult, "MariaDB 10.") {
			t.Fatalf("test connection of a MariaDB database shows %q, want its version", mysqlResult)
		}
		p.fill(map[string]string{"#db-port": "3306"}) // a default port follows the type
		p.fill(map[string]string{`#db-type`: "postgresql"})
		p.eval(`(document.querySelector('#db-type').dispatchEvent(new Event('change')), document.querySelector('#db-port').value)`, &port)
		if port != "5432" {
			t.Fatalf("port after choosing postgresql = %q, want 5432", port)
		}
		p.fill(map[string]string{"#db-name": "shop", "#db-host": "127.0.0.1", "#db-port": pgPort,
			"#db-username": pgUser, "#db-password": pgPassword, "#db-database": srcName})
		p.run("test connection", chromedp.Click(chromedp.CSS(`[data-test-connection]`)))
		p.waitJS("connection tested", `document.querySelector('#test-result.ok, #test-result.bad')`, 40*time.Second)
		var result string
		p.read(`document.querySelector('#test-result').textContent`, &result)
		if !strings.Contains(result, "PostgreSQL") {
			t.Fatalf("test connection shows %q, want the PostgreSQL version", result)
		}
		p.shot("test-connection-ok")
		p.run("save database", chromedp.Click(chromedp.CSS(`form[data-db-form] button[type="submit"]`)))
		p.waitJS("database listed", `location.pathname === '/databases' && document.body.innerText.includes('shop')`, 10*time.Second)

		p.open("/databases/new")
		p.fill(map[string]string{"#db-name": "shop-copy", "#db-host": "127.0.0.1", "#db-port": pgPort,
			"#db-username": pgUser, "#db-password": pgPassword, "#db-database": dstName})
		p.run("save second database", chromedp.Click(chromedp.CSS(`form[data-db-form] button[type="submit"]`)))
		p.waitJS("second database listed", `location.pathname === '/databases' && document.body.innerText.includes('shop-copy')`, 10*time.Second)
		p.shot("databases")

		// A manual job; verification is asked for by hand below.
		p.open("/jobs/new")
		var srcID string
		p.read(`[...document.querySelectorAll('#job-db option')].find(o => o.textContent.startsWith('shop ')).value`, &srcID)
		p.fill(map[string]string{"#job-name": "nightly", "#job-db": srcID})
		p.eval(`document.querySelector('#job-verify').checked = false`, nil)
		p.shot("job-form")
		p.run("create job", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		p.waitJS("job listed", `location.pathname === '/jobs' && document.querySelector('[data-run-job]')`, 10*time.Second)

		// Run now: the status goes from queued to success on this page,
		// with no reload (the marker survives).
		p.eval(`(window.__noReload = true, window.__seen = [], true)`, nil)
		p.run("run now", chromedp.Click(chromedp.CSS(`[data-run-job]`)))
		p.waitJS("run shown", `document.querySelector('.last-run [data-run] [data-run-status]')`, 10*time.Second)
		var first string
		p.read(`document.querySelector('.last-run [data-run-status]').textContent`, &first)
		if first != "queued" && first != "running" {
			t.Fatalf("first status after Run now = %q, want queued or running", first)
		}
		// Record every state the row shows until it ends.
		p.eval(`(() => { const rec = () => { const b = document.querySelector('.last-run [data-run-status]');
			const bar = document.querySelector('.last-run progress');
			const s = (b ? b.textContent : '') + (bar ? ' ' + bar.value : '');
			if (window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s); };
			new MutationObserver(rec).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true}); rec(); return true })()`, nil)
		p.waitJS("progress bar shown", `document.querySelector('.last-run progress') || document.querySelector('.last-run .badge.success')`, 30*time.Second)
		p.shot("backup-running")
		p.waitJS("backup succeeded", `document.querySelector('.last-run .badge.success, .last-run .badge.failed')`, 120*time.Second)
		var seen []string
		var noReload bool
		p.eval(`window.__seen`, &seen)
		p.eval(`window.__noReload === true`, &noReload)
		t.Logf("states shown: %q", seen)
		var final string
		p.read(`document.querySelector('.last-run [data-run-status]').textContent`, &final)
		if final != "success" || !noReload {
			t.Fatalf("backup ended %q (reloaded: %v); states %q", final, !noReload, seen)
		}
		sawRunning := false
		for _, s := range seen {
			if strings.HasPrefix(s, "running ") {
				sawRunning = true
			}
		}
		if !sawRunning {
			t.Fatalf("no running progress bar was shown before success: %q", seen)
		}
		p.shot("backup-success")
		var local bool
		p.eval(`(() => { const el = document.querySelector('.last-run time'); const d = new Date(el.getAttribute('datetime'));
			return el.textContent === new Intl.DateTimeFormat(undefined, {dateStyle: 'medium', timeStyle: 'short', timeZone: '`+browserZone+`'}).format(d) })()`, &local)
		if !local {
			t.Fatal("the last run's time is not shown in the browser's time zone")
		}

		// History: verify FULL (a test restore), see PASSED and its checks.
		p.open("/history")
		p.waitJS("history row", `document.querySelector('[data-history] .badge.success')`, 10*time.Second)
		p.run("verify", chromedp.Click(chromedp.CSS(`[data-verify]`)), chromedp.WaitVisible(chromedp.CSS(`#verify-dialog`)))
		p.shot("verify-dialog")
		p.waitJS("three levels offered", `[...document.querySelectorAll('#verify-dialog input[name="verificationLevel"]')].filter(i => !i.disabled).length === 3`, 10*time.Second)
		p.run("verify FULL", chromedp.Click(chromedp.CSS(`#verify-dialog input[value="FULL"]`)), chromedp.Click(chromedp.CSS(`[data-verify-ok]`)))
		p.waitJS("verification PASSED", `document.querySelector('[data-history] .badge.PASSED, [data-history] .badge.FAILED')`, 90*time.Second)
		var verification string
		p.read(`document.querySelector('[data-history] [data-verification-status]').textContent`, &verification)
		if verification != "PASSED" {
			t.Fatalf("verification %q, want PASSED", verification)
		}
		p.run("open checks", chromedp.Click(chromedp.CSS(`[data-history] details.checks summary`)))
		var checks int
		p.eval(`document.querySelectorAll('[data-history] details.checks li.passed').length`, &checks)
		var restored bool
		p.eval(`[...document.querySelectorAll('[data-history] details.checks li.passed')].some(li => li.textContent.includes('test restore'))`, &restored)
		if checks < 10 || !restored {
			t.Fatalf("%d passed checks shown (test restore among them: %v), want at least 10 with it", checks, restored)
		}
		p.shot("verified")

		// Filters: none failed, one succeeded today (the user's own day).
		p.fill(map[string]string{`#f-status`: "failed"})
		p.run("filter failed", chromedp.Click(chromedp.CSS(`form[data-history-filter] button[type="submit"]`)))
		p.waitJS("no failed run", `location.search.includes('status=failed') && document.querySelector('.empty')`, 10*time.Second)
		p.eval(`(() => { const d = new Date(), p = n => String(n).padStart(2, '0');
			const today = d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate());
			document.querySelector('#f-status').value = 'success';
			document.querySelector('#f-from').value = today; document.querySelector('#f-to').value = today; return true })()`, nil)
		p.run("filter today", chromedp.Click(chromedp.CSS(`form[data-history-filter] button[type="submit"]`)))
		p.waitJS("today's run", `location.search.includes('status=success') && location.search.includes('from=') && document.querySelectorAll('[data-history]').length === 1`, 10*time.Second)
		p.shot("history-filtered")

		// Restore into the second database, after a confirmation that names it.
		p.run("restore", chromedp.Click(chromedp.CSS(`[data-restore]`)), chromedp.WaitVisible(chromedp.CSS(`#restore-dialog`)))
		var dstID string
		p.read(`[...document.querySelectorAll('#restore-target option')].find(o => o.dataset.name === 'shop-copy').value`, &dstID)
		p.fill(map[string]string{`#restore-target`: dstID})
		p.eval(`document.querySelector('#restore-target').dispatchEvent(new Event('change'))`, nil)
		var warning, okLabel string
		p.read(`document.querySelector('[data-restore-warning]').textContent`, &warning)
		p.read(`document.querySelector('[data-restore-ok]').textContent`, &okLabel)
		if !strings.Contains(warning, "shop-copy") || !strings.Contains(warning, dstName) || !strings.Contains(okLabel, "shop-copy") {
			t.Fatalf("confirmation does not name the target: %q / %q", warning, okLabel)
		}
		p.shot("restore-confirm")
		p.run("confirm restore", chromedp.Click(chromedp.CSS(`[data-restore-ok]`)))
		p.waitJS("restore finished", `document.querySelector('[data-history] [data-restore-status].success, [data-history] [data-restore-status].failed')`, 120*time.Second)
		var restore string
		p.read(`document.querySelector('[data-history] [data-restore-status]').textContent`, &restore)
		if restore != "success" {
			t.Fatalf("restore %q, want success", restore)
		}
		p.shot("restored")
		if got := digest(t, dst); !reflect.DeepEqual(got, want) {
			t.Fatalf("restored database differs: %v, want %v", got, want)
		}

		p.open("/restores")
		p.waitJS("restore listed", `document.querySelector('[data-restore-row] .badge.success') && document.querySelector('[data-restore-row]').innerText.includes('.sql.zst')`, 10*time.Second)
		p.shot("restores")

		// Download with the browser's own download manager.
		p.open("/history")
		dir := t.TempDir()
		if _, err := chromedp.CallBrowser(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: new(true)}); err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithTimeout(p.ctx, 60*time.Second)
		defer dcancel()
		downloads := chromedp.BrowserEvents(dctx, browser.DownloadProgress)
		p.run("download", chromedp.Click(chromedp.CSS(`[data-download]`)))
		for ev, err := range downloads {
			if err != nil {
				t.Fatalf("download did not complete: %v", err)
			}
			if ev.State == browser.DownloadProgressStateCanceled {
				t.Fatal("download canceled")
			}
			if ev.State != browser.DownloadProgressStateCompleted {
				continue
			}
			fi, err := os.Stat(filepath.Join(dir, ev.GUID))
			if err != nil || fi.Size() == 0 {
				t.Fatalf("downloaded file: %v, %v", err, fi)
			}
			t.Logf("downloaded %d bytes", fi.Size())
			break
		}

		// The job page: chart, success rate, last good backup.
		p.open("/jobs")
		p.run("job page", chromedp.Click(chromedp.CSS(`[data-job] a`)), chromedp.WaitVisible(chromedp.CSS(`svg.chart`)))
		var rate string
		p.read(`document.querySelector('[data-success-rate]').textContent`, &rate)
		if !strings.HasPrefix(rate, "100%") {
			t.Fatalf("success rate %q", rate)
		}
		p.shot("job-detail")

		// Edit the job: a daily schedule shows its next five runs, and
		// the list then shows the next run.
		p.run("edit job", chromedp.Click(chromedp.CSS(`a[href$="/edit"]`)), chromedp.WaitReady(chromedp.CSS(`html[data-ready="true"] form[data-job-form]`)))
		p.fill(map[string]string{`#job-schedule`: "daily", `#job-tz`: "Europe/Istanbul"})
		p.waitJS("daily preview", `document.querySelectorAll('[data-preview-list] li').length === 5`, 10*time.Second)
		var firstRun string
		p.read(`document.querySelector('[data-preview-list] li').textContent`, &firstRun)
		if !strings.Contains(firstRun, "Europe/Istanbul") {
			t.Fatalf("preview %q does not show the job's own zone", firstRun)
		}
		p.shot("job-edit-daily")
		p.run("save job", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		p.waitJS("next run listed", `location.pathname === '/jobs' && document.querySelector('[data-job] td[data-label="Next run"] time')`, 10*time.Second)
		p.shot("jobs-next-run")

		// Phone width: the history still shows its actions.
		m := newPage(t, base, 390, 844)
		m.open("/login")
		m.run("sign in on a phone", chromedp.SendKeys(chromedp.CSS(`#email`), "first@example.com"),
			chromedp.SendKeys(chromedp.CSS(`#password`), "browser-pw-1"),
			chromedp.Click(chromedp.CSS(`form button[type="submit"]`)))
		m.waitJS("signed in", `document.querySelector('.who')`, 10*time.Second)
		m.open("/history")
		var fits bool
		m.read(`document.documentElement.scrollWidth <= window.innerWidth + 1 && !!document.querySelector('[data-restore]').offsetParent`, &fits)
		if !fits {
			t.Error("history does not fit a phone-width screen")
		}
		m.shot("phone-history")

		// Edit a database: Test connection uses the stored password when
		// the field is left empty; the new name is saved.
		p.open("/databases")
		p.run("edit database", chromedp.Click(chromedp.CSS(`tr:last-child a[href$="/edit"]`)), chromedp.WaitReady(chromedp.CSS(`html[data-ready="true"] form[data-db-form]`)))
		var editing string
		p.read(`document.querySelector('#db-name').value`, &editing)
		if editing != "shop-copy" {
			t.Fatalf("editing %q, want shop-copy", editing)
		}
		p.fill(map[string]string{"#db-name": "restored-shop"})
		p.run("test saved connection", chromedp.Click(chromedp.CSS(`[data-test-connection]`)))
		p.waitJS("saved connection tested", `document.querySelector('#test-result.ok, #test-result.bad')`, 40*time.Second)
		p.read(`document.querySelector('#test-result').textContent`, &result)
		if !strings.Contains(result, "PostgreSQL") {
			t.Fatalf("test connection of a saved database shows %q", result)
		}
		p.run("save edit", chromedp.Click(chromedp.CSS(`form[data-db-form] button[type="submit"]`)))
		p.waitJS("renamed", `location.pathname === '/databases' && document.body.innerText.includes('restored-shop')`, 10*time.Second)
		p.shot("database-renamed")

		// Delete the backup, after a confirmation that names its file.
		p.open("/history")
		p.run("delete backup", chromedp.Click(chromedp.CSS(`[data-history] button.danger`)), chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog`)))
		var deleteText string
		p.read(`document.querySelector('#confirm-dialog .confirm-text').textContent`, &deleteText)
		if !strings.Contains(deleteText, ".sql.zst") {
			t.Fatalf("delete confirmation %q does not name the file", deleteText)
		}
		p.run("confirm delete", chromedp.Click(chromedp.CSS(`#confirm-dialog .confirm-ok`)))
		p.waitJS("backup gone", `document.readyState === 'complete' && !document.querySelector('[data-history]') && document.querySelector('.empty')`, 20*time.Second)

		// Revoke the agent, after a confirmation that names it.
		p.open("/agents")
		p.run("revoke", chromedp.Click(chromedp.CSS(`[data-agent] button.danger`)), chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog`)))
		var revokeText string
		p.read(`document.querySelector('#confirm-dialog .confirm-text').textContent`, &revokeText)
		if !strings.Contains(revokeText, "local (") {
			t.Fatalf("revoke confirmation %q does not name the agent", revokeText)
		}
		p.run("confirm revoke", chromedp.Click(chromedp.CSS(`#confirm-dialog .confirm-ok`)))
		p.waitJS("agent gone", `document.readyState === 'complete' && !document.querySelector('[data-agent]')`, 10*time.Second)
		p.shot("agent-revoked")
	})

	t.Run("FormErrors", func(t *testing.T) {
		p := newPage(t, base, 1280, 900)
		// Registration: the API's field errors next to the fields.
		p.open("/register")
		p.run("short password", chromedp.SendKeys(chromedp.CSS(`#email`), "second@example.com"),
			chromedp.SendKeys(chromedp.CSS(`#password`), "short"),
			chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#password-error`)))
		var msg string
		p.read(`document.querySelector('#password-error').textContent`, &msg)
		if !strings.Contains(msg, "at least 8 characters") {
			t.Fatalf("password error %q", msg)
		}
		p.shot("register-error")
		p.signUp("second@example.com")

		p.open("/databases/new")
		p.fill(map[string]string{"#db-name": "", "#db-host": "", "#db-port": "70000"})
		p.run("save invalid", chromedp.Click(chromedp.CSS(`form[data-db-form] button[type="submit"]`)))
		p.waitJS("field errors", `document.querySelector('[data-error-for="port"]').textContent !== ''`, 10*time.Second)
		var errs map[string]string
		p.eval(`Object.fromEntries([...document.querySelectorAll('[data-error-for]')].filter(e => e.textContent).map(e => [e.dataset.errorFor, e.textContent]))`, &errs)
		if errs["port"] != "must be 1-65535" || errs["host"] != "is required" || errs["name"] != "is required" {
			t.Fatalf("field errors %v", errs)
		}
		var invalid, focused string
		p.read(`document.querySelector('#db-port').getAttribute('aria-invalid')`, &invalid)
		p.eval(`document.activeElement.name`, &focused)
		if invalid != "true" || focused != "name" {
			t.Fatalf("port aria-invalid %q, focus on %q", invalid, focused)
		}
		if !strings.HasSuffix(mustLocation(p), "/databases/new") {
			t.Fatal("an invalid form left the page")
		}
		p.shot("database-errors")

		// The job form: a bad cron expression is flagged as it is typed.
		p.open("/databases/new")
		pgUser, pgPassword := pgCredentials(t)
		p.fill(map[string]string{"#db-name": "mine", "#db-host": "127.0.0.1", "#db-port": pgPort,
			"#db-username": pgUser, "#db-password": pgPassword, "#db-database": srcName})
		p.run("save", chromedp.Click(chromedp.CSS(`form[data-db-form] button[type="submit"]`)))
		p.waitJS("saved", `location.pathname === '/databases'`, 10*time.Second)
		p.open("/jobs/new")
		p.fill(map[string]string{`#job-schedule`: "custom"})
		p.eval(`document.querySelector('#job-schedule').dispatchEvent(new Event('change'))`, nil)
		p.run("bad cron", chromedp.SendKeys(chromedp.CSS(`#job-cron`), "61 * * * *"))
		p.waitJS("cron error", `document.querySelector('[data-error-for="cronExpression"]').textContent !== ''`, 10*time.Second)
		p.shot("cron-error")
		p.fill(map[string]string{`#job-cron`: ""})
		p.run("fix cron", chromedp.SendKeys(chromedp.CSS(`#job-cron`), "30 1 * * 1-5"))
		p.waitJS("five next runs", `document.querySelectorAll('[data-preview-list] li').length === 5 && document.querySelector('[data-error-for="cronExpression"]').textContent === ''`, 10*time.Second)
		p.shot("cron-preview")
		p.fill(map[string]string{`#job-schedule`: "advanced"})
		p.eval(`document.querySelector('#job-schedule').dispatchEvent(new Event('change'))`, nil)
		p.waitJS("advanced preview", `document.querySelectorAll('[data-preview-list] li').length === 5`, 10*time.Second)
		p.fill(map[string]string{`[data-rules] [data-k="times"]`: ""})
		p.run("bad time", chromedp.SendKeys(chromedp.CSS(`[data-rules] [data-k="times"]`), "25:00"))
		p.waitJS("advanced error", `document.querySelector('[data-error-for="advancedScheduleConfig"]').textContent !== ''`, 10*time.Second)
		p.shot("advanced-error")
		// A date range: the end before the start is flagged; a range in the
		// future moves the preview's first run to its start.
		p.fill(map[string]string{`[data-rules] [data-k="times"]`: "02:00"})
		p.eval(`(() => {
			const set = (k, v) => { const el = document.querySelector('[data-rules] [data-k="' + k + '"]'); el.value = v; el.dispatchEvent(new Event('change')); };
			set('startDate', '2031-03-10'); set('endDate', '2031-03-01');
		})()`, nil)
		p.waitJS("range error", `document.querySelector('[data-error-for="advancedScheduleConfig"]').textContent.includes('before startDate')`, 10*time.Second)
		p.eval(`(() => { const el = document.querySelector('[data-rules] [data-k="endDate"]'); el.value = ''; el.dispatchEvent(new Event('change')); })()`, nil)
		p.waitJS("range preview", `document.querySelector('[data-error-for="advancedScheduleConfig"]').textContent === '' && document.querySelector('[data-preview-list] li')?.dataset.at?.startsWith('2031-03')`, 10*time.Second)
		p.shot("advanced-range")

		// Create the job with a valid cron expression, then delete it
		// after a confirmation that names it.
		p.fill(map[string]string{`#job-schedule`: "custom", `#job-name`: "weekday-night"})
		p.waitJS("cron preview again", `document.querySelectorAll('[data-preview-list] li').length === 5`, 10*time.Second)
		p.run("create", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		p.waitJS("job listed", `location.pathname === '/jobs' && document.body.innerText.includes('weekday-night')`, 10*time.Second)
		p.run("delete job", chromedp.Click(chromedp.CSS(`[data-job] button.danger`)), chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog`)))
		var confirmText string
		p.read(`document.querySelector('#confirm-dialog .confirm-text').textContent`, &confirmText)
		if !strings.Contains(confirmText, "weekday-night") {
			t.Fatalf("delete confirmation %q does not name the job", confirmText)
		}
		p.shot("delete-confirm")
		p.run("confirm delete", chromedp.Click(chromedp.CSS(`#confirm-dialog .confirm-ok`)))
		p.waitJS("job gone", `document.readyState === 'complete' && !document.body.innerText.includes('weekday-night')`, 10*time.Second)

		// Encryption: the password is checked next to its field; the job
		// then offers its key for download.
		p.open("/jobs/new")
		p.fill(map[string]string{`#job-name`: "sealed"})
		p.run("encrypt", chromedp.Click(chromedp.CSS(`#job-enc`)), chromedp.SendKeys(chromedp.CSS(`#job-encpw`), "short"),
			chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		p.waitJS("password error", `document.querySelector('[data-error-for="encryptionPassword"]').textContent.includes('at least 8')`, 10*time.Second)
		p.shot("encryption-error")
		p.fill(map[string]string{`#job-encpw`: "a long enough passphrase"})
		p.run("create encrypted", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		// Sealing the exportable key runs scrypt (work factor 18), which the
		// race detector and a busy machine slow many times over.
		p.waitJS("encrypted job listed", `location.pathname === '/jobs' && document.body.innerText.includes('sealed')`, 90*time.Second)
		p.run("encrypted job page", chromedp.Click(chromedp.CSS(`[data-job] a`)), chromedp.WaitVisible(chromedp.CSS(`a[href$="/encryption-key"]`)))
		var keySize int
		p.eval(`fetch(document.querySelector('a[href$="/encryption-key"]').href).then(r => r.ok ? r.arrayBuffer() : Promise.reject(r.status)).then(b => b.byteLength)`, &keySize)
		if keySize == 0 {
			t.Fatal("empty encryption key download")
		}

		// Retention counts: an out-of-range count is flagged on its field;
		// saved counts come back in the form and on the job page, with
		// the retention preview; emptying a count clears it.
		p.open("/jobs/new")
		p.fill(map[string]string{`#job-name`: "gfs", `#job-keep-last`: "0", `#job-keep-monthly`: "6"})
		p.run("bad count", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		p.waitJS("count error", `document.querySelector('[data-error-for="keepLast"]').textContent.includes('1 to 10000')`, 10*time.Second)
		p.shot("retention-error")
		p.fill(map[string]string{`#job-keep-last`: "3"})
		p.run("create gfs", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		p.waitJS("gfs job listed", `location.pathname === '/jobs' && document.body.innerText.includes('gfs')`, 10*time.Second)
		p.evalWhen("gfs link", `[...document.querySelectorAll('[data-job] a')].some(a => a.textContent.trim() === 'gfs')`, `[...document.querySelectorAll('[data-job] a')].find(a => a.textContent.trim() === 'gfs').click()`, nil, 10*time.Second)
		p.waitJS("gfs job page", `document.querySelector('[data-retention-expire]') !== null && document.body.innerText.includes('last 3 · 6 monthly')`, 10*time.Second)
		p.shot("retention-job-page")
		p.run("edit gfs", chromedp.Click(chromedp.CSS(`a[href$="/edit"]`)))
		p.waitJS("counts in the form", `document.querySelector('#job-keep-last').value === '3' && document.querySelector('#job-keep-monthly').value === '6'`, 10*time.Second)
		p.fill(map[string]string{`#job-keep-last`: ""})
		p.run("clear keepLast", chromedp.Click(chromedp.CSS(`form[data-job-form] button[type="submit"]`)))
		p.waitJS("saved", `location.pathname === '/jobs'`, 10*time.Second)
		var gfs []struct {
			Name        string
			KeepLast    *int
			KeepMonthly *int
		}
		p.eval(`fetch('/ui/v1/backups/jobs').then(r => r.json()).then(d => d.results)`, &gfs)
		for _, j := range gfs {
			if j.Name == "gfs" && (j.KeepLast != nil || j.KeepMonthly == nil || *j.KeepMonthly != 6) {
				t.Fatalf("after clearing keepLast: %+v", j)
			}
		}

		// S3 storage: a bad endpoint is flagged on its field; Test shows
		// what failed; Google Drive says it is not configured.
		p.open("/storage/new")
		p.fill(map[string]string{"#s3-name": "archive", "#s3-bucket": "backups", "#s3-key": "AKIA", "#s3-secret": "s",
			"#s3-endpoint": "ftp://nowhere"})
		p.run("save bad endpoint", chromedp.Click(chromedp.CSS(`form[data-storage-form] button[type="submit"]`)))
		p.waitJS("endpoint error", `document.querySelector('[data-error-for="s3Endpoint"]').textContent.includes('http(s) URL')`, 10*time.Second)
		p.waitJS("short secret error", `document.querySelector('[data-error-for="s3SecretAccessKey"]').textContent.includes('8 to 128')`, 10*time.Second)
		// A loopback endpoint the operator did not allow is refused on its
		// field; the allowed one (a closed port) is tested and fails.
		p.fill(map[string]string{"#s3-secret": "secret-key", "#s3-endpoint": "http://127.0.0.1:2"})
		p.run("test refused", chromedp.Click(chromedp.CSS(`[data-test-storage-form]`)))
		p.waitJS("refused endpoint", `document.querySelector('[data-error-for="s3Endpoint"]').textContent.includes('--allow-endpoint')`, 10*time.Second)
		p.fill(map[string]string{"#s3-endpoint": "http://" + closedStorage})
		p.run("test unreachable", chromedp.Click(chromedp.CSS(`[data-test-storage-form]`)))
		p.waitJS("test result", `document.querySelector('#test-result.bad')`, 40*time.Second)
		p.shot("storage-test")
		p.run("save storage", chromedp.Click(chromedp.CSS(`form[data-storage-form] button[type="submit"]`)))
		p.waitJS("storage listed", `location.pathname === '/storage' && document.body.innerText.includes('archive')`, 10*time.Second)
		// Google Drive: the consent page (a fake that speaks Google's
		// protocol) sends the browser back; the storage is listed, and
		// its Test passes.
		p.fill(map[string]string{"#gd-name": "Team Drive"})
		p.run("connect drive", chromedp.Click(chromedp.CSS(`form[data-google] button[type="submit"]`)))
		p.waitJS("drive connected", `location.pathname === '/storage' && document.querySelector('.notice')?.textContent.includes('Team Drive')`, 20*time.Second)
		p.run("test drive", chromedp.Click(chromedp.CSS(`tr:last-child [data-test-storage]`)))
		p.waitJS("drive tested", `document.querySelector('tr:last-child .test-result.ok')`, 40*time.Second)
		p.shot("storage")
	})

	t.Run("OtherUsersPages", func(t *testing.T) {
		c := client{t, base}
		owner := c.register("owner@example.com")
		ownerDB := c.createDB(owner, "owners-db", srcName)
		var job struct{ ID string }
		c.want(c.call("POST", "/v1/backups/jobs", owner, map[string]any{"databaseId": ownerDB, "name": "owners-job"}), 201).decode(t, &job)

		p := newPage(t, base, 1280, 900)
		p.open("/history")
		if loc := mustLocation(p); !strings.Contains(loc, "/login?next=") {
			t.Fatalf("signed out, /history went to %s", loc)
		}
		p.signUp("intruder@example.com")
		for _, path := range []string{"/databases/" + ownerDB + "/edit", "/jobs/" + job.ID, "/jobs/" + job.ID + "/edit"} {
			p.open(path)
			var h1 string
			p.read(`document.querySelector('h1').textContent`, &h1)
			if h1 != "Not Found" {
				t.Fatalf("%s shows %q, want Not Found", path, h1)
			}
		}
		p.shot("not-found")
		var status int
		p.eval(`fetch('/ui/v1/databases/`+ownerDB+`').then(r => r.status)`, &status)
		if status != 404 {
			t.Fatalf("proxy GET another user's database: %d, want 404", status)
		}
		p.eval(`fetch('/ui/v1/backups/jobs/`+job.ID+`/run', {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]').content}}).then(r => r.status)`, &status)
		if status != 404 {
			t.Fatalf("proxy run another user's job: %d, want 404", status)
		}
		p.eval(`fetch('/ui/v1/backups/jobs/`+job.ID+`/run', {method: 'POST'}).then(r => r.status)`, &status)
		if status != 403 {
			t.Fatalf("proxy POST without CSRF token: %d, want 403", status)
		}
		p.open("/databases")
		var listed bool
		p.eval(`document.body.innerText.includes('owners-db')`, &listed)
		if listed {
			t.Fatal("another user's database is listed")
		}
	})
}

func mustLocation(p *page) string {
	p.t.Helper()
	loc, err := chromedp.Run(p.ctx, chromedp.Location())
	if err != nil {
		p.t.Fatal(err)
	}
	return loc
}

// digest is each table's row count and the md5 of its rows in key order:
// enough to tell a restore from its source without loading the rows here.
func digest(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, table := range []string{"customers", "orders"} {
		var n int64
		var sum string
		err := conn.QueryRow(context.Background(), "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t.id)), '') FROM "+table+" t").Scan(&n, &sum)
		if err != nil {
			t.Fatal(err)
		}
		out[table] = fmt.Sprint(n, " ", sum)
	}
	return out
}

// TestWebEventsOwnOnly: GET /v1/events streams the events of the user's
// own agents, including one enrolled while the stream is open, and never
// another user's.
func TestWebEventsOwnOnly(t *testing.T) {
	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	alice := c.register("alice@example.com")
	bob := c.register("bob@example.com")

	// enroll joins a new agent to the user and connects to NATS as it.
	enroll := func(token, name string) (string, *nats.Conn) {
		a := enrollAgent(t, c, token, name)
		return a.id, a.nc
	}
	online := func(agentID string, nc *nats.Conn, host string) {
		ev := events.AgentPresence{V: events.Version, ID: testsupport.RandomString(12), AgentID: agentID, Hostname: host,
			OS: "linux/amd64", Version: "test", At: time.Now().UTC()}
		b, _ := json.Marshal(ev)
		if err := nc.Publish(events.EventSubject(agentID, events.KindAgent, events.PhaseOnline), b); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	aliceAgent, aliceNC := enroll(alice, "alice-box")
	bobAgent, bobNC := enroll(bob, "bob-box")

	req, _ := http.NewRequest("GET", base+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// next returns the next data line, failing on one that names Bob's host.
	next := func(within time.Duration) string {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("event stream ended")
				}
				if strings.Contains(l, "bob-") || strings.Contains(l, bobAgent) {
					t.Fatalf("Alice's stream carries Bob's event: %s", l)
				}
				if strings.HasPrefix(l, "data: ") {
					return l
				}
			case <-deadline:
				return ""
			}
		}
	}
	for l := range lines {
		if strings.HasPrefix(l, "retry:") {
			break
		}
	}
	online(bobAgent, bobNC, "bob-host")
	online(aliceAgent, aliceNC, "alice-host")
	if l := next(10 * time.Second); !strings.Contains(l, "alice-host") || !strings.Contains(l, `"agentId":"`+aliceAgent+`"`) {
		t.Fatalf("first event %q, want Alice's agent online", l)
	}
	// An agent enrolled now is followed within the refresh interval.
	laterAgent, laterNC := enroll(alice, "alice-later")
	deadline := time.Now().Add(15 * time.Second)
	for {
		online(bobAgent, bobNC, "bob-host")
		online(laterAgent, laterNC, "alice-later-host")
		if l := next(time.Second); strings.Contains(l, "alice-later-host") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an agent enrolled during the stream was not followed")
		}
	}
	// Bob's stream has Bob's event, not Alice's.
	req, _ = http.NewRequest("GET", base+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+bob)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	sc := bufio.NewScanner(resp2.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "retry:") {
	}
	online(aliceAgent, aliceNC, "alice-host")
	online(bobAgent, bobNC, "bob-host")
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "alice") {
			t.Fatalf("Bob's stream carries Alice's event: %s", l)
		}
		if strings.Contains(l, "bob-host") {
			break
		}
	}
	// Signed out: no stream.
	c.want(c.call("GET", "/v1/events", "", nil), 401)
}
