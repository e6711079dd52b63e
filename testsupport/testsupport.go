// Package testsupport gives tests real components: one private PostgreSQL
// cluster per test binary (started in TestMain) with a fresh migrated
// database per test, and an in-process NATS server per test on a random port.
package testsupport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback"
	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/events/natsd"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/pgcluster"
)

const templateDB = "rahatback_template"

var cluster *pgcluster.Cluster

// Main starts the test binary's PostgreSQL cluster (scram-sha-256, fsync
// off, in a temporary directory), builds a migrated template database, runs
// the tests and removes everything. Use it as TestMain: os.Exit(testsupport.Main(m)).
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rahatback-test-pg-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The postgres OS user runs the server when tests run as root.
	if err := os.Chmod(dir, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err = pgcluster.Start(ctx, pgcluster.Options{
		Dir: filepath.Join(dir, "pg"), Password: RandomString(16), NoSync: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsupport: starting PostgreSQL:", err)
		return 1
	}
	defer cluster.Stop()
	defer stopMariaDB()
	if err := buildTemplate(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "testsupport: template database:", err)
		return 1
	}
	return m.Run()
}

func buildTemplate(ctx context.Context) error {
	if err := AdminExec(ctx, "CREATE DATABASE "+templateDB); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cluster.URL(templateDB))
	if err != nil {
		return err
	}
	defer pool.Close()
	return db.Migrate(ctx, pool)
}

// Cluster is the test binary's PostgreSQL server.
func Cluster() *pgcluster.Cluster { return cluster }

// AdminExec runs sql as the cluster's superuser in database postgres.
func AdminExec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// RandomString returns n random hex bytes as a string of 2n characters.
func RandomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewDatabase creates a fresh, migrated database for t, dropped when t ends,
// and returns its URL and a pool on it.
func NewDatabase(t testing.TB) (string, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	name := "t_" + RandomString(8)
	if err := AdminExec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+templateDB); err != nil {
		t.Fatalf("create database: %v", err)
	}
	url := cluster.URL(name)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AfterConnect = db.RegisterTypes // as the control plane's pool
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		if err := AdminExec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return url, pool
}

// NATS is an in-process NATS server with JetStream and the control plane's
// connection to it.
type NATS struct {
	Server *natsd.Server
	// ControlPlanePassword authenticates natsd.ControlPlaneUser.
	ControlPlanePassword string
	NC                   *nats.Conn
	JS                   jetstream.JetStream

	t         testing.TB
	opts      natsd.Options
	stopped   bool
	stoppedMu sync.Mutex
}

// StartNATS starts a NATS server for t on a random loopback port with the
// project's nats.conf, connects as the control plane and creates the
// streams. authAgent checks agent credentials (nil rejects every agent).
// The control plane's connection reconnects for ever, across Stop and
// Restart.
func StartNATS(t testing.TB, authAgent natsd.AgentAuthenticator) *NATS {
	t.Helper()
	n := &NATS{t: t, ControlPlanePassword: RandomString(16), opts: natsd.Options{
		Config: rahatback.NATSConf, Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
		AuthenticateAgent: authAgent, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}}
	n.opts.ControlPlanePassword = n.ControlPlanePassword
	n.start()
	// Restart listens where the first start did.
	n.opts.Listen = strings.TrimPrefix(n.Server.ClientURL(), "nats://")
	t.Cleanup(n.Stop)
	nc, err := nats.Connect(n.Server.ClientURL(), nats.UserInfo(natsd.ControlPlaneUser, n.ControlPlanePassword),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(context.Background(), js, events.StreamOpts{}); err != nil {
		t.Fatal(err)
	}
	n.NC, n.JS = nc, js
	return n
}

func (n *NATS) start() {
	n.t.Helper()
	srv, err := natsd.Start(n.opts)
	if err != nil {
		n.t.Fatal(err)
	}
	n.Server = srv
}

// Stop shuts the server down, as a broker outage; Restart brings it back.
func (n *NATS) Stop() {
	n.stoppedMu.Lock()
	defer n.stoppedMu.Unlock()
	if !n.stopped {
		n.Server.Shutdown()
		n.stopped = true
	}
}

// Restart starts a stopped server again on the same address and store.
func (n *NATS) Restart() {
	n.t.Helper()
	n.stoppedMu.Lock()
	defer n.stoppedMu.Unlock()
	if n.stopped {
		n.start()
		n.stopped = false
	}
}

// Logger returns a logger writing to t.Log until t's cleanups have run;
// later lines (from goroutines still stopping) are dropped.
func Logger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// RunOutbox runs an outbox relay from pool to js until t ends, and returns
// it (to pass as the Outbox of what writes there).
func RunOutbox(t testing.TB, pool *pgxpool.Pool, js jetstream.JetStream) *outbox.Relay {
	t.Helper()
	r, err := outbox.New(outbox.Relay{Pool: pool, JS: js, Logger: Logger(t), Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}
