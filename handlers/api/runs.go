package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/storage"
	"github.com/rahatback/rahatback/transfer"
)

// emit records an event the control plane emits about a run of an agent
// (events.ControlSubject) in tx: it applies it at once through the
// projector, so the API's answer and the history agree, and writes it to
// the outbox, followed by the commands that go with it, so that it reaches
// the stream once tx commits (the projector then applies it again, which
// changes nothing). id is the event's own id; its message id is
// events.ControlMsgID(id). The caller kicks the relay after the commit.
func (a *API) emit(ctx context.Context, tx pgx.Tx, agentID uuid.UUID, kind, phase, id string, payload any, commands ...outbox.Message) error {
	ev, err := outbox.JSON(events.ControlSubject(agentID.String(), kind, phase), events.ControlMsgID(id), payload)
	if err != nil {
		return err
	}
	if err := projector.Apply(ctx, tx, ev.Subject, time.Now(), ev.Data); err != nil {
		return err
	}
	return outbox.Add(ctx, tx, append([]outbox.Message{ev}, commands...)...)
}

// command is a command to agentID's work queue, Nats-Msg-Id msgID (a
// retried send is stored once), for emit.
func command(agentID uuid.UUID, kind, msgID string, payload any) (outbox.Message, error) {
	return outbox.JSON(events.CommandSubject(agentID.String(), kind), msgID, payload)
}

// errQueueFull answers a command for an agent with too many waiting.
var errQueueFull = errorf(http.StatusTooManyRequests, "the agent already has too many commands waiting; try again when it has caught up")

// queueFull reports whether agentID has Opts.AgentQueueLimit commands
// waiting or running already: in its JetStream queue, or still in the
// outbox. When JetStream cannot tell (the broker is down), the outbox's
// count alone decides.
func (a *API) queueFull(ctx context.Context, agentID uuid.UUID) (bool, error) {
	waiting, err := a.q.OutboxWaiting(ctx, a.pool, events.CommandSubject(agentID.String(), ""))
	if err != nil {
		return false, err
	}
	// A broker that does not answer soon is taken as down.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var queued uint64
	if cons, err := a.opts.JS.Consumer(ctx, events.StreamCommands, events.AgentConsumer(agentID.String())); err != nil {
		a.log.Warn("agent queue not read; counting the outbox only", "agentId", agentID, "err", err)
	} else if info, err := cons.Info(ctx); err != nil {
		a.log.Warn("agent queue not read; counting the outbox only", "agentId", agentID, "err", err)
	} else {
		queued = info.NumPending + uint64(info.NumAckPending)
	}
	return queued+uint64(waiting) >= uint64(a.opts.AgentQueueLimit), nil
}

// deadline is when a command sent now goes stale.
func (a *API) deadline() events.Deadline {
	return events.Deadline{Deadline: time.Now().Add(a.opts.CommandTTL).UTC()}
}

// connSpec is how agent reaches database d, its password sealed to the agent.
func (a *API) connSpec(ctx context.Context, d db.Database, agentID uuid.UUID) (events.ConnSpec, error) {
	password, err := a.databasePassword(d)
	if err != nil {
		return events.ConnSpec{}, err
	}
	pub, err := a.q.GetAgentPublicKey(ctx, a.pool, agentID)
	if err != nil {
		return events.ConnSpec{}, err
	}
	return sealConn(d, password, pub)
}

// databasePassword opens d's password from the vault; nil when it has none.
func (a *API) databasePassword(d db.Database) ([]byte, error) {
	if d.PasswordEnc == nil {
		return nil, nil
	}
	return a.opts.Vault.Open(d.PasswordEnc, passwordBinding(d.ID))
}

