// Package mssql is the SQL Server engine: native backups (BACKUP DATABASE
// … WITH COPY_ONLY, CHECKSUM) streamed from the server through an
// Azure-Blob-compatible endpoint the agent serves (package blobendpoint),
// or written TO DISK beside the agent.
//
// This file builds every T-SQL statement the engine sends. Names and
// strings are always quoted here (QuoteName, QuoteString), never by the
// callers, and the statements are checked against recorded expectations
// in tsql_test.go: SQL Server itself cannot run on RahatBack's build
// machines, so what is sent is pinned down exactly.
package mssql

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxName is SQL Server's limit on an identifier (sysname, nvarchar(128)).
const maxName = 128

// ErrBadName is returned (wrapped) for a name SQL Server cannot hold.
var ErrBadName = errors.New("mssql: invalid name")

// QuoteName quotes an identifier as SQL Server's QUOTENAME does with
// brackets: [name], a "]" doubled. It returns an error for an empty name,
// one longer than 128 characters, one that is not valid UTF-8 or one
// holding a NUL, which no database can be called.
func QuoteName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty", ErrBadName)
	case !utf8.ValidString(name):
		return "", fmt.Errorf("%w: not valid UTF-8", ErrBadName)
	case strings.ContainsRune(name, 0):
		return "", fmt.Errorf("%w: contains NUL", ErrBadName)
	case utf8.RuneCountInString(name) > maxName:
		return "", fmt.Errorf("%w: longer than %d characters", ErrBadName, maxName)
	}
	return "[" + strings.ReplaceAll(name, "]", "]]") + "]", nil
}

// QuoteString is s as a Unicode string literal: N'…', a "'" doubled. A
// NUL cannot be part of a literal: it is refused.
func QuoteString(s string) (string, error) {
	if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
		return "", fmt.Errorf("mssql: a string literal cannot hold NUL or invalid UTF-8")
	}
	return "N'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

// Backup kinds: a copy-only full (never disturbs the customer's own
// differential base), a differential against the database's last full,
// and a log backup.
const (
	KindFull         = "full"
	KindDifferential = "differential"
	KindLog          = "log"
)

// BackupOptions are a BACKUP statement's options.
type BackupOptions struct {
	// Kind is KindFull (default), KindDifferential or KindLog.
	Kind string
	// Compression asks the server to compress (not on Express, whose
	// EngineEdition is 4: see CompressionAllowed).
	Compression bool
	// MaxTransferSize and BlockSize, when above 0, set the server's
	// transfer and block sizes; a backup TO URL to block blobs needs
	// MAXTRANSFERSIZE = 4194304 and BLOCKSIZE = 65536 to stay within a
	// blob's 50 000 blocks up to about 200 GB.
	MaxTransferSize, BlockSize int
}

// URLTransferSize and URLBlockSize are the sizes a backup TO URL uses.
const (
	URLTransferSize = 4 << 20
	URLBlockSize    = 64 << 10
)

// BackupToURL is BACKUP of database to the block blob at url (whose
// container a SAS credential must cover, see CreateCredential):
// COPY_ONLY for a full, CHECKSUM always, FORMAT so nothing earlier in the
// blob is appended to, and the URL transfer sizes.
func BackupToURL(database, url string, o BackupOptions) (string, error) {
	o.MaxTransferSize, o.BlockSize = URLTransferSize, URLBlockSize
	return backup(database, "URL", url, o)
}

// BackupToDisk is BACKUP of database to a file path on the server's host
// (the agent beside it reads the file).
func BackupToDisk(database, path string, o BackupOptions) (string, error) {
	return backup(database, "DISK", path, o)
}

func backup(database, device, target string, o BackupOptions) (string, error) {
	db, err := QuoteName(database)
	if err != nil {
		return "", err
	}
	to, err := QuoteString(target)
	if err != nil {
		return "", err
	}
	what := "DATABASE"
	var with []string
	switch o.Kind {
	case "", KindFull:
		with = append(with, "COPY_ONLY")
	case KindDifferential:
		with = append(with, "DIFFERENTIAL")
	case KindLog:
		what = "LOG"
	default:
		return "", fmt.Errorf("mssql: unknown backup kind %q", o.Kind)
	}
	with = append(with, "CHECKSUM", "FORMAT", "INIT")
	if o.Compression {
		with = append(with, "COMPRESSION")
	} else {
		with = append(with, "NO_COMPRESSION")
	}
	if o.MaxTransferSize > 0 {
		with = append(with, fmt.Sprintf("MAXTRANSFERSIZE = %d", o.MaxTransferSize))
	}
	if o.BlockSize > 0 {
		with = append(with, fmt.Sprintf("BLOCKSIZE = %d", o.BlockSize))
	}
	with = append(with, "STATS = 5")
	return fmt.Sprintf("BACKUP %s %s TO %s = %s WITH %s;", what, db, device, to, strings.Join(with, ", ")), nil
}

