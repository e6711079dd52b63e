package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/notify"
	"github.com/rahatback/rahatback/schedule"
)

// Allowed values of backup job fields.
var (
	scheduleTypes      = []string{"manual", "hourly", "daily", "weekly", "monthly", "custom", "advanced"}
	backupTypes        = []string{"full", "incremental", "differential"}
	compressions       = []string{"zstd", "gzip", "none"}
	verificationLevels = []string{"BASIC", "DATABASE", "FULL"}
	storageTypes       = []string{"local", "s3", "google_drive"}
)

// DefaultRetentionDays is a new job's retentionDays when none is given.
const DefaultRetentionDays = 30

type jobJSON struct {
	ID                     uuid.UUID       `json:"id"`
	DatabaseID             uuid.UUID       `json:"databaseId"`
	Name                   string          `json:"name"`
	ScheduleType           string          `json:"scheduleType"`
	CronExpression         *string         `json:"cronExpression"`
	AdvancedScheduleConfig json.RawMessage `json:"advancedScheduleConfig"`
	Timezone               string          `json:"timezone"`
	BackupType             string          `json:"backupType"`
	Compression            string          `json:"compression"`
	IsEncrypted            bool            `json:"isEncrypted"`
	EncryptionRecipient    *string         `json:"encryptionRecipient"`  // the job's own age public key
	EncryptionRecipients   []string        `json:"encryptionRecipients"` // extra age public keys
	AutoVerifyAfterBackup  bool            `json:"autoVerifyAfterBackup"`
	VerificationLevel      string          `json:"verificationLevel"`
	// VerificationDatabaseID is where FULL verification restores its
	// scratch database; null: the job's own database's server.
	VerificationDatabaseID *uuid.UUID `json:"verificationDatabaseId"`
	// VerifySchedule is the job's own cadence of FULL verification of its
	// newest successful backup (hourly, daily, weekly, monthly or a cron
	// expression, in the job's timezone); null: none. VerifyNextAt is its
	// next slot.
	VerifySchedule *string    `json:"verifySchedule"`
	VerifyNextAt   *time.Time `json:"verifyNextAt"`
	// NotificationRules are the job's own rules of which events notify;
	// null: the user's default (GET /v1/notification-rules).
	NotificationRules *notify.Rules `json:"notificationRules"`
	StorageType       string        `json:"storageType"`
	CloudStorageID    *uuid.UUID    `json:"cloudStorageId"`
	RetentionDays     int           `json:"retentionDays"`
	KeepLast          *int32        `json:"keepLast"`
	KeepDaily         *int32        `json:"keepDaily"`
	KeepWeekly        *int32        `json:"keepWeekly"`
	KeepMonthly       *int32        `json:"keepMonthly"`
	IsActive          bool          `json:"isActive"`
	NextRunAt         *time.Time    `json:"nextRunAt"` // null for manual or paused jobs
	CreatedAt         time.Time     `json:"createdAt"`
	UpdatedAt         time.Time     `json:"updatedAt"`
}

func toJobJSON(j db.BackupJob) jobJSON {
	out := jobJSON{ID: j.ID, DatabaseID: j.DatabaseID, Name: j.Name, ScheduleType: j.ScheduleType,
		CronExpression: j.CronExpression, Timezone: j.Timezone, BackupType: j.BackupType,
		Compression: j.Compression, IsEncrypted: j.IsEncrypted, AutoVerifyAfterBackup: j.AutoVerifyAfterBackup,
		VerificationLevel: j.VerificationLevel, VerificationDatabaseID: j.VerificationDatabaseID,
		VerifySchedule: j.VerifySchedule, VerifyNextAt: j.VerifyNextAt,
		StorageType: j.StorageType, CloudStorageID: j.CloudStorageID, RetentionDays: int(j.RetentionDays), KeepLast: j.KeepLast, KeepDaily: j.KeepDaily, KeepWeekly: j.KeepWeekly,
		KeepMonthly: j.KeepMonthly, IsActive: j.IsActive, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt}
	if len(j.AdvancedScheduleConfig) > 0 {
		out.AdvancedScheduleConfig = j.AdvancedScheduleConfig
	}
	if j.IsEncrypted {
		out.EncryptionRecipient = j.AgeRecipient
	}
	if sc, err := parseSchedule(j); err == nil && !sc.Manual() && j.IsActive {
		if next := sc.Next(time.Now(), 1); len(next) == 1 {
			out.NextRunAt = &next[0]
		}
	}
	if j.NotifyRules != nil {
		if rules, err := notify.ParseRules(j.NotifyRules); err == nil {
			out.NotificationRules = &rules
		}
	}
	out.EncryptionRecipients = j.AgeRecipients
	if out.EncryptionRecipients == nil {
		out.EncryptionRecipients = []string{}
	}
	return out
}

