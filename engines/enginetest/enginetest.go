// Package enginetest is the conformance suite every engine runs against a
// real server of its own: Test's answers, a database with hostile names
// and every common column type dumped and restored identically, the
// manifest's row counts, a cancelled dump, and failed restores that leave
// the target as it was.
package enginetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/pipeline"
)

// Table is one table's content as the suite compares it.
type Table struct {
	Rows int64
	// Hash is a hash of the rows independent of their order.
	Hash string
}

// Server is a real server of the engine under test.
type Server interface {
	// Conn is a connection to database as a user that may create and drop
	// databases.
	Conn(database string) engines.Conn
	// CreateDatabase creates an empty database; the suite drops it.
	CreateDatabase(t *testing.T, name string)
	// DropDatabase drops a database if it exists.
	DropDatabase(t *testing.T, name string)
	// Exec runs statements (several allowed) in database.
	Exec(t *testing.T, database, statements string)
	// Exists reports whether database exists.
	Exists(t *testing.T, database string) bool
	// Contents is every table of database by its name as the engine's
	// manifest names it ("schema.table", or "table" for an engine without
	// schemas), with its rows and content hash.
	Contents(t *testing.T, database string) map[string]Table
}

// Options describe the engine under test.
type Options struct {
	// HostileSchema creates, in an empty database, tables whose names hold
	// quotes, spaces, non-ASCII, a leading '-', reserved words, and two
	// names that differ only in case where the server allows it; with
	// every common column type, NULLs, binary data and large values.
	HostileSchema string
	// Change changes rows of the tables HostileSchema makes: the target
	// of a failed restore differs from the backup that way.
	Change string
	// Failing is a statement that fails when a restore applies it.
	Failing string
	// TempDir is where the engine writes its short-lived files (option
	// files, passfiles): it must be empty after every operation.
	TempDir string
	// NoAuth says the server accepts any password (FerretDB embedded):
	// the wrong-password case cannot be checked and is logged as such.
	NoAuth bool
	// PlainDatabaseNames says the server allows only letters, digits, '_'
	// and '-' in database names (FerretDB): the round trip's databases
	// get such names, while its tables keep their hostile ones.
	PlainDatabaseNames bool
}

// Run runs the suite.
func Run(t *testing.T, eng engines.Engine, srv Server, o Options) {
	t.Run("Test", func(t *testing.T) { testTest(t, eng, srv, o) })
	t.Run("HostileRoundTrip", func(t *testing.T) { testRoundTrip(t, eng, srv, o) })
	t.Run("CancelledDump", func(t *testing.T) { testCancel(t, eng, srv, o) })
	t.Run("FailedRestore", func(t *testing.T) { testFailedRestore(t, eng, srv, o) })
	t.Run("InspectAndScratch", func(t *testing.T) { testInspectScratch(t, eng, srv, o) })
}

// database creates a database named name for t, dropped when t ends.
func database(t *testing.T, srv Server, name string) string {
	t.Helper()
	srv.CreateDatabase(t, name)
	t.Cleanup(func() { srv.DropDatabase(t, name) })
	return name
}

func testTest(t *testing.T, eng engines.Engine, srv Server, o Options) {
	ctx := context.Background()
	name := database(t, srv, "rb_test_"+suffix())
	v, err := eng.Test(ctx, srv.Conn(name))
	if err != nil || !strings.ContainsAny(v, "0123456789") {
		t.Fatalf("Test: %q, %v; want the server's version", v, err)
	}
	secret := "Wr0ng-p4ss-" + suffix()
	bad := srv.Conn(name)
	bad.Password = secret
	checkErr := func(what string, c engines.Conn) {
		t.Helper()
		_, err := eng.Test(ctx, c)
		switch {
		case err == nil:
			t.Fatalf("Test with %s succeeded", what)
		case strings.TrimSpace(err.Error()) == "":
			t.Fatalf("Test with %s: empty message", what)
		case strings.Contains(err.Error(), secret):
			t.Fatalf("Test with %s: the message holds the password: %v", what, err)
		}
		t.Logf("%s: %v", what, err)
	}
	if o.NoAuth {
		t.Log("NOT CHECKED: this server accepts any password, so Test's answer to a wrong one cannot be checked here")
	} else {
		checkErr("a wrong password", bad)
	}
	unknown := srv.Conn("rb_no_such_db_" + suffix())
	checkErr("an unknown database", unknown)
	closed := srv.Conn(name)
	closed.Host, closed.Port, closed.Password = "127.0.0.1", closedPort(t), secret
	checkErr("an unreachable host", closed)
}

