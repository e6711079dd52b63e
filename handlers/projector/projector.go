// Package projector turns the EVENTS stream into PostgreSQL tables. Each
// event type has one apply function made only of idempotent SQL, so a
// duplicated, late or replayed event changes nothing.
package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/outbox"
)

// Opts configures Run.
type Opts struct {
	Pool   *pgxpool.Pool       // required
	JS     jetstream.JetStream // required
	Logger *slog.Logger        // default slog.Default()
	// Durable names the consumer; default events.ProjectorConsumer. A new
	// name replays the whole stream.
	Durable string
}

func (o *Opts) validate() error {
	if o.Pool == nil || o.JS == nil {
		return errors.New("projector: Pool and JS are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Durable == "" {
		o.Durable = events.ProjectorConsumer
	}
	return nil
}

// errPoison marks an event that can never be applied; it is terminated, not
// retried.
var errPoison = errors.New("poison event")

// Run consumes events until ctx ends. A temporary failure (database down) is
// retried after a delay; a malformed event is logged and terminated.
func Run(ctx context.Context, o Opts) error {
	if err := o.validate(); err != nil {
		return err
	}
	cons, err := events.EnsureEventConsumer(ctx, o.JS, o.Durable)
	if err != nil {
		return err
	}
	p := &projector{pool: o.Pool, q: db.New(), log: o.Logger}
	// Events already delivered are applied even while shutting down (the
	// consumer drains), so their writes must not die with ctx.
	applyCtx := context.WithoutCancel(ctx)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		actx, cancel := context.WithTimeout(applyCtx, 30*time.Second)
		err := p.apply(actx, msg)
		cancel()
		switch {
		case err == nil:
			_ = msg.Ack()
		case errors.Is(err, errPoison):
			p.log.Error("dropping event", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
		default:
			p.log.Warn("applying event failed; will retry", "subject", msg.Subject(), "err", err)
			_ = msg.NakWithDelay(2 * time.Second)
		}
	})
	if err != nil {
		return fmt.Errorf("projector: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

type projector struct {
	pool *pgxpool.Pool
	q    *db.Queries
	log  *slog.Logger
}

func (p *projector) apply(ctx context.Context, msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	// One transaction per event: an event that updates several rows (a
	// completed chunked backup records its chain in a second statement)
	// is seen whole or not at all.
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		return Apply(ctx, tx, msg.Subject(), meta.Timestamp, msg.Data())
	})
}

// Apply applies one event, received on subject and stored by the stream at
// streamTime, to the tables behind dbtx. It is idempotent. The control plane
// also calls it for the events it publishes, so that a run is visible as
// soon as the API answers. Errors wrapping ErrPoison mean the event can
// never apply.
//
// Trust follows the subject. An agent publishes only on
// rahat.evt.<its id>.>, and only the phases events.AgentPhase allows
// there: anything else on an agent subject is poison. Its events move only
// rows whose agent_id is that agent, that is runs, restores and
// verifications the control plane sent to it. Rows are created, and
// deleted, expired or declared lost, only by rahat.cp.> events, which no
// agent can publish.
func Apply(ctx context.Context, dbtx db.DBTX, subject string, streamTime time.Time, data []byte) error {
	sub, ok := events.ParseSubject(subject)
	if !ok {
		return fmt.Errorf("%w: subject %q", errPoison, subject)
	}
	agent, err := uuid.Parse(sub.AgentID)
	if err != nil {
		return fmt.Errorf("%w: agent id %q", errPoison, sub.AgentID)
	}
	if sub.Control && !events.ControlPhase(sub.Kind, sub.Phase) ||
		!sub.Control && !events.AgentPhase(sub.Kind, sub.Phase) {
		return fmt.Errorf("%w: %s is not a phase of that subject", errPoison, subject)
	}
	q := db.New()
	switch sub.Kind {
	case events.KindAgent:
		return applyPresence(ctx, q, dbtx, agent, sub.Phase, streamTime, data)
	case events.KindBackup:
		return applyBackup(ctx, q, dbtx, agent, sub, data)
	case events.KindRestore:
		return applyRestore(ctx, q, dbtx, agent, sub.Phase, data)
	case events.KindVerify:
		return applyVerify(ctx, q, dbtx, agent, sub.Phase, data)
	default:
		return fmt.Errorf("%w: unknown event kind %q", errPoison, sub.Kind)
	}
}

// ErrPoison marks an event that can never be applied.
var ErrPoison = errPoison

// applyPresence records when the agent was last heard from. The time is the
// stream's (the server's clock), not the agent's.
func applyPresence(ctx context.Context, q *db.Queries, dbtx db.DBTX, agent uuid.UUID, phase string, at time.Time, data []byte) error {
	var ev events.AgentPresence
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	if ev.AgentID != agent.String() {
		return fmt.Errorf("%w: payload agent %q on subject of agent %q", errPoison, ev.AgentID, agent)
	}
	switch phase {
	case events.PhaseOnline, events.PhaseHeartbeat, events.PhaseOffline:
	default:
		return fmt.Errorf("%w: presence phase %q", errPoison, phase)
	}
	return q.ApplyAgentPresence(ctx, dbtx, db.ApplyAgentPresenceParams{
		AgentID: agent, Online: phase != events.PhaseOffline, LastSeenAt: at,
		Hostname: ev.Hostname, Os: ev.OS, Version: ev.Version,
	})
}

func parseID(field, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: %s %q", errPoison, field, s)
	}
	return id, nil
}

