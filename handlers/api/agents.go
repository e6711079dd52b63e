package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/auth"
	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/sealed"
)

type agentJSON struct {
	ID         uuid.UUID  `json:"id"`
	Name       string     `json:"name"`
	Status     string     `json:"status"` // online | offline
	Hostname   string     `json:"hostname"`
	OS         string     `json:"os"`
	Version    string     `json:"version"`
	LastSeenAt *time.Time `json:"lastSeenAt"`
	IsLocal    bool       `json:"isLocal"`
	CreatedAt  time.Time  `json:"createdAt"`
}

func toAgentJSON(r db.ListAgentsRow) agentJSON {
	status := "offline"
	if r.Online {
		status = "online"
	}
	return agentJSON{ID: r.ID, Name: r.Name, Status: status, Hostname: r.Hostname, OS: r.Os,
		Version: r.Version, LastSeenAt: r.LastSeenAt, IsLocal: r.IsLocal, CreatedAt: r.CreatedAt}
}

func (a *API) offlineSecs() float64 { return a.opts.OfflineAfter.Seconds() }

// listAgents answers {results: [agent]} with the user's active agents.
func (a *API) listAgents(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.q.ListAgents(r.Context(), a.pool, db.ListAgentsParams{
		UserID: userID(r.Context()), OfflineAfterSecs: a.offlineSecs(),
	})
	if err != nil {
		return err
	}
	out := make([]agentJSON, 0, len(rows))
	for _, row := range rows {
		out = append(out, toAgentJSON(row))
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
	return nil
}

// CreateEnrollmentToken returns a one-time token with which an agent joins
// userID's account, and its expiry (Opts.EnrollmentTTL from now).
func (a *API) CreateEnrollmentToken(ctx context.Context, userID uuid.UUID) (string, time.Time, error) {
	token, hash, err := auth.NewOpaqueToken()
	if err != nil {
		return "", time.Time{}, err
	}
	exp := time.Now().Add(a.opts.EnrollmentTTL)
	err = a.q.CreateEnrollmentToken(ctx, a.pool, db.CreateEnrollmentTokenParams{TokenHash: hash, UserID: userID, ExpiresAt: exp})
	return token, exp, err
}

// createEnrollmentToken answers 201 {token, expiresAt, command}.
func (a *API) createEnrollmentToken(w http.ResponseWriter, r *http.Request) error {
	token, exp, err := a.CreateEnrollmentToken(r.Context(), userID(r.Context()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":     token,
		"expiresAt": exp,
		"command":   fmt.Sprintf("rahatback-agent enroll --server %s --token %s && rahatback-agent run", a.opts.PublicURL, token),
	})
	return nil
}

// EnrollRequest is what an agent sends to join an account.
type EnrollRequest struct {
	Token     string `json:"token"`
	Name      string `json:"name"`
	Hostname  string `json:"hostname"`
	OS        string `json:"os"`
	Version   string `json:"version"`
	PublicKey string `json:"publicKey"` // age X25519 recipient, secrets are sealed to it
}

// EnrollResponse is the identity and NATS credentials of a new agent.
type EnrollResponse struct {
	AgentID      uuid.UUID `json:"agentId"`
	NATSURL      string    `json:"natsUrl"`
	NATSUser     string    `json:"natsUser"`
	NATSPassword string    `json:"natsPassword"`
}

var errBadEnrollment = errorf(http.StatusUnauthorized, "enrollment token invalid, expired or already used; create a new one")

// Enroll redeems an enrollment token: it creates the agent, its command
// consumer and its NATS secret. Errors: 400 naming a bad field, 401 for a bad
// token.
func (a *API) Enroll(ctx context.Context, req EnrollRequest, local bool) (EnrollResponse, error) {
	f := fieldErrors{}
	if req.Token == "" {
		f.add("token", "is required")
	}
	if _, err := sealed.ParseRecipient(req.PublicKey); err != nil {
		f.add("publicKey", "must be an age X25519 public key (age1…)")
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" {
		req.Name = req.Hostname
	}
	if req.Name == "" {
		f.add("name", "is required when hostname is empty")
	}
	if len(req.Name) > 100 {
		f.add("name", "must be at most 100 characters")
	}
	if err := f.err(); err != nil {
		return EnrollResponse{}, err
	}
	secret, secretHash, err := auth.NewOpaqueToken()
	if err != nil {
		return EnrollResponse{}, err
	}
	agentID := uuid.New()
	err = db.WithTx(ctx, a.pool, func(tx pgx.Tx) error {
		owner, err := a.q.RedeemEnrollmentToken(ctx, tx, auth.HashToken(req.Token))
		if errors.Is(db.MapErr(err), db.ErrNotFound) {
			return errBadEnrollment
		} else if err != nil {
			return err
		}
		_, err = a.q.CreateAgent(ctx, tx, db.CreateAgentParams{
			ID: agentID, UserID: owner, Name: req.Name, PublicKey: req.PublicKey,
			NatsSecretHash: secretHash, IsLocal: local,
		})
		if err != nil {
			return err
		}
		auditUser(ctx, owner)
		auditObject(ctx, agentID.String())
		// Created inside the transaction: if it fails the token stays unused.
		return events.EnsureAgentConsumer(ctx, a.opts.JS, agentID.String())
	})
	if err != nil {
		return EnrollResponse{}, err
	}
	a.log.Info("agent enrolled", "agentId", agentID, "name", req.Name, "local", local)
	return EnrollResponse{
		AgentID: agentID, NATSURL: a.opts.AgentNATSURL,
		NATSUser: events.AgentNATSUser(agentID.String()), NATSPassword: secret,
	}, nil
}

// enrollAgent is the unauthenticated endpoint agents call with their token:
// 201 EnrollResponse.
func (a *API) enrollAgent(w http.ResponseWriter, r *http.Request) error {
	var req EnrollRequest
	if err := a.decodeJSON(w, r, &req); err != nil {
		return err
	}
	resp, err := a.Enroll(r.Context(), req, false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

// revokeAgent revokes one of the user's agents: 204; 404 for an agent that is
// not the user's. Its consumer is deleted and its connections cut, and its
// credentials stop working.
func (a *API) revokeAgent(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "agent")
	if err != nil {
		return err
	}
	_, err = a.q.RevokeAgent(r.Context(), a.pool, db.RevokeAgentParams{ID: id, UserID: userID(r.Context())})
	if err != nil {
		return owned(err, "agent", "")
	}
	if err := events.DeleteAgentConsumer(r.Context(), a.opts.JS, id.String()); err != nil {
		a.log.Warn("deleting revoked agent's consumer", "agentId", id, "err", err)
	}
	if a.opts.DisconnectAgent != nil {
		a.opts.DisconnectAgent(id.String())
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// AgentAuthenticator returns the embedded NATS server's check of agent
// credentials: whether password is the NATS secret of the active (not
// revoked) agent agentID.
func AgentAuthenticator(pool *pgxpool.Pool) func(agentID, password string) bool {
	q := db.New()
	return func(agentID, password string) bool {
		id, err := uuid.Parse(agentID)
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ag, err := q.GetActiveAgent(ctx, pool, id)
		if err != nil {
			return false
		}
		h := sha256.Sum256([]byte(password))
		return subtle.ConstantTimeCompare(h[:], ag.NatsSecretHash) == 1
	}
}
