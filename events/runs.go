package events

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Phases published by the control plane on ControlSubject: a run is queued
// when its command is sent, skipped when it cannot run, lost when its agent
// stops reporting, deleted by its user, and expired by its job's
// retention; an expired backup's stored object is then purged, or its
// deletion failed and is tried again later.
const (
	PhaseQueued      = "queued"
	PhaseSkipped     = "skipped"
	PhaseLost        = "lost"
	PhaseDeleted     = "deleted"
	PhaseExpired     = "expired"
	PhasePurged      = "purged"
	PhasePurgeFailed = "purge_failed"
	// PhaseChained records the chain the control plane chose for a queued
	// chunked run (BackupEvent.Chain), published with its command.
	PhaseChained = "chained"
)

// StorageSpec says where a backup object lives. For "local" it is a
// directory on the agent's host, chosen by the agent; for s3 and
// google_drive it carries the settings, every secret sealed to the
// receiving agent (package sealed).
type StorageSpec struct {
	Type  string     `json:"type"` // local | s3 | google_drive
	S3    *S3Spec    `json:"s3,omitempty"`
	Drive *DriveSpec `json:"drive,omitempty"`
}

// S3Spec is an S3 or S3-compatible bucket.
type S3Spec struct {
	Endpoint        string `json:"endpoint,omitempty"`
	Region          string `json:"region"`
	Bucket          string `json:"bucket"`
	AccessKeyID     string `json:"accessKeyId"`
	SealedSecretKey string `json:"sealedSecretKey"`
	ForcePathStyle  bool   `json:"forcePathStyle,omitempty"`
	Prefix          string `json:"prefix,omitempty"`
}

// DriveSpec is a Google Drive folder reached with a refresh token.
type DriveSpec struct {
	ClientID           string `json:"clientId"`
	SealedClientSecret string `json:"sealedClientSecret"`
	SealedRefreshToken string `json:"sealedRefreshToken"`
	FolderID           string `json:"folderId,omitempty"`
	Endpoint           string `json:"endpoint,omitempty"`
	TokenURL           string `json:"tokenUrl,omitempty"`
}

// Deadline is when a command goes stale: an agent that receives it later
// (it was offline or busy that long) reports it failed instead of running
// it. The zero time never expires.
type Deadline struct {
	Deadline time.Time `json:"deadline,omitempty"`
}

// Expired reports whether the command is past its deadline at now.
func (d Deadline) Expired(now time.Time) bool {
	return !d.Deadline.IsZero() && now.After(d.Deadline)
}

// BackupCommand is the payload of rahat.cmd.<agent>.backup.
type BackupCommand struct {
	V int `json:"v"`
	Deadline
	RunID       string      `json:"runId"`
	JobID       string      `json:"jobId"`
	DatabaseID  string      `json:"databaseId"`
	Conn        ConnSpec    `json:"conn"`
	Compression string      `json:"compression"`
	Storage     StorageSpec `json:"storage"`
	// Recipients, when any, are the age public keys the backup is
	// encrypted to (after compression, before the checksum).
	Recipients []string `json:"recipients,omitempty"`
	// SealedIdentity is the job's age identity sealed to the agent, sent
	// with Verify on an encrypted job so the check can decrypt.
	SealedIdentity string `json:"sealedIdentity,omitempty"`
	// Verify, when set (BASIC, DATABASE or FULL), asks for a verification
	// right after success.
	Verify   string `json:"verify,omitempty"`
	VerifyID string `json:"verifyId,omitempty"`
	// VerifyTarget is where a FULL verification restores its scratch
	// database: the job's verification target, or nil for Conn's server.
	VerifyTarget *ConnSpec `json:"verifyTarget,omitempty"`
	// Chain, when set, stores the backup in the job's chunk store (package
	// chunkstore) instead of as one object; SealedIdentity is then sent
	// for an encrypted job, whose chunk keys derive from it.
	Chain *Chain `json:"chain,omitempty"`
}

