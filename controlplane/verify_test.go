package controlplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rahatback/rahatback/testsupport"
)

// TestVerificationFindsDamage stores dumps that are valid as streams
// (their checksum, size and manifest are made to agree) but wrong inside,
// as a faulty dump tool or a tampered store would leave them: DATABASE
// must name the table whose data is missing, and FULL must fail the test
// restore of a dump whose schema no longer applies and say where. Neither
// leaves a scratch database.
func TestVerificationFindsDamage(t *testing.T) {
	ctx := context.Background()
	dbURL, pool := testsupport.NewDatabase(t)
	srcName := "dmg_" + testsupport.RandomString(3)
	src := scratchDB(t, srcName)
	if _, err := src.Exec(ctx, `CREATE TABLE orders (id int PRIMARY KEY, note text);
		INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 20000) g;
		CREATE TABLE customers (id int PRIMARY KEY, name text);
		INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g;`); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("damage@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": c.createDB(token, "shop", srcName), "name": "dmg"}), 201).decode(t, &job)

	// stored runs job jobID and returns its run id and the path of its
	// stored file.
	stored := func(jobID string) (string, string) {
		run := c.runJob(token, jobID)
		h := c.waitHistory(token, run, time.Minute, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
		if h.Status != "success" {
			t.Fatalf("backup: %s", h.ErrorMessage)
		}
		files := findFiles(t, dataDir, h.FileName)
		var path string
		for _, f := range files {
			if strings.HasSuffix(f, h.FileName) {
				path = f
			}
		}
		return run, path
	}
	// backup runs the job and returns its run id, the path of its stored
	// file and its dump, decompressed.
	backup := func() (string, string, []byte) {
		run, path := stored(job.ID)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		dump, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return run, path, dump
	}
	// replace stores dump as run's backup at path, with the checksum, sizes
	// and manifest made to agree, as if it had been written so.
	replace := func(run, path string, dump []byte) {
		var stored bytes.Buffer
		zw, _ := zstd.NewWriter(&stored)
		zw.Write(dump)
		zw.Close()
		if err := os.WriteFile(path, stored.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(stored.Bytes())
		hexSum := hex.EncodeToString(sum[:])
		mpath := path + ".manifest.json"
		data, err := os.ReadFile(mpath)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		m["checksum"], m["storedSize"], m["rawSize"] = hexSum, stored.Len(), len(dump)
		data, _ = json.Marshal(m)
		if err := os.WriteFile(mpath, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `UPDATE backup_history SET checksum_value = $2, file_size = $3 WHERE id = $1`, run, hexSum, stored.Len()); err != nil {
			t.Fatal(err)
		}
	}
	failedCheck := func(v historyView, name string) string {
		t.Helper()
		for _, ch := range v.VerificationResult.Checks {
			if ch.Check == name && !ch.Passed {
				return ch.Message
			}
		}
		t.Fatalf("%s verification: no failed %q check: %+v", v.VerificationResult.VerificationMethod, name, v.VerificationResult.Checks)
		return ""
	}

	t.Run("TableDataMissing", func(t *testing.T) {
		run, path, dump := backup()
		// Drop the orders COPY block: the stream stays a valid dump.
		s := string(dump)
		start := strings.Index(s, "COPY public.orders ")
		end := strings.Index(s[start:], "\n\\.\n")
		if start < 0 || end < 0 {
			t.Fatal("no COPY block for orders in the dump")
		}
		replace(run, path, []byte(s[:start]+s[start+end+4:]))
		v := c.verify(token, run, "BASIC", time.Minute)
		if v.VerificationStatus != "PASSED" {
			t.Fatalf("BASIC should not see this damage (the bytes agree): %+v", v.VerificationResult)
		}
		v = c.verify(token, run, "DATABASE", time.Minute)
		if msg := failedCheck(v, "tables"); !strings.Contains(msg, "public.orders: 20000 rows in the manifest, none in the dump") {
			t.Fatalf("DATABASE's tables check: %q", msg)
		}
		if v.VerificationStatus != "FAILED" {
			t.Fatalf("status %s", v.VerificationStatus)
		}
	})

	t.Run("SchemaDamaged", func(t *testing.T) {
		run, path, dump := backup()
		s := strings.Replace(string(dump), "CREATE TABLE public.customers", "CREATE TABEL public.customers", 1)
		if s == string(dump) {
			t.Fatal("no CREATE TABLE public.customers in the dump")
		}
		replace(run, path, []byte(s))
		v := c.verify(token, run, "FULL", 2*time.Minute)
		msg := failedCheck(v, "test restore")
		if !strings.Contains(msg, "TABEL") || !strings.Contains(msg, "line") {
			t.Fatalf("FULL's test restore should say where the dump stopped: %q", msg)
		}
		var cleaned bool
		for _, ch := range v.VerificationResult.Checks {
			cleaned = cleaned || ch.Check == "cleanup" && ch.Passed
		}
		if !cleaned || pgScratchCount(t) != 0 {
			t.Fatalf("the scratch database was not dropped: %+v", v.VerificationResult.Checks)
		}
	})

	// Damage to the stored bytes fails FULL at the check that sees it,
	// the test restore is refused, and no scratch database is left.
	var encJob struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": c.createDB(token, "shop2", srcName), "name": "enc",
		"compression": "none", "isEncrypted": true, "encryptionPassword": "correct horse 42"}), 201).decode(t, &encJob)
	for _, tc := range []struct {
		name   string
		jobID  string
		damage func(b []byte) []byte
		checks []string // checks that must fail
	}{
		{"ByteFlipped", job.ID, func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }, []string{"checksum", "test restore"}},
		{"Truncated", job.ID, func(b []byte) []byte { return b[:len(b)*2/3] }, []string{"size", "checksum", "decompression", "test restore"}},
		{"AgeChunkRemoved", encJob.ID, func(b []byte) []byte {
			// The payload starts after the header's "---" line and a
			// 16-byte nonce; each chunk is 64 KiB plus a 16-byte tag.
			i := bytes.Index(b, []byte("\n---"))
			start := i + 1 + bytes.IndexByte(b[i+1:], '\n') + 1 + 16
			const chunk = 64<<10 + 16
			if len(b) < start+3*chunk {
				t.Fatalf("the encrypted backup has fewer than 3 chunks (%d bytes)", len(b))
			}
			return append(b[:start+chunk:start+chunk], b[start+2*chunk:]...)
		}, []string{"size", "checksum", "decompression", "test restore"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run, path := stored(tc.jobID)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			v := c.verify(token, run, "FULL", 2*time.Minute)
			for _, name := range tc.checks {
				failedCheck(v, name)
			}
			checksPassed(t, v, "scratch database", "cleanup")
			if v.VerificationStatus != "FAILED" || pgScratchCount(t) != 0 {
				t.Fatalf("status %s, %d scratch databases left", v.VerificationStatus, pgScratchCount(t))
			}
		})
	}

	// A user who may not create databases gets a failed check naming the
	// privilege, and the rest of the verification still runs.
	t.Run("NoCreateDB", func(t *testing.T) {
		role := "rb_nocreate_" + testsupport.RandomString(4)
		for _, q := range []string{
			"CREATE ROLE " + role + " LOGIN NOCREATEDB PASSWORD 'n0-create-db'",
			"GRANT CONNECT ON DATABASE " + srcName + " TO " + role,
		} {
			if err := testsupport.AdminExec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			_ = testsupport.AdminExec(ctx, "DROP OWNED BY "+role)
			_ = testsupport.AdminExec(ctx, "DROP ROLE "+role)
		})
		if _, err := src.Exec(ctx, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO "+role); err != nil {
			t.Fatal(err)
		}
		var d struct{ ID string }
		c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": "limited", "type": "postgresql",
			"host": "127.0.0.1", "port": testsupport.Cluster().Port(), "username": role, "password": "n0-create-db",
			"database": srcName}), 201).decode(t, &d)
		var lj struct{ ID string }
		c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": d.ID, "name": "limited"}), 201).decode(t, &lj)
		run, _ := stored(lj.ID)
		v := c.verify(token, run, "FULL", 2*time.Minute)
		if msg := failedCheck(v, "scratch database"); !strings.Contains(msg, "CREATEDB") || !strings.Contains(msg, role) {
			t.Fatalf("the scratch database check should name the missing privilege: %q", msg)
		}
		checksPassed(t, v, append([]string{"checksum"}, databaseChecks...)...)
		if v.VerificationStatus != "FAILED" || pgScratchCount(t) != 0 {
			t.Fatalf("status %s, %d scratch databases left", v.VerificationStatus, pgScratchCount(t))
		}
	})
}
