package controlplane_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rahatback/rahatback/mariadbserver"
	"github.com/rahatback/rahatback/testsupport"
)

// mariaDB creates an empty database on the test binary's MariaDB,
// dropped when t ends.
func mariaDB(t *testing.T, name string) {
	t.Helper()
	admin, err := testsupport.MariaDB(t).Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	q := "`" + strings.ReplaceAll(name, "`", "``") + "`"
	if _, err := admin.Exec("CREATE DATABASE " + q); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin, err := testsupport.MariaDB(t).Open("")
		if err == nil {
			_, _ = admin.Exec("DROP DATABASE IF EXISTS " + q)
			admin.Close()
		}
	})
}

// adminOptionFile is a mariadb client option file for the test MariaDB's
// administrator.
func adminOptionFile(t testing.TB) string {
	t.Helper()
	srv := testsupport.MariaDB(t)
	opts := filepath.Join(t.TempDir(), "my.cnf")
	cnf := "[client]\nuser=" + mariadbserver.Admin + "\npassword=" + srv.Password() + "\nhost=127.0.0.1\nport=" +
		strconv.Itoa(srv.Port()) + "\nprotocol=TCP\ndefault-character-set=utf8mb4\n"
	if err := os.WriteFile(opts, []byte(cnf), 0o600); err != nil {
		t.Fatal(err)
	}
	return opts
}

// sampleStatement is what loading a sample into a database of another name
// leaves out: its own USE, CREATE and DROP of the database.
var sampleStatement = regexp.MustCompile(`(?i)^(USE|CREATE DATABASE|DROP DATABASE|CREATE SCHEMA|DROP SCHEMA) `)

// loadMariaDBSample loads ../shared/sample-db/mysql/<file> into database
// with the mariadb client, as a user would (its views name sakila.
// explicitly: that qualifier is dropped).
func loadMariaDBSample(t *testing.T, database string, files ...string) {
	t.Helper()
	opts := adminOptionFile(t)
	for _, f := range files {
		feedSample(t, filepath.Join("mysql", f), exec.Command("mariadb", "--defaults-extra-file="+opts, "--database="+database),
			func(line string) (string, bool) {
				return strings.ReplaceAll(line, "sakila.", ""), !sampleStatement.MatchString(line)
			})
	}
}

// feedSample pipes ../shared/sample-db/<file>, decompressed, line by line
// through edit (false: leave the line out) into cmd's standard input, and
// fails t unless cmd succeeds.
func feedSample(t *testing.T, file string, cmd *exec.Cmd, edit func(line string) (string, bool)) {
	t.Helper()
	in, err := os.Open(filepath.Join("..", "..", "shared", "sample-db", file))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := zstd.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	w := bufio.NewWriter(stdin)
	for sc.Scan() {
		if line, ok := edit(sc.Text()); ok {
			w.WriteString(line)
			w.WriteByte('\n')
		}
	}
	w.Flush()
	stdin.Close()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("loading %s: %v: %s", file, err, out)
	}
}

