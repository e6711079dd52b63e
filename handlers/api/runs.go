package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/google/uuid"

	"github.com/rahatback/rahatback/chunkstore"
	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/storage"
	"github.com/rahatback/rahatback/transfer"
)

// runJob starts a backup now: 202 {historyId, status}. 409 when the job
// already has one queued or running; when no agent can take it now the run
// is recorded as skipped (202, status "skipped"). 404 for another user's
// job, or one deleted meanwhile; 429 when the agent's queue is full.
func (a *API) runJob(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "backup job")
	if err != nil {
		return err
	}
	run, phase, err := a.runs.StartBackup(r.Context(), userID(r.Context()), id)
	if err != nil {
		return err
	}
	status := "queued"
	if phase == events.PhaseSkipped {
		status = "skipped"
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"historyId": run, "status": status})
	return nil
}

type historyJSON struct {
	ID                 uuid.UUID       `json:"id"`
	BackupJobID        uuid.UUID       `json:"backupJobId"`
	DatabaseID         uuid.UUID       `json:"databaseId"`
	AgentID            uuid.UUID       `json:"agentId"`
	Status             string          `json:"status"`
	QueuedAt           time.Time       `json:"queuedAt"`
	StartedAt          *time.Time      `json:"startedAt"`
	CompletedAt        *time.Time      `json:"completedAt"`
	Duration           *float64        `json:"duration"` // seconds
	FileName           *string         `json:"fileName"`
	FileSize           *int64          `json:"fileSize"`
	RawSize            *int64          `json:"rawSize"`
	StorageType        string          `json:"storageType"`
	StorageKey         *string         `json:"storageKey"`
	ChecksumValue      *string         `json:"checksumValue"`
	ChecksumAlgorithm  *string         `json:"checksumAlgorithm"`
	Compression        string          `json:"compression"`
	IsEncrypted        bool            `json:"isEncrypted"`
	ErrorMessage       *string         `json:"errorMessage"`
	Progress           *progressJSON   `json:"progress"`
	VerificationStatus string          `json:"verificationStatus"`
	VerificationResult json.RawMessage `json:"verificationResult"`
	LastRestoreStatus  *string         `json:"lastRestoreStatus"`
	// ScheduledFor is the slot of a scheduled run; null for "run now".
	ScheduledFor *time.Time `json:"scheduledFor"`
	// Retention: when and why the backup expired, when its object was
	// deleted, and the last deletion error while it is not.
	ExpiredAt    *time.Time      `json:"expiredAt,omitempty"`
	ExpireReason *string         `json:"expireReason,omitempty"`
	PurgedAt     *time.Time      `json:"purgedAt,omitempty"`
	ExpireError  *string         `json:"expireError,omitempty"`
	Manifest     json.RawMessage `json:"manifest,omitempty"`
	// Chains: backupType is full, incremental or differential; a chunked
	// backup (an incremental or differential job's) has its parent (the
	// backup whose chunks it reused) and base (its chain's full), the
	// earlier backups it needs (dependsOn), the dump bytes it stored that
	// were not there before (newBytes) and dedupRatio, rawSize over
	// newBytes (null when it stored nothing new).
	BackupType string      `json:"backupType"`
	Chunked    bool        `json:"chunked"`
	ParentID   *uuid.UUID  `json:"parentId"`
	BaseID     *uuid.UUID  `json:"baseId"`
	DependsOn  []uuid.UUID `json:"dependsOn"`
	NewBytes   *int64      `json:"newBytes"`
	DedupRatio *float64    `json:"dedupRatio"`
	// AffectedBackups (detail only) are the backups a failed verification
	// showed unreadable: those whose packs are missing or damaged, and
	// every backup that depends on them.
	AffectedBackups []uuid.UUID `json:"affectedBackups,omitempty"`
}

type progressJSON struct {
	Step    string `json:"step"`
	Bytes   int64  `json:"bytes"`
	Percent int    `json:"percent"`
}

