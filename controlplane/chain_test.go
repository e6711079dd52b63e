package controlplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rahatback/rahatback/agent"
	"github.com/rahatback/rahatback/mariadbserver"
	"github.com/rahatback/rahatback/storage"
	"github.com/rahatback/rahatback/testsupport"
)

// waitBackup waits for run to end, and its verification when one follows.
func (c client) waitBackup(token, run string, verified bool) historyView {
	c.t.Helper()
	return c.waitHistory(token, run, 120*time.Second, "backup done", func(h historyView) bool {
		return h.Status == "failed" || (h.Status == "success" && (!verified || h.VerificationStatus != "PENDING"))
	})
}

// TestIncrementalChain: an encrypted incremental PostgreSQL job (pagila)
// stores a full, then only what changed; each backup restores, verifies at
// FULL, downloads as a file the standard tools read, and rebuilds offline
// from the storage and the exported key alone. Its chain is protected from
// deletion and retention, and a lost pack fails what depends on it and
// makes the next backup a full.
func TestIncrementalChain(t *testing.T) {
	ctx := context.Background()
	suffix := testsupport.RandomString(3)
	srcName := "chain src " + suffix
	src := scratchDB(t, srcName)
	loadPGSample(t, srcName, "pagila-schema.sql.zst", "pagila-data.sql.zst")

	dbURL, _ := testsupport.NewDatabase(t)
	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("chain@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	srcID := c.createDB(token, "pagila", srcName)

	const password = "chain of custody 42"
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "inc", "backupType": "incremental",
		"isEncrypted": true, "encryptionPassword": password, "autoVerifyAfterBackup": true, "verificationLevel": "DATABASE"}), 201).decode(t, &job)

	run1 := c.runJob(token, job.ID)
	h1 := c.waitBackup(token, run1, true)
	if h1.Status != "success" || h1.VerificationStatus != "PASSED" || h1.BackupType != "full" || !h1.Chunked ||
		len(h1.DependsOn) != 0 || !strings.HasSuffix(h1.FileName, ".sql.chunks") || h1.NewBytes == nil || *h1.NewBytes != h1.RawSize {
		t.Fatalf("first backup of an incremental job: %+v", h1)
	}

	// 1% of rentals updated in one range, and new payments: what a day of
	// a shop changes.
	exec1 := func(sql string) {
		t.Helper()
		if _, err := src.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec1(`UPDATE rental SET return_date = return_date + interval '1 day' WHERE rental_id BETWEEN 5000 AND 5160`)
	exec1(`INSERT INTO actor (first_name, last_name) SELECT 'NEW', 'ACTOR ' || g FROM generate_series(1, 50) g`)
	run2 := c.runJob(token, job.ID)
	h2 := c.waitBackup(token, run2, true)
	if h2.Status != "success" || h2.VerificationStatus != "PASSED" || h2.BackupType != "incremental" || h2.ParentID != run1 ||
		h2.BaseID != run1 || !reflect.DeepEqual(h2.DependsOn, []string{run1}) {
		t.Fatalf("second backup: %+v", h2)
	}
	// A 3 MB dump is some 20 chunks, a few of which the changes touch;
	// the 1 GB benchmark (BenchmarkIncremental) measures the real ratio.
	if h2.NewBytes == nil || *h2.NewBytes*2 > h2.RawSize || h2.DedupRatio == nil || *h2.DedupRatio < 2 {
		t.Fatalf("the incremental stored %d new bytes of a %d-byte dump", *h2.NewBytes, h2.RawSize)
	}
	t.Logf("full: %d bytes of dump; incremental: %d new bytes, dedup ratio %.1f", h1.RawSize, *h2.NewBytes, *h2.DedupRatio)

	exec1(`UPDATE customer SET email = lower(email) WHERE customer_id < 20`)
	want := snapshot(t, src)
	run3 := c.runJob(token, job.ID)
	h3 := c.waitBackup(token, run3, true)
	deps := slices.Clone(h3.DependsOn)
	slices.Sort(deps)
	wantDeps := []string{run1, run2}
	slices.Sort(wantDeps)
	if h3.Status != "success" || h3.BackupType != "incremental" || h3.ParentID != run2 || h3.BaseID != run1 || !reflect.DeepEqual(deps, wantDeps) ||
		h3.Manifest.Chain == nil || h3.Manifest.Chain.DumpSha256 == "" {
		t.Fatalf("third backup: %+v", h3)
	}

	t.Run("Restore", func(t *testing.T) {
		dstName := "chain dst " + suffix
		dst := scratchDB(t, dstName)
		dstID := c.createDB(token, "dst", dstName)
		var out struct{ RestoreHistoryID string }
		c.want(c.call("POST", "/v1/backups/history/"+run3+"/restore", token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &out)
		if r := c.waitRestore(token, out.RestoreHistoryID, 120*time.Second); r["status"] != "success" {
			t.Fatalf("restore of the chain: %v", r)
		}
		if got := snapshot(t, dst); !reflect.DeepEqual(got, want) {
			t.Fatal("the database restored from the chain differs from the source")
		}
	})

	t.Run("VerifyFull", func(t *testing.T) {
		v := c.verify(token, run3, "FULL", 120*time.Second)
		passedChecks(t, v, "chunks", "checksum", "decryption", "manifest")
	})

	keyTxt := exportedKey(t, base, token, job.ID, password)
	t.Run("DownloadAndOffline", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "download")
		req, _ := http.NewRequest("GET", base+"/v1/backups/history/"+run3+"/download", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("download: %v %s", err, resp.Status)
		}
		if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, run3+".sql.zst.age") {
			t.Fatalf("download name: %s", cd)
		}
		if got := resp.Header.Get("X-Dump-Sha256"); got != h3.Manifest.Chain.DumpSha256 {
			t.Fatalf("X-Dump-Sha256 %s, manifest %s", got, h3.Manifest.Chain.DumpSha256)
		}
		if err := os.WriteFile(file, body, 0o600); err != nil {
			t.Fatal(err)
		}
		// The standard tools read the download.
		out, err := exec.Command("sh", "-c", `age -d -i "$1" "$2" | zstd -dc | sha256sum`, "sh", keyTxt, file).Output()
		if err != nil {
			t.Fatalf("age -d | zstd -d: %v", err)
		}
		if got := strings.Fields(string(out))[0]; got != h3.Manifest.Chain.DumpSha256 {
			t.Fatalf("downloaded dump sha256 %s, want %s", got, h3.Manifest.Chain.DumpSha256)
		}

		// Offline: the agent's storage directory and the exported key.
		idx := findFiles(t, dataDir, run3+".sql.chunks")
		var root string
		for _, f := range idx {
			if strings.HasSuffix(f, ".sql.chunks") {
				root = filepath.Dir(filepath.Dir(f))
			}
		}
		if root == "" {
			t.Fatalf("no index of %s under %s", run3, dataDir)
		}
		var stdout, stderr bytes.Buffer
		if err := agent.Main(ctx, []string{"restore", "--from", root, "--backup", run3, "--key", keyTxt}, os.Getenv, &stdout, &stderr); err != nil {
			t.Fatalf("offline restore: %v\n%s", err, stderr.String())
		}
		sum := sha256.Sum256(stdout.Bytes())
		if hex.EncodeToString(sum[:]) != h3.Manifest.Chain.DumpSha256 || !bytes.Contains(stdout.Bytes(), []byte("COPY public.rental")) {
			t.Fatalf("offline restore wrote %d bytes that are not the dump\n%s", stdout.Len(), stderr.String())
		}
		// --out: the same dump in a file, which psql loads into the
		// source's state.
		outFile := filepath.Join(dir, "dump.sql")
		if err := agent.Main(ctx, []string{"restore", "--from", root, "--backup", run2, "--key", keyTxt, "--out", outFile}, os.Getenv, io.Discard, &stderr); err != nil {
			t.Fatalf("offline restore --out: %v\n%s", err, stderr.String())
		}
		if b, err := os.ReadFile(outFile); err != nil || !bytes.Contains(b, []byte("COPY public.rental")) {
			t.Fatalf("--out file: %v", err)
		}
		// Without the key it says what is missing.
		stderr.Reset()
		err = agent.Main(ctx, []string{"restore", "--from", root, "--backup", run3}, os.Getenv, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error(), "--key") {
			t.Fatalf("offline restore without a key: %v", err)
		}
	})

	t.Run("ChainIsKept", func(t *testing.T) {
		for _, run := range []string{run1, run2} {
			r := c.want(c.call("DELETE", "/v1/backups/history/"+run, token, nil), 409)
			if !strings.Contains(string(r.body), run3) {
				t.Fatalf("deleting %s: %s", run, r.body)
			}
		}
		c.want(c.call("PATCH", "/v1/backups/jobs/"+job.ID, token, map[string]any{"retentionDays": 0, "keepLast": 1}), 200)
		var p retentionPreview
		c.want(c.call("GET", "/v1/backups/jobs/"+job.ID+"/retention-preview", token, nil), 200).decode(t, &p)
		expire, keep := p.ids()
		slices.Sort(keep)
		wantKeep := []string{run1, run2, run3}
		slices.Sort(wantKeep)
		if len(expire) != 0 || !reflect.DeepEqual(keep, wantKeep) {
			t.Fatalf("keepLast 1 of a chain: expire %v keep %v", expire, keep)
		}
		for _, k := range p.Keep {
			if k.HistoryID != run3 && !slices.ContainsFunc(k.Reasons, func(r string) bool { return strings.Contains(r, "needed by the chain of "+run3) }) {
				t.Fatalf("%s is kept for %v, not for the chain of %s", k.HistoryID, k.Reasons, run3)
			}
		}
	})

	t.Run("LostPack", func(t *testing.T) {
		var packs []string
		for _, f := range findFiles(t, dataDir, ".pack") {
			if strings.Contains(f, filepath.Join("packs", run1)+string(filepath.Separator)) {
				packs = append(packs, f)
			}
		}
		if len(packs) == 0 {
			t.Fatal("no packs of the full")
		}
		if err := os.Remove(packs[0]); err != nil {
			t.Fatal(err)
		}
		v := c.verify(token, run3, "BASIC", 60*time.Second)
		if v.VerificationStatus != "FAILED" {
			t.Fatalf("a chain with a lost pack verified: %+v", v.VerificationResult)
		}
		named := false
		for _, ch := range v.VerificationResult.Checks {
			named = named || (ch.Check == "chunks" && !ch.Passed && strings.Contains(ch.Message, "backup "+run1) && strings.Contains(ch.Message, "missing"))
		}
		if !named {
			t.Fatalf("the failed check does not name the backup whose pack is lost: %+v", v.VerificationResult)
		}
		var affected struct{ AffectedBackups []string }
		c.want(c.call("GET", "/v1/backups/history/"+run3, token, nil), 200).decode(t, &affected)
		slices.Sort(affected.AffectedBackups)
		if !reflect.DeepEqual(affected.AffectedBackups, sortedOf(run1, run2, run3)) {
			t.Fatalf("affected backups %v, want the full and both incrementals", affected.AffectedBackups)
		}
		// Packs no backup owns (a lost journal): a day old, the next backup
		// collects them; fresh ones (a command built moments ago may
		// still own them) stay.
		jobDir := filepath.Dir(filepath.Dir(filepath.Dir(packs[0])))
		orphan := func(age time.Duration) string {
			p := filepath.Join(jobDir, "packs", testsupport.RandomString(8), "0.pack")
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("orphan"), 0o600); err != nil {
				t.Fatal(err)
			}
			at := time.Now().Add(-age)
			if err := os.Chtimes(p, at, at); err != nil {
				t.Fatal(err)
			}
			return p
		}
		old, fresh := orphan(48*time.Hour), orphan(time.Minute)

		// The next backup cannot build on a broken chain: it is a full.
		run4 := c.runJob(token, job.ID)
		h4 := c.waitBackup(token, run4, true)
		if h4.Status != "success" || h4.BackupType != "full" || len(h4.DependsOn) != 0 || h4.Manifest.Chain == nil || h4.Manifest.Chain.Fallback == "" {
			t.Fatalf("backup after a lost pack: %+v", h4)
		}
		t.Logf("fallback: %s", h4.Manifest.Chain.Fallback)
		if _, err := os.Stat(old); !os.IsNotExist(err) {
			t.Errorf("an orphan pack two days old was not collected: %v", err)
		}
		if _, err := os.Stat(fresh); err != nil {
			t.Errorf("a fresh unowned pack was collected: %v", err)
		}
		kept := 0
		for _, f := range findFiles(t, dataDir, ".pack") {
			if strings.Contains(f, filepath.Join("packs", run2)+string(filepath.Separator)) {
				kept++
			}
		}
		if kept == 0 {
			t.Error("the packs of a kept backup were collected")
		}
	})
}