func testRoundTrip(t *testing.T, eng engines.Engine, srv Server, o Options) {
	ctx := context.Background()
	// No quotes in database names: mariadb-dump 10.11 cannot dump the
	// events of such a database (its MySQL engine says so); the tables'
	// names have them.
	srcName, dstName := `-rb src ü select `+suffix(), `-rb dst select ✓`+suffix()
	if o.PlainDatabaseNames {
		srcName, dstName = "-rb_src_"+suffix(), "-rb_dst_"+suffix()
	}
	src := database(t, srv, srcName)
	dst := database(t, srv, dstName)
	srv.Exec(t, src, o.HostileSchema)
	want := srv.Contents(t, src)
	if len(want) < 3 {
		t.Fatalf("the hostile schema made %d tables", len(want))
	}
	var dump bytes.Buffer
	info, err := eng.Dump(ctx, srv.Conn(src), &dump)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	checkEmpty(t, o.TempDir)
	if info.ServerVersion == "" || info.ToolVersion == "" || info.Format != eng.Spec().Format {
		t.Fatalf("DumpInfo: %+v", info)
	}
	// The manifest's row counts are count(*).
	counted := map[string]int64{}
	for _, tc := range info.Tables {
		name := tc.Name
		if tc.Schema != "" {
			name = tc.Schema + "." + tc.Name
		}
		counted[name] = tc.Rows
	}
	for name, tbl := range want {
		if got, ok := counted[name]; !ok || got != tbl.Rows {
			t.Errorf("table %q: %d rows counted from the dump (listed: %v), count(*) %d", name, got, ok, tbl.Rows)
		}
	}
	if len(counted) != len(want) {
		t.Errorf("the dump counted tables %v, the database has %d", counted, len(want))
	}
	if err := eng.Restore(ctx, srv.Conn(dst), bytes.NewReader(dump.Bytes())); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	checkEmpty(t, o.TempDir)
	compare(t, "after the restore", srv.Contents(t, dst), want)
}

// cancelWriter cancels after n bytes.
type cancelWriter struct {
	n      int
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.n -= len(p)
	if w.n <= 0 {
		w.cancel()
	}
	return len(p), nil
}

func testCancel(t *testing.T, eng engines.Engine, srv Server, o Options) {
	src := database(t, srv, "rb_cancel_"+suffix())
	srv.Exec(t, src, o.HostileSchema)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	_, err := eng.Dump(ctx, srv.Conn(src), &cancelWriter{n: 1, cancel: cancel})
	if err == nil {
		t.Fatal("a dump cancelled mid-way reported success")
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("the cancelled dump took %s to stop", time.Since(start))
	}
	checkEmpty(t, o.TempDir)
}

// failingReader returns data, then err instead of EOF.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, f.err
	}
	return n, err
}

