package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rahatback/rahatback/engines"
)

// ScratchPrefix starts the name of the scratch databases a restore makes
// and always drops: rahatback_restore_<random> and rahatback_undo_<random>.
const ScratchPrefix = "rahatback_"

// Restore applies a dump read from r to c's database without touching it
// until the dump has applied completely:
//
//  1. the dump is applied by the mariadb (or mysql) client, in
//     --binary-mode (no client commands but DELIMITER), to a new scratch
//     database on the same server. When r fails (a checksum mismatch found
//     at its end) or a statement fails, the scratch database is dropped and
//     the target is as it was.
//  2. the result is swapped in: the target's tables that the backup also
//     holds move to an undo database and the scratch tables move into the
//     target, in one RENAME TABLE; then the backup's views, triggers,
//     routines and events are created in the target, replacing those of the
//     same names. When a step fails, the steps done are undone and the
//     target is as it was; the error says so, or says where the previous
//     tables are when even the undo failed.
//
// Objects of the target that the backup does not hold (tables, views,
// routines, events, and the triggers of such tables) are left as they are.
// The target database must exist; c's user needs the privileges to create
// and drop databases.
func (e Engine) Restore(ctx context.Context, c engines.Conn, r io.Reader) error {
	db, err := open(c, "")
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return serverError(err)
	}
	defer conn.Close()
	var charset, collation string
	err = conn.QueryRowContext(ctx, `SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA
		WHERE SCHEMA_NAME = ?`, c.Database).Scan(&charset, &collation)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("Unknown database '%s'", c.Database)
	} else if err != nil {
		return serverError(err)
	}
	suffix := randomSuffix()
	scratch := ScratchPrefix + "restore_" + suffix
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(scratch)+" CHARACTER SET "+charset+" COLLATE "+collation); err != nil {
		return fmt.Errorf("creating the scratch database: %w", serverError(err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_, _ = conn.ExecContext(dctx, "DROP DATABASE IF EXISTS "+quoteIdent(scratch))
	}()
	if err := e.apply(ctx, c, scratch, r); err != nil {
		return fmt.Errorf("%w (nothing was restored: the target was not touched)", err)
	}
	s := &swap{conn: conn, scratch: scratch, target: c.Database, undo: ScratchPrefix + "undo_" + suffix}
	return s.run(context.WithoutCancel(ctx))
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// apply pipes r into the client tool connected to database. The tool is
// killed before it reads the end of r when r fails.
func (e Engine) apply(ctx context.Context, c engines.Conn, database string, r io.Reader) error {
	path, err := e.tool("mariadb", "mysql")
	if err != nil {
		return err
	}
	opts, cleanup, err := e.optionFile(c, database)
	if err != nil {
		return err
	}
	defer cleanup()
	return engines.Feed(ctx, r, "mariadb", path, []string{"--defaults-file=" + opts, "--binary-mode", "--batch", "--silent"}, nil)
}

// object is a view, trigger, routine or event with its definition.
type object struct {
	kind  string // VIEW, TRIGGER, PROCEDURE, FUNCTION, EVENT
	name  string
	table string // a trigger's table
	def   string
	// sqlMode is the sql_mode it was created under (not for views): its
	// body is parsed again under it.
	sqlMode *string
}

// swap moves a restored scratch database's content into the target.
type swap struct {
	conn                   *sql.Conn
	scratch, target, undo  string
	moveOut, moveIn        []string // base tables
	oldObjs, newObjs       []object // the target's replaced ones, the backup's
	oldTriggers            []object // of the tables moved out
	createdUndo, renamed   bool
	created, droppedOldObj []object
	// fold is how the server compares table names: as they are
	// (lower_case_table_names=0) or lowercased.
	fold func(string) string
}

func (s *swap) exec(ctx context.Context, q string) error {
	_, err := s.conn.ExecContext(ctx, q)
	return serverError(err)
}

// swapTimeout bounds a swap; lockWait bounds each of its waits for a
// table lock (an idle transaction holding one would otherwise stall it
// for the server's default of a day).
const (
	swapTimeout = 10 * time.Minute
	lockWait    = 60
)

// run swaps, or undoes what it did when a step fails. One restore into a
// database runs at a time (a named lock).
func (s *swap) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, swapTimeout)
	defer cancel()
	var got sql.NullInt64
	lock := "rahatback:restore:" + s.target
	if err := s.conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", lock).Scan(&got); err != nil {
		return serverError(err)
	}
	if got.Int64 != 1 {
		return fmt.Errorf("another restore into database %s is running; try again when it has finished (nothing was restored)", s.target)
	}
	defer s.conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK(?)", lock)
	var lower int
	if err := s.conn.QueryRowContext(ctx, "SELECT @@lower_case_table_names").Scan(&lower); err != nil {
		return serverError(err)
	}
	s.fold = func(n string) string { return n }
	if lower != 0 {
		s.fold = strings.ToLower
	}
	if err := s.exec(ctx, fmt.Sprintf("SET SESSION lock_wait_timeout = %d", lockWait)); err != nil {
		return err
	}
	err := s.forward(ctx)
	if err == nil {
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(s.undo)); err != nil {
			return fmt.Errorf("the restore succeeded, but the previous tables are left in database %s: %v", s.undo, err)
		}
		return nil
	}
	if errors.Is(err, errRefused) {
		return err
	}
	if uerr := s.back(ctx); uerr != nil {
		return fmt.Errorf("restore failed while swapping in the restored tables: %v; undoing it failed too (%v): the target may be partly changed, its previous tables are in database %s", err, uerr, s.undo)
	}
	return fmt.Errorf("restore failed while swapping in the restored tables: %v (the target was put back as it was)", err)
}

