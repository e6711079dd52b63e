package mysql_test

import (
	"context"
	"database/sql"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/enginetest"
	"github.com/rahatback/rahatback/engines/mysql"
	"github.com/rahatback/rahatback/mariadbserver"
	"github.com/rahatback/rahatback/testsupport"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

func quote(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

// server is the test binary's private MariaDB as enginetest sees it.
type server struct{ srv *mariadbserver.Server }

func (s server) Conn(database string) engines.Conn {
	return engines.Conn{Host: "127.0.0.1", Port: s.srv.Port(), Username: mariadbserver.Admin, Password: s.srv.Password(), Database: database}
}

func (s server) admin(t *testing.T, database string) *sql.DB {
	t.Helper()
	db, err := s.srv.Open(database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func (s server) CreateDatabase(t *testing.T, name string) {
	t.Helper()
	if _, err := s.admin(t, "").Exec("CREATE DATABASE " + quote(name)); err != nil {
		t.Fatal(err)
	}
}

func (s server) DropDatabase(t *testing.T, name string) {
	if _, err := s.admin(t, "").Exec("DROP DATABASE IF EXISTS " + quote(name)); err != nil {
		t.Error(err)
	}
}

func (s server) Exec(t *testing.T, database, statements string) {
	t.Helper()
	if strings.TrimSpace(statements) == "" {
		return
	}
	if _, err := s.admin(t, database).Exec(statements); err != nil {
		t.Fatalf("%v\n%s", err, statements)
	}
}

func (s server) Exists(t *testing.T, name string) bool {
	var n int
	if err := s.admin(t, "").QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// Contents is testsupport.MariaDBContents.
func (s server) Contents(t *testing.T, database string) map[string]enginetest.Table {
	t.Helper()
	out := map[string]enginetest.Table{}
	for name, c := range testsupport.MariaDBContents(t, s.admin(t, database), database) {
		out[name] = enginetest.Table{Rows: c.Rows, Hash: c.Hash}
	}
	return out
}

// hostileSchema: names with quotes, spaces, non-ASCII, a leading '-',
// reserved words, two that differ only in case; every common type, NULLs,
// binary bytes (0x00, quote, backslash, line break), a 2 MB value, an
// invisible column (dumped with a column list); a view,
// a trigger, a procedure, a function and an event.
const hostileSchema = "CREATE TABLE `select` (id INT PRIMARY KEY, `from` VARCHAR(20));\n" +
	"INSERT INTO `select` VALUES (1, 'a'), (2, NULL), (3, 'it''s');\n" +
	"CREATE TABLE `Weird \"Name\" 'x` (id INT PRIMARY KEY, note TEXT);\n" +
	"INSERT INTO `Weird \"Name\" 'x` VALUES (1, 'line\\nbreak'), (2, 'tab\\there'), (3, 'back\\\\slash');\n" +
	"CREATE TABLE `-lead ü táble` (id INT PRIMARY KEY, v VARCHAR(50)) DEFAULT CHARSET=utf8mb4;\n" +
	"INSERT INTO `-lead ü táble` VALUES (1, 'Ünïcode ✓ 😀'), (2, '');\n" +
	"CREATE TABLE `Case` (id INT PRIMARY KEY);\nCREATE TABLE `case` (id INT PRIMARY KEY);\n" +
	"INSERT INTO `Case` VALUES (1), (2);\nINSERT INTO `case` VALUES (3);\n" +
	"CREATE TABLE `empty` (id INT PRIMARY KEY, u INT, UNIQUE KEY `u ``q` (u), KEY `k` (u, id));\n" +
	"CREATE TABLE `inv` (id INT PRIMARY KEY, `hid)den` INT INVISIBLE);\n" +
	"INSERT INTO `inv` (id, `hid)den`) VALUES (1, 5), (2, 6), (3, NULL);\n" +
	"CREATE TABLE types (id BIGINT AUTO_INCREMENT PRIMARY KEY, i INT, si SMALLINT, ti TINYINT, d DECIMAL(20,6), f FLOAT, db DOUBLE,\n" +
	"  b BOOL, c CHAR(10), vc VARCHAR(255), t TEXT, lt LONGTEXT, bl BLOB, lb LONGBLOB, bin VARBINARY(16), dt DATETIME(6),\n" +
	"  ts TIMESTAMP(6) NULL, dd DATE, tm TIME, yr YEAR, e ENUM('a','b'), st SET('x','y'), j JSON, bt BIT(8), g GEOMETRY NULL,\n" +
	"  u UUID NULL) DEFAULT CHARSET=utf8mb4;\n" +
	"INSERT INTO types (i, si, ti, d, f, db, b, c, vc, t, lt, bl, lb, bin, dt, ts, dd, tm, yr, e, st, j, bt, g, u) VALUES\n" +
	"  (-2147483648, 32767, -128, 12345678901234.123456, 1.5, 2.25e300, TRUE, 'char', 'it''s \"q\" \\\\ ; (x)', 'text', REPEAT('long ', 400000),\n" +
	"   X'00275C0A0D1A', X'DEADBEEF00', X'0102', '2024-02-29 23:59:59.123456', '2024-01-01 00:00:00.5', '2024-12-31', '-12:30:00', 2024,\n" +
	"   'b', 'x,y', '{\"k\": [1, \"two\", null]}', b'10101010', ST_GeomFromText('POINT(1 2)'), '123e4567-e89b-12d3-a456-426614174000'),\n" +
	"  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,\n" +
	"   NULL, NULL, NULL, NULL);\n" +
	"CREATE VIEW `select view` AS SELECT id, `from` FROM `select`;\n" +
	"CREATE TRIGGER `up per` BEFORE INSERT ON `select` FOR EACH ROW SET NEW.`from` = UPPER(NEW.`from`);\n" +
	"CREATE PROCEDURE `count it`(OUT n INT) BEGIN SELECT COUNT(*) INTO n FROM `select`; END;\n" +
	"CREATE FUNCTION `twice`(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;\n" +
	"CREATE EVENT `nightly` ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM `empty`;\n"

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	eng := mysql.Engine{OptionDir: dir}
	enginetest.Run(t, eng, server{testsupport.MariaDB(t)}, enginetest.Options{
		HostileSchema: hostileSchema,
		Change:        "UPDATE `select` SET `from` = 'changed'; DELETE FROM `Case`; INSERT INTO `case` VALUES (99);",
		Failing:       "INSERT INTO rb_no_such_table VALUES (1);",
		TempDir:       dir,
	})
}

// databases creates a database named after prefix for t, dropped when t
// ends, and returns its name.
func (s server) databases(t *testing.T, prefix string) string {
	t.Helper()
	name := prefix + "_" + testsupport.RandomString(3)
	s.CreateDatabase(t, name)
	t.Cleanup(func() { s.DropDatabase(t, name) })
	return name
}

// roundTrip makes a source database from srcSQL, runs dstSQL in dst, and
// restores a dump of the source into dst; it returns the dump.
func roundTrip(t *testing.T, srv server, srcSQL, dstSQL, dst string) string {
	t.Helper()
	ctx := context.Background()
	src := srv.databases(t, "src")
	srv.Exec(t, src, srcSQL)
	srv.Exec(t, dst, dstSQL)
	eng := mysql.Engine{OptionDir: t.TempDir()}
	var dump strings.Builder
	if _, err := eng.Dump(ctx, srv.Conn(src), &dump); err != nil {
		t.Fatal(err)
	}
	if err := eng.Restore(ctx, srv.Conn(dst), strings.NewReader(dump.String())); err != nil {
		t.Fatal(err)
	}
	return dump.String()
}

// TestRestoreKeepsSchemaObjects: a restore brings the backup's view,
// trigger, routines and event into the target, which works as before.
func TestRestoreKeepsSchemaObjects(t *testing.T) {
	ctx := context.Background()
	srv := server{testsupport.MariaDB(t)}
	dst := srv.databases(t, "objs")
	roundTrip(t, srv, hostileSchema, "", dst)
	db := srv.admin(t, dst)
	var n, twice int
	var from string
	if _, err := db.Exec("INSERT INTO `select` VALUES (10, 'lower')"); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT `from` FROM `select view` WHERE id = 10").Scan(&from); err != nil || from != "LOWER" {
		t.Fatalf("the view and the trigger after the restore: %q, %v", from, err)
	}
	if err := db.QueryRow("SELECT `twice`(21)").Scan(&twice); err != nil || twice != 42 {
		t.Fatalf("the function after the restore: %d, %v", twice, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "CALL `count it`(@n)"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT @n").Scan(&n); err != nil || n != 4 {
		t.Fatalf("the procedure after the restore: %d, %v", n, err)
	}
	var events int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?", dst).Scan(&events); err != nil || events != 1 {
		t.Fatalf("events after the restore: %d, %v", events, err)
	}
	var scratch int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'rahatback\\_%'").Scan(&scratch); err != nil || scratch != 0 {
		t.Fatalf("%d scratch databases left, %v", scratch, err)
	}
}

// TestRestoreLeavesOtherTables: with case-sensitive table names, a target
// table whose name differs only in case from a backup table is not
// touched; a target table that references a table the restore would
// replace makes it refuse before changing anything.
func TestRestoreLeavesOtherTables(t *testing.T) {
	ctx := context.Background()
	srv := server{testsupport.MariaDB(t)}
	dst := srv.databases(t, "other")
	eng := mysql.Engine{OptionDir: t.TempDir()}
	dump := roundTrip(t, srv, "CREATE TABLE users (id INT PRIMARY KEY); INSERT INTO users VALUES (1), (2);",
		"CREATE TABLE users (id INT PRIMARY KEY); CREATE TABLE `Users` (id INT PRIMARY KEY); INSERT INTO `Users` VALUES (7);", dst)
	got := srv.Contents(t, dst)
	if got["users"].Rows != 2 || got["Users"].Rows != 1 {
		t.Fatalf("after the restore: %+v", got)
	}

	srv.Exec(t, dst, "CREATE TABLE orders (id INT PRIMARY KEY, user_id INT, FOREIGN KEY (user_id) REFERENCES users (id)); INSERT INTO orders VALUES (1, 1);")
	before := srv.Contents(t, dst)
	err := eng.Restore(ctx, srv.Conn(dst), strings.NewReader(dump))
	if err == nil || !strings.Contains(err.Error(), "orders") {
		t.Fatalf("a restore that would strand a foreign key: %v", err)
	}
	if after := srv.Contents(t, dst); !reflect.DeepEqual(after, before) {
		t.Fatalf("the refused restore changed the target: %+v, was %+v", after, before)
	}
}
