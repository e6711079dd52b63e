// Package pgcluster runs a private PostgreSQL server from the locally
// installed PostgreSQL server binaries (initdb and postgres).
//
// It serves two purposes: `rahatback up` uses it when no database URL is
// given (the cluster lives inside the data directory and is reused across
// restarts), and test binaries use it from TestMain to get a throwaway
// cluster in a temporary directory.
//
// Layout of a cluster directory (Options.Dir):
//
//	Dir/data          the PostgreSQL data directory (created by initdb)
//	Dir/run           private directory for the unix-domain socket (0700)
//	Dir/postgres.log  output of initdb and of the server (appended to)
//
// The server listens on 127.0.0.1 only and requires SCRAM-SHA-256 password
// authentication for both socket and TCP connections.
//
// PostgreSQL refuses to run as root. When the calling process is root, initdb
// and postgres are run as the "postgres" OS user and everything under Dir is
// owned by that user; otherwise they run as the current user.
//
// Linux only (it relies on SysProcAttr.Pdeathsig and /proc).
package pgcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoServer is returned (possibly wrapped) by BinDir and Start when no
// PostgreSQL server binaries can be found on this machine.
// ErrUnreachableDir is returned (wrapped) by Start when running as root and
// the postgres OS user cannot traverse a parent of Options.Dir.
var ErrUnreachableDir = errors.New("pgcluster: cluster directory unreachable by the postgres user")

var ErrNoServer = errors.New("pgcluster: no PostgreSQL server binaries (initdb, postgres) found in $PATH or /usr/lib/postgresql/*/bin; " +
	"install them (e.g. `apt-get install postgresql`) or pass --database-url to use an existing database")

const (
	// DefaultUser is the superuser name used when Options.User is empty.
	DefaultUser = "rahatback"

	startTimeout = 60 * time.Second // max wait for the server to accept connections
	stopTimeout  = 30 * time.Second // max wait for a fast shutdown before SIGKILL

	dataSubdir = "data"
	initSubdir = "data.initdb" // initdb target; renamed to dataSubdir on success
	runSubdir  = "run"
	logName    = "postgres.log"

	// sun_path is 108 bytes on Linux, including the terminating NUL.
	maxSocketPath = 107

	postgresOSUser = "postgres"
)

// BinDir finds the directory holding the PostgreSQL server binaries (initdb,
// pg_ctl, postgres).
//
// It first looks up initdb in $PATH and resolves symlinks (so
// /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb yields
// /usr/lib/postgresql/15/bin); a directory only counts if it also holds
// postgres, which skips wrapper scripts such as Debian's pg_wrapper. Failing
// that it picks the highest version among /usr/lib/postgresql/*/bin.
//
// It returns ErrNoServer when no such directory exists.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			if abs, err := filepath.Abs(real); err == nil {
				if d := filepath.Dir(abs); hasServerBinaries(d) {
					return d, nil
				}
			}
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVer := "", []int(nil)
	for _, m := range matches {
		v := parseVersion(filepath.Base(filepath.Dir(m)))
		if v == nil || !hasServerBinaries(m) {
			continue
		}
		if best == "" || slices.Compare(v, bestVer) > 0 {
			best, bestVer = m, v
		}
	}
	if best == "" {
		return "", ErrNoServer
	}
	return best, nil
}

