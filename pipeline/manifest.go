package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ManifestVersion is the manifest format this package writes and the newest
// it reads.
const ManifestVersion = 1

// Encryption names as stored in manifests.
const (
	EncryptionNone = "none"
	// EncryptionAge is age (age-encryption.org/v1) to X25519 recipients,
	// applied after compression: `age -d -i key | zstd -d` reads it.
	EncryptionAge = "age-x25519"
)

// ManifestSuffix is appended to a backup's storage key to name its manifest.
const ManifestSuffix = ".manifest.json"

// checksumSHA256 is the only Manifest.ChecksumAlgorithm of version 1.
const checksumSHA256 = "sha256"

// Manifest describes one backup; it is stored as JSON beside the backup file
// (key + ManifestSuffix). Adding a field that old readers may ignore keeps
// the version; changing the meaning of one needs a new version, which
// older readers then refuse.
type Manifest struct {
	Version           int          `json:"version"` // ManifestVersion
	BackupID          string       `json:"backupId"`
	JobID             string       `json:"jobId"`
	Engine            string       `json:"engine"` // "postgresql"
	ServerVersion     string       `json:"serverVersion"`
	ToolVersion       string       `json:"toolVersion"` // e.g. "pg_dump (PostgreSQL) 15.20"
	Database          string       `json:"database"`
	Format            string       `json:"format"`            // "plain"
	RawSize           int64        `json:"rawSize"`           // bytes of the dump before compression
	StoredSize        int64        `json:"storedSize"`        // bytes stored
	Checksum          string       `json:"checksum"`          // sha256 hex of the stored bytes
	ChecksumAlgorithm string       `json:"checksumAlgorithm"` // "sha256"
	Compression       string       `json:"compression"`       // Zstd, Gzip or None
	Encryption        string       `json:"encryption"`        // EncryptionNone or EncryptionAge
	StartedAt         time.Time    `json:"startedAt"`
	CompletedAt       time.Time    `json:"completedAt"`
	Tables            []TableCount `json:"tables"`
	// Consistency is the engine's DumpInfo.Consistency ("snapshot",
	// "per-collection"); empty where the dump is one transaction.
	Consistency string `json:"consistency,omitempty"`
	// Inventory says what the backup recorded beyond Tables' rows:
	// InventoryNone (backups before it existed) or InventoryObjects
	// (Objects, every table's Hash, and a dump that ended with its
	// engine's completion marker). DATABASE and FULL verification compare
	// only what was recorded.
	Inventory int `json:"inventory,omitempty"`
	// Objects are the schema objects the dump defines (tables, views,
	// functions, procedures, triggers, indexes, sequences, events…), as its
	// engine names them, in dump order.
	Objects []SchemaObject `json:"objects,omitempty"`
	// Chain is set on a chunked backup (an incremental or differential
	// job's): its object is then its chunk index, and StoredSize, Checksum
	// and Compression describe that index and the chunks.
	Chain *Chain `json:"chain,omitempty"`
}

// Chain is what a chunked backup stored and what it needs.
type Chain struct {
	Type      string   `json:"type"` // full, incremental, differential
	Parent    string   `json:"parent,omitempty"`
	Base      string   `json:"base"`
	DependsOn []string `json:"dependsOn"` // backups whose packs it uses
	Chunks    int      `json:"chunks"`
	// NewChunks and NewRawBytes are the chunks (and their dump bytes) it
	// stored; PackBytes what its packs take in storage, IndexSize its index.
	NewChunks   int    `json:"newChunks"`
	NewRawBytes int64  `json:"newRawBytes"`
	Packs       int    `json:"packs"`
	PackBytes   int64  `json:"packBytes"`
	IndexSize   int64  `json:"indexSize"`
	DumpSHA256  string `json:"dumpSha256"` // of the whole dump
	// Fallback says why a full was stored when the control plane asked
	// for an incremental or differential.
	Fallback string `json:"fallback,omitempty"`
}

// Manifest.Inventory values.
const (
	InventoryNone    = 0
	InventoryObjects = 1
)

