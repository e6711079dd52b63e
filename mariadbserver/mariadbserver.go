// Package mariadbserver runs a private MariaDB server from the installed
// server binaries (mariadb-install-db and mariadbd): a data directory and
// a unix socket under a directory of its own, TCP on a random loopback
// port, and an administrator with a password. Tests start one per test
// binary; the machine's own MariaDB is never touched.
//
// Running as root, the server runs as the "mysql" OS user (mariadbd
// refuses root), so Dir's parents must be traversable by it. Linux only
// (the server dies with its parent, through Pdeathsig).
package mariadbserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// ErrNoServer is Start's error when the MariaDB server binaries are not
// installed.
var ErrNoServer = errors.New("mariadbserver: no MariaDB server binaries (mariadb-install-db, mariadbd) found in $PATH or /usr/sbin; " +
	"install them (Debian: apt-get install mariadb-server) or run scripts/deps.sh")

// Options configures Start.
type Options struct {
	// Dir is created and holds data/, run/ (the socket) and mariadbd.log.
	Dir string
	// BufferPool is innodb_buffer_pool_size; default 128M.
	BufferPool string
}

// Server is a running private MariaDB server.
type Server struct {
	dir      string
	port     int
	password string
	cmd      *exec.Cmd
	done     chan error
}

// Admin is the administrator's user name (all privileges, with GRANT).
const Admin = "rahatback_admin"

// Start initialises Dir and starts the server; it waits until the server
// answers. Errors: ErrNoServer, or what failed with the tail of the log.
func Start(ctx context.Context, o Options) (*Server, error) {
	installDB, err := find("mariadb-install-db", "mysql_install_db")
	if err != nil {
		return nil, err
	}
	mariadbd, err := find("mariadbd", "mysqld")
	if err != nil {
		return nil, err
	}
	if o.BufferPool == "" {
		o.BufferPool = "128M"
	}
	data, run := filepath.Join(o.Dir, "data"), filepath.Join(o.Dir, "run")
	for _, d := range []string{o.Dir, data, run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	var cred *syscall.Credential
	var userArgs []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("mysql")
		if err != nil {
			return nil, fmt.Errorf("mariadbserver: running as root needs the mysql OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{o.Dir, data, run} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, err
			}
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		userArgs = []string{"--user=mysql"}
	}
	logPath := filepath.Join(o.Dir, "mariadbd.log")
	install := exec.CommandContext(ctx, installDB, append([]string{"--no-defaults", "--datadir=" + data,
		"--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve"}, userArgs...)...)
	if out, err := install.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadbserver: mariadb-install-db: %v: %s", err, tail(out))
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	socket := filepath.Join(run, "mariadbd.sock")
	s := &Server{dir: o.Dir, port: port, password: randomHex(16), done: make(chan error, 1)}
	s.cmd = exec.Command(mariadbd, "--no-defaults", "--datadir="+data, "--socket="+socket, "--port="+strconv.Itoa(port),
		"--bind-address=127.0.0.1", "--skip-name-resolve", "--innodb-buffer-pool-size="+o.BufferPool,
		"--innodb-flush-log-at-trx-commit=0", "--sync-binlog=0", "--skip-log-bin", "--max-allowed-packet=256M",
		"--log-error="+logPath, "--pid-file="+filepath.Join(run, "mariadbd.pid"), "--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_unicode_ci")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("mariadbserver: start mariadbd: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	// Root connects through the socket (unix_socket authentication) and
	// creates the administrator, who connects over TCP.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := s.setup(ctx, socket)
		if err == nil {
			return s, nil
		}
		select {
		case werr := <-s.done:
			return nil, fmt.Errorf("mariadbserver: mariadbd exited (%v): %s", werr, s.logTail(logPath))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("mariadbserver: server not ready: %v: %s", err, s.logTail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setup creates the administrator through the socket as root.
func (s *Server) setup(ctx context.Context, socket string) error {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", socket
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	for _, q := range []string{
		"CREATE USER IF NOT EXISTS '" + Admin + "'@'%' IDENTIFIED BY '" + s.password + "'",
		"GRANT ALL PRIVILEGES ON *.* TO '" + Admin + "'@'%' WITH GRANT OPTION",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// Port is the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Password is the administrator's password.
func (s *Server) Password() string { return s.password }

// Config is a driver config for the administrator to database (may be "").
func (s *Server) Config(database string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = Admin, s.password, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	cfg.DBName = database
	cfg.MultiStatements = true
	_ = cfg.Apply(mysql.Charset("utf8mb4", ""))
	return cfg
}

// Open is a connection pool as the administrator to database (may be "").
func (s *Server) Open(database string) (*sql.DB, error) {
	conn, err := mysql.NewConnector(s.Config(database))
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

// Stop stops the server (SIGTERM, then SIGKILL after 30 s).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

func (s *Server) logTail(path string) string {
	b, _ := os.ReadFile(path)
	return tail(b)
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func find(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/mysql/bin"} {
			p := filepath.Join(dir, n)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", ErrNoServer
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
