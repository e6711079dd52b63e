package testsupport

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TableContent is a table's row count and a hash of its rows independent
// of their order.
type TableContent struct {
	Rows int64
	Hash string
}

// MariaDBContents is every base table of database (through db) with its
// content: each row's columns hashed as the server returns them (NULL
// apart from any value), the row hashes sorted and hashed.
func MariaDBContents(t testing.TB, db *sql.DB, database string) map[string]TableContent {
	t.Helper()
	rows, err := db.Query(`SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'`, database)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	rows.Close()
	out := map[string]TableContent{}
	for _, n := range names {
		out[n] = mariaTable(t, db, database, n)
	}
	return out
}

func mariaTable(t testing.TB, db *sql.DB, database, table string) TableContent {
	t.Helper()
	q := func(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }
	rows, err := db.Query("SELECT * FROM " + q(database) + "." + q(table))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var hashes []string
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		for _, v := range vals {
			if v == nil {
				h.Write([]byte{0})
				continue
			}
			h.Write([]byte{1})
			h.Write([]byte(hex.EncodeToString(v)))
			h.Write([]byte{2})
		}
		hashes = append(hashes, hex.EncodeToString(h.Sum(nil)))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(hashes)
	sum := sha256.Sum256([]byte(strings.Join(hashes, "")))
	return TableContent{Rows: int64(len(hashes)), Hash: hex.EncodeToString(sum[:8])}
}
