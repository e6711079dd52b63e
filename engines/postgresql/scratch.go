package postgresql

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rahatback/rahatback/engines"
)

// Inspector reads a plain dump: rows and content hash of every table's
// COPY block, pg_dump's object headers, and its completion marker.
func (Engine) Inspector() engines.Inspector {
	return engines.NewTextInspector(NewCopyCounter(), completeMarker)
}

// CreateScratch runs CREATE DATABASE name TEMPLATE template0 on c's server
// (connected to c's database). A user without CREATEDB gets an error
// wrapping engines.ErrPrivilege that says so.
func (Engine) CreateScratch(ctx context.Context, c engines.Conn, name string) error {
	conn, err := connect(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return fmt.Errorf("%w: the user %q lacks the CREATEDB privilege on this server (%s), so it cannot create the scratch database of a test restore; grant it (ALTER ROLE … CREATEDB) or have the job name a verification target where the user has it",
			engines.ErrPrivilege, c.Username, pgErr.Message)
	}
	return serverError(err)
}

// LoadScratch restores a dump into the scratch database name (Restore:
// one transaction, psql's error with its line on failure).
func (e Engine) LoadScratch(ctx context.Context, c engines.Conn, name string, r io.Reader) error {
	c.Database = name
	return e.Restore(ctx, c, r)
}

// DropScratch drops the scratch database name, closing its sessions first
// (WITH (FORCE), PostgreSQL 13 and later).
func (Engine) DropScratch(ctx context.Context, c engines.Conn, name string) error {
	conn, err := connect(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return serverError(err)
	}
	q := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize()
	if num >= 130000 {
		q += " WITH (FORCE)"
	}
	_, err = conn.Exec(ctx, q)
	return serverError(err)
}

// connect opens one connection to c.
func connect(ctx context.Context, c engines.Conn) (*pgx.Conn, error) {
	cfg, err := config(c)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	return conn, serverError(err)
}
