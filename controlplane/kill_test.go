package controlplane_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rahatback/rahatback/testsupport"
)

// TestAgentKilledMidBackup kills the agent binary while its backup runs:
// the run ends failed, no partial file remains once the agent is back, and
// the next run succeeds. While the first run is active, another is 409.
func TestAgentKilledMidBackup(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := testsupport.NewDatabase(t)
	name := "killme_" + testsupport.RandomString(4)
	src := scratchDB(t, name)
	if _, err := src.Exec(ctx, `CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}

	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--run-lost-after", "3s"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("killer@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	bin := buildAgent(t)
	state := enrollAgentBinary(t, c, bin, token, "remote")
	cmd := startAgentBinary(t, bin, state)
	remoteID := c.waitRemoteOnline(token)
	dbID := c.createDB(token, "victim", name)
	c.want(c.call("PATCH", "/v1/databases/"+dbID, token, map[string]any{"agentId": remoteID}), 200)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": dbID, "name": "j"}), 201).decode(t, &job)

	// Hold a lock so pg_dump waits: the run is started, its partial file
	// exists, and nothing completes until the agent is killed.
	lock, err := src.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	runID := c.runJob(token, job.ID)
	c.waitHistory(token, runID, 20*time.Second, "running", func(h historyView) bool { return h.Status == "running" })
	deadline := time.Now().Add(10 * time.Second)
	for len(findFiles(t, state, ".partial")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no partial file while the backup runs")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := c.want(c.call("POST", "/v1/backups/jobs/"+job.ID+"/run", token, nil), 409)
	if !strings.Contains(string(r.body), "running") {
		t.Fatalf("409 body: %s", r.body)
	}

	// The storage may open its partial file before pg_dump's passfile is
	// written: wait for it.
	runtimeDir := filepath.Join(os.TempDir(), "rahatback-agent-"+remoteID)
	deadline = time.Now().Add(10 * time.Second)
	for pf := findFiles(t, runtimeDir, "rahatback-pgpass-"); len(pf) != 1; pf = findFiles(t, runtimeDir, "rahatback-pgpass-") {
		if time.Now().After(deadline) {
			t.Fatalf("passfiles while pg_dump runs: %v", pf)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	_ = lock.Rollback(ctx)

	h := c.waitHistory(token, runID, 30*time.Second, "failed", func(h historyView) bool { return h.Status == "failed" })
	if !strings.Contains(h.ErrorMessage, "agent") {
		t.Fatalf("error message %q", h.ErrorMessage)
	}

	// Back on its feet, the agent removes what the killed run left.
	startAgentBinary(t, bin, state)
	c.waitAgents(token, 20*time.Second, "remote back", func(l []agentView) bool { return agentStatus(l, remoteID) == "online" })
	if left := findFiles(t, state, runID); len(left) != 0 {
		t.Fatalf("files of the killed run remain: %v", left)
	}
	if left := findFiles(t, state, ".partial"); len(left) != 0 {
		t.Fatalf("partial files remain: %v", left)
	}
	if left := findFiles(t, runtimeDir, "rahatback-pgpass-"); len(left) != 0 {
		t.Fatalf("the killed run's passfile (the database password) remains: %v", left)
	}

	next := c.runJob(token, job.ID)
	h = c.waitHistory(token, next, 60*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		t.Fatalf("next run: %s %s", h.Status, h.ErrorMessage)
	}
	if files := findFiles(t, state, next); len(files) != 2 {
		t.Fatalf("next run's files: %v", files)
	}
}