// toProgressJSON is a run's last progress report, nil before the first.
func toProgressJSON(step *string, bytes *int64, percent *int32) *progressJSON {
	if step == nil {
		return nil
	}
	p := &progressJSON{Step: *step}
	if bytes != nil {
		p.Bytes = *bytes
	}
	if percent != nil {
		p.Percent = int(*percent)
	}
	return p
}

// seconds turns a duration in milliseconds into seconds.
func seconds(ms *int64) *float64 {
	if ms == nil {
		return nil
	}
	s := float64(*ms) / 1000
	return &s
}

func toHistoryJSON(h db.BackupHistory, withManifest bool) historyJSON {
	out := historyJSON{ID: h.ID, BackupJobID: h.BackupJobID, DatabaseID: h.DatabaseID, AgentID: h.AgentID,
		Status: h.Status, QueuedAt: h.QueuedAt, StartedAt: h.StartedAt, CompletedAt: h.CompletedAt,
		FileName: h.FileName, FileSize: h.FileSize, RawSize: h.RawSize, StorageType: h.StorageType,
		StorageKey: h.StorageKey, ChecksumValue: h.ChecksumValue, ChecksumAlgorithm: h.ChecksumAlgorithm,
		Compression: h.Compression, IsEncrypted: h.IsEncrypted, ErrorMessage: h.ErrorMessage,
		VerificationStatus: h.VerificationStatus, LastRestoreStatus: h.LastRestoreStatus, ScheduledFor: h.ScheduledFor,
		ExpiredAt: h.ExpiredAt, ExpireReason: h.ExpireReason, PurgedAt: h.PurgedAt, ExpireError: h.ExpireError}
	out.BackupType, out.Chunked, out.ParentID, out.BaseID, out.NewBytes = h.BackupType, h.Chunked, h.ParentID, h.BaseID, h.NewBytes
	out.DependsOn = h.DependsOn
	if out.DependsOn == nil {
		out.DependsOn = []uuid.UUID{}
	}
	if h.Chunked && h.NewBytes != nil && h.RawSize != nil && *h.NewBytes > 0 {
		r := math.Round(float64(*h.RawSize)/float64(*h.NewBytes)*100) / 100
		out.DedupRatio = &r
	}
	out.Duration = seconds(h.DurationMs)
	out.Progress = toProgressJSON(h.ProgressStep, h.ProgressBytes, h.ProgressPercent)
	if len(h.VerificationResult) > 0 {
		out.VerificationResult = h.VerificationResult
	}
	if withManifest && len(h.Manifest) > 0 {
		out.Manifest = h.Manifest
	}
	return out
}

var backupStatuses = []string{"queued", "running", "success", "failed", "cancelled", "skipped", "expired"}

// pageParams reads page (default 1, at most 1000000) and limit (default
// 10, at most 100).
func pageParams(r *http.Request, f fieldErrors) (page, limit int) {
	page, limit = 1, 10
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1_000_000 {
			f.add("page", "must be a whole number 1-1000000")
		} else {
			page = n
		}
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			f.add("limit", "must be 1-100")
		} else {
			limit = n
		}
	}
	return page, limit
}

// timeParam reads an RFC 3339 time or a YYYY-MM-DD date (midnight UTC).
func timeParam(r *http.Request, name string, f fieldErrors) *time.Time {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return &t
		}
	}
	f.add(name, "must be an RFC 3339 time or a YYYY-MM-DD date")
	return nil
}

func uuidParam(r *http.Request, name string, f fieldErrors) *uuid.UUID {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil
	}
	id, err := uuid.Parse(v)
	if err != nil {
		f.add(name, "must be an id")
		return nil
	}
	return &id
}

func pageResponse(results any, page, limit int, total int64) map[string]any {
	return map[string]any{"results": results, "page": page, "limit": limit,
		"totalPages": int(math.Ceil(float64(total) / float64(limit))), "totalResults": total}
}

