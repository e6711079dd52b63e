package testsupport

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rahatback/rahatback/mariadbserver"
)

var (
	mariaOnce sync.Once
	maria     *mariadbserver.Server
	mariaDir  string
	mariaErr  error
)

// MariaDB is the test binary's private MariaDB server, started on first
// use and stopped when Main returns. It fails t when the server cannot
// start (scripts/deps.sh installs it).
func MariaDB(t testing.TB) *mariadbserver.Server {
	t.Helper()
	mariaOnce.Do(func() {
		if mariaDir, mariaErr = os.MkdirTemp("", "rahatback-test-mariadb-"); mariaErr != nil {
			return
		}
		// The mysql OS user runs the server when tests run as root.
		if mariaErr = os.Chmod(mariaDir, 0o711); mariaErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		maria, mariaErr = mariadbserver.Start(ctx, mariadbserver.Options{Dir: filepath.Join(mariaDir, "m"), BufferPool: "256M"})
	})
	if mariaErr != nil {
		t.Fatalf("testsupport: starting MariaDB: %v", mariaErr)
	}
	return maria
}

// NewMariaDBDatabase creates an empty database on MariaDB(t), dropped
// when t ends, and returns its name and a pool of connections to it as
// the administrator.
func NewMariaDBDatabase(t testing.TB) (string, *sql.DB) {
	t.Helper()
	srv := MariaDB(t)
	name := "t_" + RandomString(8)
	admin, err := srv.Open("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("CREATE DATABASE `" + name + "`"); err != nil {
		t.Fatal(err)
	}
	db, err := srv.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
		admin.Close()
	})
	return name, db
}

func stopMariaDB() {
	if maria != nil {
		maria.Stop()
	}
	if mariaDir != "" {
		os.RemoveAll(mariaDir)
	}
}
