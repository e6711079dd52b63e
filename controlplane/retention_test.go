package controlplane_test

import (
	"context"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rahatback/rahatback/testsupport"
)

type retentionPreview struct {
	Expire []struct {
		HistoryID string
		Reason    string
	}
	Keep []struct {
		HistoryID string
		Reasons   []string
	}
}

func (p retentionPreview) ids() (expire, keep []string) {
	for _, e := range p.Expire {
		expire = append(expire, e.HistoryID)
	}
	for _, k := range p.Keep {
		keep = append(keep, k.HistoryID)
	}
	return expire, keep
}

// TestRetention: on local storage and on S3 (versitygw), the retention
// preview names what would go and why; the worker then expires exactly
// those backups, deletes their objects (and manifests), keeps the rest and
// the newest always, and the rows say why. Expired backups can no longer
// be downloaded or restored.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	gw := testsupport.StartVersityGW(t)
	bucket := gw.NewBucket(t)
	dbURL, pool := testsupport.NewDatabase(t)
	suffix := testsupport.RandomString(3)
	srcName := "retention src " + suffix
	src := scratchDB(t, srcName)
	if _, err := src.Exec(ctx, `CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)`); err != nil {
		t.Fatal(err)
	}

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL,
		"--agent-heartbeat", "500ms", "--retention-interval", "300ms", "--allow-endpoint", endpointHost(t, gw.Endpoint)}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("retention@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	c.want(c.call("POST", "/v1/cloud-storage", token, map[string]any{"name": "gw", "storageType": "s3",
		"s3AccessKeyId": gw.AccessKey, "s3SecretAccessKey": gw.SecretKey, "s3Region": gw.Region, "s3Bucket": bucket,
		"s3Endpoint": gw.Endpoint, "s3ForcePathStyle": true, "isDefault": true}), 201)
	dbID := c.createDB(token, "shop", srcName)

	// stored reports whether the object of backup key (and its manifest)
	// is still in the storage.
	stored := func(storageType, key string) bool {
		t.Helper()
		if storageType == "local" {
			return len(findFiles(t, dataDir, path.Base(key))) > 0
		}
		out, err := gw.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			if strings.Contains(*o.Key, path.Base(key)) {
				return true
			}
		}
		return false
	}

	for _, storageType := range []string{"local", "s3"} {
		t.Run(storageType, func(t *testing.T) {
			var job struct{ ID string }
			c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": dbID, "name": "kept " + storageType,
				"storageType": storageType, "retentionDays": 0, "keepLast": 10}), 201).decode(t, &job)
			var runs []historyView
			for range 4 {
				id := c.runJob(token, job.ID)
				h := c.waitHistory(token, id, 60*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
				if h.Status != "success" {
					t.Fatalf("backup failed: %s", h.ErrorMessage)
				}
				runs = append(runs, h)
			}
			var p retentionPreview
			c.want(c.call("GET", "/v1/backups/jobs/"+job.ID+"/retention-preview", token, nil), 200).decode(t, &p)
			if len(p.Expire) != 0 || len(p.Keep) != 4 {
				t.Fatalf("keepLast 10 with 4 backups: %+v", p)
			}
			// Nothing expires while the policy keeps everything.
			time.Sleep(time.Second)
			for _, r := range runs {
				if !stored(storageType, r.StorageKey) {
					t.Fatalf("backup %s deleted while kept", r.ID)
				}
			}

			c.want(c.call("PATCH", "/v1/backups/jobs/"+job.ID, token, map[string]any{"keepLast": 2}), 200)
			c.want(c.call("GET", "/v1/backups/jobs/"+job.ID+"/retention-preview", token, nil), 200).decode(t, &p)
			expire, keep := p.ids()
			if !slices.Equal(expire, []string{runs[1].ID, runs[0].ID}) || !slices.Equal(keep, []string{runs[3].ID, runs[2].ID}) {
				t.Fatalf("preview with keepLast 2: %+v", p)
			}
			if p.Expire[0].Reason != "not kept by keepLast 2" || !slices.Contains(p.Keep[0].Reasons, "newest backup") {
				t.Fatalf("preview reasons: %+v", p)
			}

			for _, r := range runs[:2] {
				h := c.waitHistory(token, r.ID, 20*time.Second, "expired and purged", func(h historyView) bool {
					return h.Status == "expired" && h.PurgedAt != nil
				})
				if h.ExpireReason != "retention: not kept by keepLast 2" {
					t.Fatalf("expired row says %q", h.ExpireReason)
				}
				if stored(storageType, r.StorageKey) {
					t.Fatalf("expired backup %s still in the storage", r.ID)
				}
				c.want(c.call("GET", "/v1/backups/history/"+r.ID+"/download", token, nil), 409)
				c.want(c.call("POST", "/v1/backups/history/"+r.ID+"/restore", token, nil), 409)
			}
			for _, r := range runs[2:] {
				if h := c.history(token, r.ID); h.Status != "success" || !stored(storageType, r.StorageKey) {
					t.Fatalf("kept backup %s: %s, stored %v", r.ID, h.Status, stored(storageType, r.StorageKey))
				}
			}
			var list struct{ TotalResults int }
			c.want(c.call("GET", "/v1/backups/history?status=expired&backupJobId="+job.ID, token, nil), 200).decode(t, &list)
			if list.TotalResults != 2 {
				t.Fatalf("%d expired rows listed, want 2", list.TotalResults)
			}

			// Age limit only: every backup ten days old against 7 days of
			// retention. The newest still stays.
			c.want(c.call("PATCH", "/v1/backups/jobs/"+job.ID, token, map[string]any{"keepLast": nil, "retentionDays": 7}), 200)
			if _, err := pool.Exec(ctx, `UPDATE backup_history SET completed_at = completed_at - interval '10 days'
				WHERE backup_job_id = $1`, job.ID); err != nil {
				t.Fatal(err)
			}
			h := c.waitHistory(token, runs[2].ID, 20*time.Second, "expired and purged", func(h historyView) bool {
				return h.Status == "expired" && h.PurgedAt != nil
			})
			if h.ExpireReason != "retention: older than 7 days" || stored(storageType, runs[2].StorageKey) {
				t.Fatalf("ten-day-old backup: %+v", h)
			}
			time.Sleep(time.Second)
			if h := c.history(token, runs[3].ID); h.Status != "success" || !stored(storageType, runs[3].StorageKey) {
				t.Fatalf("the newest backup must stay, whatever its age: %s", h.Status)
			}
		})
	}
}
