// Package scheduler is the scheduler role: it turns active backup jobs
// into backup commands at their schedule's slots.
//
// Every scheduled job is held in memory in a heap ordered by its next
// slot. A due job is decided under its row lock (SELECT … FOR UPDATE):
// the job's scheduled_through column says which slots are already
// handled, so any number of replicas handle each slot once; the run id
// (a UUIDv5 of job and slot) and the command's Nats-Msg-Id
// (job:<id>:<slot UTC>, deduplicated by JetStream) make a second
// publication of the same slot harmless as well.
//
// A slot's fate is one history row: queued (its command is sent), or
// skipped with the reason: "agent offline", "previous run still
// running", or, for slots missed while no scheduler ran and older than
// the grace period, "control plane was down". Of several missed slots
// within the grace period only the latest runs: never a burst.
//
// Job creates, updates, pauses and deletes are picked up by polling the
// jobs changed recently (every Opts.Poll) and by a full reload (every
// Opts.Resync); a job deleted or paused is also noticed when its slot
// comes, under the lock.
package scheduler

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/schedule"
)

// Opts configures Run. Zero values take the defaults named.
type Opts struct {
	Pool *pgxpool.Pool // required
	// Runs builds the commands of scheduled runs; required.
	Runs *runs.Service
	// Outbox is the relay told when a batch of runs was committed; nil
	// leaves them to whichever relay polls the outbox.
	Outbox *outbox.Relay
	Logger *slog.Logger // default slog.Default()
	Clock  Clock        // default WallClock

	// Grace is how late a missed slot may still run (once, the latest
	// only); older missed slots are recorded as skipped. Default 10 min.
	Grace time.Duration
	// OfflineAfter is how long an agent stays online without presence;
	// default 30 s (the API's).
	OfflineAfter time.Duration
	// Poll is how often changed jobs are read; default 1 s.
	Poll time.Duration
	// Resync is how often every job is read again; default 1 min.
	Resync time.Duration
	// Batch is how many due jobs one transaction decides; default 512.
	Batch int
	// Workers is how many batches are decided at once; default 4.
	Workers int
	// Settle is how long after it starts the scheduler fires nothing, so
	// that agents reconnecting after a restart are online again when the
	// slots missed meanwhile are caught up (otherwise they would be
	// skipped as "agent offline"); default 15 s (beyond an agent's 10 s
	// heartbeat), negative for none.
	Settle time.Duration
	// Lead is how long before a slot its command is built, so a burst of
	// slots costs only its decisions; default 30 s, negative to build
	// commands only at the slot.
	Lead time.Duration
	// MaxMissed caps the skipped rows recorded for one job's missed slots
	// after downtime (the most recent are recorded); default 100.
	MaxMissed int
	// Ready, when set, is called with the number of jobs once the first
	// load is done.
	Ready func(jobs int)
	// Idle, when set, is called each time the scheduler has nothing to do
	// until its next slot or poll (tests and benchmarks wait for it).
	Idle func()
}

