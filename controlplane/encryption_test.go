package controlplane_test

import (
	"bytes"
	"context"
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

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/testsupport"
)

// TestEncryptedBackup: an encrypted job's backups are age files that
// RahatBack verifies and restores unattended, and that a user decrypts with
// the Debian age and zstd tools and the exported key alone.
func TestEncryptedBackup(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := testsupport.NewDatabase(t)
	suffix := testsupport.RandomString(3)
	srcName := "secret src " + suffix
	src := scratchDB(t, srcName)
	marker := "MARKER-" + testsupport.RandomString(8)
	if _, err := src.Exec(ctx, `CREATE TABLE notes (id int, body text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `INSERT INTO notes SELECT g, $1 || ' ' || g FROM generate_series(1, 3000) g`, marker); err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, src)

	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("crypto@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })
	srcID := c.createDB(token, "secret", srcName)

	extra, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	const password = "open sesame 42"
	r := c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "enc", "isEncrypted": true}), 400)
	if !strings.Contains(string(r.body), "encryptionPassword") {
		t.Fatalf("400 does not name encryptionPassword: %s", r.body)
	}
	r = c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": srcID, "name": "enc", "isEncrypted": true,
		"encryptionPassword": password, "encryptionRecipients": []string{extra.Recipient().String()},
		"autoVerifyAfterBackup": true}), 201)
	if strings.Contains(string(r.body), password) || strings.Contains(string(r.body), "AGE-SECRET-KEY") {
		t.Fatalf("job response leaks a secret: %s", r.body)
	}
	var job struct {
		ID                   string
		EncryptionRecipient  string
		EncryptionRecipients []string
	}
	r.decode(t, &job)
	if !strings.HasPrefix(job.EncryptionRecipient, "age1") || len(job.EncryptionRecipients) != 1 {
		t.Fatalf("job %+v", job)
	}

	run := c.runJob(token, job.ID)
	h := c.waitHistory(token, run, 60*time.Second, "verified", func(h historyView) bool {
		return h.Status == "failed" || (h.Status == "success" && h.VerificationStatus != "PENDING")
	})
	if h.Status != "success" || h.VerificationStatus != "PASSED" || !strings.HasSuffix(h.FileName, ".sql.zst.age") {
		t.Fatalf("encrypted backup: %+v", h)
	}
	decrypted := false
	for _, ch := range h.VerificationResult.Checks {
		decrypted = decrypted || (ch.Check == "decryption" && ch.Passed)
	}
	if !decrypted {
		t.Fatalf("verification has no passed decryption check: %+v", h.VerificationResult)
	}

	files := findFiles(t, dataDir, run+".sql.zst.age")
	var stored []byte
	for _, f := range files {
		if !strings.HasSuffix(f, ".manifest.json") {
			stored, _ = os.ReadFile(f)
		}
	}
	if !bytes.HasPrefix(stored, []byte("age-encryption.org/v1\n")) || bytes.Contains(stored, []byte(marker)) {
		t.Fatal("the stored backup is not an age file, or holds plaintext")
	}

	t.Run("RestoreWithStandardTools", func(t *testing.T) {
		dir := t.TempDir()
		backup := filepath.Join(dir, h.FileName)
		downloadTo(t, base, token, "/v1/backups/history/"+run+"/download", backup)
		keyTxt := exportedKey(t, base, token, job.ID, password)
		plainName := "plain " + suffix
		plain := scratchDB(t, plainName)
		cfg, _ := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
		restore := exec.Command("sh", "-c", `age -d -i "$1" "$2" | zstd -dc | psql --no-psqlrc -q -v ON_ERROR_STOP=1 --single-transaction -o /dev/null`, "sh", keyTxt, backup)
		restore.Env = append(os.Environ(), "PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", cfg.Port), "PGUSER="+cfg.User,
			"PGPASSWORD="+cfg.Password, "PGDATABASE="+plainName)
		if out, err := restore.CombinedOutput(); err != nil {
			t.Fatalf("age -d | zstd -d | psql: %v\n%s", err, out)
		}
		if got := snapshot(t, plain); !reflect.DeepEqual(got, want) {
			t.Fatal("standard-tool restore differs from the source")
		}

		// The extra recipient's own key opens it too.
		f, _ := os.Open(backup)
		defer f.Close()
		if _, err := age.Decrypt(f, extra); err != nil {
			t.Fatalf("extra recipient cannot decrypt: %v", err)
		}
		// A wrong password does not open the exported key.
		kf, _ := os.Open(keyTxt + ".age")
		defer kf.Close()
		wrong, _ := age.NewScryptIdentity("not the password")
		if _, err := age.Decrypt(kf, wrong); err == nil {
			t.Fatal("exported key opened with a wrong password")
		}
	})

	t.Run("RestoreThroughRahatBack", func(t *testing.T) {
		dstName := "secret dst " + suffix
		dst := scratchDB(t, dstName)
		dstID := c.createDB(token, "dst", dstName)
		var out struct{ RestoreHistoryID string }
		c.want(c.call("POST", "/v1/backups/history/"+run+"/restore", token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &out)
		if r := c.waitRestore(token, out.RestoreHistoryID, 60*time.Second); r["status"] != "success" {
			t.Fatalf("restore: %v", r)
		}
		if got := snapshot(t, dst); !reflect.DeepEqual(got, want) {
			t.Fatal("restored database differs")
		}
	})

	t.Run("OtherUserCannotExportKey", func(t *testing.T) {
		other := c.register("eve@example.com")
		c.want(c.call("GET", "/v1/backups/jobs/"+job.ID+"/encryption-key", other, nil), 404)
	})
}

// downloadTo saves the API's answer to GET path in file to.
func downloadTo(t *testing.T, base, token, path, to string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	f, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
}

// exportedKey downloads job's exported key (<dir>/job.key.age) and opens
// it with age and password, as the README says: the path of the opened
// identity file (<dir>/job.key).
func exportedKey(t *testing.T, base, token, jobID, password string) string {
	t.Helper()
	dir := t.TempDir()
	keyAge := filepath.Join(dir, "job.key.age")
	keyTxt := filepath.Join(dir, "job.key")
	downloadTo(t, base, token, "/v1/backups/jobs/"+jobID+"/encryption-key", keyAge)
	// age asks for the passphrase on a terminal: script(1) gives it one.
	cmd := exec.Command("script", "-qec", fmt.Sprintf("age -d -o %q %q", keyTxt, keyAge), "/dev/null")
	stdin, _ := cmd.StdinPipe()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	fmt.Fprintln(stdin, password)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("age -d of the exported key: %v\n%s", err, out.String())
	}
	return keyTxt
}
