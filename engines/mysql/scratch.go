package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/go-sql-driver/mysql"

	"github.com/rahatback/rahatback/engines"
)

// Inspector reads a mariadb-dump stream: rows and content hash of every
// table's INSERT tuples, tables, views, indexes, constraints, triggers,
// routines and events, and the completion trailer.
func (Engine) Inspector() engines.Inspector {
	return engines.NewTextInspector(newRowCounter(), completeMarker)
}

// CreateScratch creates database name with the character set and collation
// of c's database. A user without the CREATE privilege on it gets an error
// wrapping engines.ErrPrivilege that says so.
func (Engine) CreateScratch(ctx context.Context, c engines.Conn, name string) error {
	db, err := open(c, "")
	if err != nil {
		return err
	}
	defer db.Close()
	var charset, collation string
	err = db.QueryRowContext(ctx, `SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA
		WHERE SCHEMA_NAME = ?`, c.Database).Scan(&charset, &collation)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("Unknown database '%s'", c.Database)
	} else if err != nil {
		return serverError(err)
	}
	_, err = db.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(name)+" CHARACTER SET "+charset+" COLLATE "+collation)
	var me *mysql.MySQLError
	if errors.As(err, &me) && (me.Number == 1044 || me.Number == 1227) { // ER_DBACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR
		return fmt.Errorf("%w: the user %q lacks the CREATE privilege on database %s (%s), so it cannot create the scratch database of a test restore; grant it (GRANT ALL ON `rahatback\\_verify\\_%%`.* TO …) or have the job name a verification target where the user has it",
			engines.ErrPrivilege, c.Username, name, me.Message)
	}
	return serverError(err)
}

// LoadScratch applies a dump to the scratch database name with the client
// tool; its error names the line that failed.
func (e Engine) LoadScratch(ctx context.Context, c engines.Conn, name string, r io.Reader) error {
	return e.apply(ctx, c, name, r)
}

// DropScratch drops database name if it exists.
func (Engine) DropScratch(ctx context.Context, c engines.Conn, name string) error {
	db, err := open(c, "")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name))
	return serverError(err)
}

// ReadBack is a Dump of c into io.Discard: rows, content hashes and
// objects exactly as a backup records them.
func (e Engine) ReadBack(ctx context.Context, c engines.Conn) (engines.DumpInfo, error) {
	return e.Dump(ctx, c, io.Discard)
}
