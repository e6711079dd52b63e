package mssql

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	mssqldb "github.com/microsoft/go-mssqldb"

	"github.com/rahatback/rahatback/blobendpoint"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/pipeline"
)

// Options say how SQL Server's backups reach the agent. With Hub set,
// backups go TO URL, to a container of the agent's blob endpoint; else,
// with DiskDir set, TO DISK in a directory beside the agent. With neither,
// only Test works.
type Options struct {
	// Endpoint is the base URL at which SQL Server reaches Hub, such as
	// https://agent.example.com:8443: its host name must match Hub's
	// certificate, which SQL Server's host must trust.
	Endpoint string
	// Hub serves the endpoint's containers.
	Hub *blobendpoint.Hub
	// Window bounds what a restore FROM URL keeps of the stream (the
	// package's defaults when zero).
	Window blobendpoint.WindowOptions
	// DiskDir is a directory the server writes and reads backups in and
	// the agent reads and writes too (the server and the agent on one
	// host, or a shared mount). A backup or restore there takes the
	// backup's size in free space for the time of the operation.
	DiskDir string
	// Logger receives what cannot be cleaned up; nil discards.
	Logger *slog.Logger
	// Connector opens a database/sql connector for c; nil is
	// go-mssqldb's, configured as config says (tests use a simulated
	// server, package mssqlsim).
	Connector func(c engines.Conn) (driver.Connector, error)
}

// Engine is the SQL Server engine. Its zero value only tests connections;
// New gives it a way to receive backups.
type Engine struct {
	o Options
}

// New is the engine with o.
func New(o Options) *Engine { return &Engine{o: o} }

var _ engines.Engine = (*Engine)(nil)
var _ engines.ServerVerifier = (*Engine)(nil)

func (e *Engine) log() *slog.Logger {
	if e.o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.o.Logger
}

// Spec is SQL Server's Spec.
func (e *Engine) Spec() engines.Spec {
	s, _ := engines.Lookup(engines.MSSQL)
	return s
}

// open is a handle on c's server (the caller closes it).
func (e *Engine) open(c engines.Conn) (*sql.DB, error) {
	if e.o.Connector != nil {
		conn, err := e.o.Connector(c)
		if err != nil {
			return nil, err
		}
		return sql.OpenDB(conn), nil
	}
	cfg, err := config(c)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(mssqldb.NewConnectorConfig(cfg)), nil
}

// connect opens c's server and reads its facts; the caller closes the
// handle, which is nil on error.
func (e *Engine) connect(ctx context.Context, c engines.Conn) (*sql.DB, ServerFacts, error) {
	db, err := e.open(c)
	if err != nil {
		return nil, ServerFacts{}, err
	}
	f, err := e.facts(ctx, db)
	if err != nil {
		db.Close()
		return nil, ServerFacts{}, err
	}
	return db, f, nil
}

func (e *Engine) facts(ctx context.Context, db *sql.DB) (ServerFacts, error) {
	var f ServerFacts
	if err := db.QueryRowContext(ctx, ServerInfo).Scan(&f.Version, &f.Edition, &f.EngineEdition); err != nil {
		return ServerFacts{}, err
	}
	f.Version, _, _ = strings.Cut(f.Version, "\n")
	f.Version = strings.TrimSpace(f.Version)
	return f, nil
}

// Test connects to c and returns the server's version and edition.
func (e *Engine) Test(ctx context.Context, c engines.Conn) (string, error) {
	db, f, err := e.connect(ctx, c)
	if err != nil {
		return "", err
	}
	defer db.Close()
	return f.Version + " (" + f.Edition + ")", nil
}

// Size is the bytes of c's used pages, about what an uncompressed backup
// holds.
func (e *Engine) Size(ctx context.Context, c engines.Conn) (int64, error) {
	db, err := e.open(c)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	q, err := DatabaseSize(c.Database)
	if err != nil {
		return 0, err
	}
	var n int64
	return n, db.QueryRowContext(ctx, q).Scan(&n)
}

