package natsd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	rahatback "github.com/rahatback/rahatback"
	"github.com/rahatback/rahatback/events"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

const testCPPassword = "control-plane-password-0123456789"

// startTest starts the embedded server with the project's nats.conf plus
// extra configuration text.
func startTest(t *testing.T, extra string, auth AgentAuthenticator) *Server {
	t.Helper()
	s, err := Start(Options{
		Config: rahatback.NATSConf + extra, StoreDir: t.TempDir(),
		ControlPlanePassword: testCPPassword, AuthenticateAgent: auth, Logger: discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t *testing.T, url, user, password string) (*nats.Conn, error) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.NoReconnect())
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

func allowAll(string, string) bool { return true }

// respondWith serves the callout subject on a control plane connection with
// answer in place of natsd's own service.
func respondWith(t *testing.T, s *Server, answer func(rq *jwt.AuthorizationRequestClaims) string) {
	t.Helper()
	cp, err := connect(t, s.ClientURL(), ControlPlaneUser, testCPPassword)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cp.Subscribe(AuthCalloutSubject, func(m *nats.Msg) {
		rq, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
		if err != nil {
			_ = m.Respond(nil)
			return
		}
		_ = m.Respond([]byte(answer(rq)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

func signResponse(t *testing.T, kp nkeys.KeyPair, rq *jwt.AuthorizationRequestClaims, userJWT, errText string) string {
	rc := jwt.NewAuthorizationResponseClaims(rq.UserNkey)
	rc.Audience = rq.Server.ID
	rc.Jwt, rc.Error = userJWT, errText
	tok, err := rc.Encode(kp)
	if err != nil {
		t.Error(err)
	}
	return tok
}

func signUser(t *testing.T, kp nkeys.KeyPair, rq *jwt.AuthorizationRequestClaims, allow string) string {
	uc := jwt.NewUserClaims(rq.UserNkey)
	uc.Audience = GlobalAccount
	uc.Pub.Allow.Add(allow)
	uc.Sub.Allow.Add(allow)
	tok, err := uc.Encode(kp)
	if err != nil {
		t.Error(err)
	}
	return tok
}

// TestCalloutAuthorizesAgents shows that agents are authorized by the auth
// callout, not by a server hook: the server has no custom authentication,
// and what the service listening on the callout subject answers decides.
func TestCalloutAuthorizesAgents(t *testing.T) {
	s := startTest(t, "\nauthorization { timeout: 1 }\n", allowAll)
	issuerPub, err := s.issuer.PublicKey()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ServerOptions", func(t *testing.T) {
		o := s.opts
		if o.CustomClientAuthentication != nil {
			t.Fatal("server has CustomClientAuthentication")
		}
		ac := o.AuthCallout
		if ac == nil {
			t.Fatal("server has no auth callout")
		}
		if ac.Issuer != issuerPub || !nkeys.IsValidPublicAccountKey(ac.Issuer) {
			t.Errorf("callout issuer %q, want the account key %q", ac.Issuer, issuerPub)
		}
		if ac.Account != GlobalAccount || !slices.Equal(ac.AuthUsers, []string{ControlPlaneUser}) || ac.XKey != "" || len(ac.AllowedAccounts) != 0 {
			t.Errorf("callout %+v", ac)
		}
		if len(o.Users) != 1 || o.Users[0].Username != ControlPlaneUser || o.Users[0].Permissions != nil ||
			o.Users[0].Password == testCPPassword ||
			len(o.Nkeys) != 0 || o.Username != "" || o.Authorization != "" || o.NoAuthUser != "" {
			t.Errorf("configured users %v, nkeys %v, user %q, token set %v, no_auth_user %q",
				o.Users, o.Nkeys, o.Username, o.Authorization != "", o.NoAuthUser)
		}
	})

	id := uuid.NewString()
	user := events.AgentNATSUser(id)

	t.Run("ServiceAnswers", func(t *testing.T) {
		nc, err := connect(t, s.ClientURL(), user, "any")
		if err != nil {
			t.Fatalf("agent with accepted credentials: %v", err)
		}
		nc.Close()
	})

	// From here on natsd's own service is gone; test services answer.
	s.stopCallout()

	t.Run("NoService", func(t *testing.T) {
		if _, err := connect(t, s.ClientURL(), user, "any"); err == nil {
			t.Fatal("agent connected with no callout service")
		}
		cp, err := connect(t, s.ClientURL(), ControlPlaneUser, testCPPassword)
		if err != nil {
			t.Fatalf("control plane (auth_users) connects without the callout: %v", err)
		}
		cp.Close()
	})

	t.Run("ErrorResponseDenies", func(t *testing.T) {
		respondWith(t, s, func(rq *jwt.AuthorizationRequestClaims) string {
			return signResponse(t, s.issuer, rq, "", "no")
		})
		if _, err := connect(t, s.ClientURL(), user, "any"); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect: %v, want %v", err, nats.ErrAuthorization)
		}
	})

	t.Run("OtherIssuerDenies", func(t *testing.T) {
		rogue, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		respondWith(t, s, func(rq *jwt.AuthorizationRequestClaims) string {
			return signResponse(t, rogue, rq, signUser(t, rogue, rq, ">"), "")
		})
		if _, err := connect(t, s.ClientURL(), user, "any"); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect: %v, want %v", err, nats.ErrAuthorization)
		}
	})

	t.Run("ResponseGrantsPermissions", func(t *testing.T) {
		// Whatever the issuer signs is what the client may do.
		respondWith(t, s, func(rq *jwt.AuthorizationRequestClaims) string {
			return signResponse(t, s.issuer, rq, signUser(t, s.issuer, rq, "granted.>"), "")
		})
		errs := make(chan error, 16)
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, "any"), nats.NoReconnect(),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if err := nc.Publish("granted.x", nil); err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("denied.x", nil); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !strings.Contains(err.Error(), `Publish to "denied.x"`) {
				t.Fatalf("error %v, want a violation for denied.x", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("publish outside the granted permissions not refused")
		}
	})
}

// TestAuthCalloutExternalServer runs the service against a plain
// nats-server configured as AuthCallout's documentation says.
func TestAuthCalloutExternalServer(t *testing.T) {
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	issuerPub, _ := issuer.PublicKey()
	opts := &server.Options{}
	conf := fmt.Sprintf(`
listen: "127.0.0.1:-1"
jetstream { store_dir: %q }
authorization {
  users: [ { user: rahatback, password: %q } ]
  auth_callout {
    issuer: %q
    account: "$G"
    auth_users: [ rahatback ]
  }
}
`, t.TempDir(), testCPPassword, issuerPub)
	if err := opts.ProcessConfigString(conf); err != nil {
		t.Fatal(err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}

	cp, err := connect(t, ns.ClientURL(), ControlPlaneUser, testCPPassword)
	if err != nil {
		t.Fatal(err)
	}
	id, pw := uuid.NewString(), "agent-password-0123456789"
	ac := &AuthCallout{Issuer: issuer, AuthenticateAgent: func(a, p string) bool { return a == id && p == pw }, Logger: discard}
	stop, err := ac.Serve(cp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	if _, err := connect(t, ns.ClientURL(), events.AgentNATSUser(id), "wrong-password-0123456789"); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: %v, want %v", err, nats.ErrAuthorization)
	}
	errs := make(chan error, 16)
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(events.AgentNATSUser(id), pw), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("agent connects: %v", err)
	}
	defer nc.Close()
	// Own RPC subject: served. Another agent's: refused.
	sub, err := nc.SubscribeSync(events.RPCSubject(id, "ping"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := cp.Publish(events.RPCSubject(id, "ping"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("own RPC subject: %v", err)
	}
	other := "rahat.cmd." + uuid.NewString() + ".>"
	if _, err := nc.SubscribeSync(other); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), fmt.Sprintf("Subscription to %q", other)) {
			t.Fatalf("error %v, want a violation for %s", err, other)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription to another agent's commands not refused")
	}
}

// request builds an authorization request as a server signs it.
func request(t *testing.T, serverKP nkeys.KeyPair, user, password string) (*jwt.AuthorizationRequestClaims, []byte) {
	t.Helper()
	serverPub, _ := serverKP.PublicKey()
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	rq := jwt.NewAuthorizationRequestClaims(serverPub)
	rq.Audience = "nats-authorization-request"
	rq.UserNkey = userPub
	rq.Server = jwt.ServerID{Name: "test", ID: serverPub}
	rq.ConnectOptions = jwt.ConnectOptions{Username: user, Password: password}
	rq.Expires = time.Now().Add(time.Minute).Unix()
	tok, err := rq.Encode(serverKP)
	if err != nil {
		t.Fatal(err)
	}
	return rq, []byte(tok)
}

func TestAuthCalloutAnswer(t *testing.T) {
	issuer, _ := nkeys.CreateAccount()
	issuerPub, _ := issuer.PublicKey()
	serverKP, _ := nkeys.CreateServer()
	serverPub, _ := serverKP.PublicKey()
	id := uuid.NewString()
	var checked []string
	ac := &AuthCallout{Issuer: issuer, ServerID: serverPub, Logger: discard,
		AuthenticateAgent: func(a, p string) bool { checked = append(checked, a); return p == "good" }}

	decode := func(t *testing.T, rq *jwt.AuthorizationRequestClaims, resp []byte) *jwt.AuthorizationResponseClaims {
		t.Helper()
		rc, err := jwt.DecodeAuthorizationResponseClaims(string(resp))
		if err != nil {
			t.Fatalf("response %q: %v", resp, err)
		}
		if rc.Issuer != issuerPub || rc.Subject != rq.UserNkey || rc.Audience != serverPub {
			t.Fatalf("response issuer %s subject %s audience %s", rc.Issuer, rc.Subject, rc.Audience)
		}
		return rc
	}

	t.Run("Agent", func(t *testing.T) {
		rq, data := request(t, serverKP, events.AgentNATSUser(id), "good")
		rc := decode(t, rq, ac.answer(data))
		if rc.Error != "" {
			t.Fatalf("error %q", rc.Error)
		}
		uc, err := jwt.DecodeUserClaims(rc.Jwt)
		if err != nil {
			t.Fatal(err)
		}
		p := events.AgentPermissions(id)
		if uc.Issuer != issuerPub || uc.IssuerAccount != "" || uc.Subject != rq.UserNkey ||
			uc.Audience != GlobalAccount || uc.Name != events.AgentNATSUser(id) || uc.Expires != 0 {
			t.Errorf("user claims %+v", uc.ClaimsData)
		}
		if !slices.Equal(uc.Pub.Allow, p.Publish) || !slices.Equal(uc.Sub.Allow, p.Subscribe) ||
			len(uc.Pub.Deny) != 0 || len(uc.Sub.Deny) != 0 {
			t.Errorf("permissions pub %v sub %v, want %v %v", uc.Pub, uc.Sub, p.Publish, p.Subscribe)
		}
		if uc.Resp == nil || uc.Resp.MaxMsgs != 1 {
			t.Errorf("response permission %+v, want one reply", uc.Resp)
		}
	})

	for _, tc := range []struct{ name, user, password string }{
		{"WrongPassword", events.AgentNATSUser(id), "bad"},
		{"NotAnAgent", ControlPlaneUser, "good"},
		{"EmptyUser", "", "good"},
		{"WildcardID", "agent->", "good"},
		{"SubjectID", "agent-" + id + ".x", "good"},
		{"StarID", "agent-*", "good"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rq, data := request(t, serverKP, tc.user, tc.password)
			if rc := decode(t, rq, ac.answer(data)); rc.Error == "" || rc.Jwt != "" {
				t.Fatalf("answered error %q jwt %q, want a refusal", rc.Error, rc.Jwt)
			}
		})
	}
	if slices.ContainsFunc(checked, func(a string) bool { return !validAgentID(a) }) {
		t.Errorf("AuthenticateAgent asked about invalid ids: %q", checked)
	}

	t.Run("OtherServer", func(t *testing.T) {
		other, _ := nkeys.CreateServer()
		_, data := request(t, other, events.AgentNATSUser(id), "good")
		if resp := ac.answer(data); resp != nil {
			t.Fatalf("answered %q to another server", resp)
		}
	})
	t.Run("Garbage", func(t *testing.T) {
		if resp := ac.answer([]byte("not a jwt")); resp != nil {
			t.Fatalf("answered %q", resp)
		}
	})
}

func TestControlPlanePasswords(t *testing.T) {
	for _, pw := range []string{
		strings.Repeat("p", 100),         // too long for bcrypt: compared as is
		"$2a$10$0123456789abcdefghijklm", // looks like a bcrypt hash
	} {
		s, err := Start(Options{Config: rahatback.NATSConf, StoreDir: t.TempDir(), ControlPlanePassword: pw, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := connect(t, s.ClientURL(), ControlPlaneUser, pw); err != nil {
			t.Errorf("password %q: %v", pw, err)
		}
		if _, err := connect(t, s.ClientURL(), ControlPlaneUser, pw+"x"); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("password %q plus x: %v, want %v", pw, err, nats.ErrAuthorization)
		}
		s.Shutdown()
	}
}

func TestConfigAuthentication(t *testing.T) {
	t.Run("UsersReplaced", func(t *testing.T) {
		s := startTest(t, "\nauthorization { users: [ { user: admin, password: \"admin-password-0123\" } ] }\n", nil)
		if _, err := connect(t, s.ClientURL(), "admin", "admin-password-0123"); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("user from the config: %v, want %v", err, nats.ErrAuthorization)
		}
		if _, err := connect(t, s.ClientURL(), ControlPlaneUser, testCPPassword); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("AccountsRefused", func(t *testing.T) {
		_, err := Start(Options{
			Config: rahatback.NATSConf + "\naccounts { APP { jetstream: enabled } }\n", StoreDir: t.TempDir(),
			ControlPlanePassword: testCPPassword, Logger: discard,
		})
		if err == nil || !strings.Contains(err.Error(), "accounts") {
			t.Fatalf("Start with accounts: %v, want an error", err)
		}
	})
}