func ptr[T any](v T) *T { return &v }

func applyBackup(ctx context.Context, q *db.Queries, dbtx db.DBTX, agent uuid.UUID, sub events.Subject, data []byte) error {
	var ev events.BackupEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	run, err := parseID("runId", ev.RunID)
	if err != nil {
		return err
	}
	at := ev.At.UTC()
	switch phase := sub.Phase; phase {
	case events.PhaseQueued, events.PhaseSkipped:
		p, err := queuedParams(agent, phase, ev)
		if err != nil {
			return err
		}
		return q.ApplyBackupQueued(ctx, dbtx, p)
	case events.PhaseStarted:
		return q.ApplyBackupStarted(ctx, dbtx, db.ApplyBackupStartedParams{ID: run, AgentID: agent, At: &at})
	case events.PhaseProgress:
		return q.ApplyBackupProgress(ctx, dbtx, db.ApplyBackupProgressParams{ID: run, AgentID: agent,
			Seq: ev.Seq, Step: ptr(ev.Step), Bytes: ptr(ev.Bytes), Percent: ptr(int32(ev.Percent))})
	case events.PhaseChained:
		if ev.Chain == nil || !slices.Contains([]string{"full", "incremental", "differential"}, ev.Chain.Type) {
			return fmt.Errorf("%w: chained without a valid chain", errPoison)
		}
		p := db.ApplyBackupChainParams{ID: run, BackupType: ev.Chain.Type}
		if ev.Chain.ParentID != "" {
			parent, err := parseID("chain.parentId", ev.Chain.ParentID)
			if err != nil {
				return err
			}
			p.ParentID = &parent
		}
		return q.ApplyBackupChain(ctx, dbtx, p)
	case events.PhaseCompleted:
		err := q.ApplyBackupCompleted(ctx, dbtx, db.ApplyBackupCompletedParams{ID: run, AgentID: agent, At: &at,
			DurationMs: ptr(ev.DurationMs), FileName: ptr(ev.FileName), FileSize: ptr(ev.FileSize),
			RawSize: ptr(ev.RawSize), StorageKey: ptr(ev.StorageKey), Checksum: ptr(ev.Checksum),
			ChecksumAlgorithm: ptr(ev.ChecksumAlgorithm), Manifest: []byte(ev.Manifest)})
		if err != nil {
			return err
		}
		// A chunked run: what it stored, and whether the agent fell back
		// to a full (it may only shorten its chain, never name another).
		var m struct {
			Chain *struct {
				Type        string `json:"type"`
				NewRawBytes int64  `json:"newRawBytes"`
			} `json:"chain"`
		}
		if json.Unmarshal(ev.Manifest, &m) != nil || m.Chain == nil {
			return nil
		}
		return q.ApplyBackupChainCompleted(ctx, dbtx, db.ApplyBackupChainCompletedParams{ID: run, AgentID: agent,
			NewBytes: &m.Chain.NewRawBytes, AsFull: m.Chain.Type == "full"})
	case events.PhaseFailed, events.PhaseLost:
		// Only the control plane's lost phase may be overridden by a
		// later completion; an agent cannot mark its own failure so.
		lost := phase == events.PhaseLost
		return q.ApplyBackupFailed(ctx, dbtx, db.ApplyBackupFailedParams{ID: run, AgentID: agent, At: &at, ErrorMessage: ptr(ev.Error), Lost: lost})
	case events.PhaseDeleted:
		return q.ApplyBackupDeleted(ctx, dbtx, db.ApplyBackupDeletedParams{ID: run, AgentID: agent, At: &at})
	case events.PhaseExpired:
		return q.ApplyBackupExpired(ctx, dbtx, db.ApplyBackupExpiredParams{ID: run, AgentID: agent, At: &at, Reason: ptr(ev.Reason)})
	case events.PhasePurged:
		return q.ApplyBackupPurged(ctx, dbtx, db.ApplyBackupPurgedParams{ID: run, AgentID: agent, At: &at})
	case events.PhasePurgeFailed:
		if ev.Attempt < 1 || ev.RetryAt == nil {
			return fmt.Errorf("%w: purge_failed without attempt or retryAt", errPoison)
		}
		return q.ApplyBackupPurgeFailed(ctx, dbtx, db.ApplyBackupPurgeFailedParams{ID: run, AgentID: agent,
			Attempt: int32(ev.Attempt), Error: ptr(ev.Error), RetryAt: ptr(ev.RetryAt.UTC())})
	default:
		return fmt.Errorf("%w: backup phase %q", errPoison, phase)
	}
}

