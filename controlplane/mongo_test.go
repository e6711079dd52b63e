package controlplane_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/klauspost/compress/zstd"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/rahatback/rahatback/engines/mongodb/archive"
	"github.com/rahatback/rahatback/ferretserver"
	"github.com/rahatback/rahatback/testsupport"
)

// loadMongoSamples loads ../shared/sample-db/mongo (10 collections, 7,466
// documents in extended JSON) into db, one collection per file.
func loadMongoSamples(t *testing.T, db *mongo.Database) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "shared", "sample-db", "mongo", "*", "*.json.zst"))
	if err != nil || len(files) != 10 {
		t.Fatalf("mongo samples: %d files, %v", len(files), err)
	}
	total := 0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := zstd.NewReader(fh)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".json.zst")
		n, err := ferretserver.LoadExtJSON(context.Background(), db.Collection(name), zr)
		zr.Close()
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		total += n
	}
	if total != 7466 {
		t.Fatalf("loaded %d documents, want 7466", total)
	}
}

// TestMongoDBSampleDatabases backs the MongoDB sample collections up
// through `rahatback up` and its local agent (encrypted to S3, and plain to
// local storage), verifies them (the archive's structure and CRCs too),
// downloads them, opens the download as the README says (age, zstd) into
// an archive that reads back whole, and restores each into a new database
// whose collections, documents and indexes must equal the source's.
func TestMongoDBSampleDatabases(t *testing.T) {
	ctx := context.Background()
	gw := testsupport.StartVersityGW(t)
	ferret, err := ferretserver.Start(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ferret.Stop()
	cl, err := ferret.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(ctx)
	suffix := testsupport.RandomString(4)
	src := "samples_" + suffix
	loadMongoSamples(t, cl.Database(src))
	if _, err := cl.Database(src).Collection("books").Indexes().CreateOne(ctx, mongo.IndexModel{Keys: map[string]int{"isbn": 1}}); err != nil {
		t.Fatal(err)
	}
	want, err := ferretserver.Contents(ctx, cl.Database(src))
	if err != nil || len(want) != 10 {
		t.Fatalf("source: %d collections, %v", len(want), err)
	}

	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL,
		"--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--allow-endpoint", endpointHost(t, gw.Endpoint)}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("mongo@example.com")
	c.waitAgents(token, 30*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	createDB := func(c client, name, database string) string {
		t := c.t
		t.Helper()
		var d struct {
			ID   string
			Port int
		}
		// No port: MongoDB's default (27017) is filled in, then corrected.
		c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": name, "type": "mongodb", "host": ferret.Host(),
			"database": database}), 201).decode(t, &d)
		if d.Port != 27017 {
			t.Fatalf("a mongodb database without a port got port %d, want 27017", d.Port)
		}
		c.want(c.call("PATCH", "/v1/databases/"+d.ID, token, map[string]any{"port": ferret.Port()}), 200)
		return d.ID
	}
	srcID := createDB(c, "samples", src)
	var test struct {
		Success bool
		Version string
		Message string
	}
	c.want(c.call("POST", "/v1/databases/test-connection", token, map[string]any{"databaseId": srcID}), 200).decode(t, &test)
	if !test.Success || !strings.HasPrefix(test.Version, "MongoDB 7.") {
		t.Fatalf("test connection: %+v", test)
	}

	rows := map[string]int64{}
	for name, w := range want {
		rows[name] = w.Docs
	}
	trip := sampleTrip{base: base, token: token, srcID: srcID, engine: "mongodb", ext: ".archive.zst", rows: rows, check: "archive",
		scratch: func(t *testing.T) int {
			names, err := cl.ListDatabaseNames(ctx, bson.D{{Key: "name", Value: bson.D{{Key: "$regex", Value: "^rahatback_verify_"}}}})
			if err != nil {
				t.Fatal(err)
			}
			return len(names)
		},
		target: func(t *testing.T, name string) string { return createDB(client{t, base}, name, name) },
		compare: func(t *testing.T, dst string) {
			got, err := ferretserver.Contents(ctx, cl.Database(dst))
			if err != nil {
				t.Fatal(err)
			}
			for name, w := range want {
				if got[name] != w {
					t.Errorf("restored collection %s: %+v, want %+v", name, got[name], w)
				}
			}
			if len(got) != len(want) {
				t.Errorf("restored %d collections, want %d", len(got), len(want))
			}
		}}
	roundTrip := func(t *testing.T, job map[string]any, dst string) (string, historyView) {
		jobID, h := trip.run(t, job, dst)
		if h.Manifest.Consistency != "per-collection" {
			t.Fatalf("consistency %q, want per-collection on a standalone server", h.Manifest.Consistency)
		}
		return jobID, h
	}
	t.Run("S3Encrypted", func(t *testing.T) {
		c := client{t, base}
		var cs struct{ ID string }
		c.want(c.call("POST", "/v1/cloud-storage", token, map[string]any{"name": "gw", "storageType": "s3", "s3AccessKeyId": gw.AccessKey,
			"s3SecretAccessKey": gw.SecretKey, "s3Region": gw.Region, "s3Bucket": gw.Bucket, "s3Endpoint": gw.Endpoint,
			"s3ForcePathStyle": true}), 201).decode(t, &cs)
		const password = "correct horse battery 42"
		jobID, h := roundTrip(t, map[string]any{"name": "samples to s3", "storageType": "s3", "cloudStorageId": cs.ID,
			"isEncrypted": true, "encryptionPassword": password}, "restored_s3_"+suffix)
		run, file := h.ID, h.FileName

		// The README's recipe up to mongorestore (not installable here):
		// age and zstd give back an archive that reads whole, with every
		// collection's documents and a matching CRC-64.
		backup := filepath.Join(t.TempDir(), file)
		downloadTo(t, base, token, "/v1/backups/history/"+run+"/download", backup)
		key := exportedKey(t, base, token, jobID, password)
		plain := filepath.Join(t.TempDir(), "samples.archive")
		cmd := exec.Command("sh", "-c", `age -d -i "$1" "$2" | zstd -dc > "$3"`, "sh", key, backup, plain)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("age -d | zstd -d: %v\n%s", err, out)
		}
		f, err := os.Open(plain)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ar, err := archive.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		docs := map[string]int64{}
		for {
			it, err := ar.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !it.EOF {
				docs[it.Collection]++
			}
		}
		for name, w := range want {
			if docs[name] != w.Docs {
				t.Errorf("archive by hand: %s has %d documents, want %d", name, docs[name], w.Docs)
			}
		}
	})
	t.Run("Local", func(t *testing.T) {
		roundTrip(t, map[string]any{"name": "samples local"}, "restored_local_"+suffix)
	})
	// An incremental job: the archive stream chunks like any dump, the
	// second backup reuses the first's chunks, and restores through them.
	t.Run("Incremental", func(t *testing.T) {
		c := client{t, base}
		var job struct{ ID string }
		c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "samples inc",
			"backupType": "incremental"}), 201).decode(t, &job)
		h1 := c.waitBackup(token, c.runJob(token, job.ID), false)
		h2 := c.waitBackup(token, c.runJob(token, job.ID), false)
		if h1.Status != "success" || h2.Status != "success" || h1.BackupType != "full" || h2.BackupType != "incremental" ||
			h2.ParentID != h1.ID || !strings.HasSuffix(h2.FileName, ".archive.chunks") {
			t.Fatalf("incremental mongodb backups: %+v\n%+v", h1, h2)
		}
		if h2.NewBytes == nil || *h2.NewBytes*2 > h2.RawSize {
			t.Fatalf("the unchanged database's incremental stored %v of %d bytes", h2.NewBytes, h2.RawSize)
		}
		dst := "restored_inc_" + suffix
		dstID := createDB(c, dst, dst)
		var out struct{ RestoreHistoryID string }
		c.want(c.call("POST", "/v1/backups/history/"+h2.ID+"/restore", token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &out)
		if r := c.waitRestore(token, out.RestoreHistoryID, 120*time.Second); r["status"] != "success" {
			t.Fatalf("restore of the incremental: %v", r)
		}
		trip.compare(t, dst)
	})
}
