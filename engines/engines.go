// Package engines holds what RahatBack knows about each database engine
// (Spec: one place per engine, read by the API, the dashboard and the
// agent) and the interface the agent drives them through (Engine).
package engines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/rahatback/rahatback/pipeline"
)

// Engine types, as stored and as the API spells them.
const (
	PostgreSQL = "postgresql"
	MySQL      = "mysql" // MySQL and MariaDB
	MongoDB    = "mongodb"
	MSSQL      = "mssql"
)

// Connection fields a database may need (Spec.Required).
const (
	FieldHost     = "host"
	FieldUsername = "username"
	FieldDatabase = "database"
)

// Spec is what RahatBack knows about one engine type.
type Spec struct {
	Type        string // as stored and as the API spells it
	Name        string // as users read it
	DefaultPort int
	// Required are the connection fields a database of this type must
	// have (FieldHost, FieldUsername, FieldDatabase); the password is
	// always optional.
	Required []string
	// Format is the dump format, as the manifest records it.
	Format string
	// Extension is the dump's file extension, before the compression's
	// and encryption's.
	Extension string
	// Restore says what a restore guarantees, for users.
	Restore string
}

// specs is every engine type, in display order.
var specs = []Spec{
	{Type: PostgreSQL, Name: "PostgreSQL", DefaultPort: 5432, Required: []string{FieldHost, FieldUsername, FieldDatabase},
		Format: "plain", Extension: ".sql",
		Restore: "applied in one transaction: a restore that fails leaves the database as it was"},
	{Type: MySQL, Name: "MySQL / MariaDB", DefaultPort: 3306, Required: []string{FieldHost, FieldUsername, FieldDatabase},
		Format: "mariadb-dump", Extension: ".sql",
		Restore: "applied to a scratch database on the same server, then swapped in: a restore that fails leaves the database as it was"},
	{Type: MongoDB, Name: "MongoDB", DefaultPort: 27017, Required: []string{FieldHost, FieldDatabase},
		Format: "mongodump-archive", Extension: ".archive",
		Restore: "loaded into new collections beside the old ones, then renamed into place: a restore that fails leaves the database as it was"},
	{Type: MSSQL, Name: "SQL Server", DefaultPort: 1433, Required: []string{FieldHost, FieldUsername, FieldDatabase},
		Format: "native", Extension: ".bak",
		Restore: "restored under a new name on the same server, then swapped in by renaming: a restore that fails leaves the database as it was"},
}

// Specs is every engine type, in display order.
func Specs() []Spec { return slices.Clone(specs) }

// Types lists every engine type in display order.
func Types() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Type
	}
	return out
}

// Lookup is the Spec of typ; ok is false for an unknown type.
func Lookup(typ string) (Spec, bool) {
	for _, s := range specs {
		if s.Type == typ {
			return s, true
		}
	}
	return Spec{}, false
}

// Requires reports whether databases of this type need field.
func (s Spec) Requires(field string) bool { return slices.Contains(s.Required, field) }

// Conn says how to reach a database. The password is plaintext here: it
// exists only in the agent's memory.
type Conn struct {
	Host     string
	Port     int
	Username string
	Password string
	Database string
	// MongoDB only: the database holding the user (empty: Database, as
	// the driver's default), TLS, and the replica set name (empty: none).
	AuthSource string
	TLS        bool
	ReplicaSet string
	// SQL Server only: the named instance (empty: the default one, at
	// Port) and the encryption (strict, mandatory or optional; empty:
	// mandatory).
	Instance string
	Encrypt  string
	// ForChunks says the dump goes to a chunk store (an incremental or
	// differential job): an engine whose server can compress its native
	// format leaves it uncompressed, since compressed bytes never repeat
	// from one backup to the next.
	ForChunks bool
}

// Sized is a dump reader that knows the dump's length in bytes (the
// manifest's raw size). An engine whose server reads a backup by range
// (SQL Server's RESTORE … FROM URL) needs it; WithSize makes one.
type Sized interface {
	io.Reader
	Size() int64
}

// WithSize is r with its length n, as a Sized.
func WithSize(r io.Reader, n int64) io.Reader { return sized{r, n} }

type sized struct {
	io.Reader
	n int64
}

func (s sized) Size() int64 { return s.n }

// Check is one verification check an engine's server ran.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// ServerVerifier is an engine whose backups only its own server can read
// (SQL Server's native format). At DATABASE level a verification has the
// server check the backup read from r (a Sized reader) instead of parsing
// it, and compares what the server reports with the manifest's engine,
// database and server version. An error means the server could not be
// asked at all.
type ServerVerifier interface {
	VerifyBackup(ctx context.Context, c Conn, r io.Reader) ([]Check, error)
}

// DumpInfo describes a finished dump.
type DumpInfo struct {
	ServerVersion string // e.g. "15.20"
	ToolVersion   string // e.g. "pg_dump (PostgreSQL) 15.20"
	Format        string // Spec.Format
	// Tables is the rows of every table, counted from the dump stream
	// itself (never an estimate), in the order the dump holds them.
	Tables []pipeline.TableCount
	// Consistency says which point in time the dump shows, for engines
	// where that varies (MongoDB: "snapshot" or "per-collection"); empty
	// for a dump that is one transaction.
	Consistency string
	// Objects are the schema objects the dump defines, in dump order.
	Objects []pipeline.SchemaObject
}