// jobInput is the body of job create and update; nil fields keep the
// current (or default) value.
type jobInput struct {
	DatabaseID             *uuid.UUID             `json:"databaseId"`
	Name                   *string                `json:"name"`
	ScheduleType           *string                `json:"scheduleType"`
	CronExpression         *string                `json:"cronExpression"`
	AdvancedScheduleConfig *json.RawMessage       `json:"advancedScheduleConfig"`
	Timezone               *string                `json:"timezone"`
	BackupType             *string                `json:"backupType"`
	Compression            compressionInput       `json:"compression"`
	IsEncrypted            *bool                  `json:"isEncrypted"`
	EncryptionPassword     *string                `json:"encryptionPassword"`
	EncryptionRecipients   *[]string              `json:"encryptionRecipients"`
	AutoVerifyAfterBackup  *bool                  `json:"autoVerifyAfterBackup"`
	VerificationLevel      *string                `json:"verificationLevel"`
	VerificationDatabaseID optionalID             `json:"verificationDatabaseId"`
	VerifySchedule         nullable[string]       `json:"verifySchedule"`
	NotificationRules      nullable[notify.Rules] `json:"notificationRules"`
	StorageType            *string                `json:"storageType"`
	CloudStorageID         optionalID             `json:"cloudStorageId"`
	RetentionDays          *int                   `json:"retentionDays"`
	KeepLast               optionalCount          `json:"keepLast"`
	KeepDaily              optionalCount          `json:"keepDaily"`
	KeepWeekly             optionalCount          `json:"keepWeekly"`
	KeepMonthly            optionalCount          `json:"keepMonthly"`
	IsActive               *bool                  `json:"isActive"`
}

// compressionInput is a job body's compression: a name (zstd, gzip, none),
// or, as the seed's form sends it, a boolean: true is the default, zstd,
// and false is none; null, like an absent field, keeps the current value.
// Anything else is kept as an invalid name for the field check to report.
type compressionInput struct {
	set  bool
	name string
}

// UnmarshalJSON implements json.Unmarshaler; it fails only on JSON the
// decoder has already refused.
func (c *compressionInput) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	c.set = true
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case string:
		c.name = v
	case bool:
		c.name = "none"
		if v {
			c.name = "zstd"
		}
	default:
		c.name = string(b)
	}
	return nil
}

// nullable is a job body's field that may be absent (set false: keep the
// current value), null (v nil) or a value.
type nullable[T any] struct {
	set bool
	v   *T
}

// UnmarshalJSON implements json.Unmarshaler.
func (o *nullable[T]) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.v = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	o.v = &v
	return nil
}

// optionalID is a job body's cloudStorageId (absent keeps the current
// storage, null asks for the default storage of the job's type) or
// verificationDatabaseId.
type optionalID = nullable[uuid.UUID]

// optionalCount is a GFS count in a job body: absent keeps the current
// value, null clears it, a number sets it.
type optionalCount struct {
	set bool
	v   *int64
}

// UnmarshalJSON implements json.Unmarshaler.
func (c *optionalCount) UnmarshalJSON(b []byte) error {
	c.set = true
	if string(b) == "null" {
		c.v = nil
		return nil
	}
	var v int64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	c.v = &v
	return nil
}

// apply sets *dst from c when c was given; a value outside 1-10000 is a
// field error.
func (c optionalCount) apply(dst **int32, field string, f fieldErrors) {
	if !c.set {
		return
	}
	if c.v == nil {
		*dst = nil
		return
	}
	if *c.v < 1 || *c.v > 10000 {
		f.add(field, "must be 1 to 10000, or null for none")
		return
	}
	v := int32(*c.v)
	*dst = &v
}

