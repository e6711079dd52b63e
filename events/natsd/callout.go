package natsd

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rahatback/rahatback/events"
)

// AuthCalloutSubject is where a NATS server sends its authorization
// requests to the auth callout service.
const AuthCalloutSubject = "$SYS.REQ.USER.AUTH"

// GlobalAccount is the account of a NATS server configured without
// accounts. The embedded server places the control plane in it: it is the
// account JetStream is enabled in without further configuration, and the
// one whose store (StoreDir/jetstream/$G) already holds the streams of
// existing installations. Each agent has an account of its own (Server).
const GlobalAccount = "$G"

// calloutConcurrency bounds the authorization requests answered at once.
const calloutConcurrency = 32

// AuthCallout is the NATS auth callout service for agents: it answers a NATS
// server's authorization requests (decentralized authentication, see
// https://docs.nats.io/running-a-nats-service/configuration/securing_nats/auth_callout).
// A client whose user name is events.AgentNATSUser(id) and whose password
// AuthenticateAgent accepts receives a user JWT signed by Issuer, placed in
// Account, carrying exactly events.AgentPermissions(id) and no expiry; every
// other client is refused.
//
// Start runs it for the embedded server. The same service works for an
// external nats-server whose configuration delegates authentication to it:
//
//	authorization {
//	  users: [ { user: rahatback, password: "<control plane password>" } ]
//	  auth_callout {
//	    issuer: "<public key of Issuer, an account nkey (A...)>"
//	    account: "$G"
//	    auth_users: [ rahatback ]
//	  }
//	}
//
// with JetStream enabled and no accounts block (so the global account $G
// holds the streams), the issuer seed (SA...) kept by the control plane
// only, and Serve run on a connection of the control plane user (listed in
// auth_users, so it bypasses the callout). The requests carry the agents'
// passwords: use TLS between that connection and the server. Such a server
// cannot create an account per agent at run time, so agents share Account
// there and the reply subjects of their requests are not confined to them
// (see Server): run the embedded server where agents are not trusted.
type AuthCallout struct {
	// Issuer signs the responses and the agents' user JWTs; it must be an
	// account key pair whose public key is the server's auth_callout issuer.
	Issuer nkeys.KeyPair
	// Account is the account agents are placed in (the audience of their
	// user JWTs); default GlobalAccount.
	Account string
	// AuthenticateAgent checks agent credentials; nil refuses every agent.
	AuthenticateAgent AgentAuthenticator
	// Place, when set, is called for every authenticated agent and
	// returns the account to place it in (the embedded server gives each
	// agent its own, see Server); an error refuses the agent. When nil,
	// agents go to Account.
	Place func(agentID string) (account string, err error)
	// ServerID, when set, is the public key (server ID) of the only server
	// whose requests are answered.
	ServerID string
	// Logger receives refusals at Debug and failures at Error; default
	// slog.Default().
	Logger *slog.Logger
}

// Serve answers the authorization requests arriving on nc until the
// returned stop is called; stop unsubscribes and waits for the requests
// being answered. nc must be a connection of a user exempt from the
// callout (auth_users).
func (a *AuthCallout) Serve(nc *nats.Conn) (stop func(), err error) {
	if a.Issuer == nil {
		return nil, errors.New("natsd: auth callout issuer is required")
	}
	if _, err := a.Issuer.PublicKey(); err != nil {
		return nil, err
	}
	var (
		mu      sync.Mutex
		stopped bool
		wg      sync.WaitGroup
		sem     = make(chan struct{}, calloutConcurrency)
	)
	sub, err := nc.Subscribe(AuthCalloutSubject, func(m *nats.Msg) {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		wg.Add(1)
		mu.Unlock()
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := m.Respond(a.answer(m.Data)); err != nil {
				a.logger().Error("auth callout: cannot respond", "err", err)
			}
		}()
	})
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return func() {
		_ = sub.Unsubscribe()
		mu.Lock()
		stopped = true
		mu.Unlock()
		wg.Wait()
	}, nil
}

func (a *AuthCallout) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.Default()
	}
	return a.Logger
}

// refused is the error an agent's connection is refused with; it does not
// say which check failed.
const refused = "not authorized"

// answer returns the response to the authorization request req: a signed
// AuthorizationResponseClaims with the user JWT or an error, or nil (which
// the server also reads as a refusal) when req itself is invalid.
func (a *AuthCallout) answer(req []byte) []byte {
	log := a.logger()
	rq, err := jwt.DecodeAuthorizationRequestClaims(string(req))
	if err != nil {
		log.Error("auth callout: invalid authorization request", "err", err)
		return nil
	}
	vr := jwt.CreateValidationResults()
	rq.Validate(vr)
	if vr.IsBlocking(true) {
		log.Error("auth callout: invalid authorization request", "err", vr.Errors())
		return nil
	}
	if rq.UserNkey == "" || rq.Server.ID == "" {
		log.Error("auth callout: authorization request without user or server")
		return nil
	}
	if a.ServerID != "" && (rq.Issuer != a.ServerID || rq.Server.ID != a.ServerID) {
		log.Error("auth callout: authorization request from an unknown server", "server", rq.Server.ID)
		return nil
	}
	user := rq.ConnectOptions.Username
	agentID, ok := events.AgentIDFromNATSUser(user)
	if !ok || !validAgentID(agentID) || a.AuthenticateAgent == nil ||
		!a.AuthenticateAgent(agentID, rq.ConnectOptions.Password) {
		log.Debug("auth callout: refused", "user", user, "host", rq.ClientInformation.Host)
		return a.respond(log, rq, "", refused)
	}
	uc := jwt.NewUserClaims(rq.UserNkey)
	uc.Name = user
	uc.Audience = a.Account
	if uc.Audience == "" {
		uc.Audience = GlobalAccount
	}
	if a.Place != nil {
		if uc.Audience, err = a.Place(agentID); err != nil {
			log.Error("auth callout: cannot place agent in its account", "user", user, "err", err)
			return a.respond(log, rq, "", refused)
		}
	}
	p := events.AgentPermissions(agentID)
	uc.Pub.Allow.Add(p.Publish...)
	uc.Sub.Allow.Add(p.Subscribe...)
	if p.AllowResponses {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	ujwt, err := uc.Encode(a.Issuer)
	if err != nil {
		log.Error("auth callout: cannot sign user JWT", "user", user, "err", err)
		return a.respond(log, rq, "", refused)
	}
	return a.respond(log, rq, ujwt, "")
}

func (a *AuthCallout) respond(log *slog.Logger, rq *jwt.AuthorizationRequestClaims, userJWT, errText string) []byte {
	rc := jwt.NewAuthorizationResponseClaims(rq.UserNkey)
	rc.Audience = rq.Server.ID
	rc.Jwt = userJWT
	rc.Error = errText
	tok, err := rc.Encode(a.Issuer)
	if err != nil {
		log.Error("auth callout: cannot sign response", "err", err)
		return nil
	}
	return []byte(tok)
}

// validAgentID rejects ids that would turn the agent's subject permissions
// into wildcards or other subjects.
func validAgentID(id string) bool {
	return id != "" && !strings.ContainsAny(id, ".*> \t\r\n")
}
