package runs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/chunkstore"
	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
)

// StartBackup starts user's job jobID now ("run now") and returns the run
// and its phase: events.PhaseQueued on the agent Pick chooses, or
// events.PhaseSkipped, recorded with its reason, when no agent can take
// it now. NotFound when the job (or its database) is not the user's or
// was deleted meanwhile; Conflict when the job already has a run queued or
// running; Busy when the agent's queue is full.
func (s *Service) StartBackup(ctx context.Context, user, jobID uuid.UUID) (run uuid.UUID, phase string, err error) {
	j, err := s.q.GetBackupJob(ctx, s.c.Pool, db.GetBackupJobParams{ID: jobID, UserID: user})
	if err != nil {
		return run, "", mapNotFound(err, "backup job", "")
	}
	d, err := s.q.GetDatabase(ctx, s.c.Pool, db.GetDatabaseParams{ID: j.DatabaseID, UserID: user})
	if err != nil {
		return run, "", mapNotFound(err, "database", "")
	}
	agents, err := s.Agents(ctx, user)
	if err != nil {
		return run, "", err
	}
	agent, haveAgent := Pick(agents, d.AgentID)
	run = uuid.New()
	phase, reason := Decide(agent, haveAgent, nil)
	ev := Event(j, run, phase, reason, time.Now(), nil)
	var cmds []outbox.Message
	var chained *events.BackupEvent
	if phase == events.PhaseQueued {
		if err := s.checkQueue(ctx, agent.ID); err != nil {
			return run, "", err
		}
		built, errs := s.BackupCommands(ctx, s.c.Pool, []db.BackupJob{j}, []uuid.UUID{agent.ID}, []uuid.UUID{run})
		if errs[0] != nil {
			return run, "", errs[0]
		}
		m, err := Command(agent.ID, events.CommandBackup, run.String(), built[0])
		if err != nil {
			return run, "", err
		}
		cmds = append(cmds, m)
		chained = ChainEvent(built[0])
	}
	errRunning := fail(Conflict, "this job already has a backup queued or running")
	err = db.WithTx(ctx, s.c.Pool, func(tx pgx.Tx) error {
		// The job's row lock orders concurrent "run now" clicks.
		locked, err := s.q.GetBackupJobForUpdate(ctx, tx, db.GetBackupJobForUpdateParams{ID: j.ID, UserID: user})
		if err != nil {
			return mapNotFound(err, "backup job", "")
		}
		if !locked.UpdatedAt.Equal(j.UpdatedAt) {
			// The command was built from the job as it was.
			return fail(Conflict, "the job was changed while the run was being prepared; run it again")
		}
		active, err := s.q.HasActiveBackup(ctx, tx, j.ID)
		if err != nil {
			return err
		}
		if active {
			return errRunning
		}
		// agent.ID is the nil UUID when no agent can take it.
		if chained == nil {
			return projector.Emit(ctx, tx, agent.ID, events.KindBackup, phase, ev.ID, ev, cmds...)
		}
		if err := projector.Emit(ctx, tx, agent.ID, events.KindBackup, phase, ev.ID, ev); err != nil {
			return err
		}
		return projector.Emit(ctx, tx, agent.ID, events.KindBackup, events.PhaseChained, chained.ID, chained, cmds...)
	})
	switch err = db.MapErr(err); {
	case errors.Is(err, db.ErrConflict):
		return run, "", errRunning
	case errors.Is(err, db.ErrNotFound):
		// The job or its database went away meanwhile (the history row's
		// foreign keys).
		return run, "", notFound("backup job", "")
	case err != nil:
		return run, "", err
	}
	s.c.Outbox.Kick()
	return run, phase, nil
}

// HolderOnline is nil when the agent holding backup h is online;
// Unavailable otherwise.
func (s *Service) HolderOnline(ctx context.Context, h db.BackupHistory) error {
	row, err := s.q.GetAgentStatus(ctx, s.c.Pool, db.GetAgentStatusParams{ID: h.AgentID, UserID: h.UserID, OfflineAfterSecs: s.offlineSecs()})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return fail(Unavailable, "the agent that holds this backup was revoked; its local backups are unreachable")
	} else if err != nil {
		return err
	}
	if !row.Online {
		return fail(Unavailable, "agent %q, which holds this backup, is offline: start it and try again", row.Name)
	}
	return nil
}

// readable checks that backup h is a successful backup whose agent can
// take a command now (Conflict, Unavailable, Busy otherwise); verb says
// what the command does to it.
func (s *Service) readable(ctx context.Context, h db.BackupHistory, verb string) error {
	if h.Status != "success" {
		return fail(Conflict, "only a successful backup can be %s (this one is %s)", verb, h.Status)
	}
	if err := s.HolderOnline(ctx, h); err != nil {
		return err
	}
	return s.checkQueue(ctx, h.AgentID)
}

