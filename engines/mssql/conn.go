package mssql

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	mssqldb "github.com/microsoft/go-mssqldb"
	"github.com/microsoft/go-mssqldb/msdsn"

	"github.com/rahatback/rahatback/engines"
)

// Encryption settings of a connection, as the API spells them: strict
// (TDS 8: TLS before anything, the certificate checked), mandatory (TLS
// after the prelogin, the certificate checked) and optional (TLS when the
// server offers it). Empty means mandatory.
const (
	EncryptStrict    = "strict"
	EncryptMandatory = "mandatory"
	EncryptOptional  = "optional"
)

// ValidEncrypt reports whether e is an encryption setting ("" included).
func ValidEncrypt(e string) bool {
	switch e {
	case "", EncryptStrict, EncryptMandatory, EncryptOptional:
		return true
	}
	return false
}

// config is the driver's configuration for c. The password goes into the
// configuration in memory only, never into a string that could be logged.
// A named instance is reached through the SQL Server Browser (UDP 1434)
// unless a port is given too.
func config(c engines.Conn) (msdsn.Config, error) {
	if !ValidEncrypt(c.Encrypt) {
		return msdsn.Config{}, fmt.Errorf("mssql: encryption %q is not strict, mandatory or optional", c.Encrypt)
	}
	enc := c.Encrypt
	if enc == "" {
		enc = EncryptMandatory
	}
	// The DSN carries no credentials; they are set on the parsed config.
	u := url.URL{Scheme: "sqlserver", Host: c.Host, Path: c.Instance}
	if c.Port > 0 {
		u.Host = c.Host + ":" + strconv.Itoa(c.Port)
	}
	q := url.Values{"encrypt": {enc}, "app name": {"RahatBack"}}
	if c.Database != "" {
		q.Set("database", c.Database)
	}
	u.RawQuery = q.Encode()
	cfg, err := msdsn.Parse(u.String())
	if err != nil {
		return cfg, fmt.Errorf("mssql: connection settings: %w", err)
	}
	cfg.User, cfg.Password = c.Username, c.Password
	return cfg, nil
}

// open is a database handle for c (the caller closes it).
func open(c engines.Conn) (*sql.DB, error) {
	cfg, err := config(c)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(mssqldb.NewConnectorConfig(cfg)), nil
}

// ServerFacts is what Test reads from a server.
type ServerFacts struct {
	Version       string // the first line of @@VERSION
	Edition       string // SERVERPROPERTY('Edition')
	EngineEdition int    // SERVERPROPERTY('EngineEdition'): 4 is Express
}

// Test connects to c and returns its version and edition, or the server's
// own error (login failed, unknown database, a certificate not trusted).
func Test(ctx context.Context, c engines.Conn) (ServerFacts, error) {
	db, err := open(c)
	if err != nil {
		return ServerFacts{}, err
	}
	defer db.Close()
	var f ServerFacts
	if err := db.QueryRowContext(ctx, ServerInfo).Scan(&f.Version, &f.Edition, &f.EngineEdition); err != nil {
		return ServerFacts{}, err
	}
	f.Version, _, _ = strings.Cut(f.Version, "\n")
	f.Version = strings.TrimSpace(f.Version)
	return f, nil
}
