package controlplane_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/testsupport"
)

// pgSampleSkip drops what a sample script does to the database itself
// (Chinook drops, creates and connects to "chinook").
// and what PostgreSQL 15 does not know (pg_dump 17's transaction_timeout).
var pgSampleSkip = regexp.MustCompile(`^(DROP DATABASE|CREATE DATABASE|\\c |SET transaction_timeout)`)

// loadPGSample runs sample SQL files of ../shared/sample-db/pg in database
// with psql as the test cluster's superuser.
func loadPGSample(t *testing.T, database string, files ...string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	// pagila's objects belong to a role "postgres".
	_ = testsupport.AdminExec(context.Background(), `DO $$ BEGIN CREATE ROLE postgres; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	for _, f := range files {
		cmd := exec.Command("psql", "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-d", database)
		cmd.Env = append(os.Environ(), "PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(int(cfg.Port)), "PGUSER="+cfg.User, "PGPASSWORD="+cfg.Password)
		feedSample(t, filepath.Join("pg", f), cmd, func(line string) (string, bool) { return line, !pgSampleSkip.MatchString(line) })
	}
}

// pgScratchCount counts the scratch databases on the test cluster.
func pgScratchCount(t *testing.T) int {
	t.Helper()
	conn := scratchConn(t, "postgres")
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_database WHERE datname LIKE 'rahatback\_verify\_%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func scratchConn(t *testing.T, database string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = database
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestPostgreSQLSampleDatabases takes pagila (partitions, domains, an
// unpopulated materialized view, triggers, functions; the 2024 edition:
// the PostgreSQL 17 edition uses JSON_TABLE, which the PostgreSQL 15 here
// cannot load) and Chinook through a backup, its manifest's
// counts, the download, BASIC, DATABASE and FULL verification, and a
// restore into a new database that must hold the same rows.
func TestPostgreSQLSampleDatabases(t *testing.T) {
	for _, tc := range []struct {
		name, ext string
		files     []string
	}{
		{"pagila", ".sql.zst", []string{"pagila-schema.sql.zst", "pagila-data.sql.zst"}},
		{"chinook", ".sql.zst", []string{"chinook-pg.sql.zst"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			suffix := testsupport.RandomString(3)
			srcName := "sample_" + tc.name + "_" + suffix
			src := scratchDB(t, srcName)
			loadPGSample(t, srcName, tc.files...)
			want := snapshot(t, src)
			if len(want) < 10 {
				t.Fatalf("the sample made %d tables", len(want))
			}
			// The rows of every table that holds rows itself (a partitioned
			// table's are its partitions').
			rows := map[string]int64{}
			tables, err := src.Query(context.Background(), `SELECT c.oid::regclass::text, c.relname FROM pg_class c
				JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')`)
			if err != nil {
				t.Fatal(err)
			}
			names, err := pgx.CollectRows(tables, func(r pgx.CollectableRow) ([2]string, error) {
				var n [2]string
				return n, r.Scan(&n[0], &n[1])
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				var count int64
				if err := src.QueryRow(context.Background(), "SELECT count(*) FROM ONLY "+n[0]).Scan(&count); err != nil {
					t.Fatal(err)
				}
				rows[n[1]] = count
			}

			dbURL, _ := testsupport.NewDatabase(t)
			httpAddr := freeAddr(t)
			base := "http://" + httpAddr
			sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t),
				"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s"}, nil, base)
			defer sys.stop(t)
			c := client{t, base}
			token := c.register(tc.name + "@example.com")
			c.waitAgents(token, 30*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
			trip := sampleTrip{base: base, token: token, srcID: c.createDB(token, tc.name, srcName), engine: "postgresql", ext: tc.ext,
				rows: rows, check: "checksum",
				target: func(t *testing.T, name string) string {
					scratchDB(t, name)
					return c.createDB(token, name, name)
				},
				compare: func(t *testing.T, dst string) {
					got := snapshot(t, scratchConn(t, dst))
					for name, w := range want {
						if strings.Join(got[name], "\n") != strings.Join(w, "\n") {
							t.Errorf("restored table %s: %d rows, want %d (or other content)", name, len(got[name]), len(w))
						}
					}
					if len(got) != len(want) {
						t.Errorf("restored %d tables, want %d", len(got), len(want))
					}
				},
				scratch: pgScratchCount,
			}
			trip.run(t, map[string]any{"name": tc.name, "compression": "zstd"}, "restored_"+tc.name+"_"+suffix)
		})
	}
}
