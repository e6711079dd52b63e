package controlplane

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/rahatback/rahatback"
	"github.com/rahatback/rahatback/agent"
	"github.com/rahatback/rahatback/auth"
	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/events/natsd"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/handlers/audit"
	"github.com/rahatback/rahatback/handlers/expiry"
	hnotify "github.com/rahatback/rahatback/handlers/notify"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/handlers/scheduler"
	"github.com/rahatback/rahatback/handlers/web"
	"github.com/rahatback/rahatback/metrics"
	"github.com/rahatback/rahatback/notify"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/pgcluster"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/secrets"
	"github.com/rahatback/rahatback/securefile"
	"github.com/rahatback/rahatback/vault"
	"github.com/rahatback/rahatback/version"
)

const usage = `usage: rahatback <command> [flags]

commands:
  up        start everything in one process: embedded NATS, PostgreSQL (private
            cluster unless --database-url), migrations, API, projector, local agent
  serve     start chosen roles (--roles api,projector) against --database-url
  migrate   apply database migrations and exit
  keys      master keys of the secrets at rest: rotate, rewrap, status
  version   print the version

Run "rahatback <command> -h" for the flags of a command. Every flag has an
environment equivalent: --data-dir is RAHATBACK_DATA_DIR.
`

// Run is the rahatback command line. It returns when the command is done or,
// for up and serve, after ctx ends and everything has shut down.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, version.String())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "keys":
		return runKeys(ctx, rest, getenv, stdout, stderr)
	case "up", "serve", "migrate":
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	cfg, err := parse(cmd, rest, getenv, stderr)
	if err != nil {
		return err
	}
	if cmd == "up" {
		cfg.Roles = knownRoles
	}
	log, err := cfg.logger(stderr)
	if err != nil {
		return err
	}
	s := &system{cfg: cfg, log: log, getenv: getenv, up: cmd == "up"}
	defer s.close()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	if err := s.openDatabase(ctx); err != nil {
		return err
	}
	if cmd == "migrate" {
		log.Info("migrations applied")
		return nil
	}
	return s.serve(ctx)
}

// system holds what Run opened, closed in reverse order by close.
type system struct {
	cfg    *Config
	log    *slog.Logger
	getenv func(string) string
	up     bool

	cluster *pgcluster.Cluster
	pool    *pgxpool.Pool
	nsrv    *natsd.Server
	relay   *outbox.Relay
	nc      *nats.Conn

	// registered receives registrations; the local agent waits for the first.
	registered chan uuid.UUID
	// sessionKey seals dashboard session cookies (derived from the JWT key).
	sessionKey []byte
}

func (s *system) close() {
	if s.nc != nil {
		_ = s.nc.Drain()
	}
	if s.nsrv != nil {
		s.nsrv.Shutdown()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.cluster != nil {
		if err := s.cluster.Stop(); err != nil {
			s.log.Warn("stopping PostgreSQL", "err", err)
		}
	}
}

// openDatabase connects to --database-url, or starts the private cluster in
// the data dir (creating it at first start), then applies migrations.
func (s *system) openDatabase(ctx context.Context) error {
	dbURL := s.cfg.DatabaseURL
	if dbURL == "" {
		var err error
		dbURL, err = s.startPrivateCluster(ctx)
		if err != nil {
			return err
		}
	}
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("--database-url: %w", err)
	}
	pcfg.AfterConnect = db.RegisterTypes
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	s.pool = pool
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		return fmt.Errorf("cannot reach PostgreSQL at %s:%d: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, err)
	}
	return db.Migrate(ctx, pool)
}

const privateDBName = "rahatback"