// merge applies in over cur (zero for a new job, with defaults) and
// validates the result, naming every bad field.
func (in jobInput) merge(cur db.BackupJob) (db.BackupJob, error) {
	j := cur
	if in.NotificationRules.set {
		j.NotifyRules = nil
		if rules := in.NotificationRules.v; rules != nil {
			if f := rules.Validate(true); len(f) > 0 {
				e := fieldErrors{}
				for k, v := range f {
					e.add("notificationRules."+k, v)
				}
				return j, e.err()
			}
			raw, err := json.Marshal(rules)
			if err != nil {
				return j, err
			}
			j.NotifyRules = raw
		}
	}
	if in.DatabaseID != nil {
		j.DatabaseID = *in.DatabaseID
	}
	if in.Name != nil {
		j.Name = strings.TrimSpace(*in.Name)
	}
	if in.ScheduleType != nil {
		j.ScheduleType = *in.ScheduleType
	}
	if in.CronExpression != nil {
		c := strings.TrimSpace(*in.CronExpression)
		j.CronExpression = &c
	}
	if in.AdvancedScheduleConfig != nil {
		j.AdvancedScheduleConfig = []byte(*in.AdvancedScheduleConfig)
	}
	if in.Timezone != nil {
		j.Timezone = *in.Timezone
	}
	if in.BackupType != nil {
		j.BackupType = *in.BackupType
	}
	if in.Compression.set {
		j.Compression = in.Compression.name
	}
	if in.IsEncrypted != nil {
		j.IsEncrypted = *in.IsEncrypted
	}
	if in.AutoVerifyAfterBackup != nil {
		j.AutoVerifyAfterBackup = *in.AutoVerifyAfterBackup
	}
	if in.VerificationLevel != nil {
		j.VerificationLevel = *in.VerificationLevel
	}
	if in.VerificationDatabaseID.set {
		j.VerificationDatabaseID = in.VerificationDatabaseID.v
	}
	if in.VerifySchedule.set {
		j.VerifySchedule = in.VerifySchedule.v
		if j.VerifySchedule != nil && *j.VerifySchedule == "" {
			j.VerifySchedule = nil
		}
	}
	if in.StorageType != nil {
		j.StorageType = *in.StorageType
	}
	switch {
	case in.CloudStorageID.set:
		j.CloudStorageID = in.CloudStorageID.v // null: the default of the type
	case in.StorageType != nil && *in.StorageType != cur.StorageType:
		j.CloudStorageID = nil // another type without a storage named: its default
	}
	if in.RetentionDays != nil {
		j.RetentionDays = int32(*in.RetentionDays)
	}
	if in.IsActive != nil {
		j.IsActive = *in.IsActive
	}

	f := fieldErrors{}
	in.KeepLast.apply(&j.KeepLast, "keepLast", f)
	in.KeepDaily.apply(&j.KeepDaily, "keepDaily", f)
	in.KeepWeekly.apply(&j.KeepWeekly, "keepWeekly", f)
	in.KeepMonthly.apply(&j.KeepMonthly, "keepMonthly", f)
	if j.DatabaseID == uuid.Nil {
		f.add("databaseId", "is required")
	}
	switch {
	case j.Name == "":
		f.add("name", "is required")
	case len(j.Name) > 100:
		f.add("name", "must be at most 100 characters")
	}
	if !slices.Contains(scheduleTypes, j.ScheduleType) {
		f.add("scheduleType", "must be one of "+strings.Join(scheduleTypes, ", "))
	}
	if j.ScheduleType != "custom" {
		j.CronExpression = nil
	}
	if j.ScheduleType != "advanced" {
		j.AdvancedScheduleConfig = nil
	}
	if j.Timezone == "" {
		j.Timezone = "UTC"
	}
	if _, err := parseSchedule(j); err != nil {
		var fe *schedule.FieldError
		if errors.As(err, &fe) {
			f.add(fe.Field, fe.Reason)
		} else {
			f.add("scheduleType", err.Error())
		}
	}
	if !slices.Contains(backupTypes, j.BackupType) {
		f.add("backupType", "must be one of "+strings.Join(backupTypes, ", "))
	}
	if !slices.Contains(compressions, j.Compression) {
		f.add("compression", "must be one of "+strings.Join(compressions, ", ")+", or true (zstd) or false (none)")
	}
	if in.EncryptionRecipients != nil {
		j.AgeRecipients = *in.EncryptionRecipients
	}
	if len(j.AgeRecipients) > 10 {
		f.add("encryptionRecipients", "at most 10 extra recipients")
	}
	for _, r := range j.AgeRecipients {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			f.add("encryptionRecipients", fmt.Sprintf("%q is not an age public key (age1…)", r))
		}
	}
	if in.EncryptionPassword != nil {
		switch pw := *in.EncryptionPassword; {
		case !j.IsEncrypted:
			f.add("encryptionPassword", "only used with isEncrypted true")
		case len(pw) < 8:
			f.add("encryptionPassword", "must be at least 8 characters: it protects the exportable key")
		case len(pw) > 1024:
			f.add("encryptionPassword", "must be at most 1024 characters")
		}
	} else if j.IsEncrypted && j.AgeKeyExport == nil {
		f.add("encryptionPassword", "is required to turn encryption on: it protects the exportable copy of the job's key")
	}
	if !slices.Contains(verificationLevels, j.VerificationLevel) {
		f.add("verificationLevel", "must be one of "+strings.Join(verificationLevels, ", "))
	}
	if j.VerifySchedule != nil {
		if _, err := schedule.Parse(schedule.VerifySpec(*j.VerifySchedule, j.Timezone)); err != nil {
			f.add("verifySchedule", "must be hourly, daily, weekly, monthly or a 5-field cron expression")
		}
	}
	if !slices.Contains(storageTypes, j.StorageType) {
		f.add("storageType", "must be one of "+strings.Join(storageTypes, ", "))
	}
	if j.StorageType == "local" {
		j.CloudStorageID = nil
	}
	if j.RetentionDays < 0 || j.RetentionDays > 36500 {
		f.add("retentionDays", "must be 0 (keep forever) to 36500")
	}
	return j, f.err()
}

