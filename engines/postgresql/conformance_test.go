package postgresql_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/enginetest"
	"github.com/rahatback/rahatback/engines/postgresql"
	"github.com/rahatback/rahatback/testsupport"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

// server is the test binary's private cluster as enginetest sees it.
type server struct{}

func (server) Conn(database string) engines.Conn {
	cfg, err := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
	if err != nil {
		panic(err)
	}
	return engines.Conn{Host: "127.0.0.1", Port: int(cfg.Port), Username: cfg.User, Password: cfg.Password, Database: database}
}

func (server) CreateDatabase(t *testing.T, name string) {
	t.Helper()
	if err := testsupport.AdminExec(context.Background(), "CREATE DATABASE "+quote(name)); err != nil {
		t.Fatal(err)
	}
}

func (server) DropDatabase(t *testing.T, name string) {
	if err := testsupport.AdminExec(context.Background(), "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)"); err != nil {
		t.Error(err)
	}
}

func (s server) Exists(t *testing.T, name string) bool {
	var n int
	if err := s.connect(t, "postgres").QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func (s server) connect(t *testing.T, database string) *pgx.Conn {
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

func (s server) Exec(t *testing.T, database, statements string) {
	t.Helper()
	if strings.TrimSpace(statements) == "" {
		return
	}
	if _, err := s.connect(t, database).Exec(context.Background(), statements); err != nil {
		t.Fatalf("%v\n%s", err, statements)
	}
}

// Contents: count(*) and an md5 of the rows' text forms, sorted, per table.
func (s server) Contents(t *testing.T, database string) map[string]enginetest.Table {
	t.Helper()
	ctx := context.Background()
	conn := s.connect(t, database)
	rows, err := conn.Query(ctx, `SELECT table_schema, table_name FROM information_schema.tables
		WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var n [2]string
		return n, r.Scan(&n[0], &n[1])
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]enginetest.Table{}
	for _, n := range names {
		var tbl enginetest.Table
		q := "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') FROM " +
			quote(n[0]) + "." + quote(n[1]) + " t"
		if err := conn.QueryRow(ctx, q).Scan(&tbl.Rows, &tbl.Hash); err != nil {
			t.Fatal(err)
		}
		out[n[0]+"."+n[1]] = tbl
	}
	return out
}

// hostileSchema: names with quotes, spaces, non-ASCII, a leading '-',
// reserved words, two that differ only in case, a schema with a space;
// every common type, NULLs, bytea with every awkward byte, a 2 MB value.
const hostileSchema = `
CREATE SCHEMA "my schema";
CREATE TABLE "select" (id int PRIMARY KEY, "from" text);
INSERT INTO "select" VALUES (1, 'a'), (2, NULL), (3, 'it''s');
CREATE TABLE "my schema"."Weird ""Name"" 'x" (id int PRIMARY KEY, note text);
INSERT INTO "my schema"."Weird ""Name"" 'x" VALUES (1, E'line\nbreak'), (2, E'tab\there'), (3, E'back\\slash'), (4, '\.');
CREATE TABLE "-lead ü táble" (id int PRIMARY KEY, v text);
INSERT INTO "-lead ü táble" VALUES (1, 'Ünïcode ✓ 😀'), (2, '');
CREATE TABLE "Case" (id int PRIMARY KEY);
CREATE TABLE "case" (id int PRIMARY KEY);
INSERT INTO "Case" VALUES (1), (2);
INSERT INTO "case" VALUES (3);
CREATE TABLE empty (id int PRIMARY KEY);
CREATE TABLE types (id bigserial PRIMARY KEY, i int, si smallint, n numeric(20,6), f real, d double precision, b boolean,
  c char(10), vc varchar(255), t text, lt text, by bytea, ts timestamptz, tsl timestamp, dt date, tm time, iv interval,
  j jsonb, u uuid, arr int[], ip inet, pt point);
INSERT INTO types (i, si, n, f, d, b, c, vc, t, lt, by, ts, tsl, dt, tm, iv, j, u, arr, ip, pt) VALUES
  (-2147483648, 32767, 12345678901234.123456, 1.5, 2.25e300, true, 'char', 'it''s "q" \ ; (x)', E'tab\tnl\n', repeat('long ', 400000),
   '\x00275c0a0d1a09'::bytea, '2024-02-29 23:59:59.123456+03', '2024-01-01 00:00:00.5', '2024-12-31', '12:30:00', '1 day 2 hours',
   '{"k": [1, "two", null]}', '123e4567-e89b-12d3-a456-426614174000', '{1,2,NULL}', '10.0.0.1/8', '(1,2)'),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE VIEW "select view" AS SELECT id, "from" FROM "select";
CREATE INDEX "idx ü" ON types (i);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE FUNCTION "f'n"(x posint) RETURNS int LANGUAGE sql AS $$ SELECT x + 1 $$;
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER "t rg" BEFORE INSERT ON "select" FOR EACH ROW EXECUTE FUNCTION trg();
CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM "select" WITH NO DATA;
`

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	enginetest.Run(t, postgresql.Engine{PassDir: dir}, server{}, enginetest.Options{
		HostileSchema: hostileSchema,
		Change:        `UPDATE "select" SET "from" = 'changed'; DELETE FROM "Case"; INSERT INTO "case" VALUES (99);`,
		Failing:       "INSERT INTO rb_no_such_table VALUES (1);",
		TempDir:       dir,
	})
}
