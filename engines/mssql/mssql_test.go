package mssql_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rahatback/rahatback/blobendpoint"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mssql"
	"github.com/rahatback/rahatback/engines/mssql/mssqlsim"
	"github.com/rahatback/rahatback/pipeline"
)

// rig is an engine with a blob endpoint (or a shared directory) and the
// simulated server it drives.
type rig struct {
	eng  *mssql.Engine
	o    mssql.Options
	sim  *mssqlsim.Server
	hub  *blobendpoint.Hub
	logs *bytes.Buffer
	conn engines.Conn
}

func newRig(t testing.TB, disk bool) *rig {
	t.Helper()
	dir := t.TempDir()
	certPEM, certFile, keyFile, err := mssqlsim.Cert(dir)
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	o := mssql.Options{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// The simulated server reads 3 ranges of 4 MiB at once, which may
		// arrive in any order: the window keeps 16 MiB behind (SQL Server's
		// buffers in flight, as the default 64 MiB assumes).
		Window: blobendpoint.WindowOptions{Head: 1 << 20, Behind: 16 << 20, Ahead: 4 << 20}}
	r := &rig{sim: mssqlsim.New(certPEM), logs: logs}
	if disk {
		o.DiskDir = filepath.Join(dir, "shared")
		if err := os.Mkdir(o.DiskDir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		hub, err := blobendpoint.NewHub(blobendpoint.HubOptions{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, Logger: o.Logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hub.Close() })
		o.Hub, r.hub = hub, hub
		o.Endpoint = "https://" + hub.Addr().String()
	}
	o.Connector = r.sim.Connector
	r.eng, r.o = mssql.New(o), o
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine log:\n%s", logs.String())
		}
	})
	// A hostile name: quoting must hold all the way through.
	r.conn = engines.Conn{Host: "sql.example", Port: 1433, Username: "backup", Password: r.sim.Password, Database: "Sales ]'; DROP"}
	r.sim.Put(r.conn.Database, &mssqlsim.DB{Tables: []pipeline.TableCount{{Schema: "dbo", Name: "Customers", Rows: 1200}, {Schema: "sales", Name: "Orders", Rows: 56000}},
		Payload: 11<<20 + 12345, Seed: 7})
	return r
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// noSecrets fails when the SAS of a credential the engine created, or the
// password, shows in its logs.
func (r *rig) noSecrets(t *testing.T) {
	t.Helper()
	secrets, _ := r.sim.Secrets()
	for _, sig := range secrets {
		if strings.Contains(r.logs.String(), sig) {
			t.Fatal("the engine logged a credential's secret")
		}
	}
	if strings.Contains(r.logs.String(), r.sim.Password) {
		t.Fatal("the engine logged the password")
	}
}

func (r *rig) dump(t *testing.T, c engines.Conn) ([]byte, engines.DumpInfo) {
	t.Helper()
	var buf bytes.Buffer
	info, err := r.eng.Dump(context.Background(), c, &buf)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return buf.Bytes(), info
}