// Dump has the server take a native full backup of c, COPY_ONLY (the
// customer's own differential base is untouched) WITH CHECKSUM, compressed
// by the server where the edition allows it and the dump does not go to a
// chunk store, and writes it to w: TO URL as the blocks arrive, or TO
// DISK and then copied. The tables are sys.partitions' row counts read
// right after the backup: a database written to meanwhile may differ from
// the backup by those writes.
func (e *Engine) Dump(ctx context.Context, c engines.Conn, w io.Writer) (engines.DumpInfo, error) {
	db, f, err := e.connect(ctx, c)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	defer db.Close()
	// Row counts before and after: a table written to in between is left
	// out of the manifest rather than recorded with a count the backup may
	// not hold.
	before, err := e.rowCounts(ctx, db, c.Database)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	dev, result, err := e.backupDevice(ctx, db, w)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	defer dev.stop()
	o := BackupOptions{Compression: CompressionAllowed(f.EngineEdition, f.Edition) && !c.ForChunks}
	var stmt string
	if dev.kind == DeviceURL {
		stmt, err = BackupToURL(c.Database, dev.target, o)
	} else {
		stmt, err = BackupToDisk(c.Database, dev.target, o)
	}
	if err != nil {
		return engines.DumpInfo{}, err
	}
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		if r := result(); dev.kind == DeviceURL && r != nil && !strings.Contains(r.Error(), "never committed") {
			return engines.DumpInfo{}, fmt.Errorf("mssql: BACKUP DATABASE failed: %w (the endpoint: %v)", err, r)
		}
		return engines.DumpInfo{}, fmt.Errorf("mssql: BACKUP DATABASE failed: %w", err)
	}
	if err := result(); err != nil {
		return engines.DumpInfo{}, err
	}
	after, err := e.rowCounts(ctx, db, c.Database)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	tables, changed := steady(before, after)
	tool := "BACKUP DATABASE WITH COPY_ONLY, CHECKSUM TO " + dev.kind
	if o.Compression {
		tool += ", COMPRESSION"
	}
	info := engines.DumpInfo{ServerVersion: f.Version, ToolVersion: tool, Format: e.Spec().Format, Tables: tables}
	if len(changed) > 0 {
		info.Consistency = fmt.Sprintf("row counts from sys.partitions; %d tables changed during the backup and are not recorded: %s",
			len(changed), strings.Join(changed[:min(len(changed), 10)], ", "))
	}
	return info, nil
}

// steady is the tables whose rows were the same before and after the
// backup, and the names of the others.
func steady(before, after []pipeline.TableCount) ([]pipeline.TableCount, []string) {
	was := map[[2]string]int64{}
	for _, t := range before {
		was[[2]string{t.Schema, t.Name}] = t.Rows
	}
	var keep []pipeline.TableCount
	var changed []string
	for _, t := range after {
		if n, ok := was[[2]string{t.Schema, t.Name}]; ok && n == t.Rows {
			keep = append(keep, t)
		} else {
			changed = append(changed, t.Schema+"."+t.Name)
		}
	}
	return keep, changed
}

