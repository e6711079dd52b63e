package runs

import (
	"context"
	"errors"
	"time"

	"filippo.io/age"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/secrets"
	"github.com/rahatback/rahatback/storage"
)

// What an agent gets is sealed to it: each secret a command carries is
// opened from the vault here and sealed to the agent's public key.

// SealConn is a connection to database fields d with password sealed to
// agent key pub.
func SealConn(d events.ConnSpec, password []byte, pub string) (events.ConnSpec, error) {
	var err error
	d.SealedPassword, err = sealed.Seal(pub, password)
	return d, err
}

// connOf is d's connection, its password not yet sealed.
func connOf(d db.Database) events.ConnSpec {
	return events.ConnSpec{Type: d.Type, Host: d.Host, Port: int(d.Port), Username: d.Username, Database: d.DatabaseName,
		AuthSource: deref(d.AuthSource), TLS: d.TLS, ReplicaSet: deref(d.ReplicaSet), Instance: d.Instance, Encrypt: d.Encrypt}
}

// ConnSpec is how agent reaches database d, its password sealed to the agent.
func (s *Service) ConnSpec(ctx context.Context, d db.Database, agent uuid.UUID) (events.ConnSpec, error) {
	password, err := s.c.Secrets.DatabasePassword(d)
	if err != nil {
		return events.ConnSpec{}, err
	}
	pub, err := s.q.GetAgentPublicKey(ctx, s.c.Pool, agent)
	if err != nil {
		return events.ConnSpec{}, mapNotFound(err, "agent", "")
	}
	return SealConn(connOf(d), password, pub)
}

// StorageConfig is a saved storage with its secrets opened: what the
// control plane uses itself (test, download, delete) and what, sealed,
// goes to an agent. s3Secret, when not nil, replaces the stored secret
// (a test of changed settings).
func (s *Service) StorageConfig(c db.CloudStorage, s3Secret *string) (storage.Config, error) {
	cfg := storage.Config{Type: c.StorageType}
	switch c.StorageType {
	case "s3":
		secret, err := s.c.Secrets.S3Secret(c)
		if err != nil {
			return cfg, err
		}
		if s3Secret != nil {
			secret = *s3Secret
		}
		cfg.S3 = &storage.S3Config{Endpoint: deref(c.S3Endpoint), Region: deref(c.S3Region), Bucket: deref(c.S3Bucket),
			AccessKeyID: deref(c.S3AccessKeyID), SecretAccessKey: secret, ForcePathStyle: c.S3ForcePathStyle, Prefix: deref(c.S3Prefix),
			HTTPClient: s.http}
	case "google_drive":
		token, err := s.c.Secrets.DriveToken(c)
		if err != nil {
			return cfg, err
		}
		g := s.c.Drive
		cfg.Drive = &storage.DriveConfig{ClientID: g.ClientID, ClientSecret: g.ClientSecret, RefreshToken: token,
			FolderID: deref(c.GdFolderID), Endpoint: g.Endpoint, TokenURL: g.TokenURL}
	}
	return cfg, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefID(id *uuid.UUID) uuid.UUID {
	if id == nil {
		return uuid.Nil
	}
	return *id
}

// StorageSpec is the StorageSpec of a command to agent about user's
// storage of storageType (cloudID for s3 and google_drive): its settings
// with every secret sealed to that agent. NotFound (field
// cloudStorageId) when the storage is not the user's; Conflict when a
// cloud type names none.
func (s *Service) StorageSpec(ctx context.Context, storageType string, cloudID *uuid.UUID, user, agent uuid.UUID) (events.StorageSpec, error) {
	return s.storageSpec(ctx, s.c.Pool, storageType, cloudID, user, agent)
}

// storageSpec is StorageSpec reading through dbtx.
func (s *Service) storageSpec(ctx context.Context, dbtx db.DBTX, storageType string, cloudID *uuid.UUID, user, agent uuid.UUID) (events.StorageSpec, error) {
	spec := events.StorageSpec{Type: storageType}
	if storageType == "local" {
		return spec, nil
	}
	if cloudID == nil {
		return spec, fail(Conflict, "the job has no cloud storage; set its cloudStorageId")
	}
	c, err := s.q.GetCloudStorage(ctx, dbtx, db.GetCloudStorageParams{ID: *cloudID, UserID: user})
	if err != nil {
		return spec, mapNotFound(err, "cloud storage", "cloudStorageId")
	}
	cfg, err := s.StorageConfig(c, nil)
	if err != nil {
		return spec, err
	}
	pub, err := s.q.GetAgentPublicKey(ctx, dbtx, agent)
	if err != nil {
		return spec, mapNotFound(err, "agent", "")
	}
	return sealStorage(cfg, pub)
}

// sealStorage is cfg as a command carries it: secrets sealed to pub.
func sealStorage(cfg storage.Config, pub string) (events.StorageSpec, error) {
	spec := events.StorageSpec{Type: cfg.Type}
	var err error
	switch {
	case cfg.S3 != nil:
		c := cfg.S3
		spec.S3 = &events.S3Spec{Endpoint: c.Endpoint, Region: c.Region, Bucket: c.Bucket, AccessKeyID: c.AccessKeyID,
			ForcePathStyle: c.ForcePathStyle, Prefix: c.Prefix}
		spec.S3.SealedSecretKey, err = sealed.Seal(pub, []byte(c.SecretAccessKey))
	case cfg.Drive != nil:
		c := cfg.Drive
		spec.Drive = &events.DriveSpec{ClientID: c.ClientID, FolderID: c.FolderID, Endpoint: c.Endpoint, TokenURL: c.TokenURL}
		if spec.Drive.SealedClientSecret, err = sealed.Seal(pub, []byte(c.ClientSecret)); err == nil {
			spec.Drive.SealedRefreshToken, err = sealed.Seal(pub, []byte(c.RefreshToken))
		}
	}
	return spec, err
}

// OpenStorage opens, in the control plane, the cloud storage backup h is
// in (download and delete of s3 and google_drive backups). Conflict when
// the backup names none or it was deleted.
func (s *Service) OpenStorage(ctx context.Context, h db.BackupHistory) (storage.Storage, error) {
	if h.CloudStorageID == nil {
		return nil, fail(Conflict, "this backup does not say which cloud storage holds it; reach the object in your storage directly")
	}
	c, err := s.q.GetCloudStorage(ctx, s.c.Pool, db.GetCloudStorageParams{ID: *h.CloudStorageID, UserID: h.UserID})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return nil, fail(Conflict, "the cloud storage that holds this backup was deleted; reach the object in your storage directly")
	} else if err != nil {
		return nil, err
	}
	cfg, err := s.StorageConfig(c, nil)
	if err != nil {
		return nil, err
	}
	return storage.Open(ctx, cfg)
}