// Inspection is what a dump holds, read from the dump itself.
type Inspection struct {
	// Complete reports whether the dump ends with its engine's completion
	// marker.
	Complete bool
	// Tables are the rows and content hash of every table with data.
	Tables []pipeline.TableCount
	// Objects are the schema objects the dump defines.
	Objects []pipeline.SchemaObject
}

// Inspector reads a dump written to it. Write fails only for an engine
// whose format is framed (a mongodump archive), with the framing error.
type Inspector interface {
	io.Writer
	// Inspection is what the dump written so far holds. It returns an
	// error when the bytes are not a dump of the engine's format at all.
	Inspection() (Inspection, error)
}

// DumpParser reads a text dump written to it (Write never fails) and
// tells the rows, content hash and schema objects seen so far.
type DumpParser interface {
	io.Writer
	Tables() []pipeline.TableCount
	Objects() []pipeline.SchemaObject
}

// NewTextInspector is the Inspector of a text dump format: p's tables and
// objects, and Complete when the last bytes written hold marker.
func NewTextInspector(p DumpParser, marker string) Inspector {
	return &textInspector{p: p, marker: marker}
}

type textInspector struct {
	p      DumpParser
	marker string
	tail   Tail
}

func (i *textInspector) Write(b []byte) (int, error) {
	_, _ = i.p.Write(b)
	_, _ = i.tail.Write(b)
	return len(b), nil
}

func (i *textInspector) Inspection() (Inspection, error) {
	return Inspection{Complete: i.tail.Contains(i.marker), Tables: i.p.Tables(), Objects: i.p.Objects()}, nil
}

// ScratchPrefix starts the name of every scratch database a test restore
// makes: rahatback_verify_<verification id without dashes>.
const ScratchPrefix = "rahatback_verify_"

// ErrPrivilege is wrapped by a CreateScratch error that says which
// privilege the user lacks.
var ErrPrivilege = errors.New("missing privilege")

// Engine is one database engine as the agent drives it. Each operation
// talks to the server with the engine's own client and never passes a
// password in a process argument.
type Engine interface {
	// Spec is the engine's Spec.
	Spec() Spec
	// Test connects to c and returns the server's version, or an error whose
	// message is the server's own (wrong password, unknown database…).
	Test(ctx context.Context, c Conn) (version string, err error)
	// Size estimates the bytes a dump of c will have (for progress).
	Size(ctx context.Context, c Conn) (int64, error)
	// Dump writes a logical dump of c to w as it is produced, counting
	// the rows of every table from the stream. A dump that is not
	// complete (the tool failed, or its output lacks the engine's
	// completion marker) is an error, never a DumpInfo.
	Dump(ctx context.Context, c Conn, w io.Writer) (DumpInfo, error)
	// Restore applies a dump read from r to c as Spec().Restore says. When
	// r returns an error (a checksum mismatch found at its end, say) or the
	// dump fails to apply, c is left as it was.
	Restore(ctx context.Context, c Conn, r io.Reader) error
	// Inspector returns a new reader of this engine's dumps, which Dump
	// also uses: what it finds in a stored dump is comparable with what
	// the manifest recorded.
	Inspector() Inspector
	// CreateScratch creates the empty database name on c's server for a
	// test restore. It fails when name exists. When c's user may not
	// create it, the error wraps ErrPrivilege and names the privilege.
	CreateScratch(ctx context.Context, c Conn, name string) error
	// LoadScratch applies a dump read from r to the scratch database name
	// on c's server; an error says where the dump stopped applying.
	LoadScratch(ctx context.Context, c Conn, name string, r io.Reader) error
	// DropScratch drops the scratch database name on c's server; nil when
	// it does not exist.
	DropScratch(ctx context.Context, c Conn, name string) error
	// ReadBack reads database c back after a test restore, for comparison
	// with what the dump recorded: the server's version, every table with
	// its rows, and the schema objects as Inspector names them; each
	// table's content hash only where the engine computes it cheaply
	// (Hash is empty otherwise).
	ReadBack(ctx context.Context, c Conn) (DumpInfo, error)
}

// Registry maps engine types to the engines an agent supports.
type Registry map[string]Engine

// NewRegistry is the Registry of engs, by their Spec().Type.
func NewRegistry(engs ...Engine) Registry {
	r := Registry{}
	for _, e := range engs {
		r[e.Spec().Type] = e
	}
	return r
}

// Lookup returns the engine for typ, or an error saying this agent does not
// support it.
func (r Registry) Lookup(typ string) (Engine, error) {
	e, ok := r[typ]
	if !ok {
		if s, known := Lookup(typ); known {
			return nil, fmt.Errorf("this agent does not support %s databases yet", s.Name)
		}
		return nil, fmt.Errorf("unknown database type %q", typ)
	}
	return e, nil
}

// tailKeep is how many bytes Tail keeps.
const tailKeep = 512

// Tail is an io.Writer that keeps the last bytes written to it: engines
// check a dump's completion marker with it. Write never fails.
type Tail struct{ b []byte }

func (t *Tail) Write(p []byte) (int, error) {
	if len(p) >= tailKeep {
		t.b = append(t.b[:0], p[len(p)-tailKeep:]...)
		return len(p), nil
	}
	t.b = append(t.b, p...)
	if len(t.b) > 2*tailKeep {
		t.b = append(t.b[:0], t.b[len(t.b)-tailKeep:]...)
	}
	return len(p), nil
}

// Contains reports whether the last bytes written hold s.
func (t *Tail) Contains(s string) bool { return bytes.Contains(t.b, []byte(s)) }
