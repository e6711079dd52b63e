package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/blobendpoint"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mongodb"
	"github.com/rahatback/rahatback/engines/mssql"
	"github.com/rahatback/rahatback/engines/mysql"
	"github.com/rahatback/rahatback/engines/postgresql"
	"github.com/rahatback/rahatback/events"
	agenthandlers "github.com/rahatback/rahatback/handlers/agent"
	"github.com/rahatback/rahatback/storage"
	"github.com/rahatback/rahatback/transfer"
	"github.com/rahatback/rahatback/version"
)

// DefaultHeartbeat is how often a running agent reports it is alive.
const DefaultHeartbeat = 10 * time.Second

// maxConcurrentRequests bounds request handlers running at once.
const maxConcurrentRequests = 8

// RunOpts configure Run.
type RunOpts struct {
	State  *State       // required
	Logger *slog.Logger // default slog.Default()
	// Heartbeat is the presence interval; default DefaultHeartbeat.
	Heartbeat time.Duration
	// Engines the agent supports; default DefaultEngines().
	Engines engines.Registry
	// NATSOptions are extra connection options (tests).
	NATSOptions []nats.Option
	// LocalStorageDir holds backups of jobs with storageType local; required.
	LocalStorageDir string
	// StateDir, when set, keeps the journal of uploads to remote storage
	// (StateDir/uploads), so a killed agent aborts them at its next start.
	StateDir string
	// RuntimeDir holds short-lived secret files (passfiles); it is emptied
	// at start. Default <tmp>/rahatback-agent-<agent id>.
	RuntimeDir string
	// Commands is how many commands (backup, restore, verify) run at once;
	// default 2.
	Commands int
	// MSSQL says how SQL Server's native backups reach the agent (see
	// MSSQLOpts); zero: SQL Server databases can only be tested.
	MSSQL MSSQLOpts
}

// MSSQLOpts configure the SQL Server engine: a blob endpoint served by the
// agent (Endpoint, Listen, CertFile, KeyFile: backups TO URL) or a
// directory shared with the server (DiskDir: TO DISK).
type MSSQLOpts struct {
	// Endpoint is the https URL SQL Server reaches the agent's endpoint
	// at, e.g. https://backup-agent.example.com (a host name, not an IP; 443 is
	// the port SQL Server is reported to accept; its host name must be
	// in the certificate).
	Endpoint string
	// Listen is where the endpoint listens, e.g. :443.
	Listen string
	// CertFile and KeyFile are its PEM certificate (a chain SQL Server's
	// host trusts) and key; they are reloaded when they change.
	CertFile, KeyFile string
	// DiskDir is the shared directory of TO DISK mode.
	DiskDir string
}

// MSSQLOptsFromEnv reads MSSQLOpts from RAHATBACK_MSSQL_ENDPOINT,
// RAHATBACK_MSSQL_LISTEN, RAHATBACK_MSSQL_CERT, RAHATBACK_MSSQL_KEY and
// RAHATBACK_MSSQL_DISK_DIR (unset: empty).
func MSSQLOptsFromEnv(getenv func(string) string) MSSQLOpts {
	return MSSQLOpts{Endpoint: getenv("RAHATBACK_MSSQL_ENDPOINT"), Listen: getenv("RAHATBACK_MSSQL_LISTEN"),
		CertFile: getenv("RAHATBACK_MSSQL_CERT"), KeyFile: getenv("RAHATBACK_MSSQL_KEY"), DiskDir: getenv("RAHATBACK_MSSQL_DISK_DIR")}
}

// endpoint reports whether a blob endpoint is configured.
func (o MSSQLOpts) endpoint() bool { return o.Endpoint != "" || o.Listen != "" }