// Options configures Start.
type Options struct {
	// Dir is the cluster directory (required). It is created (mode 0700) if
	// missing; the data directory is Dir/data, the server log
	// Dir/postgres.log and the unix socket directory Dir/run.
	Dir string

	// Port is the TCP port on 127.0.0.1. 0 (the default) picks a free
	// loopback port at each start.
	Port int

	// User is the superuser name; default DefaultUser ("rahatback"). It
	// only takes effect when the cluster is first initialised.
	User string

	// Password is the superuser password. It is required when the cluster
	// is first initialised (it is handed to initdb through a temporary
	// 0600 file that is removed right away) and is then only used to build
	// URL. It is stored nowhere by this package and never appears in any
	// process argument list or log. Changing it for an existing cluster has
	// no effect on the server (use ALTER ROLE for that).
	Password string

	// Logger receives progress messages; default slog.Default().
	Logger *slog.Logger

	// NoSync runs initdb with --no-sync and the server with fsync=off,
	// synchronous_commit=off and full_page_writes=off. Much faster, but a
	// crash of the machine can corrupt the cluster: for tests only.
	NoSync bool

	// BinDir is the directory holding initdb and postgres. Default: the
	// binaries of the version that created an existing cluster
	// (/usr/lib/postgresql/<PG_VERSION>/bin) if present, else BinDir().
	BinDir string

	// Settings are extra server settings passed as `-c name=value`
	// (e.g. "max_connections": "200"). They appear in the process argument
	// list, so never put secrets here.
	Settings map[string]string
}

// Cluster is a running private PostgreSQL server started by Start.
type Cluster struct {
	dir, dataDir, runDir, logPath string
	user, password                string
	port                          int
	logger                        *slog.Logger

	proc    *os.Process
	done    chan struct{} // closed once the postmaster has exited
	waitErr error         // result of cmd.Wait; valid once done is closed

	stopOnce sync.Once
	stopErr  error
}

// runAs describes the OS user the PostgreSQL processes run as.
type runAs struct {
	name     string
	uid, gid int
	groups   []uint32
	cred     *syscall.Credential // nil: run as the current user
}

// Start starts the cluster in o.Dir, initialising it first if Dir holds no
// cluster yet, and returns once the server accepts connections.
//
// Initialisation runs initdb with SCRAM-SHA-256 authentication for local and
// host connections, superuser o.User with password o.Password, encoding UTF8
// and locale C.UTF-8 with C collation (plain C if C.UTF-8 is unavailable).
// initdb works in Dir/data.initdb which is renamed to Dir/data only on
// success, so an interrupted initialisation is simply redone.
//
// The server is a child process listening only on 127.0.0.1:Port, with its
// unix socket in the private directory Dir/run, and it receives SIGINT (fast
// shutdown) if the calling process dies. A stale postmaster.pid left by a
// killed earlier run is removed; a server that still serves Dir/data is
// waited for if it is shutting down and otherwise reported as an error.
//
// Start returns an error if o.Dir is empty, o.Password is empty (or contains
// a newline or NUL) when the cluster must be initialised, ErrNoServer
// (wrapped) if no server binaries are found, an error naming the directory if
// running as root and the postgres OS user cannot traverse a parent of Dir,
// and an error including the tail of Dir/postgres.log if initdb fails or the
// server exits or does not accept connections within 60 seconds. ctx bounds
// the whole start-up; it does not affect the server once Start has returned.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Dir == "" {
		return nil, errors.New("pgcluster: Options.Dir is required")
	}
	if o.Port < 0 || o.Port > 65535 {
		return nil, fmt.Errorf("pgcluster: invalid port %d", o.Port)
	}
	if o.User == "" {
		o.User = DefaultUser
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if strings.ContainsAny(o.Password, "\r\n\x00") {
		return nil, errors.New("pgcluster: the password must not contain newline or NUL characters")
	}

	owner, err := lookupRunAs()
	if err != nil {
		return nil, err
	}
	dir, err := prepareDir(o.Dir, owner)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		dir:      dir,
		dataDir:  filepath.Join(dir, dataSubdir),
		runDir:   filepath.Join(dir, runSubdir),
		logPath:  filepath.Join(dir, logName),
		user:     o.User,
		password: o.Password,
		logger:   o.Logger,
	}

	// Is there an existing cluster?
	pgVersion, err := existingVersion(c.dataDir)
	if err != nil {
		return nil, err
	}

	binDir, err := chooseBinDir(o.BinDir, pgVersion)
	if err != nil {
		return nil, err
	}
	if pgVersion != "" {
		major, err := serverMajor(binDir)
		if err != nil {
			return nil, err
		}
		if major != pgVersion {
			return nil, fmt.Errorf("pgcluster: the cluster in %s was created by PostgreSQL %s but the server in %s is PostgreSQL %s; "+
				"install the PostgreSQL %s server binaries or upgrade the cluster with pg_upgrade", c.dataDir, pgVersion, binDir, major, pgVersion)
		}
		if err := checkNoLiveServer(ctx, c.dataDir); err != nil {
			return nil, err
		}
		if err := chownTree(c.dataDir, owner); err != nil {
			return nil, err
		}
	}

	if err := prepareRunDir(c.runDir, owner); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: open server log: %w", err)
	}
	defer logf.Close()
	if err := chown(c.logPath, owner); err != nil {
		return nil, err
	}

	if pgVersion == "" {
		if err := c.initdb(ctx, binDir, owner, o, logf); err != nil {
			return nil, err
		}
	}

	for attempt := 1; ; attempt++ {
		port := o.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		err := c.startServer(ctx, binDir, owner, o, port, logf)
		if err == nil {
			return c, nil
		}
		// With a randomly picked port somebody may have grabbed it between
		// our probe and the server's bind: try another one.
		var be *bindError
		if o.Port == 0 && errors.As(err, &be) && attempt < 5 {
			c.logger.Warn("pgcluster: port taken, retrying with another one", "port", port)
			continue
		}
		return nil, err
	}
}