// resolveCloudStorage checks a job's cloud storage: for s3 and
// google_drive it must be one of the user's storages of that type (404
// naming cloudStorageId otherwise); without one, the user's default of
// that type is taken (400 when there is none).
func (a *API) resolveCloudStorage(r *http.Request, j *db.BackupJob) error {
	if j.StorageType == "local" {
		return nil
	}
	user := userID(r.Context())
	if j.CloudStorageID == nil {
		rows, err := a.q.ListCloudStorages(r.Context(), a.pool, user)
		if err != nil {
			return err
		}
		for _, c := range rows {
			if c.StorageType == j.StorageType && c.IsDefault {
				j.CloudStorageID = &c.ID
				return nil
			}
		}
		return fieldErrors{"cloudStorageId": "is required: you have no default " + j.StorageType + " storage"}.err()
	}
	c, err := a.loadCloudStorage(r.Context(), user, *j.CloudStorageID, "cloudStorageId")
	if err != nil {
		return err
	}
	if c.StorageType != j.StorageType {
		return fieldErrors{"cloudStorageId": "is a " + c.StorageType + " storage, not " + j.StorageType}.err()
	}
	return nil
}

// checkDatabase returns 404 naming databaseId when id is not the user's.
func (a *API) checkDatabase(r *http.Request, id uuid.UUID) (db.Database, error) {
	d, err := a.q.GetDatabase(r.Context(), a.pool, db.GetDatabaseParams{ID: id, UserID: userID(r.Context())})
	return d, owned(err, "database", "databaseId")
}

// checkJobDatabases checks job j's database and verification target: 404
// when either is not the user's, 400 when the target is of another type.
func (a *API) checkJobDatabases(r *http.Request, j db.BackupJob) error {
	d, err := a.checkDatabase(r, j.DatabaseID)
	if err != nil || j.VerificationDatabaseID == nil {
		return err
	}
	t, err := a.q.GetDatabase(r.Context(), a.pool, db.GetDatabaseParams{ID: *j.VerificationDatabaseID, UserID: userID(r.Context())})
	if err != nil {
		return owned(err, "verification database", "verificationDatabaseId")
	}
	if t.Type != d.Type {
		return fieldErrors{"verificationDatabaseId": fmt.Sprintf("must be a %s database, like the job's", d.Type)}.err()
	}
	return nil
}

