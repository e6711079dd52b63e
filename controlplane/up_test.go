package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rahatback/rahatback/controlplane"
	"github.com/rahatback/rahatback/testsupport"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// endpointHost is the host:port of the URL u, for --allow-endpoint.
func endpointHost(t testing.TB, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		t.Fatalf("endpoint %q: %v", u, err)
	}
	return p.Host
}

type client struct {
	t    testing.TB
	base string
}

type result struct {
	code int
	body []byte
}

func (r result) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (c client) call(method, path, token string, body any) result {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, b}
}

func (c client) want(r result, code int) result {
	c.t.Helper()
	if r.code != code {
		c.t.Fatalf("status %d, want %d: %s", r.code, code, r.body)
	}
	return r
}

func (c client) register(email string) string {
	c.t.Helper()
	r := c.want(c.call("POST", "/v1/auth/register", "", map[string]string{"email": email, "password": "first-user-pw-1"}), 201)
	var out struct {
		Tokens struct {
			Access struct{ Token string } `json:"access"`
		} `json:"tokens"`
	}
	r.decode(c.t, &out)
	return out.Tokens.Access.Token
}

type agentView struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	IsLocal  bool   `json:"isLocal"`
	Hostname string `json:"hostname"`
}

// waitAgents polls GET /v1/agents until ok accepts the list.
func (c client) waitAgents(token string, within time.Duration, what string, ok func([]agentView) bool) []agentView {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var l struct{ Results []agentView }
		c.want(c.call("GET", "/v1/agents", token, nil), 200).decode(c.t, &l)
		if ok(l.Results) {
			return l.Results
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("agents not %s within %s: %+v", what, within, l.Results)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func agentStatus(list []agentView, id string) string {
	for _, a := range list {
		if a.ID == id {
			return a.Status
		}
	}
	return "absent"
}

type system struct {
	cancel context.CancelFunc
	done   chan error
}

func (s system) stop(t testing.TB) {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("rahatback up returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("rahatback up did not shut down within 30s")
	}
}

// startUp runs `rahatback up` in-process, configured through flags and
// RAHATBACK_* variables, and waits until /readyz answers 200.
func startUp(t testing.TB, args []string, env map[string]string, base string) system {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, append([]string{"up"}, args...), func(k string) string { return env[k] },
			io.Discard, testWriter{t})
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return system{cancel, done}
			}
		}
		select {
		case err := <-done:
			t.Fatalf("rahatback up exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("rahatback up not ready within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestNewcomer walks what a new user does: start the system, register, see
// the local agent online, test connections, manage databases, connect a
// second agent with the agent binary, lose it, and restart the system.
func TestNewcomer(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := testsupport.NewDatabase(t)
	// The database users back up: its own role with a password (the test
	// cluster checks passwords with scram-sha-256) and an awkward name.
	appDB := "shop db-" + testsupport.RandomString(4)
	appPassword := "app-" + testsupport.RandomString(8)
	appRole := "app_" + testsupport.RandomString(4)
	if err := testsupport.AdminExec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", appRole, appPassword)); err != nil {
		t.Fatal(err)
	}
	if err := testsupport.AdminExec(ctx, fmt.Sprintf(`CREATE DATABASE "%s" OWNER %s`, appDB, appRole)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = testsupport.AdminExec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS "%s" WITH (FORCE)`, appDB))
	})
	pgPort := testsupport.Cluster().Port()

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	args := []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL}
	env := map[string]string{"RAHATBACK_AGENT_OFFLINE_AFTER": "3s"}
	sys := startUp(t, args, env, base)
	c := client{t, base}

	for _, f := range []string{"master.keys", "jwt.key", "nats.secret"} {
		fi, err := os.Stat(filepath.Join(dataDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}

	token := c.register("newcomer@example.com")
	agents := c.waitAgents(token, 20*time.Second, "one local agent online", func(l []agentView) bool {
		return len(l) == 1 && l[0].IsLocal && l[0].Status == "online"
	})
	localID := agents[0].ID

	conn := map[string]any{"type": "postgresql", "host": "127.0.0.1", "port": pgPort, "username": appRole,
		"password": appPassword, "database": appDB}

	t.Run("TestConnectionGood", func(t *testing.T) {
		var out struct {
			Success bool
			Message string
			Version string
		}
		c.want(c.call("POST", "/v1/databases/test-connection", token, conn), 200).decode(t, &out)
		if !out.Success || !strings.HasPrefix(out.Version, "PostgreSQL ") {
			t.Fatalf("test-connection: %+v", out)
		}
	})
	t.Run("TestConnectionWrongPassword", func(t *testing.T) {
		bad := map[string]any{}
		for k, v := range conn {
			bad[k] = v
		}
		bad["password"] = "wrong"
		var out struct {
			Success bool
			Message string
		}
		c.want(c.call("POST", "/v1/databases/test-connection", token, bad), 200).decode(t, &out)
		if out.Success || !strings.Contains(out.Message, "password authentication failed") {
			t.Fatalf("wrong password: %+v", out)
		}
	})

	var dbID string
	t.Run("DatabaseCRUD", func(t *testing.T) {
		body := map[string]any{"name": "shop"}
		for k, v := range conn {
			body[k] = v
		}
		var d struct {
			ID      string
			AgentID string
		}
		r := c.want(c.call("POST", "/v1/databases", token, body), 201)
		r.decode(t, &d)
		if strings.Contains(string(r.body), appPassword) {
			t.Fatal("password in response")
		}
		if d.AgentID != localID {
			t.Fatalf("database assigned to agent %q, want the online local agent %s", d.AgentID, localID)
		}
		dbID = d.ID
		c.want(c.call("GET", "/v1/databases/"+dbID, token, nil), 200)
		c.want(c.call("PATCH", "/v1/databases/"+dbID, token, map[string]any{"name": "shop (prod)"}), 200)
		var out struct{ Success bool }
		c.want(c.call("POST", "/v1/databases/test-connection", token, map[string]any{"databaseId": dbID}), 200).decode(t, &out)
		if !out.Success {
			t.Fatal("saved database (stored password) does not connect")
		}
	})

	t.Run("SecondUser", func(t *testing.T) {
		other := c.register("second@example.com")
		c.want(c.call("GET", "/v1/databases/"+dbID, other, nil), 404)
		c.want(c.call("PATCH", "/v1/databases/"+dbID, other, map[string]any{"name": "x"}), 404)
		c.want(c.call("DELETE", "/v1/databases/"+dbID, other, nil), 404)
		c.want(c.call("POST", "/v1/databases/test-connection", other, map[string]any{"databaseId": dbID}), 404)
		c.want(c.call("DELETE", "/v1/agents/"+localID, other, nil), 404)
		// The second user has no agent of their own: nobody can run the test.
		r := c.want(c.call("POST", "/v1/databases/test-connection", other, conn), 503)
		if !strings.Contains(string(r.body), "agent") {
			t.Fatalf("503 without a clear message: %s", r.body)
		}
	})

	t.Run("RemoteAgentBinary", func(t *testing.T) {
		bin := buildAgent(t)
		state := enrollAgentBinary(t, c, bin, token, "db-box")
		var remoteID string
		start := func() *exec.Cmd {
			cmd := startAgentBinary(t, bin, state)
			remoteID = c.waitRemoteOnline(token)
			return cmd
		}
		cmd := start()
		withAgent := map[string]any{"agentId": remoteID}
		for k, v := range conn {
			withAgent[k] = v
		}
		var ok struct{ Success bool }
		c.want(c.call("POST", "/v1/databases/test-connection", token, withAgent), 200).decode(t, &ok)
		if !ok.Success {
			t.Fatal("test through the remote agent failed")
		}

		// Graceful stop: offline at once.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		c.waitAgents(token, 5*time.Second, "remote offline after SIGTERM", func(l []agentView) bool { return agentStatus(l, remoteID) == "offline" })
		r := c.want(c.call("POST", "/v1/databases/test-connection", token, withAgent), 503)
		if !strings.Contains(string(r.body), "offline") {
			t.Fatalf("503 body: %s", r.body)
		}

		// Vanishing (SIGKILL, no goodbye): requests fail at once, status
		// turns offline within the configured limit (3s) plus a heartbeat.
		cmd = start()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		killed := time.Now()
		c.want(c.call("POST", "/v1/databases/test-connection", token, withAgent), 503)
		c.waitAgents(token, 15*time.Second, "remote offline after SIGKILL", func(l []agentView) bool { return agentStatus(l, remoteID) == "offline" })
		if d := time.Since(killed); d > 14*time.Second {
			t.Fatalf("offline only after %s", d)
		}
	})

	t.Run("DeleteDatabase", func(t *testing.T) {
		c.want(c.call("DELETE", "/v1/databases/"+dbID, token, nil), 204)
		c.want(c.call("GET", "/v1/databases/"+dbID, token, nil), 404)
	})

	sys.stop(t)

	t.Run("RestartKeepsState", func(t *testing.T) {
		sys := startUp(t, args, env, base)
		defer sys.stop(t)
		// Same signing key (the token still works), same local agent.
		c.waitAgents(token, 20*time.Second, "local agent back online", func(l []agentView) bool {
			return agentStatus(l, localID) == "online" && len(l) == 2
		})
	})
}

// buildAgent builds the rahatback-agent binary once per test.
func buildAgent(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rahatback-agent")
	build := exec.Command("go", "build", "-o", bin, "github.com/rahatback/rahatback/cmd/rahatback-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// enrollAgentBinary enrolls the agent binary with a fresh token, as a user
// does on another host, and returns its state dir.
func enrollAgentBinary(t testing.TB, c client, bin, token, name string) string {
	t.Helper()
	var et struct{ Token, Command string }
	c.want(c.call("POST", "/v1/agents/enrollment-tokens", token, nil), 201).decode(t, &et)
	state := filepath.Join(t.TempDir(), "state")
	out, err := exec.Command(bin, "enroll", "--server", c.base, "--token", et.Token, "--state-dir", state, "--name", name).CombinedOutput()
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	fi, err := os.Stat(filepath.Join(state, "agent.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent state: %v %v", err, fi)
	}
	return state
}

// startAgentBinary runs `rahatback-agent run` (heartbeat 500ms); it is
// killed when the test ends.
func startAgentBinary(t testing.TB, bin, state string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "run", "--state-dir", state, "--heartbeat", "500ms")
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// waitRemoteOnline waits until a non-local agent is online and returns its id.
func (c client) waitRemoteOnline(token string) string {
	c.t.Helper()
	var id string
	c.waitAgents(token, 30*time.Second, "remote agent online", func(l []agentView) bool {
		for _, a := range l {
			if !a.IsLocal && a.Status == "online" {
				id = a.ID
				return true
			}
		}
		return false
	})
	return id
}