// queuedParams is the history row of a queued or skipped backup event.
func queuedParams(agent uuid.UUID, phase string, ev events.BackupEvent) (db.ApplyBackupQueuedParams, error) {
	var p db.ApplyBackupQueuedParams
	run, err := parseID("runId", ev.RunID)
	if err != nil {
		return p, err
	}
	user, err := parseID("userId", ev.UserID)
	if err != nil {
		return p, err
	}
	job, err := parseID("jobId", ev.JobID)
	if err != nil {
		return p, err
	}
	database, err := parseID("databaseId", ev.DatabaseID)
	if err != nil {
		return p, err
	}
	p = db.ApplyBackupQueuedParams{ID: run, UserID: user, BackupJobID: job, DatabaseID: database,
		AgentID: agent, QueuedAt: ev.At.UTC(), StorageType: ev.StorageType, Compression: ev.Compression,
		IsEncrypted: ev.IsEncrypted, Status: "queued", ScheduledFor: ev.ScheduledFor}
	if phase == events.PhaseSkipped {
		p.Status, p.ErrorMessage = "skipped", ptr(ev.Error)
	}
	if ev.CloudStorageID != "" {
		cs, err := parseID("cloudStorageId", ev.CloudStorageID)
		if err != nil {
			return p, err
		}
		p.CloudStorageID = &cs
	}
	return p, nil
}

// Queued is one queued or skipped backup event for ApplyQueued.
type Queued struct {
	Agent uuid.UUID
	Phase string // events.PhaseQueued or events.PhaseSkipped
	Event events.BackupEvent
}

// ApplyQueued applies many queued and skipped backup events in one
// statement: what Apply does for each, for the scheduler's bursts.
func ApplyQueued(ctx context.Context, dbtx db.DBTX, items []Queued) error {
	if len(items) == 0 {
		return nil
	}
	var m db.ApplyBackupQueuedManyParams
	for _, it := range items {
		p, err := queuedParams(it.Agent, it.Phase, it.Event)
		if err != nil {
			return err
		}
		m.Ids, m.UserIds, m.JobIds = append(m.Ids, p.ID), append(m.UserIds, p.UserID), append(m.JobIds, p.BackupJobID)
		m.DatabaseIds, m.AgentIds = append(m.DatabaseIds, p.DatabaseID), append(m.AgentIds, p.AgentID)
		m.Statuses, m.QueuedAts = append(m.Statuses, p.Status), append(m.QueuedAts, p.QueuedAt)
		m.StorageTypes, m.Compressions = append(m.StorageTypes, p.StorageType), append(m.Compressions, p.Compression)
		m.Encrypted = append(m.Encrypted, p.IsEncrypted)
		var msg string
		if p.ErrorMessage != nil {
			msg = *p.ErrorMessage
		}
		cloud := uuid.Nil
		if p.CloudStorageID != nil {
			cloud = *p.CloudStorageID
		}
		var slot time.Time
		if p.ScheduledFor != nil {
			slot = *p.ScheduledFor
		}
		m.ErrorMessages, m.CloudStorageIds, m.ScheduledFors = append(m.ErrorMessages, msg), append(m.CloudStorageIds, cloud), append(m.ScheduledFors, slot)
	}
	return db.New().ApplyBackupQueuedMany(ctx, dbtx, m)
}

