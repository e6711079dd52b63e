// Package api is the REST API of SPEC §3 (chi). Handlers return errors;
// handle writes them in one place.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/rahatback/rahatback/auth"
	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/notify"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/secrets"
	"github.com/rahatback/rahatback/vault"
)

// Opts configures New. Zero durations and limits take the defaults named.
type Opts struct {
	Pool   *pgxpool.Pool       // required
	NC     *nats.Conn          // required
	JS     jetstream.JetStream // required
	Vault  *vault.Vault        // required
	Issuer *auth.Issuer        // required
	Logger *slog.Logger        // default slog.Default()
	// Outbox is the relay told when events and commands were written to
	// the outbox; nil leaves them to whichever relay polls it.
	Outbox *outbox.Relay
	// Runs starts, deletes and reads runs; default one built from these
	// options (Pool, Vault, NC, JS, Outbox, Google, the durations and
	// AgentQueueLimit).
	Runs *runs.Service

	// AgentNATSURL is the NATS URL enrolling agents are given; required.
	AgentNATSURL string
	// PublicURL is this API's URL as agents reach it, shown in the enroll
	// command; default http://127.0.0.1:8080.
	PublicURL string

	RefreshTTL    time.Duration // default 30 days
	EnrollmentTTL time.Duration // default 1 hour
	OfflineAfter  time.Duration // agent offline after this long without presence; default 30 s
	RPCTimeout    time.Duration // request/reply to agents; default events.DefaultRPCTimeout
	MaxBodyBytes  int64         // default 1 MiB
	// ScryptWorkFactor protects exported job keys (age scrypt, log2 of N);
	// default age's own (18).
	ScryptWorkFactor int
	// PasswordCost is the bcrypt cost of user passwords; default
	// auth.BcryptCost, at least 10.
	PasswordCost int

	// AuthRate and AuthBurst limit register and login per client IP; default
	// 10 per minute with a burst of 10.
	AuthRate  rate.Limit
	AuthBurst int
	// ActionRate and ActionBurst limit, per user, the requests that make an
	// agent work (test-connection, run, restore, verify); default 60 per
	// minute with a burst of 20.
	ActionRate  rate.Limit
	ActionBurst int
	// AgentQueueLimit is how many commands may wait for one agent; more
	// are refused with 429. Default 20.
	AgentQueueLimit int
	// CommandTTL is how long a command stays runnable; an agent that gets
	// it later reports it failed instead of running it. Default 24 hours.
	CommandTTL time.Duration

	// Google configures Google Drive storage; empty disables it.
	Google GoogleOpts
	// Egress is the addresses the control plane may reach for users:
	// webhook channels' URLs, and storage through the default Runs (Runs,
	// when set, has its own); nil allows public addresses only.
	Egress *egress.Policy
	// Notify sends channels' test notifications; default webhooks under
	// Egress and no email (its tests answer that SMTP is not configured).
	Notify notify.Senders

	// DisconnectAgent, when set, cuts the NATS connections of a revoked agent.
	DisconnectAgent func(agentID string)
	// UserRegistered, when set, is called after each registration commits.
	UserRegistered func(ctx context.Context, userID uuid.UUID)
}

