package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rahatback/rahatback/agent"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/testsupport"
)

func TestActionRateLimitPerUser(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(o *api.Opts) { o.ActionRate = rate.Every(time.Hour); o.ActionBurst = 2 })
	ann := s.register(t, "ann@example.com").Tokens.Access.Token
	bob := s.register(t, "bob@example.com").Tokens.Access.Token
	body := validDB()
	for i := 0; i < 2; i++ {
		// No agent: 503, but each attempt counts.
		wantCode(t, s.do(t, "POST", "/v1/databases/test-connection", ann, body), http.StatusServiceUnavailable)
	}
	r := s.do(t, "POST", "/v1/databases/test-connection", ann, body)
	wantCode(t, r, http.StatusTooManyRequests)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// The budget is per user.
	wantCode(t, s.do(t, "POST", "/v1/databases/test-connection", bob, body), http.StatusServiceUnavailable)
	// Reads are not limited.
	wantCode(t, s.do(t, "GET", "/v1/databases", ann, nil), http.StatusOK)
}

// announce publishes an online presence for agentID, as if it were running
// without pulling its commands.
func announce(t *testing.T, s *testServer, agentID string) {
	t.Helper()
	id := agentID + ":online:test"
	err := events.Publish(context.Background(), s.nats.JS, events.EventSubject(agentID, events.KindAgent, events.PhaseOnline), id,
		events.AgentPresence{V: events.Version, ID: id, AgentID: agentID, Hostname: "h", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
}

func createJob(t *testing.T, s *testServer, token, dbID, name string) string {
	t.Helper()
	r := s.do(t, "POST", "/v1/backups/jobs", token, map[string]any{"databaseId": dbID, "name": name})
	wantCode(t, r, http.StatusCreated)
	var j struct{ ID string }
	r.JSON(t, &j)
	return j.ID
}

func TestAgentQueueLimit(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(o *api.Opts) { o.AgentQueueLimit = 2 })
	tok := s.register(t, "q@example.com").Tokens.Access.Token
	agentID := enrollAgent(t, s, tok)
	announce(t, s, agentID)
	waitAgentStatus(t, s, tok, agentID, "online", 10*time.Second)
	body := validDB()
	body["agentId"] = agentID
	r := s.do(t, "POST", "/v1/databases", tok, body)
	wantCode(t, r, http.StatusCreated)
	var d struct{ ID string }
	r.JSON(t, &d)
	for i, name := range []string{"a", "b", "c"} {
		job := createJob(t, s, tok, d.ID, name)
		r := s.do(t, "POST", "/v1/backups/jobs/"+job+"/run", tok, nil)
		if i < 2 {
			wantCode(t, r, http.StatusAccepted)
			continue
		}
		wantCode(t, r, http.StatusTooManyRequests)
		if !strings.Contains(string(r.Body), "too many commands") {
			t.Fatalf("429 body %s", r.Body)
		}
	}
}

func TestStaleCommandIsNotRun(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(o *api.Opts) { o.CommandTTL = time.Millisecond })
	tok := s.register(t, "stale@example.com").Tokens.Access.Token
	r := s.do(t, "POST", "/v1/agents/enrollment-tokens", tok, nil)
	var et struct{ Token string }
	r.JSON(t, &et)
	st, err := agent.Enroll(context.Background(), agent.EnrollOpts{Server: s.URL, Token: et.Token, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	storage := t.TempDir()
	go func() {
		_ = agent.Run(ctx, agent.RunOpts{State: st, Logger: testsupport.Logger(t), LocalStorageDir: storage, Heartbeat: 500 * time.Millisecond})
	}()
	waitAgentStatus(t, s, tok, st.AgentID, "online", 10*time.Second)
	body := validDB()
	body["agentId"] = st.AgentID
	r = s.do(t, "POST", "/v1/databases", tok, body)
	var d struct{ ID string }
	r.JSON(t, &d)
	job := createJob(t, s, tok, d.ID, "stale")
	r = s.do(t, "POST", "/v1/backups/jobs/"+job+"/run", tok, nil)
	wantCode(t, r, http.StatusAccepted)
	var run struct{ HistoryID string }
	r.JSON(t, &run)
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := s.do(t, "GET", "/v1/backups/history/"+run.HistoryID, tok, nil)
		var h struct{ Status, ErrorMessage string }
		r.JSON(t, &h)
		if h.Status == "failed" {
			if !strings.Contains(h.ErrorMessage, "deadline") {
				t.Fatalf("stale run failed with %q", h.ErrorMessage)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale run still %s", h.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
