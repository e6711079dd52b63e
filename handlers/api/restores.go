package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/sealed"
)

// objectRefFor is objectRef plus, for an encrypted backup, the job's
// identity sealed to agent. 409 when that key is gone with its job.
func (a *API) objectRefFor(r *http.Request, h db.BackupHistory) (events.ObjectRef, error) {
	ref := objectRef(h)
	var err error
	if h.StorageType != "local" {
		if ref.Storage, err = a.storageSpec(r.Context(), h.StorageType, h.CloudStorageID, h.UserID, h.AgentID); err != nil {
			return ref, err
		}
	}
	if !h.IsEncrypted {
		return ref, nil
	}
	j, err := a.q.GetBackupJob(r.Context(), a.pool, db.GetBackupJobParams{ID: h.BackupJobID, UserID: h.UserID})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return ref, errorf(http.StatusConflict, "this backup is encrypted and its job was deleted with its key: decrypt it with the key you exported (age -d -i, see the README)")
	} else if err != nil {
		return ref, err
	}
	id, err := a.jobIdentity(j)
	if err != nil {
		return ref, err
	}
	pub, err := a.q.GetAgentPublicKey(r.Context(), a.pool, h.AgentID)
	if err != nil {
		return ref, err
	}
	ref.SealedIdentity, err = sealed.Seal(pub, []byte(id.String()))
	return ref, err
}

// objectRef is what the agent needs to find and check a stored backup.
func objectRef(h db.BackupHistory) events.ObjectRef {
	ref := events.ObjectRef{Storage: events.StorageSpec{Type: h.StorageType}, Compression: h.Compression}
	if h.StorageKey != nil {
		ref.Key = *h.StorageKey
	}
	if h.FileSize != nil {
		ref.Size = *h.FileSize
	}
	if h.ChecksumValue != nil {
		ref.Checksum = *h.ChecksumValue
	}
	return ref
}

// holderOnline returns 503 unless the agent holding h's backup is online.
func (a *API) holderOnline(r *http.Request, h db.BackupHistory) error {
	row, err := a.q.GetAgentStatus(r.Context(), a.pool, db.GetAgentStatusParams{ID: h.AgentID, UserID: userID(r.Context()), OfflineAfterSecs: a.offlineSecs()})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return errorf(http.StatusServiceUnavailable, "the agent that holds this backup was revoked; its local backups are unreachable")
	} else if err != nil {
		return err
	}
	if !row.Online {
		return errorf(http.StatusServiceUnavailable, "agent %q, which holds this backup, is offline: start it and try again", row.Name)
	}
	return nil
}

type restoreRequest struct {
	TargetDatabaseID *uuid.UUID `json:"targetDatabaseId"`
}

// restoreHistory restores a successful backup into its database or
// targetDatabaseId (same type, same owner): 202 {restoreHistoryId}. The
// agent holding the backup runs it, in one transaction. 404 for another
// user's backup or target; 400 for a target of another type; 409 unless the
// backup succeeded; 503 when its agent is offline.
func (a *API) restoreHistory(w http.ResponseWriter, r *http.Request) error {
	h, err := a.loadHistory(r)
	if err != nil {
		return err
	}
	var req restoreRequest
	if r.ContentLength != 0 {
		if err := a.decodeJSON(w, r, &req); err != nil {
			return err
		}
	}
	if h.Status != "success" {
		return errorf(http.StatusConflict, "only a successful backup can be restored (this one is %s)", h.Status)
	}
	targetID := h.DatabaseID
	if req.TargetDatabaseID != nil {
		targetID = *req.TargetDatabaseID
	}
	user := userID(r.Context())
	target, err := a.q.GetDatabase(r.Context(), a.pool, db.GetDatabaseParams{ID: targetID, UserID: user})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return &Error{Code: http.StatusNotFound, Message: "target database not found", Fields: map[string]string{"targetDatabaseId": "no such database"}}
	} else if err != nil {
		return err
	}
	var manifest struct {
		Engine string `json:"engine"`
	}
	if len(h.Manifest) > 0 {
		_ = json.Unmarshal(h.Manifest, &manifest)
	}
	if manifest.Engine != "" && manifest.Engine != target.Type {
		return fieldErrors{"targetDatabaseId": "must be a " + manifest.Engine + " database, like the backup"}.err()
	}
	if err := a.holderOnline(r, h); err != nil {
		return err
	}
	if full, err := a.queueFull(r.Context(), h.AgentID); err != nil {
		return err
	} else if full {
		return errQueueFull
	}
	conn, err := a.connSpec(r.Context(), target, h.AgentID)
	if err != nil {
		return err
	}
	ref, err := a.objectRefFor(r, h)
	if err != nil {
		return err
	}
	id := uuid.New()
	cmd, err := command(h.AgentID, events.CommandRestore, id.String(), events.RestoreCommand{V: events.Version, Deadline: a.deadline(),
		RestoreID: id.String(), BackupID: h.ID.String(), Object: ref, Target: conn})
	if err != nil {
		return err
	}
	ev := events.RestoreEvent{V: events.Version, ID: id.String() + ":queued", RestoreID: id.String(), At: time.Now().UTC(),
		UserID: user.String(), BackupID: h.ID.String(), TargetDatabaseID: target.ID.String()}
	// Under the backup's row lock: retention cannot expire it between the
	// check and the queued restore it then sees.
	err = db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		if err := a.lockReadable(r, tx, h, "restored"); err != nil {
			return err
		}
		return a.emit(r.Context(), tx, h.AgentID, events.KindRestore, events.PhaseQueued, ev.ID, ev, cmd)
	})
	if err != nil {
		return err
	}
	a.opts.Outbox.Kick()
	writeJSON(w, http.StatusAccepted, map[string]any{"restoreHistoryId": id, "status": "queued"})
	return nil
}

