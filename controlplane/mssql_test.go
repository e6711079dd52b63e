package controlplane_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rahatback/rahatback/agent"
	"github.com/rahatback/rahatback/blobendpoint"
	"github.com/rahatback/rahatback/engines/mssql"
	"github.com/rahatback/rahatback/engines/mssql/mssqlsim"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/testsupport"
)

// TestSQLServerThroughAgent drives SQL Server backups through the whole
// system: the API, the stream, an agent with its blob endpoint on HTTPS,
// and the simulated server (package mssqlsim: no SQL Server runs here),
// which uploads and reads its backups through that endpoint with
// Microsoft's azblob client. An encrypted full job backs up, passes
// DATABASE (the server's HEADERONLY, FILELISTONLY, VERIFYONLY) and FULL
// (restore under a scratch name, CHECKDB, row counts) verification,
// downloads as the server's exact backup, and restores over the changed
// database; an incremental job dedupes an unchanged database.
func TestSQLServerThroughAgent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, token, st, _ := startServe(t, ctx, "dba@example.com", "--agent-offline-after", "30s")

	// The agent's endpoint, and the server that trusts its certificate.
	certPEM, certFile, keyFile, err := mssqlsim.Cert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hub, err := blobendpoint.NewHub(blobendpoint.HubOptions{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	sim := mssqlsim.New(certPEM)
	tables := []pipeline.TableCount{{Schema: "dbo", Name: "Customers", Rows: 1200}, {Schema: "sales", Name: "Orders", Rows: 56000}}
	sim.Put("Sales", &mssqlsim.DB{Tables: tables, Payload: 9<<20 + 777, Seed: 42})
	runtime := t.TempDir()
	eng := mssql.New(mssql.Options{Endpoint: "https://" + hub.Addr().String(), Hub: hub, Connector: sim.Connector})
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(agentCtx, agent.RunOpts{State: st, Logger: testsupport.Logger(t), LocalStorageDir: t.TempDir(),
			RuntimeDir: runtime, Engines: agent.DefaultEngines(runtime, eng)})
	}()
	defer func() {
		stopAgent()
		<-agentDone
	}()
	c.waitAgents(token, 15*time.Second, "online", func(l []agentView) bool { return agentStatus(l, st.AgentID) == "online" })

	dbSpec := map[string]any{"name": "sales", "type": "mssql", "host": "sql.example", "port": 1433, "username": "backup",
		"password": sim.Password, "database": "Sales", "encrypt": "strict", "agentId": st.AgentID}
	var out struct {
		Success bool
		Message string
		Version string
	}
	c.want(c.call("POST", "/v1/databases/test-connection", token, dbSpec), 200).decode(t, &out)
	if !out.Success || !strings.Contains(out.Version, "Microsoft SQL Server 2022") {
		t.Fatalf("test-connection: %+v", out)
	}
	var d struct{ ID string }
	c.want(c.call("POST", "/v1/databases", token, dbSpec), 201).decode(t, &d)

	const password = "native backups 18"
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": d.ID, "name": "sales full",
		"isEncrypted": true, "encryptionPassword": password, "autoVerifyAfterBackup": true, "verificationLevel": "DATABASE"}), 201).decode(t, &job)
	h := c.waitBackup(token, c.runJob(token, job.ID), true)
	if h.Status != "success" || !strings.HasSuffix(h.FileName, ".bak.zst.age") {
		t.Fatalf("backup: %+v", h)
	}
	passedChecks(t, h, "media header", "backup header", "file list", "server verification")
	v := c.verify(token, h.ID, "FULL", 120*time.Second)
	passedChecks(t, v, "scratch database", "test restore", "restored tables", "cleanup")
	if names := sim.Names(); !slices.Equal(names, []string{"Sales"}) {
		t.Fatalf("after FULL verification the server holds %q", names)
	}

	// The download is the server's backup, compressed and encrypted.
	file := filepath.Join(t.TempDir(), h.FileName)
	downloadTo(t, c.base, token, "/v1/backups/history/"+h.ID+"/download", file)
	key := exportedKey(t, c.base, token, job.ID, password)
	plain, err := exec.Command("sh", "-c", `age -d -i "$1" "$2" | zstd -dc`, "sh", key, file).Output()
	if err != nil {
		t.Fatalf("age -d | zstd -d: %v", err)
	}
	if want := mssqlsim.BackupOf("Sales", sim.Get("Sales"), true); !bytes.Equal(plain, want) {
		t.Fatalf("the download opens to %d bytes, the server's backup has %d", len(plain), len(want))
	}

	// The database changes; the restore brings the backup back.
	sim.Put("Sales", &mssqlsim.DB{Tables: []pipeline.TableCount{{Schema: "dbo", Name: "Scratch", Rows: 1}}, Payload: 100, Seed: 1})
	var r struct{ RestoreHistoryID string }
	c.want(c.call("POST", "/v1/backups/history/"+h.ID+"/restore", token, map[string]any{"targetDatabaseId": d.ID}), 202).decode(t, &r)
	if res := c.waitRestore(token, r.RestoreHistoryID, 120*time.Second); res["status"] != "success" {
		t.Fatalf("restore: %v", res)
	}
	if got := sim.Get("Sales"); got == nil || !slices.Equal(got.Tables, tables) || !slices.Equal(sim.Names(), []string{"Sales"}) {
		t.Fatalf("after the restore the server holds %q, Sales %+v", sim.Names(), got)
	}

	// An incremental job: the server does not compress, and an unchanged
	// database's second backup stores next to nothing.
	var inc struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": d.ID, "name": "sales inc",
		"backupType": "incremental"}), 201).decode(t, &inc)
	h1 := c.waitBackup(token, c.runJob(token, inc.ID), false)
	h2 := c.waitBackup(token, c.runJob(token, inc.ID), false)
	if h1.Status != "success" || h2.Status != "success" || h2.BackupType != "incremental" || h2.ParentID != h1.ID ||
		h2.NewBytes == nil || *h2.NewBytes*20 > h2.RawSize {
		t.Fatalf("incremental SQL Server backups: %+v\n%+v", h1, h2)
	}
	sim.Put("Sales", &mssqlsim.DB{Tables: []pipeline.TableCount{{Schema: "dbo", Name: "Scratch", Rows: 1}}, Payload: 100, Seed: 1})
	c.want(c.call("POST", "/v1/backups/history/"+h2.ID+"/restore", token, map[string]any{"targetDatabaseId": d.ID}), 202).decode(t, &r)
	if res := c.waitRestore(token, r.RestoreHistoryID, 120*time.Second); res["status"] != "success" {
		t.Fatalf("restore of the incremental: %v", res)
	}
	if got := sim.Get("Sales"); got == nil || !slices.Equal(got.Tables, tables) {
		t.Fatalf("after the incremental's restore Sales is %+v", got)
	}
	var backups []string
	for _, q := range sim.Statements {
		if strings.HasPrefix(q, "BACKUP DATABASE") {
			backups = append(backups, q)
		}
	}
	if len(backups) != 3 || !strings.Contains(backups[0], ", COMPRESSION,") ||
		!strings.Contains(backups[1], "NO_COMPRESSION") || !strings.Contains(backups[2], "NO_COMPRESSION") {
		t.Fatalf("BACKUP statements (the full job's compressed, the incremental job's not): %q", backups)
	}
	if _, left := sim.Secrets(); left != 0 {
		t.Fatalf("%d credentials left on the server", left)
	}
}