// TableCount is the number of rows of one table in a dump, counted from
// the dump stream by its engine. Schema is "" for an engine without
// schemas, or a name the dump left unqualified.
type TableCount struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Rows   int64  `json:"rows"`
	// Hash is the table's content hash (RowHash.String); empty when not
	// recorded.
	Hash string `json:"hash,omitempty"`
}

// Marshal returns m as indented JSON ending in a newline, Tables as [] when
// nil. It returns an error, and no bytes, if m would not pass ParseManifest,
// so that no backup is stored with a manifest that cannot be read back; in
// particular Version must be set to ManifestVersion.
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	out := *m
	if out.Tables == nil {
		out.Tables = []TableCount{}
	}
	b, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("pipeline: manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseManifest parses a manifest written by Marshal. Unknown fields are
// ignored (they come from newer writers of the same version). It returns an
// error if data is not a JSON object, if the version is missing, older than
// 1 or newer than ManifestVersion, if a required field (backupId, jobId,
// engine, database, format, checksum, checksumAlgorithm, compression,
// encryption, startedAt, completedAt) is missing, or if a field is invalid:
// checksumAlgorithm other than "sha256", a checksum that is not 64 lowercase
// hex digits, an unknown compression, negative sizes, completedAt before
// startedAt, or a table without a name or with negative rows.
func ParseManifest(data []byte) (*Manifest, error) {
	// The version alone first, so that a newer manifest is refused for being
	// newer rather than for a field it changed.
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("pipeline: manifest is not valid JSON: %w", err)
	}
	if head.Version == nil {
		return nil, errors.New("pipeline: manifest has no version")
	}
	if v := *head.Version; v > ManifestVersion {
		return nil, fmt.Errorf("pipeline: manifest version %d is newer than the supported version %d; upgrade RahatBack to read it", v, ManifestVersion)
	} else if v < 1 {
		return nil, fmt.Errorf("pipeline: invalid manifest version %d", v)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("pipeline: manifest: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// validate checks what ParseManifest promises; the errors name JSON fields.
func (m *Manifest) validate() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("pipeline: manifest version %d, want %d", m.Version, ManifestVersion)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"backupId", m.BackupID},
		{"jobId", m.JobID},
		{"engine", m.Engine},
		{"database", m.Database},
		{"format", m.Format},
		{"checksum", m.Checksum},
		{"checksumAlgorithm", m.ChecksumAlgorithm},
		{"compression", m.Compression},
		{"encryption", m.Encryption},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if m.StartedAt.IsZero() {
		missing = append(missing, "startedAt")
	}
	if m.CompletedAt.IsZero() {
		missing = append(missing, "completedAt")
	}
	if len(missing) > 0 {
		return fmt.Errorf("pipeline: manifest is missing required fields: %s", strings.Join(missing, ", "))
	}
	var errs []error
	if m.ChecksumAlgorithm != checksumSHA256 {
		errs = append(errs, fmt.Errorf("unsupported checksumAlgorithm %q (want %q)", m.ChecksumAlgorithm, checksumSHA256))
	} else if !isLowerHex(m.Checksum, 64) {
		errs = append(errs, fmt.Errorf("checksum %q is not 64 lowercase hex digits", m.Checksum))
	}
	if !ValidCompression(m.Compression) {
		errs = append(errs, fmt.Errorf("unknown compression %q", m.Compression))
	}
	if m.RawSize < 0 {
		errs = append(errs, fmt.Errorf("negative rawSize %d", m.RawSize))
	}
	if m.StoredSize < 0 {
		errs = append(errs, fmt.Errorf("negative storedSize %d", m.StoredSize))
	}
	if m.CompletedAt.Before(m.StartedAt) {
		errs = append(errs, fmt.Errorf("completedAt %s is before startedAt %s",
			m.CompletedAt.Format(time.RFC3339Nano), m.StartedAt.Format(time.RFC3339Nano)))
	}
	for i, t := range m.Tables {
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("tables[%d] has no name", i))
		}
		if t.Rows < 0 {
			errs = append(errs, fmt.Errorf("tables[%d] (%s) has negative rows %d", i, t.Name, t.Rows))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("pipeline: invalid manifest: %w", errors.Join(errs...))
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