// sealConn is d's connection with password sealed to agent key pub.
func sealConn(d db.Database, password []byte, pub string) (events.ConnSpec, error) {
	sealedPW, err := sealed.Seal(pub, password)
	if err != nil {
		return events.ConnSpec{}, err
	}
	return events.ConnSpec{Type: d.Type, Host: d.Host, Port: int(d.Port), Username: d.Username,
		SealedPassword: sealedPW, Database: d.DatabaseName}, nil
}

// runAgent picks the agent that backs up d (runs.Pick among the user's
// agents). ok is false when there is none.
func (a *API) runAgent(ctx context.Context, user uuid.UUID, d db.Database) (agent runs.Agent, ok bool, err error) {
	rows, err := a.q.ListAgents(ctx, a.pool, db.ListAgentsParams{UserID: user, OfflineAfterSecs: a.offlineSecs()})
	if err != nil {
		return agent, false, err
	}
	agents := make([]runs.Agent, len(rows))
	for i, r := range rows {
		agents[i] = runs.Agent{ID: r.ID, Name: r.Name, Online: r.Online}
	}
	agent, ok = runs.Pick(agents, d.AgentID)
	return agent, ok, nil
}

var errRunning = errorf(http.StatusConflict, "this job already has a backup queued or running")

// runJob starts a backup now: 202 {historyId, status}. 409 when the job
// already has one queued or running; when its agent is offline the run is
// recorded as skipped (202, status "skipped"). 404 for another user's job.
func (a *API) runJob(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	user := userID(ctx)
	j, err := a.loadJob(r)
	if err != nil {
		return err
	}
	d, err := a.q.GetDatabase(ctx, a.pool, db.GetDatabaseParams{ID: j.DatabaseID, UserID: user})
	if err != nil {
		return db.MapErr(err)
	}
	agent, haveAgent, err := a.runAgent(ctx, user, d)
	if err != nil {
		return err
	}
	runID := uuid.New()
	phase, reason := runs.Decide(agent, haveAgent, nil)
	ev := runs.Event(j, runID, phase, reason, time.Now(), nil)
	var cmds []outbox.Message
	if phase == events.PhaseQueued {
		if full, err := a.queueFull(ctx, agent.ID); err != nil {
			return err
		} else if full {
			return errQueueFull
		}
		cmd, err := a.backupCommand(ctx, j, d, agent.ID, runID)
		if err != nil {
			return err
		}
		m, err := command(agent.ID, events.CommandBackup, runID.String(), cmd)
		if err != nil {
			return err
		}
		cmds = append(cmds, m)
	}
	agentID := agent.ID // the nil UUID when no agent can take it
	err = db.WithTx(ctx, a.pool, func(tx pgx.Tx) error {
		// The job's row lock orders concurrent "run now" clicks.
		if _, err := a.q.GetBackupJobForUpdate(ctx, tx, db.GetBackupJobForUpdateParams{ID: j.ID, UserID: user}); err != nil {
			return db.MapErr(err)
		}
		active, err := a.q.HasActiveBackup(ctx, tx, j.ID)
		if err != nil {
			return err
		}
		if active {
			return errRunning
		}
		return a.emit(ctx, tx, agentID, events.KindBackup, phase, ev.ID, ev, cmds...)
	})
	if errors.Is(db.MapErr(err), db.ErrConflict) {
		return errRunning
	}
	if err != nil {
		return err
	}
	a.opts.Outbox.Kick()
	status := "queued"
	if phase == events.PhaseSkipped {
		status = "skipped"
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"historyId": runID, "status": status})
	return nil
}