// Move relocates one file of a backup at restore: its logical name (from
// RESTORE FILELISTONLY) and the physical path it gets.
type Move struct {
	Logical, Physical string
}

// RestoreOptions are a RESTORE's options.
type RestoreOptions struct {
	// Moves place the backup's files (needed whenever the database is
	// restored under another name, or the original paths are taken).
	Moves []Move
	// Replace overwrites an existing database of that name (the user
	// confirmed it).
	Replace bool
	// NoRecovery leaves the database restoring, for a differential or
	// log backup to follow.
	NoRecovery bool
}

// Devices a backup is read from or written to.
const (
	DeviceURL  = "URL"
	DeviceDisk = "DISK"
)

// RestoreFromURL is RESTORE DATABASE database from the blob at url, with
// CHECKSUM (a backup whose page checksums fail is refused).
func RestoreFromURL(database, url string, o RestoreOptions) (string, error) {
	return RestoreFrom(database, DeviceURL, url, o)
}

// RestoreFrom is RestoreFromURL from device (DeviceURL or DeviceDisk)
// target.
func RestoreFrom(database, device, target string, o RestoreOptions) (string, error) {
	db, err := QuoteName(database)
	if err != nil {
		return "", err
	}
	if device != DeviceURL && device != DeviceDisk {
		return "", fmt.Errorf("mssql: unknown device %q", device)
	}
	from, err := QuoteString(target)
	if err != nil {
		return "", err
	}
	with := []string{"CHECKSUM"}
	for _, m := range o.Moves {
		l, err := QuoteString(m.Logical)
		if err != nil {
			return "", err
		}
		p, err := QuoteString(m.Physical)
		if err != nil {
			return "", err
		}
		with = append(with, "MOVE "+l+" TO "+p)
	}
	if o.Replace {
		with = append(with, "REPLACE")
	}
	if o.NoRecovery {
		with = append(with, "NORECOVERY")
	} else {
		with = append(with, "RECOVERY")
	}
	with = append(with, "STATS = 5")
	return fmt.Sprintf("RESTORE DATABASE %s FROM %s = %s WITH %s;", db, device, from, strings.Join(with, ", ")), nil
}

// RestoreCheck is RESTORE VERIFYONLY, HEADERONLY or FILELISTONLY of the
// blob at url (what reads a backup without restoring it).
func RestoreCheck(what, url string) (string, error) { return RestoreCheckFrom(what, DeviceURL, url) }

// RestoreCheckFrom is RestoreCheck from device (DeviceURL or DeviceDisk)
// target.
func RestoreCheckFrom(what, device, target string) (string, error) {
	switch what {
	case "VERIFYONLY", "HEADERONLY", "FILELISTONLY":
	default:
		return "", fmt.Errorf("mssql: unknown RESTORE check %q", what)
	}
	if device != DeviceURL && device != DeviceDisk {
		return "", fmt.Errorf("mssql: unknown device %q", device)
	}
	from, err := QuoteString(target)
	if err != nil {
		return "", err
	}
	if what == "VERIFYONLY" {
		return fmt.Sprintf("RESTORE VERIFYONLY FROM %s = %s WITH CHECKSUM;", device, from), nil
	}
	return fmt.Sprintf("RESTORE %s FROM %s = %s;", what, device, from), nil
}

// CreateCredential is the credential a backup TO URL authenticates with:
// named after the container's URL, a Shared Access Signature (the query
// string, without "?") as its secret. The statement holds the secret:
// never log it.
func CreateCredential(containerURL, sas string) (string, error) {
	name, err := QuoteName(containerURL)
	if err != nil {
		return "", err
	}
	secret, err := QuoteString(strings.TrimPrefix(sas, "?"))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("CREATE CREDENTIAL %s WITH IDENTITY = N'SHARED ACCESS SIGNATURE', SECRET = %s;", name, secret), nil
}

// DropCredential drops the credential CreateCredential made, if it
// exists.
func DropCredential(containerURL string) (string, error) {
	name, err := QuoteName(containerURL)
	if err != nil {
		return "", err
	}
	lit, err := QuoteString(containerURL)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("IF EXISTS (SELECT 1 FROM sys.credentials WHERE name = %s) DROP CREDENTIAL %s;", lit, name), nil
}

// Credentials lists the server's credentials whose name starts with @p1
// (the endpoint's URL and "/rahatback-": those of operations an agent
// did not end, killed before it dropped them).
const Credentials = `SELECT name FROM sys.credentials WHERE LEFT(name, LEN(@p1)) = @p1;`

