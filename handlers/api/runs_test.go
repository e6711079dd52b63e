package api_test

import (
	"net/http"
	"testing"
	"time"
)

// TestRunNowRacingDelete: a job deleted while "run now" is answered is a
// 404 (or the run started first), never a 500.
func TestRunNowRacingDelete(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "racer@example.com").Tokens.Access.Token
	agent := enrollAgent(t, s, tok)
	announce(t, s, agent)
	waitAgentStatus(t, s, tok, agent, "online", 10*time.Second)
	r := s.do(t, "POST", "/v1/databases", tok, validDB())
	wantCode(t, r, http.StatusCreated)
	var d struct{ ID string }
	r.JSON(t, &d)
	for range 20 {
		job := createJob(t, s, tok, d.ID, "racing")
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
