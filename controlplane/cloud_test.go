package controlplane_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rahatback/rahatback/drivefake"
	"github.com/rahatback/rahatback/testsupport"
)

// downloadSum downloads a backup through the API and returns its SHA-256.
func (c client) downloadSum(token, run string) (string, int64) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.base+"/v1/backups/history/"+run+"/download", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("download: %d %s", resp.StatusCode, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// backupRestoreRoundTrip runs job, checks download and verification, and
// restores into a fresh database that must equal the source.
func backupRestoreRoundTrip(t *testing.T, c client, token, jobID string, want map[string][]string, dstName string) historyView {
	t.Helper()
	run := c.runJob(token, jobID)
	h := c.waitHistory(token, run, 90*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		t.Fatalf("backup failed: %s", h.ErrorMessage)
	}
	if sum, n := c.downloadSum(token, run); sum != h.ChecksumValue || n != h.FileSize {
		t.Fatalf("download %s/%d, recorded %s/%d", sum, n, h.ChecksumValue, h.FileSize)
	}
	c.want(c.call("POST", "/v1/backups/history/"+run+"/verify", token, map[string]any{"verificationLevel": "BASIC"}), 202)
	h = c.waitHistory(token, run, 60*time.Second, "verified", func(h historyView) bool { return h.VerificationStatus != "PENDING" })
	if h.VerificationStatus != "PASSED" {
		t.Fatalf("verification: %+v", h.VerificationResult)
	}
	dst := scratchDB(t, dstName)
	dstID := c.createDB(token, dstName, dstName)
	var out struct{ RestoreHistoryID string }
	c.want(c.call("POST", "/v1/backups/history/"+run+"/restore", token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &out)
	if r := c.waitRestore(token, out.RestoreHistoryID, 90*time.Second); r["status"] != "success" {
		t.Fatalf("restore: %v", r)
	}
	if got := snapshot(t, dst); !reflect.DeepEqual(got, want) {
		t.Fatal("restored database differs from the source")
	}
	return h
}

// TestS3Storage: S3 storage against a real S3 server (versitygw): test
// connection good and bad, backup → object in the bucket → download →
// verify → restore → delete, and an agent killed mid-upload leaves neither
// an object nor a pending multipart upload.
func TestS3Storage(t *testing.T) {
	ctx := context.Background()
	gw := testsupport.StartVersityGW(t)

	// Uploads reach versitygw through a proxy that can hold part 2 of a
	// multipart upload, to kill the agent mid-upload.
	target, _ := url.Parse(gw.Endpoint)
	var mu sync.Mutex
	var hold chan struct{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := hold
		mu.Unlock()
		if h != nil && r.URL.Query().Get("partNumber") == "2" {
			select {
			case <-h:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	dbURL, _ := testsupport.NewDatabase(t)
	suffix := testsupport.RandomString(3)
	srcName := "s3 src " + suffix
	src := scratchDB(t, srcName)
	if _, err := src.Exec(ctx, `CREATE TABLE big (id int, a text, b text)`); err != nil {
		t.Fatal(err)
	}
	// Random hex compresses about 2:1: enough rows for more than one 8 MiB part.
	if _, err := src.Exec(ctx, `INSERT INTO big SELECT g, md5(random()::text) || md5(random()::text), md5(random()::text) || md5(random()::text)
		FROM generate_series(1, 200000) g`); err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, src)

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	// Loopback addresses need the operator's allowance: the proxy, and a
	// closed port for the "unreachable" test.
	closedAddr := freeAddr(t)
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL,
		"--allow-endpoint", endpointHost(t, front.URL), "--allow-endpoint", closedAddr,
		"--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--run-lost-after", "3s"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("s3@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	s3Body := map[string]any{"name": "gw", "storageType": "s3", "s3AccessKeyId": gw.AccessKey, "s3SecretAccessKey": gw.SecretKey,
		"s3Region": gw.Region, "s3Bucket": gw.Bucket, "s3Endpoint": front.URL, "s3ForcePathStyle": true, "s3Prefix": "prod/db",
		"isDefault": true}
	r := c.want(c.call("POST", "/v1/cloud-storage", token, s3Body), 201)
	if strings.Contains(string(r.body), gw.SecretKey) {
		t.Fatalf("response holds the secret: %s", r.body)
	}
	var cs struct{ ID string }
	r.decode(t, &cs)

	t.Run("TestConnection", func(t *testing.T) {
		var out struct {
			Success bool
			Message string
		}
		c.want(c.call("POST", "/v1/cloud-storage/test", token, map[string]any{"cloudStorageId": cs.ID}), 200).decode(t, &out)
		if !out.Success {
			t.Fatalf("good credentials: %+v", out)
		}
		for name, override := range map[string]map[string]any{
			"BadSecret":   {"s3SecretAccessKey": "wrong-secret-" + suffix},
			"NoBucket":    {"s3Bucket": "no-such-bucket-" + suffix},
			"Unreachable": {"s3Endpoint": "http://" + closedAddr},
		} {
			body := map[string]any{"cloudStorageId": cs.ID}
			for k, v := range override {
				body[k] = v
			}
			r := c.want(c.call("POST", "/v1/cloud-storage/test", token, body), 200)
			r.decode(t, &out)
			if out.Success || out.Message == "" || strings.Contains(string(r.body), gw.SecretKey) || strings.Contains(string(r.body), "wrong-secret-") {
				t.Fatalf("%s: %s", name, r.body)
			}
			t.Logf("%s: %s", name, out.Message)
		}
	})

	srcID := c.createDB(token, "s3 src", srcName)
	var job struct{ ID, CloudStorageID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "to s3", "storageType": "s3"}), 201).decode(t, &job)
	if job.CloudStorageID != cs.ID {
		t.Fatalf("job did not take the default storage: %+v", job)
	}

	var h historyView
	t.Run("BackupDownloadVerifyRestore", func(t *testing.T) {
		h = backupRestoreRoundTrip(t, c, token, job.ID, want, "s3 dst "+suffix)
		key := "prod/db/" + h.StorageKey
		if _, err := gw.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &gw.Bucket, Key: &key}); err != nil {
			t.Fatalf("object %s not in the bucket: %v", key, err)
		}
	})

	t.Run("BackupStaysWithItsStorage", func(t *testing.T) {
		body := map[string]any{}
		for k, v := range s3Body {
			body[k] = v
		}
		body["name"], body["s3Bucket"], body["isDefault"] = "second", gw.NewBucket(t), false
		var second struct{ ID string }
		c.want(c.call("POST", "/v1/cloud-storage", token, body), 201).decode(t, &second)
		c.want(c.call("PATCH", "/v1/backups/jobs/"+job.ID, token, map[string]any{"cloudStorageId": second.ID}), 200)
		if sum, _ := c.downloadSum(token, h.ID); sum != h.ChecksumValue {
			t.Fatal("an older backup is looked for in the job's new storage")
		}
		c.want(c.call("PATCH", "/v1/backups/jobs/"+job.ID, token, map[string]any{"cloudStorageId": cs.ID}), 200)
	})

	t.Run("Delete", func(t *testing.T) {
		c.want(c.call("DELETE", "/v1/backups/history/"+h.ID, token, nil), 204)
		key := "prod/db/" + h.StorageKey
		if _, err := gw.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &gw.Bucket, Key: &key}); err == nil {
			t.Fatal("object still in the bucket after delete")
		}
	})

	t.Run("AgentKilledMidUpload", func(t *testing.T) {
		bin := buildAgent(t)
		state := enrollAgentBinary(t, c, bin, token, "uploader")
		cmd := startAgentBinary(t, bin, state)
		remoteID := c.waitRemoteOnline(token)
		c.want(c.call("PATCH", "/v1/databases/"+srcID, token, map[string]any{"agentId": remoteID}), 200)
		mu.Lock()
		hold = make(chan struct{})
		mu.Unlock()
		run := c.runJob(token, job.ID)
		c.waitHistory(token, run, 20*time.Second, "running", func(h historyView) bool { return h.Status == "running" })
		uploads := func() int {
			out, err := gw.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &gw.Bucket})
			if err != nil {
				t.Fatal(err)
			}
			return len(out.Uploads)
		}
		deadline := time.Now().Add(30 * time.Second)
		for uploads() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no multipart upload started")
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		mu.Lock()
		close(hold)
		hold = nil
		mu.Unlock()
		c.waitHistory(token, run, 30*time.Second, "failed", func(h historyView) bool { return h.Status == "failed" })

		startAgentBinary(t, bin, state)
		c.waitAgents(token, 20*time.Second, "uploader back", func(l []agentView) bool { return agentStatus(l, remoteID) == "online" })
		deadline = time.Now().Add(20 * time.Second)
		for uploads() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d multipart uploads remain after the agent came back", uploads())
			}
			time.Sleep(200 * time.Millisecond)
		}
		prefix := "prod/db/" + job.ID + "/"
		out, err := gw.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &gw.Bucket, Prefix: &prefix})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			if strings.Contains(*o.Key, run) {
				t.Fatalf("object of the killed run: %s", *o.Key)
			}
		}
	})
}

