package web

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rahatback/rahatback/engines"
)

// fakeAPI answers the few REST API routes the dashboard's own logic
// depends on, the way handlers/api does, and records what it was sent.
type fakeAPI struct {
	mu        sync.Mutex
	issued    int           // access tokens issued
	refreshed atomic.Int32  // refresh-tokens calls
	accessTTL time.Duration // of issued access tokens
	seen      []string      // "METHOD path Authorization"
	valid     map[string]bool
	used      map[string]bool // refresh tokens already rotated
	queries   []string        // "METHOD path?query" of authenticated calls
	// answers are what authenticated GETs of these paths get, instead of
	// an empty list.
	answers map[string]fakeAnswer
}

type fakeAnswer struct {
	code int
	body any
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{accessTTL: 15 * time.Minute, valid: map[string]bool{}, used: map[string]bool{}, answers: map[string]fakeAnswer{}}
}

func (f *fakeAPI) tokens(w http.ResponseWriter, code int) {
	f.issued++
	n := f.issued
	access := "access-" + strconv.Itoa(n)
	refresh := "refresh-" + strconv.Itoa(n)
	f.valid[access] = true
	writeTestJSON(w, code, map[string]any{"user": map[string]any{"email": "u@example.com"},
		"tokens": map[string]any{
			"access":  map[string]any{"token": access, "expires": time.Now().Add(f.accessTTL)},
			"refresh": map[string]any{"token": refresh, "expires": time.Now().Add(24 * time.Hour)},
		}})
}

func writeTestJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
	var body map[string]string
	_ = json.NewDecoder(r.Body).Decode(&body)
	switch r.URL.Path {
	case "/v1/auth/login":
		if body["password"] != "right-pw-1" {
			writeTestJSON(w, 401, map[string]any{"code": 401, "message": "incorrect email or password"})
			return
		}
		f.tokens(w, 200)
	case "/v1/auth/register":
		writeTestJSON(w, 400, map[string]any{"code": 400, "message": "invalid fields: password",
			"fields": map[string]string{"password": "must be at least 8 characters"}})
	case "/v1/auth/refresh-tokens":
		f.refreshed.Add(1)
		if f.used[body["refreshToken"]] {
			writeTestJSON(w, 401, map[string]any{"code": 401, "message": "refresh token reused"})
			return
		}
		f.used[body["refreshToken"]] = true
		f.tokens(w, 200)
	case "/v1/auth/logout":
		w.WriteHeader(204)
	default:
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !f.valid[token] {
			writeTestJSON(w, 401, map[string]any{"code": 401, "message": "please authenticate"})
			return
		}
		f.queries = append(f.queries, r.Method+" "+r.URL.RequestURI())
		if a, ok := f.answers[r.URL.Path]; ok {
			writeTestJSON(w, a.code, a.body)
			return
		}
		writeTestJSON(w, 200, map[string]any{"results": []any{}, "path": r.URL.Path, "cookie": r.Header.Get("Cookie")})
	}
}