// Chain is a chunked backup's place in its job's chain, as the control
// plane decided it.
type Chain struct {
	// Type is "full", "incremental" or "differential".
	Type string `json:"type"`
	// Parent is the backup whose chunks an incremental or differential
	// reuses (nil for a full): its index in the job's storage. An agent
	// that cannot read it stores a full instead and says so.
	Parent *ChainParent `json:"parent,omitempty"`
	// Keep are the job's backups whose packs must stay (kept, being made,
	// or expired and not yet purged). After the backup, the agent deletes
	// the packs of any other backup of the job older than a day: what a
	// lost journal or a failed cleanup left behind.
	Keep []string `json:"keep,omitempty"`
}

// ChainParent locates a parent backup's chunk index.
type ChainParent struct {
	BackupID string `json:"backupId"`
	Key      string `json:"key"`
	Checksum string `json:"checksum"`
}

// ChainInfo is the chain recorded on a queued chunked run: its type and
// parent. The projector derives its base and the backups it depends on
// from the parent's row.
type ChainInfo struct {
	Type     string `json:"type"`
	ParentID string `json:"parentId,omitempty"`
}

// ObjectRef identifies a stored backup and what it must match.
type ObjectRef struct {
	Storage     StorageSpec `json:"storage"`
	Key         string      `json:"key"`
	Size        int64       `json:"size"`
	Checksum    string      `json:"checksum"` // sha256 hex of the stored bytes
	Compression string      `json:"compression"`
	// RawSize is the dump's size (progress of a chunked backup, which
	// is read as its dump).
	RawSize int64 `json:"rawSize,omitempty"`
	// SealedIdentity, for an encrypted backup, is the job's age identity
	// sealed to the receiving agent (package sealed).
	SealedIdentity string `json:"sealedIdentity,omitempty"`
}

// RestoreCommand is the payload of rahat.cmd.<agent>.restore.
type RestoreCommand struct {
	V int `json:"v"`
	Deadline
	RestoreID string    `json:"restoreId"`
	BackupID  string    `json:"backupId"`
	Object    ObjectRef `json:"object"`
	Target    ConnSpec  `json:"target"`
}

// VerifyCommand is the payload of rahat.cmd.<agent>.verify.
type VerifyCommand struct {
	V int `json:"v"`
	Deadline
	VerifyID string    `json:"verifyId"`
	BackupID string    `json:"backupId"`
	Level    string    `json:"level"` // BASIC, DATABASE or FULL
	Object   ObjectRef `json:"object"`
	// Engine is the backup's engine type (DATABASE and FULL parse the
	// dump with it); empty: the manifest's.
	Engine string `json:"engine,omitempty"`
	// Target, for FULL, is the server the scratch database is made on:
	// the backup's own database or the job's verification target.
	Target *ConnSpec `json:"target,omitempty"`
}

// DeleteRequest asks an agent (request/reply on rahat.rpc.<agent>.delete)
// to delete a stored object and its manifest.
type DeleteRequest struct {
	V       int         `json:"v"`
	Storage StorageSpec `json:"storage"`
	Key     string      `json:"key"`
	// Packs, for a chunked backup, also deletes the packs that backup
	// (its id) wrote beside the index at Key.
	Packs string `json:"packs,omitempty"`
}

// DeleteReply answers a DeleteRequest; NotFound is true when nothing was there.
type DeleteReply struct {
	V        int    `json:"v"`
	OK       bool   `json:"ok"`
	NotFound bool   `json:"notFound,omitempty"`
	Error    string `json:"error,omitempty"`
}