// BackupCommands builds the commands that run jobs[i] on agents[i] as
// runs[i], their secrets sealed to each agent, with a few queries for the
// lot: how the scheduler builds the commands of a burst of slots.
// errs[i] is non-nil when command i cannot be built (an *Error with
// status 409 when the job is encrypted but has no key).
func (a *API) BackupCommands(ctx context.Context, jobs []db.BackupJob, agents, runs []uuid.UUID) (cmds []events.BackupCommand, errs []error) {
	cmds, errs = make([]events.BackupCommand, len(jobs)), make([]error, len(jobs))
	fail := func(err error) ([]events.BackupCommand, []error) {
		for i := range errs {
			errs[i] = err
		}
		return cmds, errs
	}
	dbIDs := make([]uuid.UUID, len(jobs))
	for i, j := range jobs {
		dbIDs[i] = j.DatabaseID
	}
	dbRows, err := a.q.GetDatabasesByIDs(ctx, a.pool, dbIDs)
	if err != nil {
		return fail(err)
	}
	databases := make(map[uuid.UUID]db.Database, len(dbRows))
	for _, d := range dbRows {
		databases[d.ID] = d
	}
	keyRows, err := a.q.GetAgentPublicKeys(ctx, a.pool, agents)
	if err != nil {
		return fail(err)
	}
	keys := make(map[uuid.UUID]string, len(keyRows))
	for _, k := range keyRows {
		keys[k.ID] = k.PublicKey
	}
	passwords := map[uuid.UUID][]byte{}
	type specKey struct{ cloud, agent uuid.UUID }
	specs := map[specKey]events.StorageSpec{}
	for i, j := range jobs {
		d, ok := databases[j.DatabaseID]
		if !ok || d.UserID != j.UserID {
			errs[i] = notFound("database")
			continue
		}
		pub, ok := keys[agents[i]]
		if !ok {
			errs[i] = notFound("agent")
			continue
		}
		pw, ok := passwords[d.ID]
		if !ok {
			if pw, err = a.databasePassword(d); err != nil {
				errs[i] = err
				continue
			}
			passwords[d.ID] = pw
		}
		spec := events.StorageSpec{Type: j.StorageType}
		if j.StorageType != "local" && j.CloudStorageID != nil {
			k := specKey{*j.CloudStorageID, agents[i]}
			if spec, ok = specs[k]; !ok {
				if spec, err = a.storageSpec(ctx, j.StorageType, j.CloudStorageID, j.UserID, agents[i]); err != nil {
					errs[i] = err
					continue
				}
				specs[k] = spec
			}
		} else if j.StorageType != "local" {
			if spec, err = a.storageSpec(ctx, j.StorageType, nil, j.UserID, agents[i]); err != nil {
				errs[i] = err
				continue
			}
		}
		cmds[i], errs[i] = a.assembleCommand(j, d, pw, pub, spec, runs[i])
	}
	return cmds, errs
}

// backupCommand is the command that runs job j (on database d) on agentID
// as run runID.
func (a *API) backupCommand(ctx context.Context, j db.BackupJob, d db.Database, agentID, runID uuid.UUID) (events.BackupCommand, error) {
	password, err := a.databasePassword(d)
	if err != nil {
		return events.BackupCommand{}, err
	}
	pub, err := a.q.GetAgentPublicKey(ctx, a.pool, agentID)
	if err != nil {
		return events.BackupCommand{}, err
	}
	spec, err := a.storageSpec(ctx, j.StorageType, j.CloudStorageID, j.UserID, agentID)
	if err != nil {
		return events.BackupCommand{}, err
	}
	return a.assembleCommand(j, d, password, pub, spec, runID)
}

