package mssql

import (
	"fmt"
	"net"
	"net/url"
	"strconv"

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
// unless a port other than the default 1433 is given too (the API always
// stores a port, 1433 unless told otherwise).
// defaultPort is SQL Server's default port.
const defaultPort = 1433

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
	if c.Port > 0 && !(c.Instance != "" && c.Port == defaultPort) {
		u.Host = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
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

// ServerFacts is what Engine.Test reads from a server.
type ServerFacts struct {
	Version       string // the first line of @@VERSION
	Edition       string // SERVERPROPERTY('Edition')
	EngineEdition int    // SERVERPROPERTY('EngineEdition'): 4 is Express
}
