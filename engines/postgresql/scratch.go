package postgresql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/pipeline"
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

// ReadBack reads c's schema objects from pg_dump --schema-only (the
// object headers a backup records) and the rows of every table that
// holds rows itself (count(*) of ONLY that table: a partitioned table's
// rows are its partitions'). It computes no content hash: reading every
// row again would cost about as much as a dump, and the rows restored are
// those of the dump whose hashes verification has just compared.
func (e Engine) ReadBack(ctx context.Context, c engines.Conn) (engines.DumpInfo, error) {
	path, err := toolPath("pg_dump")
	if err != nil {
		return engines.DumpInfo{}, err
	}
	env, cleanup, err := e.toolEnv(c)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	defer cleanup()
	cmd := exec.CommandContext(ctx, path, "--format=plain", "--schema-only", "--clean", "--if-exists", "--no-owner",
		"--no-privileges", "--no-password", "--encoding=UTF8")
	cmd.Env = env
	rows := NewCopyCounter()
	if err := engines.RunDump(ctx, cmd, "pg_dump", rows); err != nil {
		return engines.DumpInfo{}, err
	}
	info := engines.DumpInfo{Format: e.Spec().Format, Objects: rows.Objects()}
	conn, err := connect(ctx, c)
	if err != nil {
		return info, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version')").Scan(&info.ServerVersion); err != nil {
		return info, serverError(err)
	}
	list, err := conn.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
		AND n.nspname NOT LIKE 'pg\_temp\_%' ORDER BY 1, 2`)
	if err != nil {
		return info, serverError(err)
	}
	tables, err := pgx.CollectRows(list, func(r pgx.CollectableRow) (pipeline.TableCount, error) {
		var t pipeline.TableCount
		return t, r.Scan(&t.Schema, &t.Name)
	})
	if err != nil {
		return info, serverError(err)
	}
	for i, t := range tables {
		q := "SELECT count(*) FROM ONLY " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
		if err := conn.QueryRow(ctx, q).Scan(&tables[i].Rows); err != nil {
			return info, serverError(err)
		}
	}
	info.Tables = tables
	return info, nil
}