// lockReadable locks backup h's row in tx and checks it is still a
// successful backup (Conflict otherwise): retention leaves a backup alone
// while a restore or verification of it is queued.
func (s *Service) lockReadable(ctx context.Context, tx pgx.Tx, h db.BackupHistory, verb string) error {
	status, err := s.q.LockBackupForRead(ctx, tx, db.LockBackupForReadParams{ID: h.ID, UserID: h.UserID})
	if err != nil {
		return mapNotFound(err, "backup", "")
	}
	if status != "success" {
		return fail(Conflict, "only a successful backup can be %s (this one is %s)", verb, status)
	}
	return nil
}

// StartRestore restores backup h into database target (of h's owner) on
// the agent holding h, and returns the restore's id. Invalid (field
// targetDatabaseId) for a target of another type than the backup's;
// Conflict unless h succeeded; Unavailable when its agent is offline;
// Busy when that agent's queue is full.
func (s *Service) StartRestore(ctx context.Context, h db.BackupHistory, target db.Database) (uuid.UUID, error) {
	var manifest struct {
		Engine string `json:"engine"`
	}
	if len(h.Manifest) > 0 {
		_ = json.Unmarshal(h.Manifest, &manifest)
	}
	if manifest.Engine != "" && manifest.Engine != target.Type {
		return uuid.Nil, &Error{Failure: Invalid, Field: "targetDatabaseId", Msg: "must be a " + manifest.Engine + " database, like the backup"}
	}
	if err := s.readable(ctx, h, "restored"); err != nil {
		return uuid.Nil, err
	}
	conn, err := s.ConnSpec(ctx, target, h.AgentID)
	if err != nil {
		return uuid.Nil, err
	}
	ref, err := s.ObjectRef(ctx, h)
	if err != nil {
		return uuid.Nil, err
	}
	id := uuid.New()
	cmd, err := Command(h.AgentID, events.CommandRestore, id.String(), events.RestoreCommand{V: events.Version, Deadline: s.deadline(),
		RestoreID: id.String(), BackupID: h.ID.String(), Object: ref, Target: conn})
	if err != nil {
		return uuid.Nil, err
	}
	ev := events.RestoreEvent{V: events.Version, ID: id.String() + ":queued", RestoreID: id.String(), At: time.Now().UTC(),
		UserID: h.UserID.String(), BackupID: h.ID.String(), TargetDatabaseID: target.ID.String()}
	// Under the backup's row lock: retention cannot expire it between the
	// check and the queued restore it then sees.
	err = db.WithTx(ctx, s.c.Pool, func(tx pgx.Tx) error {
		if err := s.lockReadable(ctx, tx, h, "restored"); err != nil {
			return err
		}
		return projector.Emit(ctx, tx, h.AgentID, events.KindRestore, events.PhaseQueued, ev.ID, ev, cmd)
	})
	if err != nil {
		return uuid.Nil, mapNotFound(err, "target database", "targetDatabaseId")
	}
	s.c.Outbox.Kick()
	return id, nil
}

// StartVerify verifies backup h at level on the agent holding it and
// returns the verification's id; the result lands on h. Conflict unless h
// succeeded; Unavailable when its agent is offline; Busy when that
// agent's queue is full.
func (s *Service) StartVerify(ctx context.Context, h db.BackupHistory, level string) (uuid.UUID, error) {
	if err := s.readable(ctx, h, "verified"); err != nil {
		return uuid.Nil, err
	}
	ref, err := s.ObjectRef(ctx, h)
	if err != nil {
		return uuid.Nil, err
	}
	vc := events.VerifyCommand{V: events.Version, Deadline: s.deadline(), BackupID: h.ID.String(), Level: level, Object: ref}
	if vc.Engine, vc.Target, err = s.verifyTarget(ctx, h, level); err != nil {
		return uuid.Nil, err
	}
	id := uuid.New()
	vc.VerifyID = id.String()
	cmd, err := Command(h.AgentID, events.CommandVerify, id.String(), vc)
	if err != nil {
		return uuid.Nil, err
	}
	ev := events.VerifyEvent{V: events.Version, ID: id.String() + ":queued", VerifyID: id.String(), BackupID: h.ID.String(),
		At: time.Now().UTC(), Level: level}
	err = db.WithTx(ctx, s.c.Pool, func(tx pgx.Tx) error {
		if err := s.lockReadable(ctx, tx, h, "verified"); err != nil {
			return err
		}
		return projector.Emit(ctx, tx, h.AgentID, events.KindVerify, events.PhaseQueued, ev.ID, ev, cmd)
	})
	if err != nil {
		return uuid.Nil, err
	}
	s.c.Outbox.Kick()
	return id, nil
}

