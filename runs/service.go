package runs

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/secrets"
)

// DriveApp is the control plane's Google OAuth client, which Drive
// storages use; empty when Drive is not configured.
type DriveApp struct {
	ClientID, ClientSecret string
	// Endpoint and TokenURL override Google's own (tests point them at a fake).
	Endpoint, TokenURL string
}

// Config configures New. Zero durations and limits take the defaults named.
type Config struct {
	Pool    *pgxpool.Pool       // required
	Secrets secrets.Box         // required
	NC      *nats.Conn          // required: requests to agents
	JS      jetstream.JetStream // required: agents' queues
	// Outbox is the relay told when messages were written; nil leaves them
	// to whichever relay polls the outbox.
	Outbox *outbox.Relay
	Drive  DriveApp
	// Egress limits the addresses the control plane connects to for a
	// user's cloud storage (test, download, delete, retention purges);
	// nil allows public addresses only.
	Egress *egress.Policy
	Logger *slog.Logger // default slog.Default()

	CommandTTL   time.Duration // how long a command stays runnable; default 24 h
	RPCTimeout   time.Duration // requests to agents; default events.DefaultRPCTimeout
	OfflineAfter time.Duration // an agent is offline this long after its last presence; default 30 s
	// QueueLimit is how many commands may wait for one agent; default 20.
	QueueLimit int
}

// Service starts, deletes and reads backups, restores and verifications:
// the rules of a run that the API, the scheduler and the retention worker
// share.
type Service struct {
	c    Config
	q    *db.Queries
	http *http.Client // under c.Egress: every S3 request the control plane makes
}