func sortedOf(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// TestDifferentialChainS3: a MariaDB differential job on S3 (versitygw):
// every differential builds on the full, restores the database exactly,
// and deleting one deletes its packs and nothing the others need.
func TestDifferentialChainS3(t *testing.T) {
	t.Parallel() // no FULL verification: see TestAgentKilledMidVerifyAndRestore
	maria := testsupport.MariaDB(t)
	gw := testsupport.StartVersityGW(t)
	suffix := testsupport.RandomString(3)
	srcName := "diff src " + suffix
	mariaDB(t, srcName)
	loadMariaDBSample(t, srcName, "sakila-schema.sql.zst", "sakila-data.sql.zst")
	admin, err := maria.Open(srcName)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL,
		"--allow-endpoint", endpointHost(t, gw.Endpoint)}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("diff@example.com")
	c.waitAgents(token, 30*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	mysqlDB := func(name, database string) string {
		var d struct{ ID string }
		c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": name, "type": "mysql", "host": "127.0.0.1", "port": maria.Port(),
			"username": mariadbserver.Admin, "password": maria.Password(), "database": database}), 201).decode(t, &d)
		return d.ID
	}
	srcID := mysqlDB("sakila", srcName)
	var st struct{ ID string }
	c.want(c.call("POST", "/v1/cloud-storage", token, map[string]any{"name": "gw", "storageType": "s3", "s3AccessKeyId": gw.AccessKey,
		"s3SecretAccessKey": gw.SecretKey, "s3Region": gw.Region, "s3Bucket": gw.Bucket, "s3Endpoint": gw.Endpoint,
		"s3ForcePathStyle": true, "s3Prefix": "diff"}), 201).decode(t, &st)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "diff", "backupType": "differential",
		"storageType": "s3", "cloudStorageId": st.ID, "compression": "gzip"}), 201).decode(t, &job)

	run := func() historyView {
		h := c.waitBackup(token, c.runJob(token, job.ID), false)
		if h.Status != "success" {
			t.Fatalf("backup: %+v", h)
		}
		return h
	}
	full := run()
	exec1 := func(q string) {
		t.Helper()
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec1("UPDATE payment SET amount = amount + 1 WHERE payment_id BETWEEN 100 AND 260")
	d1 := run()
	exec1("INSERT INTO actor (first_name, last_name) VALUES ('DIFF', 'ONE'), ('DIFF', 'TWO')")
	want := testsupport.MariaDBContents(t, admin, srcName)
	d2 := run()
	if full.BackupType != "full" || d1.BackupType != "differential" || d2.BackupType != "differential" ||
		d1.ParentID != full.ID || d2.ParentID != full.ID || !reflect.DeepEqual(d2.DependsOn, []string{full.ID}) {
		t.Fatalf("differential chain: full %s %s; d1 %s parent %s; d2 %s parent %s deps %v",
			full.ID, full.BackupType, d1.BackupType, d1.ParentID, d2.BackupType, d2.ParentID, d2.DependsOn)
	}
	if *d2.NewBytes*3 > d2.RawSize {
		t.Fatalf("the differential stored %d new bytes of %d", *d2.NewBytes, d2.RawSize)
	}

	dstName := "diff dst " + suffix
	mariaDB(t, dstName)
	dstID := mysqlDB("dst", dstName)
	var out struct{ RestoreHistoryID string }
	c.want(c.call("POST", "/v1/backups/history/"+d2.ID+"/restore", token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &out)
	if r := c.waitRestore(token, out.RestoreHistoryID, 120*time.Second); r["status"] != "success" {
		t.Fatalf("restore of the differential: %v", r)
	}
	if got := testsupport.MariaDBContents(t, admin, dstName); !reflect.DeepEqual(got, want) {
		t.Fatal("the database restored from the differential differs from the source")
	}

	// d1 is needed by no one: it goes with its packs; the full stays
	// needed by d2.
	s3, err := storage.NewS3(storage.S3Config{Endpoint: gw.Endpoint, Region: gw.Region, Bucket: gw.Bucket, AccessKeyID: gw.AccessKey,
		SecretAccessKey: gw.SecretKey, ForcePathStyle: true, Prefix: "diff"})
	if err != nil {
		t.Fatal(err)
	}
	packsOf := func(run string) int {
		objs, err := s3.List(context.Background(), job.ID+"/packs/"+run+"/")
		if err != nil {
			t.Fatal(err)
		}
		return len(objs)
	}
	if packsOf(d1.ID) == 0 || packsOf(full.ID) == 0 {
		t.Fatal("no packs in S3")
	}
	c.want(c.call("DELETE", "/v1/backups/history/"+d1.ID, token, nil), 204)
	if n := packsOf(d1.ID); n != 0 {
		t.Fatalf("%d packs of a deleted backup are left", n)
	}
	r := c.want(c.call("DELETE", "/v1/backups/history/"+full.ID, token, nil), 409)
	if !strings.Contains(string(r.body), d2.ID) {
		t.Fatalf("deleting the full: %s", r.body)
	}
	v := c.verify(token, d2.ID, "DATABASE", 60*time.Second)
	passedChecks(t, v, "chunks", "checksum", "manifest")
}
