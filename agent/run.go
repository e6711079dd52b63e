package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/postgresql"
	"github.com/rahatback/rahatback/events"
	agenthandlers "github.com/rahatback/rahatback/handlers/agent"
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
}

// DefaultEngines are the engines this build of the agent supports.
func DefaultEngines() engines.Registry {
	return engines.Registry{engines.PostgreSQL: postgresql.Engine{}}
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
	if o.Engines == nil {
		o.Engines = DefaultEngines()
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
		h:   &agenthandlers.Handlers{Identity: id, Engines: o.Engines, Logger: log},
		sem: make(chan struct{}, maxConcurrentRequests),
	}
	a.hostname, _ = os.Hostname()

	sub, err := nc.Subscribe(events.RPCSubject(o.State.AgentID, events.RPCDBTest), func(m *nats.Msg) {
		a.serve(ctx, m, a.dbtest)
	})
	if err != nil {
		return fmt.Errorf("agent: subscribe: %w", err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := a.presence(ctx, events.PhaseOnline); err != nil {
		return err
	}
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