func (o *Opts) validate() error {
	switch {
	case o.Pool == nil:
		return errors.New("api: Pool is required")
	case o.NC == nil || o.JS == nil:
		return errors.New("api: NC and JS are required")
	case o.Vault == nil:
		return errors.New("api: Vault is required")
	case o.Issuer == nil:
		return errors.New("api: Issuer is required")
	case o.AgentNATSURL == "":
		return errors.New("api: AgentNATSURL is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PublicURL == "" {
		o.PublicURL = "http://127.0.0.1:8080"
	}
	if o.RefreshTTL == 0 {
		o.RefreshTTL = 30 * 24 * time.Hour
	}
	if o.EnrollmentTTL == 0 {
		o.EnrollmentTTL = time.Hour
	}
	if o.OfflineAfter == 0 {
		o.OfflineAfter = 30 * time.Second
	}
	if o.RPCTimeout == 0 {
		o.RPCTimeout = events.DefaultRPCTimeout
	}
	if o.Google.RedirectURL == "" {
		o.Google.RedirectURL = strings.TrimRight(o.PublicURL, "/") + "/v1/cloud-storage/google/callback"
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.AuthRate == 0 {
		o.AuthRate = rate.Every(6 * time.Second)
	}
	if o.AuthBurst == 0 {
		o.AuthBurst = 10
	}
	if o.ActionRate == 0 {
		o.ActionRate = rate.Every(time.Second)
	}
	if o.ActionBurst == 0 {
		o.ActionBurst = 20
	}
	if o.AgentQueueLimit == 0 {
		o.AgentQueueLimit = 20
	}
	if o.CommandTTL == 0 {
		o.CommandTTL = 24 * time.Hour
	}
	if o.Notify.Webhook == nil {
		o.Notify.Webhook = &notify.WebhookSender{Client: o.Egress.HTTPClient()}
	}
	return nil
}

// API serves the REST API.
type API struct {
	opts    Opts
	runs    *runs.Service
	secrets secrets.Box
	pool    *pgxpool.Pool
	q       *db.Queries
	log     *slog.Logger
	maxBody int64
	limiter *ipLimiter
	actions *ipLimiter // keyed by user id
	pw      *auth.Passwords
	handler http.Handler
	// closing is closed by CloseStreams: event streams end.
	closing   chan struct{}
	closeOnce sync.Once
}

// CloseStreams ends every open event stream (GET /v1/events): call it
// when the server shuts down (http.Server.RegisterOnShutdown), since
// Shutdown waits for requests that never end by themselves.
func (a *API) CloseStreams() { a.closeOnce.Do(func() { close(a.closing) }) }

// New validates opts and builds the API.
func New(opts Opts) (*API, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	pw, err := auth.NewPasswords(opts.PasswordCost)
	if err != nil {
		return nil, err
	}
	svc := opts.Runs
	if svc == nil {
		g := opts.Google
		svc, err = runs.New(runs.Config{Pool: opts.Pool, Secrets: secrets.Box{V: opts.Vault}, NC: opts.NC, JS: opts.JS,
			Outbox: opts.Outbox, Logger: opts.Logger, Egress: opts.Egress,
			Drive:      runs.DriveApp{ClientID: g.ClientID, ClientSecret: g.ClientSecret, Endpoint: g.DriveEndpoint, TokenURL: g.TokenURL},
			CommandTTL: opts.CommandTTL, RPCTimeout: opts.RPCTimeout, OfflineAfter: opts.OfflineAfter, QueueLimit: opts.AgentQueueLimit})
		if err != nil {
			return nil, err
		}
	}
	a := &API{
		runs:    svc,
		secrets: secrets.Box{V: opts.Vault},
		pw:      pw,
		opts:    opts,
		pool:    opts.Pool,
		q:       db.New(),
		log:     opts.Logger,
		maxBody: opts.MaxBodyBytes,
		limiter: newIPLimiter(opts.AuthRate, opts.AuthBurst),
		actions: newIPLimiter(opts.ActionRate, opts.ActionBurst),
		closing: make(chan struct{}),
	}
	a.handler = a.routes()
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.handler.ServeHTTP(w, r) }

// routes is every route of the API, with its method and path.
func (a *API) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer)
	r.NotFound(a.handle(func(http.ResponseWriter, *http.Request) error { return notFound("route") }))
	r.MethodNotAllowed(a.handle(func(http.ResponseWriter, *http.Request) error {
		return errorf(http.StatusMethodNotAllowed, "method not allowed")
	}))

	r.Get("/healthz", a.handle(a.healthz))
	r.Get("/readyz", a.handle(a.readyz))

	r.Route("/v1", func(r chi.Router) {
		// audit (a.audited) records each state-changing request of a user
		// in the audit log, with its outcome.
		audit := a.audited
		r.With(a.rateLimited, audit("auth.register", "user")).Post("/auth/register", a.handle(a.register))
		r.With(a.rateLimited, audit("auth.login", "user")).Post("/auth/login", a.handle(a.login))
		r.Post("/auth/refresh-tokens", a.handle(a.refreshTokens))
		r.With(audit("auth.logout", "user")).Post("/auth/logout", a.handle(a.logout))
		r.With(audit("agent.enroll", "agent")).Post("/agents/enroll", a.handle(a.enrollAgent))
		// Google sends the browser here; the state identifies the user.
		r.With(audit("storage.create", "storage")).Get("/cloud-storage/google/callback", a.handle(a.googleCallback))

		r.Group(func(r chi.Router) {
			r.Use(a.authenticated)
			r.Get("/auth/me", a.handle(a.me))
			r.Get("/events", a.handle(a.streamEvents))

			r.Get("/agents", a.handle(a.listAgents))
			r.With(audit("agent.enrollment_token", "agent")).Post("/agents/enrollment-tokens", a.handle(a.createEnrollmentToken))
			r.With(audit("agent.revoke", "agent")).Delete("/agents/{id}", a.handle(a.revokeAgent))

			r.With(a.userRateLimited).Post("/databases/test-connection", a.handle(a.testConnection))
			r.Get("/databases", a.handle(a.listDatabases))
			r.With(audit("database.create", "database")).Post("/databases", a.handle(a.createDatabase))
			r.Get("/databases/{id}", a.handle(a.getDatabase))
			r.With(audit("database.update", "database")).Patch("/databases/{id}", a.handle(a.updateDatabase))
			r.With(audit("database.delete", "database")).Delete("/databases/{id}", a.handle(a.deleteDatabase))

			r.Get("/cloud-storage", a.handle(a.listCloudStorage))
			r.With(audit("storage.create", "storage")).Post("/cloud-storage", a.handle(a.createCloudStorage))
			r.With(a.userRateLimited).Post("/cloud-storage/test", a.handle(a.testCloudStorage))
			r.Get("/cloud-storage/google/auth-url", a.handle(a.googleAuthURL))
			r.Get("/cloud-storage/{id}", a.handle(a.getCloudStorage))
			r.With(audit("storage.update", "storage")).Patch("/cloud-storage/{id}", a.handle(a.updateCloudStorage))
			r.With(audit("storage.delete", "storage")).Delete("/cloud-storage/{id}", a.handle(a.deleteCloudStorage))

			r.Get("/backups/jobs", a.handle(a.listJobs))
			r.With(audit("job.create", "job")).Post("/backups/jobs", a.handle(a.createJob))
			r.Get("/backups/jobs/{id}", a.handle(a.getJob))
			r.With(audit("job.update", "job")).Patch("/backups/jobs/{id}", a.handle(a.updateJob))
			r.With(audit("job.delete", "job")).Delete("/backups/jobs/{id}", a.handle(a.deleteJob))
			r.With(a.userRateLimited, audit("backup.run", "job")).Post("/backups/jobs/{id}/run", a.handle(a.runJob))
			r.With(audit("job.key_export", "job")).Get("/backups/jobs/{id}/encryption-key", a.handle(a.encryptionKey))
			r.Get("/backups/jobs/{id}/next-runs", a.handle(a.nextRuns))
			r.Get("/backups/jobs/{id}/retention-preview", a.handle(a.retentionPreview))
			r.Post("/schedules/preview", a.handle(a.previewSchedule))

			r.Get("/backups/history", a.handle(a.listHistory))
			r.Get("/backups/history/{id}", a.handle(a.getHistory))
			r.With(audit("backup.delete", "backup")).Delete("/backups/history/{id}", a.handle(a.deleteHistory))
			r.With(audit("backup.download", "backup")).Get("/backups/history/{id}/download", a.handle(a.downloadHistory))
			r.With(a.userRateLimited, audit("backup.restore", "backup")).Post("/backups/history/{id}/restore", a.handle(a.restoreHistory))
			r.With(a.userRateLimited, audit("backup.verify", "backup")).Post("/backups/history/{id}/verify", a.handle(a.verifyHistory))

			r.Get("/restores", a.handle(a.listRestores))
			r.Get("/restores/{id}", a.handle(a.getRestore))

			r.Get("/notification-channels", a.handle(a.listChannels))
			r.With(audit("channel.create", "channel")).Post("/notification-channels", a.handle(a.createChannel))
			r.Get("/notification-channels/{id}", a.handle(a.getChannel))
			r.With(audit("channel.update", "channel")).Patch("/notification-channels/{id}", a.handle(a.updateChannel))
			r.With(audit("channel.delete", "channel")).Delete("/notification-channels/{id}", a.handle(a.deleteChannel))
			r.With(a.userRateLimited, audit("channel.test", "channel")).Post("/notification-channels/{id}/test", a.handle(a.testChannel))
			r.Get("/notification-rules", a.handle(a.getNotifyRules))
			r.With(audit("rules.update", "user")).Put("/notification-rules", a.handle(a.putNotifyRules))

			r.Get("/audit", a.handle(a.listAudit))
		})
	})
	return r
}

// healthz answers 200 while the process serves HTTP.
func (a *API) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz answers 200 when PostgreSQL and NATS are reachable, 503 otherwise.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"database": "ok", "nats": "ok"}
	ready := true
	if err := a.pool.Ping(ctx); err != nil {
		checks["database"] = "unreachable"
		ready = false
	}
	if !a.opts.NC.IsConnected() {
		checks["nats"] = "disconnected"
		ready = false
	}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ready": ready, "checks": checks})
	return nil
}

// pathID parses the {id} URL parameter; a malformed id is 404 like any id
// the user does not own.
func pathID(r *http.Request, what string) (uuid.UUID, error) {
	id, err := uuid.Parse(chi.URLParam(r, "id"))
	if err != nil {
		return uuid.Nil, notFound(what)
	}
	return id, nil
}