// CheckDB is DBCC CHECKDB of database, every error reported, no
// informational messages (FULL verification).
func CheckDB(database string) (string, error) {
	db, err := QuoteName(database)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("DBCC CHECKDB (%s) WITH NO_INFOMSGS, ALL_ERRORMSGS;", db), nil
}

// DropDatabase drops database, after closing its connections when it is
// online (a database left RESTORING by an interrupted restore cannot be
// set to single user, and has no connections to close).
func DropDatabase(database string) (string, error) {
	db, err := QuoteName(database)
	if err != nil {
		return "", err
	}
	lit, err := QuoteString(database)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("IF DB_ID(%s) IS NOT NULL BEGIN IF DATABASEPROPERTYEX(%s, 'Status') = 'ONLINE' ALTER DATABASE %s SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE %s; END;", lit, lit, db, db), nil
}

// RowCounts lists every user table of database with its rows, from
// sys.partitions (heap or clustered index), as a FULL verification and the
// manifest compare them.
func RowCounts(database string) (string, error) {
	db, err := QuoteName(database)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`SELECT s.name AS schema_name, t.name AS table_name, SUM(p.rows) AS row_count
FROM %[1]s.sys.tables AS t
JOIN %[1]s.sys.schemas AS s ON s.schema_id = t.schema_id
JOIN %[1]s.sys.partitions AS p ON p.object_id = t.object_id AND p.index_id IN (0, 1)
WHERE t.is_ms_shipped = 0
GROUP BY s.name, t.name
ORDER BY s.name, t.name;`, db), nil
}

// RenameDatabase renames database to name after closing its connections,
// and opens it to all again. When the rename fails (another session took
// the single-user slot, the name is taken) the database is opened to all
// again under its old name and the error is raised again.
func RenameDatabase(database, name string) (string, error) {
	db, err := QuoteName(database)
	if err != nil {
		return "", err
	}
	to, err := QuoteName(name)
	if err != nil {
		return "", err
	}
	lit, err := QuoteString(database)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("BEGIN TRY ALTER DATABASE %s SET SINGLE_USER WITH ROLLBACK IMMEDIATE; ALTER DATABASE %s MODIFY NAME = %s; ALTER DATABASE %s SET MULTI_USER; END TRY "+
		"BEGIN CATCH IF DB_ID(%s) IS NOT NULL ALTER DATABASE %s SET MULTI_USER; THROW; END CATCH;", db, db, to, to, lit, db), nil
}

// TargetFiles lists the data (type 0) and log (type 1) files of the
// database named @p1 with their paths: a restore over it puts the new
// copy's files beside the old ones.
const TargetFiles = `SELECT type, physical_name FROM sys.master_files WHERE database_id = DB_ID(@p1) AND type IN (0, 1) ORDER BY type, file_id;`

// DatabaseSize is the bytes of database's used pages (a backup's size,
// for progress).
func DatabaseSize(database string) (string, error) {
	db, err := QuoteName(database)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("SELECT CAST(COALESCE(SUM(a.used_pages), 0) AS bigint) * 8192 FROM %s.sys.allocation_units AS a;", db), nil
}

// DatabaseExists is a query of one row: 1 when a database called @p1
// exists, else 0.
const DatabaseExists = `SELECT CASE WHEN DB_ID(@p1) IS NULL THEN 0 ELSE 1 END;`

// CanCreateDatabase is a query of one row: 1 when the login may create
// (so restore) databases, else 0.
const CanCreateDatabase = `SELECT COALESCE(HAS_PERMS_BY_NAME(NULL, NULL, 'CREATE ANY DATABASE'), 0);`

// DataPaths is a query of one row: where the server puts new data and log
// files (each ending with its path separator).
const DataPaths = `SELECT CAST(SERVERPROPERTY('InstanceDefaultDataPath') AS nvarchar(4000)), CAST(SERVERPROPERTY('InstanceDefaultLogPath') AS nvarchar(4000));`

// ServerInfo is the statement Test runs: the version banner, the edition
// and the engine edition (4 is Express, which cannot compress backups).
const ServerInfo = `SELECT @@VERSION, CAST(SERVERPROPERTY('Edition') AS nvarchar(128)), CAST(SERVERPROPERTY('EngineEdition') AS int);`

// CompressionAllowed reports whether a server can compress backups:
// every edition but Express (EngineEdition 4) and Web (EngineEdition 2,
// like Standard, told apart by its Edition name).
func CompressionAllowed(engineEdition int, edition string) bool {
	return engineEdition != 4 && !strings.HasPrefix(edition, "Web")
}
