package mysql_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rahatback/rahatback/engines/mysql"
	"github.com/rahatback/rahatback/mariadbserver"
	"github.com/rahatback/rahatback/testsupport"
)

// BenchmarkDump compares Engine.Dump into io.Discard (the dump, its row
// counting and trailer check) with mariadb-dump > /dev/null on the same
// generated database (about 200 MB of dump).
func BenchmarkDump(b *testing.B) {
	srv := testsupport.MariaDB(b)
	name, db := testsupport.NewMariaDBDatabase(b)
	for _, q := range []string{
		`CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(16), note VARCHAR(120), payload JSON, bin VARBINARY(16))`,
		`INSERT INTO events (kind, note, payload, bin) SELECT ELT(1 + FLOOR(RAND() * 3), 'click', 'view', 'buy'),
			TO_BASE64(UNHEX(CONCAT(MD5(RAND()), MD5(RAND())))), JSON_OBJECT('session', MD5(RAND()), 'score', RAND()), UNHEX(MD5(RAND()))
			FROM seq_1_to_1000000`,
	} {
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	opts := filepath.Join(b.TempDir(), "my.cnf")
	eng := mysql.Engine{OptionDir: b.TempDir()}
	conn := server{srv}.Conn(name)
	cnf := "[client]\nuser=" + mariadbserver.Admin + "\npassword=" + srv.Password() + "\nhost=127.0.0.1\nport=" + strconv.Itoa(srv.Port()) + "\n"
	if err := writeFile(opts, cnf); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		cmd := exec.Command("sh", "-c", `mariadb-dump --defaults-file="$1" --single-transaction --skip-lock-tables --routines --triggers --events --hex-blob --default-character-set=utf8mb4 --no-tablespaces "$2" > /dev/null`, "sh", opts, name)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
		tool := time.Since(start)
		start = time.Now()
		n := &countingDiscard{}
		if _, err := eng.Dump(context.Background(), conn, n); err != nil {
			b.Fatal(err)
		}
		ours := time.Since(start)
		b.ReportMetric(tool.Seconds(), "mariadb-dump-s")
		b.ReportMetric(ours.Seconds(), "engine-dump-s")
		b.ReportMetric(ours.Seconds()/tool.Seconds(), "engine/tool")
		b.ReportMetric(float64(n.n)/(1<<20), "dump-MB")
	}
}

type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return io.Discard.Write(p)
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
