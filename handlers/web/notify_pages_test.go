package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/rahatback/rahatback/notify"
)

// signedIn is a browser signed in to a dashboard over a fake API.
func signedIn(t *testing.T) (*browser, *fakeAPI) {
	t.Helper()
	b, api := newBrowser(t, Opts{})
	if resp := b.login("right-pw-1"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	return b, api
}

func (f *fakeAPI) answer(path string, code int, body any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[path] = fakeAnswer{code, body}
}

func (f *fakeAPI) sent(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, q := range f.queries {
		if strings.HasPrefix(q, prefix) {
			out = append(out, q)
		}
	}
	return out
}

func TestWebRunPage(t *testing.T) {
	t.Run("SignedOut", func(t *testing.T) {
		b, _ := newBrowser(t, Opts{})
		resp, _ := b.do("GET", "/history/8d0c7f4e-1111-4222-8333-944445555666", "", "", nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fhistory%2F8d0c7f4e-1111-4222-8333-944445555666" {
			t.Fatalf("signed out: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("Success", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/backups/history/r1", 200, map[string]any{"id": "r1", "backupJobId": "j1", "databaseId": "d1", "agentId": "a1",
			"status": "success", "queuedAt": "2026-01-02T03:04:05Z", "fileName": "<b>f</b>.sql.zst", "fileSize": 2048, "rawSize": 8192,
			"compression": "zstd", "storageType": "local", "checksumValue": "abc", "checksumAlgorithm": "sha256",
			"verificationStatus": "PASSED", "verificationResult": map[string]any{"overallStatus": "PASSED", "verificationMethod": "BASIC",
				"checks": []any{map[string]any{"check": "checksum", "passed": true, "message": "matches"}}},
			"manifest": map[string]any{"engine": "postgresql", "database": "shop", "tables": []any{map[string]any{"schema": "public", "name": "orders", "rows": 42}}}})
		api.answer("/v1/backups/jobs/j1", 200, map[string]any{"id": "j1", "name": "nightly"})
		api.answer("/v1/databases", 200, map[string]any{"results": []any{map[string]any{"id": "d1", "name": "shop-db"}}})
		api.answer("/v1/agents", 200, map[string]any{"results": []any{map[string]any{"id": "a1", "name": "box-1"}}})
		resp, html := b.do("GET", "/history/r1", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("run page: %d\n%s", resp.StatusCode, html)
		}
		for _, want := range []string{"Backup of nightly", `href="/jobs/j1"`, "shop-db", "box-1", "2.0 KB", "8.0 KB before compression",
			"&lt;b&gt;f&lt;/b&gt;.sql.zst", "✓ checksum", "public.orders", ">42<", `data-verify="r1"`, `data-restore="r1"`,
			`data-action="DELETE /backups/history/r1"`, `data-redirect="/history"`, `id="restore-dialog"`} {
			if !strings.Contains(html, want) {
				t.Errorf("run page lacks %s", want)
			}
		}
		if strings.Contains(html, "<b>f</b>") {
			t.Error("the file name is not escaped")
		}
	})
	t.Run("DeletedJob", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/backups/history/r2", 200, map[string]any{"id": "r2", "backupJobId": "gone", "status": "failed",
			"queuedAt": "2026-01-02T03:04:05Z", "errorMessage": "pg_dump: connection refused"})
		api.answer("/v1/backups/jobs/gone", 404, map[string]any{"code": 404, "message": "job not found"})
		resp, html := b.do("GET", "/history/r2", "", "", nil)
		if resp.StatusCode != 200 || !strings.Contains(html, "(deleted job)") || !strings.Contains(html, "pg_dump: connection refused") {
			t.Fatalf("run of a deleted job: %d\n%s", resp.StatusCode, html)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/backups/history/missing", 404, map[string]any{"code": 404, "message": "backup not found"})
		resp, html := b.do("GET", "/history/missing", "", "", nil)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(html, "backup not found") {
			t.Fatalf("missing run: %d\n%s", resp.StatusCode, html)
		}
	})
}

func TestWebAuditPage(t *testing.T) {
	t.Run("Filters", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/audit", 200, map[string]any{"results": []any{map[string]any{"id": "e1", "at": "2026-01-02T03:04:05Z",
			"action": "backup.run", "objectType": "job", "objectId": "j1", "outcome": "failure", "statusCode": 503,
			"detail": "no <agent> online", "ip": "10.0.0.1"}}, "page": 2, "limit": 25, "totalPages": 3, "totalResults": 60})
		resp, html := b.do("GET", "/audit?action=backup.&outcome=failure&fromDate=2026-01-02&toDate=2026-01-03&page=2", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("audit: %d\n%s", resp.StatusCode, html)
		}
		got := api.sent("GET /v1/audit?")
		if len(got) != 1 {
			t.Fatalf("audit calls %v", got)
		}
		u, _ := url.Parse(strings.TrimPrefix(got[0], "GET "))
		want := url.Values{"action": {"backup."}, "outcome": {"failure"}, "from": {"2026-01-02T00:00:00Z"},
			"to": {"2026-01-04T00:00:00Z"}, "page": {"2"}, "limit": {"25"}}
		if u.Query().Encode() != want.Encode() {
			t.Fatalf("audit query %s, want %s", u.Query().Encode(), want.Encode())
		}
		for _, want := range []string{"backup.run", `href="/jobs/j1"`, "no &lt;agent&gt; online", ">503<", "Page 2 of 3",
			`rel="prev"`, `rel="next"`, `value="backup."`, `<option selected>failure</option>`} {
			if !strings.Contains(html, want) {
				t.Errorf("audit page lacks %s", want)
			}
		}
		if !strings.Contains(html, `href="?action=backup.&amp;fromDate=2026-01-02&amp;outcome=failure&amp;page=1`) {
			t.Errorf("the pager does not keep the filters")
		}
	})
	t.Run("BadFilter", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/audit", 400, map[string]any{"code": 400, "message": "invalid fields: from",
			"fields": map[string]string{"from": "must be an RFC 3339 time"}})
		resp, html := b.do("GET", "/audit?from=yesterday", "", "", nil)
		if resp.StatusCode != 200 || !strings.Contains(html, "invalid fields: from; from must be an RFC 3339 time") {
			t.Fatalf("bad filter: %d\n%s", resp.StatusCode, html)
		}
	})
}

