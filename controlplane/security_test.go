package controlplane_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/controlplane"
	"github.com/rahatback/rahatback/testsupport"
)

// sqlLiteral quotes s as an SQL string literal (standard_conforming_strings
// is on: only the quote needs doubling).
func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// shQuote quotes s for sh.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// createRole creates a login role with a password, dropped when t ends
// (after the databases created later, whose cleanups run first).
func createRole(t *testing.T, name, password string) {
	t.Helper()
	ctx := context.Background()
	id := pgx.Identifier{name}.Sanitize()
	if err := testsupport.AdminExec(ctx, "CREATE ROLE "+id+" LOGIN PASSWORD "+sqlLiteral(password)); err != nil {
		t.Fatalf("create role %q: %v", name, err)
	}
	t.Cleanup(func() {
		if err := testsupport.AdminExec(ctx, "DROP ROLE IF EXISTS "+id); err != nil {
			t.Logf("drop role %q: %v", name, err)
		}
	})
}

// ownedDB creates database name owned by role owner with one table, table,
// holding one row (the database's name), also owned by owner; it returns a
// superuser connection to the database.
func ownedDB(t *testing.T, name, owner, table string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn := scratchDB(t, name)
	o := pgx.Identifier{owner}.Sanitize()
	if err := testsupport.AdminExec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" OWNER TO "+o); err != nil {
		t.Fatal(err)
	}
	tb := pgx.Identifier{"public", table}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE TABLE "+tb+" (v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+tb+" VALUES ($1)", name); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER TABLE "+tb+" OWNER TO "+o); err != nil {
		t.Fatal(err)
	}
	return conn
}

// realPGBinDir is the newest /usr/lib/postgresql/<major>/bin holding pg_dump.
func realPGBinDir(t *testing.T) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
	if len(matches) == 0 {
		t.Fatal("no /usr/lib/postgresql/*/bin/pg_dump: install the PostgreSQL client tools")
	}
	major := func(p string) int { n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p)))); return n }
	sort.Slice(matches, func(i, j int) bool { return major(matches[i]) > major(matches[j]) })
	return filepath.Dir(matches[0])
}

