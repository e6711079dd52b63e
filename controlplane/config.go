// Package controlplane wires the control plane's processes: `up` (everything
// in one process, with embedded NATS, a private PostgreSQL when no database
// URL is given and a local agent), `serve` (chosen roles) and `migrate`.
package controlplane

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rahatback/rahatback/agent"
	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/notify"
)

// Config is the control plane's configuration, from flags or their
// RAHATBACK_* environment equivalents (flag --data-dir ↔ RAHATBACK_DATA_DIR).
type Config struct {
	HTTP              string         // --http: API listen address; default 127.0.0.1:8080
	PublicURL         string         // --public-url: URL agents use; default http://<--http>
	DataDir           string         // --data-dir: keys, NATS store, private PostgreSQL; default ./data
	DatabaseURL       string         // --database-url: PostgreSQL; default a private cluster in the data dir
	NATSListen        string         // --nats-listen: embedded NATS; default 127.0.0.1:4223
	NATSURL           string         // --nats-url: external NATS instead of embedding one
	NATSAdvertise     string         // --nats-advertise: NATS URL given to agents; default the one in use
	NATSConfig        string         // --nats-config: file replacing the embedded nats.conf
	EventsMaxAge      time.Duration  // --events-max-age: how long EVENTS keeps events; default 30 days
	Roles             []string       // --roles (serve): api, projector, scheduler; up runs all
	LogFormat         string         // --log-format: text or json; default text
	LogLevel          string         // --log-level: debug, info, warn, error; default info
	OfflineAfter      time.Duration  // --agent-offline-after: agent offline after silence; default 30s
	Heartbeat         time.Duration  // --agent-heartbeat: the local agent's presence interval; default 10s
	CommandTTL        time.Duration  // --command-ttl: how long a command stays runnable; default 24h
	QueueLimit        int            // --agent-queue-limit: commands that may wait per agent; default 20
	Google            api.GoogleOpts // --google-*: Google Drive OAuth client; the secret only from RAHATBACK_GOOGLE_CLIENT_SECRET
	RunLostAfter      time.Duration  // --run-lost-after: a run whose agent is silent this long fails; default 90s
	ScheduleGrace     time.Duration  // --schedule-grace: how late a missed slot still runs; default 10m
	RetentionInterval time.Duration  // --retention-interval: time between retention passes; default 5m
	// AllowEndpoints (--allow-endpoint, repeatable; RAHATBACK_ALLOW_ENDPOINT,
	// comma-separated) are the non-public addresses the control plane may
	// connect to for users' storage: CIDRs, IPs or host names, each with an
	// optional :port. Default none: public addresses only.
	AllowEndpoints []string
	// SMTPURL (--smtp-url, or RAHATBACK_SMTP_URL, where a password
	// belongs: flags show in the process list) is the mail server of
	// email channels: smtp://user:pass@host:587 (STARTTLS required),
	// smtps://…:465 (TLS), smtp://host:25?tls=none. Default none: email
	// channels get nothing.
	SMTPURL       string
	SMTPFrom      string        // --smtp-from: the From address; required with SMTPURL
	SMTPCAFile    string        // --smtp-ca-file: PEM CA certificates the SMTP server's certificate may chain to, beside the system's
	AlertInterval time.Duration // --alert-interval: time between checks of RPO and agent-offline alerts; default 1m
	// MetricsListen (--metrics-listen) serves /metrics on its own address;
	// MetricsToken (RAHATBACK_METRICS_TOKEN only) serves it on --http
	// behind that bearer token. Neither: /metrics is not served.
	MetricsListen string
	MetricsToken  string
	// MSSQL is how SQL Server's backups reach up's local agent
	// (RAHATBACK_MSSQL_* only, as for rahatback-agent run).
	MSSQL agent.MSSQLOpts
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag struct{ dst *[]string }

func (l listFlag) String() string {
	if l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, ",")
}

func (l listFlag) Set(v string) error {
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			*l.dst = append(*l.dst, e)
		}
	}
	return nil
}

// knownRoles are serve's roles; up runs them all. scheduler fires
// scheduled jobs and applies retention; projector also projects the audit
// log; notifier sends notifications and computes alerts.
var knownRoles = []string{"api", "projector", "scheduler", "notifier"}