// ObjectRef is what the agent holding backup h needs to find and check
// it: its storage, sealed to that agent, and for an encrypted backup the
// job's identity sealed to it too. Conflict when that key is gone with
// its job.
func (s *Service) ObjectRef(ctx context.Context, h db.BackupHistory) (events.ObjectRef, error) {
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
	if h.RawSize != nil {
		ref.RawSize = *h.RawSize
	}
	var err error
	if h.StorageType != "local" {
		if ref.Storage, err = s.StorageSpec(ctx, h.StorageType, h.CloudStorageID, h.UserID, h.AgentID); err != nil {
			return ref, err
		}
	}
	if !h.IsEncrypted {
		return ref, nil
	}
	j, err := s.q.GetBackupJob(ctx, s.c.Pool, db.GetBackupJobParams{ID: h.BackupJobID, UserID: h.UserID})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return ref, fail(Conflict, "this backup is encrypted and its job was deleted with its key: decrypt it with the key you exported (age -d -i, see the README)")
	} else if err != nil {
		return ref, err
	}
	id, err := s.c.Secrets.JobIdentity(j)
	if err != nil {
		return ref, err
	}
	pub, err := s.q.GetAgentPublicKey(ctx, s.c.Pool, h.AgentID)
	if err != nil {
		return ref, mapNotFound(err, "agent", "")
	}
	ref.SealedIdentity, err = sealed.Seal(pub, []byte(id.String()))
	return ref, err
}