// fakePGBinDir makes a directory whose pg_dump and psql record how they are
// run (argv NUL-separated, the environment as received, the passfile's mode)
// into records, then exec the real tool with the same arguments.
func fakePGBinDir(t *testing.T, records string) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
tool=${0##*/}
rec=$(mktemp ` + shQuote(records) + `/"$tool.XXXXXXXX") || exit 111
printf '%s\0' "$@" >"$rec.argv"
cat /proc/$$/environ >"$rec.env"
if [ -n "$PGPASSFILE" ]; then stat -c %a "$PGPASSFILE" >"$rec.passfile-mode" 2>&1; fi
exec ` + shQuote(realPGBinDir(t)) + `/"$tool" "$@"
`
	rec := filepath.Join(dir, "record-and-run")
	if err := os.WriteFile(rec, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"pg_dump", "psql"} {
		if err := os.Symlink(rec, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// toolRun is one recorded run of a PostgreSQL client tool.
type toolRun struct {
	tool         string
	argv         []string
	env          map[string]string
	rawEnv       []string
	passfileMode string
}

func readToolRuns(t *testing.T, records string) []toolRun {
	t.Helper()
	argvs, _ := filepath.Glob(filepath.Join(records, "*.argv"))
	var out []toolRun
	for _, argvFile := range argvs {
		stamp := strings.TrimSuffix(argvFile, ".argv")
		argv, err := os.ReadFile(argvFile)
		if err != nil {
			t.Fatal(err)
		}
		env, err := os.ReadFile(stamp + ".env")
		if err != nil {
			t.Fatalf("record %s: %v", stamp, err)
		}
		mode, _ := os.ReadFile(stamp + ".passfile-mode")
		r := toolRun{tool: strings.SplitN(filepath.Base(stamp), ".", 2)[0], env: map[string]string{},
			passfileMode: strings.TrimSpace(string(mode))}
		if len(argv) > 0 {
			r.argv = strings.Split(strings.TrimSuffix(string(argv), "\x00"), "\x00")
		}
		for _, kv := range strings.Split(strings.TrimSuffix(string(env), "\x00"), "\x00") {
			r.rawEnv = append(r.rawEnv, kv)
			if k, v, ok := strings.Cut(kv, "="); ok {
				r.env[k] = v
			}
		}
		out = append(out, r)
	}
	return out
}

// startAgentWithEnv runs `rahatback-agent run` (heartbeat 500ms) with the
// environment env; it is killed when the test ends.
func startAgentWithEnv(t *testing.T, bin, state string, env []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "run", "--state-dir", state, "--heartbeat", "500ms")
	cmd.Env = env
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// actionCall is c.call for the requests that make an agent work, which the
// API rate-limits per user: it waits out 429 answers.
func actionCall(c client, method, path, token string, body any) result {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := c.call(method, path, token, body)
		if r.code != http.StatusTooManyRequests || time.Now().After(deadline) {
			return r
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// fieldError asserts a 400 whose body names field.
func fieldError(t *testing.T, r result, field string) {
	t.Helper()
	var e struct {
		Code    int
		Message string
		Fields  map[string]string
	}
	if r.code != 400 {
		t.Fatalf("status %d, want 400 naming %s: %s", r.code, field, r.body)
	}
	r.decode(t, &e)
	if e.Fields[field] == "" || !strings.Contains(e.Message, field) {
		t.Fatalf("400 does not name %s: %s", field, r.body)
	}
}

// TestInjectionReachesExactTarget uses names that a careless tool
// invocation would take for options, connection strings or quoting as
// database and user names: connection tests, backups and restores reach
// exactly the intended database as exactly the intended user, the names and
// passwords never appear on a command line, and the password reaches the
// tools only through a passfile that is removed afterwards. Hosts that could
// be taken for options or conninfo, and names with control characters, are
// refused.
func TestInjectionReachesExactTarget(t *testing.T) {
	ctx := context.Background()
	names := []string{`-f/tmp/x`, `--help`, `x host=evil`, `postgresql://evil/`, `it's "quoted"`, `semi;colon`, `back\slash`}
	_, tmpXErr := os.Lstat("/tmp/x")

	// Pair i: user names[i] owns database names[(i+3)%n], which holds the
	// table marker_i; only that user (and the superuser) may read it.
	type pair struct {
		user, password, database, table string
		dbID, jobID, runID              string
		conn                            *pgx.Conn
	}
	pairs := make([]*pair, len(names))
	for i, n := range names {
		pw := fmt.Sprintf(`-pw %s:\'"; host=evil %d`, testsupport.RandomString(6), i)
		createRole(t, n, pw)
		pairs[i] = &pair{user: n, password: pw}
	}
	for i, p := range pairs {
		p.database = names[(i+3)%len(names)]
		p.table = fmt.Sprintf("marker_%d", i)
		p.conn = ownedDB(t, p.database, p.user, p.table)
	}

	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	sys := startUp(t, []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s"}, nil, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("injection@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	// The agent binary runs with recording stand-ins for pg_dump and psql.
	records := t.TempDir()
	binDir := fakePGBinDir(t, records)
	bin := buildAgent(t)
	state := enrollAgentBinary(t, c, bin, token, "recorded")
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "RAHATBACK_") {
			env = append(env, kv)
		}
	}
	remote := startAgentWithEnv(t, bin, state, append(env, "RAHATBACK_PG_BINDIR="+binDir))
	defer func() { _ = remote.Process.Signal(syscall.SIGTERM) }()
	remoteID := c.waitRemoteOnline(token)
	pgPort := testsupport.Cluster().Port()

	conn := func(p *pair) map[string]any {
		return map[string]any{"type": "postgresql", "host": "127.0.0.1", "port": pgPort, "username": p.user,
			"password": p.password, "database": p.database, "agentId": remoteID}
	}

	t.Run("Refused", func(t *testing.T) {
		c := client{t, base}
		good := conn(pairs[0])
		good["name"] = "refused"
		var saved struct{ ID string }
		c.want(c.call("POST", "/v1/databases", token, good), 201).decode(t, &saved)
		defer func() { c.want(c.call("DELETE", "/v1/databases/"+saved.ID, token, nil), 204) }()
		cases := []struct{ field, value string }{
			{"host", "-f/tmp/x"},
			{"host", "x host=evil"},
			{"host", "db\nhost"},
			{"username", "app\nuser"},
			{"database", "shop\ndb"},
			{"database", "shop\x00db"},
		}
		for i, cs := range cases {
			body := map[string]any{}
			for k, v := range good {
				body[k] = v
			}
			body[cs.field] = cs.value
			fieldError(t, c.call("POST", "/v1/databases", token, body), cs.field)
			fieldError(t, c.call("PATCH", "/v1/databases/"+saved.ID, token, map[string]any{cs.field: cs.value}), cs.field)
			if i%2 == 0 { // test-connection is rate-limited: a sample
				fieldError(t, actionCall(c, "POST", "/v1/databases/test-connection", token, body), cs.field)
			}
		}
	})

	t.Run("TestConnection", func(t *testing.T) {
		c := client{t, base}
		for _, p := range pairs {
			var out struct {
				Success bool
				Message string
			}
			c.want(actionCall(c, "POST", "/v1/databases/test-connection", token, conn(p)), 200).decode(t, &out)
			if !out.Success {
				t.Fatalf("user %q database %q: %s", p.user, p.database, out.Message)
			}
		}
		// Passwords are checked (success above means something), and the
		// server names the user it was asked for: exactly this one.
		p := pairs[2]
		bad := conn(p)
		bad["password"] = pairs[3].password
		var out struct {
			Success bool
			Message string
		}
		c.want(actionCall(c, "POST", "/v1/databases/test-connection", token, bad), 200).decode(t, &out)
		if want := `password authentication failed for user "` + p.user + `"`; out.Success || !strings.Contains(out.Message, want) {
			t.Fatalf("wrong password for %q: %+v, want %q", p.user, out, want)
		}
	})

	t.Run("Backup", func(t *testing.T) {
		c := client{t, base}
		for i, p := range pairs {
			body := conn(p)
			body["name"] = fmt.Sprintf("injection %d", i)
			var d struct {
				ID       string
				Username string
				Database string
			}
			r := c.want(c.call("POST", "/v1/databases", token, body), 201)
			r.decode(t, &d)
			if d.Username != p.user || d.Database != p.database {
				t.Fatalf("stored %q/%q, want %q/%q", d.Username, d.Database, p.user, p.database)
			}
			p.dbID = d.ID
			var job struct{ ID string }
			c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": p.dbID, "name": body["name"]}), 201).decode(t, &job)
			p.jobID = job.ID
		}
		for _, p := range pairs {
			var out struct{ HistoryID string }
			c.want(actionCall(c, "POST", "/v1/backups/jobs/"+p.jobID+"/run", token, nil), 202).decode(t, &out)
			p.runID = out.HistoryID
		}
		for _, p := range pairs {
			h := c.waitHistory(token, p.runID, 90*time.Second, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
			if h.Status != "success" {
				t.Fatalf("backup of %q as %q: %s", p.database, p.user, h.ErrorMessage)
			}
			var raw struct {
				Manifest struct {
					Database string
					Tables   []struct {
						Schema, Name string
						Rows         int64
					}
				}
			}
			c.want(c.call("GET", "/v1/backups/history/"+p.runID, token, nil), 200).decode(t, &raw)
			m := raw.Manifest
			if m.Database != p.database || len(m.Tables) != 1 || m.Tables[0].Schema != "public" ||
				m.Tables[0].Name != p.table || m.Tables[0].Rows != 1 {
				t.Fatalf("manifest of %q: %+v, want database %q with table public.%s (1 row)", p.database, m, p.database, p.table)
			}
			files := findFiles(t, state, p.runID)
			if len(files) != 2 {
				t.Fatalf("files of run %s on the agent: %v", p.runID, files)
			}
			for _, f := range files {
				if !strings.HasSuffix(f, ".manifest.json") {
					continue
				}
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var onDisk struct{ Database string }
				if err := json.Unmarshal(data, &onDisk); err != nil || onDisk.Database != p.database {
					t.Fatalf("manifest file %s: %v %s", f, err, data)
				}
			}
		}
	})

	t.Run("Restore", func(t *testing.T) {
		c := client{t, base}
		// An extra row in each database: the restore (--clean, into the
		// backup's own database) must put back exactly what was dumped.
		ids := map[*pair]string{}
		for _, p := range pairs {
			if _, err := p.conn.Exec(ctx, "INSERT INTO "+pgx.Identifier{"public", p.table}.Sanitize()+" VALUES ('extra')"); err != nil {
				t.Fatal(err)
			}
			var out struct{ RestoreHistoryID string }
			c.want(actionCall(c, "POST", "/v1/backups/history/"+p.runID+"/restore", token, nil), 202).decode(t, &out)
			ids[p] = out.RestoreHistoryID
		}
		for _, p := range pairs {
			r := c.waitRestore(token, ids[p], 90*time.Second)
			if r["status"] != "success" {
				t.Fatalf("restore into %q as %q: %v", p.database, p.user, r)
			}
			var row string
			if err := p.conn.QueryRow(ctx, "SELECT ROW($1::text)::text", p.database).Scan(&row); err != nil {
				t.Fatal(err)
			}
			got := snapshot(t, p.conn)
			want := map[string][]string{"public." + p.table: {row}}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("database %q after restore: %v, want %v", p.database, got, want)
			}
			// Restored without owners, the table belongs to the role psql
			// logged in as: exactly this user.
			var owner string
			if err := p.conn.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = $1", p.table).Scan(&owner); err != nil {
				t.Fatal(err)
			}
			if owner != p.user {
				t.Fatalf("restored table owned by %q, want %q", owner, p.user)
			}
		}
	})

	t.Run("ToolInvocations", func(t *testing.T) {
		runs := readToolRuns(t, records)
		secrets := []string{}
		for _, p := range pairs {
			secrets = append(secrets, p.user, p.database, p.password)
		}
		seen := map[string]int{} // tool + database
		for _, r := range runs {
			for _, a := range r.argv {
				for _, s := range secrets {
					if strings.Contains(a, s) {
						t.Errorf("%s argument %q contains %q (argv %q)", r.tool, a, s, r.argv)
					}
				}
			}
			if _, ok := r.env["PGPASSWORD"]; ok {
				t.Errorf("%s ran with PGPASSWORD in its environment", r.tool)
			}
			for _, kv := range r.rawEnv {
				for _, p := range pairs {
					if strings.Contains(kv, p.password) {
						t.Errorf("%s environment holds a password: %q", r.tool, kv)
					}
				}
			}
			if len(r.argv) == 1 && r.argv[0] == "--version" {
				continue
			}
			var match *pair
			for _, p := range pairs {
				if r.env["PGDATABASE"] == p.database {
					match = p
				}
			}
			if match == nil {
				t.Errorf("%s %q ran with PGDATABASE %q, not one of the databases", r.tool, r.argv, r.env["PGDATABASE"])
				continue
			}
			seen[r.tool+"\x00"+match.database]++
			if r.env["PGUSER"] != match.user {
				t.Errorf("%s on %q ran with PGUSER %q, want %q", r.tool, match.database, r.env["PGUSER"], match.user)
			}
			if r.env["PGHOST"] != "127.0.0.1" || r.env["PGPORT"] != strconv.Itoa(pgPort) {
				t.Errorf("%s ran with PGHOST %q PGPORT %q", r.tool, r.env["PGHOST"], r.env["PGPORT"])
			}
			pf := r.env["PGPASSFILE"]
			if pf == "" {
				t.Errorf("%s on %q ran without PGPASSFILE", r.tool, match.database)
				continue
			}
			if r.passfileMode != "600" {
				t.Errorf("%s passfile %s had mode %q, want 600", r.tool, pf, r.passfileMode)
			}
			if _, err := os.Lstat(pf); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("passfile %s of %s on %q is still there (%v)", pf, r.tool, match.database, err)
			}
		}
		for _, p := range pairs {
			for _, tool := range []string{"pg_dump", "psql"} {
				if n := seen[tool+"\x00"+p.database]; n != 1 {
					t.Errorf("%s ran %d times on %q, want 1 (all runs: %d)", tool, n, p.database, len(runs))
				}
			}
		}
		if tmpXErr != nil {
			if _, err := os.Lstat("/tmp/x"); err == nil {
				t.Error("/tmp/x appeared: a name was taken for pg_dump's -f option")
			}
		}
	})
}