// setVerification stores job j's verification target and schedule (from
// want) in tx; a changed schedule, or a changed time zone, starts from its
// first slot after now.
func (a *API) setVerification(r *http.Request, tx pgx.Tx, j *db.BackupJob, want, cur db.BackupJob) error {
	j.VerificationDatabaseID = want.VerificationDatabaseID
	if err := a.q.SetBackupJobVerificationTarget(r.Context(), tx, db.SetBackupJobVerificationTargetParams{
		ID: j.ID, UserID: j.UserID, VerificationDatabaseID: want.VerificationDatabaseID}); err != nil {
		return err
	}
	j.VerifySchedule, j.VerifyNextAt = want.VerifySchedule, cur.VerifyNextAt
	if deref(want.VerifySchedule) == deref(cur.VerifySchedule) && want.Timezone == cur.Timezone && cur.VerifyNextAt != nil {
		return nil
	}
	j.VerifyNextAt = nil
	if want.VerifySchedule != nil {
		sc, err := schedule.Parse(schedule.VerifySpec(*want.VerifySchedule, want.Timezone))
		if err != nil {
			return err
		}
		if next := sc.Next(time.Now(), 1); len(next) == 1 {
			j.VerifyNextAt = &next[0]
		}
	}
	return a.q.SetBackupJobVerifySchedule(r.Context(), tx, db.SetBackupJobVerifyScheduleParams{
		ID: j.ID, UserID: j.UserID, VerifySchedule: j.VerifySchedule, VerifyNextAt: j.VerifyNextAt})
}

// listJobs answers {results: [job]}.
func (a *API) listJobs(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.q.ListBackupJobs(r.Context(), a.pool, userID(r.Context()))
	if err != nil {
		return err
	}
	out := make([]jobJSON, 0, len(rows))
	for _, j := range rows {
		out = append(out, toJobJSON(j))
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out, "totalResults": len(out)})
	return nil
}

// createJob answers 201 with the job. Defaults: scheduleType manual,
// timezone UTC, backupType full, compression zstd, verificationLevel BASIC,
// storageType local, retentionDays 30, isActive true. 400 names bad fields,
// 404 a databaseId that is not the user's.
func (a *API) createJob(w http.ResponseWriter, r *http.Request) error {
	var in jobInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	j, err := in.merge(db.BackupJob{ScheduleType: "manual", Timezone: "UTC", BackupType: "full",
		Compression: "zstd", VerificationLevel: "BASIC", StorageType: "local",
		RetentionDays: DefaultRetentionDays, IsActive: true})
	if err != nil {
		return err
	}
	if err := a.checkJobDatabases(r, j); err != nil {
		return err
	}
	if err := a.resolveCloudStorage(r, &j); err != nil {
		return err
	}
	want := j
	err = db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		var err error
		j, err = a.q.CreateBackupJob(r.Context(), tx, db.CreateBackupJobParams{
			ID: uuid.New(), UserID: userID(r.Context()), DatabaseID: want.DatabaseID, Name: want.Name,
			ScheduleType: want.ScheduleType, CronExpression: want.CronExpression, AdvancedScheduleConfig: want.AdvancedScheduleConfig,
			Timezone: want.Timezone, BackupType: want.BackupType, Compression: want.Compression, IsEncrypted: want.IsEncrypted,
			AutoVerifyAfterBackup: want.AutoVerifyAfterBackup, VerificationLevel: want.VerificationLevel,
			StorageType: want.StorageType, CloudStorageID: want.CloudStorageID, RetentionDays: want.RetentionDays, IsActive: want.IsActive,
			KeepLast: want.KeepLast, KeepDaily: want.KeepDaily, KeepWeekly: want.KeepWeekly, KeepMonthly: want.KeepMonthly,
		})
		if err != nil {
			return err
		}
		if err := a.setVerification(r, tx, &j, want, db.BackupJob{}); err != nil {
			return err
		}
		j.NotifyRules = want.NotifyRules
		if err := a.q.SetBackupJobNotifyRules(r.Context(), tx, db.SetBackupJobNotifyRulesParams{
			ID: j.ID, UserID: j.UserID, NotifyRules: want.NotifyRules}); err != nil {
			return err
		}
		j.AgeRecipients = want.AgeRecipients
		return a.applyEncryption(r.Context(), tx, &j, in.EncryptionPassword)
	})
	if err != nil {
		return err
	}
	auditObject(r.Context(), j.ID.String())
	writeJSON(w, http.StatusCreated, toJobJSON(j))
	return nil
}