// Port returns the TCP port the server listens on (on 127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// Dir returns the absolute cluster directory (symlinks resolved).
func (c *Cluster) Dir() string { return c.dir }

// LogPath returns the path of the server log file, Dir/postgres.log.
func (c *Cluster) LogPath() string { return c.logPath }

// Done returns a channel that is closed when the server process has exited,
// whether through Stop or unexpectedly.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// URL returns a postgres:// URL for database dbname: host 127.0.0.1, the
// cluster's port, sslmode=disable and the superuser name and password
// (URL-escaped; the password is omitted if Options.Password was empty).
// The URL contains the password: do not log it.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	if c.password != "" {
		u.User = url.UserPassword(c.user, c.password)
	} else {
		u.User = url.User(c.user)
	}
	return u.String()
}

// Stop performs a fast shutdown (SIGINT to the postmaster: open sessions
// are disconnected, transactions rolled back, data flushed) and waits for
// the server to exit. If it has not exited after 30 seconds it is killed
// with SIGKILL and an error is returned. An error is also returned if the
// server had already exited abnormally before Stop. Stop is safe to call more
// than once (and on a nil *Cluster); later calls return the first result.
func (c *Cluster) Stop() error {
	if c == nil || c.proc == nil {
		return nil
	}
	c.stopOnce.Do(func() { c.stopErr = c.shutdown(stopTimeout) })
	return c.stopErr
}

func (c *Cluster) shutdown(grace time.Duration) error {
	select {
	case <-c.done:
		if c.waitErr != nil {
			return fmt.Errorf("pgcluster: postgres had already exited: %v", c.waitErr)
		}
		return nil
	default:
	}
	c.logger.Info("pgcluster: stopping PostgreSQL", "pid", c.proc.Pid, "dir", c.dir)
	if err := c.proc.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.logger.Warn("pgcluster: signal postgres", "err", err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		if c.waitErr != nil {
			return fmt.Errorf("pgcluster: postgres shutdown: %v", c.waitErr)
		}
		return nil
	case <-t.C:
		_ = c.proc.Kill()
		<-c.done
		return fmt.Errorf("pgcluster: postgres did not shut down within %v; killed it", grace)
	}
}