// errRefused marks a swap refused before it changed anything.
var errRefused = errors.New("nothing was restored")

func (s *swap) forward(ctx context.Context) error {
	if err := s.exec(ctx, "SET SESSION foreign_key_checks = 0"); err != nil {
		return err
	}
	scratchTables, scratchViews, err := s.tables(ctx, s.scratch)
	if err != nil {
		return err
	}
	targetTables, targetViews, err := s.tables(ctx, s.target)
	if err != nil {
		return err
	}
	if s.newObjs, err = s.objects(ctx, s.scratch, scratchViews); err != nil {
		return err
	}
	backup := map[string]bool{}
	for _, t := range append(append([]string{}, scratchTables...), scratchViews...) {
		backup[s.fold(t)] = true
	}
	s.moveIn = scratchTables
	for _, t := range targetTables {
		if backup[s.fold(t)] {
			s.moveOut = append(s.moveOut, t)
		}
	}
	var replacedViews []string
	for _, v := range targetViews {
		if backup[s.fold(v)] {
			replacedViews = append(replacedViews, v)
		}
	}
	if err := s.checkForeignKeys(ctx); err != nil {
		return err
	}
	// What of the target the backup replaces: views of the same names,
	// routines and events of the same names, and the triggers of the
	// tables moved out (a table with triggers cannot change database).
	targetObjs, err := s.objects(ctx, s.target, replacedViews)
	if err != nil {
		return err
	}
	moved := map[string]bool{}
	for _, t := range s.moveOut {
		moved[t] = true
	}
	// Routines and events are named case-insensitively; triggers as tables.
	key := func(o object) string {
		if o.kind == "TRIGGER" {
			return o.kind + "\x00" + s.fold(o.name)
		}
		return o.kind + "\x00" + strings.ToLower(o.name)
	}
	newNames := map[string]bool{}
	for _, o := range s.newObjs {
		newNames[key(o)] = true
	}
	for _, o := range targetObjs {
		switch {
		case o.kind == "TRIGGER" && moved[o.table]:
			s.oldTriggers = append(s.oldTriggers, o)
		case o.kind == "VIEW", newNames[key(o)]:
			s.oldObjs = append(s.oldObjs, o)
		}
	}
	// The scratch database's triggers go (they are recreated in the
	// target), then the target's on the tables that move out.
	for _, o := range s.newObjs {
		if o.kind == "TRIGGER" {
			if err := s.exec(ctx, "DROP TRIGGER "+quoteIdent(s.scratch)+"."+quoteIdent(o.name)); err != nil {
				return err
			}
		}
	}
	for _, o := range s.oldTriggers {
		if err := s.exec(ctx, "DROP TRIGGER "+quoteIdent(s.target)+"."+quoteIdent(o.name)); err != nil {
			return err
		}
		s.droppedOldObj = append(s.droppedOldObj, o)
	}
	for _, o := range s.oldObjs {
		if err := s.exec(ctx, "DROP "+o.kind+" "+quoteIdent(s.target)+"."+quoteIdent(o.name)); err != nil {
			return err
		}
		s.droppedOldObj = append(s.droppedOldObj, o)
	}
	if err := s.exec(ctx, "CREATE DATABASE "+quoteIdent(s.undo)); err != nil {
		return err
	}
	s.createdUndo = true
	var renames []string
	for _, t := range s.moveOut {
		renames = append(renames, quoteIdent(s.target)+"."+quoteIdent(t)+" TO "+quoteIdent(s.undo)+"."+quoteIdent(t))
	}
	for _, t := range s.moveIn {
		renames = append(renames, quoteIdent(s.scratch)+"."+quoteIdent(t)+" TO "+quoteIdent(s.target)+"."+quoteIdent(t))
	}
	if len(renames) > 0 {
		if err := s.exec(ctx, "RENAME TABLE "+strings.Join(renames, ", ")); err != nil {
			return err
		}
	}
	s.renamed = true
	if err := s.exec(ctx, "USE "+quoteIdent(s.target)); err != nil {
		return err
	}
	return s.create(ctx, s.newObjs, &s.created)
}

