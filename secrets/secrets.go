// Package secrets opens and seals the secrets the control plane keeps in
// its tables: database passwords, cloud storage keys and tokens, and the
// age identities of encrypted jobs. Each is sealed by the vault and bound
// to its table, column and row, so a ciphertext copied to another row or
// column does not open.
package secrets

import (
	"errors"

	"filippo.io/age"
	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/vault"
)

// Bindings of each secret column (vault.Binding); controlplane's key
// rotation rewraps them with the same table and bind names.
func databasePassword(id uuid.UUID) []byte {
	return vault.Binding("databases", "password", id.String())
}
func s3Secret(id uuid.UUID) []byte { return vault.Binding("cloud_storages", "s3_secret", id.String()) }
func driveToken(id uuid.UUID) []byte {
	return vault.Binding("cloud_storages", "gd_refresh_token", id.String())
}
func jobIdentity(id uuid.UUID) []byte {
	return vault.Binding("backup_jobs", "age_identity", id.String())
}

// ErrNoKey is JobIdentity's error for a job that has no identity.
var ErrNoKey = errors.New("the job has no encryption key")

// Box opens and seals secrets with a vault.
type Box struct{ V *vault.Vault }

// SealDatabasePassword is the stored form of database id's password:
// nil for an empty one.
func (b Box) SealDatabasePassword(id uuid.UUID, password string) ([]byte, error) {
	if password == "" {
		return nil, nil
	}
	return b.V.Seal([]byte(password), databasePassword(id))
}

// DatabasePassword opens d's password; nil when it has none.
func (b Box) DatabasePassword(d db.Database) ([]byte, error) {
	if d.PasswordEnc == nil {
		return nil, nil
	}
	return b.V.Open(d.PasswordEnc, databasePassword(d.ID))
}

// SealS3Secret is the stored form of storage id's S3 secret key.
func (b Box) SealS3Secret(id uuid.UUID, secret string) ([]byte, error) {
	return b.V.Seal([]byte(secret), s3Secret(id))
}

// S3Secret opens c's S3 secret key; "" when it has none.
func (b Box) S3Secret(c db.CloudStorage) (string, error) {
	if c.S3SecretEnc == nil {
		return "", nil
	}
	raw, err := b.V.Open(c.S3SecretEnc, s3Secret(c.ID))
	return string(raw), err
}

// SealDriveToken is the stored form of storage id's Drive refresh token.
func (b Box) SealDriveToken(id uuid.UUID, token string) ([]byte, error) {
	return b.V.Seal([]byte(token), driveToken(id))
}

// DriveToken opens c's Drive refresh token; "" when it has none.
func (b Box) DriveToken(c db.CloudStorage) (string, error) {
	if c.GdRefreshTokenEnc == nil {
		return "", nil
	}
	raw, err := b.V.Open(c.GdRefreshTokenEnc, driveToken(c.ID))
	return string(raw), err
}

// SealJobIdentity is the stored form of job jobID's age identity.
func (b Box) SealJobIdentity(jobID uuid.UUID, id *age.X25519Identity) ([]byte, error) {
	return b.V.Seal([]byte(id.String()), jobIdentity(jobID))
}

// JobIdentity opens j's age identity; ErrNoKey when it has none.
func (b Box) JobIdentity(j db.BackupJob) (*age.X25519Identity, error) {
	if j.AgeIdentityEnc == nil {
		return nil, ErrNoKey
	}
	raw, err := b.V.Open(j.AgeIdentityEnc, jobIdentity(j.ID))
	if err != nil {
		return nil, err
	}
	return age.ParseX25519Identity(string(raw))
}

func channelURL(id uuid.UUID) []byte {
	return vault.Binding("notification_channels", "url", id.String())
}
func channelSecret(id uuid.UUID) []byte {
	return vault.Binding("notification_channels", "secret", id.String())
}

// SealChannelURL is the stored form of notification channel id's URL
// (Slack's and Discord's URLs carry their token).
func (b Box) SealChannelURL(id uuid.UUID, url string) ([]byte, error) {
	return b.V.Seal([]byte(url), channelURL(id))
}

// ChannelURL opens c's URL; "" when it has none.
func (b Box) ChannelURL(c db.NotificationChannel) (string, error) {
	if c.UrlEnc == nil {
		return "", nil
	}
	raw, err := b.V.Open(c.UrlEnc, channelURL(c.ID))
	return string(raw), err
}

// SealChannelSecret is the stored form of webhook channel id's signing secret.
func (b Box) SealChannelSecret(id uuid.UUID, secret string) ([]byte, error) {
	return b.V.Seal([]byte(secret), channelSecret(id))
}

// ChannelSecret opens c's signing secret; "" when it has none.
func (b Box) ChannelSecret(c db.NotificationChannel) (string, error) {
	if c.SecretEnc == nil {
		return "", nil
	}
	raw, err := b.V.Open(c.SecretEnc, channelSecret(c.ID))
	return string(raw), err
}
