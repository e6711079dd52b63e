package controlplane_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/rahatback/rahatback/testsupport"
)

// BenchmarkIncremental measures issue 17's figures on a generated
// PostgreSQL database (RAHATBACK_BENCH_MB, default 1024 MB of plain dump),
// with the agent as its own process and local storage, zstd:
//
//   - a plain full backup (a job of type full: one object), and the first
//     backup of an incremental job (a full into the chunk store);
//   - then 1 % of the events updated, in runs of 100 consecutive ids spread
//     through the table (hot ranges), and 0.5 % inserted; then an
//     incremental. Targets: it stores ≤ 10 % of the chunked full's bytes
//     (5 % aimed for), takes ≤ 1.2× the plain full backup's time, and its
//     restore (read through the chain) takes ≤ 1.3× the plain full's;
//   - reported without a target: 1 % of the rows updated uniformly at
//     random, which rewrites nearly every chunk (one change every ~20 KB
//     of dump, chunks average 40 KB).
//
// Run it with `task bench` or
// go test -run '^$' -bench Incremental -benchtime 1x -timeout 90m ./controlplane/
func BenchmarkIncremental(b *testing.B) {
	ctx := context.Background()
	sizeMB := benchSizeMB(b)
	admin := func(sql string) {
		if err := testsupport.AdminExec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	src, _ := benchDatabase(b, "bench_chain", sizeMB)
	defer src.Close(ctx)
	exec := func(sql string) int64 {
		tag, err := src.Exec(ctx, sql)
		if err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
		return tag.RowsAffected()
	}
	var rows int64
	if err := src.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&rows); err != nil {
		b.Fatal(err)
	}

	bs, sys := startBenchSystem(b, "chain@example.com")
	defer sys.stop(b)
	c, token := bs.c, bs.token
	srcID := c.createDB(token, "bench", "bench_chain")
	c.want(c.call("PATCH", "/v1/databases/"+srcID, token, map[string]any{"agentId": bs.agentID}), 200)
	var fullJob, incJob struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "full", "compression": "zstd"}), 201).decode(b, &fullJob)
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "incremental", "compression": "zstd",
		"backupType": "incremental"}), 201).decode(b, &incJob)
	restore := func(run, db string) float64 {
		admin("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)")
		admin("CREATE DATABASE " + db)
		dstID := c.createDB(token, db, db)
		admin("CHECKPOINT")
		d := bs.restore(b, run, dstID).Seconds()
		admin("DROP DATABASE " + db + " WITH (FORCE)")
		return d
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plain, plainT := bs.backup(b, fullJob.ID)
		chunked, chunkedT := bs.backup(b, incJob.ID)
		if chunked.BackupType != "full" || !chunked.Chunked {
			b.Fatalf("first backup of the incremental job: %+v", chunked)
		}
		updated := exec(`UPDATE events SET amount = coalesce(amount, 0) + 1, note = 'updated' WHERE id % 10000 < 100`)
		inserted := exec(fmt.Sprintf(benchEventsInsert, rows/200))
		admin("CHECKPOINT")
		inc, incT := bs.backup(b, incJob.ID)
		if inc.BackupType != "incremental" || inc.ParentID != chunked.ID {
			b.Fatalf("second backup: %+v", inc)
		}
		plainRestore := restore(plain.ID, "bench_chain_plain")
		chainRestore := restore(inc.ID, "bench_chain_inc")

		stored := float64(inc.FileSize) / float64(chunked.FileSize)
		timeRatio := incT.Seconds() / plainT.Seconds()
		restoreRatio := chainRestore / plainRestore
		b.ReportMetric(float64(plain.FileSize>>20), "plain-full-MB")
		b.ReportMetric(float64(chunked.FileSize>>20), "chunked-full-MB")
		b.ReportMetric(float64(inc.FileSize)/(1<<20), "incremental-MB")
		b.ReportMetric(100*stored, "incremental-%-of-full")
		b.ReportMetric(plainT.Seconds(), "plain-full-s")
		b.ReportMetric(chunkedT.Seconds(), "chunked-full-s")
		b.ReportMetric(incT.Seconds(), "incremental-s")
		b.ReportMetric(timeRatio, "incremental/plain-full")
		b.ReportMetric(plainRestore, "restore-plain-s")
		b.ReportMetric(chainRestore, "restore-chain-s")
		b.ReportMetric(restoreRatio, "restore-chain/plain")
		rss := peakRSSMiB(b, bs.agent.Process.Pid)
		b.ReportMetric(rss, "agent-peak-RSS-MiB")
		b.Logf("%d events; updated %d (1%% in runs of 100 ids), inserted %d (0.5%%)", rows, updated, inserted)
		b.Logf("dump %d MB: plain full %d MB in %.1fs; chunked full %d MB in %.1fs; incremental %.1f MB (%.2f%% of the full, %.1f MB new dump bytes, dedup ×%.1f) in %.1fs (%.2f× the plain full)",
			plain.RawSize>>20, plain.FileSize>>20, plainT.Seconds(), chunked.FileSize>>20, chunkedT.Seconds(),
			float64(inc.FileSize)/(1<<20), 100*stored, float64(*inc.NewBytes)/(1<<20), *inc.DedupRatio, incT.Seconds(), timeRatio)
		b.Logf("restore: plain full %.1fs, the incremental through its chain %.1fs (%.2f×)", plainRestore, chainRestore, restoreRatio)
		if stored > 0.10 || timeRatio > 1.2 || restoreRatio > 1.3 || rss > 150 {
			b.Errorf("targets missed: incremental %.2f%% of the full (≤ 10%%), time %.2f× the plain full (≤ 1.2), chain restore %.2f× (≤ 1.3), agent peak RSS %.0f MiB (≤ 150)",
				100*stored, timeRatio, restoreRatio, rss)
		}

		// Scattered: 1% of rows at random (no target; see above).
		scattered := exec(`UPDATE events SET amount = coalesce(amount, 0) + 1 WHERE random() < 0.01`)
		admin("CHECKPOINT")
		sc, scT := bs.backup(b, incJob.ID)
		scStored := float64(sc.FileSize) / float64(chunked.FileSize)
		b.ReportMetric(100*scStored, "scattered-%-of-full")
		b.Logf("1%% updated uniformly at random (%d rows): incremental %.1f MB (%.1f%% of the full) in %.1fs",
			scattered, float64(sc.FileSize)/(1<<20), 100*scStored, scT.Seconds())
		for _, run := range []string{sc.ID, inc.ID, chunked.ID, plain.ID} {
			c.want(c.call("DELETE", "/v1/backups/history/"+run, token, nil), 204)
		}
	}
	b.StopTimer()
	admin("DROP DATABASE IF EXISTS bench_chain WITH (FORCE)")
}