// parse reads flags for command cmd from args, falling back to
// RAHATBACK_* variables from getenv for flags not given.
func parse(cmd string, args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("rahatback "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:8080", "API listen address")
	fs.StringVar(&c.PublicURL, "public-url", "", "URL at which agents reach the API (default http://<http>)")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory for keys, the NATS store and the private PostgreSQL")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (default: a private cluster inside the data dir)")
	fs.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:4223", "embedded NATS listen address")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS URL (nats://user:pass@host:4222) instead of the embedded server")
	fs.StringVar(&c.NATSAdvertise, "nats-advertise", "", "NATS URL given to enrolling agents (default: the one in use)")
	fs.StringVar(&c.NATSConfig, "nats-config", "", "NATS server config file replacing the built-in nats.conf")
	fs.DurationVar(&c.EventsMaxAge, "events-max-age", events.DefaultEventsMaxAge, "how long the EVENTS stream keeps events")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&c.OfflineAfter, "agent-offline-after", 30*time.Second, "an agent silent for this long is offline")
	fs.DurationVar(&c.Heartbeat, "agent-heartbeat", agent.DefaultHeartbeat, "how often the local agent reports it is alive")
	fs.DurationVar(&c.CommandTTL, "command-ttl", 24*time.Hour, "a command not picked up by its agent within this time is reported failed, not run")
	fs.IntVar(&c.QueueLimit, "agent-queue-limit", 20, "commands that may wait for one agent; more are refused (429)")
	fs.StringVar(&c.Google.ClientID, "google-client-id", "", "Google OAuth client id for Drive storage (secret: env RAHATBACK_GOOGLE_CLIENT_SECRET)")
	fs.StringVar(&c.Google.RedirectURL, "google-redirect-url", "", "OAuth redirect URL registered with Google (default <public-url>/v1/cloud-storage/google/callback)")
	fs.StringVar(&c.Google.AuthURL, "google-auth-url", "", "override of Google's OAuth consent URL (tests)")
	fs.StringVar(&c.Google.TokenURL, "google-token-url", "", "override of Google's OAuth token URL (tests)")
	fs.StringVar(&c.Google.DriveEndpoint, "google-drive-endpoint", "", "override of the Drive API base URL (tests)")
	fs.DurationVar(&c.RunLostAfter, "run-lost-after", projector.DefaultLostAfter, "a queued or running backup whose agent is silent this long is failed (agent lost)")
	fs.DurationVar(&c.ScheduleGrace, "schedule-grace", 10*time.Minute, "a slot missed while no scheduler ran still runs (once) up to this late; older missed slots are recorded as skipped")
	fs.DurationVar(&c.RetentionInterval, "retention-interval", 5*time.Minute, "time between retention passes (expiring backups and deleting their objects)")
	fs.Var(listFlag{&c.AllowEndpoints}, "allow-endpoint", "a non-public address the control plane may connect to for users' storage: CIDR, IP or host name, with an optional :port (repeatable; default: public addresses only)")
	fs.StringVar(&c.SMTPURL, "smtp-url", "", "SMTP server of email notifications: smtp://user@host:587 (STARTTLS), smtps://host:465, smtp://host:25?tls=none; a password only in RAHATBACK_SMTP_URL")
	fs.StringVar(&c.SMTPFrom, "smtp-from", "", "From address of email notifications")
	fs.StringVar(&c.SMTPCAFile, "smtp-ca-file", "", "PEM file of CA certificates to trust for the SMTP server, beside the system's")
	fs.DurationVar(&c.AlertInterval, "alert-interval", time.Minute, "time between checks of the \"no good backup for N hours\" and \"agent offline\" alerts")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics on this address (else on --http behind the bearer token in RAHATBACK_METRICS_TOKEN, else not at all)")
	roles := fs.String("roles", strings.Join(knownRoles, ","), "serve only: comma-separated roles ("+strings.Join(knownRoles, ", ")+")")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		key := "RAHATBACK_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(key); v != "" {
			if err := fs.Set(f.Name, v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: %w", key, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	for _, r := range strings.Split(*roles, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !slices.Contains(knownRoles, r) {
			return nil, fmt.Errorf("--roles: unknown role %q (known: %s)", r, strings.Join(knownRoles, ", "))
		}
		c.Roles = append(c.Roles, r)
	}
	if _, err := egress.New(c.AllowEndpoints); err != nil {
		return nil, fmt.Errorf("--allow-endpoint: %w", err)
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return nil, err
	}
	c.DataDir = abs
	// A secret never goes in a flag: flags show in the process list.
	c.Google.ClientSecret = getenv("RAHATBACK_GOOGLE_CLIENT_SECRET")
	c.MetricsToken = getenv("RAHATBACK_METRICS_TOKEN")
	c.MSSQL = agent.MSSQLOptsFromEnv(getenv)
	if set["smtp-url"] {
		if u, err := url.Parse(c.SMTPURL); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				return nil, errors.New("--smtp-url: put a URL with a password in RAHATBACK_SMTP_URL instead (every user of this host can read process arguments)")
			}
		}
	}
	if _, err := c.SMTP(); err != nil {
		return nil, err
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.HTTP
	}
	return c, nil
}

func (c *Config) hasRole(r string) bool { return slices.Contains(c.Roles, r) }

func (c *Config) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	ho := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", c.LogFormat)
}

func (c *Config) natsConfigText() (string, error) {
	if c.NATSConfig == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.NATSConfig)
	return string(b), err
}

// SMTP is the parsed SMTP configuration; its Host is empty when none
// is given.
// Errors never hold the password.
func (c *Config) SMTP() (notify.SMTP, error) {
	if c.SMTPURL == "" {
		if c.SMTPFrom != "" {
			return notify.SMTP{}, errors.New("--smtp-from needs --smtp-url (or RAHATBACK_SMTP_URL)")
		}
		return notify.SMTP{}, nil
	}
	s, err := notify.ParseSMTP(c.SMTPURL, c.SMTPFrom, c.SMTPCAFile)
	if err != nil {
		return s, fmt.Errorf("SMTP (--smtp-url / RAHATBACK_SMTP_URL): %w", err)
	}
	return s, nil
}
