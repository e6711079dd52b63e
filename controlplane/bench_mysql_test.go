package controlplane_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rahatback/rahatback/mariadbserver"
	"github.com/rahatback/rahatback/testsupport"
)

// BenchmarkMySQLBackupRestore measures, on one freshly generated MariaDB
// database of realistic mixed columns (RAHATBACK_BENCH_MB, default 1024 MB
// of table data):
//
//	mariadb-dump > /dev/null             vs  a RahatBack backup to local storage (zstd, and uncompressed)
//	mariadb < the same plain dump        vs  a RahatBack restore of that backup
//
// and the agent process's peak RSS. Targets (issue 13): both ratios ≤ 1.25,
// peak RSS ≤ 100 MiB. Run it with `task bench` or
// go test -run '^$' -bench MySQLBackupRestore -benchtime 1x ./controlplane/
func BenchmarkMySQLBackupRestore(b *testing.B) {
	sizeMB := benchSizeMB(b)
	maria := testsupport.MariaDB(b)
	admin, err := maria.Open("")
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	exec1 := func(q string) {
		b.Helper()
		if _, err := admin.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	for _, d := range []string{"bench_src", "bench_plain", "bench_restore"} {
		exec1("DROP DATABASE IF EXISTS " + d)
	}
	exec1("CREATE DATABASE bench_src")
	genStart := time.Now()
	exec1(`CREATE TABLE bench_src.users (id INT PRIMARY KEY, email VARCHAR(120), name VARCHAR(40), signed_up DATE)`)
	exec1(`INSERT INTO bench_src.users SELECT seq, CONCAT('user', seq, '@', MD5(seq), '.example'), SUBSTR(MD5(RAND()), 1, 12),
		'2015-01-01' + INTERVAL FLOOR(RAND() * 3650) DAY FROM bench_src.seq_1_to_200000`)
	exec1(`CREATE TABLE bench_src.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id INT NOT NULL, kind VARCHAR(16) NOT NULL,
		amount DECIMAL(12,2), created_at DATETIME(6) NOT NULL, note VARCHAR(120), payload JSON, blob_part VARBINARY(32))`)
	for {
		exec1(`INSERT INTO bench_src.events (user_id, kind, amount, created_at, note, payload, blob_part)
			SELECT FLOOR(RAND() * 200000) + 1, ELT(1 + FLOOR(RAND() * 6), 'click', 'view', 'purchase', 'refund', 'signup', 'logout'),
			       IF(RAND() < 0.1, NULL, ROUND(RAND() * 10000, 2)), '2024-01-01' + INTERVAL FLOOR(RAND() * 700 * 86400) SECOND,
			       IF(RAND() < 0.2, NULL, SUBSTR(TO_BASE64(UNHEX(CONCAT(MD5(RAND()), MD5(RAND()), MD5(RAND())))), 1, 16 + FLOOR(RAND() * 50))),
			       JSON_OBJECT('ip', CONCAT(FLOOR(RAND() * 255), '.', FLOOR(RAND() * 255), '.', FLOOR(RAND() * 255), '.', FLOOR(RAND() * 255)),
			                   'session', MD5(RAND()), 'score', ROUND(RAND(), 4)),
			       UNHEX(MD5(RAND()))
			FROM bench_src.seq_1_to_500000`)
		var bytes int64
		if err := admin.QueryRow(`SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'bench_src'`).Scan(&bytes); err != nil {
			b.Fatal(err)
		}
		if bytes >= int64(sizeMB)<<20 {
			break
		}
	}
	b.Logf("generated the dataset in %s", time.Since(genStart).Round(time.Second))

	opts := adminOptionFile(b)
	timeCmd := func(script string, args ...string) time.Duration {
		b.Helper()
		cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", script, err, out)
		}
		return time.Since(start)
	}
	const dumpFlags = `--single-transaction --skip-lock-tables --routines --triggers --events --hex-blob --default-character-set=utf8mb4 --no-tablespaces`
	dumpFile := filepath.Join(b.TempDir(), "plain.sql")
	timeCmd(`mariadb-dump --defaults-file="$1" `+dumpFlags+` bench_src > "$2"`, opts, dumpFile)
	fi, _ := os.Stat(dumpFile)
	b.Logf("plain dump: %d MB", fi.Size()>>20)

	bs, sys := startBenchSystem(b, "bench-mysql@example.com")
	defer sys.stop(b)
	c, token, remoteID := bs.c, bs.token, bs.agentID
	createDB := func(name string) string {
		var d struct{ ID string }
		c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": name, "type": "mysql", "host": "127.0.0.1",
			"port": maria.Port(), "username": mariadbserver.Admin, "password": maria.Password(), "database": name,
			"agentId": remoteID}), 201).decode(b, &d)
		return d.ID
	}
	srcID := createDB("bench_src")
	var job, plainJob struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "bench", "compression": "zstd"}), 201).decode(b, &job)
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "bench plain", "compression": "none"}), 201).decode(b, &plainJob)

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dump := timeCmd(`mariadb-dump --defaults-file="$1" `+dumpFlags+` bench_src > /dev/null`, opts)

		h, ours := bs.backup(b, job.ID)
		run := h.ID
		hp, oursPlain := bs.backup(b, plainJob.ID)
		plainRun := hp.ID

		exec1("DROP DATABASE IF EXISTS bench_plain")
		exec1("CREATE DATABASE bench_plain")
		plain := timeCmd(`mariadb --defaults-file="$1" --database=bench_plain < "$2"`, opts, dumpFile)

		exec1("DROP DATABASE IF EXISTS bench_restore")
		exec1("CREATE DATABASE bench_restore")
		restore := bs.restore(b, run, createDB("bench_restore"))
		rss := peakRSSMiB(b, bs.agent.Process.Pid)

		backupRatio := ours.Seconds() / dump.Seconds()
		plainRatio := oursPlain.Seconds() / dump.Seconds()
		b.ReportMetric(oursPlain.Seconds(), "backup-uncompressed-s")
		b.ReportMetric(plainRatio, "backup-uncompressed/mariadb-dump")
		restoreRatio := restore.Seconds() / plain.Seconds()
		b.ReportMetric(dump.Seconds(), "mariadb-dump-s")
		b.ReportMetric(ours.Seconds(), "backup-s")
		b.ReportMetric(backupRatio, "backup/mariadb-dump")
		b.ReportMetric(plain.Seconds(), "mariadb-restore-s")
		b.ReportMetric(restore.Seconds(), "restore-s")
		b.ReportMetric(restoreRatio, "restore/mariadb")
		b.ReportMetric(rss, "agent-peak-RSS-MiB")
		b.Logf("the agent's own durations: zstd backup %.1fs, uncompressed %.1fs", h.Duration, hp.Duration)
		b.Logf("dump %d MB → stored %d MB (zstd); mariadb-dump %.1fs, backup %.1fs (%.2f×), uncompressed %.1fs (%.2f×); mariadb < dump %.1fs, restore %.1fs (%.2f×); agent peak RSS %.0f MiB",
			fi.Size()>>20, h.FileSize>>20, dump.Seconds(), ours.Seconds(), backupRatio, oursPlain.Seconds(), plainRatio, plain.Seconds(),
			restore.Seconds(), restoreRatio, rss)
		if backupRatio > 1.25 || plainRatio > 1.25 || restoreRatio > 1.25 || rss > 100 {
			b.Errorf("targets missed: backup/mariadb-dump %.2f zstd, %.2f uncompressed (≤ 1.25), restore/mariadb %.2f (≤ 1.25), agent RSS %.0f MiB (≤ 100)",
				backupRatio, plainRatio, restoreRatio, rss)
		}
		c.want(c.call("DELETE", "/v1/backups/history/"+run, token, nil), 204)
		c.want(c.call("DELETE", "/v1/backups/history/"+plainRun, token, nil), 204)
	}
	for _, d := range []string{"bench_src", "bench_plain", "bench_restore"} {
		exec1("DROP DATABASE IF EXISTS " + d)
	}
}