// BackupEvent is the payload of rahat.evt.<agent>.backup.<phase>. Fields are
// set per phase as noted.
type BackupEvent struct {
	V     int       `json:"v"`
	ID    string    `json:"id"` // unique; also the Nats-Msg-Id
	RunID string    `json:"runId"`
	At    time.Time `json:"at"`

	// queued, skipped
	UserID      string `json:"userId,omitempty"`
	JobID       string `json:"jobId,omitempty"`
	DatabaseID  string `json:"databaseId,omitempty"`
	StorageType string `json:"storageType,omitempty"`
	// CloudStorageID is the cloud storage an s3/google_drive backup goes to.
	CloudStorageID string `json:"cloudStorageId,omitempty"`
	Compression    string `json:"compression,omitempty"`
	IsEncrypted    bool   `json:"isEncrypted,omitempty"`
	// ScheduledFor is the slot of a scheduled run; nil for "run now".
	ScheduledFor *time.Time `json:"scheduledFor,omitempty"`
	// chained: the run's chain.
	Chain *ChainInfo `json:"chain,omitempty"`

	// progress
	Seq     int64  `json:"seq,omitempty"`
	Step    string `json:"step,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Percent int    `json:"percent,omitempty"`

	// completed
	FileName          string          `json:"fileName,omitempty"`
	StorageKey        string          `json:"storageKey,omitempty"`
	FileSize          int64           `json:"fileSize,omitempty"`
	RawSize           int64           `json:"rawSize,omitempty"`
	Checksum          string          `json:"checksum,omitempty"`
	ChecksumAlgorithm string          `json:"checksumAlgorithm,omitempty"`
	DurationMs        int64           `json:"durationMs,omitempty"`
	Manifest          json.RawMessage `json:"manifest,omitempty"`

	// failed, skipped
	Error string `json:"error,omitempty"`
	// Lost is set on the control plane's lost phase (the agent went
	// silent; a later completion from the agent overrides it). It is
	// ignored on an agent's own failed event.
	Lost bool `json:"lost,omitempty"`

	// expired: the retention rule that let the backup go.
	Reason string `json:"reason,omitempty"`

	// purge_failed: which attempt failed (from 1; Error says why) and when
	// the next one is due.
	Attempt int        `json:"attempt,omitempty"`
	RetryAt *time.Time `json:"retryAt,omitempty"`
}

// RestoreEvent is the payload of rahat.evt.<agent>.restore.<phase>.
type RestoreEvent struct {
	V         int       `json:"v"`
	ID        string    `json:"id"`
	RestoreID string    `json:"restoreId"`
	At        time.Time `json:"at"`

	// queued
	UserID           string `json:"userId,omitempty"`
	BackupID         string `json:"backupId,omitempty"`
	TargetDatabaseID string `json:"targetDatabaseId,omitempty"`

	// progress
	Seq     int64  `json:"seq,omitempty"`
	Step    string `json:"step,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Percent int    `json:"percent,omitempty"`

	// completed
	DurationMs int64 `json:"durationMs,omitempty"`

	// failed
	Error string `json:"error,omitempty"`
}

// Check is one verification check and its outcome.
type Check struct {
	Check   string `json:"check"`
	Passed  bool   `json:"passed"`
	Message string `json:"message"`
}

// VerificationResult is what a verification found.
type VerificationResult struct {
	OverallStatus      string  `json:"overallStatus"` // PASSED | FAILED
	VerificationMethod string  `json:"verificationMethod"`
	Checks             []Check `json:"checks"`
	// DamagedBackups, for a chunked backup, are the backups whose packs
	// were found missing or damaged (every backup that depends on one is
	// damaged too).
	DamagedBackups []string `json:"damagedBackups,omitempty"`
}

// VerifyEvent is the payload of rahat.evt.<agent>.verify.<phase>.
type VerifyEvent struct {
	V        int       `json:"v"`
	ID       string    `json:"id"`
	VerifyID string    `json:"verifyId"`
	BackupID string    `json:"backupId"`
	At       time.Time `json:"at"`
	Level    string    `json:"level,omitempty"`
	// progress
	Seq     int64  `json:"seq,omitempty"`
	Step    string `json:"step,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Percent int    `json:"percent,omitempty"`
	// completed
	Result *VerificationResult `json:"result,omitempty"`
	// failed: the verification could not run at all
	Error string `json:"error,omitempty"`
}

// ControlMsgID is the Nats-Msg-Id of a control-plane event whose payload
// id is id: id with a random suffix. The stream deduplicates by message
// id across all its subjects, agents' included, so a predictable id
// (a run's "<run>:queued", say) could be taken first by an agent's own
// event and the control plane's then dropped as a duplicate. One event
// retried keeps its message id (it is chosen once, when the event is
// written).
func ControlMsgID(id string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return id + "~" + hex.EncodeToString(b)
}
