// Package natsd runs the NATS server with JetStream that `rahatback up`
// embeds. Clients authenticate as the control plane (full access) or as an
// agent, whose permissions come from events.AgentPermissions.
package natsd

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rahatback/rahatback/events"
)

// ControlPlaneUser is the NATS user of the control plane.
const ControlPlaneUser = "rahatback"

// AgentAuthenticator reports whether password is the NATS secret of the
// active agent agentID.
type AgentAuthenticator func(agentID, password string) bool

// Options configure Start.
type Options struct {
	// Config is the server configuration text (nats.conf); required.
	Config string
	// Listen is host:port for clients; port 0 picks a free one. Default 127.0.0.1:0.
	Listen string
	// StoreDir is the JetStream file store directory; required.
	StoreDir string
	// ControlPlanePassword authenticates ControlPlaneUser; required.
	ControlPlanePassword string
	// AuthenticateAgent checks agent credentials; nil rejects every agent.
	AuthenticateAgent AgentAuthenticator
	// Logger receives the server's own log lines at Debug and errors at Error;
	// default slog.Default().
	Logger *slog.Logger
}

func (o *Options) validate() error {
	if o.Config == "" {
		return errors.New("natsd: Config is required")
	}
	if o.StoreDir == "" {
		return errors.New("natsd: StoreDir is required")
	}
	if len(o.ControlPlanePassword) < 16 {
		return errors.New("natsd: ControlPlanePassword of at least 16 characters is required")
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// Start configures the server from o.Config, then applies Listen, StoreDir and
// authentication, starts it and waits (up to 10 s) until it accepts clients.
func Start(o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(o.Config); err != nil {
		return nil, fmt.Errorf("natsd: config: %w", err)
	}
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsd: listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsd: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts.Host, opts.Port = host, port
	opts.JetStream = true
	opts.StoreDir = o.StoreDir
	opts.NoSigs = true
	opts.HTTPPort = 0
	opts.CustomClientAuthentication = &authenticator{
		cpPassword: []byte(o.ControlPlanePassword),
		agent:      o.AuthenticateAgent,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsd: %w", err)
	}
	ns.SetLoggerV2(&logAdapter{l: o.Logger}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("natsd: server did not become ready within 10s")
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// DisconnectAgent closes every connection of agentID; with its credentials
// revoked it cannot reconnect.
func (s *Server) DisconnectAgent(agentID string) {
	connz, err := s.ns.Connz(&server.ConnzOptions{Username: true, User: events.AgentNATSUser(agentID), Limit: 1 << 16})
	if err != nil {
		return
	}
	for _, c := range connz.Conns {
		_ = s.ns.DisconnectClientByID(c.Cid)
	}
}

type authenticator struct {
	cpPassword []byte
	agent      AgentAuthenticator
}

// Check authenticates by user name and password, then registers the user
// with its permissions.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	co := c.GetOpts()
	if co == nil {
		return false
	}
	if co.Username == ControlPlaneUser {
		if subtle.ConstantTimeCompare([]byte(co.Password), a.cpPassword) != 1 {
			return false
		}
		c.RegisterUser(&server.User{Username: ControlPlaneUser})
		return true
	}
	agentID, ok := events.AgentIDFromNATSUser(co.Username)
	if !ok || a.agent == nil || !a.agent(agentID, co.Password) {
		return false
	}
	p := events.AgentPermissions(agentID)
	perms := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Publish},
		Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
	}
	if p.AllowResponses {
		perms.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	c.RegisterUser(&server.User{Username: co.Username, Permissions: perms})
	return true
}

// logAdapter forwards nats-server logs to slog.
type logAdapter struct{ l *slog.Logger }

func (a *logAdapter) Noticef(format string, v ...any) {
	a.l.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
func (a *logAdapter) Warnf(format string, v ...any) {
	a.l.Warn(fmt.Sprintf(format, v...), "component", "nats")
}
func (a *logAdapter) Fatalf(format string, v ...any) {
	a.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (a *logAdapter) Errorf(format string, v ...any) {
	a.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (a *logAdapter) Debugf(format string, v ...any) {
	a.l.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
func (a *logAdapter) Tracef(format string, v ...any) {}
