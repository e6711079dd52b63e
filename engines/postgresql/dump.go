package postgresql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/engines"
)

// The dumps this engine makes are plain SQL (pg_dump -Fp). It restores
// with nothing but psql (`zstd -d < f | psql`), every COPY row is one line
// so the engine counts rows per table from the stream itself for the
// manifest (CopyCounter), and psql applies it all or nothing in one
// transaction (Restore). (The custom format's selective and parallel restore need a
// seekable file, which a streamed backup is not.)

// completeMarker is the last comment of every complete pg_dump plain dump.
const completeMarker = "-- PostgreSQL database dump complete"

// Spec is the PostgreSQL engine's engines.Spec.
func (Engine) Spec() engines.Spec {
	s, _ := engines.Lookup(engines.PostgreSQL)
	return s
}

// Size returns pg_database_size of the database, the estimate behind the
// progress percentage (a dump is usually somewhat smaller).
func (Engine) Size(ctx context.Context, c engines.Conn) (int64, error) {
	cfg, err := config(c)
	if err != nil {
		return 0, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, serverError(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&n)
	return n, serverError(err)
}

// Dump runs pg_dump --format=plain --clean --if-exists --no-owner
// --no-privileges into w, counting the rows of each table's COPY block,
// and checks the dump ends with pg_dump's completion marker. --clean lets a restore replace the objects of an
// existing database inside its one transaction; ownership and grants are
// left out so that any role allowed to create the objects can restore them.
// The password reaches pg_dump through a 0600 passfile. On failure the error
// is pg_dump's own message.
func (e Engine) Dump(ctx context.Context, c engines.Conn, w io.Writer) (engines.DumpInfo, error) {
	path, err := toolPath("pg_dump")
	if err != nil {
		return engines.DumpInfo{}, err
	}
	tool, err := toolVersion(ctx, path)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	server, err := e.Test(ctx, c)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	env, cleanup, err := e.toolEnv(c)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	defer cleanup()
	cmd := exec.CommandContext(ctx, path, "--format=plain", "--clean", "--if-exists", "--no-owner",
		"--no-privileges", "--no-password", "--encoding=UTF8")
	cmd.Env = env
	in := e.Inspector()
	if err := engines.RunDump(ctx, cmd, "pg_dump", io.MultiWriter(w, in)); err != nil {
		return engines.DumpInfo{}, err
	}
	got, _ := in.Inspection()
	if !got.Complete {
		return engines.DumpInfo{}, errors.New("pg_dump: the dump ended without its completion marker; it is incomplete")
	}
	return engines.DumpInfo{ServerVersion: strings.TrimPrefix(server, "PostgreSQL "), ToolVersion: tool,
		Format: e.Spec().Format, Tables: got.Tables, Objects: got.Objects}, nil
}

// Restore pipes r into psql -v ON_ERROR_STOP=1, inside a transaction the
// input itself opens ("BEGIN;" before the dump) and commits ("COMMIT;"
// after it), so that only a dump read to its end is committed. psql's own
// --single-transaction commits when its input ends, however it ends: an
// agent killed mid-restore would close psql's input and have a partial
// restore committed. Here the server rolls back when psql leaves without
// the COMMIT: when r fails (checksum mismatch, corrupt stream) psql is
// killed before it reads one, when a statement fails psql stops, and when
// the agent dies psql's input ends before it. Either way the target is
// left as it was.
func (e Engine) Restore(ctx context.Context, c engines.Conn, r io.Reader) error {
	path, err := toolPath("psql")
	if err != nil {
		return err
	}
	env, cleanup, err := e.toolEnv(c)
	if err != nil {
		return err
	}
	defer cleanup()
	// "BEGIN; " shares the dump's first line, so psql's line numbers are
	// the dump's.
	in := io.MultiReader(strings.NewReader("BEGIN; "), r, strings.NewReader("\nCOMMIT;\n"))
	err = engines.Feed(ctx, in, "psql", path, []string{"--no-psqlrc", "--quiet", "--no-password",
		"--set=ON_ERROR_STOP=1", "--output=/dev/null", "--file=-"}, env)
	var toolErr *engines.ToolError
	if errors.As(err, &toolErr) {
		return fmt.Errorf("%w (nothing was restored: the transaction was rolled back)", err)
	}
	return err
}