// checkForeignKeys refuses, before anything changes, a swap that would
// move out a table that a table the backup does not replace references:
// its foreign key would follow the old table into the undo database.
func (s *swap) checkForeignKeys(ctx context.Context) error {
	moving := map[string]bool{}
	for _, t := range s.moveOut {
		moving[t] = true
	}
	rows, err := s.conn.QueryContext(ctx, `SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME
		FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND UNIQUE_CONSTRAINT_SCHEMA = ?`, s.target, s.target)
	if err != nil {
		return serverError(err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, constraint, referenced string
		if err := rows.Scan(&table, &constraint, &referenced); err != nil {
			return err
		}
		if moving[referenced] && !moving[table] {
			return fmt.Errorf("table %s, which the backup does not hold, references table %s, which the restore replaces (foreign key %s); drop or move that table first (%w)",
				table, referenced, constraint, errRefused)
		}
	}
	return serverError(rows.Err())
}

// create creates objs in the current database, views in an order their
// dependencies allow, recording each in done.
func (s *swap) create(ctx context.Context, objs []object, done *[]object) error {
	pending := objs
	for len(pending) > 0 {
		var failed []object
		var lastErr error
		for _, o := range pending {
			if err := s.createOne(ctx, o); err != nil {
				if o.kind != "VIEW" {
					return fmt.Errorf("creating %s %s: %w", strings.ToLower(o.kind), o.name, err)
				}
				failed, lastErr = append(failed, o), err
				continue
			}
			*done = append(*done, o)
		}
		if len(failed) == len(pending) {
			return fmt.Errorf("creating view %s: %w", failed[0].name, lastErr)
		}
		pending = failed
	}
	return nil
}

// createOne runs o's definition under the sql_mode it was created under,
// then puts the session's back.
func (s *swap) createOne(ctx context.Context, o object) error {
	if o.sqlMode == nil {
		return s.exec(ctx, o.def)
	}
	var saved string
	if err := s.conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&saved); err != nil {
		return serverError(err)
	}
	if _, err := s.conn.ExecContext(ctx, "SET SESSION sql_mode = ?", *o.sqlMode); err != nil {
		return serverError(err)
	}
	err := s.exec(ctx, o.def)
	if _, rerr := s.conn.ExecContext(ctx, "SET SESSION sql_mode = ?", saved); rerr != nil && err == nil {
		err = serverError(rerr)
	}
	return err
}