func (e *Engine) rowCounts(ctx context.Context, db *sql.DB, database string) ([]pipeline.TableCount, error) {
	q, err := RowCounts(database)
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("mssql: row counts: %w", err)
	}
	defer rows.Close()
	var out []pipeline.TableCount
	for rows.Next() {
		var t pipeline.TableCount
		if err := rows.Scan(&t.Schema, &t.Name, &t.Rows); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// sizeOf is the length r says it has.
func sizeOf(r io.Reader) (int64, error) {
	s, ok := r.(engines.Sized)
	if !ok || s.Size() <= 0 {
		return 0, errors.New("mssql: the backup's size is unknown (SQL Server reads a backup by range and needs its length)")
	}
	return s.Size(), nil
}

// Restore restores the backup read from r (a Sized reader) into a new
// database beside c's, then swaps it in by renaming: a backup that does
// not restore leaves c's database as it was. The restored files are named
// after the new database, in the server's default data and log paths.
func (e *Engine) Restore(ctx context.Context, c engines.Conn, r io.Reader) error {
	size, err := sizeOf(r)
	if err != nil {
		return err
	}
	target := c.Database
	c.Database = "master"
	db, err := e.open(c)
	if err != nil {
		return err
	}
	defer db.Close()
	tmp, err := sideName(target, "_rahatback_new_")
	if err != nil {
		return err
	}
	// The new copy's files go beside the target's, when it exists.
	var place placement
	if err := e.targetDirs(ctx, db, target, &place); err != nil {
		return err
	}
	if err := e.restoreInto(ctx, db, tmp, r, size, place); err != nil {
		e.drop(ctx, db, tmp)
		return err
	}
	// From here on the swap runs to its end, or back, whatever ctx does.
	ctx = context.WithoutCancel(ctx)
	var exists int
	if err := db.QueryRowContext(ctx, DatabaseExists, target).Scan(&exists); err != nil {
		e.drop(ctx, db, tmp)
		return err
	}
	if exists == 0 {
		if err := e.rename(ctx, db, tmp, target); err != nil {
			e.drop(ctx, db, tmp)
			return err
		}
		return nil
	}
	old, err := sideName(target, "_rahatback_old_")
	if err != nil {
		e.drop(ctx, db, tmp)
		return err
	}
	if err := e.rename(ctx, db, target, old); err != nil {
		e.drop(ctx, db, tmp)
		return fmt.Errorf("%w; the database was left as it was", err)
	}
	if err := e.rename(ctx, db, tmp, target); err != nil {
		if uerr := e.rename(ctx, db, old, target); uerr != nil {
			return fmt.Errorf("%w; the old database could not be renamed back and is now called %s; the restored one is %s", err, old, tmp)
		}
		e.drop(ctx, db, tmp)
		return fmt.Errorf("%w; the database was left as it was", err)
	}
	if err := e.drop(ctx, db, old); err != nil {
		e.log().Warn("restored, but the previous database could not be dropped", "database", old, "err", err)
	}
	return nil
}

// placement is where a restore puts files: empty fields mean the server's
// default data and log paths.
type placement struct{ data, log string }

// targetDirs sets p to the directories of database's first data and log
// files, when it exists.
func (e *Engine) targetDirs(ctx context.Context, db *sql.DB, database string, p *placement) error {
	rows, err := db.QueryContext(ctx, TargetFiles, database)
	if err != nil {
		return fmt.Errorf("mssql: the target's files: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ int
		var path string
		if err := rows.Scan(&typ, &path); err != nil {
			return err
		}
		switch {
		case typ == 0 && p.data == "":
			p.data = dirOf(path)
		case typ == 1 && p.log == "":
			p.log = dirOf(path)
		}
	}
	return rows.Err()
}

// dirOf is the directory of a server path, with its separator ("\" on
// Windows, "/" on Linux).
func dirOf(path string) string {
	return path[:strings.LastIndexAny(path, `\/`)+1]
}

// sideName is name with mark and a random suffix, within SQL Server's 128
// characters.
func sideName(name, mark string) (string, error) {
	suffix, err := randomName(mark)
	if err != nil {
		return "", err
	}
	suffix = suffix[:len(mark)+8]
	for utf8.RuneCountInString(name)+len(suffix) > maxName {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name + suffix, nil
}

func (e *Engine) rename(ctx context.Context, db *sql.DB, from, to string) error {
	q, err := RenameDatabase(from, to)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("mssql: renaming %s to %s: %w", from, to, err)
	}
	return nil
}

func (e *Engine) drop(ctx context.Context, db *sql.DB, name string) error {
	q, err := DropDatabase(name)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	_, err = db.ExecContext(dctx, q)
	return err
}

// restoreInto restores the backup read from r as the new database name,
// its files moved beside the server's default paths, then reads what the
// server left of r so that r's checksum is checked.
func (e *Engine) restoreInto(ctx context.Context, db *sql.DB, name string, r io.Reader, size int64, place placement) error {
	dev, err := e.restoreDevice(ctx, db, r, size)
	if err != nil {
		return err
	}
	defer dev.stop()
	files, err := e.fileList(ctx, db, dev)
	if err != nil {
		return e.streamErr(dev, err)
	}
	var dataPath, logPath string
	if err := db.QueryRowContext(ctx, DataPaths).Scan(&dataPath, &logPath); err != nil {
		return err
	}
	if place.data != "" {
		dataPath = place.data
	}
	if place.log != "" {
		logPath = place.log
	}
	q, err := RestoreFrom(name, dev.kind, dev.target, RestoreOptions{Moves: moves(name, files, dataPath, logPath)})
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, q); err != nil {
		return e.streamErr(dev, fmt.Errorf("mssql: RESTORE DATABASE failed: %w", err))
	}
	return dev.finish()
}

// streamErr prefers the stream's own error, when it has one already (a
// checksum mismatch, storage gone), to the server's report of it.
func (e *Engine) streamErr(dev *device, err error) error {
	if dev.err != nil {
		if serr := dev.err(); serr != nil {
			return fmt.Errorf("%w (SQL Server: %v)", serr, err)
		}
	}
	return err
}

// backupFile is one row of RESTORE FILELISTONLY.
type backupFile struct {
	Logical, Physical, Type string
	FileID                  int64
}

func (e *Engine) fileList(ctx context.Context, db *sql.DB, dev *device) ([]backupFile, error) {
	q, err := RestoreCheckFrom("FILELISTONLY", dev.kind, dev.target)
	if err != nil {
		return nil, err
	}
	rows, err := queryMaps(ctx, db, q)
	if err != nil {
		return nil, fmt.Errorf("mssql: RESTORE FILELISTONLY failed: %w", err)
	}
	var out []backupFile
	for _, r := range rows {
		out = append(out, backupFile{Logical: str(r["LogicalName"]), Physical: str(r["PhysicalName"]),
			Type: str(r["Type"]), FileID: num(r["FileId"])})
	}
	if len(out) == 0 {
		return nil, errors.New("mssql: RESTORE FILELISTONLY lists no files")
	}
	return out, nil
}

// moves places every file of a backup restored as name: data files in
// dataPath, the log (type L) in logPath, as <name>_<logical><ext>.
func moves(name string, files []backupFile, dataPath, logPath string) []Move {
	var out []Move
	for _, f := range files {
		dir, ext := dataPath, ".ndf"
		switch {
		case f.Type == "L":
			dir, ext = logPath, ".ldf"
		case f.FileID == 1:
			ext = ".mdf"
		case f.Type == "S" || f.Type == "F":
			ext = "" // a FILESTREAM or full-text directory
		}
		out = append(out, Move{Logical: f.Logical, Physical: dir + fileSafe(name+"_"+f.Logical) + ext})
	}
	return out
}

// fileSafe is s with what a file name on Windows or Linux cannot hold
// replaced by "_".
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 32 || strings.ContainsRune(`\/:*?"<>|`, r) {
			return '_'
		}
		return r
	}, s)
}

