package controlplane_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/testsupport"
)

// testAgent is an agent enrolled through the API whose NATS connection the
// test drives by hand, with the credentials a real agent gets: every
// publish goes through the auth callout's permissions and account.
type testAgent struct {
	t  *testing.T
	id string
	nc *nats.Conn
	js jetstream.JetStream
}

// enrollAgent joins a new agent to the user of token and connects to NATS
// as it.
func enrollAgent(t *testing.T, c client, token, name string) *testAgent {
	t.Helper()
	var et struct{ Token string }
	c.want(c.call("POST", "/v1/agents/enrollment-tokens", token, nil), 201).decode(t, &et)
	id, err := sealed.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	var creds struct{ AgentID, NATSURL, NATSUser, NATSPassword string }
	c.want(c.call("POST", "/v1/agents/enroll", "", map[string]any{"token": et.Token, "name": name, "hostname": name,
		"os": "linux/amd64", "version": "test", "publicKey": id.Recipient().String()}), 201).decode(t, &creds)
	nc, err := nats.Connect(creds.NATSURL, nats.UserInfo(creds.NATSUser, creds.NATSPassword),
		nats.CustomInboxPrefix(events.AgentInboxPrefix(creds.AgentID)),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // permission violations are expected
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &testAgent{t: t, id: creds.AgentID, nc: nc, js: js}
}

// online announces the agent as a running agent does.
func (a *testAgent) online(host string) {
	a.t.Helper()
	a.publish(events.EventSubject(a.id, events.KindAgent, events.PhaseOnline), events.AgentPresence{V: events.Version,
		ID: uuid.NewString(), AgentID: a.id, Hostname: host, OS: "linux/amd64", Version: "test", At: time.Now().UTC()})
}

// publish publishes payload to the EVENTS stream and waits for its ack.
func (a *testAgent) publish(subject string, payload any) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.Publish(ctx, a.js, subject, uuid.NewString(), payload); err != nil {
		a.t.Fatalf("publish %s: %v", subject, err)
	}
}

// tryPublish publishes payload to subject on core NATS: whatever the server
// makes of it (a permission violation for a subject not the agent's).
func (a *testAgent) tryPublish(subject string, payload any) {
	a.t.Helper()
	data, _ := json.Marshal(payload)
	if err := a.nc.Publish(subject, data); err != nil {
		a.t.Fatal(err)
	}
}

// nextCommand fetches the agent's next command.
func (a *testAgent) nextCommand() jetstream.Msg {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := a.js.Consumer(ctx, events.StreamCommands, events.AgentConsumer(a.id))
	if err != nil {
		a.t.Fatal(err)
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			a.t.Fatal(err)
		}
		for m := range batch.Messages() {
			return m
		}
	}
	a.t.Fatal("no command arrived within 20 s")
	return nil
}

// complete runs the backup command msg as an agent would report it.
func (a *testAgent) complete(msg jetstream.Msg) string {
	a.t.Helper()
	var cmd events.BackupCommand
	if err := events.Decode(msg.Data(), &cmd); err != nil {
		a.t.Fatal(err)
	}
	at := time.Now().UTC()
	a.publish(events.EventSubject(a.id, events.KindBackup, events.PhaseStarted), events.BackupEvent{V: events.Version, ID: uuid.NewString(), RunID: cmd.RunID, At: at})
	a.publish(events.EventSubject(a.id, events.KindBackup, events.PhaseProgress), events.BackupEvent{V: events.Version, ID: uuid.NewString(), RunID: cmd.RunID, At: at, Seq: 1, Step: "dump", Percent: 50})
	a.publish(events.EventSubject(a.id, events.KindBackup, events.PhaseCompleted), events.BackupEvent{V: events.Version, ID: uuid.NewString(), RunID: cmd.RunID, At: at,
		FileName: a.id + ".sql.zst", StorageKey: "own/" + a.id + ".sql.zst", FileSize: 7, RawSize: 9, Checksum: "00", ChecksumAlgorithm: "sha256"})
	if err := msg.Ack(); err != nil {
		a.t.Fatal(err)
	}
	return cmd.RunID
}

// userState is everything of a user's that another agent could try to
// change: the history with its verification and restore status, whether
// each run still answers, and the restores.
type userState struct {
	History  []map[string]any
	Runs     map[string]int
	Restores []map[string]any
}

func (c client) state(token string) userState {
	c.t.Helper()
	var h, r struct{ Results []map[string]any }
	c.want(c.call("GET", "/v1/backups/history?limit=100", token, nil), 200).decode(c.t, &h)
	c.want(c.call("GET", "/v1/restores?limit=100", token, nil), 200).decode(c.t, &r)
	s := userState{History: h.Results, Restores: r.Results, Runs: map[string]int{}}
	for _, row := range h.Results {
		id, _ := row["id"].(string)
		s.Runs[id] = c.call("GET", "/v1/backups/history/"+id, token, nil).code
	}
	return s
}