// back undoes forward's steps that were done, in reverse.
func (s *swap) back(ctx context.Context) error {
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(s.created) - 1; i >= 0; i-- {
		o := s.created[i]
		keep(s.exec(ctx, "DROP "+o.kind+" IF EXISTS "+quoteIdent(s.target)+"."+quoteIdent(o.name)))
	}
	if s.renamed {
		var renames []string
		for _, t := range s.moveIn {
			renames = append(renames, quoteIdent(s.target)+"."+quoteIdent(t)+" TO "+quoteIdent(s.scratch)+"."+quoteIdent(t))
		}
		for _, t := range s.moveOut {
			renames = append(renames, quoteIdent(s.undo)+"."+quoteIdent(t)+" TO "+quoteIdent(s.target)+"."+quoteIdent(t))
		}
		if len(renames) > 0 {
			keep(s.exec(ctx, "RENAME TABLE "+strings.Join(renames, ", ")))
		}
	}
	if len(errs) > 0 {
		// The previous tables are still in the undo database: their
		// triggers and views must not land on the restored ones.
		return errors.Join(errs...)
	}
	if s.createdUndo {
		keep(s.exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(s.undo)))
	}
	if len(s.droppedOldObj) > 0 {
		keep(s.exec(ctx, "USE "+quoteIdent(s.target)))
		var restored []object
		keep(s.create(ctx, s.droppedOldObj, &restored))
	}
	return errors.Join(errs...)
}

// tables lists database's base tables (and sequences) and views.
func (s *swap) tables(ctx context.Context, database string) (tables, views []string, err error) {
	rows, err := s.conn.QueryContext(ctx, `SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?
		ORDER BY TABLE_NAME`, database)
	if err != nil {
		return nil, nil, serverError(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, nil, err
		}
		if typ == "VIEW" {
			views = append(views, name)
		} else {
			tables = append(tables, name)
		}
	}
	return tables, views, serverError(rows.Err())
}

// objects reads, with database as the default (so the definitions name
// its objects unqualified), the definitions of the given views and of
// every trigger, routine and event of database.
func (s *swap) objects(ctx context.Context, database string, views []string) ([]object, error) {
	if err := s.exec(ctx, "USE "+quoteIdent(database)); err != nil {
		return nil, err
	}
	var out []object
	for _, v := range views {
		out = append(out, object{kind: "VIEW", name: v})
	}
	lists := []struct {
		kind, query string
	}{
		{"TRIGGER", `SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?
			ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER`},
		{"ROUTINE", `SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_NAME`},
		{"EVENT", `SELECT EVENT_NAME, '' FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME`},
	}
	for _, l := range lists {
		rows, err := s.conn.QueryContext(ctx, l.query, database)
		if err != nil {
			return nil, serverError(err)
		}
		for rows.Next() {
			var name, extra string
			if err := rows.Scan(&name, &extra); err != nil {
				rows.Close()
				return nil, err
			}
			o := object{kind: l.kind, name: name}
			switch l.kind {
			case "ROUTINE":
				o.kind = extra // PROCEDURE or FUNCTION
			case "TRIGGER":
				o.table = extra
			}
			out = append(out, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, serverError(err)
		}
	}
	for i := range out {
		def, mode, err := s.showCreate(ctx, out[i].kind, out[i].name)
		if err != nil {
			return nil, err
		}
		out[i].def, out[i].sqlMode = def, mode
	}
	return out, nil
}

// showCreate is the definition of kind name in the current database (the
// column of SHOW CREATE holding the statement) and, when SHOW CREATE gives
// it, the sql_mode it was created under.
func (s *swap) showCreate(ctx context.Context, kind, name string) (string, *string, error) {
	rows, err := s.conn.QueryContext(ctx, "SHOW CREATE "+kind+" "+quoteIdent(name))
	if err != nil {
		return "", nil, serverError(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", nil, err
	}
	want := map[string]string{"VIEW": "Create View", "TRIGGER": "SQL Original Statement", "PROCEDURE": "Create Procedure",
		"FUNCTION": "Create Function", "EVENT": "Create Event"}[kind]
	if !rows.Next() {
		return "", nil, fmt.Errorf("SHOW CREATE %s %s: no row", kind, name)
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return "", nil, err
	}
	var def string
	var mode *string
	found := false
	for i, c := range cols {
		switch c {
		case want:
			def, found = vals[i].String, true
		case "sql_mode":
			m := vals[i].String
			mode = &m
		}
	}
	if !found {
		return "", nil, fmt.Errorf("SHOW CREATE %s: no column %q", kind, want)
	}
	return def, mode, nil
}