func (o *Opts) validate() error {
	switch {
	case o.Pool == nil:
		return errors.New("scheduler: Pool is required")
	case o.Runs == nil:
		return errors.New("scheduler: Runs is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = WallClock{}
	}
	if o.Grace == 0 {
		o.Grace = 10 * time.Minute
	}
	if o.OfflineAfter == 0 {
		o.OfflineAfter = 30 * time.Second
	}
	if o.Poll == 0 {
		o.Poll = time.Second
	}
	if o.Resync == 0 {
		o.Resync = time.Minute
	}
	if o.Batch == 0 {
		o.Batch = 512
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.Settle == 0 {
		o.Settle = 15 * time.Second
	}
	if o.Lead == 0 {
		o.Lead = 30 * time.Second
	}
	if o.MaxMissed == 0 {
		o.MaxMissed = 100
	}
	return nil
}

// Scheduler fires scheduled jobs; see the package comment.
type Scheduler struct {
	o       Opts
	q       *db.Queries
	log     *slog.Logger
	entries map[uuid.UUID]*entry
	queue   entryHeap
	zones   schedule.LocationCache
	// specs interns compiled schedules: equal schedules share one. Batches
	// compile too, from several goroutines.
	specsMu sync.Mutex
	specs   map[string]*schedule.Schedule
	// watermark is the newest updated_at read so far (database clock).
	watermark time.Time
}

// entry is one scheduled job.
type entry struct {
	id        uuid.UUID
	user      uuid.UUID
	sc        *schedule.Schedule
	updatedAt time.Time
	next      time.Time // its next slot not yet handled
	index     int       // in the heap; -1 when out of it
	prep      *prepared // its command for next, built ahead; nil if none
}

// New validates o and returns a scheduler; Run starts it.
func New(o Opts) (*Scheduler, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Scheduler{o: o, q: db.New(), log: o.Logger, entries: map[uuid.UUID]*entry{},
		specs: map[string]*schedule.Schedule{}}, nil
}

// Run fires jobs until ctx ends. Database and broker errors are logged and
// retried; Run returns nil when ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	for {
		err := s.load(ctx)
		if err == nil {
			break
		}
		s.log.Error("loading the scheduled jobs; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.o.Poll):
		}
	}
	s.log.Info("scheduler started", "jobs", len(s.entries), "firesFrom", s.o.Clock.Now().Add(max(s.o.Settle, 0)))
	if s.o.Ready != nil {
		s.o.Ready(len(s.entries))
	}
	settled := s.o.Clock.Now().Add(max(s.o.Settle, 0))
	poll := time.NewTicker(s.o.Poll)
	defer poll.Stop()
	resync := time.NewTicker(s.o.Resync)
	defer resync.Stop()
	for {
		// A burst that failed because ctx ended puts its jobs back due;
		// without this check the loop would take them up again for ever.
		if ctx.Err() != nil {
			return nil
		}
		now := s.o.Clock.Now()
		if !now.Before(settled) {
			if due := s.popDue(now); len(due) > 0 {
				s.fire(ctx, due, now)
				continue
			}
		}
		if s.prepareAhead(ctx, now) {
			continue
		}
		var wake <-chan time.Time
		if len(s.queue) > 0 {
			at := s.queue[0].next
			if at.Before(settled) {
				at = settled
			}
			wait := at.Sub(now)
			if s.o.Lead > 0 {
				// Look again for slots coming within Lead to prepare.
				wait = min(wait, s.o.Lead/4)
			}
			wake = s.o.Clock.After(wait)
		}
		// After the timer is set: a clock moved from Idle wakes it.
		if s.o.Idle != nil {
			s.o.Idle()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
			if err := s.poll(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("reading changed jobs", "err", err)
			}
		case <-resync.C:
			if err := s.load(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("reloading the scheduled jobs", "err", err)
			}
		}
	}
}

// schedule returns the compiled schedule of a job's columns, shared with
// every job of the same schedule.
func (s *Scheduler) schedule(typ string, cron *string, advanced []byte, tz string) (*schedule.Schedule, error) {
	spec := schedule.Spec{Type: typ, Timezone: tz, Advanced: json.RawMessage(advanced)}
	if cron != nil {
		spec.Cron = *cron
	}
	key := typ + "\x00" + spec.Cron + "\x00" + tz + "\x00" + string(advanced)
	s.specsMu.Lock()
	defer s.specsMu.Unlock()
	if sc, ok := s.specs[key]; ok {
		return sc, nil
	}
	sc, err := schedule.ParseWith(spec, s.zones.Load)
	if err != nil {
		return nil, err
	}
	s.specs[key] = sc
	return sc, nil
}

// put adds or refreshes job id: its next slot is the first after through.
func (s *Scheduler) put(id, user uuid.UUID, sc *schedule.Schedule, updatedAt, through time.Time) {
	next := sc.Next(through, 1)
	e := s.entries[id]
	if len(next) == 0 {
		s.remove(id) // the schedule has ended
		return
	}
	if e == nil {
		e = &entry{id: id, index: -1}
		s.entries[id] = e
	}
	e.user, e.sc, e.updatedAt, e.next = user, sc, updatedAt, next[0]
	if e.prep != nil && !e.prep.slot.Equal(e.next) {
		e.prep = nil // built for a slot now past
	}
	if e.index < 0 {
		heap.Push(&s.queue, e)
	} else {
		heap.Fix(&s.queue, e.index)
	}
}

func (s *Scheduler) remove(id uuid.UUID) {
	if e := s.entries[id]; e != nil {
		if e.index >= 0 {
			heap.Remove(&s.queue, e.index)
		}
		delete(s.entries, id)
	}
}