func TestWebChannelsPage(t *testing.T) {
	t.Run("List", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/notification-channels", 200, []any{
			map[string]any{"id": "c1", "name": "<ops>", "type": "email", "enabled": true, "address": "ops@example.com"},
			map[string]any{"id": "c2", "name": "hook", "type": "webhook", "enabled": false, "url": "https://hooks.example.com/…",
				"hasSecret": true, "lastError": "503 Service Unavailable", "lastErrorAt": "2026-01-02T03:04:05Z"}})
		api.answer("/v1/notification-rules", 200, map[string]any{"backupFailed": true, "rpoHours": 6})
		resp, html := b.do("GET", "/channels?saved=rules", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("channels: %d\n%s", resp.StatusCode, html)
		}
		for _, want := range []string{"&lt;ops&gt;", "ops@example.com", "https://hooks.example.com/…", "503 Service Unavailable",
			`data-test-channel="c1"`, `href="/channels/c2/edit"`, `data-action="DELETE /notification-channels/c2"`,
			`data-body='{"enabled":true}'`, `data-api="POST /notification-channels"`, `data-api="PUT /notification-rules"`,
			`id="rules-failed" name="backupFailed" type="checkbox" checked`, `name="rpoHours" type="number" data-type="number" min="0" value="6"`,
			"Default rules saved.", `aria-current="page">Notifications`} {
			if !strings.Contains(html, want) {
				t.Errorf("channels page lacks %s", want)
			}
		}
	})
	t.Run("Edit", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/notification-channels", 200, []any{})
		api.answer("/v1/notification-channels/c2", 200, map[string]any{"id": "c2", "name": "hook", "type": "webhook",
			"enabled": true, "url": "https://hooks.example.com/…", "hasSecret": true})
		resp, html := b.do("GET", "/channels/c2/edit", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("edit: %d", resp.StatusCode)
		}
		for _, want := range []string{`data-api="PATCH /notification-channels/c2"`, `name="type" data-channel-type disabled`,
			`<option value="webhook" selected>`, `placeholder="unchanged: https://hooks.example.com/…"`, `name="secret" type="password" autocomplete="new-password" data-omit-empty placeholder="unchanged"`} {
			if !strings.Contains(html, want) {
				t.Errorf("edit form lacks %s", want)
			}
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/notification-channels", 200, []any{})
		api.answer("/v1/notification-channels/other", 404, map[string]any{"code": 404, "message": "notification channel not found"})
		if resp, _ := b.do("GET", "/channels/other/edit", "", "", nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("another user's channel: %d", resp.StatusCode)
		}
	})
}

func TestWebJobFormRules(t *testing.T) {
	b, api := signedIn(t)
	api.answer("/v1/notification-rules", 200, map[string]any{"backupFailed": true, "backupSucceeded": true, "agentOfflineMinutes": 10})
	// A job on the defaults: "use my default rules" is checked, its own
	// fields start from the defaults.
	_, html := b.do("GET", "/jobs/new", "", "", nil)
	for _, want := range []string{`name="notificationRules" data-type="json" value="null"`, `data-notify-default checked`,
		`data-rule="backupFailed" checked`, `data-rule="backupSucceeded" checked`, `data-rule="backupSkipped" >`,
		"failed backups, successful backups, an agent offline for more than 10 min"} {
		if !strings.Contains(html, want) {
			t.Errorf("new job form lacks %s", want)
		}
	}
	api.answer("/v1/backups/jobs/j1", 200, map[string]any{"id": "j1", "name": "x", "notificationRules": map[string]any{"backupSkipped": true, "rpoHours": 12}})
	_, html = b.do("GET", "/jobs/j1/edit", "", "", nil)
	for _, want := range []string{`data-notify-default >`, `data-rule="backupSkipped" checked`, `data-rule="backupFailed" >`,
		`data-rule="rpoHours" value="12"`} {
		if !strings.Contains(html, want) {
			t.Errorf("job with its own rules lacks %s", want)
		}
	}
}

func TestWebRulesSummary(t *testing.T) {
	n, zero := 6, 0
	for _, c := range []struct {
		r    *rulesJSON
		want string
	}{
		{nil, "your default rules"},
		{&rulesJSON{}, "nothing"},
		{&rulesJSON{RPOHours: &zero}, "nothing"},
		{&rulesJSON{BackupFailed: true, RestoreFinished: true, RPOHours: &n}, "failed backups, finished restores, no good backup for 6 h"},
	} {
		if got := rulesSummary(c.r); got != c.want {
			t.Errorf("rulesSummary(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
}

// TestWebChannelTypes: the form offers every type the API accepts.
func TestWebChannelTypes(t *testing.T) {
	var offered []string
	for _, c := range channelTypes {
		offered = append(offered, c.Value)
	}
	want := slices.Clone(notify.Types)
	slices.Sort(want)
	slices.Sort(offered)
	if !slices.Equal(offered, want) {
		t.Fatalf("the form offers %v, the API accepts %v", offered, want)
	}
}
