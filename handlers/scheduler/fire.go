package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/schedule"
)

// runNamespace derives scheduled run ids: RunID(job, slot).
var runNamespace = uuid.MustParse("6f1f3c52-3f0c-4f1e-9a55-1d6b1c3a7e10")

// RunID is the id of job's run for slot: the same in every replica.
func RunID(job uuid.UUID, slot time.Time) uuid.UUID {
	return uuid.NewSHA1(runNamespace, []byte(MsgID(job, slot)))
}

// MsgID is the Nats-Msg-Id of job's command for slot: job:<id>:<slot UTC>.
func MsgID(job uuid.UUID, slot time.Time) string {
	return "job:" + job.String() + ":" + slot.UTC().Format(time.RFC3339)
}

// planned is one history row a batch writes, and what to publish for it.
type planned struct {
	job   db.BackupJob
	agent uuid.UUID
	phase string // queued or skipped
	ev    events.BackupEvent
	run   uuid.UUID
	slot  time.Time
	// cmd is the command, built ahead of the slot, when it still fits.
	cmd []byte
}

// decide handles the slots of the due jobs up to now in one transaction,
// which also writes their events and commands to the outbox, then
// publishes them (flush). A job's slots are claimed by
// moving its scheduled_through from the value read; a job another replica
// claimed first is left to it.
func (s *Scheduler) decide(ctx context.Context, batch []*entry, now time.Time, agents agentsByUser) ([]outcome, error) {
	ids := make([]uuid.UUID, len(batch))
	byID := make(map[uuid.UUID]*entry, len(batch))
	for i, e := range batch {
		ids[i] = e.id
		byID[e.id] = e
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	var plans []planned
	var outs []outcome
	var held outbox.Held
	err := db.WithTx(ctx, s.o.Pool, func(tx pgx.Tx) error {
		plans, outs = plans[:0], outs[:0]
		// Jobs read ahead of their slot are claimed as read; the others,
		// and those that changed since, are read now.
		rest, err := s.claimPrepared(ctx, tx, ids, byID, now, agents, &plans, &outs)
		if err != nil {
			return err
		}
		ids := rest
		if len(ids) == 0 {
			return s.insertPlans(ctx, tx, plans, &held)
		}
		rows, err := s.q.DueJobs(ctx, tx, ids)
		if err != nil {
			return err
		}
		found := make(map[uuid.UUID]bool, len(rows))
		type due struct {
			row   db.DueJobsRow
			slots []time.Time
			out   outcome
		}
		var dues []due
		var claimIDs []uuid.UUID
		var olds, news []time.Time
		for _, r := range rows {
			j := partialJob(r)
			found[j.ID] = true
			if !j.IsActive || j.ScheduleType == "manual" {
				outs = append(outs, outcome{id: j.ID, gone: true})
				continue
			}
			sc, err := s.schedule(j.ScheduleType, j.CronExpression, j.AdvancedScheduleConfig, j.Timezone)
			if err != nil {
				s.log.Warn("job has an invalid schedule; not scheduled", "jobId", j.ID, "err", err)
				outs = append(outs, outcome{id: j.ID, gone: true})
				continue
			}
			out := outcome{id: j.ID, user: j.UserID, sc: sc, updatedAt: j.UpdatedAt, through: j.ScheduledThrough}
			slots := sc.Between(j.ScheduledThrough, now)
			if len(slots) == 0 {
				outs = append(outs, out) // another replica handled it
				continue
			}
			out.through = slots[len(slots)-1]
			dues = append(dues, due{row: r, slots: slots, out: out})
			claimIDs, olds, news = append(claimIDs, j.ID), append(olds, j.ScheduledThrough), append(news, out.through)
		}
		for _, id := range ids {
			if !found[id] {
				outs = append(outs, outcome{id: id, gone: true}) // deleted
			}
		}
		if len(dues) == 0 {
			return s.insertPlans(ctx, tx, plans, &held)
		}
		claimedRows, err := s.q.ClaimSlots(ctx, tx, db.ClaimSlotsParams{Ids: claimIDs, Olds: olds, News: news})
		if err != nil {
			return err
		}
		claimed := make(map[uuid.UUID]bool, len(claimedRows))
		active := map[uuid.UUID]uuid.UUID{}
		for _, c := range claimedRows {
			claimed[c.ID] = true
			if c.ActiveRun != uuid.Nil {
				active[c.ID] = c.ActiveRun
			}
		}
		for _, d := range dues {
			outs = append(outs, d.out) // claimed here or by another replica: handled through d.out.through
		}
		if len(claimedRows) == 0 {
			return s.insertPlans(ctx, tx, plans, &held)
		}
		for _, d := range dues {
			j := partialJob(d.row)
			if !claimed[j.ID] {
				continue
			}
			plans = s.planSlots(plans, j, d.row.DatabaseAgentID, d.slots, now, agents[j.UserID], active)
			if p := &plans[len(plans)-1]; p.phase == events.PhaseQueued {
				if pr := byID[j.ID].prep; pr != nil && pr.fits(p, d.row.UpdatedAt, d.row.DatabaseUpdatedAt) {
					p.cmd = pr.cmd
				}
			}
		}
		return s.insertPlans(ctx, tx, plans, &held)
	})
	if err != nil {
		return nil, err
	}
	s.flush(ctx, held)
	return outs, nil
}

// holdFor is how long a batch's messages are left to the batch itself
// before the relays take what it did not publish; beyond flushTimeout.
const holdFor = time.Minute

// flushTimeout bounds a batch's publication of its own messages.
const flushTimeout = 30 * time.Second

// flush publishes a committed batch's events and commands (outbox.Flush):
// the workers publish their batches in parallel, so a burst of slots is
// not queued behind the one leading relay. What fails is left to the
// relays.
func (s *Scheduler) flush(ctx context.Context, held outbox.Held) {
	// The rows are committed: what they promise is sent even when the
	// scheduler is stopping, bounded by flushTimeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if err := s.o.Outbox.Flush(ctx, held); err != nil {
		s.log.Warn("a batch's events and commands were left to the outbox relay", "messages", held.Len(), "err", err)
	}
}

