package scheduler

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/runs"
)

// prepared is a job's command for its next slot, built ahead of the slot
// so a burst of slots costs only its decisions. It is used only when
// nothing it was built from has changed by then.
type prepared struct {
	slot time.Time
	// job is the job as read, nil when it could not be read; dbAgent its
	// database's assigned agent.
	job        *db.BackupJob
	dbAgent    *uuid.UUID
	agent      uuid.UUID
	jobUpdated time.Time
	dbUpdated  time.Time
	cmd        []byte
}

// fits reports whether the prepared command is the one p needs, its job
// and database last updated at the times given.
func (pr *prepared) fits(p *planned, jobUpdated, dbUpdated time.Time) bool {
	return pr.slot.Equal(p.slot) && pr.agent == p.agent && pr.jobUpdated.Equal(jobUpdated) && pr.dbUpdated.Equal(dbUpdated)
}

// prepareChunk is how many commands one step of prepareAhead builds
// before the loop checks for due slots again.
const prepareChunk = 1024

// prepareAhead builds, for up to prepareChunk jobs whose next slot is
// within Lead, the command that slot will most likely send: for the agent
// that would run it now. It reports whether it found work. Errors are
// logged: the slot then builds its command when it comes.
func (s *Scheduler) prepareAhead(ctx context.Context, now time.Time) bool {
	if s.o.Lead <= 0 {
		return false
	}
	horizon := now.Add(s.o.Lead)
	var todo []*entry
	// The heap is ordered by next slot: walk it breadth-first from the top,
	// pruning subtrees that are beyond the horizon.
	stack := []int{0}
	for len(stack) > 0 && len(todo) < prepareChunk {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(s.queue) || s.queue[i].next.After(horizon) {
			continue
		}
		if e := s.queue[i]; e.prep == nil || !e.prep.slot.Equal(e.next) {
			todo = append(todo, e)
		}
		stack = append(stack, 2*i+1, 2*i+2)
	}
	if len(todo) == 0 {
		return false
	}
	ids := make([]uuid.UUID, len(todo))
	for i, e := range todo {
		ids[i] = e.id
		e.prep = &prepared{slot: e.next} // even on failure: not retried for this slot
	}
	rows, err := s.q.JobsWithAgent(ctx, s.o.Pool, ids)
	if err != nil {
		s.log.Warn("preparing scheduled commands", "err", err)
		return true
	}
	var users []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, r := range rows {
		if u := r.BackupJob.UserID; !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	agents, err := s.loadAgents(ctx, users)
	if err != nil {
		s.log.Warn("preparing scheduled commands", "err", err)
		return true
	}
	byID := make(map[uuid.UUID]*entry, len(todo))
	for _, e := range todo {
		byID[e.id] = e
	}
	var jobs []db.BackupJob
	var agentIDs, runIDs []uuid.UUID
	var preps []*prepared
	for _, r := range rows {
		e := byID[r.BackupJob.ID]
		job := r.BackupJob
		e.prep = &prepared{slot: e.next, job: &job, dbAgent: r.DatabaseAgentID, jobUpdated: job.UpdatedAt, dbUpdated: r.DatabaseUpdatedAt}
		agent, ok := runs.Pick(agents[r.BackupJob.UserID], r.DatabaseAgentID)
		if !ok || !agent.Online {
			continue // the slot decides; the job as read still saves reading it then
		}
		e.prep.agent = agent.ID
		jobs, agentIDs, runIDs = append(jobs, r.BackupJob), append(agentIDs, agent.ID), append(runIDs, RunID(e.id, e.next))
		preps = append(preps, e.prep)
	}
	if len(jobs) == 0 {
		return true
	}
	cmds, errs := s.o.Runs.BackupCommands(ctx, s.o.Pool, jobs, agentIDs, runIDs)
	for i, pr := range preps {
		if errs[i] != nil {
			continue // built (and its error recorded) when the slot comes
		}
		if data, err := json.Marshal(cmds[i]); err == nil {
			pr.cmd = data
		}
	}
	return true
}
