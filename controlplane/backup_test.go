package controlplane_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/testsupport"
)

// scratchDB creates a database owned by the cluster superuser, dropped when
// t ends, and returns a connection to it.
func scratchDB(t *testing.T, name string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	if err := testsupport.AdminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = testsupport.AdminExec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	u := testsupport.Cluster().URL("postgres")
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// snapshot returns every user table of the database with all its rows in
// a canonical order, as text: what a user compares after a restore.
func snapshot(t *testing.T, conn *pgx.Conn) map[string][]string {
	t.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	var tables [][2]string
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, [2]string{s, n})
	}
	out := map[string][]string{}
	for _, tb := range tables {
		id := pgx.Identifier{tb[0], tb[1]}.Sanitize()
		var lines []string
		r, err := conn.Query(ctx, "SELECT t::text FROM "+id+" t ORDER BY t::text")
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var line string
			if err := r.Scan(&line); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, line)
		}
		out[tb[0]+"."+tb[1]] = lines
	}
	return out
}

type historyView struct {
	ID                 string
	BackupJobID        string
	Status             string
	CompletedAt        *time.Time
	FileName           string
	FileSize           int64
	StorageKey         string
	ChecksumValue      string
	ErrorMessage       string
	VerificationStatus string
	VerificationResult struct {
		OverallStatus      string
		VerificationMethod string
		Checks             []struct {
			Check   string
			Passed  bool
			Message string
		}
	}
	LastRestoreStatus string
	Duration          float64 // seconds, as the agent measured the run
	ExpireReason      string
	PurgedAt          *time.Time
	Manifest          struct {
		Engine      string
		Consistency string
		Tables      []struct {
			Schema string
			Name   string
			Rows   int64
		}
		Chain *struct {
			Type, Parent, Base string
			DependsOn          []string
			Chunks, NewChunks  int
			NewRawBytes        int64
			DumpSha256         string
			Fallback           string
		}
	}
	BackupType string
	Chunked    bool
	ParentID   string
	BaseID     string
	DependsOn  []string
	RawSize    int64
	NewBytes   *int64
	DedupRatio *float64
}

func (c client) history(token, id string) historyView {
	c.t.Helper()
	var h historyView
	c.want(c.call("GET", "/v1/backups/history/"+id, token, nil), 200).decode(c.t, &h)
	return h
}

