package controlplane_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
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

// slowRestoreSchema makes a database whose restore anywhere else is slow:
// each row of slow_t passes a CHECK that sleeps 50 ms outside the source
// database (name), so a restore stays inside its COPY for about 5 s; t's
// data, after it, is more than a pipe holds, so the agent is still writing
// the dump meanwhile.
func slowRestoreSchema(name string) string {
	return `CREATE FUNCTION slow(x int) RETURNS boolean LANGUAGE sql AS $$
			SELECT CASE WHEN current_database() = ` + quoteLiteral(name) + ` THEN true
			ELSE (SELECT true FROM pg_catalog.pg_sleep(0.05)) END $$;
		CREATE TABLE slow_t (id int PRIMARY KEY CHECK (public.slow(id)));
		INSERT INTO slow_t SELECT g FROM generate_series(1, 100) g;
		CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100000) g;`
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// waitScratch polls the test cluster until it holds want scratch
// databases.
func waitScratch(t *testing.T, want int, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := pgScratchCount(t)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d scratch databases, want %d", what, n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentKilledMidVerifyAndRestore kills the agent binary (SIGKILL)
// during a FULL verification's test restore, and again during a restore:
// at its next start the agent drops the scratch database the killed
// verification left, the verification (redelivered) then passes, and the
// killed restore leaves its target exactly as it was.
func TestAgentKilledMidVerifyAndRestore(t *testing.T) {
	// Mostly waiting (for a command's redelivery), it runs beside the
	// other parallel tests of this package, which start no FULL
	// verification: the scratch databases it counts are its own.
	t.Parallel()
	ctx := context.Background()
	dbURL, _ := testsupport.NewDatabase(t)
	name := "slow_" + testsupport.RandomString(4)
	src := scratchDB(t, name)
	if _, err := src.Exec(ctx, slowRestoreSchema(name)); err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--run-lost-after", "3s"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("killer2@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	bin := buildAgent(t)
	state := enrollAgentBinary(t, c, bin, token, "remote")
	cmd := startAgentBinary(t, bin, state)
	remoteID := c.waitRemoteOnline(token)
	restart := func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		cmd = startAgentBinary(t, bin, state)
		c.waitAgents(token, 20*time.Second, "remote back", func(l []agentView) bool { return agentStatus(l, remoteID) == "online" })
	}
	dbID := c.createDB(token, "slow", name)
	c.want(c.call("PATCH", "/v1/databases/"+dbID, token, map[string]any{"agentId": remoteID}), 200)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": dbID, "name": "j"}), 201).decode(t, &job)
	run := c.runJob(token, job.ID)
	if h := c.waitHistory(token, run, time.Minute, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" }); h.Status != "success" {
		t.Fatalf("backup: %s", h.ErrorMessage)
	}

	t.Run("Verify", func(t *testing.T) {
		c.want(c.call("POST", "/v1/backups/history/"+run+"/verify", token, map[string]any{"verificationLevel": "FULL"}), 202)
		waitScratch(t, 1, 30*time.Second, "while the test restore runs")
		time.Sleep(500 * time.Millisecond) // into the slow COPY
		restart()
		// Dropped at the start, before the command comes again (its ack
		// wait is a minute).
		waitScratch(t, 0, 20*time.Second, "after the agent restarted")
		v := c.waitHistory(token, run, 3*time.Minute, "verified", func(h historyView) bool {
			return h.VerificationStatus != "PENDING" && h.VerificationStatus != ""
		})
		passedChecks(t, v, append(databaseChecks, fullChecks...)...)
		waitScratch(t, 0, 10*time.Second, "after the redelivered verification")
	})

	t.Run("Restore", func(t *testing.T) {
		targetName := "target_" + testsupport.RandomString(4)
		target := scratchDB(t, targetName)
		if _, err := target.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'keep me');
			CREATE TABLE other (x int); INSERT INTO other VALUES (42);`); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, target)
		targetID := c.createDB(token, "target", targetName)
		c.want(c.call("PATCH", "/v1/databases/"+targetID, token, map[string]any{"agentId": remoteID}), 200)
		var rs struct{ RestoreHistoryID string }
		c.want(c.call("POST", "/v1/backups/history/"+run+"/restore", token, map[string]any{"targetDatabaseId": targetID}), 202).decode(t, &rs)
		// Wait until psql works on the target, inside the slow COPY.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var n int
			if err := target.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'rahatback-agent'`, targetName).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the restore never connected to its target")
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second)
		restart()
		r := c.waitRestore(token, rs.RestoreHistoryID, 2*time.Minute)
		if r["status"] != "failed" {
			t.Fatalf("the killed restore: %v", r)
		}
		// psql has gone (its transaction with it) once nothing of the
		// agent's is connected to the target.
		deadline = time.Now().Add(30 * time.Second)
		for {
			var n int
			if err := target.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'rahatback-agent'`, targetName).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the killed restore's session stays")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if after := snapshot(t, target); !reflect.DeepEqual(after, before) {
			t.Fatalf("the killed restore changed its target:\n%v\nwas\n%v", after, before)
		}
	})
}
