package api

import (
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
)

type restoreRequest struct {
	TargetDatabaseID *uuid.UUID `json:"targetDatabaseId"`
}

// restoreHistory restores a successful backup into its database or
// targetDatabaseId (same type, same owner): 202 {restoreHistoryId}. The
// agent holding the backup runs it (all or nothing, as its engine's
// restore guarantees). 404 for another
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
	targetID := h.DatabaseID
	if req.TargetDatabaseID != nil {
		targetID = *req.TargetDatabaseID
	}
	user := userID(r.Context())
	target, err := a.q.GetDatabase(r.Context(), a.pool, db.GetDatabaseParams{ID: targetID, UserID: user})
	if err != nil {
		return owned(err, "target database", "targetDatabaseId")
	}
	id, err := a.runs.StartRestore(r.Context(), h, target)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"restoreHistoryId": id, "status": "queued"})
	return nil
}

type verifyRequest struct {
	VerificationLevel string `json:"verificationLevel"`
}

// verifyHistory verifies a successful backup at a level (BASIC, the
// default, DATABASE or FULL): 202 {verificationId}; the result lands in the
// backup's verificationStatus and verificationResult. FULL restores into a
// scratch database on the job's verification target, else on the backup's
// own database's server. 400 for another level; 409 unless the backup
// succeeded, or for FULL when it has no server to restore into; 503 when
// its agent is offline.
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
	if !slices.Contains(verificationLevels, req.VerificationLevel) {
		return fieldErrors{"verificationLevel": "must be one of BASIC, DATABASE, FULL"}.err()
	}
	id, err := a.runs.StartVerify(r.Context(), h, req.VerificationLevel)
	if err != nil {
		return err
	}
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
	if err != nil {
		return owned(err, "restore", "")
	}
	writeJSON(w, http.StatusOK, toRestoreJSON(h))
	return nil
}