// queryMaps runs q and returns its rows as column name → value (the
// result sets of RESTORE HEADERONLY and FILELISTONLY grow columns with
// each SQL Server version).
func queryMaps(ctx context.Context, db *sql.DB, q string) ([]map[string]any, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := map[string]any{}
		for i, c := range cols {
			m[c] = vals[i]
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func num(v any) int64 {
	switch v := v.(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int16:
		return int64(v)
	case uint8:
		return int64(v)
	case float64:
		return int64(v)
	case []byte:
		var n int64
		fmt.Sscan(string(v), &n)
		return n
	case string:
		var n int64
		fmt.Sscan(v, &n)
		return n
	}
	return 0
}

func flag(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	default:
		return num(v) != 0
	}
}

// CreateScratch checks that a FULL verification can restore into name on
// c's server: the name is free and the login may create databases (the
// restore itself creates it).
func (e *Engine) CreateScratch(ctx context.Context, c engines.Conn, name string) error {
	c.Database = "master"
	db, err := e.open(c)
	if err != nil {
		return err
	}
	defer db.Close()
	var can, exists int
	if err := db.QueryRowContext(ctx, CanCreateDatabase).Scan(&can); err != nil {
		return err
	}
	if can == 0 {
		return fmt.Errorf("%w: the login %s may not create databases (CREATE ANY DATABASE, or the dbcreator role)", engines.ErrPrivilege, c.Username)
	}
	if err := db.QueryRowContext(ctx, DatabaseExists, name).Scan(&exists); err != nil {
		return err
	}
	if exists != 0 {
		return fmt.Errorf("mssql: a database %s already exists", name)
	}
	return nil
}

// LoadScratch restores the backup read from r (a Sized reader) as name,
// then runs DBCC CHECKDB on it: an error says which failed.
func (e *Engine) LoadScratch(ctx context.Context, c engines.Conn, name string, r io.Reader) error {
	size, err := sizeOf(r)
	if err != nil {
		return err
	}
	c.Database = "master"
	db, err := e.open(c)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := e.restoreInto(ctx, db, name, r, size, placement{}); err != nil {
		return err
	}
	q, err := CheckDB(name)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("mssql: DBCC CHECKDB found errors in the restored database: %w", err)
	}
	return nil
}

// DropScratch drops name; nil when it does not exist.
func (e *Engine) DropScratch(ctx context.Context, c engines.Conn, name string) error {
	c.Database = "master"
	db, err := e.open(c)
	if err != nil {
		return err
	}
	defer db.Close()
	return e.drop(ctx, db, name)
}

