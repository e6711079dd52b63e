// Package agent holds the agent's handlers of commands and requests from the
// control plane: connection tests now; backup, restore and verify with the
// pipeline.
package agent

import (
	"context"
	"log/slog"

	"filippo.io/age"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/storage"
)

// Handlers serve one agent's requests.
type Handlers struct {
	Identity *age.X25519Identity // the agent's key; secrets are sealed to it
	Engines  engines.Registry
	Logger   *slog.Logger
	// Local is the agent's local backup storage; nil when it has none.
	Local storage.Storage
	// JournalDir keeps entries of uploads to remote storage in progress
	// (see RecoverUploads); "" disables the journal.
	JournalDir string
}

// DBTest opens the sealed password, connects to the database and reports the
// outcome. Every failure is a reply with Success false and a message the
// user can act on, never an error: the control plane shows it as is.
func (h *Handlers) DBTest(ctx context.Context, req events.DBTestRequest) events.DBTestReply {
	fail := func(msg string) events.DBTestReply {
		return events.DBTestReply{V: events.Version, Success: false, Message: msg}
	}
	eng, err := h.Engines.Lookup(req.Conn.Type)
	if err != nil {
		return fail(err.Error())
	}
	pw, err := sealed.Open(h.Identity, req.Conn.SealedPassword)
	if err != nil {
		h.Logger.Warn("cannot open sealed password", "requestId", req.RequestID, "err", err)
		return fail("this agent cannot decrypt the password sent to it; revoke and re-enroll the agent")
	}
	version, err := eng.Test(ctx, connOf(req.Conn, pw))
	if err != nil {
		h.Logger.Info("connection test failed", "requestId", req.RequestID, "type", req.Conn.Type,
			"host", req.Conn.Host, "port", req.Conn.Port, "err", err)
		return fail(err.Error())
	}
	return events.DBTestReply{V: events.Version, Success: true, Message: "connection successful", Version: version}
}