func (s *system) startPrivateCluster(ctx context.Context) (string, error) {
	if _, err := pgcluster.BinDir(); err != nil {
		return "", fmt.Errorf("no --database-url given and %w", err)
	}
	password, err := readOrCreateSecret(filepath.Join(s.cfg.DataDir, "postgres.password"))
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.cfg.DataDir, "postgres")
	if os.Geteuid() == 0 {
		// PostgreSQL runs as the postgres OS user, which must reach its
		// directory; the secrets beside it stay 0600.
		if err := os.Chmod(s.cfg.DataDir, 0o711); err != nil {
			return "", err
		}
	}
	s.log.Info("starting private PostgreSQL", "dir", dir)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Password: password, Logger: s.log})
	if errors.Is(err, pgcluster.ErrUnreachableDir) {
		// The data dir sits below a directory the postgres user cannot
		// enter (such as /root): keep the cluster under /var/lib instead,
		// at a place derived from the data dir so every start finds it.
		sum := sha256.Sum256([]byte(s.cfg.DataDir))
		dir = filepath.Join("/var/lib/rahatback/clusters", hex.EncodeToString(sum[:8]))
		s.log.Warn("the postgres user cannot reach the data dir; keeping the private cluster elsewhere", "dir", dir)
		c, err = pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Password: password, Logger: s.log})
	}
	if err != nil {
		return "", err
	}
	s.cluster = c
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", privateDBName).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{privateDBName}.Sanitize()); err != nil {
			return "", err
		}
	}
	return c.URL(privateDBName), nil
}

// readOrCreateSecret returns the secret in path, creating a random one (0600)
// when the file is missing.
func readOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	v := base64.RawURLEncoding.EncodeToString(raw)
	return v, securefile.Write(path, []byte(v+"\n"))
}

// connectNATS starts the embedded server (unless --nats-url) and connects.
// It returns the URL enrolling agents are given.
func (s *system) connectNATS(ctx context.Context) (string, error) {
	opts := []nats.Option{
		nats.Name("rahatback control plane"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("disconnected from NATS", "err", err)
			}
		}),
	}
	var agentURL string
	if s.cfg.NATSURL != "" {
		nc, err := nats.Connect(s.cfg.NATSURL, opts...)
		if err != nil {
			return "", fmt.Errorf("--nats-url: %w", err)
		}
		s.nc = nc
		u, err := url.Parse(s.cfg.NATSURL)
		if err == nil {
			u.User = nil
			agentURL = u.String()
		}
	} else {
		conf, err := s.cfg.natsConfigText()
		if err != nil {
			return "", fmt.Errorf("--nats-config: %w", err)
		}
		if conf == "" {
			conf = rahatback.NATSConf
		}
		cpPassword, err := readOrCreateSecret(filepath.Join(s.cfg.DataDir, "nats.secret"))
		if err != nil {
			return "", err
		}
		srv, err := natsd.Start(natsd.Options{
			Config: conf, Listen: s.cfg.NATSListen, StoreDir: filepath.Join(s.cfg.DataDir, "nats"),
			ControlPlanePassword: cpPassword, AuthenticateAgent: api.AgentAuthenticator(s.pool), Logger: s.log,
		})
		if err != nil {
			return "", fmt.Errorf("embedded NATS on %s: %w", s.cfg.NATSListen, err)
		}
		s.nsrv = srv
		nc, err := nats.Connect(srv.ClientURL(), append(opts, nats.UserInfo(natsd.ControlPlaneUser, cpPassword))...)
		if err != nil {
			return "", err
		}
		s.nc = nc
		agentURL = srv.ClientURL()
	}
	if s.cfg.NATSAdvertise != "" {
		agentURL = s.cfg.NATSAdvertise
	}
	return agentURL, nil
}

