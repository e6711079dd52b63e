package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/events"
)

// completeRun publishes, as agentID, the start and successful end of a run.
func completeRun(t *testing.T, s *testServer, agentID, runID string) {
	t.Helper()
	ctx := context.Background()
	for _, phase := range []string{events.PhaseStarted, events.PhaseCompleted} {
		ev := events.BackupEvent{V: events.Version, ID: runID + ":" + phase, RunID: runID, At: time.Now().UTC(),
			FileName: "x.sql.zst", StorageKey: "job/x.sql.zst", FileSize: 10, RawSize: 20,
			Checksum: "00", ChecksumAlgorithm: "sha256"}
		if err := events.Publish(ctx, s.nats.JS, events.EventSubject(agentID, events.KindBackup, phase), agentID+":"+ev.ID, ev); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTenantIsolation: every id of another user's object, in a path or in
// a body, answers 404 and changes nothing; fields a user must not set are
// refused.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	ann := s.register(t, "ann@example.com").Tokens.Access.Token
	bob := s.register(t, "bob@example.com").Tokens.Access.Token

	setup := func(token string) (agentID, dbID, jobID string) {
		agentID = enrollAgent(t, s, token)
		announce(t, s, agentID)
		waitAgentStatus(t, s, token, agentID, "online", 10*time.Second)
		body := validDB()
		body["agentId"] = agentID
		r := s.do(t, "POST", "/v1/databases", token, body)
		wantCode(t, r, http.StatusCreated)
		var d struct{ ID string }
		r.JSON(t, &d)
		return agentID, d.ID, createJob(t, s, token, d.ID, "nightly")
	}
	annAgent, annDB, annJob := setup(ann)
	bobAgent, bobDB, bobJob := setup(bob)

	// Bob's successful run, to try restoring into Ann's database.
	r := s.do(t, "POST", "/v1/backups/jobs/"+bobJob+"/run", bob, nil)
	wantCode(t, r, http.StatusAccepted)
	var run struct{ HistoryID string }
	r.JSON(t, &run)
	// Ann's agent claims Bob's run: the projector ignores it.
	completeRun(t, s, annAgent, run.HistoryID)
	time.Sleep(500 * time.Millisecond)
	var h struct{ Status string }
	s.do(t, "GET", "/v1/backups/history/"+run.HistoryID, bob, nil).JSON(t, &h)
	if h.Status != "queued" {
		t.Fatalf("another agent's events moved the run to %s", h.Status)
	}
	completeRun(t, s, bobAgent, run.HistoryID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var h struct{ Status string }
		s.do(t, "GET", "/v1/backups/history/"+run.HistoryID, bob, nil).JSON(t, &h)
		if h.Status == "success" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run not success: %s", h.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}

	before := map[string]string{}
	for _, p := range []string{"/v1/databases/" + annDB, "/v1/backups/jobs/" + annJob, "/v1/agents"} {
		before[p] = string(s.do(t, "GET", p, ann, nil).Body)
	}

	cases := []struct {
		name, method, path string
		body               any
		field              string
	}{
		{"GetDatabase", "GET", "/v1/databases/" + annDB, nil, ""},
		{"PatchDatabase", "PATCH", "/v1/databases/" + annDB, map[string]any{"name": "mine"}, ""},
		{"DeleteDatabase", "DELETE", "/v1/databases/" + annDB, nil, ""},
		{"TestSavedDatabase", "POST", "/v1/databases/test-connection", map[string]any{"databaseId": annDB}, "databaseId"},
		{"TestThroughAgent", "POST", "/v1/databases/test-connection", withField(validDB(), "agentId", annAgent), "agentId"},
		{"CreateDatabaseOnAgent", "POST", "/v1/databases", withField(validDB(), "agentId", annAgent), "agentId"},
		{"MoveDatabaseToAgent", "PATCH", "/v1/databases/" + bobDB, map[string]any{"agentId": annAgent}, "agentId"},
		{"RevokeAgent", "DELETE", "/v1/agents/" + annAgent, nil, ""},
		{"GetJob", "GET", "/v1/backups/jobs/" + annJob, nil, ""},
		{"PatchJob", "PATCH", "/v1/backups/jobs/" + annJob, map[string]any{"name": "mine"}, ""},
		{"DeleteJob", "DELETE", "/v1/backups/jobs/" + annJob, nil, ""},
		{"RunJob", "POST", "/v1/backups/jobs/" + annJob + "/run", nil, ""},
		{"ExportKey", "GET", "/v1/backups/jobs/" + annJob + "/encryption-key", nil, ""},
		{"CreateJobOnDatabase", "POST", "/v1/backups/jobs", map[string]any{"databaseId": annDB, "name": "x"}, "databaseId"},
		{"MoveJobToDatabase", "PATCH", "/v1/backups/jobs/" + bobJob, map[string]any{"databaseId": annDB}, "databaseId"},
		{"RestoreIntoDatabase", "POST", "/v1/backups/history/" + run.HistoryID + "/restore", map[string]any{"targetDatabaseId": annDB}, "targetDatabaseId"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.do(t, c.method, c.path, bob, c.body)
			wantCode(t, r, http.StatusNotFound)
			if c.field != "" && r.Fields(t)[c.field] == "" {
				t.Fatalf("404 does not name %s: %s", c.field, r.Body)
			}
		})
	}
	t.Run("AnnSeesBobsRunAs404", func(t *testing.T) {
		for _, p := range []string{"/v1/backups/history/" + run.HistoryID, "/v1/backups/history/" + run.HistoryID + "/download"} {
			wantCode(t, s.do(t, "GET", p, ann, nil), http.StatusNotFound)
		}
		wantCode(t, s.do(t, "POST", "/v1/backups/history/"+run.HistoryID+"/verify", ann, nil), http.StatusNotFound)
		wantCode(t, s.do(t, "DELETE", "/v1/backups/history/"+run.HistoryID, ann, nil), http.StatusNotFound)
		wantCode(t, s.do(t, "GET", "/v1/restores/"+uuid.NewString(), ann, nil), http.StatusNotFound)
	})
	t.Run("NothingChanged", func(t *testing.T) {
		for p, b := range before {
			if got := string(s.do(t, "GET", p, ann, nil).Body); got != b && p != "/v1/agents" {
				t.Fatalf("%s changed:\n%s\n%s", p, b, got)
			}
		}
		waitAgentStatus(t, s, ann, annAgent, "online", time.Second)
	})
	t.Run("ForbiddenFields", func(t *testing.T) {
		for _, c := range []struct {
			path  string
			field string
		}{
			{"/v1/databases", "userId"},
			{"/v1/backups/jobs", "userId"},
			{"/v1/backups/jobs", "status"},
			{"/v1/backups/jobs", "ageIdentityEnc"},
		} {
			body := map[string]any{"databaseId": bobDB, "name": "x", c.field: "forged"}
			if c.path == "/v1/databases" {
				body = withField(validDB(), c.field, annAgent)
			}
			r := s.do(t, "POST", c.path, bob, body)
			wantCode(t, r, http.StatusBadRequest)
			if r.Fields(t)[c.field] == "" {
				t.Fatalf("%s %s: %s", c.path, c.field, r.Body)
			}
		}
	})
}

func withField(m map[string]any, k string, v any) map[string]any {
	m[k] = v
	return m
}