func (f *fakeAPI) calls(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.seen {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// browser is a cookie-keeping client of the dashboard.
type browser struct {
	t      *testing.T
	srv    *httptest.Server
	client *http.Client
}

func newBrowser(t *testing.T, opts Opts) (*browser, *fakeAPI) {
	t.Helper()
	api := newFakeAPI()
	opts.API = api
	opts.Logger = slog.New(slog.DiscardHandler)
	wb, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wb)
	t.Cleanup(srv.Close)
	jar := &cookieJar{}
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{t: t, srv: srv, client: c}, api
}

// cookieJar keeps cookies regardless of the Secure flag, so a test over
// plain HTTP can see what a Secure cookie holds.
type cookieJar struct {
	mu sync.Mutex
	c  map[string]*http.Cookie
}

func (j *cookieJar) SetCookies(_ *url.URL, cs []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.c == nil {
		j.c = map[string]*http.Cookie{}
	}
	for _, c := range cs {
		j.c[c.Name] = c
	}
}

func (j *cookieJar) Cookies(*url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*http.Cookie
	for _, c := range j.c {
		out = append(out, &http.Cookie{Name: c.Name, Value: c.Value})
	}
	return out
}

func (b *browser) do(method, path, contentType, body string, header map[string]string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// csrf loads the sign-in page and returns the CSRF token in its form.
func (b *browser) csrf() string {
	b.t.Helper()
	_, html := b.do("GET", "/login", "", "", nil)
	return between(html, `name="csrf-token" content="`, `"`)
}

func between(s, start, end string) string {
	_, rest, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, end)
	return v
}

func (b *browser) login(password string) *http.Response {
	b.t.Helper()
	form := url.Values{"csrf": {b.csrf()}, "email": {"u@example.com"}, "password": {password}}
	resp, _ := b.do("POST", "/login", "application/x-www-form-urlencoded", form.Encode(), nil)
	return resp
}

func TestWebSessionCookie(t *testing.T) {
	for _, secure := range []bool{false, true} {
		b, _ := newBrowser(t, Opts{SecureCookies: secure})
		resp := b.login("right-pw-1")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/agents" {
			t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		var c *http.Cookie
		for _, k := range resp.Cookies() {
			if k.Name == CookieName {
				c = k
			}
		}
		if c == nil {
			t.Fatal("no session cookie after login")
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure != secure || c.Path != "/" {
			t.Fatalf("cookie flags: HttpOnly %v SameSite %v Secure %v Path %q", c.HttpOnly, c.SameSite, c.Secure, c.Path)
		}
		if strings.Contains(c.Value, "access-") || strings.Contains(c.Value, "refresh-") {
			t.Fatal("the cookie holds a readable token")
		}
		// Pages never show a token.
		_, html := b.do("GET", "/agents", "", "", nil)
		if strings.Contains(html, "access-1") || strings.Contains(html, "refresh-1") {
			t.Fatal("a page holds a token")
		}
	}
}

func TestWebSessionTampered(t *testing.T) {
	b, _ := newBrowser(t, Opts{})
	b.login("right-pw-1")
	jar := b.client.Jar.(*cookieJar)
	c := jar.c[CookieName]
	raw := []byte(c.Value)
	raw[len(raw)/2] ^= 1
	c.Value = string(raw)
	resp, _ := b.do("GET", "/agents", "", "", nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("tampered cookie: %d to %q, want a redirect to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestWebCSRF(t *testing.T) {
	b, api := newBrowser(t, Opts{})
	t.Run("LoginWithoutToken", func(t *testing.T) {
		b.csrf()
		form := url.Values{"email": {"u@example.com"}, "password": {"right-pw-1"}}
		resp, _ := b.do("POST", "/login", "application/x-www-form-urlencoded", form.Encode(), nil)
		if resp.StatusCode != http.StatusForbidden || len(api.calls("POST /v1/auth/login")) != 0 {
			t.Fatalf("login without CSRF token: %d, API calls %v", resp.StatusCode, api.calls("POST"))
		}
	})
	t.Run("LoginWrongToken", func(t *testing.T) {
		form := url.Values{"csrf": {"forged"}, "email": {"u@example.com"}, "password": {"right-pw-1"}}
		resp, _ := b.do("POST", "/login", "application/x-www-form-urlencoded", form.Encode(), nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("login with a forged token: %d", resp.StatusCode)
		}
	})
	b.login("right-pw-1")
	_, page := b.do("GET", "/agents", "", "", nil)
	token := between(page, `name="csrf-token" content="`, `"`)
	t.Run("RotatedAtLogin", func(t *testing.T) {
		if token == "" || token == b.csrfBeforeLogin() {
			t.Fatal("the CSRF token did not change at sign-in")
		}
	})
	t.Run("ProxyWithoutToken", func(t *testing.T) {
		resp, _ := b.do("POST", "/ui/v1/backups/jobs/x/run", "application/json", "{}", nil)
		if resp.StatusCode != http.StatusForbidden || len(api.calls("POST /v1/backups")) != 0 {
			t.Fatalf("proxy POST without token: %d; API saw %v", resp.StatusCode, api.calls("POST /v1/backups"))
		}
	})
	t.Run("ProxyWrongToken", func(t *testing.T) {
		resp, _ := b.do("DELETE", "/ui/v1/databases/x", "", "", map[string]string{"X-CSRF-Token": "forged"})
		if resp.StatusCode != http.StatusForbidden || len(api.calls("DELETE")) != 0 {
			t.Fatalf("proxy DELETE with a forged token: %d", resp.StatusCode)
		}
	})
	t.Run("ProxyFormFieldNotEnough", func(t *testing.T) {
		// A cross-site form can post fields but not headers.
		resp, _ := b.do("POST", "/ui/v1/databases", "application/x-www-form-urlencoded", "csrf="+token, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("proxy POST with the token only as a form field: %d", resp.StatusCode)
		}
	})
	t.Run("ProxyWithToken", func(t *testing.T) {
		resp, _ := b.do("POST", "/ui/v1/backups/jobs/x/run", "application/json", "{}", map[string]string{"X-CSRF-Token": token})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("proxy POST with token: %d", resp.StatusCode)
		}
	})
	t.Run("LogoutWithoutToken", func(t *testing.T) {
		resp, _ := b.do("POST", "/logout", "application/x-www-form-urlencoded", "", nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("logout without token: %d", resp.StatusCode)
		}
	})
}

// csrfBeforeLogin is the token an anonymous visitor gets (a new session).
func (b *browser) csrfBeforeLogin() string {
	other, _ := newBrowser(b.t, Opts{})
	return other.csrf()
}

func TestWebProxyAuth(t *testing.T) {
	t.Run("SignedOut", func(t *testing.T) {
		b, api := newBrowser(t, Opts{})
		resp, _ := b.do("GET", "/ui/v1/databases", "", "", nil)
		if resp.StatusCode != http.StatusUnauthorized || len(api.calls("GET")) != 0 {
			t.Fatalf("signed out proxy: %d", resp.StatusCode)
		}
		resp, _ = b.do("GET", "/history", "", "", nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fhistory" {
			t.Fatalf("signed out page: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("BearerNotCookie", func(t *testing.T) {
		b, api := newBrowser(t, Opts{})
		b.login("right-pw-1")
		resp, body := b.do("GET", "/ui/v1/databases?x=1", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("proxy GET: %d %s", resp.StatusCode, body)
		}
		var out struct{ Path, Cookie string }
		_ = json.Unmarshal([]byte(body), &out)
		if out.Path != "/v1/databases" || out.Cookie != "" {
			t.Fatalf("API got path %q cookie %q", out.Path, out.Cookie)
		}
		if got := api.calls("GET /v1/databases"); len(got) != 1 || got[0] != "GET /v1/databases Bearer access-1" {
			t.Fatalf("API calls %v", got)
		}
	})
	t.Run("TokenRoutesHidden", func(t *testing.T) {
		b, api := newBrowser(t, Opts{})
		b.login("right-pw-1")
		_, page := b.do("GET", "/agents", "", "", nil)
		token := between(page, `name="csrf-token" content="`, `"`)
		for _, p := range []string{"/ui/v1/auth/refresh-tokens", "/ui/v1/auth/login", "/ui/v1/auth/register", "/ui/v1/agents/enroll"} {
			resp, _ := b.do("POST", p, "application/json", `{}`, map[string]string{"X-CSRF-Token": token})
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("%s: %d, want 404", p, resp.StatusCode)
			}
		}
		if n := api.refreshed.Load(); n != 0 {
			t.Fatalf("the API saw %d refreshes", n)
		}
	})
	t.Run("RefreshOnceForParallelRequests", func(t *testing.T) {
		b, api := newBrowser(t, Opts{})
		api.accessTTL = time.Second // inside refreshMargin: every request refreshes
		b.login("right-pw-1")
		api.accessTTL = 15 * time.Minute
		var wg sync.WaitGroup
		codes := make([]int, 6)
		for i := range codes {
			wg.Go(func() {
				resp, _ := b.do("GET", "/ui/v1/databases", "", "", nil)
				codes[i] = resp.StatusCode
			})
		}
		wg.Wait()
		for _, c := range codes {
			if c != 200 {
				t.Fatalf("parallel requests with an expiring token: %v", codes)
			}
		}
		if n := api.refreshed.Load(); n != 1 {
			t.Fatalf("%d refreshes for one expiring token, want 1", n)
		}
		// The new tokens are kept: the next request needs no refresh.
		b.do("GET", "/ui/v1/databases", "", "", nil)
		if n := api.refreshed.Load(); n != 1 {
			t.Fatalf("%d refreshes after the session was renewed, want 1", n)
		}
	})
	t.Run("RefreshRefusedSignsOut", func(t *testing.T) {
		b, api := newBrowser(t, Opts{})
		api.accessTTL = time.Second
		b.login("right-pw-1")
		api.mu.Lock()
		api.used["refresh-1"] = true
		api.mu.Unlock()
		resp, _ := b.do("GET", "/databases", "", "", nil)
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
			t.Fatalf("refused refresh: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

func TestWebFormErrors(t *testing.T) {
	b, _ := newBrowser(t, Opts{})
	resp := b.login("wrong-pw-1")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	form := url.Values{"csrf": {b.csrf()}, "email": {"u@example.com"}, "password": {"short"}}
	resp, html := b.do("POST", "/register", "application/x-www-form-urlencoded", form.Encode(), nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(html, `id="password-error">must be at least 8 characters<`) ||
		!strings.Contains(html, `aria-describedby="password-error"`) || !strings.Contains(html, `value="u@example.com"`) {
		t.Fatalf("register errors: %d\n%s", resp.StatusCode, html)
	}
}

func TestWebSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/history?x=1": "/history?x=1", "//evil.example": "/agents",
		"https://evil.example": "/agents", "/\\evil.example": "/agents", "": "/agents",
		"/\t/evil.example": "/agents", "/\n/evil.example": "/agents", "/\r//evil.example": "/agents",
		"/x\\y": "/agents", "/jobs/1#frag": "/jobs/1#frag"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWebMount(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api") })
	dash := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web") })
	h := Mount(api, dash)
	for path, want := range map[string]string{"/v1/agents": "api", "/healthz": "api", "/readyz": "api",
		"/": "web", "/v1x": "web", "/ui/v1/agents": "web", "/static/app.js": "web", GoogleCallbackPath: "api"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Body.String() != want {
			t.Errorf("%s went to %s, want %s", path, rec.Body.String(), want)
		}
	}
	// A browser coming back from Google's consent page gets the dashboard.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", GoogleCallbackPath+"?state=s&code=c", nil)
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	h.ServeHTTP(rec, req)
	if rec.Body.String() != "web" {
		t.Errorf("a browser's Google callback went to %s", rec.Body.String())
	}
}

// TestWebPagesRender renders every page template with empty and full data,
// so a template error shows here rather than in a browser.
func TestWebPagesRender(t *testing.T) {
	wb, err := New(Opts{API: newFakeAPI(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	size, dur := int64(123456789), 4.25
	done := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	name := "f.sql.zst"
	run := runJSON{ID: "r1", BackupJobID: "j1", DatabaseID: "d1", Status: "success", QueuedAt: done, CompletedAt: &done,
		Duration: &dur, FileSize: &size, FileName: &name, VerificationStatus: "PASSED"}
	running := runJSON{ID: "r2", Status: "running", QueuedAt: done}
	ratio := 12.5
	chained := runJSON{ID: "r3", Status: "success", QueuedAt: done, BackupType: "differential", Chunked: true,
		ParentID: &run.ID, BaseID: &run.ID, DependsOn: []string{"r1"}, NewBytes: &size, RawSize: &size, DedupRatio: &ratio}
	queuedChain := runJSON{ID: "r4", Status: "queued", QueuedAt: done, BackupType: "incremental", Chunked: true}
	six := 6
	agentID := "a1"
	pages := map[string]any{
		"agents":        []agentJSON{{ID: "a1", Name: "box", Status: "online", LastSeenAt: &done}},
		"databases":     map[string]any{"Databases": []databaseJSON{{ID: "d1", Name: "shop", AgentID: &agentID}}, "AgentNames": map[string]string{"a1": "box"}},
		"database_form": map[string]any{"DB": databaseJSON{ID: "d1", AgentID: &agentID}, "Agents": []agentJSON{{ID: "a1"}}},
		"storage":       map[string]any{"Storages": []storageJSON{{ID: "s1", StorageType: "s3", Name: "x"}, {ID: "s2", StorageType: "google_drive"}}, "Connected": "y"},
		"storage_form":  storageJSON{ID: "s1", StorageType: "s3"},
		"jobs":          []jobRow{{Job: jobJSON{ID: "j1", ScheduleType: "daily", NextRunAt: &done}, LastRun: &running}, {Job: jobJSON{ID: "j2"}}},
		"job_form": map[string]any{"Job": jobJSON{ID: "j1", IsEncrypted: true, EncryptionRecipients: []string{"age1x"}, NotificationRules: &rulesJSON{RPOHours: &six}},
			"Databases": []databaseJSON{{ID: "d1"}}, "Storages": []storageJSON{{ID: "s1"}}, "Advanced": "", "Defaults": &rulesJSON{BackupFailed: true}, "Rules": rulesJSON{RPOHours: &six}},
		"job": map[string]any{"Job": jobJSON{ID: "j1"}, "Stats": jobStats{Runs: []runJSON{run, running}, Chart: chart([]runJSON{run, run}), NextRuns: []time.Time{done},
			Retention: retentionJSON{Expire: []retentionItem{{HistoryID: "r0", Reason: "old"}}, Keep: []retentionItem{{HistoryID: "r1", BackupType: "full",
				Reasons: []string{"needed by the chain of r3", "needed by the chain of r4", "needed by the chain of r5", "needed by the chain of r6", "needed by a backup being made"}}}},
			ChainKept: 1}},
		"history": map[string]any{"Runs": []runJSON{run, running, chained, queuedChain}, "Page": 2, "TotalPages": 3, "Databases": []databaseJSON{{ID: "d1"}},
			"DBNames": map[string]string{}, "JobNames": map[string]string{"j1": "nightly"}, "Filter": url.Values{"status": {"success"}},
			"Status": "", "DatabaseID": "", "FromDate": "", "ToDate": "", "Statuses": []string{"success"}},
		"restores": map[string]any{"Restores": []restoreJSON{{ID: "x", Status: "running", BackupHistoryID: "r1"}}, "DBNames": map[string]string{},
			"Files": map[string]string{"r1": "f.sql.zst"}, "Page": 1, "TotalPages": 1, "Filter": url.Values{}},
		"channels": map[string]any{"Channels": []channelJSON{{ID: "c1", Type: "email", Address: &name, LastSuccessAt: &done},
			{ID: "c2", Type: "webhook", URL: &name, HasSecret: true, LastError: &name, LastErrorAt: &done}},
			"Rules": rulesJSON{RPOHours: &six}, "Edit": channelJSON{ID: "c2", Type: "webhook"}, "Types": channelTypes, "Saved": "saved"},
		"audit": map[string]any{"Entries": []auditJSON{{ID: "e1", Action: "database.create", ObjectType: "database", ObjectID: "d1", Outcome: "success"},
			{ID: "e2", Action: "channel.create", ObjectType: "channel", Outcome: "failure", Detail: "bad url"}},
			"Page": 1, "TotalPages": 2, "Total": int64(30), "Filter": url.Values{}, "Actions": auditActions},
		"run": map[string]any{"Run": runJSON{ID: "r1", Status: "failed", ErrorMessage: &name, QueuedAt: done, ScheduledFor: &done,
			RawSize: &size, ExpireReason: &name, ExpiredAt: &done, VerificationResult: &struct {
				OverallStatus      string      `json:"overallStatus"`
				VerificationMethod string      `json:"verificationMethod"`
				Checks             []checkJSON `json:"checks"`
			}{OverallStatus: "FAILED", Checks: []checkJSON{{Check: "size", Message: "m"}}}},
			"JobName": "nightly", "Databases": []databaseJSON{{ID: "d1"}}, "Manifest": &manifestJSON{Engine: "postgresql", Tables: []struct {
				Schema string `json:"schema"`
				Name   string `json:"name"`
				Rows   int64  `json:"rows"`
			}{{Schema: "public", Name: "t", Rows: 3}}}},
		"login": nil, "register": nil, "error": nil,
	}
	for name, data := range pages {
		for _, d := range []any{data, nil} {
			rec := httptest.NewRecorder()
			if name == "login" || name == "register" || name == "error" || d != nil {
				wb.render(rec, nil, 200, name, &session{CSRF: "c"}, view{Data: d, Form: map[string]string{}})
				if rec.Code != 200 || !strings.Contains(rec.Body.String(), "</html>") {
					t.Errorf("%s: %d %s", name, rec.Code, rec.Body.String())
				}
			}
		}
	}
	// The pager keeps the filters.
	rec := httptest.NewRecorder()
	wb.render(rec, nil, 200, "history", &session{CSRF: "c"}, view{Data: pages["history"]})
	for _, want := range []string{`href="?page=1&amp;status=success" rel="prev"`, `href="?page=3&amp;status=success" rel="next"`, "Page 2 of 3"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("history pager lacks %s", want)
		}
	}
	if len(wb.pages) != len(pages) {
		t.Errorf("%d templates, %d rendered here", len(wb.pages), len(pages))
	}
	// A SQL Server database shows its instance, its encryption and the
	// notice that no live server has been tried; the one default
	// encryption is mandatory.
	for enc, want := range map[string]string{"optional": `<option value="optional" selected>`, "": `<option value="mandatory" selected>`} {
		rec = httptest.NewRecorder()
		wb.render(rec, nil, 200, "database_form", &session{CSRF: "c"}, view{Data: map[string]any{
			"DB": databaseJSON{ID: "d1", Type: "mssql", Instance: "SQLEXPRESS", Encrypt: enc}, "Engines": engines.Specs()}})
		body := rec.Body.String()
		for _, want := range []string{want, `<option value="mssql" data-port="1433" selected>`,
			`name="instance" value="SQLEXPRESS"`, `<select id="db-encrypt" name="encrypt">`, `data-error-for="instance"`, `data-error-for="encrypt"`,
			`data-engine-only="mssql" data-mssql-notice`, "SQL Server support has not been exercised against a live SQL Server"} {
			if !strings.Contains(body, want) {
				t.Errorf("database form of an mssql database (encrypt %q) lacks %s", enc, want)
			}
		}
		if strings.Count(body, " selected>") != 2 {
			t.Errorf("database form (encrypt %q) selects %d options, want the type and the encryption", enc, strings.Count(body, " selected>"))
		}
	}
}
