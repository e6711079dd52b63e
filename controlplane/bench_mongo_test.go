package controlplane_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/rahatback/rahatback/ferretserver"
)

// BenchmarkMongoDBBackupRestore measures, on one generated database of
// mixed documents in FerretDB (RAHATBACK_BENCH_MB, default 1024 MB of
// BSON in two collections):
//
//	a plain driver read of every document into io.Discard  vs  a RahatBack backup to local storage (uncompressed, and zstd)
//	a RahatBack restore of that backup: its throughput
//
// and the agent process's peak RSS. Target (issue 14): backup ≤ 1.3× the
// driver read. Run it with `task bench` or
// go test -run '^$' -bench MongoDBBackupRestore -benchtime 1x ./controlplane/
func BenchmarkMongoDBBackupRestore(b *testing.B) {
	ctx := context.Background()
	sizeMB := benchSizeMB(b)
	ferret, err := ferretserver.Start(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ferret.Stop()
	cl, err := ferret.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Disconnect(ctx)
	src := cl.Database("bench_src")

	genStart := time.Now()
	var generated int64
	kinds := []string{"click", "view", "purchase", "refund", "signup", "logout"}
	rnd := func(n int64) int64 { v, _ := rand.Int(rand.Reader, big.NewInt(n)); return v.Int64() }
	for id := int64(0); generated < int64(sizeMB)<<20; {
		docs := make([]any, 0, 1000)
		for range 1000 {
			note := make([]byte, 60+rnd(200))
			rand.Read(note)
			blob := make([]byte, 32)
			rand.Read(blob)
			d := bson.D{{Key: "_id", Value: id}, {Key: "user", Value: rnd(200000)}, {Key: "kind", Value: kinds[id%6]},
				{Key: "amount", Value: float64(rnd(1000000)) / 100}, {Key: "at", Value: bson.NewDateTimeFromTime(time.Unix(1.7e9+rnd(6e7), 0))},
				{Key: "note", Value: fmt.Sprintf("%x", note)},
				{Key: "payload", Value: bson.D{{Key: "ip", Value: fmt.Sprintf("%d.%d.%d.%d", rnd(255), rnd(255), rnd(255), rnd(255))},
					{Key: "session", Value: fmt.Sprintf("%x", blob[:16])}, {Key: "score", Value: float64(rnd(10000)) / 10000}}},
				{Key: "tags", Value: bson.A{kinds[rnd(6)], kinds[rnd(6)]}}, {Key: "blob", Value: bson.Binary{Data: blob}}}
			raw, _ := bson.Marshal(d)
			generated += int64(len(raw))
			docs = append(docs, bson.Raw(raw))
			id++
		}
		coll := "events"
		if id%5000 == 0 {
			coll = "users"
		}
		if _, err := src.Collection(coll).InsertMany(ctx, docs); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("generated %d MB of BSON in %s", generated>>20, time.Since(genStart).Round(time.Second))

	// The floor: the driver reads every document and throws it away.
	driverRead := func() (time.Duration, int64) {
		start := time.Now()
		var n int64
		names, err := src.ListCollectionNames(ctx, bson.D{})
		if err != nil {
			b.Fatal(err)
		}
		for _, name := range names {
			cur, err := src.Collection(name).Find(ctx, bson.D{})
			if err != nil {
				b.Fatal(err)
			}
			for cur.Next(ctx) {
				m, _ := io.Discard.Write(cur.Current)
				n += int64(m)
			}
			if err := cur.Err(); err != nil {
				b.Fatal(err)
			}
			cur.Close(ctx)
		}
		return time.Since(start), n
	}

	bs, sys := startBenchSystem(b, "bench-mongo@example.com")
	defer sys.stop(b)
	c, token, remoteID := bs.c, bs.token, bs.agentID
	createDB := func(name string) string {
		var d struct{ ID string }
		c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": name, "type": "mongodb", "host": ferret.Host(),
			"port": ferret.Port(), "database": name, "agentId": remoteID}), 201).decode(b, &d)
		return d.ID
	}
	srcID := createDB("bench_src")
	var job, plainJob struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "bench", "compression": "zstd"}), 201).decode(b, &job)
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "bench plain", "compression": "none"}), 201).decode(b, &plainJob)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		read, readBytes := driverRead()
		hp, oursPlain := bs.backup(b, plainJob.ID)
		h, ours := bs.backup(b, job.ID)

		if err := cl.Database("bench_restore").Drop(ctx); err != nil {
			b.Fatal(err)
		}
		if err := cl.Database("bench_restore").CreateCollection(ctx, "placeholder"); err != nil {
			b.Fatal(err)
		}
		restore := bs.restore(b, h.ID, createDB("bench_restore"))
		rss := peakRSSMiB(b, bs.agent.Process.Pid)

		plainRatio := oursPlain.Seconds() / read.Seconds()
		ratio := ours.Seconds() / read.Seconds()
		mbps := float64(readBytes) / (1 << 20) / restore.Seconds()
		b.ReportMetric(read.Seconds(), "driver-read-s")
		b.ReportMetric(oursPlain.Seconds(), "backup-uncompressed-s")
		b.ReportMetric(plainRatio, "backup-uncompressed/driver-read")
		b.ReportMetric(ours.Seconds(), "backup-s")
		b.ReportMetric(ratio, "backup/driver-read")
		b.ReportMetric(restore.Seconds(), "restore-s")
		b.ReportMetric(mbps, "restore-MB/s")
		b.ReportMetric(rss, "agent-peak-RSS-MiB")
		b.Logf("%d MB of documents: driver read %.1fs; backup uncompressed %.1fs (%.2f×, %d MB stored), zstd %.1fs (%.2f×, %d MB stored); restore %.1fs (%.1f MB/s); agent peak RSS %.0f MiB; the agent's own durations %.1fs and %.1fs",
			readBytes>>20, read.Seconds(), oursPlain.Seconds(), plainRatio, hp.FileSize>>20, ours.Seconds(), ratio, h.FileSize>>20,
			restore.Seconds(), mbps, rss, hp.Duration, h.Duration)
		if plainRatio > 1.3 || ratio > 1.3 {
			b.Errorf("target missed: backup/driver read %.2f uncompressed, %.2f zstd (≤ 1.3)", plainRatio, ratio)
		}
		want, err := ferretserver.Contents(ctx, src)
		if err != nil {
			b.Fatal(err)
		}
		got, err := ferretserver.Contents(ctx, cl.Database("bench_restore"))
		if err != nil {
			b.Fatal(err)
		}
		for name, w := range want {
			if got[name] != w {
				b.Errorf("restored %s: %+v, want %+v", name, got[name], w)
			}
		}
		// The backups stay until the temporary directories go: the access
		// token has expired by now on a 1 GB run.
	}
}
