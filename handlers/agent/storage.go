package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/securefile"
	"github.com/rahatback/rahatback/storage"
)

// storageFor opens the storage a command names: the agent's local
// directory, or a remote storage whose secrets were sealed to this agent.
func (h *Handlers) storageFor(s events.StorageSpec) (storage.Storage, error) {
	if s.Type == "local" {
		if h.Local == nil {
			return nil, errors.New("this agent has no local storage directory configured")
		}
		return h.Local, nil
	}
	cfg, err := h.storageConfig(s)
	if err != nil {
		return nil, err
	}
	return storage.Open(context.Background(), cfg)
}

func (h *Handlers) unseal(v string) (string, error) {
	raw, err := sealed.Open(h.Identity, v)
	if err != nil {
		return "", errors.New("this agent cannot open the storage credentials sent to it; revoke and re-enroll the agent")
	}
	return string(raw), nil
}

// storageConfig opens the sealed settings of a remote storage.
func (h *Handlers) storageConfig(s events.StorageSpec) (storage.Config, error) {
	cfg := storage.Config{Type: s.Type}
	var err error
	switch {
	case s.Type == "s3" && s.S3 != nil:
		c := s.S3
		cfg.S3 = &storage.S3Config{Endpoint: c.Endpoint, Region: c.Region, Bucket: c.Bucket, AccessKeyID: c.AccessKeyID,
			ForcePathStyle: c.ForcePathStyle, Prefix: c.Prefix}
		cfg.S3.SecretAccessKey, err = h.unseal(c.SealedSecretKey)
	case s.Type == "google_drive" && s.Drive != nil:
		c := s.Drive
		cfg.Drive = &storage.DriveConfig{ClientID: c.ClientID, FolderID: c.FolderID, Endpoint: c.Endpoint, TokenURL: c.TokenURL}
		if cfg.Drive.ClientSecret, err = h.unseal(c.SealedClientSecret); err == nil {
			cfg.Drive.RefreshToken, err = h.unseal(c.SealedRefreshToken)
		}
	default:
		return cfg, fmt.Errorf("storage type %q is not supported by this agent", s.Type)
	}
	return cfg, err
}

// upload is a journal entry: an upload to a remote storage in progress. A
// killed agent finds its entries at the next start and aborts what the
// storage still holds of them (an unfinished S3 multipart upload).
type upload struct {
	Storage events.StorageSpec `json:"storage"` // secrets stay sealed to this agent
	Key     string             `json:"key"`
}

// journalStart records an upload before it begins; the returned func
// removes the entry once the upload has ended either way. Without a
// journal directory, or for local storage, it does nothing.
func (h *Handlers) journalStart(runID string, spec events.StorageSpec, key string) func() {
	if h.JournalDir == "" || spec.Type != "s3" {
		return func() {}
	}
	p := filepath.Join(h.JournalDir, runID+".json")
	data, _ := json.Marshal(upload{Storage: spec, Key: key})
	if err := securefile.Write(p, data); err != nil {
		h.Logger.Warn("upload journal not written", "err", err)
		return func() {}
	}
	return func() { os.Remove(p) }
}

// RecoverUploads aborts what uploads interrupted by a crash left in remote
// storage, then clears their journal entries. It returns how many it
// cleaned.
func (h *Handlers) RecoverUploads(ctx context.Context) (int, error) {
	return h.replayJournal(".json", "could not clean an interrupted upload; will retry at next start", func(data []byte) error {
		var u upload
		if err := json.Unmarshal(data, &u); err != nil {
			return err
		}
		return h.abortUpload(ctx, u)
	})
}

// replayJournal calls do with every journal entry whose name ends in
// suffix and removes the entries it handled; an entry do fails on stays
// for the next start, logged with warn. It returns how many it handled.
func (h *Handlers) replayJournal(suffix, warn string, do func(data []byte) error) (int, error) {
	if h.JournalDir == "" {
		return 0, nil
	}
	entries, err := os.ReadDir(h.JournalDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), suffix) {
			continue
		}
		p := filepath.Join(h.JournalDir, e.Name())
		data, err := os.ReadFile(p)
		if err == nil {
			err = do(data)
		}
		if err != nil {
			h.Logger.Warn(warn, "entry", e.Name(), "err", err)
			continue
		}
		os.Remove(p)
		n++
	}
	return n, nil
}

func (h *Handlers) abortUpload(ctx context.Context, u upload) error {
	cfg, err := h.storageConfig(u.Storage)
	if err != nil || cfg.S3 == nil {
		return err
	}
	// Narrow the prefix to the key: only that upload is aborted.
	c := *cfg.S3
	c.Prefix = path.Join(c.Prefix, u.Key)
	s3, err := storage.NewS3(c)
	if err != nil {
		return err
	}
	_, err = s3.AbortStale(ctx, 0)
	return err
}