// TestAgentAuthority: an agent's events move only what was sent to that
// agent. Mallory's agent (another tenant) and Alice's second agent (her
// own, but not the one her runs were sent to) publish every phase of every
// kind, with their real credentials, about Alice's backups, restore and
// verification, and try the control plane's subjects. Alice's history does
// not change. The agents' own events keep working.
func TestAgentAuthority(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	dataDir := t.TempDir()
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	alice := c.register("alice@example.com") // the local agent is hers
	mallory := c.register("mallory@example.com")
	c.waitAgents(alice, 30*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	// Alice's real backup (by the local agent), its restore and its
	// verification.
	suffix := testsupport.RandomString(4)
	srcName, dstName := "auth_src_"+suffix, "auth_dst_"+suffix
	src := scratchDB(t, srcName)
	scratchDB(t, dstName)
	if _, err := src.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	srcDB := c.createDB(alice, "alice-src", srcName)
	dstDB := c.createDB(alice, "alice-dst", dstName)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", alice, map[string]any{"databaseId": srcDB, "name": "alice-job"}), 201).decode(t, &job)
	backup := c.runJob(alice, job.ID)
	h := c.waitHistory(alice, backup, 60*time.Second, "succeeded", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		t.Fatalf("Alice's backup: %+v", h)
	}
	var rs struct{ RestoreHistoryID string }
	c.want(c.call("POST", "/v1/backups/history/"+backup+"/restore", alice, map[string]any{"targetDatabaseId": dstDB}), 202).decode(t, &rs)
	if r := c.waitRestore(alice, rs.RestoreHistoryID, 60*time.Second); r["status"] != "success" {
		t.Fatalf("Alice's restore: %v", r)
	}
	var vr struct{ VerificationID string }
	c.want(c.call("POST", "/v1/backups/history/"+backup+"/verify", alice, map[string]any{"verificationLevel": "BASIC"}), 202).decode(t, &vr)
	c.waitHistory(alice, backup, 60*time.Second, "verified", func(h historyView) bool { return h.VerificationStatus == "PASSED" })

	// Alice's second agent, with a run of its own waiting; Mallory's agent.
	second := enrollAgent(t, c, alice, "alice-second")
	second.online("alice-second")
	mal := enrollAgent(t, c, mallory, "mallory-box")
	mal.online("mallory-box")
	var secondDB struct{ ID string }
	u, p := pgCredentials(t)
	c.want(c.call("POST", "/v1/databases", alice, map[string]any{"name": "on-second", "type": "postgresql", "host": "127.0.0.1",
		"port": testsupport.Cluster().Port(), "username": u, "password": p, "database": srcName, "agentId": second.id}), 201).decode(t, &secondDB)
	var secondJob struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", alice, map[string]any{"databaseId": secondDB.ID, "name": "second-job"}), 201).decode(t, &secondJob)
	c.waitAgents(alice, 10*time.Second, "second agent online", func(l []agentView) bool { return agentStatus(l, second.id) == "online" })
	queued := c.runJob(alice, secondJob.ID)
	if h := c.history(alice, queued); h.Status != "queued" {
		t.Fatalf("Alice's run on her second agent: %+v", h)
	}
	before := c.state(alice)

	// Every phase of every kind, about every one of Alice's runs, from
	// each attacker on its own subjects, and on the control plane's and
	// the other agents' subjects.
	var localID string
	for _, a := range c.waitAgents(alice, time.Second, "listed", func([]agentView) bool { return true }) {
		if a.IsLocal {
			localID = a.ID
		}
	}
	var me struct{ ID string }
	c.want(c.call("GET", "/v1/auth/me", alice, nil), 200).decode(t, &me)
	now := time.Now().UTC()
	result := &events.VerificationResult{OverallStatus: "FAILED", VerificationMethod: "BASIC",
		Checks: []events.Check{{Check: "checksum", Passed: false, Message: "forged"}}}
	payloads := func(kind string) []any {
		switch kind {
		case events.KindBackup:
			var out []any
			for _, run := range []string{backup, queued, uuid.NewString()} {
				out = append(out, events.BackupEvent{V: events.Version, ID: uuid.NewString(), RunID: run, At: now,
					UserID: me.ID, JobID: job.ID, DatabaseID: srcDB, StorageType: "local", Compression: "zstd",
					Seq: 99, Step: "forged", Percent: 99, FileName: "forged.sql.zst", StorageKey: "forged", FileSize: 1,
					Checksum: "ff", ChecksumAlgorithm: "sha256", Error: "forged", Lost: true, Reason: "forged",
					Attempt: 9, RetryAt: &now})
			}
			return out
		case events.KindRestore:
			return []any{events.RestoreEvent{V: events.Version, ID: uuid.NewString(), RestoreID: rs.RestoreHistoryID, At: now,
				UserID: me.ID, BackupID: backup, TargetDatabaseID: dstDB, Seq: 99, Step: "forged", Error: "forged"},
				events.RestoreEvent{V: events.Version, ID: uuid.NewString(), RestoreID: uuid.NewString(), At: now,
					UserID: me.ID, BackupID: backup, TargetDatabaseID: dstDB}}
		case events.KindVerify:
			return []any{events.VerifyEvent{V: events.Version, ID: uuid.NewString(), VerifyID: vr.VerificationID, BackupID: backup, At: now, Level: "BASIC", Result: result, Error: "forged"},
				events.VerifyEvent{V: events.Version, ID: uuid.NewString(), VerifyID: uuid.NewString(), BackupID: backup, At: now, Level: "BASIC", Result: result, Error: "forged"}}
		}
		return nil
	}
	phases := []string{events.PhaseQueued, events.PhaseSkipped, events.PhaseStarted, events.PhaseProgress, events.PhaseCompleted,
		events.PhaseFailed, events.PhaseLost, events.PhaseDeleted, events.PhaseExpired, events.PhasePurged, events.PhasePurgeFailed}
	for _, attacker := range []*testAgent{mal, second} {
		for _, kind := range []string{events.KindBackup, events.KindRestore, events.KindVerify} {
			for _, phase := range phases {
				for _, payload := range payloads(kind) {
					// Its own subject: accepted by the stream, refused by
					// the projector.
					attacker.publish(events.EventSubject(attacker.id, kind, phase), payload)
					// Subjects that are not its own: refused by NATS.
					for _, agent := range []string{attacker.id, localID, second.id} {
						attacker.tryPublish(events.ControlSubject(agent, kind, phase), payload)
					}
					attacker.tryPublish(events.EventSubject(localID, kind, phase), payload)
				}
			}
		}
		if err := attacker.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	// The agents' own events still work, and, applied in stream order,
	// mark the point by which every forged event has been applied.
	done := second.complete(second.nextCommand())
	if done != queued {
		t.Fatalf("Alice's second agent got run %s, want %s", done, queued)
	}
	c.waitHistory(alice, queued, 30*time.Second, "completed by its own agent", func(h historyView) bool { return h.Status == "success" })
	var malDB struct{ ID string }
	c.want(c.call("POST", "/v1/databases", mallory, map[string]any{"name": "mallory-db", "type": "postgresql", "host": "127.0.0.1",
		"port": testsupport.Cluster().Port(), "username": u, "password": p, "database": srcName, "agentId": mal.id}), 201).decode(t, &malDB)
	var malJob struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", mallory, map[string]any{"databaseId": malDB.ID, "name": "mallory-job"}), 201).decode(t, &malJob)
	malRun := c.runJob(mallory, malJob.ID)
	if got := mal.complete(mal.nextCommand()); got != malRun {
		t.Fatalf("Mallory's agent got run %s, want %s", got, malRun)
	}
	c.waitHistory(mallory, malRun, 30*time.Second, "completed by its own agent", func(h historyView) bool { return h.Status == "success" })

	after := c.state(alice)
	// The one legitimate change: the run Alice's second agent completed.
	for _, s := range []*userState{&before, &after} {
		for i, row := range s.History {
			if row["id"] == queued {
				s.History = append(s.History[:i:i], s.History[i+1:]...)
				break
			}
		}
		delete(s.Runs, queued)
	}
	if !reflect.DeepEqual(before, after) {
		b, _ := json.MarshalIndent(before, "", " ")
		a, _ := json.MarshalIndent(after, "", " ")
		t.Fatalf("Alice's history changed under forged events:\nbefore %s\nafter %s", b, a)
	}
	if h := c.history(alice, backup); h.Status != "success" || h.VerificationStatus != "PASSED" || h.LastRestoreStatus != "success" {
		t.Fatalf("Alice's backup after the forged events: %+v", h)
	}
	var mh struct{ Results []map[string]any }
	c.want(c.call("GET", "/v1/backups/history?limit=100", mallory, nil), 200).decode(t, &mh)
	if len(mh.Results) != 1 || mh.Results[0]["id"] != malRun {
		t.Fatalf("Mallory's history holds %v, want only her own run", mh.Results)
	}
	// No forged event reached a control-plane subject in the stream: the
	// only ones there are the control plane's own.
	_, js := controlPlaneNATS(t, dataDir)
	stream, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("rahat.cp.>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj := range info.State.Subjects {
		sub, _ := events.ParseSubject(subj)
		if sub.Kind == events.KindBackup && sub.Phase == events.PhaseQueued || sub.Kind == events.KindRestore && sub.Phase == events.PhaseQueued ||
			sub.Kind == events.KindVerify && sub.Phase == events.PhaseQueued {
			continue
		}
		t.Errorf("EVENTS holds a message on %s, which nothing in this test should have published", subj)
	}
}