// planSlots appends the rows of job j's claimed slots (in order, the
// latest last): the latest runs when it is within the grace period and
// nothing prevents it; the others are recorded as missed, at most
// MaxMissed of them.
func (s *Scheduler) planSlots(plans []planned, j db.BackupJob, assigned *uuid.UUID, slots []time.Time, now time.Time,
	agents []runs.Agent, active map[uuid.UUID]uuid.UUID) []planned {
	last := slots[len(slots)-1]
	missed := slots
	var run *time.Time
	if now.Sub(last) <= s.o.Grace {
		run, missed = &last, slots[:len(slots)-1]
	}
	agent, haveAgent := runs.Pick(agents, assigned)
	agentID := uuid.Nil
	if haveAgent {
		agentID = agent.ID
	}
	if len(missed) > s.o.MaxMissed {
		dropped := len(missed) - s.o.MaxMissed
		missed = missed[dropped:]
		s.log.Warn("job missed more slots than are recorded", "jobId", j.ID, "missed", dropped+len(missed),
			"recorded", len(missed))
		plans = append(plans, s.plan(j, agentID, missed[0], now, events.PhaseSkipped,
			fmt.Sprintf("%s (and %d earlier slots since %s)", runs.ReasonDown, dropped, slots[0].Format(time.RFC3339))))
		missed = missed[1:]
	}
	for _, slot := range missed {
		plans = append(plans, s.plan(j, agentID, slot, now, events.PhaseSkipped, runs.ReasonDown))
	}
	if run == nil {
		return plans
	}
	var busy *uuid.UUID
	if runID, ok := active[j.ID]; ok {
		busy = &runID
	}
	phase, reason := runs.Decide(agent, haveAgent, busy)
	return append(plans, s.plan(j, agentID, *run, now, phase, reason))
}

