package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/auth"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/testsupport"
	"github.com/rahatback/rahatback/vault"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

type testServer struct {
	*httptest.Server
	api   *api.API
	pool  *pgxpool.Pool
	vault *vault.Vault
	nats  *testsupport.NATS
}

// newServer runs the API against a fresh database and NATS server.
func newServer(t *testing.T, mod ...func(*api.Opts)) *testServer {
	t.Helper()
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, api.AgentAuthenticator(pool))
	v, err := vault.New(map[uint32][]byte{1: bytes.Repeat([]byte{7}, vault.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.NewIssuer([]byte(testsupport.RandomString(32)), 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := api.Opts{
		Pool: pool, NC: n.NC, JS: n.JS, Vault: v, Issuer: iss, Logger: testsupport.Logger(t),
		AgentNATSURL: n.Server.ClientURL(), DisconnectAgent: n.Server.DisconnectAgent, Outbox: testsupport.RunOutbox(t, pool, n.JS),
		PasswordCost: 10, // the lowest allowed: keeps -race runs quick
	}
	for _, f := range mod {
		f(&opts)
	}
	a, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	projDone := make(chan struct{})
	go func() {
		defer close(projDone)
		if err := projector.Run(ctx, projector.Opts{Pool: pool, JS: n.JS, Logger: opts.Logger}); err != nil {
			t.Errorf("projector: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-projDone })
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &testServer{Server: srv, api: a, pool: pool, vault: v, nats: n}
}

type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r response) JSON(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Fields returns the "fields" of an error body.
func (r response) Fields(t *testing.T) map[string]string {
	t.Helper()
	var e struct {
		Code   int               `json:"code"`
		Fields map[string]string `json:"fields"`
	}
	r.JSON(t, &e)
	if e.Code != r.Code {
		t.Fatalf("error body code %d, status %d", e.Code, r.Code)
	}
	return e.Fields
}

// do sends a request; body may be nil, a string (sent raw) or a value sent as JSON.
func (s *testServer) do(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Code: resp.StatusCode, Header: resp.Header, Body: data}
}

type authResp struct {
	User struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	} `json:"user"`
	Tokens struct {
		Access struct {
			Token string `json:"token"`
		} `json:"access"`
		Refresh struct {
			Token string `json:"token"`
		} `json:"refresh"`
	} `json:"tokens"`
}

// register creates a user and returns its access token.
func (s *testServer) register(t *testing.T, email string) authResp {
	t.Helper()
	r := s.do(t, "POST", "/v1/auth/register", "", map[string]string{"email": email, "password": "correct-horse-1"})
	if r.Code != http.StatusCreated {
		t.Fatalf("register %s: %d %s", email, r.Code, r.Body)
	}
	var out authResp
	r.JSON(t, &out)
	return out
}

func wantCode(t *testing.T, r response, code int) {
	t.Helper()
	if r.Code != code {
		t.Fatalf("status %d, want %d; body %s", r.Code, code, r.Body)
	}
}