func (s *system) serve(ctx context.Context) error {
	agentURL, err := s.connectNATS(ctx)
	if err != nil {
		return err
	}
	// An asynchronous publish whose acknowledgement never comes (the
	// outbox relay gave up on it) is dropped from the pending table after
	// this long, so such publishes cannot pile up.
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncTimeout(time.Minute))
	if err != nil {
		return err
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOpts{EventsMaxAge: s.cfg.EventsMaxAge, CommandsMaxAge: s.cfg.CommandTTL + time.Hour}); err != nil {
		return err
	}

	// Listeners are opened before any goroutine starts, so a busy port
	// fails the start cleanly.
	var mln net.Listener
	if s.cfg.MetricsListen != "" {
		if mln, err = net.Listen("tcp", s.cfg.MetricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", s.cfg.MetricsListen, err)
		}
		defer mln.Close()
	}
	g, gctx := errgroup.WithContext(ctx)
	// Every role writes control-plane events to the outbox; every process
	// relays it (one at a time leads).
	relay, err := outbox.New(outbox.Relay{Pool: s.pool, JS: js, Logger: s.log.With("role", "outbox")})
	if err != nil {
		return err
	}
	s.relay = relay
	g.Go(func() error { return relay.Run(gctx) })
	if s.cfg.hasRole("projector") {
		g.Go(func() error {
			return projector.Run(gctx, projector.Opts{Pool: s.pool, JS: js, Logger: s.log.With("role", "projector")})
		})
		g.Go(func() error {
			return projector.Sweep(gctx, projector.SweeperOpts{Pool: s.pool, Outbox: relay, LostAfter: s.cfg.RunLostAfter,
				Logger: s.log.With("role", "sweeper")})
		})
	}
	if s.cfg.hasRole("projector") {
		g.Go(func() error {
			return audit.Run(gctx, audit.Opts{Pool: s.pool, JS: js, Logger: s.log.With("role", "audit")})
		})
	}
	met, err := metrics.New(metrics.Opts{Pool: s.pool, JS: js, OfflineAfter: s.cfg.OfflineAfter, Logger: s.log.With("role", "metrics")})
	if err != nil {
		return err
	}
	var v *vault.Vault
	var pol *egress.Policy
	var senders notify.Senders
	if s.cfg.hasRole("api") || s.cfg.hasRole("scheduler") || s.cfg.hasRole("notifier") {
		// The API, the scheduler, retention and the notifier open the
		// vault's secrets, and reach users' endpoints under one policy.
		if v, err = vault.LoadOrCreateKeys(masterKeysPath(s.cfg.DataDir), envKeys(s.getenv)); err != nil {
			return err
		}
		if pol, err = egress.New(s.cfg.AllowEndpoints); err != nil {
			return err
		}
		if len(s.cfg.AllowEndpoints) > 0 {
			s.log.Info("storage and webhook endpoints allowed beyond public addresses", "allow", strings.Join(s.cfg.AllowEndpoints, ","))
		}
		senders.Webhook = &notify.WebhookSender{Client: pol.HTTPClient()}
		smtp, err := s.cfg.SMTP()
		if err != nil {
			return err
		}
		if smtp.Host != "" {
			senders.Email = &notify.EmailSender{SMTP: smtp}
			s.log.Info("email notifications through SMTP", "server", smtp.String(), "from", smtp.From)
		}
	}
	if s.cfg.hasRole("notifier") {
		// Created before anything is served: a new notifier consumer
		// starts with the events published after it exists.
		if _, err := events.EnsureLiveConsumer(ctx, js, events.NotifierConsumer, events.NotifierEvents...); err != nil {
			return err
		}
		disp, err := hnotify.NewDispatcher(hnotify.DispatcherOpts{Pool: s.pool, Secrets: secrets.Box{V: v}, Sender: senders,
			Metrics: met.CountAttempt, Logger: s.log.With("role", "notifier")})
		if err != nil {
			return err
		}
		g.Go(func() error { return disp.Run(gctx) })
		g.Go(func() error {
			return hnotify.Run(gctx, hnotify.Opts{Pool: s.pool, JS: js, PublicURL: s.cfg.PublicURL, Email: senders.Email != nil,
				Kick: disp.Kick, Logger: s.log.With("role", "notifier")})
		})
		alerts, err := hnotify.NewAlertChecker(hnotify.AlertCheckerOpts{Pool: s.pool, Outbox: relay, Interval: s.cfg.AlertInterval,
			Logger: s.log.With("role", "alerts")})
		if err != nil {
			return err
		}
		g.Go(func() error { return alerts.Run(gctx) })
	}
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", met.Handler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := msrv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return msrv.Close()
		})
		s.log.Info("metrics served", "url", "http://"+mln.Addr().String()+"/metrics")
	}
	var a *api.API
	var svc *runs.Service
	if s.cfg.hasRole("api") || s.cfg.hasRole("scheduler") {
		// The API, the scheduler and retention start and delete runs
		// through one service.
		gc := s.cfg.Google
		svc, err = runs.New(runs.Config{Pool: s.pool, Secrets: secrets.Box{V: v}, NC: s.nc, JS: js, Outbox: relay, Egress: pol,
			Drive:      runs.DriveApp{ClientID: gc.ClientID, ClientSecret: gc.ClientSecret, Endpoint: gc.DriveEndpoint, TokenURL: gc.TokenURL},
			CommandTTL: s.cfg.CommandTTL, OfflineAfter: s.cfg.OfflineAfter, QueueLimit: s.cfg.QueueLimit,
			Logger: s.log.With("role", "runs")})
		if err != nil {
			return err
		}
		if a, err = s.newAPI(js, agentURL, v, svc, pol, senders); err != nil {
			return err
		}
		g.Go(func() error { s.logRefusedStorages(gctx, svc); return nil })
	}
	if s.cfg.hasRole("scheduler") {
		sch, err := scheduler.New(scheduler.Opts{Pool: s.pool, Runs: svc, Outbox: relay, Grace: s.cfg.ScheduleGrace,
			OfflineAfter: s.cfg.OfflineAfter, Logger: s.log.With("role", "scheduler")})
		if err != nil {
			return err
		}
		g.Go(func() error { return sch.Run(gctx) })
		ver, err := scheduler.NewVerifier(scheduler.VerifierOpts{Pool: s.pool, Runs: svc, Logger: s.log.With("role", "scheduler")})
		if err != nil {
			return err
		}
		g.Go(func() error { return ver.Run(gctx) })
		g.Go(func() error {
			return expiry.Run(gctx, expiry.Opts{Pool: s.pool, Outbox: relay, Deleter: svc, Interval: s.cfg.RetentionInterval,
				StaleAfter: s.cfg.CommandTTL + time.Hour, Logger: s.log.With("role", "retention")})
		})
	}
	if s.cfg.hasRole("api") {
		ln, err := net.Listen("tcp", s.cfg.HTTP)
		if err != nil {
			return fmt.Errorf("--http %s: %w", s.cfg.HTTP, err)
		}
		dash, err := web.New(web.Opts{API: a, Logger: s.log.With("role", "web"), SessionKey: s.sessionKey,
			SecureCookies: strings.HasPrefix(s.cfg.PublicURL, "https://")})
		if err != nil {
			return err
		}
		var handler http.Handler = web.Mount(a, dash)
		if s.cfg.MetricsToken != "" && s.cfg.MetricsListen == "" {
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", metrics.Protected(s.cfg.MetricsToken, met.Handler()))
			mux.Handle("/", handler)
			handler = mux
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
		srv.RegisterOnShutdown(a.CloseStreams)
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			shCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return srv.Shutdown(shCtx)
		})
		s.log.Info("RahatBack is up", "url", "http://"+ln.Addr().String(), "version", version.String())
		if s.up {
			g.Go(func() error { return s.runLocalAgent(gctx, a) })
		}
	}
	if s.cluster != nil {
		g.Go(func() error {
			select {
			case <-s.cluster.Done():
				return fmt.Errorf("private PostgreSQL stopped unexpectedly; see %s", s.cluster.LogPath())
			case <-gctx.Done():
				return nil
			}
		})
	}
	err = g.Wait()
	s.log.Info("shutting down")
	return err
}