func testFailedRestore(t *testing.T, eng engines.Engine, srv Server, o Options) {
	ctx := context.Background()
	src := database(t, srv, "rb_fsrc_"+suffix())
	target := database(t, srv, "rb_ftarget_"+suffix())
	srv.Exec(t, src, o.HostileSchema)
	var dump bytes.Buffer
	if _, err := eng.Dump(ctx, srv.Conn(src), &dump); err != nil {
		t.Fatal(err)
	}
	// The target holds other rows in tables of the same names.
	srv.Exec(t, target, o.HostileSchema)
	srv.Exec(t, target, o.Change)
	before := srv.Contents(t, target)
	if want := srv.Contents(t, src); equal(before, want) {
		t.Fatal("Options.Change left the target's content as the source's")
	}
	t.Run("InputFails", func(t *testing.T) {
		broken := &failingReader{r: bytes.NewReader(dump.Bytes()), err: errors.New("checksum mismatch")}
		if err := eng.Restore(ctx, srv.Conn(target), broken); err == nil {
			t.Fatal("a restore whose input failed reported success")
		}
		checkEmpty(t, o.TempDir)
		compare(t, "after a restore whose input failed", srv.Contents(t, target), before)
	})
	t.Run("StatementFails", func(t *testing.T) {
		bad := append(bytes.Clone(dump.Bytes()), "\n"+o.Failing+"\n"...)
		if err := eng.Restore(ctx, srv.Conn(target), bytes.NewReader(bad)); err == nil {
			t.Fatal("a restore whose last statement failed reported success")
		}
		checkEmpty(t, o.TempDir)
		compare(t, "after a restore whose last statement failed", srv.Contents(t, target), before)
	})
}

// inspect reads data with a new Inspector, in 4 KiB writes.
func inspect(t *testing.T, eng engines.Engine, data []byte) (engines.Inspection, error) {
	t.Helper()
	in := eng.Inspector()
	for len(data) > 0 {
		n := min(len(data), 4096)
		if _, err := in.Write(data[:n]); err != nil {
			return engines.Inspection{}, err
		}
		data = data[n:]
	}
	return in.Inspection()
}

func sameObjects(a, b []pipeline.SchemaObject) bool {
	return len(pipeline.CompareObjects(a, b, "")) == 0 && len(a) == len(b)
}

