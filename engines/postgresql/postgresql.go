// Package postgresql is the PostgreSQL engine.
package postgresql

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rahatback/rahatback/engines"
)

// ConnectTimeout bounds one connection attempt.
const ConnectTimeout = 15 * time.Second

// Engine drives PostgreSQL servers.
type Engine struct {
	// PassDir holds the short-lived passfiles of pg_dump and psql; default
	// os.TempDir(). The agent gives each run of itself a private directory
	// that it empties at start, so a passfile left by a killed process does
	// not outlive it.
	PassDir string
}

// config builds a connection config field by field, never through a
// connection string, so a database or user name cannot smuggle options in.
// TLS is tried first and plaintext accepted (libpq's sslmode=prefer).
func config(c engines.Conn) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig("sslmode=prefer")
	if err != nil {
		return nil, err
	}
	cfg.Host = c.Host
	cfg.Port = uint16(c.Port)
	cfg.User = c.Username
	cfg.Password = c.Password
	cfg.Database = c.Database
	cfg.ConnectTimeout = ConnectTimeout
	cfg.RuntimeParams = map[string]string{"application_name": "rahatback-agent"}
	for _, fb := range cfg.Fallbacks {
		fb.Host, fb.Port = c.Host, uint16(c.Port)
	}
	return cfg, nil
}

// Test connects and returns SHOW server_version. On failure the error is the
// server's message ("password authentication failed for user …") when there
// is one.
func (Engine) Test(ctx context.Context, c engines.Conn) (string, error) {
	cfg, err := config(c)
	if err != nil {
		return "", err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", serverError(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version')").Scan(&version); err != nil {
		return "", serverError(err)
	}
	return "PostgreSQL " + version, nil
}

func serverError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return errors.New(pgErr.Message)
	}
	return err
}