func (s *system) newAPI(js jetstream.JetStream, agentURL string, v *vault.Vault, svc *runs.Service, pol *egress.Policy, senders notify.Senders) (*api.API, error) {
	key, err := auth.LoadOrCreateKey(filepath.Join(s.cfg.DataDir, "jwt.key"), s.getenv("RAHATBACK_JWT_SECRET"))
	if err != nil {
		return nil, err
	}
	issuer, err := auth.NewIssuer(key, 0)
	if err != nil {
		return nil, err
	}
	// Dashboard session cookies are sealed with a key derived from the
	// token-signing key: they survive restarts and every API replica
	// with the same key accepts them.
	if s.sessionKey, err = hkdf.Key(sha256.New, key, nil, "rahatback web session v1", 32); err != nil {
		return nil, err
	}
	s.registered = make(chan uuid.UUID, 1)
	opts := api.Opts{
		Pool: s.pool, NC: s.nc, JS: js, Outbox: s.relay, Runs: svc, Vault: v, Issuer: issuer, Logger: s.log.With("role", "api"),
		AgentNATSURL: agentURL, PublicURL: s.cfg.PublicURL, OfflineAfter: s.cfg.OfflineAfter,
		CommandTTL: s.cfg.CommandTTL, AgentQueueLimit: s.cfg.QueueLimit, Google: s.cfg.Google, Egress: pol, Notify: senders,
		UserRegistered: func(_ context.Context, id uuid.UUID) {
			select {
			case s.registered <- id:
			default:
			}
		},
	}
	if s.nsrv != nil {
		opts.DisconnectAgent = s.nsrv.DisconnectAgent
	}
	return api.New(opts)
}