// TestMySQLSampleDatabases backs up Sakila and Chinook (one MariaDB
// database: triggers, procedures, views, spatial and full-text indexes,
// BLOBs, and tables whose names differ only in case) through `rahatback
// up` and its local agent, encrypted to S3 (versitygw) and plain to local
// storage; downloads, verifies, and restores each into a new database
// whose tables, rows and content hashes must equal the source's.
func TestMySQLSampleDatabases(t *testing.T) {
	maria := testsupport.MariaDB(t)
	gw := testsupport.StartVersityGW(t)
	suffix := testsupport.RandomString(3)
	src := "sakila chinook " + suffix
	mariaDB(t, src)
	loadMariaDBSample(t, src, "sakila-schema.sql.zst", "sakila-data.sql.zst", "chinook-mysql.sql.zst")
	admin, err := maria.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	want := testsupport.MariaDBContents(t, admin, src)
	if len(want) < 25 || want["customer"].Rows != 599 || want["Customer"].Rows != 59 {
		t.Fatalf("the samples did not load: %d tables, customer %+v, Customer %+v", len(want), want["customer"], want["Customer"])
	}

	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL,
		"--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--allow-endpoint", endpointHost(t, gw.Endpoint)}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("mysql@example.com")
	c.waitAgents(token, 30*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	createDB := func(c client, name, database string) string {
		t := c.t
		t.Helper()
		var d struct {
			ID   string
			Port int
		}
		// No port: the MySQL default (3306) is filled in, then corrected.
		c.want(c.call("POST", "/v1/databases", token, map[string]any{"name": name, "type": "mysql", "host": "127.0.0.1",
			"username": mariadbserver.Admin, "password": maria.Password(), "database": database}), 201).decode(t, &d)
		if d.Port != 3306 {
			t.Fatalf("a mysql database without a port got port %d, want 3306", d.Port)
		}
		c.want(c.call("PATCH", "/v1/databases/"+d.ID, token, map[string]any{"port": maria.Port()}), 200)
		return d.ID
	}
	srcID := createDB(c, "sakila", src)
	var test struct {
		Success bool
		Version string
		Message string
	}
	c.want(c.call("POST", "/v1/databases/test-connection", token, map[string]any{"databaseId": srcID}), 200).decode(t, &test)
	if !test.Success || !strings.HasPrefix(test.Version, "MariaDB 10.") {
		t.Fatalf("test connection: %+v", test)
	}

	rows := map[string]int64{}
	for name, w := range want {
		rows[name] = w.Rows
	}
	trip := sampleTrip{base: base, token: token, srcID: srcID, engine: "mysql", ext: ".sql.zst", rows: rows,
		scratch: func(t *testing.T) int {
			var n int
			if err := admin.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'rahatback\\_%'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
		target: func(t *testing.T, name string) string {
			mariaDB(t, name)
			return createDB(client{t, base}, name, name)
		},
		compare: func(t *testing.T, dst string) {
			got := testsupport.MariaDBContents(t, admin, dst)
			for name, w := range want {
				if got[name] != w {
					t.Errorf("restored table %s: %+v, want %+v", name, got[name], w)
				}
			}
			if len(got) != len(want) {
				t.Errorf("restored %d tables, want %d", len(got), len(want))
			}
		}}
	t.Run("S3Encrypted", func(t *testing.T) {
		c := client{t, base}
		var cs struct{ ID string }
		c.want(c.call("POST", "/v1/cloud-storage", token, map[string]any{"name": "gw", "storageType": "s3", "s3AccessKeyId": gw.AccessKey,
			"s3SecretAccessKey": gw.SecretKey, "s3Region": gw.Region, "s3Bucket": gw.Bucket, "s3Endpoint": gw.Endpoint,
			"s3ForcePathStyle": true}), 201).decode(t, &cs)
		const password = "correct horse battery 42"
		jobID, h := trip.run(t, map[string]any{"name": "sakila to s3", "storageType": "s3", "cloudStorageId": cs.ID,
			"isEncrypted": true, "encryptionPassword": password}, "restored s3 "+suffix)
		run, file := h.ID, h.FileName

		// The README's recipe: age, zstd and mariadb, without RahatBack.
		backup := filepath.Join(t.TempDir(), file)
		downloadTo(t, base, token, "/v1/backups/history/"+run+"/download", backup)
		key := exportedKey(t, base, token, jobID, password)
		plain := "restored by hand " + suffix
		mariaDB(t, plain)
		opts := adminOptionFile(t)
		cmd := exec.Command("sh", "-c", `age -d -i "$1" "$2" | zstd -dc | mariadb --defaults-extra-file="$3" --database="$4"`,
			"sh", key, backup, opts, plain)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("age -d | zstd -d | mariadb: %v\n%s", err, out)
		}
		got := testsupport.MariaDBContents(t, admin, plain)
		for name, w := range want {
			if got[name] != w {
				t.Errorf("restored by hand, table %s: %+v, want %+v", name, got[name], w)
			}
		}
	})
	t.Run("Local", func(t *testing.T) {
		trip.run(t, map[string]any{"name": "sakila local"}, "restored local "+suffix)
	})
}
