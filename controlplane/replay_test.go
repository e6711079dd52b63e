package controlplane_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/testsupport"
)

// TestReplayEveryAction: after a run of every kind of action (backups that
// succeed, are verified, restored, deleted, expired and purged; a purge
// that fails and waits to be retried; a restore that fails; a run lost
// with its agent; a run skipped; a scheduled run), replaying the EVENTS stream into an empty
// schema gives the history and restore tables, row for row.
func TestReplayEveryAction(t *testing.T) {
	ctx := context.Background()
	dbURL, pool := testsupport.NewDatabase(t)
	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL,
		"--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--run-lost-after", "3s", "--retention-interval", "300ms"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("replay@example.com")
	c.waitAgents(token, 30*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	suffix := testsupport.RandomString(4)
	srcName, dstName := "replay_src_"+suffix, "replay_dst_"+suffix
	src := scratchDB(t, srcName)
	scratchDB(t, dstName)
	if _, err := src.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g`); err != nil {
		t.Fatal(err)
	}
	srcDB := c.createDB(token, "src", srcName)
	dstDB := c.createDB(token, "dst", dstName)
	job := func(db, name string, body map[string]any) string {
		t.Helper()
		b := map[string]any{"databaseId": db, "name": name}
		for k, v := range body {
			b[k] = v
		}
		var j struct{ ID string }
		c.want(c.call("POST", "/v1/backups/jobs", token, b), 201).decode(t, &j)
		return j.ID
	}
	succeeded := func(id string) historyView {
		t.Helper()
		h := c.waitHistory(token, id, 60*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
		if h.Status != "success" {
			t.Fatalf("backup %s: %s", id, h.ErrorMessage)
		}
		return h
	}

	// The local agent: verified, restored, then expired and purged by
	// keepLast 1; another backup deleted.
	kept := job(srcDB, "kept", map[string]any{"keepLast": 1, "retentionDays": 0})
	first := c.runJob(token, kept)
	succeeded(first)
	var v struct{ VerificationID string }
	c.want(c.call("POST", "/v1/backups/history/"+first+"/verify", token, map[string]any{"verificationLevel": "BASIC"}), 202).decode(t, &v)
	c.waitHistory(token, first, 60*time.Second, "verified", func(h historyView) bool { return h.VerificationStatus == "PASSED" })
	var rs struct{ RestoreHistoryID string }
	c.want(c.call("POST", "/v1/backups/history/"+first+"/restore", token, map[string]any{"targetDatabaseId": dstDB}), 202).decode(t, &rs)
	if r := c.waitRestore(token, rs.RestoreHistoryID, 60*time.Second); r["status"] != "success" {
		t.Fatalf("restore: %v", r)
	}
	succeeded(c.runJob(token, kept))
	c.waitHistory(token, first, 30*time.Second, "expired and purged", func(h historyView) bool { return h.Status == "expired" && h.PurgedAt != nil })
	gone := c.runJob(token, job(srcDB, "deleted", nil))
	succeeded(gone)
	c.want(c.call("DELETE", "/v1/backups/history/"+gone, token, nil), 204)

	// A scheduled run: a daily slot two minutes ago that the scheduler has
	// not handled yet (within the grace period) runs once.
	slot := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Minute)
	scheduled := job(srcDB, "scheduled", map[string]any{"scheduleType": "custom", "timezone": "UTC",
		"cronExpression": fmt.Sprintf("%d %d * * *", slot.Minute(), slot.Hour())})
	if _, err := pool.Exec(ctx, `UPDATE backup_jobs SET scheduled_through = $2, updated_at = now() WHERE id = $1`,
		scheduled, slot.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var page struct{ Results []historyView }
		c.want(c.call("GET", "/v1/backups/history?backupJobId="+scheduled, token, nil), 200).decode(t, &page)
		if len(page.Results) == 1 {
			succeeded(page.Results[0].ID)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scheduled slot %s did not run: %+v", slot, page.Results)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A second agent, driven by hand: its backups succeed, its restore
	// fails, its expired backup cannot be deleted (nothing answers for
	// it), then it goes silent with a run in flight, then a run is skipped.
	remote := enrollAgent(t, c, token, "remote")
	beat, stopBeat := context.WithCancel(ctx)
	defer stopBeat()
	go func() {
		for beat.Err() == nil {
			remote.online("remote")
			select {
			case <-beat.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	c.waitAgents(token, 10*time.Second, "remote online", func(l []agentView) bool { return agentStatus(l, remote.id) == "online" })
	var remoteDB struct{ ID string }
	u, p := pgCredentials(t)
	c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": "remote-db", "type": "postgresql", "host": "127.0.0.1",
		"port": testsupport.Cluster().Port(), "username": u, "password": p, "database": srcName, "agentId": remote.id}), 201).decode(t, &remoteDB)
	onRemote := job(remoteDB.ID, "on remote", map[string]any{"keepLast": 1, "retentionDays": 0})
	older := c.runJob(token, onRemote)
	remote.complete(remote.nextCommand())
	succeeded(older)
	newer := c.runJob(token, onRemote)
	remote.complete(remote.nextCommand())
	succeeded(newer)
	c.waitHistory(token, older, 30*time.Second, "expired, its deletion failed", func(h historyView) bool { return h.Status == "expired" && h.PurgedAt == nil })
	deadline = time.Now().Add(30 * time.Second)
	for {
		var attempts int
		var failure *string
		if err := pool.QueryRow(ctx, `SELECT expire_attempts, expire_error FROM backup_history WHERE id = $1`, older).Scan(&attempts, &failure); err != nil {
			t.Fatal(err)
		}
		if attempts == 1 && failure != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failed purge was not recorded: %d attempts, error %v", attempts, failure)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.want(c.call("POST", "/v1/backups/history/"+newer+"/restore", token, map[string]any{"targetDatabaseId": dstDB}), 202).decode(t, &rs)
	cmd := remote.nextCommand()
	var restore events.RestoreCommand
	if err := events.Decode(cmd.Data(), &restore); err != nil {
		t.Fatal(err)
	}
	remote.publish(events.EventSubject(remote.id, events.KindRestore, events.PhaseStarted), events.RestoreEvent{V: events.Version,
		ID: uuid.NewString(), RestoreID: restore.RestoreID, At: time.Now().UTC()})
	remote.publish(events.EventSubject(remote.id, events.KindRestore, events.PhaseFailed), events.RestoreEvent{V: events.Version,
		ID: uuid.NewString(), RestoreID: restore.RestoreID, At: time.Now().UTC(), Error: "psql: the target refused"})
	if err := cmd.Ack(); err != nil {
		t.Fatal(err)
	}
	if r := c.waitRestore(token, restore.RestoreID, 20*time.Second); r["status"] != "failed" {
		t.Fatalf("restore on the remote agent: %v", r)
	}
	lost := c.runJob(token, onRemote)
	stopBeat()
	c.waitHistory(token, lost, 30*time.Second, "lost", func(h historyView) bool { return h.Status == "failed" })
	c.waitAgents(token, 10*time.Second, "remote offline", func(l []agentView) bool { return agentStatus(l, remote.id) == "offline" })
	var skipped struct{ HistoryID, Status string }
	c.want(c.call("POST", "/v1/backups/jobs/"+onRemote+"/run", token, nil), 202).decode(t, &skipped)
	if skipped.Status != "skipped" {
		t.Fatalf("run with its agent offline: %+v", skipped)
	}

	assertReplay(t, pool, dataDir, "backup_history", "restore_history")
}