// ReadBack reads c's database back: the server's version and every user
// table's rows from sys.partitions (no content hash: SQL Server computes
// none cheaply).
func (e *Engine) ReadBack(ctx context.Context, c engines.Conn) (engines.DumpInfo, error) {
	db, f, err := e.connect(ctx, c)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	defer db.Close()
	tables, err := e.rowCounts(ctx, db, c.Database)
	if err != nil {
		return engines.DumpInfo{}, err
	}
	return engines.DumpInfo{ServerVersion: f.Version, Format: e.Spec().Format, Tables: tables}, nil
}

// VerifyBackup has c's server read the backup from r (a Sized reader):
// RESTORE HEADERONLY (one full, copy-only backup set of c's database, with
// page checksums), FILELISTONLY, and VERIFYONLY WITH CHECKSUM, which reads
// every page. The stream is then read to its end, so that its checksum is
// checked too.
func (e *Engine) VerifyBackup(ctx context.Context, c engines.Conn, r io.Reader) ([]engines.Check, error) {
	size, err := sizeOf(r)
	if err != nil {
		return nil, err
	}
	database := c.Database
	c.Database = "master"
	db, err := e.open(c)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	dev, err := e.restoreDevice(ctx, db, r, size)
	if err != nil {
		return nil, err
	}
	defer dev.stop()
	var checks []engines.Check
	add := func(name string, ok bool, format string, args ...any) {
		checks = append(checks, engines.Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}

	q, err := RestoreCheckFrom("HEADERONLY", dev.kind, dev.target)
	if err != nil {
		return nil, err
	}
	sets, err := queryMaps(ctx, db, q)
	switch {
	case err != nil:
		add("backup header", false, "RESTORE HEADERONLY failed: %v", e.streamErr(dev, err))
		return checks, nil
	case len(sets) != 1:
		add("backup header", false, "the media holds %d backup sets, one expected", len(sets))
	default:
		h := sets[0]
		name, typ := str(h["DatabaseName"]), num(h["BackupType"])
		ok := name == database && typ == 1 && flag(h["IsCopyOnly"]) && flag(h["HasBackupChecksums"])
		add("backup header", ok, "backup set of %s (type %d: 1 is a database backup; copy-only %v; page checksums %v), %d bytes, from %s, finished %s",
			name, typ, flag(h["IsCopyOnly"]), flag(h["HasBackupChecksums"]), num(h["BackupSize"]), str(h["ServerName"]), str(h["BackupFinishDate"]))
	}
	if files, err := e.fileList(ctx, db, dev); err != nil {
		add("file list", false, "%v", e.streamErr(dev, err))
		return checks, nil
	} else {
		var names []string
		for _, f := range files {
			names = append(names, f.Logical+" ("+f.Type+")")
		}
		add("file list", true, "%d files: %s", len(files), strings.Join(names, ", "))
	}
	if q, err = RestoreCheckFrom("VERIFYONLY", dev.kind, dev.target); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, q); err != nil {
		add("server verification", false, "RESTORE VERIFYONLY WITH CHECKSUM failed: %v", e.streamErr(dev, err))
		return checks, nil
	}
	if err := dev.finish(); err != nil {
		add("server verification", false, "the server verified the backup, but the stream failed after it: %v", err)
		return checks, nil
	}
	add("server verification", true, "RESTORE VERIFYONLY WITH CHECKSUM: the backup set is complete and every page checksum matches")
	return checks, nil
}

// mediaMagic starts every Microsoft Tape Format media, which is what a
// native backup is: its TAPE descriptor block.
var mediaMagic = []byte("TAPE")

// Inspector reads a native backup's first bytes: Complete means it starts
// with an MTF media header. What it holds only the server can tell
// (VerifyBackup); Tables stays empty.
func (e *Engine) Inspector() engines.Inspector { return &inspector{} }

type inspector struct {
	head []byte
	n    int64
}

func (i *inspector) Write(p []byte) (int, error) {
	if len(i.head) < len(mediaMagic) {
		i.head = append(i.head, p[:min(len(p), len(mediaMagic)-len(i.head))]...)
	}
	i.n += int64(len(p))
	return len(p), nil
}

func (i *inspector) Inspection() (engines.Inspection, error) {
	if i.n == 0 {
		return engines.Inspection{}, errors.New("mssql: the backup is empty")
	}
	if !bytes.Equal(i.head, mediaMagic) {
		return engines.Inspection{}, fmt.Errorf("mssql: not a SQL Server backup: it starts with %q, not an MTF media header", i.head)
	}
	return engines.Inspection{Complete: true}, nil
}