// waitHistory polls a run until ok accepts it.
func (c client) waitHistory(token, id string, within time.Duration, what string, ok func(historyView) bool) historyView {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		h := c.history(token, id)
		if ok(h) {
			return h
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("backup %s not %s within %s: %+v", id, what, within, h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c client) waitRestore(token, id string, within time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var r map[string]any
		c.want(c.call("GET", "/v1/restores/"+id, token, nil), 200).decode(c.t, &r)
		if r["status"] == "success" || r["status"] == "failed" {
			return r
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("restore %s not finished within %s: %v", id, within, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c client) createDB(token, name, database string) string {
	c.t.Helper()
	u, _ := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
	var d struct{ ID string }
	c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": name, "type": "postgresql",
		"host": "127.0.0.1", "port": testsupport.Cluster().Port(), "username": u.User, "password": u.Password,
		"database": database}), 201).decode(c.t, &d)
	return d.ID
}

func (c client) runJob(token, jobID string) string {
	c.t.Helper()
	var out struct{ HistoryID, Status string }
	c.want(c.call("POST", "/v1/backups/jobs/"+jobID+"/run", token, nil), 202).decode(c.t, &out)
	return out.HistoryID
}

func findFiles(t *testing.T, root, substr string) []string {
	t.Helper()
	var out []string
	_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.Contains(filepath.Base(p), substr) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestBackupRestoreVerify is the product's core loop through the API:
// backup, download, restore into another database, verification, a damaged
// backup, and a replay of the event stream.
func TestBackupRestoreVerify(t *testing.T) {
	ctx := context.Background()
	dbURL, pool := testsupport.NewDatabase(t)
	suffix := testsupport.RandomString(3)
	srcName := "-src \"shop\" db=" + suffix // a name pg_dump must not take for an option or a conninfo
	src := scratchDB(t, srcName)
	_, err := src.Exec(ctx, `
		CREATE SCHEMA "Sales Dept";
		CREATE TABLE "Sales Dept"."Order ""Lines""" (id bigint PRIMARY KEY, note text, amount numeric(12,2), at timestamptz, doc jsonb);
		INSERT INTO "Sales Dept"."Order ""Lines"""
			SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'note ' || g || E'\ttab\nnewline \\ back' END,
			       g * 1.25, '2024-01-01'::timestamptz + g * interval '1 minute',
			       CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'ü', 'ünïcode') END
			FROM generate_series(1, 20000) g;
		CREATE TABLE public.empty_one (x int);
		CREATE TABLE public.people (name text, nick text);
		INSERT INTO public.people VALUES ('Ada', NULL), (NULL, NULL), ('O''Brien', '\N');`)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, src)

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--run-lost-after", "3s"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("core@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	srcID := c.createDB(token, "shop", srcName)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "nightly",
		"autoVerifyAfterBackup": true, "verificationLevel": "BASIC"}), 201).decode(t, &job)

	runID := c.runJob(token, job.ID)
	h := c.waitHistory(token, runID, 60*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		t.Fatalf("backup failed: %s", h.ErrorMessage)
	}
	h = c.waitHistory(token, runID, 30*time.Second, "verified", func(h historyView) bool { return h.VerificationStatus != "PENDING" })
	if h.VerificationStatus != "PASSED" || h.VerificationResult.OverallStatus != "PASSED" || len(h.VerificationResult.Checks) < 4 {
		t.Fatalf("auto verification: %+v", h.VerificationResult)
	}
	t.Run("Manifest", func(t *testing.T) {
		counts := map[string]int64{}
		for _, tb := range h.Manifest.Tables {
			counts[tb.Schema+"."+tb.Name] = tb.Rows
		}
		wantCounts := map[string]int64{`Sales Dept.Order "Lines"`: 20000, "public.empty_one": 0, "public.people": 3}
		if !reflect.DeepEqual(counts, wantCounts) || h.Manifest.Engine != "postgresql" {
			t.Fatalf("manifest tables %v, want %v", counts, wantCounts)
		}
		files := findFiles(t, dataDir, ".manifest.json")
		if len(files) != 1 {
			t.Fatalf("manifest files beside the backup: %v", files)
		}
	})

	t.Run("Download", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/v1/backups/history/"+runID+"/download", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		hsh := sha256.New()
		n, err := io.Copy(hsh, resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("download: %d %v", resp.StatusCode, err)
		}
		if got := hex.EncodeToString(hsh.Sum(nil)); got != h.ChecksumValue || n != h.FileSize {
			t.Fatalf("downloaded %d bytes sha256 %s, recorded %d %s", n, got, h.FileSize, h.ChecksumValue)
		}

		// It restores with standard tools alone: zstd -d | psql.
		file := filepath.Join(t.TempDir(), h.FileName)
		resp2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		f, _ := os.Create(file)
		_, _ = io.Copy(f, resp2.Body)
		resp2.Body.Close()
		f.Close()
		plainName := "plain " + suffix
		plain := scratchDB(t, plainName)
		cfg, _ := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
		cmd := exec.Command("sh", "-c", `zstd -dc "$1" | psql --no-psqlrc -q -v ON_ERROR_STOP=1 --single-transaction -o /dev/null`, "sh", file)
		cmd.Env = append(os.Environ(), "PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", cfg.Port), "PGUSER="+cfg.User,
			"PGPASSWORD="+cfg.Password, "PGDATABASE="+plainName)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("zstd -d | psql: %v\n%s", err, out)
		}
		if got := snapshot(t, plain); !reflect.DeepEqual(got, want) {
			t.Fatalf("standard-tool restore differs: %v vs %v", keys(got), keys(want))
		}
	})

	t.Run("OtherUser404", func(t *testing.T) {
		other := c.register("other@example.com")
		c.want(c.call("POST", "/v1/backups/jobs/"+job.ID+"/run", other, nil), 404)
		c.want(c.call("GET", "/v1/backups/history/"+runID, other, nil), 404)
		c.want(c.call("GET", "/v1/backups/history/"+runID+"/download", other, nil), 404)
		c.want(c.call("POST", "/v1/backups/history/"+runID+"/restore", other, nil), 404)
		var l struct{ TotalResults int }
		c.want(c.call("GET", "/v1/backups/history", other, nil), 200).decode(t, &l)
		if l.TotalResults != 0 {
			t.Fatalf("other user sees %d runs", l.TotalResults)
		}
	})

	dstName := "restored " + suffix
	dst := scratchDB(t, dstName)
	dstID := c.createDB(token, "copy", dstName)
	t.Run("RestoreIntoAnotherDatabase", func(t *testing.T) {
		var out struct{ RestoreHistoryID string }
		c.want(c.call("POST", "/v1/backups/history/"+runID+"/restore", token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &out)
		r := c.waitRestore(token, out.RestoreHistoryID, 60*time.Second)
		if r["status"] != "success" {
			t.Fatalf("restore: %v", r)
		}
		if got := snapshot(t, dst); !reflect.DeepEqual(got, want) {
			t.Fatalf("restored tables differ:\n got %v\nwant %v", keys(got), keys(want))
		}
		if h := c.history(token, runID); h.LastRestoreStatus != "success" {
			t.Fatalf("lastRestoreStatus %q", h.LastRestoreStatus)
		}
	})

	t.Run("DamagedBackup", func(t *testing.T) {
		files := findFiles(t, dataDir, runID+".sql.zst")
		if len(files) != 2 { // the backup and its manifest
			t.Fatalf("files of the run: %v", files)
		}
		var file string
		for _, f := range files {
			if !strings.HasSuffix(f, ".manifest.json") {
				file = f
			}
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x01
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var v struct{ VerificationID string }
		c.want(c.call("POST", "/v1/backups/history/"+runID+"/verify", token, map[string]any{"verificationLevel": "BASIC"}), 202).decode(t, &v)
		h := c.waitHistory(token, runID, 30*time.Second, "failed verification", func(h historyView) bool { return h.VerificationStatus == "FAILED" })
		checksumFailed := false
		for _, ch := range h.VerificationResult.Checks {
			if ch.Check == "checksum" && !ch.Passed {
				checksumFailed = true
			}
		}
		if !checksumFailed {
			t.Fatalf("verification does not name the checksum: %+v", h.VerificationResult)
		}

		// A restore refuses it and leaves the target as it was.
		if _, err := dst.Exec(ctx, `CREATE TABLE marker (v text); INSERT INTO marker VALUES ('before')`); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, dst)
		var out struct{ RestoreHistoryID string }
		c.want(c.call("POST", "/v1/backups/history/"+runID+"/restore", token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &out)
		r := c.waitRestore(token, out.RestoreHistoryID, 60*time.Second)
		msg, _ := r["errorMessage"].(string)
		if r["status"] != "failed" || !strings.Contains(msg, "left as it was") {
			t.Fatalf("restore of a damaged backup: %v", r)
		}
		if after := snapshot(t, dst); !reflect.DeepEqual(after, before) {
			t.Fatal("a refused restore changed the target database")
		}
	})

	t.Run("HistoryFilters", func(t *testing.T) {
		var l struct {
			Results      []historyView
			TotalResults int
			TotalPages   int
		}
		c.want(c.call("GET", "/v1/backups/history?status=success&databaseId="+srcID+"&limit=1&page=1", token, nil), 200).decode(t, &l)
		if l.TotalResults != 1 || len(l.Results) != 1 || l.Results[0].ID != runID {
			t.Fatalf("filtered history: %+v", l)
		}
		c.want(c.call("GET", "/v1/backups/history?status=failed", token, nil), 200).decode(t, &l)
		if l.TotalResults != 0 {
			t.Fatalf("failed filter: %+v", l)
		}
		c.want(c.call("GET", "/v1/backups/history?from=2999-01-01", token, nil), 200).decode(t, &l)
		if l.TotalResults != 0 {
			t.Fatalf("from filter: %+v", l)
		}
		r := c.want(c.call("GET", "/v1/backups/history?status=bogus&limit=1000", token, nil), 400)
		if !strings.Contains(string(r.body), "status") || !strings.Contains(string(r.body), "limit") {
			t.Fatalf("400 does not name the fields: %s", r.body)
		}
	})

	t.Run("ReplayRebuildsHistory", func(t *testing.T) {
		assertReplay(t, pool, dataDir, "backup_history", "restore_history")
	})

	t.Run("Delete", func(t *testing.T) {
		if files := findFiles(t, dataDir, runID); len(files) != 2 {
			t.Fatalf("files before delete: %v", files)
		}
		c.want(c.call("DELETE", "/v1/backups/history/"+runID, token, nil), 204)
		if files := findFiles(t, dataDir, runID); len(files) != 0 {
			t.Fatalf("files after delete: %v", files)
		}
		c.want(c.call("GET", "/v1/backups/history/"+runID, token, nil), 404)
		c.want(c.call("GET", "/v1/backups/history/"+runID+"/download", token, nil), 404)
		c.want(c.call("DELETE", "/v1/backups/history/"+runID, token, nil), 404)
	})
}

// assertReplay replays the whole EVENTS stream of the `up` in dataDir into
// an empty schema and checks every row of each table equals the live one.
func assertReplay(t *testing.T, live *pgxpool.Pool, dataDir string, tables ...string) {
	t.Helper()
	ctx := context.Background()
	_, fresh := testsupport.NewDatabase(t)
	nc, js := controlPlaneNATS(t, dataDir)
	defer nc.Close()
	durable := "replay-" + testsupport.RandomString(4)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(pctx, projector.Opts{Pool: fresh, JS: js, Durable: durable, Logger: testsupport.Logger(t)})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ci, err := js.Consumer(ctx, events.StreamEvents, durable)
		si, serr := js.Stream(ctx, events.StreamEvents)
		if err == nil && serr == nil {
			info, err := ci.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= si.CachedInfo().State.LastSeq {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("replay did not finish")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-done
	for _, table := range tables {
		a := tableJSON(t, live, table)
		b := tableJSON(t, fresh, table)
		if a != b || a == "[]" {
			t.Fatalf("%s differs after replay:\nlive   %s\nreplay %s", table, a, b)
		}
	}
}

func keys(m map[string][]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s(%d)", k, len(v)))
	}
	return out
}

// tableJSON is a table's rows, ordered by id, as JSON.
func tableJSON(t *testing.T, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, table string) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), fmt.Sprintf("SELECT coalesce(json_agg(t ORDER BY t.id), '[]')::text FROM %s t", table)).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// controlPlaneNATS connects to the embedded NATS of a running `up` with the
// control plane's credentials from its data dir.
func controlPlaneNATS(t *testing.T, dataDir string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(dataDir, "nats.secret"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile(filepath.Join(dataDir, "agent", "agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct{ NATSURL string }
	if err := json.Unmarshal(st, &s); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.NATSURL, nats.UserInfo("rahatback", strings.TrimSpace(string(pw))))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