// verifyTarget is the engine type of backup h's database and, for FULL
// (and a SQL Server backup's DATABASE level), the server its scratch
// database goes to or that checks it, sealed to h's agent: the job's
// verification target, else the backup's own database. Conflict when FULL
// has neither (both deleted).
func (s *Service) verifyTarget(ctx context.Context, h db.BackupHistory, level string) (string, *events.ConnSpec, error) {
	src, srcErr := s.q.GetDatabase(ctx, s.c.Pool, db.GetDatabaseParams{ID: h.DatabaseID, UserID: h.UserID})
	if srcErr != nil && !errors.Is(db.MapErr(srcErr), db.ErrNotFound) {
		return "", nil, srcErr
	}
	typ := src.Type
	// SQL Server's backups are checked by a server at DATABASE level too.
	if level != "FULL" && !(level == "DATABASE" && typ == engines.MSSQL) {
		return typ, nil, nil
	}
	target, found := src, srcErr == nil
	if j, err := s.q.GetBackupJob(ctx, s.c.Pool, db.GetBackupJobParams{ID: h.BackupJobID, UserID: h.UserID}); err == nil && j.VerificationDatabaseID != nil {
		if t, err := s.q.GetDatabase(ctx, s.c.Pool, db.GetDatabaseParams{ID: *j.VerificationDatabaseID, UserID: h.UserID}); err == nil {
			target, found = t, true
		}
	}
	if !found {
		return "", nil, fail(Conflict, "the backup's database is gone, so the verification has no server to restore into or check on; name a verification target on the job")
	}
	if typ == "" {
		typ = target.Type
	}
	conn, err := s.ConnSpec(ctx, target, h.AgentID)
	if err != nil {
		return "", nil, err
	}
	return typ, &conn, nil
}

// DeleteBackup deletes backup h's stored object (DeleteObject), then
// records it deleted: its history row goes. Conflict while it is queued
// or running; DeleteObject's errors, with nothing deleted.
func (s *Service) DeleteBackup(ctx context.Context, h db.BackupHistory) error {
	if h.Status == "queued" || h.Status == "running" {
		return fail(Conflict, "the backup is still %s; wait for it to end", h.Status)
	}
	if err := s.DeleteObject(ctx, h); err != nil {
		return err
	}
	ev := events.BackupEvent{V: events.Version, ID: h.ID.String() + ":deleted", RunID: h.ID.String(), At: time.Now().UTC()}
	return s.emit(ctx, h.AgentID, events.KindBackup, events.PhaseDeleted, ev.ID, ev)
}

// checkNoDependents is Conflict when other backups need backup h's packs:
// kept ones of its chain, or one being made on it.
func (s *Service) checkNoDependents(ctx context.Context, h db.BackupHistory) error {
	if !h.Chunked {
		return nil
	}
	deps, err := s.q.BackupDependents(ctx, s.c.Pool, h.ID)
	if err != nil {
		return err
	}
	if len(deps) == 0 {
		return nil
	}
	ids := make([]string, len(deps))
	for i, d := range deps {
		ids[i] = d.String()
	}
	return fail(Conflict, "later backups of its chain need this backup's data: %s; delete them first, newest first",
		strings.Join(ids, ", "))
}

// DeleteObject deletes the stored object and manifest of backup h, if it
// has any (a successful backup, or an expired one not purged yet): from
// its cloud storage directly, or through the agent holding a local one.
// An object already gone counts as deleted. Unavailable when that agent
// is offline, Timeout when it does not answer, Refused when the storage
// or agent refuses; Conflict when its cloud storage is gone.
func (s *Service) DeleteObject(ctx context.Context, h db.BackupHistory) error {
	stored := h.Status == "success" || (h.Status == "expired" && h.PurgedAt == nil)
	if !stored || h.StorageKey == nil {
		return nil
	}
	if err := s.checkNoDependents(ctx, h); err != nil {
		return err
	}
	if h.StorageType != "local" {
		st, err := s.OpenStorage(ctx, h)
		if err != nil {
			return err
		}
		if h.Chunked {
			// Its packs first: a failure leaves the index, and the retry
			// finds the rest. Not cut short by a client that goes away.
			if _, err := chunkstore.DeletePacks(context.WithoutCancel(ctx), st, *h.StorageKey, h.ID.String()); err != nil {
				return fail(Refused, "the storage refused to delete the backup: %v", err)
			}
		}
		for _, key := range []string{*h.StorageKey, *h.StorageKey + pipeline.ManifestSuffix} {
			if err := st.Delete(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return fail(Refused, "the storage refused to delete the backup: %v", err)
			}
		}
		return nil
	}
	packs := ""
	if h.Chunked {
		packs = h.ID.String()
	}
	var reply events.DeleteReply
	err := events.Request(ctx, s.c.NC, events.RPCSubject(h.AgentID.String(), events.RPCDelete),
		events.DeleteRequest{V: events.Version, Storage: events.StorageSpec{Type: h.StorageType}, Key: *h.StorageKey, Packs: packs},
		&reply, s.c.RPCTimeout)
	if err != nil {
		err = s.RPCError(err, "the agent holding this backup")
		var e *Error
		if errors.As(err, &e) {
			e.Msg += " (nothing was deleted)"
		}
		return err
	}
	if !reply.OK && !reply.NotFound {
		return fail(Refused, "the agent could not delete the backup: %s", reply.Error)
	}
	return nil
}