// listHistory answers {results, page, limit, totalPages, totalResults},
// newest first. Filters: status, databaseId, backupJobId, from, to (on the
// time the run was queued; to is exclusive).
func (a *API) listHistory(w http.ResponseWriter, r *http.Request) error {
	f := fieldErrors{}
	page, limit := pageParams(r, f)
	p := db.ListBackupHistoryParams{UserID: userID(r.Context()), Lim: int32(limit), Off: int32((page - 1) * limit)}
	if s := r.URL.Query().Get("status"); s != "" {
		if !slices.Contains(backupStatuses, s) {
			f.add("status", "must be one of queued, running, success, failed, cancelled, skipped")
		}
		p.Status = &s
	}
	p.DatabaseID = uuidParam(r, "databaseId", f)
	p.JobID = uuidParam(r, "backupJobId", f)
	p.FromTime = timeParam(r, "from", f)
	p.ToTime = timeParam(r, "to", f)
	if err := f.err(); err != nil {
		return err
	}
	rows, err := a.q.ListBackupHistory(r.Context(), a.pool, p)
	if err != nil {
		return err
	}
	var total int64
	out := make([]historyJSON, 0, len(rows))
	for _, row := range rows {
		total = row.Total
		out = append(out, toHistoryJSON(row.BackupHistory, false))
	}
	if len(rows) == 0 && page > 1 {
		// The count comes with the rows; past the end, count separately.
		p.Lim, p.Off = 1, 0
		if first, err := a.q.ListBackupHistory(r.Context(), a.pool, p); err == nil && len(first) > 0 {
			total = first[0].Total
		}
	}
	writeJSON(w, http.StatusOK, pageResponse(out, page, limit, total))
	return nil
}

func (a *API) loadHistory(r *http.Request) (db.BackupHistory, error) {
	id, err := pathID(r, "backup")
	if err != nil {
		return db.BackupHistory{}, err
	}
	h, err := a.q.GetBackupHistory(r.Context(), a.pool, db.GetBackupHistoryParams{ID: id, UserID: userID(r.Context())})
	return h, owned(err, "backup", "")
}

