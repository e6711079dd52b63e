// Package engines holds what RahatBack knows about each database engine and
// the interface the agent drives them through.
package engines

import (
	"context"
	"fmt"
	"io"
)

// Engine types, as stored and as the API spells them.
const (
	PostgreSQL = "postgresql"
	MySQL      = "mysql" // MySQL and MariaDB
	MongoDB    = "mongodb"
	MSSQL      = "mssql"
)

// Types lists every engine type in display order.
var Types = []string{PostgreSQL, MySQL, MongoDB, MSSQL}

// DefaultPort returns the usual port of an engine type, 0 for an unknown type.
func DefaultPort(typ string) int {
	switch typ {
	case PostgreSQL:
		return 5432
	case MySQL:
		return 3306
	case MongoDB:
		return 27017
	case MSSQL:
		return 1433
	}
	return 0
}

// Known reports whether typ is one of Types.
func Known(typ string) bool { return DefaultPort(typ) != 0 }

// Conn says how to reach a database. The password is plaintext here: it
// exists only in the agent's memory.
type Conn struct {
	Host     string
	Port     int
	Username string
	Password string
	Database string
}

// DumpInfo describes a finished dump.
type DumpInfo struct {
	ServerVersion string // e.g. "15.20"
	ToolVersion   string // e.g. "pg_dump (PostgreSQL) 15.20"
	Format        string // e.g. "plain"
}

// Engine is one database engine as the agent drives it. Each operation talks
// to the server with the engine's own client and never passes a password in
// a process argument.
type Engine interface {
	// Test connects to c and returns the server's version, or an error whose
	// message is the server's own (wrong password, unknown database…).
	Test(ctx context.Context, c Conn) (version string, err error)
	// Size estimates the bytes a dump of c will have (for progress).
	Size(ctx context.Context, c Conn) (int64, error)
	// Dump writes a logical dump of c to w as it is produced.
	Dump(ctx context.Context, c Conn, w io.Writer) (DumpInfo, error)
	// Restore applies a dump read from r to c in one transaction: when r
	// returns an error (a checksum mismatch found at its end, say) or the
	// dump fails to apply, nothing of it remains in c.
	Restore(ctx context.Context, c Conn, r io.Reader) error
}

// Registry maps engine types to the engines an agent supports.
type Registry map[string]Engine

// Lookup returns the engine for typ, or an error saying this agent does not
// support it.
func (r Registry) Lookup(typ string) (Engine, error) {
	e, ok := r[typ]
	if !ok {
		if Known(typ) {
			return nil, fmt.Errorf("this agent does not support %s databases yet", typ)
		}
		return nil, fmt.Errorf("unknown database type %q", typ)
	}
	return e, nil
}
