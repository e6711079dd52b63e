package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// testPassword deliberately contains characters that need URL escaping.
const testPassword = "s3cr:t@p/ss w%rd?&#"

// clusterDir returns a fresh cluster directory below a temp dir whose
// parents the postgres OS user can traverse (the tests run as root).
func clusterDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{d, filepath.Dir(d)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(d, "pg")
}

func startCluster(t *testing.T, dir string) *Cluster {
	t.Helper()
	if _, err := BinDir(); err != nil {
		t.Fatalf("%v (scripts/test installs the PostgreSQL server binaries)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Dir: dir, Password: testPassword, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestBinDir(t *testing.T) {
	d, err := BinDir()
	if errors.Is(err, ErrNoServer) {
		t.Fatalf("%v (scripts/test installs the PostgreSQL server binaries)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(d, name)); err != nil {
			t.Errorf("BinDir() = %s: %v", d, err)
		}
	}
	if filepath.Base(d) != "bin" || !filepath.IsAbs(d) {
		t.Errorf("BinDir() = %s, want an absolute .../bin directory", d)
	}
	t.Logf("BinDir() = %s", d)
}

func TestURL(t *testing.T) {
	c := &Cluster{user: "rahat back", password: testPassword, port: 5433}
	u, err := url.Parse(c.URL("my db"))
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if u.Scheme != "postgres" || u.Host != "127.0.0.1:5433" || u.User.Username() != "rahat back" ||
		pw != testPassword || u.Path != "/my db" || u.Query().Get("sslmode") != "disable" {
		t.Errorf("URL = %s", c.URL("my db"))
	}
	cfg, err := pgconn.ParseConfig(c.URL("my db"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Password != testPassword || cfg.User != "rahat back" || cfg.Database != "my db" || cfg.Port != 5433 {
		t.Errorf("pgconn parsed %+v", cfg)
	}
}

func TestClusterLifecycle(t *testing.T) {
	dir := clusterDir(t)
	c := startCluster(t, dir)
	ctx := context.Background()

	conn := connect(t, c.URL("postgres"))
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	var who, enc, collate, ctype, method string
	if err := conn.QueryRow(ctx, `select current_user, current_setting('server_encoding'),
		current_setting('lc_collate'), current_setting('lc_ctype'), current_setting('password_encryption')`).
		Scan(&who, &enc, &collate, &ctype, &method); err != nil {
		t.Fatal(err)
	}
	t.Logf("user=%s encoding=%s lc_collate=%s lc_ctype=%s password_encryption=%s port=%d", who, enc, collate, ctype, method, c.Port())
	if who != DefaultUser || enc != "UTF8" || collate != "C" || method != "scram-sha-256" {
		t.Errorf("unexpected settings: user=%s encoding=%s lc_collate=%s password_encryption=%s", who, enc, collate, method)
	}

	// Only 127.0.0.1.
	var listen string
	if err := conn.QueryRow(ctx, "show listen_addresses").Scan(&listen); err != nil || listen != "127.0.0.1" {
		t.Errorf("listen_addresses = %q, %v", listen, err)
	}

	// Wrong passwords are rejected, over TCP and over the unix socket.
	wrongTCP := strings.Replace(c.URL("postgres"), url.QueryEscape(testPassword)[:4], "nope", 1)
	if wrongTCP == c.URL("postgres") {
		t.Fatal("failed to build a wrong-password URL")
	}
	wrongSocket := fmt.Sprintf("host=%s port=%d user=%s password=wrong dbname=postgres", filepath.Join(c.Dir(), "run"), c.Port(), DefaultUser)
	noPassword := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable", c.Port(), DefaultUser)
	for name, cs := range map[string]string{"tcp": wrongTCP, "socket": wrongSocket, "no password": noPassword} {
		t.Run("reject "+name, func(t *testing.T) {
			t.Setenv("PGPASSWORD", "")
			t.Setenv("PGPASSFILE", os.DevNull)
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			bad, err := pgx.Connect(ctx, cs)
			if err == nil {
				bad.Close(ctx)
				t.Fatal("connection with a wrong password succeeded")
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Fatalf("want invalid_password (28P01), got %v", err)
			}
		})
	}

	if _, err := conn.Exec(ctx, "create table kept (v text); insert into kept values ('before restart')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid still there after Stop: %v", err)
	}

	// Restart on the same directory: the existing cluster is reused.
	c2 := startCluster(t, dir)
	conn2 := connect(t, c2.URL("postgres"))
	var v string
	if err := conn2.QueryRow(ctx, "select v from kept").Scan(&v); err != nil || v != "before restart" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
	conn2.Close(ctx)
	if err := c2.Stop(); err != nil {
		t.Fatal(err)
	}

	log, err := os.ReadFile(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), testPassword) || strings.Contains(string(log), url.QueryEscape(testPassword)) {
		t.Error("password found in postgres.log")
	}
	if !strings.Contains(string(log), "database system is ready to accept connections") {
		t.Errorf("postgres.log lacks server output:\n%s", log)
	}
	if os.Geteuid() == 0 {
		for _, p := range []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "run"), filepath.Join(dir, "postgres.log")} {
			if uid := fileUID(t, p); uid == 0 {
				t.Errorf("%s is owned by root", p)
			}
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".pwfile-*")); len(m) != 0 {
		t.Errorf("password file left behind: %v", m)
	}
}