// validate checks that a blob endpoint has all it needs.
func (o MSSQLOpts) validate() error {
	if !o.endpoint() {
		return nil
	}
	u, err := url.Parse(o.Endpoint)
	switch {
	case o.Endpoint == "" || o.Listen == "" || o.CertFile == "" || o.KeyFile == "":
		return errors.New("agent: a SQL Server blob endpoint needs --mssql-endpoint, --mssql-listen, --mssql-cert and --mssql-key")
	case err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "":
		return fmt.Errorf("agent: --mssql-endpoint %q is not an https://host[:port] URL (SQL Server only writes to https)", o.Endpoint)
	case net.ParseIP(strings.Trim(u.Hostname(), "[]")) != nil:
		return fmt.Errorf("agent: --mssql-endpoint %q names an IP address: SQL Server takes a backup URL with a host name only (give the agent a name its host resolves, e.g. in its hosts file, and a certificate for it)", o.Endpoint)
	}
	return nil
}

// warnings are settings SQL Server is reported to refuse, which the agent
// accepts (none has been tried against a real server here).
func (o MSSQLOpts) warnings() []string {
	if u, err := url.Parse(o.Endpoint); err == nil && u.Port() != "" && u.Port() != "443" {
		return []string{"--mssql-endpoint uses port " + u.Port() + ": SQL Server is reported to reach backup URLs on 443 only; if BACKUP … TO URL fails with error 3078, serve the endpoint on 443"}
	}
	return nil
}

// DefaultEngines are the engines this build of the agent supports; their
// short-lived secret files go to runtimeDir. sqlServer is the SQL Server
// engine as configured (nil: one that can only test connections).
func DefaultEngines(runtimeDir string, sqlServer *mssql.Engine) engines.Registry {
	if sqlServer == nil {
		sqlServer = mssql.New(mssql.Options{})
	}
	return engines.NewRegistry(postgresql.Engine{PassDir: runtimeDir}, mysql.Engine{OptionDir: runtimeDir},
		mongodb.Engine{ToolVersion: "rahatback " + version.String()}, sqlServer)
}

func journalDir(stateDir string) string {
	if stateDir == "" {
		return ""
	}
	return filepath.Join(stateDir, "uploads")
}

// prepareRuntimeDir empties and recreates (0700) the directory for the
// agent's short-lived secret files: whatever a killed run left is removed.
func prepareRuntimeDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o700)
}

