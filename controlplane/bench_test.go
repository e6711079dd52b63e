package controlplane_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/testsupport"
)

// BenchmarkBackupRestore measures, on one freshly generated database of
// realistic mixed columns (RAHATBACK_BENCH_MB, default 1024 MB of dump):
//
//	pg_dump -Fp > /dev/null            vs  a RahatBack backup to local storage (zstd)
//	psql < the same plain dump         vs  a RahatBack restore of that backup
//
//	and a backup to S3 (versitygw on loopback), zstd + age encryption
//
// and the agent process's peak RSS. Targets: backup and restore ratios ≤
// 1.25 (issue 3), S3 + encryption ≤ 1.35 (issue 5), peak RSS ≤ 100 MiB. Run it with `task bench` or
// go test -run '^$' -bench BackupRestore -benchtime 1x ./controlplane/
func BenchmarkBackupRestore(b *testing.B) {
	ctx := context.Background()
	sizeMB := benchSizeMB(b)
	srcName := "bench_src"
	admin := func(sql string) {
		if err := testsupport.AdminExec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	src, cfg := benchDatabase(b, srcName, sizeMB)
	defer src.Close(ctx)
	env := append(os.Environ(), "PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", cfg.Port), "PGUSER="+cfg.User, "PGPASSWORD="+cfg.Password)
	timeCmd := func(db, script string, args ...string) time.Duration {
		cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
		cmd.Env = append(env, "PGDATABASE="+db)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", script, err, out)
		}
		return time.Since(start)
	}
	dumpFile := filepath.Join(b.TempDir(), "plain.sql")
	timeCmd(srcName, `pg_dump -Fp --clean --if-exists --no-owner --no-privileges > "$1"`, dumpFile)
	fi, _ := os.Stat(dumpFile)
	b.Logf("plain dump: %d MB", fi.Size()>>20)

	// The system under test: control plane in-process, agent as its own
	// process so its memory is its own.
	gw := testsupport.StartVersityGW(b)
	bs, sys := startBenchSystem(b, "bench@example.com", "--allow-endpoint", endpointHost(b, gw.Endpoint))
	defer sys.stop(b)
	c, token, remoteID := bs.c, bs.token, bs.agentID
	srcID := c.createDB(token, "bench", srcName)
	c.want(c.call("PATCH", "/v1/databases/"+srcID, token, map[string]any{"agentId": remoteID}), 200)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "bench", "compression": "zstd"}), 201).decode(b, &job)

	// The same database to S3 (versitygw on loopback), compressed and encrypted.
	var cs struct{ ID string }
	c.want(c.call("POST", "/v1/cloud-storage", token, map[string]any{"name": "gw", "storageType": "s3",
		"s3AccessKeyId": gw.AccessKey, "s3SecretAccessKey": gw.SecretKey, "s3Region": gw.Region, "s3Bucket": gw.Bucket,
		"s3Endpoint": gw.Endpoint, "s3ForcePathStyle": true}), 201).decode(b, &cs)
	var s3job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "bench s3",
		"compression": "zstd", "storageType": "s3", "cloudStorageId": cs.ID, "isEncrypted": true,
		"encryptionPassword": "bench password 1"}), 201).decode(b, &s3job)

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pgDump := timeCmd(srcName, `pg_dump -Fp --clean --if-exists --no-owner --no-privileges > /dev/null`)

		h, ours := bs.backup(b, job.ID)
		run := h.ID
		hs3, s3enc := bs.backup(b, s3job.ID)
		s3run := hs3.ID

		admin("DROP DATABASE IF EXISTS bench_psql")
		admin("CREATE DATABASE bench_psql")
		// Each timed restore starts with no other restore's dirty pages
		// to write out.
		admin("CHECKPOINT")
		psql := timeCmd("bench_psql", `psql --no-psqlrc -q -v ON_ERROR_STOP=1 --single-transaction -o /dev/null -f "$1"`, dumpFile)

		admin("DROP DATABASE IF EXISTS bench_restore")
		admin("CREATE DATABASE bench_restore")
		dstID := c.createDB(token, "restore target", "bench_restore")
		admin("CHECKPOINT")
		restore := bs.restore(b, run, dstID)
		rssBefore := peakRSSMiB(b, bs.agent.Process.Pid)
		// FULL verification against psql -f plus reading the backup (a
		// BASIC verification: download, checksum, decompression).
		read := bs.verify(b, run, "BASIC")
		admin("CHECKPOINT")
		full := bs.verify(b, run, "FULL")
		for _, ch := range c.history(token, run).VerificationResult.Checks {
			b.Logf("FULL %s: %s", ch.Check, ch.Message)
		}
		fullRatio := full.Seconds() / (psql.Seconds() + read.Seconds())
		rss := peakRSSMiB(b, bs.agent.Process.Pid)

		s3Ratio := s3enc.Seconds() / pgDump.Seconds()
		b.ReportMetric(s3enc.Seconds(), "s3-encrypted-s")
		b.ReportMetric(s3Ratio, "s3-encrypted/pg_dump")
		backupRatio := ours.Seconds() / pgDump.Seconds()
		restoreRatio := restore.Seconds() / psql.Seconds()
		b.ReportMetric(pgDump.Seconds(), "pg_dump-s")
		b.ReportMetric(ours.Seconds(), "backup-s")
		b.ReportMetric(backupRatio, "backup/pg_dump")
		b.ReportMetric(psql.Seconds(), "psql-s")
		b.ReportMetric(restore.Seconds(), "restore-s")
		b.ReportMetric(restoreRatio, "restore/psql")
		b.ReportMetric(read.Seconds(), "read-backup-s")
		b.ReportMetric(full.Seconds(), "full-verify-s")
		b.ReportMetric(fullRatio, "full-verify/(psql+read)")
		b.ReportMetric(rss, "agent-peak-RSS-MiB")
		b.Logf("dump %d MB → stored %d MB (zstd); pg_dump %.1fs, backup %.1fs (%.2f×); psql %.1fs, restore %.1fs (%.2f×); agent peak RSS %.0f MiB",
			fi.Size()>>20, h.FileSize>>20, pgDump.Seconds(), ours.Seconds(), backupRatio, psql.Seconds(), restore.Seconds(), restoreRatio, rss)
		b.Logf("s3 (versitygw), zstd + age: %.1fs (%.2f× pg_dump)", s3enc.Seconds(), s3Ratio)
		b.Logf("FULL verification %.1fs; psql -f %.1fs + reading the backup %.1fs: %.2f× (≤ 1.3); agent peak RSS %.0f MiB before the verifications, %.0f after",
			full.Seconds(), psql.Seconds(), read.Seconds(), fullRatio, rssBefore, rss)
		if fullRatio > 1.3 {
			b.Errorf("target missed: FULL verification/(psql -f + reading the backup) %.2f (≤ 1.3)", fullRatio)
		}
		if backupRatio > 1.25 || restoreRatio > 1.25 || s3Ratio > 1.35 || rss > 100 {
			b.Errorf("targets missed: backup/pg_dump %.2f (≤ 1.25), restore/psql %.2f (≤ 1.25), s3+encrypted/pg_dump %.2f (≤ 1.35), agent RSS %.0f MiB (≤ 100; ≤ 150 with S3)",
				backupRatio, restoreRatio, s3Ratio, rss)
		}
		c.want(c.call("DELETE", "/v1/backups/history/"+s3run, token, nil), 204)
		c.want(c.call("DELETE", "/v1/backups/history/"+run, token, nil), 204)
	}
	admin("DROP DATABASE IF EXISTS bench_psql")
	admin("DROP DATABASE IF EXISTS bench_restore")
	admin("DROP DATABASE IF EXISTS bench_src WITH (FORCE)")
}