// initdb creates the cluster in Dir/data.initdb and renames it to Dir/data.
func (c *Cluster) initdb(ctx context.Context, binDir string, owner *runAs, o Options, logf *os.File) error {
	if o.Password == "" {
		return fmt.Errorf("pgcluster: a superuser password is required to initialise a new cluster in %s", c.dataDir)
	}
	tmpData := filepath.Join(c.dir, initSubdir)
	if err := os.RemoveAll(tmpData); err != nil { // leftover of an interrupted run
		return fmt.Errorf("pgcluster: remove stale %s: %w", tmpData, err)
	}

	pw, err := os.CreateTemp(c.dir, ".pwfile-*") // mode 0600
	if err != nil {
		return fmt.Errorf("pgcluster: create password file: %w", err)
	}
	pwPath := pw.Name()
	defer os.Remove(pwPath)
	_, err = io.WriteString(pw, o.Password+"\n")
	if cerr := pw.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = chown(pwPath, owner)
	}
	if err != nil {
		return fmt.Errorf("pgcluster: write password file: %w", err)
	}

	c.logger.Info("pgcluster: initialising PostgreSQL cluster", "dir", c.dataDir, "bin", binDir, "user", o.User)
	locales := [][]string{
		// C.UTF-8 gives Unicode-aware character classification; C collation
		// is fast and immune to collation changes in libc upgrades.
		{"--locale=C.UTF-8", "--lc-collate=C"},
		{"--locale=C"},
	}
	var out bytes.Buffer
	for i, loc := range locales {
		args := []string{
			"-D", tmpData,
			"-U", o.User,
			"--pwfile=" + pwPath,
			"-E", "UTF8",
			"--auth-local=scram-sha-256",
			"--auth-host=scram-sha-256",
		}
		args = append(args, loc...)
		if o.NoSync {
			args = append(args, "--no-sync")
		}
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), args...)
		cmd.Dir = c.dir
		cmd.Env = childEnv()
		out.Reset()
		cmd.Stdout = &out
		cmd.Stderr = &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner.cred, Pdeathsig: syscall.SIGKILL}
		err = cmd.Run()
		fmt.Fprintf(logf, "%s pgcluster: initdb %s\n", time.Now().Format(time.RFC3339), strings.Join(loc, " "))
		_, _ = logf.Write(out.Bytes())
		if err == nil {
			break
		}
		_ = os.RemoveAll(tmpData)
		if ctx.Err() != nil {
			return fmt.Errorf("pgcluster: initdb: %w", ctx.Err())
		}
		if i < len(locales)-1 && strings.Contains(strings.ToLower(out.String()), "locale") {
			c.logger.Warn("pgcluster: initdb failed with locale, retrying", "locale", strings.Join(loc, " "))
			continue
		}
		return fmt.Errorf("pgcluster: initdb failed: %v\n%s", err, tail(out.Bytes(), 20))
	}
	if err := os.Rename(tmpData, c.dataDir); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// bindError marks a start failure caused by the port being in use.
type bindError struct{ err error }

func (e *bindError) Error() string { return e.err.Error() }
func (e *bindError) Unwrap() error { return e.err }

// startServer starts the postmaster on port and waits until it is ready.
func (c *Cluster) startServer(ctx context.Context, binDir string, owner *runAs, o Options, port int, logf *os.File) error {
	logStart, _ := logf.Seek(0, io.SeekEnd)
	args := []string{
		"-D", c.dataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
	}
	if len(c.runDir)+len("/.s.PGSQL.65535") < maxSocketPath {
		args = append(args, "-c", "unix_socket_directories="+quoteSocketDir(c.runDir), "-c", "unix_socket_permissions=0700")
	} else {
		c.logger.Warn("pgcluster: cluster path too long for a unix socket; TCP only", "dir", c.runDir)
		args = append(args, "-c", "unix_socket_directories=")
	}
	if o.NoSync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	keys := make([]string, 0, len(o.Settings))
	for k := range o.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+o.Settings[k])
	}

	c.port = port
	if err := c.spawn(filepath.Join(binDir, "postgres"), args, owner, logf); err != nil {
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}

	err := c.waitReady(ctx, port)
	if err == nil {
		c.logger.Info("pgcluster: PostgreSQL ready", "port", port, "pid", c.proc.Pid, "dir", c.dir)
		return nil
	}
	exited := false
	select {
	case <-c.done:
		exited = true
	default:
		_ = c.shutdown(5 * time.Second)
	}
	logTail := c.logTail(logStart)
	err = fmt.Errorf("%w; last lines of %s:\n%s", err, c.logPath, logTail)
	if exited && (strings.Contains(logTail, "could not bind IPv4 address") || strings.Contains(logTail, "Address already in use")) {
		return &bindError{err}
	}
	return err
}

