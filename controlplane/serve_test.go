package controlplane_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rahatback/rahatback/agent"
	"github.com/rahatback/rahatback/controlplane"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/testsupport"
)

// TestServeWithExternalNATS runs the control plane as `serve` against a NATS
// server it does not own (as in production) and a remote agent enrolled
// through it.
func TestServeWithExternalNATS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, token, st, stopServe := startServe(t, ctx, "ops@example.com", "--roles", "api,projector")
	if strings.Contains(st.NATSURL, "@") {
		t.Fatalf("agents are given the control plane's NATS credentials: %s", st.NATSURL)
	}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(agentCtx, agent.RunOpts{State: st, Logger: testsupport.Logger(t), LocalStorageDir: t.TempDir()})
	}()
	c.waitAgents(token, 15*time.Second, "online", func(l []agentView) bool { return agentStatus(l, st.AgentID) == "online" })
	var out struct {
		Success bool
		Message string
	}
	c.want(c.call("POST", "/v1/databases/test-connection", token, map[string]any{
		"type": "postgresql", "host": "127.0.0.1", "port": testsupport.Cluster().Port(),
		"username": "nobody", "password": "x", "database": "postgres",
	}), 200).decode(t, &out)
	if out.Success || !strings.Contains(out.Message, "password authentication failed") {
		t.Fatalf("test-connection through the agent: %+v", out)
	}
	stopAgent()
	if err := <-agentDone; err != nil {
		t.Fatal(err)
	}
	if err := stopServe(); err != nil {
		t.Fatal(err)
	}
}

// startServe runs `serve` (with args, every role by default) against a
// fresh database and a NATS server it does not own, as in production;
// registers email, and enrolls an agent through the API (not started). stop
// ends serve and returns its error.
func startServe(t *testing.T, ctx context.Context, email string, args ...string) (c client, token string, st *agent.State, stop func() error) {
	t.Helper()
	dbURL, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, api.AgentAuthenticator(pool))
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, append([]string{"serve", "--http", httpAddr, "--data-dir", t.TempDir(), "--database-url", dbURL,
			"--nats-url", controlPlaneURL(t, n), "--agent-offline-after", "5s"}, args...), func(string) string { return "" }, io.Discard, testWriter{t})
	}()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("serve did not stop")
		}
	}
	t.Cleanup(func() { _ = stop() })
	c = client{t, base}
	deadline := time.Now().Add(30 * time.Second)
	for c.callNoFail("GET", "/readyz") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("serve not ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	token = c.register(email)
	var et struct{ Token string }
	c.want(c.call("POST", "/v1/agents/enrollment-tokens", token, nil), 201).decode(t, &et)
	st, err := agent.Enroll(ctx, agent.EnrollOpts{Server: base, Token: et.Token, StateDir: filepath.Join(t.TempDir(), "a")})
	if err != nil {
		t.Fatal(err)
	}
	return c, token, st, stop
}

func controlPlaneURL(t *testing.T, n *testsupport.NATS) string {
	t.Helper()
	u, err := url.Parse(n.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("rahatback", n.ControlPlanePassword)
	return u.String()
}

func (c client) callNoFail(method, path string) int {
	req, _ := http.NewRequest(method, c.base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