// benchSystem is `rahatback up` in-process with one enrolled agent running
// as its own process (so its memory is its own), for the benchmarks.
type benchSystem struct {
	c       client
	token   string
	agentID string
	agent   *exec.Cmd
}

// startBenchSystem starts it, with args added to up's, and registers email;
// stop the system it returns when done.
func startBenchSystem(b *testing.B, email string, args ...string) (benchSystem, system) {
	b.Helper()
	dbURL, _ := testsupport.NewDatabase(b)
	httpAddr := freeAddr(b)
	base := "http://" + httpAddr
	sys := startUp(b, append([]string{"--data-dir", b.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(b), "--database-url", dbURL}, args...), nil, base)
	c := client{b, base}
	token := c.register(email)
	bin := buildAgent(b)
	state := enrollAgentBinary(b, c, bin, token, "bench")
	agent := startAgentBinary(b, bin, state)
	return benchSystem{c: c, token: token, agentID: c.waitRemoteOnline(token), agent: agent}, sys
}

// backup runs job once and returns its history row and how long it took
// from the request to success; a failed backup fails b.
func (s benchSystem) backup(b *testing.B, jobID string) (historyView, time.Duration) {
	b.Helper()
	start := time.Now()
	run := s.c.runJob(s.token, jobID)
	h := s.c.waitHistory(s.token, run, time.Hour, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		b.Fatalf("backup failed: %s", h.ErrorMessage)
	}
	return h, time.Since(start)
}