// Run connects to NATS with the agent's credentials, announces itself online,
// heartbeats and serves requests until ctx ends; then it announces itself
// offline and disconnects. It reconnects by itself after network failures
// and returns an error when the server rejects its credentials (revoked).
func Run(ctx context.Context, o RunOpts) error {
	if o.State == nil {
		return errors.New("agent: State is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.RuntimeDir == "" {
		o.RuntimeDir = filepath.Join(os.TempDir(), "rahatback-agent-"+o.State.AgentID)
	}
	if err := prepareRuntimeDir(o.RuntimeDir); err != nil {
		return fmt.Errorf("agent: runtime dir: %w", err)
	}
	defer os.RemoveAll(o.RuntimeDir)
	if o.Engines == nil {
		if err := o.MSSQL.validate(); err != nil {
			return err
		}
		mo := mssql.Options{Endpoint: o.MSSQL.Endpoint, DiskDir: o.MSSQL.DiskDir, Logger: o.Logger.With("engine", "mssql")}
		if o.MSSQL.endpoint() {
			hub, err := blobendpoint.NewHub(blobendpoint.HubOptions{Listen: o.MSSQL.Listen, CertFile: o.MSSQL.CertFile,
				KeyFile: o.MSSQL.KeyFile, Logger: o.Logger.With("component", "mssql-endpoint")})
			if err != nil {
				return fmt.Errorf("agent: SQL Server blob endpoint: %w", err)
			}
			defer hub.Close()
			mo.Hub = hub
			o.Logger.Info("SQL Server blob endpoint listening", "addr", hub.Addr().String(), "url", o.MSSQL.Endpoint)
			for _, w := range o.MSSQL.warnings() {
				o.Logger.Warn(w)
			}
		}
		o.Engines = DefaultEngines(o.RuntimeDir, mssql.New(mo))
	}
	if o.Commands == 0 {
		o.Commands = 2
	}
	if o.LocalStorageDir == "" {
		return errors.New("agent: LocalStorageDir is required")
	}
	local, err := storage.NewLocal(o.LocalStorageDir)
	if err != nil {
		return fmt.Errorf("agent: local storage: %w", err)
	}
	if n, err := local.CleanPartials(); err != nil {
		return fmt.Errorf("agent: cleaning local storage: %w", err)
	} else if n > 0 {
		o.Logger.Info("removed partial backups left by an interrupted run", "count", n, "dir", o.LocalStorageDir)
	}
	id, err := o.State.ParseIdentity()
	if err != nil {
		return err
	}
	log := o.Logger.With("agentId", o.State.AgentID)
	authFailed := make(chan error, 1)
	opts := append([]nats.Option{
		nats.Name("rahatback-agent " + o.State.AgentID),
		nats.UserInfo(o.State.NATSUser, o.State.NATSPassword),
		nats.CustomInboxPrefix(events.AgentInboxPrefix(o.State.AgentID)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(2 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("reconnected to NATS") }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthRevoked) {
				select {
				case authFailed <- err:
				default:
				}
			}
			log.Warn("NATS error", "err", err)
		}),
	}, o.NATSOptions...)
	nc, err := nats.Connect(o.State.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("agent: connecting to %s: %w", o.State.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	a := &runner{
		state: o.State, js: js, log: log,
		h:   &agenthandlers.Handlers{Identity: id, Engines: o.Engines, Logger: log, Local: local, JournalDir: journalDir(o.StateDir)},
		sem: make(chan struct{}, maxConcurrentRequests),
	}
	a.hostname, _ = os.Hostname()
	if n, err := a.h.RecoverUploads(ctx); err != nil {
		log.Warn("cleaning interrupted uploads", "err", err)
	} else if n > 0 {
		log.Info("aborted uploads left by an interrupted run", "count", n)
	}
	if n, err := a.h.RecoverChunked(ctx); err != nil {
		log.Warn("cleaning interrupted chunked backups", "err", err)
	} else if n > 0 {
		log.Info("deleted what interrupted chunked backups stored", "count", n)
	}
	if n, err := a.h.RecoverScratch(ctx); err != nil {
		log.Warn("dropping scratch databases of interrupted verifications", "err", err)
	} else if n > 0 {
		log.Info("dropped scratch databases left by an interrupted verification", "count", n)
	}

	sub, err := nc.Subscribe(events.RPCSubject(o.State.AgentID, events.RPCDBTest), func(m *nats.Msg) {
		a.serve(ctx, m, a.dbtest)
	})
	if err != nil {
		return fmt.Errorf("agent: subscribe: %w", err)
	}
	delSub, err := nc.Subscribe(events.RPCSubject(o.State.AgentID, events.RPCDelete), func(m *nats.Msg) {
		a.serve(ctx, m, a.deleteObject)
	})
	if err != nil {
		return fmt.Errorf("agent: subscribe: %w", err)
	}
	defer delSub.Unsubscribe()
	xferCtx, stopXfer := context.WithCancel(ctx)
	defer stopXfer()
	xferDone := make(chan error, 1)
	go func() {
		xferDone <- transfer.Serve(xferCtx, nc, o.State.AgentID, func(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
			obj, err := local.Stat(ctx, key)
			if err == nil {
				var r io.ReadCloser
				if r, err = local.Get(ctx, key, offset); err == nil {
					return r, obj.Size, nil
				}
			}
			if errors.Is(err, storage.ErrNotFound) {
				err = fmt.Errorf("%w: %w", transfer.ErrNotFound, err)
			}
			return nil, 0, err
		}, log)
	}()
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	cons, err := js.Consumer(ctx, events.StreamCommands, events.AgentConsumer(o.State.AgentID))
	if err != nil {
		return fmt.Errorf("agent: its command consumer is missing (revoked or never enrolled?): %w", err)
	}
	if err := a.presence(ctx, events.PhaseOnline); err != nil {
		return err
	}
	cmdCtx, stopCommands := context.WithCancel(ctx)
	defer stopCommands()
	cmdDone := make(chan struct{})
	go func() {
		defer close(cmdDone)
		a.consume(cmdCtx, cons, o.Commands)
	}()
	log.Info("agent online", "nats", o.State.NATSURL)

	tick := time.NewTicker(o.Heartbeat)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-authFailed:
			runErr = fmt.Errorf("agent: NATS rejected this agent's credentials (revoked?): %w", err)
			break loop
		case <-tick.C:
			if err := a.presence(ctx, events.PhaseHeartbeat); err != nil {
				log.Warn("heartbeat not delivered", "err", err)
			}
		}
	}
	_ = sub.Unsubscribe()
	stopCommands()
	<-cmdDone
	stopXfer()
	<-xferDone
	a.wg.Wait()
	if runErr == nil {
		offCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		if err := a.presence(offCtx, events.PhaseOffline); err != nil {
			log.Warn("offline event not delivered", "err", err)
		}
		cancel()
	}
	_ = nc.Drain()
	log.Info("agent stopped")
	return runErr
}