func TestDumpToURL(t *testing.T) {
	r := newRig(t, false)
	got, info := r.dump(t, r.conn)
	want := mssqlsim.BackupOf(r.conn.Database, r.sim.Get(r.conn.Database), true)
	if !bytes.Equal(got, want) {
		t.Fatalf("the dump has %d bytes (sha256 %x), the server's backup %d (sha256 %x)", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	if !slices.Equal(info.Tables, r.sim.Get(r.conn.Database).Tables) || info.Format != "native" ||
		!strings.Contains(info.ServerVersion, "16.0.4150.1") || !strings.Contains(info.ToolVersion, "COMPRESSION") {
		t.Fatalf("DumpInfo = %+v", info)
	}
	var backupStmt, credential string
	for _, q := range r.sim.Statements {
		if strings.HasPrefix(q, "BACKUP") {
			backupStmt = q
		}
		if rest, ok := strings.CutPrefix(q, "CREATE CREDENTIAL ["); ok {
			credential, _, _ = strings.Cut(rest, "]")
		}
	}
	wantStmt := fmt.Sprintf("BACKUP DATABASE [Sales ]]'; DROP] TO URL = N'%s/backup.bak' WITH COPY_ONLY, CHECKSUM, FORMAT, INIT, COMPRESSION, MAXTRANSFERSIZE = 4194304, BLOCKSIZE = 65536, STATS = 5;", credential)
	if backupStmt != wantStmt {
		t.Fatalf("sent %q\nwant %q", backupStmt, wantStmt)
	}
	if !strings.HasPrefix(credential, r.o.Endpoint+"/rahatback-") {
		t.Fatalf("credential %q is not a container of the endpoint", credential)
	}
	if _, left := r.sim.Secrets(); left != 0 {
		t.Fatalf("%d credentials left on the server", left)
	}
	// The container is gone with its operation.
	resp, err := r.sim.Client.Get(credential + "/backup.bak?restype=container")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("the finished backup's container answers %d, want 404", resp.StatusCode)
	}
	r.noSecrets(t)

	t.Run("ForChunks", func(t *testing.T) {
		c := r.conn
		c.ForChunks = true
		got, info := r.dump(t, c)
		if !bytes.Equal(got, mssqlsim.BackupOf(c.Database, r.sim.Get(c.Database), false)) || strings.Contains(info.ToolVersion, "COMPRESSION") {
			t.Fatalf("a chunked job's backup was compressed by the server: %s", info.ToolVersion)
		}
	})
	t.Run("StaleCredentials", func(t *testing.T) {
		// What a killed agent left: a credential of this endpoint's, and
		// one that is not RahatBack's.
		stale, other := r.o.Endpoint+"/rahatback-00112233deadbeef", "https://backups.example.com/nightly"
		r.sim.Credentials[stale], r.sim.Credentials[other] = "sig=old", "sig=theirs"
		r.dump(t, r.conn)
		if _, ok := r.sim.Credentials[stale]; ok {
			t.Fatal("a stale credential of this endpoint was kept")
		}
		if _, ok := r.sim.Credentials[other]; !ok {
			t.Fatal("another credential was dropped")
		}
		delete(r.sim.Credentials, other)
	})
	t.Run("Express", func(t *testing.T) {
		r.sim.Edition = 4
		defer func() { r.sim.Edition = 3 }()
		if _, info := r.dump(t, r.conn); strings.Contains(info.ToolVersion, "COMPRESSION") {
			t.Fatalf("Express was asked to compress: %s", info.ToolVersion)
		}
	})
}

// failingWriter fails once n bytes went through.
type failingWriter struct{ n int }

var errStorage = errors.New("storage: upload refused")

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errStorage
	}
	return len(p), nil
}

func TestDumpFailures(t *testing.T) {
	r := newRig(t, false)
	t.Run("StorageFails", func(t *testing.T) {
		_, err := r.eng.Dump(context.Background(), r.conn, &failingWriter{n: 5 << 20})
		if err == nil || !strings.Contains(err.Error(), "BACKUP DATABASE failed") || !strings.Contains(err.Error(), errStorage.Error()) {
			t.Fatalf("Dump into a failing storage: %v", err)
		}
		if _, left := r.sim.Secrets(); left != 0 {
			t.Fatalf("%d credentials left", left)
		}
	})
	t.Run("NoDatabase", func(t *testing.T) {
		c := r.conn
		c.Database = "Nope"
		if _, err := r.eng.Dump(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("Dump of a missing database: %v", err)
		}
	})
	t.Run("WrongPassword", func(t *testing.T) {
		c := r.conn
		c.Password = "wrong"
		if _, err := r.eng.Test(context.Background(), c); err == nil || !strings.Contains(err.Error(), "Login failed") {
			t.Fatalf("Test with a wrong password: %v", err)
		}
	})
	t.Run("NoDevice", func(t *testing.T) {
		e := mssql.New(mssql.Options{Connector: r.sim.Connector})
		if _, err := e.Dump(context.Background(), r.conn, io.Discard); err == nil || !strings.Contains(err.Error(), "no way to receive a SQL Server backup") {
			t.Fatalf("Dump with neither mode: %v", err)
		}
		v, err := e.Test(context.Background(), r.conn)
		if err != nil || v != "Microsoft SQL Server 2022 (RTM-CU15) - 16.0.4150.1 (X64) (Simulated Edition (64-bit))" {
			t.Fatalf("Test = %q, %v", v, err)
		}
	})
}

// brokenTail is a backup reader whose end fails, as the agent's checked
// reader does when the stored bytes do not match their checksum.
type brokenTail struct {
	r   io.Reader
	err error
}

func (b brokenTail) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, b.err
	}
	return n, err
}