// insertPlans writes the history rows of plans and, to the outbox (held
// for the batch to publish itself, in held), their events, then the
// commands of the queued runs (so the stream holds each run's "queued"
// before anything its agent reports). A queued run whose command cannot
// be built is recorded as failed, with the reason, after them.
func (s *Scheduler) insertPlans(ctx context.Context, tx pgx.Tx, plans []planned, held *outbox.Held) error {
	if len(plans) == 0 {
		return nil
	}
	items := make([]projector.Queued, len(plans))
	msgs := make([]outbox.Message, 0, 2*len(plans))
	for i, p := range plans {
		items[i] = projector.Queued{Agent: p.agent, Phase: p.phase, Event: p.ev}
		m, err := outbox.JSON(events.ControlSubject(p.agent.String(), events.KindBackup, p.phase), events.ControlMsgID(p.ev.ID), p.ev)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if err := projector.ApplyQueued(ctx, tx, items); err != nil {
		return err
	}
	failed, err := s.buildCommands(ctx, tx, plans)
	if err != nil {
		return err
	}
	for i := range plans {
		if p := &plans[i]; p.phase == events.PhaseQueued && p.cmd != nil {
			m, err := chainedMessage(ctx, tx, p)
			if err != nil {
				return err
			}
			if m != nil {
				msgs = append(msgs, *m)
			}
			msgs = append(msgs, outbox.Message{Subject: events.CommandSubject(p.agent.String(), events.CommandBackup),
				MsgID: MsgID(p.job.ID, p.slot), Data: p.cmd})
		}
	}
	for _, f := range failed {
		s.log.Error("scheduled run failed before it reached the agent", "jobId", f.p.job.ID, "runId", f.p.ev.RunID, "err", f.err)
		ev := events.BackupEvent{V: events.Version, ID: f.p.ev.RunID + ":failed", RunID: f.p.ev.RunID, At: time.Now().UTC(),
			Error: "the backup command could not be built: " + f.err.Error()}
		m, err := outbox.JSON(events.ControlSubject(f.p.agent.String(), events.KindBackup, events.PhaseFailed), events.ControlMsgID(ev.ID), ev)
		if err != nil {
			return err
		}
		if err := projector.Apply(ctx, tx, m.Subject, ev.At, m.Data); err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	// Held for this batch to publish after its commit: nothing written
	// later depends on them (a run's later events come from its agent,
	// once it has the command, or from the control plane long after).
	*held, err = outbox.AddHeld(ctx, tx, holdFor, msgs...)
	return err
}

// claimPrepared claims, among ids, the jobs read ahead of their slot
// (prepareAhead) that are still as they were read, and plans their
// slots; it returns the ids it did not claim.
func (s *Scheduler) claimPrepared(ctx context.Context, tx pgx.Tx, ids []uuid.UUID, byID map[uuid.UUID]*entry, now time.Time,
	agents agentsByUser, plans *[]planned, outs *[]outcome) ([]uuid.UUID, error) {
	var fast []uuid.UUID
	var olds, news, updateds []time.Time
	slotsOf := map[uuid.UUID][]time.Time{}
	scOf := map[uuid.UUID]*schedule.Schedule{}
	for _, id := range ids {
		e := byID[id]
		pr := e.prep
		if pr == nil || pr.job == nil || !pr.slot.Equal(e.next) || !pr.job.IsActive {
			continue
		}
		// The schedule of the job as read (the entry's may be older).
		sc, err := s.schedule(pr.job.ScheduleType, pr.job.CronExpression, pr.job.AdvancedScheduleConfig, pr.job.Timezone)
		if err != nil {
			continue
		}
		slots := sc.Between(pr.job.ScheduledThrough, now)
		if len(slots) == 0 {
			continue
		}
		slotsOf[id], scOf[id] = slots, sc
		fast = append(fast, id)
		olds, news, updateds = append(olds, pr.job.ScheduledThrough), append(news, slots[len(slots)-1]), append(updateds, pr.job.UpdatedAt)
	}
	if len(fast) == 0 {
		return ids, nil
	}
	rows, err := s.q.ClaimPrepared(ctx, tx, db.ClaimPreparedParams{Ids: fast, Olds: olds, News: news, Updateds: updateds})
	if err != nil {
		return nil, err
	}
	claimed := make(map[uuid.UUID]bool, len(rows))
	for _, r := range rows {
		claimed[r.ID] = true
		e := byID[r.ID]
		pr := e.prep
		j := *pr.job
		active := map[uuid.UUID]uuid.UUID{}
		if r.ActiveRun != uuid.Nil {
			active[j.ID] = r.ActiveRun
		}
		slots := slotsOf[r.ID]
		*outs = append(*outs, outcome{id: j.ID, user: j.UserID, sc: scOf[r.ID], updatedAt: j.UpdatedAt, through: slots[len(slots)-1]})
		*plans = s.planSlots(*plans, j, pr.dbAgent, slots, now, agents[j.UserID], active)
		if p := &(*plans)[len(*plans)-1]; p.phase == events.PhaseQueued && pr.fits(p, j.UpdatedAt, r.DatabaseUpdatedAt) {
			p.cmd = pr.cmd
		}
	}
	rest := make([]uuid.UUID, 0, len(ids)-len(rows))
	for _, id := range ids {
		if !claimed[id] {
			rest = append(rest, id)
		}
	}
	return rest, nil
}

// partialJob is the part of a job a slot's decision reads; the whole job
// is read again only to build a command not prepared ahead.
func partialJob(r db.DueJobsRow) db.BackupJob {
	return db.BackupJob{ID: r.ID, UserID: r.UserID, DatabaseID: r.DatabaseID, ScheduleType: r.ScheduleType,
		CronExpression: r.CronExpression, AdvancedScheduleConfig: r.AdvancedScheduleConfig, Timezone: r.Timezone,
		StorageType: r.StorageType, CloudStorageID: r.CloudStorageID, Compression: r.Compression,
		IsEncrypted: r.IsEncrypted, IsActive: r.IsActive, ScheduledThrough: r.ScheduledThrough, UpdatedAt: r.UpdatedAt}
}

// agentsByUser is each user's active agents with their presence, in the
// user's agent order.
type agentsByUser map[uuid.UUID][]runs.Agent

// loadAgents reads the agents of every user owning one of the given jobs.
func (s *Scheduler) loadAgents(ctx context.Context, users []uuid.UUID) (agentsByUser, error) {
	rows, err := s.q.AgentsOfUsers(ctx, s.o.Pool, db.AgentsOfUsersParams{UserIds: users, OfflineAfterSecs: s.o.OfflineAfter.Seconds()})
	if err != nil {
		return nil, err
	}
	agents := agentsByUser{}
	for _, a := range rows {
		agents[a.UserID] = append(agents[a.UserID], runs.Agent{ID: a.ID, Name: a.Name, Online: a.Online})
	}
	return agents, nil
}

// plan is the history row of job's slot.
func (s *Scheduler) plan(j db.BackupJob, agent uuid.UUID, slot, now time.Time, phase, reason string) planned {
	runID := RunID(j.ID, slot)
	slotUTC := slot.UTC()
	ev := runs.Event(j, runID, phase, reason, now, &slotUTC)
	return planned{job: j, agent: agent, phase: phase, ev: ev, run: runID, slot: slotUTC}
}

// unbuilt is a queued run whose command could not be built, and why.
type unbuilt struct {
	p   *planned
	err error
}

// buildCommands builds the commands of the queued plans with none built
// ahead (a slot's decision reads only part of a job, so their jobs are
// read whole first) and returns those that cannot be built.
func (s *Scheduler) buildCommands(ctx context.Context, tx pgx.Tx, plans []planned) ([]unbuilt, error) {
	var queued []*planned
	for i := range plans {
		if p := &plans[i]; p.phase == events.PhaseQueued && p.cmd == nil {
			queued = append(queued, p)
		}
	}
	if len(queued) == 0 {
		return nil, nil
	}
	ids := make([]uuid.UUID, len(queued))
	for i, p := range queued {
		ids[i] = p.job.ID
	}
	whole, err := s.q.JobsWithAgent(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]db.BackupJob, len(whole))
	for _, w := range whole {
		byID[w.BackupJob.ID] = w.BackupJob
	}
	var failed []unbuilt
	var found []*planned
	var jobs []db.BackupJob
	var agents, runIDs []uuid.UUID
	for _, p := range queued {
		j, ok := byID[p.job.ID]
		if !ok {
			failed = append(failed, unbuilt{p, errors.New("the job was deleted")})
			continue
		}
		found = append(found, p)
		jobs, agents, runIDs = append(jobs, j), append(agents, p.agent), append(runIDs, p.run)
	}
	if len(found) == 0 {
		return failed, nil
	}
	// Through tx: the batch's transaction already holds a connection, and
	// the pool may have none left for it to wait on.
	cmds, errs := s.o.Runs.BackupCommands(ctx, tx, jobs, agents, runIDs)
	for i, p := range found {
		if errs[i] == nil {
			p.cmd, errs[i] = json.Marshal(cmds[i])
		}
		if errs[i] != nil {
			failed = append(failed, unbuilt{p, errs[i]})
		}
	}
	return failed, nil
}

// chainedMessage applies, in tx, the chained event of queued run p when its
// command stores it in a chunk store, and returns that event's message
// (nil for a single-object backup).
func chainedMessage(ctx context.Context, tx pgx.Tx, p *planned) (*outbox.Message, error) {
	if !bytes.Contains(p.cmd, []byte(`"chain":`)) {
		return nil, nil
	}
	var cmd events.BackupCommand
	if err := json.Unmarshal(p.cmd, &cmd); err != nil {
		return nil, err
	}
	ev := runs.ChainEvent(cmd)
	if ev == nil {
		return nil, nil
	}
	m, err := outbox.JSON(events.ControlSubject(p.agent.String(), events.KindBackup, events.PhaseChained), events.ControlMsgID(ev.ID), ev)
	if err != nil {
		return nil, err
	}
	if err := projector.Apply(ctx, tx, m.Subject, ev.At, m.Data); err != nil {
		return nil, err
	}
	return &m, nil
}