// getHistory answers one run with its manifest; 404 when not the user's.
func (a *API) getHistory(w http.ResponseWriter, r *http.Request) error {
	h, err := a.loadHistory(r)
	if err != nil {
		return err
	}
	out := toHistoryJSON(h, true)
	if out.AffectedBackups, err = a.affectedBackups(r.Context(), h); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// affectedBackups is, when backup h's last verification found packs of
// its chain missing or damaged, the backups that wrote them and every
// backup that depends on one of those: all that cannot be read now. Only
// backups of h's own chain count, whatever the agent reported.
func (a *API) affectedBackups(ctx context.Context, h db.BackupHistory) ([]uuid.UUID, error) {
	var res struct {
		DamagedBackups []string `json:"damagedBackups"`
	}
	if !h.Chunked || len(h.VerificationResult) == 0 || json.Unmarshal(h.VerificationResult, &res) != nil {
		return nil, nil
	}
	chain := append([]uuid.UUID{h.ID}, h.DependsOn...)
	var out []uuid.UUID
	for _, s := range res.DamagedBackups {
		d, err := uuid.Parse(s)
		if err != nil || !slices.Contains(chain, d) {
			continue
		}
		deps, err := a.q.BackupDependents(ctx, a.pool, d)
		if err != nil {
			return nil, err
		}
		for _, id := range append([]uuid.UUID{d}, deps...) {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out, nil
}

// deleteHistory deletes the stored backup (through the agent that holds
// it), then the run: 204. 409 while it is queued or running; 503 when the
// agent holding it is offline, 504 when it does not answer, 502 when the
// storage refuses (nothing is deleted).
func (a *API) deleteHistory(w http.ResponseWriter, r *http.Request) error {
	h, err := a.loadHistory(r)
	if err != nil {
		return err
	}
	if err := a.runs.DeleteBackup(r.Context(), h); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// downloadHistory streams the stored backup from the agent that holds it,
// with bounded memory whatever its size. 409 unless the run succeeded; 503
// when that agent is offline; 404 when the file is gone.
func (a *API) downloadHistory(w http.ResponseWriter, r *http.Request) error {
	h, err := a.loadHistory(r)
	if err != nil {
		return err
	}
	if h.Status != "success" || h.StorageKey == nil {
		return errorf(http.StatusConflict, "only a successful backup can be downloaded (this one is %s)", h.Status)
	}
	if h.Chunked {
		return a.downloadChunked(w, r, h)
	}
	var rd interface {
		io.ReadCloser
		Size() int64
	}
	if h.StorageType != "local" {
		rd, err = a.openCloudObject(r.Context(), h)
	} else {
		rd, err = transfer.Open(r.Context(), a.opts.NC, h.AgentID.String(), *h.StorageKey, 0)
	}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return errorf(http.StatusNotFound, "the backup file is no longer in storage")
	case errors.Is(err, transfer.ErrNoAgent):
		return errorf(http.StatusServiceUnavailable, "the agent holding this backup is offline; start it and try again")
	case errors.Is(err, transfer.ErrNotFound):
		return errorf(http.StatusNotFound, "the backup file is no longer in storage")
	case errors.Is(err, transfer.ErrBusy):
		w.Header().Set("Retry-After", "10")
		return errorf(http.StatusServiceUnavailable, "the agent is already sending its maximum number of downloads; try again shortly")
	case errors.Is(err, transfer.ErrTimeout):
		return errorf(http.StatusGatewayTimeout, "the agent holding this backup did not answer")
	case err != nil:
		if rf, ok := egress.IsRefused(err); ok {
			return errorf(http.StatusConflict, "the control plane may not connect to this backup's storage: %s", rf.Error())
		}
		if h.StorageType != "local" && !isRunError(err) {
			a.log.Warn("download from cloud storage failed", "backupId", h.ID, "detail", storage.Detail(err))
			return errorf(http.StatusBadGateway, "the storage did not hand the backup over: %s", probeMessage(err))
		}
		return err
	}
	defer rd.Close()
	name := "backup"
	if h.FileName != nil {
		name = *h.FileName
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mimeAttachment(name))
	w.Header().Set("Content-Length", strconv.FormatInt(rd.Size(), 10))
	if h.ChecksumValue != nil {
		w.Header().Set("X-Checksum-Sha256", *h.ChecksumValue)
	}
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rd); err != nil {
		// Headers are gone: the client sees a short body against
		// Content-Length, which every HTTP client reports as an error.
		a.log.Warn("download interrupted", "backupId", h.ID, "err", err)
	}
	return nil
}

func mimeAttachment(name string) string {
	return fmt.Sprintf("attachment; filename=%q", name)
}

// sizedReader is a stored object opened for reading with its size known.
type sizedReader struct {
	io.ReadCloser
	size int64
}

func (s sizedReader) Size() int64 { return s.size }

// openCloudObject opens a backup kept in s3 or google_drive directly from
// the control plane.
func (a *API) openCloudObject(ctx context.Context, h db.BackupHistory) (sizedReader, error) {
	st, err := a.runs.OpenStorage(ctx, h)
	if err != nil {
		return sizedReader{}, err
	}
	obj, err := st.Stat(ctx, *h.StorageKey)
	if err != nil {
		return sizedReader{}, err
	}
	rc, err := st.Get(ctx, *h.StorageKey, 0)
	if err != nil {
		return sizedReader{}, err
	}
	return sizedReader{rc, obj.Size}, nil
}

// isRunError reports whether err is a runs.Error (with its own status).
func isRunError(err error) bool {
	var re *runs.Error
	return errors.As(err, &re)
}

// downloadChunked streams a chunked backup as one file, as a job of type
// full stores it: the dump rebuilt from its chain (every chunk checked),
// compressed with the job's compression and, for an encrypted job,
// encrypted to the job's recipients, so `age -d -i key | zstd -d` reads it.
// Its size is not known ahead: the body is chunked, and a failure midway
// aborts the response, so the client never takes a short file for a whole
// one. X-Dump-Sha256 is the SHA-256 of the dump once decrypted and
// decompressed.
func (a *API) downloadChunked(w http.ResponseWriter, r *http.Request, h db.BackupHistory) error {
	ctx := r.Context()
	var st chunkstore.Getter
	if h.StorageType != "local" {
		cloud, err := a.runs.OpenStorage(ctx, h)
		if err != nil {
			return err
		}
		st = cloud
	} else {
		// Two transfers at once leave the agent room for another download.
		st = transfer.NewGetter(a.opts.NC, h.AgentID.String(), 2)
	}
	var ids []age.Identity
	var recipients []age.Recipient
	if h.IsEncrypted {
		id, rs, err := a.runs.JobKeys(ctx, h)
		if err != nil {
			return err
		}
		ids, recipients = []age.Identity{id}, rs
	}
	checksum := ""
	if h.ChecksumValue != nil {
		checksum = *h.ChecksumValue
	}
	ix, err := chunkstore.ReadIndex(ctx, st, *h.StorageKey, checksum, ids...)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return errorf(http.StatusNotFound, "the backup file is no longer in storage")
	case errors.Is(err, transfer.ErrNoAgent):
		return errorf(http.StatusServiceUnavailable, "the agent holding this backup is offline; start it and try again")
	case errors.Is(err, transfer.ErrBusy):
		w.Header().Set("Retry-After", "10")
		return errorf(http.StatusServiceUnavailable, "the agent is already sending its maximum number of downloads; try again shortly")
	case errors.Is(err, transfer.ErrTimeout):
		return errorf(http.StatusGatewayTimeout, "the agent holding this backup did not answer")
	case errors.Is(err, chunkstore.ErrChecksum), errors.Is(err, chunkstore.ErrDamaged), errors.Is(err, chunkstore.ErrWrongKey):
		return errorf(http.StatusConflict, "the backup cannot be read: %v", err)
	case err != nil:
		if h.StorageType != "local" {
			a.log.Warn("download from cloud storage failed", "backupId", h.ID, "detail", storage.Detail(err))
			return errorf(http.StatusBadGateway, "the storage did not hand the backup over: %s", probeMessage(err))
		}
		return err
	}
	name := strings.TrimSuffix(path.Base(*h.StorageKey), chunkstore.IndexSuffix) + pipeline.Extension(h.Compression)
	if h.IsEncrypted {
		name += ".age"
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mimeAttachment(name))
	w.Header().Set("X-Dump-Sha256", ix.SHA256)
	w.Header().Set("X-Dump-Size", strconv.FormatInt(ix.RawSize, 10))
	w.WriteHeader(http.StatusOK)
	if err := writeChunked(ctx, w, ix, st, chunkstore.Dir(*h.StorageKey), h.Compression, recipients); err != nil {
		a.log.Warn("download interrupted", "backupId", h.ID, "err", err)
		panic(http.ErrAbortHandler) // the client must see a broken body, not an end
	}
	return nil
}

// writeChunked writes the dump of ix to w, compressed and, when
// recipients are given, encrypted to them.
func writeChunked(ctx context.Context, w io.Writer, ix *chunkstore.Index, st chunkstore.Getter, dir, compression string, recipients []age.Recipient) error {
	out := w
	var enc io.WriteCloser
	if len(recipients) > 0 {
		var err error
		if enc, err = age.Encrypt(w, recipients...); err != nil {
			return err
		}
		out = enc
	}
	comp, err := pipeline.NewCompressor(out, compression)
	if err != nil {
		return err
	}
	if _, err := ix.Read(ctx, st, dir, comp); err != nil {
		return err
	}
	if err := comp.Close(); err != nil {
		return err
	}
	if enc != nil {
		return enc.Close()
	}
	return nil
}
