package mssql

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/microsoft/go-mssqldb/msdsn"

	"github.com/rahatback/rahatback/blobendpoint"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/pipeline"
)

// TestLiveServer runs the engine against a real SQL Server. None can run
// on RahatBack's build machines (no Debian package, no container engine),
// so it needs, from the environment:
//
//	RAHATBACK_MSSQL_DSN       sqlserver://user:password@host:port?encrypt=… (a login
//	                          with dbcreator and ALTER ANY CREDENTIAL)
//	and either, for TO URL (the server must trust the certificate and
//	resolve the endpoint's host name):
//	RAHATBACK_MSSQL_ENDPOINT  https://this-host:8443
//	RAHATBACK_MSSQL_LISTEN    :8443
//	RAHATBACK_MSSQL_CERT, RAHATBACK_MSSQL_KEY   PEM files
//	or, for TO DISK (this test beside the server):
//	RAHATBACK_MSSQL_DISK_DIR  a directory both can read and write
func TestLiveServer(t *testing.T) {
	dsn := os.Getenv("RAHATBACK_MSSQL_DSN")
	if dsn == "" {
		t.Skip("RAHATBACK_MSSQL_DSN is not set: no live SQL Server to test against (see the comment of TestLiveServer and the README)")
	}
	cfg, err := msdsn.Parse(dsn)
	if err != nil {
		t.Fatalf("RAHATBACK_MSSQL_DSN: %v", err)
	}
	c := engines.Conn{Host: cfg.Host, Port: int(cfg.Port), Instance: cfg.Instance, Username: cfg.User, Password: cfg.Password, Database: "master"}
	switch cfg.Encryption {
	case msdsn.EncryptionStrict:
		c.Encrypt = EncryptStrict
	case msdsn.EncryptionOff:
		c.Encrypt = EncryptOptional
	}
	o := Options{DiskDir: os.Getenv("RAHATBACK_MSSQL_DISK_DIR")}
	if ep := os.Getenv("RAHATBACK_MSSQL_ENDPOINT"); ep != "" {
		hub, err := blobendpoint.NewHub(blobendpoint.HubOptions{Listen: os.Getenv("RAHATBACK_MSSQL_LISTEN"),
			CertFile: os.Getenv("RAHATBACK_MSSQL_CERT"), KeyFile: os.Getenv("RAHATBACK_MSSQL_KEY")})
		if err != nil {
			t.Fatal(err)
		}
		defer hub.Close()
		o.Hub, o.Endpoint = hub, ep
	}
	if o.Hub == nil && o.DiskDir == "" {
		t.Fatal("set RAHATBACK_MSSQL_ENDPOINT (with _LISTEN, _CERT, _KEY) or RAHATBACK_MSSQL_DISK_DIR")
	}
	e := New(o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	v, err := e.Test(ctx, c)
	if err != nil {
		t.Fatalf("Test: %v", err)
	}
	t.Logf("server: %s", v)

	name := "rahatback_live_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	db, err := e.open(c)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q, _ := QuoteName(name)
	for _, s := range []string{
		"CREATE DATABASE " + q,
		"CREATE TABLE " + q + ".dbo.customers (id int PRIMARY KEY, name nvarchar(100))",
		"INSERT INTO " + q + ".dbo.customers SELECT TOP 5000 ROW_NUMBER() OVER (ORDER BY (SELECT NULL)), N'customer ' + CAST(ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS nvarchar(20)) FROM sys.all_objects a CROSS JOIN sys.all_objects b",
	} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	restored := name + "_restored"
	defer func() {
		for _, n := range []string{name, restored, engines.ScratchPrefix + "live"} {
			e.drop(ctx, db, n)
		}
	}()
	src := c
	src.Database = name
	var dump bytes.Buffer
	info, err := e.Dump(ctx, src, &dump)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	t.Logf("backup: %d bytes, %s, tables %v", dump.Len(), info.ToolVersion, info.Tables)
	if len(info.Tables) != 1 || info.Tables[0].Rows != 5000 {
		t.Fatalf("tables %v, want dbo.customers with 5000 rows", info.Tables)
	}
	sized := func() *bytes.Reader { return bytes.NewReader(dump.Bytes()) }
	checks, err := e.VerifyBackup(ctx, src, engines.WithSize(sized(), int64(dump.Len())))
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range checks {
		t.Logf("%s: %v: %s", ch.Name, ch.OK, ch.Detail)
		if !ch.OK {
			t.Errorf("check %s failed", ch.Name)
		}
	}
	dst := c
	dst.Database = restored
	if err := e.Restore(ctx, dst, engines.WithSize(sized(), int64(dump.Len()))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	// Over an existing database: swapped in.
	if err := e.Restore(ctx, dst, engines.WithSize(sized(), int64(dump.Len()))); err != nil {
		t.Fatalf("Restore over an existing database: %v", err)
	}
	back, err := e.ReadBack(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if rows, _ := pipeline.CompareTables(info.Tables, back.Tables, "restored"); len(rows) > 0 {
		t.Fatalf("restored: %v", rows)
	}
	scratch := engines.ScratchPrefix + "live"
	if err := e.CreateScratch(ctx, c, scratch); err != nil {
		t.Fatal(err)
	}
	if err := e.LoadScratch(ctx, c, scratch, engines.WithSize(sized(), int64(dump.Len()))); err != nil {
		t.Fatalf("LoadScratch (restore and DBCC CHECKDB): %v", err)
	}
	if err := e.DropScratch(ctx, c, scratch); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(os.Stderr, "live SQL Server test passed against", v)
}