func TestRestore(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(map[bool]string{false: "URL", true: "Disk"}[disk], func(t *testing.T) {
			r := newRig(t, disk)
			backup, _ := r.dump(t, r.conn)
			// The database then changes; the restore brings the backup back.
			src := r.sim.Get(r.conn.Database)
			before := *src
			src.Tables = []pipeline.TableCount{{Schema: "dbo", Name: "Other", Rows: 3}}

			errChecksum := errors.New("the backup does not match its recorded sha256")
			err := r.eng.Restore(context.Background(), r.conn, engines.WithSize(brokenTail{bytes.NewReader(backup), errChecksum}, int64(len(backup))))
			if !errors.Is(err, errChecksum) {
				t.Fatalf("a restore of a damaged backup: %v", err)
			}
			if names := r.sim.Names(); !slices.Equal(names, []string{r.conn.Database}) || r.sim.Get(r.conn.Database) != src {
				t.Fatalf("after a failed restore the server holds %q", names)
			}
			if err := r.eng.Restore(context.Background(), r.conn, io.MultiReader(bytes.NewReader(backup))); err == nil || !strings.Contains(err.Error(), "size is unknown") {
				t.Fatalf("a restore without the size: %v", err)
			}

			if err := r.eng.Restore(context.Background(), r.conn, engines.WithSize(bytes.NewReader(backup), int64(len(backup)))); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			got := r.sim.Get(r.conn.Database)
			if names := r.sim.Names(); !slices.Equal(names, []string{r.conn.Database}) {
				t.Fatalf("after the restore the server holds %q", names)
			}
			if !slices.Equal(got.Tables, before.Tables) {
				t.Fatalf("restored tables %v, want %v", got.Tables, before.Tables)
			}
			// Over an existing database: the files go beside its own.
			placed(t, got, "/srv/sqldata/", "/srv/sqllog/", "Sales ]'; DROP_rahatback_new_")
			if _, left := r.sim.Secrets(); left != 0 {
				t.Fatalf("%d credentials left", left)
			}
			if disk {
				if left, _ := os.ReadDir(r.o.DiskDir); len(left) != 0 {
					t.Fatalf("files left in the shared directory: %v", left)
				}
			}
			r.noSecrets(t)

			// Into a name the server does not have yet: no swap.
			c := r.conn
			c.Database = "Sales copy"
			if err := r.eng.Restore(context.Background(), c, engines.WithSize(bytes.NewReader(backup), int64(len(backup)))); err != nil {
				t.Fatalf("Restore into a new database: %v", err)
			}
			if names := r.sim.Names(); !slices.Equal(names, []string{"Sales ]'; DROP", "Sales copy"}) {
				t.Fatalf("the server holds %q", names)
			}
			placed(t, r.sim.Get("Sales copy"), "/var/opt/mssql/data/", "/var/opt/mssql/log/", "Sales copy_rahatback_new_")

			// The swap fails (another session holds the database): the
			// target stays as it was, the restored copy goes.
			c.Database = r.conn.Database
			keep := r.sim.Get(c.Database)
			r.sim.FailRename = c.Database
			err = r.eng.Restore(context.Background(), c, engines.WithSize(bytes.NewReader(backup), int64(len(backup))))
			r.sim.FailRename = ""
			if err == nil || !strings.Contains(err.Error(), "left as it was") || !strings.Contains(err.Error(), "5030") {
				t.Fatalf("a restore whose swap fails: %v", err)
			}
			if names := r.sim.Names(); !slices.Equal(names, []string{"Sales ]'; DROP", "Sales copy"}) || r.sim.Get(c.Database) != keep {
				t.Fatalf("after a failed swap the server holds %q", names)
			}
		})
	}
}

