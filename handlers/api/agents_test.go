package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/agent"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/testsupport"
)

// enrollAgent redeems a fresh enrollment token through the API and returns
// the new agent's id.
func enrollAgent(t *testing.T, s *testServer, token string) string {
	t.Helper()
	r := s.do(t, "POST", "/v1/agents/enrollment-tokens", token, nil)
	wantCode(t, r, http.StatusCreated)
	var et struct {
		Token   string `json:"token"`
		Command string `json:"command"`
	}
	r.JSON(t, &et)
	id, err := sealed.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	r = s.do(t, "POST", "/v1/agents/enroll", "", map[string]string{"token": et.Token, "hostname": "db-host-1",
		"os": "linux/amd64", "version": "test", "publicKey": id.Recipient().String()})
	wantCode(t, r, http.StatusCreated)
	var er api.EnrollResponse
	r.JSON(t, &er)
	return er.AgentID.String()
}

type agentResp struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	Hostname string `json:"hostname"`
	OS       string `json:"os"`
	Version  string `json:"version"`
}

func listAgents(t *testing.T, s *testServer, token string) []agentResp {
	t.Helper()
	r := s.do(t, "GET", "/v1/agents", token, nil)
	wantCode(t, r, http.StatusOK)
	var l struct {
		Results []agentResp `json:"results"`
	}
	r.JSON(t, &l)
	return l.Results
}

// waitAgentStatus polls the agents list until agentID has status want.
func waitAgentStatus(t *testing.T, s *testServer, token, agentID, want string, within time.Duration) agentResp {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, a := range listAgents(t, s, token) {
			if a.ID == agentID && a.Status == want {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s not %s within %s: %+v", agentID, want, within, listAgents(t, s, token))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestEnrollmentTokens(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "e@example.com").Tokens.Access.Token
	newToken := func() string {
		r := s.do(t, "POST", "/v1/agents/enrollment-tokens", tok, nil)
		wantCode(t, r, http.StatusCreated)
		var et struct {
			Token   string `json:"token"`
			Command string `json:"command"`
		}
		r.JSON(t, &et)
		if !strings.Contains(et.Command, "rahatback-agent enroll --server ") || !strings.Contains(et.Command, et.Token) {
			t.Fatalf("command %q", et.Command)
		}
		return et.Token
	}
	id, _ := sealed.NewIdentity()
	enroll := func(token, pub string) response {
		return s.do(t, "POST", "/v1/agents/enroll", "", map[string]string{"token": token, "hostname": "h", "publicKey": pub})
	}

	t.Run("OneTime", func(t *testing.T) {
		et := newToken()
		wantCode(t, enroll(et, id.Recipient().String()), http.StatusCreated)
		wantCode(t, enroll(et, id.Recipient().String()), http.StatusUnauthorized)
	})
	t.Run("UnknownToken", func(t *testing.T) {
		wantCode(t, enroll("made-up", id.Recipient().String()), http.StatusUnauthorized)
	})
	t.Run("BadPublicKeyKeepsToken", func(t *testing.T) {
		et := newToken()
		r := enroll(et, "ssh-ed25519 AAAA")
		wantCode(t, r, http.StatusBadRequest)
		if r.Fields(t)["publicKey"] == "" {
			t.Fatalf("%s", r.Body)
		}
		wantCode(t, enroll(et, id.Recipient().String()), http.StatusCreated)
	})
	t.Run("Expired", func(t *testing.T) {
		short := newServer(t, func(o *api.Opts) { o.EnrollmentTTL = time.Millisecond })
		tok := short.register(t, "x@example.com").Tokens.Access.Token
		r := short.do(t, "POST", "/v1/agents/enrollment-tokens", tok, nil)
		var et struct{ Token string }
		r.JSON(t, &et)
		time.Sleep(20 * time.Millisecond)
		wantCode(t, short.do(t, "POST", "/v1/agents/enroll", "", map[string]string{"token": et.Token, "hostname": "h", "publicKey": id.Recipient().String()}), http.StatusUnauthorized)
	})
}

func TestAgentPresenceAndRevoke(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(o *api.Opts) { o.OfflineAfter = 2 * time.Second })
	tok := s.register(t, "ops@example.com").Tokens.Access.Token

	r := s.do(t, "POST", "/v1/agents/enrollment-tokens", tok, nil)
	var et struct{ Token string }
	r.JSON(t, &et)
	dir := t.TempDir()
	st, err := agent.Enroll(context.Background(), agent.EnrollOpts{Server: s.URL, Token: et.Token, StateDir: dir, Name: "db-box"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Enroll(context.Background(), agent.EnrollOpts{Server: s.URL, Token: et.Token, StateDir: dir}); err == nil {
		t.Fatal("enrolled twice into the same state dir")
	}

	// Enrolled but never connected: offline.
	as := listAgents(t, s, tok)
	if len(as) != 1 || as[0].ID != st.AgentID || as[0].Status != "offline" || as[0].Name != "db-box" {
		t.Fatalf("agents %+v", as)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.RunOpts{State: st, Logger: testsupport.Logger(t), Heartbeat: 500 * time.Millisecond, LocalStorageDir: t.TempDir()})
	}()
	got := waitAgentStatus(t, s, tok, st.AgentID, "online", 10*time.Second)
	if got.Hostname == "" || got.OS == "" || got.Version == "" {
		t.Fatalf("presence not reported: %+v", got)
	}

	t.Run("OtherUserCannotSeeOrRevoke", func(t *testing.T) {
		other := s.register(t, "other@example.com").Tokens.Access.Token
		if len(listAgents(t, s, other)) != 0 {
			t.Fatal("other user sees the agent")
		}
		wantCode(t, s.do(t, "DELETE", "/v1/agents/"+st.AgentID, other, nil), http.StatusNotFound)
		waitAgentStatus(t, s, tok, st.AgentID, "online", 5*time.Second)
	})

	t.Run("Revoke", func(t *testing.T) {
		wantCode(t, s.do(t, "DELETE", "/v1/agents/"+st.AgentID, tok, nil), http.StatusNoContent)
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "rejected") {
				t.Fatalf("agent run ended with %v, want a credentials rejection", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("revoked agent still running")
		}
		if len(listAgents(t, s, tok)) != 0 {
			t.Fatal("revoked agent still listed")
		}
		_, err := nats.Connect(st.NATSURL, nats.UserInfo(st.NATSUser, st.NATSPassword))
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("revoked credentials connect: %v", err)
		}
		if _, err := s.nats.JS.Consumer(context.Background(), events.StreamCommands, events.AgentConsumer(st.AgentID)); err == nil {
			t.Fatal("revoked agent's consumer still exists")
		}
	})
	cancel()
}