// load reads every scheduled job again; jobs gone or paused are dropped.
func (s *Scheduler) load(ctx context.Context) error {
	rows, err := s.q.ScheduledJobs(ctx, s.o.Pool)
	if err != nil {
		return err
	}
	s.specsMu.Lock()
	s.specs = map[string]*schedule.Schedule{} // drop schedules no job uses
	s.specsMu.Unlock()
	seen := make(map[uuid.UUID]bool, len(rows))
	for _, r := range rows {
		seen[r.ID] = true
		sc, err := s.schedule(r.ScheduleType, r.CronExpression, r.AdvancedScheduleConfig, r.Timezone)
		if err != nil {
			s.log.Warn("job has an invalid schedule; not scheduled", "jobId", r.ID, "err", err)
			s.remove(r.ID)
			continue
		}
		s.put(r.ID, r.UserID, sc, r.UpdatedAt, r.ScheduledThrough)
	}
	for id := range s.entries {
		if !seen[id] {
			s.remove(id)
		}
	}
	for _, r := range rows {
		if r.UpdatedAt.After(s.watermark) {
			s.watermark = r.UpdatedAt
		}
	}
	return nil
}

// pollOverlap is how far before the newest change seen a change poll
// looks again, for transactions that committed after it although their
// updated_at (their start) is older. A later commit still is caught by
// the next full reload (Resync).
const pollOverlap = time.Second

// poll applies the jobs changed since the newest change seen.
func (s *Scheduler) poll(ctx context.Context) error {
	rows, err := s.q.ChangedJobs(ctx, s.o.Pool, s.watermark.Add(-pollOverlap))
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r.UpdatedAt.After(s.watermark) {
			s.watermark = r.UpdatedAt
		}
		if !r.IsActive || r.ScheduleType == "manual" {
			s.remove(r.ID)
			continue
		}
		if e := s.entries[r.ID]; e != nil && e.updatedAt.Equal(r.UpdatedAt) {
			continue
		}
		sc, err := s.schedule(r.ScheduleType, r.CronExpression, r.AdvancedScheduleConfig, r.Timezone)
		if err != nil {
			s.log.Warn("job has an invalid schedule; not scheduled", "jobId", r.ID, "err", err)
			s.remove(r.ID)
			continue
		}
		s.put(r.ID, r.UserID, sc, r.UpdatedAt, r.ScheduledThrough)
	}
	return nil
}

// popDue takes every job whose next slot is at or before now out of the
// heap.
func (s *Scheduler) popDue(now time.Time) []*entry {
	var due []*entry
	for len(s.queue) > 0 && !s.queue[0].next.After(now) {
		due = append(due, heap.Pop(&s.queue).(*entry))
	}
	return due
}

// fire decides the due jobs in batches, Workers at a time, then puts each
// back in the heap at its next slot. A batch that fails is retried after
// Poll, its jobs back in the heap at the slot they had.
func (s *Scheduler) fire(ctx context.Context, due []*entry, now time.Time) {
	batches := make([][]*entry, 0, len(due)/s.o.Batch+1)
	for len(due) > 0 {
		n := min(len(due), s.o.Batch)
		batches = append(batches, due[:n])
		due = due[n:]
	}
	outcomes := make([][]outcome, len(batches))
	failed := make([]error, len(batches))
	// Whose agents are online is read once for the whole burst.
	var users []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, b := range batches {
		for _, e := range b {
			if !seen[e.user] {
				seen[e.user] = true
				users = append(users, e.user)
			}
		}
	}
	agents, err := s.loadAgents(ctx, users)
	var g errgroup.Group
	g.SetLimit(s.o.Workers)
	for i, b := range batches {
		if err != nil {
			failed[i] = err
			continue
		}
		g.Go(func() error {
			outcomes[i], failed[i] = s.decide(ctx, b, now, agents)
			return nil
		})
	}
	_ = g.Wait()
	retry := false
	for i, b := range batches {
		if failed[i] != nil {
			if ctx.Err() == nil {
				s.log.Error("deciding scheduled jobs; retrying", "jobs", len(b), "err", failed[i])
			}
			retry = true
			for _, e := range b {
				heap.Push(&s.queue, e)
			}
			continue
		}
		for _, o := range outcomes[i] {
			if o.gone {
				delete(s.entries, o.id)
				continue
			}
			s.put(o.id, o.user, o.sc, o.updatedAt, o.through)
		}
	}
	if retry {
		select {
		case <-ctx.Done():
		case <-time.After(s.o.Poll):
		}
	}
}

// outcome is what deciding one due job leaves for its heap entry.
type outcome struct {
	id        uuid.UUID
	user      uuid.UUID
	gone      bool // deleted, paused or made manual
	sc        *schedule.Schedule
	updatedAt time.Time
	through   time.Time // its slots up to here are handled
}

// entryHeap orders entries by next slot.
type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