// logCapture keeps everything written to it and passes it on to t.Log until
// the test ends.
type logCapture struct {
	t    testing.TB
	mu   sync.Mutex
	buf  bytes.Buffer
	done atomic.Bool
}

func newLogCapture(t testing.TB) *logCapture {
	w := &logCapture{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return w
}

func (w *logCapture) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *logCapture) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}

// startUpLogging is startUp writing the log to stderr.
func startUpLogging(t testing.TB, args []string, env map[string]string, base string, stderr io.Writer) system {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, append([]string{"up"}, args...), func(k string) string { return env[k] }, stderr, stderr)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return system{cancel, done}
			}
		}
		select {
		case err := <-done:
			t.Fatalf("rahatback up exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("rahatback up not ready within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recordingProxy is a reverse proxy to base that keeps every response body.
type recordingProxy struct {
	mu     sync.Mutex
	bodies [][]byte
}

func newRecordingProxy(t *testing.T, base string) (*recordingProxy, string) {
	t.Helper()
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(r *http.Response) error {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return err
		}
		rec.mu.Lock()
		rec.bodies = append(rec.bodies, b)
		rec.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Set("Content-Length", strconv.Itoa(len(b)))
		r.Header.Del("Transfer-Encoding")
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

func (r *recordingProxy) all() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...)
}

// canaryForms are the ways a secret may be written: as is, hex, and base64
// (standard and URL alphabets) at each of the three byte alignments it can
// have inside a longer encoded text.
func canaryForms(secret string) []string {
	forms := []string{secret, hex.EncodeToString([]byte(secret))}
	for k := 0; k < 3; k++ {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, k), secret...))
		start := 0
		if k > 0 {
			start = 4 // the first group mixes in the k bytes before the secret
		}
		enc = enc[start : len(enc)-4] // the last group depends on what follows
		forms = append(forms, enc, strings.NewReplacer("+", "-", "/", "_").Replace(enc))
	}
	return forms
}