// assembleCommand is job j's backup command for the agent with key pub.
func (a *API) assembleCommand(j db.BackupJob, d db.Database, password []byte, pub string, spec events.StorageSpec, runID uuid.UUID) (events.BackupCommand, error) {
	conn, err := sealConn(d, password, pub)
	if err != nil {
		return events.BackupCommand{}, err
	}
	cmd := events.BackupCommand{V: events.Version, Deadline: a.deadline(), RunID: runID.String(), JobID: j.ID.String(),
		DatabaseID: d.ID.String(), Conn: conn, Compression: j.Compression, Storage: spec}
	if j.IsEncrypted {
		if j.AgeRecipient == nil {
			return cmd, errorf(http.StatusConflict, "the job is encrypted but has no key; set its encryptionPassword again")
		}
		cmd.Recipients = append([]string{*j.AgeRecipient}, j.AgeRecipients...)
	}
	if j.AutoVerifyAfterBackup {
		cmd.Verify, cmd.VerifyID = j.VerificationLevel, uuid.NewString()
		if j.IsEncrypted {
			id, err := a.jobIdentity(j)
			if err != nil {
				return cmd, err
			}
			if cmd.SealedIdentity, err = sealed.Seal(pub, []byte(id.String())); err != nil {
				return cmd, err
			}
		}
	}
	return cmd, nil
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

// pageParams reads page (default 1) and limit (default 10, at most 100).
func pageParams(r *http.Request, f fieldErrors) (page, limit int) {
	page, limit = 1, 10
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			f.add("page", "must be a whole number ≥ 1")
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
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return h, notFound("backup")
	}
	return h, err
}

// getHistory answers one run with its manifest; 404 when not the user's.
func (a *API) getHistory(w http.ResponseWriter, r *http.Request) error {
	h, err := a.loadHistory(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toHistoryJSON(h, true))
	return nil
}

// deleteHistory deletes the stored backup (through the agent that holds
// it), then the run: 204. 409 while it is queued or running; 503 when the
// agent holding it is offline (nothing is deleted).
func (a *API) deleteHistory(w http.ResponseWriter, r *http.Request) error {
	h, err := a.loadHistory(r)
	if err != nil {
		return err
	}
	if h.Status == "queued" || h.Status == "running" {
		return errorf(http.StatusConflict, "the backup is still %s; wait for it to end", h.Status)
	}
	if err := a.DeleteBackupObject(r.Context(), h); err != nil {
		return err
	}
	ev := events.BackupEvent{V: events.Version, ID: h.ID.String() + ":deleted", RunID: h.ID.String(), At: time.Now().UTC()}
	err = db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		return a.emit(r.Context(), tx, h.AgentID, events.KindBackup, events.PhaseDeleted, ev.ID, ev)
	})
	if err != nil {
		return err
	}
	a.opts.Outbox.Kick()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// DeleteBackupObject deletes the stored object and manifest of backup h,
// if it has any (a successful backup, or an expired one not purged yet):
// from its cloud storage directly, or through the agent holding a local
// one. An object already gone counts as deleted. Errors are *Error: 503
// when that agent is offline, 504 when it does not answer, 502 when the
// storage or agent refuses.
func (a *API) DeleteBackupObject(ctx context.Context, h db.BackupHistory) error {
	stored := h.Status == "success" || (h.Status == "expired" && h.PurgedAt == nil)
	if !stored || h.StorageKey == nil {
		return nil
	}
	if h.StorageType != "local" {
		st, err := a.cloudStorageFor(ctx, h)
		if err != nil {
			return err
		}
		for _, key := range []string{*h.StorageKey, *h.StorageKey + pipeline.ManifestSuffix} {
			if err := st.Delete(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return errorf(http.StatusBadGateway, "the storage refused to delete the backup: %v", err)
			}
		}
		return nil
	}
	var reply events.DeleteReply
	err := events.Request(ctx, a.opts.NC, events.RPCSubject(h.AgentID.String(), events.RPCDelete),
		events.DeleteRequest{V: events.Version, Storage: events.StorageSpec{Type: h.StorageType}, Key: *h.StorageKey},
		&reply, a.opts.RPCTimeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return errorf(http.StatusServiceUnavailable, "the agent holding this backup is offline; start it and try again (nothing was deleted)")
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusGatewayTimeout, "the agent holding this backup did not answer (nothing was deleted)")
	case err != nil:
		return err
	case !reply.OK && !reply.NotFound:
		return errorf(http.StatusBadGateway, "the agent could not delete the backup: %s", reply.Error)
	}
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
	st, err := a.cloudStorageFor(ctx, h)
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