func (a *API) loadJob(r *http.Request) (db.BackupJob, error) {
	id, err := pathID(r, "backup job")
	if err != nil {
		return db.BackupJob{}, err
	}
	j, err := a.q.GetBackupJob(r.Context(), a.pool, db.GetBackupJobParams{ID: id, UserID: userID(r.Context())})
	return j, owned(err, "backup job", "")
}

// getJob answers one job; 404 when it is not the user's.
func (a *API) getJob(w http.ResponseWriter, r *http.Request) error {
	j, err := a.loadJob(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJobJSON(j))
	return nil
}

// updateJob changes the fields present in the body: 200 with the job; 400
// names bad fields; 404 for another user's job or database.
func (a *API) updateJob(w http.ResponseWriter, r *http.Request) error {
	cur, err := a.loadJob(r)
	if err != nil {
		return err
	}
	var in jobInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	j, err := in.merge(cur)
	if err != nil {
		return err
	}
	if err := a.checkJobDatabases(r, j); err != nil {
		return err
	}
	if err := a.resolveCloudStorage(r, &j); err != nil {
		return err
	}
	want := j
	err = db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		var err error
		j, err = a.q.UpdateBackupJob(r.Context(), tx, db.UpdateBackupJobParams{
			ID: want.ID, UserID: userID(r.Context()), DatabaseID: want.DatabaseID, Name: want.Name,
			ScheduleType: want.ScheduleType, CronExpression: want.CronExpression, AdvancedScheduleConfig: want.AdvancedScheduleConfig,
			Timezone: want.Timezone, BackupType: want.BackupType, Compression: want.Compression, IsEncrypted: want.IsEncrypted,
			AutoVerifyAfterBackup: want.AutoVerifyAfterBackup, VerificationLevel: want.VerificationLevel,
			StorageType: want.StorageType, CloudStorageID: want.CloudStorageID, RetentionDays: want.RetentionDays, IsActive: want.IsActive,
			KeepLast: want.KeepLast, KeepDaily: want.KeepDaily, KeepWeekly: want.KeepWeekly, KeepMonthly: want.KeepMonthly,
		})
		if err != nil {
			return db.MapErr(err)
		}
		if err := a.setVerification(r, tx, &j, want, cur); err != nil {
			return err
		}
		j.NotifyRules = want.NotifyRules
		if err := a.q.SetBackupJobNotifyRules(r.Context(), tx, db.SetBackupJobNotifyRulesParams{
			ID: j.ID, UserID: j.UserID, NotifyRules: want.NotifyRules}); err != nil {
			return err
		}
		j.AgeRecipients = want.AgeRecipients
		return a.applyEncryption(r.Context(), tx, &j, in.EncryptionPassword)
	})
	if errors.Is(err, db.ErrNotFound) {
		return notFound("backup job")
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJobJSON(j))
	return nil
}

// deleteJob answers 204; the job's history and stored backups stay until
// deleted one by one. 404 when it is not the user's.
func (a *API) deleteJob(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "backup job")
	if err != nil {
		return err
	}
	_, err = a.q.DeleteBackupJob(r.Context(), a.pool, db.DeleteBackupJobParams{ID: id, UserID: userID(r.Context())})
	if err != nil {
		return owned(err, "backup job", "")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// applyEncryption gives an encrypted job its X25519 identity (once: it
// stays when encryption is turned off and on, so older backups still
// restore), stores it sealed by the vault, and when password is given
// stores the identity encrypted with it (age scrypt) as the exportable key.
func (a *API) applyEncryption(ctx context.Context, tx pgx.Tx, j *db.BackupJob, password *string) error {
	if j.IsEncrypted && j.AgeIdentityEnc == nil {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return err
		}
		sealedID, err := a.secrets.SealJobIdentity(j.ID, id)
		if err != nil {
			return err
		}
		rcpt := id.Recipient().String()
		j.AgeIdentityEnc, j.AgeRecipient = sealedID, &rcpt
	}
	if password != nil && j.AgeIdentityEnc != nil {
		id, err := a.secrets.JobIdentity(*j)
		if err != nil {
			return err
		}
		export, err := exportIdentity(id, *password, a.opts.ScryptWorkFactor)
		if err != nil {
			return err
		}
		j.AgeKeyExport = export
	}
	if j.AgeRecipients == nil {
		j.AgeRecipients = []string{}
	}
	return a.q.SetBackupJobEncryption(ctx, tx, db.SetBackupJobEncryptionParams{ID: j.ID, UserID: j.UserID,
		AgeIdentityEnc: j.AgeIdentityEnc, AgeRecipient: j.AgeRecipient, AgeRecipients: j.AgeRecipients, AgeKeyExport: j.AgeKeyExport})
}