// leakFinder reports where canaries (in any of their forms) occur.
type leakFinder struct {
	t     *testing.T
	forms map[string]string // form → canary
	hits  []string
}

func newLeakFinder(t *testing.T, canaries ...string) *leakFinder {
	f := &leakFinder{t: t, forms: map[string]string{}}
	for _, c := range canaries {
		for _, form := range canaryForms(c) {
			f.forms[form] = c
		}
	}
	return f
}

// check records a hit for every canary form in data; where names the data.
func (f *leakFinder) check(where string, data []byte) {
	for form, c := range f.forms {
		if bytes.Contains(data, []byte(form)) {
			f.hits = append(f.hits, fmt.Sprintf("%s holds %q (as %q)", where, c, form))
		}
	}
}

// scanProcesses checks the command line and environment of every process
// and reports whether one of them was pg_dump.
func (f *leakFinder) scanProcesses() (sawPgDump bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // the process is gone
		}
		n++
		f.check("/proc/"+e.Name()+"/cmdline ("+strings.ReplaceAll(string(cmdline), "\x00", " ")+")", cmdline)
		if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); filepath.Base(argv0) == "pg_dump" {
			sawPgDump = true
		}
		if environ, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ")); err == nil {
			f.check("/proc/"+e.Name()+"/environ", environ)
		}
	}
	if n < 5 {
		f.t.Fatalf("only %d processes readable in /proc", n)
	}
	return sawPgDump
}