func TestAlreadyRunningAndStalePid(t *testing.T) {
	dir := clusterDir(t)
	c := startCluster(t, dir)

	_, err := Start(context.Background(), Options{Dir: dir, Password: testPassword, NoSync: true})
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Start on a live cluster: got %v, want an 'already running' error", err)
	}
	pidFile := filepath.Join(dir, "data", "postmaster.pid")
	stale, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}

	// A postmaster.pid naming an unrelated live process (a recycled pid
	// after a kill -9) or a dead process must not prevent a start.
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for name, pid := range map[string]int{"live unrelated": sleep.Process.Pid, "dead": dead.Process.Pid} {
		lines := strings.SplitN(string(stale), "\n", 2)
		if err := os.WriteFile(pidFile, []byte(fmt.Sprintf("%d\n%s", pid, lines[1])), 0o600); err != nil {
			t.Fatal(err)
		}
		c := startCluster(t, dir)
		conn := connect(t, c.URL("postgres"))
		if _, err := conn.Exec(context.Background(), "select 1"); err != nil {
			t.Fatalf("%s pid: %v", name, err)
		}
		conn.Close(context.Background())
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFixedPortAndPasswordRequired(t *testing.T) {
	if _, err := BinDir(); err != nil {
		t.Fatalf("%v (scripts/test installs the PostgreSQL server binaries)", err)
	}
	dir := clusterDir(t)
	_, err := Start(context.Background(), Options{Dir: dir, NoSync: true})
	if err == nil || !strings.Contains(err.Error(), "password is required") {
		t.Fatalf("Start without a password: %v", err)
	}

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), Options{Dir: dir, Port: port, User: "someone", Password: "pw", NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if c.Port() != port {
		t.Errorf("Port() = %d, want %d", c.Port(), port)
	}
	if !strings.Contains(c.URL("x"), fmt.Sprintf("someone:pw@127.0.0.1:%d/x", port)) {
		t.Errorf("URL = %s", c.URL("x"))
	}
	conn := connect(t, c.URL("postgres"))
	if _, err := conn.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())

	// A second server on the same fixed port fails with the log tail.
	other, err := Start(context.Background(), Options{Dir: clusterDir(t), Port: port, Password: "pw", NoSync: true})
	if err == nil {
		other.Stop()
		t.Fatal("second server on the same port started")
	}
	if !strings.Contains(err.Error(), "postgres.log") || !strings.Contains(err.Error(), "could not") {
		t.Errorf("error lacks log tail: %v", err)
	}
	t.Log(err)
}

func TestRootNeedsTraversableParents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only relevant when running as root")
	}
	if _, err := BinDir(); err != nil {
		t.Fatalf("%v (scripts/test installs the PostgreSQL server binaries)", err)
	}
	private := t.TempDir()
	if err := os.Chmod(filepath.Dir(private), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0o700); err != nil { // owned by root
		t.Fatal(err)
	}
	c, err := Start(context.Background(), Options{Dir: filepath.Join(private, "pg"), Password: "pw", NoSync: true})
	if err == nil {
		c.Stop()
		t.Fatal("Start succeeded below a directory the postgres user cannot traverse")
	}
	if !strings.Contains(err.Error(), private) || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("error should name %s and suggest --data-dir: %v", private, err)
	}
	t.Log(err)
	if _, err := os.Stat(filepath.Join(private, "pg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory was created despite the error: %v", err)
	}
}

// TestServerDiesWithParent kills (SIGKILL) a process that started a cluster
// and checks that the server shuts down (Pdeathsig) and the cluster can be
// started again.
func TestServerDiesWithParent(t *testing.T) {
	if dir := os.Getenv("PGCLUSTER_TEST_HELPER_DIR"); dir != "" {
		c, err := Start(context.Background(), Options{Dir: dir, Password: testPassword, NoSync: true})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Printf("READY %d\n", c.proc.Pid)
		time.Sleep(time.Minute)
		os.Exit(2)
	}
	if _, err := BinDir(); err != nil {
		t.Fatalf("%v (scripts/test installs the PostgreSQL server binaries)", err)
	}
	dir := clusterDir(t)
	helper := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithParent$", "-test.v=false")
	helper.Env = append(os.Environ(), "PGCLUSTER_TEST_HELPER_DIR="+dir)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = helper.Process.Kill(); _ = helper.Wait() }()
	var word string
	var pid int
	if _, err := fmt.Fscan(out, &word, &pid); err != nil || word != "READY" {
		t.Fatalf("helper: %q %d %v", word, pid, err)
	}
	if !postmasterAlive(pid, filepath.Join(dir, "data")) {
		t.Fatalf("postmaster %d not running", pid)
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for postmasterAlive(pid, filepath.Join(dir, "data")) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("postmaster %d still running 30s after its parent was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := startCluster(t, dir)
	conn := connect(t, c.URL("postgres"))
	if _, err := conn.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
}

func fileUID(t *testing.T, path string) uint32 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Uid
}
