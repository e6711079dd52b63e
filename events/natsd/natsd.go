// Package natsd runs the NATS server with JetStream that `rahatback up`
// embeds. Clients authenticate as the control plane (full access) or as an
// agent, whose permissions come from events.AgentPermissions.
//
// Agents are authorized by NATS auth callout, the server's own mechanism for
// delegating authentication: the control plane user is a configured user
// exempt from the callout (auth_users), and every other connection is
// handed to the AuthCallout service that natsd runs on an in-process
// connection. The callout's issuer is an account nkey created at each Start
// and held in memory only.
//
// Each agent is placed in a NATS account of its own (AgentAccount), linked
// to the control plane's account only by the subjects of
// events.AgentAccountLinks. Permissions alone cannot confine an agent:
// a request's reply subject is the requester's choice, and JetStream
// answers it with the account's full rights, so an agent in the control
// plane's account could point a pull request, an ack or an event's
// acknowledgement at another agent's subjects. Across an account
// boundary the server rewrites reply subjects, and answers reach only the
// requester's own account.
package natsd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

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
	ns     *server.Server
	opts   *server.Options
	issuer nkeys.KeyPair
	// callout is the auth callout service's connection; stopCallout ends it.
	callout     *nats.Conn
	stopCallout func()
	shutdown    sync.Once

	// placed holds the agents whose accounts are linked; linked, each
	// link made, so that a placement that failed midway is completed by
	// the next one rather than refused as a duplicate.
	mu     sync.Mutex
	placed map[string]bool
	linked map[string]bool
}

// AgentAccount is the name of agentID's own account.
func AgentAccount(agentID string) string { return "AGENT_" + agentID }

// placeAgent returns the account of agentID, creating it and linking it to
// the control plane's account at the agent's first connection since Start.
func (s *Server) placeAgent(agentID string) (string, error) {
	name := AgentAccount(agentID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.placed[agentID] {
		return name, nil
	}
	cp := s.ns.GlobalAccount()
	acc, _ := s.ns.LookupOrRegisterAccount(name)
	if s.placed == nil {
		s.placed, s.linked = map[string]bool{}, map[string]bool{}
	}
	// link runs one step of the placement once.
	link := func(step, subj string, f func() error) error {
		key := name + " " + step + " " + subj
		if s.linked[key] {
			return nil
		}
		if err := f(); err != nil {
			return fmt.Errorf("%s %s: %w", step, subj, err)
		}
		s.linked[key] = true
		return nil
	}
	// service makes subj a request from one account answered in the other.
	service := func(from, to *server.Account, subj string, resp server.ServiceRespType) error {
		if err := link("export "+to.Name, subj, func() error {
			return to.AddServiceExportWithResponse(subj, resp, []*server.Account{from})
		}); err != nil {
			return err
		}
		return link("import "+from.Name, subj, func() error { return from.AddServiceImport(to, subj, "") })
	}
	// stream makes subj's messages published in one account reach the other.
	stream := func(from, to *server.Account, subj string) error {
		if err := link("export stream "+from.Name, subj, func() error {
			return from.AddStreamExport(subj, []*server.Account{to})
		}); err != nil {
			return err
		}
		return link("import stream "+to.Name, subj, func() error { return to.AddStreamImport(from, subj, "") })
	}
	links := events.AgentAccountLinks(agentID)
	for _, subj := range links.Requests {
		if err := service(acc, cp, subj, server.Singleton); err != nil {
			return "", err
		}
	}
	for _, subj := range links.StreamedRequests {
		if err := service(acc, cp, subj, server.Streamed); err != nil {
			return "", err
		}
	}
	for _, subj := range links.Services {
		if err := service(cp, acc, subj, server.Singleton); err != nil {
			return "", err
		}
	}
	for _, subj := range links.FromAgent {
		if err := stream(acc, cp, subj); err != nil {
			return "", err
		}
	}
	for _, subj := range links.ToAgent {
		if err := stream(cp, acc, subj); err != nil {
			return "", err
		}
	}
	s.placed[agentID] = true
	return name, nil
}

// Start configures the server from o.Config, then applies Listen, StoreDir and
// authentication, starts it and waits (up to 10 s) until it accepts clients
// and its auth callout service answers.
//
// Authentication set here replaces any in o.Config: the only configured user
// is ControlPlaneUser, and agents go through the auth callout. o.Config must
// not define accounts or an operator: the control plane is in the global
// account, the one JetStream is enabled in, and natsd makes each agent's
// account itself (AgentAccount).
func Start(o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(o.Config); err != nil {
		return nil, fmt.Errorf("natsd: config: %w", err)
	}
	if len(opts.Accounts) > 0 || len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0 {
		return nil, errors.New("natsd: config: accounts and operators are not supported; natsd sets authentication")
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
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("natsd: auth callout issuer: %w", err)
	}
	issuerPub, err := issuer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("natsd: auth callout issuer: %w", err)
	}
	opts.Username, opts.Password, opts.Authorization = "", "", ""
	opts.NoAuthUser = ""
	opts.Nkeys = nil
	opts.CustomClientAuthentication = nil
	opts.Users = []*server.User{{Username: ControlPlaneUser, Password: serverPassword(o.ControlPlanePassword)}}
	opts.AuthCallout = &server.AuthCallout{
		Issuer:    issuerPub,
		Account:   GlobalAccount,
		AuthUsers: []string{ControlPlaneUser},
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsd: %w", err)
	}
	ns.SetLoggerV2(&logAdapter{l: o.Logger}, false, false, false)
	go ns.Start()
	s := &Server{ns: ns, opts: opts, issuer: issuer}
	if !ns.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natsd: server did not become ready within 10s")
	}
	if err := s.startCallout(o); err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("natsd: auth callout: %w", err)
	}
	return s, nil
}

// serverPassword is how the server holds the control plane password: a
// bcrypt hash (minimum cost: the password is a random secret, and the hash
// only lives in memory), which the server recognizes and compares in constant
// time. A password bcrypt cannot take (over 72 bytes) stays plain.
func serverPassword(password string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return password
	}
	return string(h)
}

// startCallout connects in-process as ControlPlaneUser and serves the auth
// callout on that connection.
func (s *Server) startCallout(o Options) error {
	nc, err := nats.Connect("", nats.InProcessServer(s.ns),
		nats.UserInfo(ControlPlaneUser, o.ControlPlanePassword),
		nats.Name("rahatback-auth-callout"),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
	)
	if err != nil {
		return err
	}
	s.callout = nc
	ac := &AuthCallout{
		Issuer: s.issuer, Account: GlobalAccount, AuthenticateAgent: o.AuthenticateAgent,
		Place: s.placeAgent, ServerID: s.ns.ID(), Logger: o.Logger,
	}
	stop, err := ac.Serve(nc)
	if err != nil {
		return err
	}
	s.stopCallout = stop
	return nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the auth callout service and the server and waits for
// them to finish.
func (s *Server) Shutdown() {
	s.shutdown.Do(func() {
		if s.stopCallout != nil {
			s.stopCallout()
		}
		if s.callout != nil {
			s.callout.Close()
		}
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.issuer.Wipe()
	})
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
