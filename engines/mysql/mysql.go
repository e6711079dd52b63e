// Package mysql is the MySQL and MariaDB engine: Test and Size through
// github.com/go-sql-driver/mysql, dumps with mariadb-dump (or mysqldump),
// restores with the mariadb (or mysql) client into a scratch database that
// is then swapped into place.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rahatback/rahatback/engines"
)

// ConnectTimeout bounds one connection attempt.
const ConnectTimeout = 15 * time.Second

// Engine drives MySQL and MariaDB servers.
type Engine struct {
	// OptionDir holds the short-lived 0600 option files that carry the
	// password to the client tools; default os.TempDir(). The agent gives
	// each run of itself a private directory that it empties at start.
	OptionDir string
	// BinDir, when set, is the only place the client tools are looked
	// for; default $PATH (mariadb-dump, else mysqldump).
	BinDir string
}

// Spec is the MySQL engine's engines.Spec.
func (Engine) Spec() engines.Spec {
	s, _ := engines.Lookup(engines.MySQL)
	return s
}

// config builds a driver config field by field (never a DSN string, so no
// name can smuggle options in). A host starting with "/" is a unix socket
// path. TLS is used when the server offers it.
func config(c engines.Conn, database string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = c.Username
	cfg.Passwd = c.Password
	if strings.HasPrefix(c.Host, "/") {
		cfg.Net, cfg.Addr = "unix", c.Host
	} else {
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	}
	cfg.DBName = database
	cfg.Timeout = ConnectTimeout
	cfg.TLSConfig = "preferred"
	cfg.AllowNativePasswords = true
	cfg.MultiStatements = false
	_ = cfg.Apply(mysql.Charset("utf8mb4", ""))
	return cfg
}

// open is a connection pool of one connection to database (may be "").
func open(c engines.Conn, database string) (*sql.DB, error) {
	conn, err := mysql.NewConnector(config(c, database))
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	return db, nil
}

// Test connects and returns the server's version ("MariaDB 10.11.19",
// "MySQL 8.0.36"). On failure the error is the server's message ("Access
// denied for user …", "Unknown database …") when there is one.
func (Engine) Test(ctx context.Context, c engines.Conn) (string, error) {
	db, err := open(c, c.Database)
	if err != nil {
		return "", err
	}
	defer db.Close()
	var v string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		return "", serverError(err)
	}
	return product(v), nil
}

// product names the server of VERSION() v: "MariaDB 10.11.19" for
// "10.11.19-MariaDB-0+deb12u1", "MySQL 8.0.36" otherwise.
func product(v string) string {
	num, _, _ := strings.Cut(v, "-")
	if strings.Contains(v, "MariaDB") {
		return "MariaDB " + num
	}
	return "MySQL " + num
}

// Size returns the data and index bytes of the database's tables, the
// estimate behind the progress percentage.
func (Engine) Size(ctx context.Context, c engines.Conn) (int64, error) {
	db, err := open(c, c.Database)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int64
	err = db.QueryRowContext(ctx, `SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = DATABASE()`).Scan(&n)
	return n, serverError(err)
}

// serverError is err with the server's own message when it has one.
func serverError(err error) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return errors.New(me.Message)
	}
	return err
}