type runner struct {
	state    *State
	js       jetstream.JetStream
	log      *slog.Logger
	h        *agenthandlers.Handlers
	hostname string
	sem      chan struct{}
	wg       sync.WaitGroup
}

func (a *runner) presence(ctx context.Context, phase string) error {
	now := time.Now().UTC()
	msgID := a.state.AgentID + ":" + phase + ":" + strconv.FormatInt(now.UnixNano(), 10)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return events.Publish(ctx, a.js, events.EventSubject(a.state.AgentID, events.KindAgent, phase), msgID, events.AgentPresence{
		V: events.Version, ID: msgID, AgentID: a.state.AgentID, Hostname: a.hostname,
		OS: runtime.GOOS + "/" + runtime.GOARCH, Version: version.String(), At: now,
	})
}

// serve runs fn for a request in its own goroutine (at most
// maxConcurrentRequests at once) and sends its reply.
func (a *runner) serve(ctx context.Context, m *nats.Msg, fn func(context.Context, []byte) (any, error)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case a.sem <- struct{}{}:
			defer func() { <-a.sem }()
		case <-ctx.Done():
			return
		}
		reply, err := fn(ctx, m.Data)
		if err != nil {
			a.log.Warn("bad request", "subject", m.Subject, "err", err)
			return
		}
		data, err := json.Marshal(reply)
		if err != nil {
			a.log.Error("encoding reply", "err", err)
			return
		}
		if err := m.Respond(data); err != nil {
			a.log.Warn("reply not sent", "subject", m.Subject, "err", err)
		}
	}()
}

func (a *runner) dbtest(ctx context.Context, data []byte) (any, error) {
	var req events.DBTestRequest
	if err := events.Decode(data, &req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, events.DefaultRPCTimeout-2*time.Second)
	defer cancel()
	return a.h.DBTest(ctx, req), nil
}

func (a *runner) deleteObject(ctx context.Context, data []byte) (any, error) {
	var req events.DeleteRequest
	if err := events.Decode(data, &req); err != nil {
		return nil, err
	}
	return a.h.Delete(ctx, req), nil
}

// errBadCommand marks a command that can never run (malformed).
var errBadCommand = errors.New("bad command")

// publish sends one of this agent's events. Its Nats-Msg-Id is prefixed
// with the agent's id: deduplication is stream-wide, so another agent must
// not be able to pre-empt this agent's event by publishing its id first.
func (a *runner) publish(ctx context.Context, kind, phase, msgID string, payload any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return events.Publish(ctx, a.js, events.EventSubject(a.state.AgentID, kind, phase), a.state.AgentID+":"+msgID, payload)
}

// consume pulls commands one at a time whenever one of n slots is free, so
// no command waits unacknowledged in a local buffer.
func (a *runner) consume(ctx context.Context, cons jetstream.Consumer, n int) {
	slots := make(chan struct{}, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msg, err := fetchOne(ctx, cons)
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("fetching commands", "err", err)
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				return
			}
			continue
		}
		got := msg != nil
		if got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				a.command(ctx, msg)
			}()
		}
		if !got {
			<-slots
		}
	}
}

// fetchOne waits up to five seconds, or until ctx ends, for one command;
// it returns nil when none came.
func fetchOne(ctx context.Context, cons jetstream.Consumer) (jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
	if err != nil {
		return nil, err
	}
	for msg := range batch.Messages() {
		return msg, nil
	}
	if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, err
	}
	return nil, nil
}

