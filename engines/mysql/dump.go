package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/rahatback/rahatback/engines"
)

// completeMarker starts the last line of every complete mariadb-dump or
// mysqldump output.
const completeMarker = "-- Dump completed"

// dumpArgs are the options of every dump: one consistent InnoDB snapshot
// (--single-transaction, no table locks), routines, triggers and events,
// binary columns in hex, utf8mb4, no tablespace statements (they need
// the PROCESS privilege), and no CREATE DATABASE or USE (the database is
// not named with --databases), so that a dump restores into a database of
// any name.
var dumpArgs = []string{"--single-transaction", "--skip-lock-tables", "--routines", "--triggers", "--events",
	"--hex-blob", "--default-character-set=utf8mb4", "--no-tablespaces", "--quick", "--extended-insert"}

// Dump runs mariadb-dump (or mysqldump) on c's database into w, counting
// the rows of each table from the stream, and checks the dump ends with
// the tool's "-- Dump completed" trailer. The password reaches the tool
// through a 0600 option file. On failure the error is the tool's own
// message.
func (e Engine) Dump(ctx context.Context, c engines.Conn, w io.Writer) (engines.DumpInfo, error) {
	path, err := e.tool("mariadb-dump", "mysqldump")
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
	if err := e.checkEventsDumpable(ctx, c); err != nil {
		return engines.DumpInfo{}, err
	}
	opts, cleanup, err := e.optionFile(c, "")
	if err != nil {
		return engines.DumpInfo{}, err
	}
	defer cleanup()
	args := append([]string{"--defaults-file=" + opts}, dumpArgs...)
	cmd := exec.CommandContext(ctx, path, append(args, "--", c.Database)...)
	in := e.Inspector()
	if err := engines.RunDump(ctx, cmd, "mariadb-dump", io.MultiWriter(w, in)); err != nil {
		return engines.DumpInfo{}, err
	}
	got, _ := in.Inspection()
	if !got.Complete {
		return engines.DumpInfo{}, errors.New("mariadb-dump: the dump ended without its \"-- Dump completed\" trailer; it is incomplete")
	}
	_, version, _ := strings.Cut(server, " ")
	return engines.DumpInfo{ServerVersion: version, ToolVersion: tool, Format: e.Spec().Format, Tables: got.Tables,
		Objects: got.Objects}, nil
}

// checkEventsDumpable refuses, with the reason, a database whose name
// holds a character that SQL string escaping changes (quotes, backslash,
// NUL, line breaks, Ctrl-Z) and that has events: mariadb-dump 10.11 selects
// such a database by its escaped name when it dumps events, and fails with
// a misleading "Unknown database".
func (e Engine) checkEventsDumpable(ctx context.Context, c engines.Conn) error {
	if !strings.ContainsAny(c.Database, "'\"\\\x00\n\r\x1a") {
		return nil
	}
	db, err := open(c, c.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()").Scan(&n); err != nil {
		return serverError(err)
	}
	if n > 0 {
		return fmt.Errorf("mariadb-dump cannot dump the events of a database whose name holds a quote, a backslash or a control character (%d events in %q); rename the database or move its events", n, c.Database)
	}
	return nil
}