// New validates c and builds the Service.
func New(c Config) (*Service, error) {
	if c.Pool == nil || c.Secrets.V == nil || c.NC == nil || c.JS == nil {
		return nil, errors.New("runs: Pool, Secrets, NC and JS are required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CommandTTL == 0 {
		c.CommandTTL = 24 * time.Hour
	}
	if c.RPCTimeout == 0 {
		c.RPCTimeout = events.DefaultRPCTimeout
	}
	if c.OfflineAfter == 0 {
		c.OfflineAfter = 30 * time.Second
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = 20
	}
	return &Service{c: c, q: db.New(), http: c.Egress.HTTPClient()}, nil
}

// RefusedStorage is a saved S3 storage whose endpoint the egress policy
// refuses: the control plane cannot test it, nor download, delete or
// purge the backups it holds (its agent can still write to it).
type RefusedStorage struct {
	ID, UserID uuid.UUID
	Name       string
	Reason     string
}

// RefusedStorages lists the saved storages whose endpoints the policy
// refuses now (saved before it, or under a wider allowance), for the
// operator's log at start.
func (s *Service) RefusedStorages(ctx context.Context) ([]RefusedStorage, error) {
	rows, err := s.q.StorageEndpoints(ctx, s.c.Pool)
	if err != nil {
		return nil, err
	}
	var out []RefusedStorage
	for _, r := range rows {
		if err := s.CheckEndpoint(ctx, *r.S3Endpoint); err != nil {
			out = append(out, RefusedStorage{ID: r.ID, UserID: r.UserID, Name: r.Name, Reason: err.Error()})
		}
	}
	return out, nil
}

// CheckEndpoint checks, before any connection, that the control plane may
// reach the storage endpoint rawURL: nil, or an *egress.Refused whose text
// says why and how an operator allows it.
func (s *Service) CheckEndpoint(ctx context.Context, rawURL string) error {
	return s.c.Egress.CheckURL(ctx, rawURL)
}

// emit is projector.Emit in a transaction of its own, then a kick of the
// relay.
func (s *Service) emit(ctx context.Context, agent uuid.UUID, kind, phase, id string, payload any) error {
	err := db.WithTx(ctx, s.c.Pool, func(tx pgx.Tx) error { return projector.Emit(ctx, tx, agent, kind, phase, id, payload) })
	if err == nil {
		s.c.Outbox.Kick()
	}
	return err
}

// Command is a command to agent's work queue with Nats-Msg-Id msgID (a
// retried send is stored once), for projector.Emit.
func Command(agent uuid.UUID, kind, msgID string, payload any) (outbox.Message, error) {
	return outbox.JSON(events.CommandSubject(agent.String(), kind), msgID, payload)
}

// deadline is when a command sent now goes stale.
func (s *Service) deadline() events.Deadline {
	return events.Deadline{Deadline: time.Now().Add(s.c.CommandTTL).UTC()}
}

func (s *Service) offlineSecs() float64 { return s.c.OfflineAfter.Seconds() }

// Agents is user's agents in their order, with their presence.
func (s *Service) Agents(ctx context.Context, user uuid.UUID) ([]Agent, error) {
	rows, err := s.q.ListAgents(ctx, s.c.Pool, db.ListAgentsParams{UserID: user, OfflineAfterSecs: s.offlineSecs()})
	if err != nil {
		return nil, err
	}
	agents := make([]Agent, len(rows))
	for i, r := range rows {
		agents[i] = Agent{ID: r.ID, Name: r.Name, Online: r.Online}
	}
	return agents, nil
}

// QueueFull reports whether agent has QueueLimit commands waiting or
// running already: in its JetStream queue, or still in the outbox. When
// JetStream cannot tell (the broker is down), the outbox's count alone
// decides. A message a relay has just published is in both until the
// relay deletes its row (milliseconds; Flush's rows are left out of the
// outbox's count): a full count that includes outbox rows is taken again,
// up to 1 s, before it is believed.
func (s *Service) QueueFull(ctx context.Context, agent uuid.UUID) (bool, error) {
	backoff := 25 * time.Millisecond
	for waited := time.Duration(0); ; waited += backoff {
		full, waiting, err := s.queueCount(ctx, agent)
		if err != nil || !full || waiting == 0 || waited >= time.Second {
			return full, err
		}
		select {
		case <-ctx.Done():
			return full, nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// queueCount is one count of QueueFull, with the outbox's part.
func (s *Service) queueCount(ctx context.Context, agent uuid.UUID) (full bool, waiting int64, err error) {
	prefix := events.CommandSubject(agent.String(), "")
	published := s.c.Outbox.Deleting(prefix)
	if published == nil {
		published = []int64{}
	}
	waiting, err = s.q.OutboxWaiting(ctx, s.c.Pool, db.OutboxWaitingParams{Prefix: prefix, Published: published})
	if err != nil {
		return false, 0, err
	}
	// A broker that does not answer soon is taken as down.
	jctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var queued uint64
	if cons, err := s.c.JS.Consumer(jctx, events.StreamCommands, events.AgentConsumer(agent.String())); err != nil {
		s.c.Logger.Warn("agent queue not read; counting the outbox only", "agentId", agent, "err", err)
	} else if info, err := cons.Info(jctx); err != nil {
		s.c.Logger.Warn("agent queue not read; counting the outbox only", "agentId", agent, "err", err)
	} else {
		queued = info.NumPending + uint64(info.NumAckPending)
	}
	return queued+uint64(waiting) >= uint64(s.c.QueueLimit), waiting, nil
}

// errQueueFull answers a command for an agent with too many waiting.
var errQueueFull = fail(Busy, "the agent already has too many commands waiting; try again when it has caught up")

// checkQueue is errQueueFull when agent's queue is full.
func (s *Service) checkQueue(ctx context.Context, agent uuid.UUID) error {
	full, err := s.QueueFull(ctx, agent)
	if err == nil && full {
		err = errQueueFull
	}
	return err
}

// RPCError is err of a request to an agent as the user reads it: offline
// (Unavailable) when no agent listens, Timeout when it did not answer,
// err itself otherwise. who names the agent in the message.
func (s *Service) RPCError(err error, who string) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fail(Unavailable, "%s is not connected: start it (rahatback-agent run) and try again", who)
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fail(Timeout, "%s did not answer within %s", who, s.c.RPCTimeout)
	}
	return err
}

// mapNotFound is err, with a row that is not there as NotFound of what.
func mapNotFound(err error, what, field string) error {
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return notFound(what, field)
	}
	return err
}