// placed fails t unless every file of d was restored as <prefix>… in dir,
// its log in logDir.
func placed(t *testing.T, d *mssqlsim.DB, dir, logDir, prefix string) {
	t.Helper()
	if d == nil || len(d.Moves) != 2 {
		t.Fatalf("restored database %+v", d)
	}
	for _, m := range d.Moves {
		want := dir
		if strings.HasSuffix(m.Logical, "_log") {
			want = logDir
		}
		if !strings.HasPrefix(m.Physical, want+prefix) || strings.ContainsAny(m.Physical[len(want):], `/\`) {
			t.Fatalf("file %s placed at %s, want %s%s…", m.Logical, m.Physical, want, prefix)
		}
	}
}

func TestVerifyAndScratch(t *testing.T) {
	r := newRig(t, false)
	backup, info := r.dump(t, r.conn)
	sized := func() io.Reader { return engines.WithSize(bytes.NewReader(backup), int64(len(backup))) }

	checks, err := r.eng.VerifyBackup(context.Background(), r.conn, sized())
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, c := range checks {
		names = append(names, c.Name)
		if !c.OK {
			t.Errorf("check %s failed: %s", c.Name, c.Detail)
		}
	}
	if !slices.Equal(names, []string{"backup header", "file list", "server verification"}) {
		t.Fatalf("checks %v", names)
	}

	// Another database's backup, and a damaged one.
	c := r.conn
	c.Database = "Inventory"
	checks, _ = r.eng.VerifyBackup(context.Background(), c, sized())
	if checks[0].OK || !strings.Contains(checks[0].Detail, "backup set of Sales ]'; DROP") {
		t.Fatalf("a backup of another database passed: %+v", checks[0])
	}
	bad := bytes.Clone(backup)
	bad[len(bad)/2] ^= 1
	checks, _ = r.eng.VerifyBackup(context.Background(), r.conn, engines.WithSize(bytes.NewReader(bad), int64(len(bad))))
	if last := checks[len(checks)-1]; last.Name != "server verification" || last.OK || !strings.Contains(last.Detail, "checksum") {
		t.Fatalf("a damaged backup: %+v", last)
	}

	in := r.eng.Inspector()
	in.Write(backup[:2])
	in.Write(backup[2:])
	if got, err := in.Inspection(); err != nil || !got.Complete {
		t.Fatalf("Inspection = %+v, %v", got, err)
	}
	in = r.eng.Inspector()
	in.Write([]byte("-- PostgreSQL database dump"))
	if _, err := in.Inspection(); err == nil {
		t.Fatal("a text dump passed as a native backup")
	}

	// FULL: the scratch database.
	const scratch = engines.ScratchPrefix + "0123abcd"
	if err := r.eng.CreateScratch(context.Background(), r.conn, scratch); err != nil {
		t.Fatal(err)
	}
	if err := r.eng.LoadScratch(context.Background(), r.conn, scratch, sized()); err != nil {
		t.Fatalf("LoadScratch: %v", err)
	}
	sc := r.conn
	sc.Database = scratch
	back, err := r.eng.ReadBack(context.Background(), sc)
	if err != nil {
		t.Fatal(err)
	}
	if rows, _ := pipeline.CompareTables(info.Tables, back.Tables, "restored"); len(rows) > 0 {
		t.Fatalf("read back: %v", rows)
	}
	if err := r.eng.CreateScratch(context.Background(), r.conn, scratch); err == nil {
		t.Fatal("CreateScratch over an existing database succeeded")
	}
	if err := r.eng.DropScratch(context.Background(), r.conn, scratch); err != nil {
		t.Fatal(err)
	}
	if err := r.eng.DropScratch(context.Background(), r.conn, scratch); err != nil {
		t.Fatalf("dropping a missing scratch database: %v", err)
	}
	if slices.Contains(r.sim.Names(), scratch) {
		t.Fatal("the scratch database is still there")
	}

	r.sim.FailCheckDB = true
	if err := r.eng.LoadScratch(context.Background(), r.conn, scratch, sized()); err == nil || !strings.Contains(err.Error(), "DBCC CHECKDB") {
		t.Fatalf("LoadScratch with CHECKDB errors: %v", err)
	}
	r.sim.FailCheckDB = false
	r.sim.CanCreate = false
	if err := r.eng.CreateScratch(context.Background(), r.conn, scratch+"x"); !errors.Is(err, engines.ErrPrivilege) {
		t.Fatalf("CreateScratch without the privilege: %v", err)
	}
	if _, left := r.sim.Secrets(); left != 0 {
		t.Fatalf("%d credentials left", left)
	}
	r.noSecrets(t)
}

func TestDumpToDisk(t *testing.T) {
	r := newRig(t, true)
	got, info := r.dump(t, r.conn)
	if !bytes.Equal(got, mssqlsim.BackupOf(r.conn.Database, r.sim.Get(r.conn.Database), true)) || !strings.Contains(info.ToolVersion, "TO DISK") {
		t.Fatalf("TO DISK dump differs, %s", info.ToolVersion)
	}
	if left, _ := os.ReadDir(r.o.DiskDir); len(left) != 0 {
		t.Fatalf("files left in the shared directory: %v", left)
	}
}