// spawn starts the postmaster from a goroutine locked to its OS thread that
// stays locked until the child exits: Pdeathsig fires when the *thread* that
// forked the child exits, and the Go runtime may terminate threads.
func (c *Cluster) spawn(path string, args []string, owner *runAs, logf *os.File) error {
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		cmd := exec.Command(path, args...)
		cmd.Dir = c.dir
		cmd.Env = childEnv()
		cmd.Stdout = logf
		cmd.Stderr = logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner.cred, Pdeathsig: syscall.SIGINT}
		if err := cmd.Start(); err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		c.proc = cmd.Process
		c.done = done
		started <- nil
		c.waitErr = cmd.Wait()
		close(done)
		runtime.UnlockOSThread()
	}()
	return <-started
}

// waitReady waits until postmaster.pid reports our postmaster as "ready"
// and the TCP port accepts connections.
func (c *Cluster) waitReady(ctx context.Context, port int) error {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		select {
		case <-c.done:
			return fmt.Errorf("pgcluster: postgres exited during start-up (%v)", c.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: waiting for postgres to start: %w", ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("pgcluster: postgres did not accept connections within %v", startTimeout)
		case <-tick.C:
		}
		pf, err := readPidFile(c.dataDir)
		if err != nil || pf.pid != c.proc.Pid || pf.status != "ready" {
			continue
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		conn.Close()
		return nil
	}
}

// logTail returns the last lines the server log got since offset from.
func (c *Cluster) logTail(from int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return "(cannot read log: " + err.Error() + ")"
	}
	defer f.Close()
	const max = 8 << 10
	if st, err := f.Stat(); err == nil && st.Size()-from > max {
		from = st.Size() - max
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return "(cannot read log: " + err.Error() + ")"
	}
	b, _ := io.ReadAll(f)
	return tail(b, 20)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lookupRunAs returns the OS user to run PostgreSQL as: "postgres" when we
// are root, the current user otherwise.
func lookupRunAs() (*runAs, error) {
	if os.Geteuid() != 0 {
		return &runAs{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup(postgresOSUser)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root, but PostgreSQL refuses to run as root and there is no %q OS user to run it as (%v); "+
			"install the postgresql package, create the user, or run rahatback as a non-root user", postgresOSUser, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgcluster: bad uid/gid %q/%q for OS user %q", u.Uid, u.Gid, postgresOSUser)
	}
	if uid == 0 {
		return nil, fmt.Errorf("pgcluster: OS user %q has uid 0; PostgreSQL refuses to run as root", postgresOSUser)
	}
	r := &runAs{name: postgresOSUser, uid: uid, gid: gid}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				r.groups = append(r.groups, uint32(n))
			}
		}
	}
	r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: r.groups}
	return r, nil
}