// BackupCommands builds the commands that run jobs[i] on agents[i] as
// runIDs[i], their secrets sealed to each agent, with a few queries for the
// lot (the scheduler builds a burst of slots at once), read through dbtx
// (the pool, or a transaction the caller holds). errs[i] is non-nil
// when command i cannot be built: NotFound when its database or agent is
// gone, Conflict when the job is encrypted but has no key.
func (s *Service) BackupCommands(ctx context.Context, dbtx db.DBTX, jobs []db.BackupJob, agents, runIDs []uuid.UUID) (cmds []events.BackupCommand, errs []error) {
	cmds, errs = make([]events.BackupCommand, len(jobs)), make([]error, len(jobs))
	failAll := func(err error) ([]events.BackupCommand, []error) {
		for i := range errs {
			errs[i] = err
		}
		return cmds, errs
	}
	dbIDs := make([]uuid.UUID, 0, len(jobs))
	for _, j := range jobs {
		dbIDs = append(dbIDs, j.DatabaseID)
		if j.VerificationDatabaseID != nil {
			dbIDs = append(dbIDs, *j.VerificationDatabaseID)
		}
	}
	dbRows, err := s.q.GetDatabasesByIDs(ctx, dbtx, dbIDs)
	if err != nil {
		return failAll(err)
	}
	databases := make(map[uuid.UUID]db.Database, len(dbRows))
	for _, d := range dbRows {
		databases[d.ID] = d
	}
	keyRows, err := s.q.GetAgentPublicKeys(ctx, dbtx, agents)
	if err != nil {
		return failAll(err)
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
			errs[i] = notFound("database", "")
			continue
		}
		pub, ok := keys[agents[i]]
		if !ok {
			errs[i] = notFound("agent", "")
			continue
		}
		pw, ok := passwords[d.ID]
		if !ok {
			if pw, err = s.c.Secrets.DatabasePassword(d); err != nil {
				errs[i] = err
				continue
			}
			passwords[d.ID] = pw
		}
		spec := events.StorageSpec{Type: j.StorageType}
		if j.StorageType != "local" {
			k := specKey{agent: agents[i]}
			if j.CloudStorageID != nil {
				k.cloud = *j.CloudStorageID
			}
			if spec, ok = specs[k]; !ok {
				if spec, err = s.storageSpec(ctx, dbtx, j.StorageType, j.CloudStorageID, j.UserID, agents[i]); err != nil {
					errs[i] = err
					continue
				}
				specs[k] = spec
			}
		}
		var chain *events.Chain
		if chain, err = s.chainFor(ctx, dbtx, j, agents[i]); err != nil {
			errs[i] = err
			continue
		}
		cmds[i], errs[i] = s.backupCommand(j, d, pw, pub, spec, runIDs[i], chain)
		if t, ok := databases[derefID(j.VerificationDatabaseID)]; ok && errs[i] == nil && cmds[i].Verify == "FULL" && t.UserID == j.UserID {
			tpw, ok := passwords[t.ID]
			if !ok {
				if tpw, err = s.c.Secrets.DatabasePassword(t); err != nil {
					errs[i] = err
					continue
				}
				passwords[t.ID] = tpw
			}
			target, err := SealConn(connOf(t), tpw, pub)
			if err != nil {
				errs[i] = err
				continue
			}
			cmds[i].VerifyTarget = &target
		}
	}
	return cmds, errs
}

// backupCommand is job j's command for run runID on database d, for the
// agent with key pub; password is d's, spec the job's storage sealed to
// that agent.
func (s *Service) backupCommand(j db.BackupJob, d db.Database, password []byte, pub string, spec events.StorageSpec, runID uuid.UUID, chain *events.Chain) (events.BackupCommand, error) {
	conn, err := SealConn(connOf(d), password, pub)
	if err != nil {
		return events.BackupCommand{}, err
	}
	cmd := events.BackupCommand{V: events.Version, Deadline: s.deadline(), RunID: runID.String(), JobID: j.ID.String(),
		DatabaseID: d.ID.String(), Conn: conn, Compression: j.Compression, Storage: spec, Chain: chain}
	if j.IsEncrypted {
		if j.AgeRecipient == nil {
			return cmd, fail(Conflict, "the job is encrypted but has no key; set its encryptionPassword again")
		}
		cmd.Recipients = append([]string{*j.AgeRecipient}, j.AgeRecipients...)
	}
	if j.AutoVerifyAfterBackup {
		cmd.Verify, cmd.VerifyID = j.VerificationLevel, uuid.NewString()
	}
	// The key opens the parent's index, and the backup for verification.
	if j.IsEncrypted && (cmd.Verify != "" || (chain != nil && chain.Parent != nil)) {
		id, err := s.c.Secrets.JobIdentity(j)
		if errors.Is(err, secrets.ErrNoKey) {
			return cmd, fail(Conflict, "the job is encrypted but has no key; set its encryptionPassword again")
		} else if err != nil {
			return cmd, err
		}
		if cmd.SealedIdentity, err = sealed.Seal(pub, []byte(id.String())); err != nil {
			return cmd, err
		}
	}
	return cmd, nil
}