// command runs one command and acks it once its outcome event is
// published. A backup or restore delivered a second time was interrupted
// (the agent stopped mid-run): it is reported failed, not silently re-run.
func (a *runner) command(ctx context.Context, msg jetstream.Msg) {
	kind := events.CommandKind(a.state.AgentID, msg.Subject())
	meta, _ := msg.Metadata()
	redelivered := meta != nil && meta.NumDelivered > 1
	keepAlive := func() { _ = msg.InProgress() }
	// A command runs to its end even when the agent is asked to stop; the
	// work stops only when the process dies.
	ctx = context.WithoutCancel(ctx)
	var err error
	decode := func(v any) error {
		if derr := events.Decode(msg.Data(), v); derr != nil {
			return fmt.Errorf("%w: %v", errBadCommand, derr)
		}
		return nil
	}
	switch kind {
	case events.CommandBackup:
		var cmd events.BackupCommand
		if err = decode(&cmd); err != nil {
			break
		}
		if redelivered || cmd.Expired(time.Now()) {
			ev := events.BackupEvent{V: events.Version, ID: cmd.RunID + ":interrupted", RunID: cmd.RunID, At: time.Now().UTC(),
				Error: "the agent stopped during this backup; nothing was kept. Run it again"}
			if !redelivered {
				ev.ID, ev.Error = cmd.RunID+":stale", "not run: the agent received this backup after its deadline (it was offline or busy). Run it again"
			}
			err = a.publish(ctx, events.KindBackup, events.PhaseFailed, ev.ID, ev)
			break
		}
		err = a.h.Backup(ctx, cmd, a.publish, keepAlive)
	case events.CommandRestore:
		var cmd events.RestoreCommand
		if err = decode(&cmd); err != nil {
			break
		}
		if redelivered || cmd.Expired(time.Now()) {
			ev := events.RestoreEvent{V: events.Version, ID: cmd.RestoreID + ":interrupted", RestoreID: cmd.RestoreID, At: time.Now().UTC(),
				Error: "the agent stopped during this restore. A restore commits only once the whole backup has been read and matched its checksum, so the target is either as it was or holds the whole backup. Run it again"}
			if cmd.Target.Type == engines.MSSQL {
				ev.Error = fmt.Sprintf("the agent stopped during this restore. The target is as it was or holds the whole backup, unless the agent stopped during the swap: "+
					"on the server, a database named %[1]s_rahatback_new_… is a copy the restore did not finish (drop it), and %[1]s_rahatback_old_… is the previous database "+
					"(rename it back if %[1]s is missing). Run it again", cmd.Target.Database)
			}
			if !redelivered {
				ev.ID, ev.Error = cmd.RestoreID+":stale", "not run: the agent received this restore after its deadline (it was offline or busy); the target was not touched. Run it again"
			}
			err = a.publish(ctx, events.KindRestore, events.PhaseFailed, ev.ID, ev)
			break
		}
		err = a.h.Restore(ctx, cmd, a.publish, keepAlive)
	case events.CommandVerify:
		var cmd events.VerifyCommand
		if err = decode(&cmd); err != nil {
			break
		}
		if cmd.Expired(time.Now()) {
			ev := events.VerifyEvent{V: events.Version, ID: cmd.VerifyID + ":stale", VerifyID: cmd.VerifyID, BackupID: cmd.BackupID,
				Level: cmd.Level, At: time.Now().UTC(), Error: "not run: the agent received this verification after its deadline. Run it again"}
			err = a.publish(ctx, events.KindVerify, events.PhaseFailed, ev.ID, ev)
			break
		}
		err = a.h.Verify(ctx, cmd, a.publish, keepAlive)
	default:
		err = fmt.Errorf("%w: unknown command subject %q", errBadCommand, msg.Subject())
	}
	if err != nil {
		if errors.Is(err, errBadCommand) {
			a.log.Error("dropping bad command", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			return
		}
		a.log.Warn("command outcome not published; will retry", "subject", msg.Subject(), "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	_ = msg.Ack()
}