// prepareDir creates dir if needed and returns its absolute, symlink-free
// path. As root it hands dir to the postgres user and checks that user can
// reach it.
func prepareDir(dir string, owner *runAs) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	// Missing parents: only traversable by others when another user must
	// reach the cluster.
	parentPerm := os.FileMode(0o700)
	if owner.cred != nil {
		parentPerm = 0o711
	}
	if err := os.MkdirAll(filepath.Dir(abs), parentPerm); err != nil {
		return "", fmt.Errorf("pgcluster: create cluster directory: %w", err)
	}
	// Resolve symlinks before creating or changing anything, so that a
	// directory the postgres user cannot reach is reported untouched.
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, fs.ErrNotExist) {
		var parent string
		if parent, err = filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
			real = filepath.Join(parent, filepath.Base(abs))
		}
	}
	if err != nil {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	if owner.cred != nil {
		if err := checkTraversable(real, owner); err != nil {
			return "", err
		}
	}
	if err := os.Mkdir(real, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("pgcluster: create cluster directory: %w", err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("pgcluster: %s is not a directory", real)
	}
	if owner.cred == nil {
		return real, nil
	}
	if err := chown(real, owner); err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o700 != 0o700 {
		if err := os.Chmod(real, st.Mode().Perm()|0o700); err != nil {
			return "", fmt.Errorf("pgcluster: %w", err)
		}
	}
	return real, nil
}

// checkTraversable verifies that owner can search every parent of dir.
func checkTraversable(dir string, owner *runAs) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := st.Mode().Perm()
		var bit os.FileMode
		switch {
		case int(sys.Uid) == owner.uid:
			bit = 0o100
		case int(sys.Gid) == owner.gid || slices.Contains(owner.groups, sys.Gid):
			bit = 0o010
		default:
			bit = 0o001
		}
		if mode&bit == 0 {
			return fmt.Errorf("%w: PostgreSQL must run as OS user %q (it refuses to run as root), but that user cannot "+
				"traverse directory %s (mode %04o, owner uid %d) on the way to %s; choose a different --data-dir "+
				"(e.g. under /var/lib) or make %s traversable (chmod o+x %s)", ErrUnreachableDir, owner.name, p, mode, sys.Uid, dir, p, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// prepareRunDir creates the private socket directory and removes socket
// files left behind by a killed server.
func prepareRunDir(runDir string, owner *runAs) error {
	if err := os.Mkdir(runDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := os.Chmod(runDir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := chown(runDir, owner); err != nil {
		return err
	}
	stale, _ := filepath.Glob(filepath.Join(runDir, ".s.PGSQL.*"))
	for _, f := range stale {
		_ = os.Remove(f)
	}
	return nil
}

// chown gives path to owner when running as root; otherwise it does nothing.
func chown(path string, owner *runAs) error {
	if owner.cred == nil {
		return nil
	}
	if err := os.Lchown(path, owner.uid, owner.gid); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// chownTree gives an existing data directory to owner if it is not owned by
// it already (e.g. it was copied or restored as root).
func chownTree(root string, owner *runAs) error {
	if owner.cred == nil {
		return nil
	}
	st, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) == owner.uid {
		return nil
	}
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return chown(p, owner)
	})
}

// existingVersion returns the major version in dataDir/PG_VERSION, or ""
// if dataDir holds no cluster. An empty dataDir is removed (initdb will
// create it); a non-empty one without PG_VERSION is an error.
func existingVersion(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("pgcluster: %s exists and is not empty but holds no PostgreSQL cluster (no PG_VERSION); move it away", dataDir)
	}
	if err := os.Remove(dataDir); err != nil {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	return "", nil
}

// chooseBinDir picks the server binaries; see Options.BinDir.
func chooseBinDir(explicit, pgVersion string) (string, error) {
	if explicit != "" {
		if !hasServerBinaries(explicit) {
			return "", fmt.Errorf("%w (looked in %s)", ErrNoServer, explicit)
		}
		return explicit, nil
	}
	if pgVersion != "" {
		d := filepath.Join("/usr/lib/postgresql", pgVersion, "bin")
		if hasServerBinaries(d) {
			return d, nil
		}
	}
	return BinDir()
}

// serverMajor returns the major version of binDir/postgres ("15", "9.6").
func serverMajor(binDir string) (string, error) {
	out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("pgcluster: %s/postgres --version: %w", binDir, err)
	}
	// "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "", fmt.Errorf("pgcluster: cannot parse %q", out)
	}
	v := strings.Split(f[2], ".")
	n, err := strconv.Atoi(strings.TrimRightFunc(v[0], func(r rune) bool { return r < '0' || r > '9' }))
	if err != nil {
		return "", fmt.Errorf("pgcluster: cannot parse %q", out)
	}
	if n < 10 && len(v) > 1 {
		return v[0] + "." + v[1], nil
	}
	return strconv.Itoa(n), nil
}

// pidFile is the part of postmaster.pid we care about.
type pidFile struct {
	pid    int
	status string // "starting", "ready", "stopping", "standby" (PG >= 10)
}

func readPidFile(dataDir string) (pidFile, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return pidFile{}, err
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, strings.TrimSpace(sc.Text()))
	}
	if len(lines) == 0 {
		return pidFile{}, errors.New("empty postmaster.pid")
	}
	pid, err := strconv.Atoi(lines[0])
	if err != nil {
		return pidFile{}, fmt.Errorf("bad postmaster.pid: %w", err)
	}
	pf := pidFile{pid: pid}
	if len(lines) >= 8 {
		pf.status = lines[7]
	}
	return pf, nil
}