// runLocalAgent runs the agent embedded in `up`. Its state lives in
// <data-dir>/agent; at first start it enrolls to the first registered user,
// waiting for one if nobody has registered yet.
func (s *system) runLocalAgent(ctx context.Context, a *api.API) error {
	dir := filepath.Join(s.cfg.DataDir, "agent")
	log := s.log.With("role", "local-agent")
	st, err := agent.LoadState(dir)
	if errors.Is(err, agent.ErrNotEnrolled) {
		st, err = s.enrollLocalAgent(ctx, a, dir, log)
	}
	if err != nil || st == nil {
		return err
	}
	err = agent.Run(ctx, agent.RunOpts{State: st, Logger: log, LocalStorageDir: filepath.Join(dir, "backups"), Heartbeat: s.cfg.Heartbeat, StateDir: dir,
		MSSQL: s.cfg.MSSQL})
	if err != nil {
		// The control plane keeps serving; the local agent is one agent among others.
		log.Error("local agent stopped", "err", err)
	}
	return nil
}

func (s *system) enrollLocalAgent(ctx context.Context, a *api.API, dir string, log *slog.Logger) (*agent.State, error) {
	var owner uuid.UUID
	u, err := db.New().FirstUser(ctx, s.pool)
	switch {
	case err == nil:
		owner = u.ID
	case errors.Is(db.MapErr(err), db.ErrNotFound):
		log.Info("local agent waiting for the first user to register")
		select {
		case owner = <-s.registered:
		case <-ctx.Done():
			return nil, nil
		}
	default:
		return nil, err
	}
	token, _, err := a.CreateEnrollmentToken(ctx, owner)
	if err != nil {
		return nil, err
	}
	id, err := sealed.NewIdentity()
	if err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	resp, err := a.Enroll(ctx, api.EnrollRequest{
		Token: token, Name: "local (" + hostname + ")", Hostname: hostname,
		OS: runtime.GOOS + "/" + runtime.GOARCH, Version: version.String(), PublicKey: id.Recipient().String(),
	}, true)
	if err != nil {
		return nil, fmt.Errorf("enrolling the local agent: %w", err)
	}
	st := &agent.State{AgentID: resp.AgentID.String(), Server: s.cfg.PublicURL, NATSURL: resp.NATSURL,
		NATSUser: resp.NATSUser, NATSPassword: resp.NATSPassword, Identity: id.String()}
	if err := agent.SaveState(dir, st); err != nil {
		return nil, err
	}
	log.Info("local agent enrolled", "agentId", st.AgentID, "userId", owner)
	return st, nil
}

// logRefusedStorages warns, once at start, about saved storages whose
// endpoints --allow-endpoint does not (or no longer) allow.
func (s *system) logRefusedStorages(ctx context.Context, svc *runs.Service) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	refused, err := svc.RefusedStorages(ctx)
	if err != nil {
		s.log.Warn("checking saved storage endpoints failed", "err", err)
		return
	}
	for _, r := range refused {
		s.log.Warn("a saved storage's endpoint is not allowed: the control plane will refuse to test it and to download, delete or purge its backups",
			"storageId", r.ID, "userId", r.UserID, "name", r.Name, "reason", r.Reason)
	}
}