// restore restores backup run into database dstID and returns how long it
// took; a failed restore fails b.
func (s benchSystem) restore(b *testing.B, run, dstID string) time.Duration {
	b.Helper()
	start := time.Now()
	var out struct{ RestoreHistoryID string }
	s.c.want(s.c.call("POST", "/v1/backups/history/"+run+"/restore", s.token, map[string]any{"targetDatabaseId": dstID}), 202).decode(b, &out)
	if r := s.c.waitRestore(s.token, out.RestoreHistoryID, time.Hour); r["status"] != "success" {
		b.Fatalf("restore failed: %v", r)
	}
	return time.Since(start)
}

// verify verifies backup run at level and returns how long it took from
// the request to its result; a verification that does not pass fails b.
func (s benchSystem) verify(b *testing.B, run, level string) time.Duration {
	b.Helper()
	start := time.Now()
	v := s.c.verify(s.token, run, level, time.Hour)
	if v.VerificationStatus != "PASSED" {
		b.Fatalf("%s verification: %+v", level, v.VerificationResult)
	}
	return time.Since(start)
}

// peakRSSMiB reads VmHWM, the peak resident set of a running process.
func peakRSSMiB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

// benchDatabase (re)creates database name with about sizeMB of plain dump
// of realistic mixed columns: events (bigserial id, numbers, text, jsonb)
// and users. The caller closes the connection.
func benchDatabase(b *testing.B, name string, sizeMB int) (*pgx.Conn, *pgx.ConnConfig) {
	ctx := context.Background()
	for _, sql := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "CREATE DATABASE " + name} {
		if err := testsupport.AdminExec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	cfg, _ := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
	cfg.Database = name
	src, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	genStart := time.Now()
	if _, err := src.Exec(ctx, `
		CREATE TABLE events (
			id         bigserial PRIMARY KEY,
			user_id    integer NOT NULL,
			kind       text NOT NULL,
			amount     numeric(12,2),
			created_at timestamptz NOT NULL,
			note       text,
			payload    jsonb
		);
		CREATE TABLE users (id integer PRIMARY KEY, email text, name text, signed_up date);
		INSERT INTO users SELECT g, 'user' || g || '@' || md5(g::text) || '.example', initcap(substr(md5(random()::text), 1, 12)),
			date '2015-01-01' + (random() * 3650)::int FROM generate_series(1, 200000) g;`); err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := src.Exec(ctx, fmt.Sprintf(benchEventsInsert, 500000)); err != nil {
			b.Fatal(err)
		}
		var dbBytes int64
		if err := src.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&dbBytes); err != nil {
			b.Fatal(err)
		}
		// A plain dump of this data is about 0.75 of the database's size.
		if float64(dbBytes)*0.75 >= float64(sizeMB<<20) {
			break
		}
	}
	if _, err := src.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated the dataset in %s", time.Since(genStart).Round(time.Second))
	return src, cfg
}

// benchEventsInsert inserts %d generated events.
const benchEventsInsert = `INSERT INTO events (user_id, kind, amount, created_at, note, payload)
		SELECT (random() * 200000)::int + 1,
		       (ARRAY['click', 'view', 'purchase', 'refund', 'signup', 'logout'])[1 + floor(random() * 6)::int],
		       CASE WHEN random() < 0.1 THEN NULL ELSE round((random() * 10000)::numeric, 2) END,
		       timestamptz '2024-01-01' + random() * interval '700 days',
		       CASE WHEN random() < 0.2 THEN NULL ELSE substr(encode(decode(md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex'), 'base64'), 1, 16 + (random() * 70)::int) END,
		       jsonb_build_object('ip', (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int,
		                          'session', md5(random()::text), 'score', round(random()::numeric, 4), 'tags', jsonb_build_array(substr(md5(random()::text), 1, 6), (random() * 100)::int))
		FROM generate_series(1, %d)`

// benchSizeMB is the benchmarks' data size: RAHATBACK_BENCH_MB, default
// 1024.
func benchSizeMB(b *testing.B) int {
	v := os.Getenv("RAHATBACK_BENCH_MB")
	if v == "" {
		return 1024
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("RAHATBACK_BENCH_MB=%q is not a positive number of megabytes", v)
	}
	return n
}