// checkNoLiveServer deals with an existing postmaster.pid: if no PostgreSQL
// server is alive for dataDir it removes the file (postgres would mostly cope
// itself, but not when the pid has been recycled by an unrelated live
// process); if a server is shutting down it waits up to 30s for it; if one is
// running it returns an error.
func checkNoLiveServer(ctx context.Context, dataDir string) error {
	path := filepath.Join(dataDir, "postmaster.pid")
	deadline := time.Now().Add(stopTimeout)
	for {
		pf, err := readPidFile(dataDir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || pf.pid <= 0 || !postmasterAlive(pf.pid, dataDir) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("pgcluster: remove stale %s: %w", path, err)
			}
			return nil
		}
		if pf.status != "stopping" || time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: a PostgreSQL server (pid %d) is already running on %s; "+
				"stop it (or the rahatback instance using it) first, or use a different data directory", pf.pid, dataDir)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: waiting for old server (pid %d) to stop: %w", pf.pid, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// postmasterAlive reports whether pid is a live PostgreSQL postmaster for
// dataDir. The postmaster's working directory is its data directory.
func postmasterAlive(pid int, dataDir string) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	proc := "/proc/" + strconv.Itoa(pid)
	if stat, err := os.ReadFile(proc + "/stat"); err == nil {
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false // zombie
		}
	}
	if cwd, err := os.Readlink(proc + "/cwd"); err == nil {
		a, err1 := os.Stat(cwd)
		b, err2 := os.Stat(dataDir)
		return err1 == nil && err2 == nil && os.SameFile(a, b)
	}
	if comm, err := os.ReadFile(proc + "/comm"); err == nil {
		s := strings.TrimSpace(string(comm))
		return s == "postgres" || s == "postmaster"
	}
	return true // cannot tell: assume the worst
}

// hasServerBinaries reports whether dir holds executable initdb and postgres.
func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// parseVersion parses "15" or "9.6" into comparable numbers; nil if invalid.
func parseVersion(s string) []int {
	var v []int
	for _, p := range strings.Split(s, ".") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil
		}
		v = append(v, n)
	}
	return v
}

// freePort returns a currently free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// quoteSocketDir quotes a directory for unix_socket_directories, which is a
// comma-separated list.
func quoteSocketDir(d string) string {
	if !strings.ContainsAny(d, ", \t\"") {
		return d
	}
	return `"` + strings.ReplaceAll(d, `"`, `""`) + `"`
}

// childEnv is our environment without PG* variables (PGDATA, PGPORT, ...)
// that could change what initdb and postgres do.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}