// TestGoogleDriveStorage: Drive cannot be reached here, so drivefake speaks
// the Drive v3 and OAuth wire protocols to the real client library; the
// whole flow runs through it: consent, callback, backup, download, verify,
// restore, delete.
func TestGoogleDriveStorage(t *testing.T) {
	ctx := context.Background()
	fake := drivefake.New(drivefake.Options{})
	defer fake.Close()

	dbURL, _ := testsupport.NewDatabase(t)
	suffix := testsupport.RandomString(3)
	srcName := "drive src " + suffix
	src := scratchDB(t, srcName)
	if _, err := src.Exec(ctx, `CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, src)

	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL,
		"--google-client-id", fake.ClientID(), "--google-auth-url", fake.AuthURL(), "--google-token-url", fake.TokenURL(),
		"--google-drive-endpoint", fake.APIEndpoint()}, map[string]string{"RAHATBACK_GOOGLE_CLIENT_SECRET": fake.ClientSecret()}, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("drive@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	var au struct{ URL string }
	c.want(c.call("GET", "/v1/cloud-storage/google/auth-url?name=My+Drive", token, nil), 200).decode(t, &au)
	if !strings.HasPrefix(au.URL, fake.AuthURL()) || !strings.Contains(au.URL, "state=") {
		t.Fatalf("auth url %s", au.URL)
	}
	// The browser: consent page → redirect to our callback.
	resp, err := http.Get(au.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || strings.Contains(string(body), "refresh") {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	var cs struct{ ID, StorageType string }
	result{resp.StatusCode, body}.decode(t, &cs)

	// A replayed or forged state is refused.
	r := c.want(c.call("GET", "/v1/cloud-storage/google/callback?code=x&state=forged", "", nil), 400)
	if !strings.Contains(string(r.body), "state") {
		t.Fatalf("forged state: %s", r.body)
	}

	var out struct{ Success bool }
	c.want(c.call("POST", "/v1/cloud-storage/test", token, map[string]any{"cloudStorageId": cs.ID}), 200).decode(t, &out)
	if !out.Success {
		t.Fatal("drive test connection failed")
	}
	srcID := c.createDB(token, "drive src", srcName)
	var job struct{ ID string }
	c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "to drive",
		"storageType": "google_drive", "cloudStorageId": cs.ID}), 201).decode(t, &job)
	h := backupRestoreRoundTrip(t, c, token, job.ID, want, "drive dst "+suffix)
	c.want(c.call("DELETE", "/v1/backups/history/"+h.ID, token, nil), 204)
	c.want(c.call("GET", "/v1/backups/history/"+h.ID, token, nil), 404)
}
