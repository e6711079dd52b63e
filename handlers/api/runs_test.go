package api_test

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/api"
)

// TestRunNowRacingDelete: a job deleted while "run now" is answered is a
// 404 (or the run started first), never a 500.
func TestRunNowRacingDelete(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok, _, dbID := userWithAgent(t, s, "racer@example.com")
	for range 20 {
		job := createJob(t, s, tok, dbID, "racing")
		codes := make(chan int, 2)
		go func() { codes <- s.do(t, "POST", "/v1/backups/jobs/"+job+"/run", tok, nil).Code }()
		go func() { codes <- s.do(t, "DELETE", "/v1/backups/jobs/"+job, tok, nil).Code }()
		for range 2 {
			if c := <-codes; c >= 500 {
				t.Fatalf("run now racing a delete answered %d", c)
			}
		}
	}
}

// TestBrokerOutage: with NATS down, "run now", "verify" and the delete of
// a run with no stored object are still accepted; their events and
// commands reach the streams once NATS is back, each once.
func TestBrokerOutage(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	ctx := context.Background()
	tok, agent, dbID := userWithAgent(t, s, "outage@example.com")
	job := createJob(t, s, tok, dbID, "outage")
	var first struct{ HistoryID string }
	r := s.do(t, "POST", "/v1/backups/jobs/"+job+"/run", tok, nil)
	wantCode(t, r, http.StatusAccepted)
	r.JSON(t, &first)
	// The agent takes the command (the work queue forgets it) and succeeds.
	cons, err := s.nats.JS.Consumer(ctx, events.StreamCommands, events.AgentConsumer(agent))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	completeRun(t, s, agent, first.HistoryID)
	waitStatus(t, s, tok, first.HistoryID, "success")
	// A failed run (no stored object) to delete during the outage.
	failed := uuid.New()
	if _, err := s.pool.Exec(ctx, `INSERT INTO backup_history (id, user_id, backup_job_id, database_id, agent_id, status,
		queued_at, storage_type, compression) SELECT $1, user_id, backup_job_id, database_id, agent_id, 'failed', now(),
		storage_type, compression FROM backup_history WHERE id = $2`, failed, first.HistoryID); err != nil {
		t.Fatal(err)
	}

	s.nats.Stop()
	if r := s.do(t, "DELETE", "/v1/backups/history/"+failed.String(), tok, nil); r.Code != http.StatusNoContent {
		t.Fatalf("delete with NATS down: %d %s", r.Code, r.Body)
	}
	var run struct{ HistoryID, Status string }
	r = s.do(t, "POST", "/v1/backups/jobs/"+job+"/run", tok, nil)
	if r.Code != http.StatusAccepted {
		t.Fatalf("run now with NATS down: %d %s", r.Code, r.Body)
	}
	r.JSON(t, &run)
	r = s.do(t, "POST", "/v1/backups/history/"+first.HistoryID+"/verify", tok, `{"verificationLevel": "BASIC"}`)
	if r.Code != http.StatusAccepted {
		t.Fatalf("verify with NATS down: %d %s", r.Code, r.Body)
	}
	var verify struct{ VerificationID string }
	r.JSON(t, &verify)
	if run.Status != "queued" {
		t.Fatalf("run now with NATS down: %+v", run)
	}
	time.Sleep(time.Second) // the relay fails meanwhile
	s.nats.Restart()

	want := map[string]uint64{
		events.ControlSubject(agent, events.KindBackup, events.PhaseQueued):  2, // the first run's and this one's
		events.ControlSubject(agent, events.KindVerify, events.PhaseQueued):  1,
		events.ControlSubject(agent, events.KindBackup, events.PhaseDeleted): 1,
		events.CommandSubject(agent, events.CommandBackup):                   1,
		events.CommandSubject(agent, events.CommandVerify):                   1,
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[string]uint64{}
		for _, name := range []string{events.StreamEvents, events.StreamCommands} {
			st, err := s.nats.JS.Stream(ctx, name)
			if err != nil {
				break
			}
			for subj := range want {
				info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
				if err == nil {
					got[subj] += info.State.Subjects[subj]
				}
			}
		}
		if maps.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the outage the streams hold %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The commands are the ones promised.
	b, err = cons.Fetch(2, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for m := range b.Messages() {
		var c struct{ RunID, VerifyID string }
		if err := events.Decode(m.Data(), &c); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.RunID+c.VerifyID)
	}
	if !slices.Equal(ids, []string{run.HistoryID, verify.VerificationID}) {
		t.Fatalf("commands after the outage: %v, want the run %s then the verification %s", ids, run.HistoryID, verify.VerificationID)
	}
}

// waitStatus waits until run id has status.
func waitStatus(t *testing.T, s *testServer, tok, id, status string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var h struct{ Status string }
		s.do(t, "GET", "/v1/backups/history/"+id, tok, nil).JSON(t, &h)
		if h.Status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is %s, want %s", id, h.Status, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQueueLimitDuringOutage: commands waiting in the outbox count toward
// an agent's queue limit, so it holds while NATS is down.
func TestQueueLimitDuringOutage(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(o *api.Opts) { o.AgentQueueLimit = 2 })
	tok, _, dbID := userWithAgent(t, s, "outage-limit@example.com")
	jobs := []string{createJob(t, s, tok, dbID, "a"), createJob(t, s, tok, dbID, "b"), createJob(t, s, tok, dbID, "c")}
	s.nats.Stop()
	defer s.nats.Restart()
	for i, job := range jobs {
		r := s.do(t, "POST", "/v1/backups/jobs/"+job+"/run", tok, nil)
		want := http.StatusAccepted
		if i == 2 {
			want = http.StatusTooManyRequests
		}
		wantCode(t, r, want)
	}
}

// userWithAgent registers email with one agent, online, and one database
// assigned to no agent; it returns the user's token and both ids.
func userWithAgent(t *testing.T, s *testServer, email string) (tok, agent, dbID string) {
	t.Helper()
	tok = s.register(t, email).Tokens.Access.Token
	agent = enrollAgent(t, s, tok)
	announce(t, s, agent)
	waitAgentStatus(t, s, tok, agent, "online", 10*time.Second)
	r := s.do(t, "POST", "/v1/databases", tok, validDB())
	wantCode(t, r, http.StatusCreated)
	var d struct{ ID string }
	r.JSON(t, &d)
	return tok, agent, d.ID
}
