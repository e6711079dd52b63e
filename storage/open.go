package storage

import (
	"context"
	"errors"
	"fmt"
)

// Config names one remote storage and its settings, secrets in plaintext:
// it only lives in memory, in the control plane or on an agent.
type Config struct {
	Type  string // s3 | google_drive
	S3    *S3Config
	Drive *DriveConfig
}

// Open returns the Storage cfg describes. Errors: an unknown type, missing
// settings, or the backend's own validation.
func Open(ctx context.Context, cfg Config) (Storage, error) {
	switch cfg.Type {
	case "s3":
		if cfg.S3 == nil {
			return nil, errors.New("storage: s3 settings missing")
		}
		return NewS3(*cfg.S3)
	case "google_drive":
		if cfg.Drive == nil {
			return nil, errors.New("storage: google_drive settings missing")
		}
		return NewDrive(ctx, *cfg.Drive)
	default:
		return nil, fmt.Errorf("storage: unknown storage type %q", cfg.Type)
	}
}

// Probe proves the storage cfg describes works: it writes a small object,
// reads it back and deletes it. The error says what failed and never holds
// a secret.
func Probe(ctx context.Context, cfg Config) error {
	s, err := Open(ctx, cfg)
	if err != nil {
		return err
	}
	p, ok := s.(interface{ Probe(context.Context) error })
	if !ok {
		return fmt.Errorf("storage: %s cannot be probed", cfg.Type)
	}
	return p.Probe(ctx)
}