// testInspectScratch checks what DATABASE and FULL verification rest on:
// an Inspector reads back from a dump what Dump recorded (every table's
// rows and content hash, the schema objects, the completion marker); a
// cut dump is incomplete; a dump loaded into a scratch database and dumped
// again gives the same tables, hashes and objects; the scratch database
// cannot be created twice and is gone after DropScratch; ReadBack of the
// scratch database gives the dump's rows and objects.
func testInspectScratch(t *testing.T, eng engines.Engine, srv Server, o Options) {
	ctx := context.Background()
	src := database(t, srv, "rb_isrc_"+suffix())
	srv.Exec(t, src, o.HostileSchema)
	want := srv.Contents(t, src)
	var dump bytes.Buffer
	info, err := eng.Dump(ctx, srv.Conn(src), &dump)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Objects) < len(want) {
		t.Fatalf("the dump recorded %d schema objects for %d tables: %v", len(info.Objects), len(want), info.Objects)
	}
	t.Logf("recorded: %s", pipeline.CountObjects(info.Objects))
	for _, tc := range info.Tables {
		if tc.Hash == "" {
			t.Fatalf("table %s.%s: no content hash recorded", tc.Schema, tc.Name)
		}
	}
	got, err := inspect(t, eng, dump.Bytes())
	if err != nil {
		t.Fatalf("Inspection: %v", err)
	}
	if !got.Complete {
		t.Error("a whole dump reads as incomplete")
	}
	if rows, hashes := pipeline.CompareTables(info.Tables, got.Tables, "inspected"); len(rows)+len(hashes) > 0 || len(got.Tables) != len(info.Tables) {
		t.Errorf("inspected tables differ from the dump's: %v %v", rows, hashes)
	}
	if !sameObjects(info.Objects, got.Objects) {
		t.Errorf("inspected objects differ from the dump's:\n%v\n%v", info.Objects, got.Objects)
	}
	t.Run("Truncated", func(t *testing.T) {
		cut, err := inspect(t, eng, dump.Bytes()[:dump.Len()*2/3])
		if err == nil && cut.Complete {
			t.Fatal("two thirds of a dump read as complete")
		}
	})

	name := engines.ScratchPrefix + strings.ReplaceAll(suffix(), "_", "x")
	if err := eng.CreateScratch(ctx, srv.Conn(src), name); err != nil {
		t.Fatalf("CreateScratch: %v", err)
	}
	t.Cleanup(func() { srv.DropDatabase(t, name) })
	if err := eng.CreateScratch(ctx, srv.Conn(src), name); err == nil {
		t.Error("CreateScratch of an existing name succeeded")
	}
	if err := eng.LoadScratch(ctx, srv.Conn(src), name, bytes.NewReader(dump.Bytes())); err != nil {
		t.Fatalf("LoadScratch: %v", err)
	}
	checkEmpty(t, o.TempDir)
	compare(t, "in the scratch database", srv.Contents(t, name), want)
	again, err := eng.Dump(ctx, srv.Conn(name), io.Discard)
	if err != nil {
		t.Fatalf("Dump of the scratch database: %v", err)
	}
	if rows, hashes := pipeline.CompareTables(info.Tables, again.Tables, "restored"); len(rows)+len(hashes) > 0 {
		t.Errorf("the scratch database's dump differs: %v %v", rows, hashes)
	}
	if d := pipeline.CompareObjects(info.Objects, again.Objects, "restored"); len(d) > 0 {
		t.Errorf("the scratch database's objects differ: %v", d)
	}
	back, err := eng.ReadBack(ctx, srv.Conn(name))
	if err != nil {
		t.Fatalf("ReadBack: %v", err)
	}
	if rows, hashes := pipeline.CompareTables(info.Tables, back.Tables, "read back"); len(rows)+len(hashes) > 0 || back.ServerVersion == "" {
		t.Errorf("ReadBack differs from the dump (server %q): %v %v", back.ServerVersion, rows, hashes)
	}
	if d := pipeline.CompareObjects(info.Objects, back.Objects, "read back"); len(d) > 0 {
		t.Errorf("ReadBack's objects differ: %v", d)
	}
	if err := eng.DropScratch(ctx, srv.Conn(src), name); err != nil {
		t.Fatalf("DropScratch: %v", err)
	}
	if srv.Exists(t, name) {
		t.Fatal("the scratch database is still there after DropScratch")
	}
	if err := eng.DropScratch(ctx, srv.Conn(src), name); err != nil {
		t.Fatalf("DropScratch of a database already gone: %v", err)
	}

	t.Run("LoadFails", func(t *testing.T) {
		name := engines.ScratchPrefix + strings.ReplaceAll(suffix(), "_", "x")
		if err := eng.CreateScratch(ctx, srv.Conn(src), name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.DropDatabase(t, name) })
		bad := append(bytes.Clone(dump.Bytes()), "\n"+o.Failing+"\n"...)
		if err := eng.LoadScratch(ctx, srv.Conn(src), name, bytes.NewReader(bad)); err == nil {
			t.Fatal("a dump whose last statement fails loaded")
		}
		checkEmpty(t, o.TempDir)
		if err := eng.DropScratch(ctx, srv.Conn(src), name); err != nil || srv.Exists(t, name) {
			t.Fatalf("DropScratch after a failed load: %v", err)
		}
	})
}

func equal(a, b map[string]Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func compare(t *testing.T, when string, got, want map[string]Table) {
	t.Helper()
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s: table %q is missing", when, name)
		case g != w:
			t.Errorf("%s: table %q has %d rows (hash %s), want %d (hash %s)", when, name, g.Rows, g.Hash, w.Rows, w.Hash)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: unexpected table %q", when, name)
		}
	}
}

func checkEmpty(t *testing.T, dir string) {
	t.Helper()
	if dir == "" {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

var counter int

func suffix() string {
	counter++
	return strconv.Itoa(os.Getpid()%10000) + "_" + strconv.Itoa(counter)
}
