package secrets_test

import (
	"bytes"
	"errors"
	"testing"

	"filippo.io/age"
	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/secrets"
	"github.com/rahatback/rahatback/vault"
)

func box(t *testing.T) secrets.Box {
	t.Helper()
	v, err := vault.New(map[uint32][]byte{1: bytes.Repeat([]byte{3}, vault.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	return secrets.Box{V: v}
}

// TestBoundToRowAndColumn: each secret opens for its own row and column
// only, so a ciphertext copied elsewhere in the tables is refused.
func TestBoundToRowAndColumn(t *testing.T) {
	b := box(t)
	id := uuid.New()
	enc, err := b.SealDatabasePassword(id, "s3cret pw")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("s3cret")) {
		t.Fatal("the stored password holds the plaintext")
	}
	pw, err := b.DatabasePassword(db.Database{ID: id, PasswordEnc: enc})
	if err != nil || string(pw) != "s3cret pw" {
		t.Fatalf("opened %q, %v", pw, err)
	}
	if _, err := b.DatabasePassword(db.Database{ID: uuid.New(), PasswordEnc: enc}); err == nil {
		t.Fatal("a password copied to another database opened")
	}
	if _, err := b.S3Secret(db.CloudStorage{ID: id, S3SecretEnc: enc}); err == nil {
		t.Fatal("a database password opened as an S3 secret of the same id")
	}
	if _, err := b.DriveToken(db.CloudStorage{ID: id, GdRefreshTokenEnc: enc}); err == nil {
		t.Fatal("a database password opened as a Drive token of the same id")
	}

	tok, err := b.SealDriveToken(id, "refresh")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.DriveToken(db.CloudStorage{ID: id, GdRefreshTokenEnc: tok}); err != nil || got != "refresh" {
		t.Fatalf("drive token %q, %v", got, err)
	}
	s3, err := b.SealS3Secret(id, "key")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.S3Secret(db.CloudStorage{ID: id, S3SecretEnc: s3}); err != nil || got != "key" {
		t.Fatalf("s3 secret %q, %v", got, err)
	}
}

// TestEmptySecrets: no password is stored as none and opens as none; a job
// without a key says so.
func TestEmptySecrets(t *testing.T) {
	b := box(t)
	if enc, err := b.SealDatabasePassword(uuid.New(), ""); err != nil || enc != nil {
		t.Fatalf("empty password stored as %x, %v", enc, err)
	}
	if pw, err := b.DatabasePassword(db.Database{ID: uuid.New()}); err != nil || pw != nil {
		t.Fatalf("no password opened as %q, %v", pw, err)
	}
	if _, err := b.JobIdentity(db.BackupJob{ID: uuid.New()}); !errors.Is(err, secrets.ErrNoKey) {
		t.Fatalf("job without a key: %v", err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	job := uuid.New()
	enc, err := b.SealJobIdentity(job, id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.JobIdentity(db.BackupJob{ID: job, AgeIdentityEnc: enc})
	if err != nil || got.String() != id.String() {
		t.Fatalf("identity %v", err)
	}
	if _, err := b.JobIdentity(db.BackupJob{ID: uuid.New(), AgeIdentityEnc: enc}); err == nil {
		t.Fatal("a key copied to another job opened")
	}
}