// Chains: a chain starts again with a full once its full is FullEvery
// old or it holds MaxChain backups, so that a restore never reads an
// unbounded chain and retention can let old fulls go.
const (
	FullEvery = 7 * 24 * time.Hour
	MaxChain  = 50
)

// chainFor is the chain of job j's next run on agent: nil for a job of
// type full (one object per backup); for an incremental or differential
// job, a full when it has no usable parent (none yet, one made with other
// storage, compression or encryption, on another agent's local disk, one
// whose verification failed, or a chain too old or long), else its type
// with the parent: the newest chunked backup (incremental) or the newest
// chunked full (differential).
func (s *Service) chainFor(ctx context.Context, dbtx db.DBTX, j db.BackupJob, agent uuid.UUID) (*events.Chain, error) {
	if j.BackupType != "incremental" && j.BackupType != "differential" {
		return nil, nil
	}
	var cloud *uuid.UUID
	if j.StorageType != "local" {
		cloud = j.CloudStorageID
	}
	live, err := s.q.ChainLiveBackups(ctx, dbtx, j.ID)
	if err != nil {
		return nil, err
	}
	keep := make([]string, len(live))
	for i, id := range live {
		keep[i] = id.String()
	}
	row, err := s.q.ChainParent(ctx, dbtx, db.ChainParentParams{BackupJobID: j.ID, StorageType: j.StorageType,
		CloudStorageID: cloud, Compression: j.Compression, IsEncrypted: j.IsEncrypted, FullOnly: j.BackupType == "differential",
		AgentID: agent})
	if errors.Is(err, pgx.ErrNoRows) {
		return &events.Chain{Type: "full", Keep: keep}, nil
	} else if err != nil {
		return nil, err
	}
	if row.StorageKey == nil || row.ChecksumValue == nil || row.BaseCompletedAt == nil ||
		time.Since(*row.BaseCompletedAt) > FullEvery || len(row.DependsOn)+1 >= MaxChain {
		return &events.Chain{Type: "full", Keep: keep}, nil
	}
	return &events.Chain{Type: j.BackupType, Keep: keep, Parent: &events.ChainParent{BackupID: row.ID.String(), Key: *row.StorageKey,
		Checksum: *row.ChecksumValue}}, nil
}

// ChainEvent is the chained event of run, when cmd stores it in its job's
// chunk store (nil otherwise): published with the command, it records
// the run's chain on its history row.
func ChainEvent(cmd events.BackupCommand) *events.BackupEvent {
	if cmd.Chain == nil {
		return nil
	}
	ev := &events.BackupEvent{V: events.Version, ID: cmd.RunID + ":" + events.PhaseChained, RunID: cmd.RunID, At: time.Now().UTC(),
		Chain: &events.ChainInfo{Type: cmd.Chain.Type}}
	if cmd.Chain.Parent != nil {
		ev.Chain.ParentID = cmd.Chain.Parent.BackupID
	}
	return ev
}

// JobKeys are the keys of encrypted backup h's job, opened in the control
// plane to stream a chunked backup as one file: its identity, which opens
// the backup, and every recipient the job encrypts to. Conflict when the
// job, and so its key, was deleted.
func (s *Service) JobKeys(ctx context.Context, h db.BackupHistory) (*age.X25519Identity, []age.Recipient, error) {
	j, err := s.q.GetBackupJob(ctx, s.c.Pool, db.GetBackupJobParams{ID: h.BackupJobID, UserID: h.UserID})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return nil, nil, fail(Conflict, "this backup is encrypted and its job was deleted with its key: read it with the key you exported (rahatback-agent restore, see the README)")
	} else if err != nil {
		return nil, nil, err
	}
	id, err := s.c.Secrets.JobIdentity(j)
	if err != nil {
		return nil, nil, err
	}
	recipients := []age.Recipient{id.Recipient()}
	for _, r := range j.AgeRecipients {
		rc, err := age.ParseX25519Recipient(r)
		if err != nil {
			return nil, nil, err
		}
		recipients = append(recipients, rc)
	}
	return id, recipients, nil
}