// exportIdentity is the identity file ("AGE-SECRET-KEY-1…") encrypted with
// password, readable by `age -d`.
func exportIdentity(id *age.X25519Identity, password string, workFactor int) ([]byte, error) {
	r, err := age.NewScryptRecipient(password)
	if err != nil {
		return nil, err
	}
	if workFactor > 0 {
		r.SetWorkFactor(workFactor)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "# RahatBack backup job key (age X25519 identity)\n# public key: %s\n%s\n", id.Recipient(), id)
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encryptionKey answers the job's key encrypted with its encryption
// password, as an age file: `age -d` asks for the password and prints the
// identity, which `age -d -i` then uses to decrypt the job's backups. 404
// for another user's job or a job never encrypted.
func (a *API) encryptionKey(w http.ResponseWriter, r *http.Request) error {
	j, err := a.loadJob(r)
	if err != nil {
		return err
	}
	if j.AgeKeyExport == nil {
		return errorf(http.StatusNotFound, "this job has no encryption key")
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mimeAttachment("rahatback-job-"+j.ID.String()+".key.age"))
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(j.AgeKeyExport)
	return err
}

// parseSchedule is the job's schedule.
func parseSchedule(j db.BackupJob) (*schedule.Schedule, error) {
	spec := schedule.Spec{Type: j.ScheduleType, Advanced: j.AdvancedScheduleConfig, Timezone: j.Timezone}
	if j.CronExpression != nil {
		spec.Cron = *j.CronExpression
	}
	return schedule.Parse(spec)
}

// nextRuns answers {"runs": [...]}: the job's next count (default 5, at
// most 100) firing instants, RFC 3339 UTC; empty for a manual job.
func (a *API) nextRuns(w http.ResponseWriter, r *http.Request) error {
	j, err := a.loadJob(r)
	if err != nil {
		return err
	}
	count, err := countParam(r)
	if err != nil {
		return err
	}
	sc, err := parseSchedule(j)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runsOf(sc, time.Now(), count)})
	return nil
}

func countParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("count")
	if v == "" {
		return 5, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		return 0, fieldErrors{"count": "must be 1-100"}.err()
	}
	return n, nil
}

func runsOf(sc *schedule.Schedule, from time.Time, count int) []time.Time {
	runs := []time.Time{}
	if !sc.Manual() {
		for _, t := range sc.Next(from, count) {
			runs = append(runs, t.UTC())
		}
	}
	return runs
}

type previewRequest struct {
	ScheduleType           string          `json:"scheduleType"`
	CronExpression         string          `json:"cronExpression"`
	AdvancedScheduleConfig json.RawMessage `json:"advancedScheduleConfig"`
	Timezone               string          `json:"timezone"`
	From                   *time.Time      `json:"from"`
	Count                  int             `json:"count"`
}

// previewSchedule answers {"runs": [...]} for a schedule being edited: the
// next count (default 5, at most 100) instants after from (default now).
// 400 names the field and the reason.
func (a *API) previewSchedule(w http.ResponseWriter, r *http.Request) error {
	var req previewRequest
	if err := a.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Count == 0 {
		req.Count = 5
	}
	if req.Count < 1 || req.Count > 100 {
		return fieldErrors{"count": "must be 1-100"}.err()
	}
	from := time.Now()
	if req.From != nil {
		from = *req.From
	}
	sc, err := schedule.Parse(schedule.Spec{Type: req.ScheduleType, Cron: req.CronExpression,
		Advanced: req.AdvancedScheduleConfig, Timezone: req.Timezone})
	var fe *schedule.FieldError
	if errors.As(err, &fe) {
		return fieldErrors{fe.Field: fe.Reason}.err()
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runsOf(sc, from, req.Count)})
	return nil
}