func applyRestore(ctx context.Context, q *db.Queries, dbtx db.DBTX, agent uuid.UUID, phase string, data []byte) error {
	var ev events.RestoreEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	id, err := parseID("restoreId", ev.RestoreID)
	if err != nil {
		return err
	}
	at := ev.At.UTC()
	finish := func(status string, msg *string) error {
		backup, err := q.ApplyRestoreFinished(ctx, dbtx, db.ApplyRestoreFinishedParams{ID: id, AgentID: agent,
			Status: status, At: &at, ErrorMessage: msg})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // already finished: a duplicate
		}
		if err != nil {
			return err
		}
		return q.ApplyBackupRestoreStatus(ctx, dbtx, db.ApplyBackupRestoreStatusParams{ID: backup, Status: &status})
	}
	switch phase {
	case events.PhaseQueued:
		user, err := parseID("userId", ev.UserID)
		if err != nil {
			return err
		}
		backup, err := parseID("backupId", ev.BackupID)
		if err != nil {
			return err
		}
		target, err := parseID("targetDatabaseId", ev.TargetDatabaseID)
		if err != nil {
			return err
		}
		return q.ApplyRestoreQueued(ctx, dbtx, db.ApplyRestoreQueuedParams{ID: id, UserID: user,
			BackupHistoryID: backup, TargetDatabaseID: target, AgentID: agent, QueuedAt: at})
	case events.PhaseStarted:
		return q.ApplyRestoreStarted(ctx, dbtx, db.ApplyRestoreStartedParams{ID: id, AgentID: agent, At: &at})
	case events.PhaseProgress:
		return q.ApplyRestoreProgress(ctx, dbtx, db.ApplyRestoreProgressParams{ID: id, AgentID: agent,
			Seq: ev.Seq, Step: ptr(ev.Step), Bytes: ptr(ev.Bytes), Percent: ptr(int32(ev.Percent))})
	case events.PhaseCompleted:
		return finish("success", nil)
	case events.PhaseFailed:
		return finish("failed", ptr(ev.Error))
	default:
		return fmt.Errorf("%w: restore phase %q", errPoison, phase)
	}
}

func applyVerify(ctx context.Context, q *db.Queries, dbtx db.DBTX, agent uuid.UUID, phase string, data []byte) error {
	var ev events.VerifyEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	backup, err := parseID("backupId", ev.BackupID)
	if err != nil {
		return err
	}
	at := ev.At.UTC()
	var result *events.VerificationResult
	switch phase {
	case events.PhaseQueued:
		// The control plane sent a verification: the backup shows it
		// as verifying until a result comes.
		return q.ApplyVerifyQueued(ctx, dbtx, db.ApplyVerifyQueuedParams{ID: backup, AgentID: agent, At: &at})
	case events.PhaseStarted, events.PhaseProgress:
		return nil // the row changes when the verification ends
	case events.PhaseCompleted:
		if ev.Result == nil {
			return fmt.Errorf("%w: verify completed without a result", errPoison)
		}
		result = ev.Result
	case events.PhaseFailed:
		result = &events.VerificationResult{OverallStatus: "FAILED", VerificationMethod: ev.Level,
			Checks: []events.Check{{Check: "run", Passed: false, Message: ev.Error}}}
	default:
		return fmt.Errorf("%w: verify phase %q", errPoison, phase)
	}
	status := "FAILED"
	if result.OverallStatus == "PASSED" {
		status = "PASSED"
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return err
	}
	return q.ApplyBackupVerified(ctx, dbtx, db.ApplyBackupVerifiedParams{ID: backup, AgentID: agent,
		VerificationStatus: status, VerificationResult: raw, At: &at})
}

// Emit records an event the control plane emits about a run of agent
// (events.ControlSubject) in tx: it applies it at once through the
// projector, so whoever reads the history after tx commits sees it, and
// writes it to the outbox followed by the commands that go with it, so
// they reach the stream once tx commits (the projector then applies the
// event again, which changes nothing). id is the event's own id; its
// message id is events.ControlMsgID(id). The caller kicks the relay after
// the commit.
func Emit(ctx context.Context, tx pgx.Tx, agent uuid.UUID, kind, phase, id string, payload any, commands ...outbox.Message) error {
	ev, err := outbox.JSON(events.ControlSubject(agent.String(), kind, phase), events.ControlMsgID(id), payload)
	if err != nil {
		return err
	}
	if err := Apply(ctx, tx, ev.Subject, time.Now(), ev.Data); err != nil {
		return err
	}
	return outbox.Add(ctx, tx, append([]outbox.Message{ev}, commands...)...)
}