// TestCanarySecretsNowhere runs connection tests, a successful and a failing
// backup and restores with unique canary passwords, then looks for the
// canaries, as text, hex and base64, everywhere they could leak: every file
// of the data dir (the JetStream store included), a dump of the control
// plane's database, every log line, every API response, and the command line
// and environment of every process while a backup runs.
func TestCanarySecretsNowhere(t *testing.T) {
	ctx := context.Background()
	good := "canary-" + testsupport.RandomString(16) // the role's password
	bad := "canary-" + testsupport.RandomString(16)  // a stored password the server rejects
	role := "canary_" + testsupport.RandomString(4)
	createRole(t, role, good)
	srcName := "canary src " + testsupport.RandomString(3)
	src := ownedDB(t, srcName, role, "t")
	if _, err := src.Exec(ctx, "INSERT INTO t SELECT md5(g::text) FROM generate_series(1, 1000) g"); err != nil {
		t.Fatal(err)
	}

	dbURL, _ := testsupport.NewDatabase(t)
	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	logs := newLogCapture(t)
	sys := startUpLogging(t, []string{"--data-dir", dataDir, "--http", httpAddr, "--nats-listen", freeAddr(t),
		"--database-url", dbURL, "--agent-heartbeat", "500ms", "--agent-offline-after", "3s", "--log-level", "debug"},
		nil, "http://"+httpAddr, logs)
	stopped := false
	defer func() {
		if !stopped {
			sys.stop(t)
		}
	}()
	api, proxied := newRecordingProxy(t, "http://"+httpAddr)
	c := client{t, proxied}
	token := c.register("canary@example.com")
	c.waitAgents(token, 20*time.Second, "local agent online", func(l []agentView) bool { return len(l) == 1 && l[0].Status == "online" })

	conn := func(password string) map[string]any {
		return map[string]any{"type": "postgresql", "host": "127.0.0.1", "port": testsupport.Cluster().Port(),
			"username": role, "password": password, "database": srcName}
	}
	create := func(name, password string) string {
		body := conn(password)
		body["name"] = name
		var d struct{ ID string }
		c.want(c.call("POST", "/v1/databases", token, body), 201).decode(t, &d)
		return d.ID
	}
	goodID, badID := create("good", good), create("bad", bad)

	testConn := func(body map[string]any, want bool) {
		t.Helper()
		var out struct {
			Success bool
			Message string
		}
		c.want(actionCall(c, "POST", "/v1/databases/test-connection", token, body), 200).decode(t, &out)
		if out.Success != want {
			t.Fatalf("test-connection %v: %+v", body["databaseId"], out)
		}
	}
	testConn(conn(good), true)
	testConn(conn(bad), false)
	testConn(map[string]any{"databaseId": goodID}, true)
	testConn(map[string]any{"databaseId": badID}, false)

	job := func(dbID string) string {
		var j struct{ ID string }
		c.want(c.call("POST", "/v1/backups/jobs", token, map[string]any{"databaseId": dbID, "name": "canary"}), 201).decode(t, &j)
		return j.ID
	}
	goodJob, badJob := job(goodID), job(badID)
	finished := func(h historyView) bool { return h.Status == "success" || h.Status == "failed" }

	leaks := newLeakFinder(t, good, bad)

	// The successful backup, held by a lock while every process is looked at.
	lock, err := src.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	run := func(jobID string) string {
		var out struct{ HistoryID string }
		c.want(actionCall(c, "POST", "/v1/backups/jobs/"+jobID+"/run", token, nil), 202).decode(t, &out)
		return out.HistoryID
	}
	goodRun := run(goodJob)
	admin, err := pgx.Connect(ctx, testsupport.Cluster().URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND usename = $2 AND wait_event_type = 'Lock'`, srcName, role).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pg_dump is not waiting for the lock: %+v", c.history(token, goodRun))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !leaks.scanProcesses() {
		t.Fatal("no pg_dump process seen while the backup waits for its lock")
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if h := c.waitHistory(token, goodRun, 60*time.Second, "finished", finished); h.Status != "success" {
		t.Fatalf("backup with the right password: %s", h.ErrorMessage)
	}

	badRun := run(badJob)
	if h := c.waitHistory(token, badRun, 60*time.Second, "finished", finished); h.Status != "failed" ||
		!strings.Contains(h.ErrorMessage, "password authentication failed") {
		t.Fatalf("backup with a wrong password: %s %q", h.Status, h.ErrorMessage)
	}

	restore := func(target string) map[string]any {
		var out struct{ RestoreHistoryID string }
		c.want(actionCall(c, "POST", "/v1/backups/history/"+goodRun+"/restore", token, map[string]any{"targetDatabaseId": target}), 202).decode(t, &out)
		return c.waitRestore(token, out.RestoreHistoryID, 60*time.Second)
	}
	if r := restore(goodID); r["status"] != "success" {
		t.Fatalf("restore: %v", r)
	}
	if r := restore(badID); r["status"] != "failed" {
		t.Fatalf("restore with a wrong password: %v", r)
	}
	c.want(c.call("GET", "/v1/databases", token, nil), 200)
	c.want(c.call("GET", "/v1/backups/history", token, nil), 200)
	c.want(c.call("GET", "/v1/restores", token, nil), 200)

	sys.stop(t)
	stopped = true

	for _, f := range []string{"master.keys", filepath.Join("agent", "agent.json")} {
		fi, err := os.Stat(filepath.Join(dataDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600", f, err)
		}
	}

	files := 0
	err = filepath.WalkDir(dataDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		leaks.check(p, data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(findFiles(t, filepath.Join(dataDir, "nats"), ".blk")) == 0 {
		t.Fatal("no JetStream message blocks under the data dir: the store was not searched")
	}

	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dump := exec.Command(filepath.Join(realPGBinDir(t), "pg_dump"), "--no-password")
	dump.Env = append(os.Environ(), "PGHOST="+cfg.Host, "PGPORT="+strconv.Itoa(int(cfg.Port)), "PGUSER="+cfg.User,
		"PGPASSWORD="+cfg.Password, "PGDATABASE="+cfg.Database)
	var stderr bytes.Buffer
	dump.Stderr = &stderr
	out, err := dump.Output()
	if err != nil {
		t.Fatalf("pg_dump of the control plane's database: %v\n%s", err, stderr.String())
	}
	if !bytes.Contains(out, []byte("COPY public.databases")) {
		t.Fatal("the dump of the control plane's database has no databases table")
	}
	leaks.check("the control plane's database", out)

	log := logs.bytes()
	if !bytes.Contains(log, []byte("password authentication failed")) {
		t.Fatal("the captured log does not show the failed backup: was it captured?")
	}
	leaks.check("the log", log)
	bodies := api.all()
	for i, b := range bodies {
		leaks.check(fmt.Sprintf("API response %d (%.200s)", i, b), b)
	}
	t.Logf("searched %d files, a %d-byte dump, %d bytes of log, %d API responses", files, len(out), len(log), len(bodies))
	for _, h := range leaks.hits {
		t.Error(h)
	}
}
