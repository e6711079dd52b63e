package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/handlers/api"
)

// TestNotificationChannels: create, read, update, delete and test of
// channels, their validation (URLs checked by the egress policy), secrets
// never answered, another user's channel a 404; the user's default rules
// and a job's own.
func TestNotificationChannels(t *testing.T) {
	t.Parallel()
	var got []*http.Request
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r)
		if strings.HasSuffix(r.URL.Path, "/gone") {
			w.WriteHeader(http.StatusGone)
		}
	}))
	defer hook.Close()
	allow, err := egress.New([]string{strings.TrimPrefix(hook.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, func(o *api.Opts) { o.Egress = allow })
	tok := s.register(t, "channels@example.com").Tokens.Access.Token
	other := s.register(t, "channels-other@example.com").Tokens.Access.Token

	var list []map[string]any
	s.do(t, "GET", "/v1/notification-channels", tok, nil).JSON(t, &list)
	if len(list) != 1 || list[0]["type"] != "email" || list[0]["address"] != "channels@example.com" || list[0]["name"] != "My email" {
		t.Fatalf("a new user's channels: %v", list)
	}

	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"name": "x"}, "type"},
		{map[string]any{"type": "pager"}, "type"},
		{map[string]any{"type": "email", "address": "not an address"}, "address"},
		{map[string]any{"type": "email", "address": "a@example.com", "url": "https://x.example"}, "url"},
		{map[string]any{"type": "webhook", "url": hook.URL + "/h", "secret": "short"}, "secret"},
		{map[string]any{"type": "webhook", "url": "ftp://x.example/", "secret": "0123456789abcdef"}, "url"},
		{map[string]any{"type": "webhook", "url": "https://user:pw@x.example/", "secret": "0123456789abcdef"}, "url"},
		{map[string]any{"type": "slack", "url": "http://127.0.0.1:1/x"}, "url"},
		{map[string]any{"type": "discord", "url": "http://169.254.169.254/"}, "url"},
		{map[string]any{"type": "slack", "url": "http://localhost:1/"}, "url"},
		{map[string]any{"type": "slack", "url": hook.URL + "/s", "secret": "0123456789abcdef"}, "secret"},
	} {
		r := s.do(t, "POST", "/v1/notification-channels", tok, c.body)
		wantCode(t, r, http.StatusBadRequest)
		if r.Fields(t)[c.field] == "" {
			t.Fatalf("%v: no error on %s: %s", c.body, c.field, r.Body)
		}
	}

	const secret = "signing-secret-0123456789"
	var ch map[string]any
	r := s.do(t, "POST", "/v1/notification-channels", tok, map[string]any{"name": "ops", "type": "webhook",
		"url": hook.URL + "/hook/token-in-path", "secret": secret})
	wantCode(t, r, http.StatusCreated)
	r.JSON(t, &ch)
	id := ch["id"].(string)
	if strings.Contains(string(r.Body), secret) || strings.Contains(string(r.Body), "token-in-path") || ch["hasSecret"] != true || ch["url"] != hook.URL+"/…" {
		t.Fatalf("created channel: %s", r.Body)
	}
	wantCode(t, s.do(t, "GET", "/v1/notification-channels/"+id, other, nil), http.StatusNotFound)
	wantCode(t, s.do(t, "PATCH", "/v1/notification-channels/"+id, other, map[string]any{"name": "mine"}), http.StatusNotFound)
	wantCode(t, s.do(t, "POST", "/v1/notification-channels/"+id+"/test", other, nil), http.StatusNotFound)
	wantCode(t, s.do(t, "DELETE", "/v1/notification-channels/"+id, other, nil), http.StatusNotFound)
	wantCode(t, s.do(t, "PATCH", "/v1/notification-channels/"+id, tok, map[string]any{"type": "slack"}), http.StatusBadRequest)

	var res struct {
		Success bool
		Message string
	}
	wantCode(t, s.do(t, "POST", "/v1/notification-channels/"+id+"/test", tok, nil), http.StatusOK)
	s.do(t, "POST", "/v1/notification-channels/"+id+"/test", tok, nil).JSON(t, &res)
	if !res.Success || len(got) != 2 || got[0].URL.Path != "/hook/token-in-path" || got[0].Header.Get("X-RahatBack-Signature") == "" {
		t.Fatalf("test: %+v, %d requests", res, len(got))
	}

	// A new URL answering 410: the test says so, and the channel shows it.
	r = s.do(t, "PATCH", "/v1/notification-channels/"+id, tok, map[string]any{"url": hook.URL + "/gone", "enabled": false})
	wantCode(t, r, http.StatusOK)
	s.do(t, "POST", "/v1/notification-channels/"+id+"/test", tok, nil).JSON(t, &res)
	if res.Success || !strings.Contains(res.Message, "410") || strings.Contains(res.Message, "/gone") {
		t.Fatalf("test of a failing URL: %+v", res)
	}
	s.do(t, "GET", "/v1/notification-channels/"+id, tok, nil).JSON(t, &ch)
	if ch["enabled"] != false || ch["lastError"] == nil || ch["lastSuccessAt"] == nil {
		t.Fatalf("channel after a failed test: %v", ch)
	}

	// Email: no SMTP server here, and the test says so.
	s.do(t, "POST", "/v1/notification-channels/"+list[0]["id"].(string)+"/test", tok, nil).JSON(t, &res)
	if res.Success || !strings.Contains(res.Message, "no SMTP server") {
		t.Fatalf("email test without SMTP: %+v", res)
	}
	wantCode(t, s.do(t, "DELETE", "/v1/notification-channels/"+id, tok, nil), http.StatusNoContent)
	wantCode(t, s.do(t, "GET", "/v1/notification-channels/"+id, tok, nil), http.StatusNotFound)

	t.Run("Cap", func(t *testing.T) {
		u := s.register(t, "channels-many@example.com").Tokens.Access.Token
		for i := 1; i < 20; i++ { // the first is the user's own email
			wantCode(t, s.do(t, "POST", "/v1/notification-channels", u, map[string]any{"type": "email", "address": "x@example.com"}), http.StatusCreated)
		}
		wantCode(t, s.do(t, "POST", "/v1/notification-channels", u, map[string]any{"type": "email", "address": "x@example.com"}), http.StatusConflict)
		wantCode(t, s.do(t, "GET", "/v1/audit?page=100000000&limit=100", u, nil), http.StatusBadRequest)
	})

	t.Run("Rules", func(t *testing.T) {
		var rules map[string]any
		s.do(t, "GET", "/v1/notification-rules", tok, nil).JSON(t, &rules)
		if rules["backupFailed"] != true || rules["backupSucceeded"] != true || rules["restoreFinished"] != false || rules["rpoHours"] != nil {
			t.Fatalf("default rules: %v", rules)
		}
		r := s.do(t, "PUT", "/v1/notification-rules", tok, map[string]any{"backupFailed": true, "rpoHours": -1, "agentOfflineMinutes": 999999})
		wantCode(t, r, http.StatusBadRequest)
		if f := r.Fields(t); f["rpoHours"] == "" || f["agentOfflineMinutes"] == "" {
			t.Fatalf("bad rules: %s", r.Body)
		}
		wantCode(t, s.do(t, "PUT", "/v1/notification-rules", tok, map[string]any{"backupFailed": true, "rpoHours": 26, "agentOfflineMinutes": 15}), http.StatusOK)
		s.do(t, "GET", "/v1/notification-rules", other, nil).JSON(t, &rules)
		if rules["rpoHours"] != nil {
			t.Fatalf("another user's rules changed: %v", rules)
		}
		s.do(t, "GET", "/v1/notification-rules", tok, nil).JSON(t, &rules)
		if rules["rpoHours"] != float64(26) || rules["agentOfflineMinutes"] != float64(15) || rules["backupSucceeded"] != false {
			t.Fatalf("saved rules: %v", rules)
		}
	})
}