// lockReadable locks backup h's row in tx and checks it is still a
// successful backup (409 otherwise): retention leaves a backup alone while
// a restore or verification of it is queued.
func (a *API) lockReadable(r *http.Request, tx pgx.Tx, h db.BackupHistory, verb string) error {
	status, err := a.q.LockBackupForRead(r.Context(), tx, db.LockBackupForReadParams{ID: h.ID, UserID: h.UserID})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return notFound("backup")
	} else if err != nil {
		return err
	}
	if status != "success" {
		return errorf(http.StatusConflict, "only a successful backup can be %s (this one is %s)", verb, status)
	}
	return nil
}

type verifyRequest struct {
	VerificationLevel string `json:"verificationLevel"`
}

// verifyHistory verifies a successful backup at a level (BASIC): 202
// {verificationId}; the result lands in the backup's verificationStatus and
// verificationResult. 400 for another level; 409 unless the backup
// succeeded; 503 when its agent is offline.
func (a *API) verifyHistory(w http.ResponseWriter, r *http.Request) error {
	h, err := a.loadHistory(r)
	if err != nil {
		return err
	}
	req := verifyRequest{VerificationLevel: "BASIC"}
	if r.ContentLength != 0 {
		if err := a.decodeJSON(w, r, &req); err != nil {
			return err
		}
	}
	switch {
	case !slices.Contains(verificationLevels, req.VerificationLevel):
		return fieldErrors{"verificationLevel": "must be one of BASIC, DATABASE, FULL"}.err()
	case req.VerificationLevel != "BASIC":
		return fieldErrors{"verificationLevel": "only BASIC verification is available so far"}.err()
	}
	if h.Status != "success" {
		return errorf(http.StatusConflict, "only a successful backup can be verified (this one is %s)", h.Status)
	}
	if err := a.holderOnline(r, h); err != nil {
		return err
	}
	if full, err := a.queueFull(r.Context(), h.AgentID); err != nil {
		return err
	} else if full {
		return errQueueFull
	}
	ref, err := a.objectRefFor(r, h)
	if err != nil {
		return err
	}
	id := uuid.New()
	cmd, err := command(h.AgentID, events.CommandVerify, id.String(), events.VerifyCommand{V: events.Version, Deadline: a.deadline(),
		VerifyID: id.String(), BackupID: h.ID.String(), Level: req.VerificationLevel, Object: ref})
	if err != nil {
		return err
	}
	ev := events.VerifyEvent{V: events.Version, ID: id.String() + ":queued", VerifyID: id.String(), BackupID: h.ID.String(),
		At: time.Now().UTC(), Level: req.VerificationLevel}
	err = db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		if err := a.lockReadable(r, tx, h, "verified"); err != nil {
			return err
		}
		return a.emit(r.Context(), tx, h.AgentID, events.KindVerify, events.PhaseQueued, ev.ID, ev, cmd)
	})
	if err != nil {
		return err
	}
	a.opts.Outbox.Kick()
	writeJSON(w, http.StatusAccepted, map[string]any{"verificationId": id, "status": "queued"})
	return nil
}

type restoreJSON struct {
	ID               uuid.UUID     `json:"id"`
	BackupHistoryID  uuid.UUID     `json:"backupHistoryId"`
	TargetDatabaseID uuid.UUID     `json:"targetDatabaseId"`
	Status           string        `json:"status"`
	QueuedAt         time.Time     `json:"queuedAt"`
	StartedAt        *time.Time    `json:"startedAt"`
	CompletedAt      *time.Time    `json:"completedAt"`
	Duration         *float64      `json:"duration"`
	ErrorMessage     *string       `json:"errorMessage"`
	Progress         *progressJSON `json:"progress"`
}

func toRestoreJSON(h db.RestoreHistory) restoreJSON {
	out := restoreJSON{ID: h.ID, BackupHistoryID: h.BackupHistoryID, TargetDatabaseID: h.TargetDatabaseID,
		Status: h.Status, QueuedAt: h.QueuedAt, StartedAt: h.StartedAt, CompletedAt: h.CompletedAt, ErrorMessage: h.ErrorMessage}
	out.Duration = seconds(h.DurationMs)
	out.Progress = toProgressJSON(h.ProgressStep, h.ProgressBytes, h.ProgressPercent)
	return out
}

// listRestores answers {results, page, limit, totalPages, totalResults},
// newest first; filter backupId.
func (a *API) listRestores(w http.ResponseWriter, r *http.Request) error {
	f := fieldErrors{}
	page, limit := pageParams(r, f)
	p := db.ListRestoresParams{UserID: userID(r.Context()), BackupID: uuidParam(r, "backupId", f),
		Lim: int32(limit), Off: int32((page - 1) * limit)}
	if err := f.err(); err != nil {
		return err
	}
	rows, err := a.q.ListRestores(r.Context(), a.pool, p)
	if err != nil {
		return err
	}
	var total int64
	out := make([]restoreJSON, 0, len(rows))
	for _, row := range rows {
		total = row.Total
		out = append(out, toRestoreJSON(row.RestoreHistory))
	}
	writeJSON(w, http.StatusOK, pageResponse(out, page, limit, total))
	return nil
}

// getRestore answers one restore; 404 when not the user's.
func (a *API) getRestore(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "restore")
	if err != nil {
		return err
	}
	h, err := a.q.GetRestore(r.Context(), a.pool, db.GetRestoreParams{ID: id, UserID: userID(r.Context())})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return notFound("restore")
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toRestoreJSON(h))
	return nil
}
