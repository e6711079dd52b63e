package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mssql"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/runs"
)

type databaseJSON struct {
	ID          uuid.UUID  `json:"id"`
	Name        string     `json:"name"`
	Type        string     `json:"type"`
	Host        string     `json:"host"`
	Port        int        `json:"port"`
	Username    string     `json:"username"`
	Database    string     `json:"database"`
	AgentID     *uuid.UUID `json:"agentId"`
	HasPassword bool       `json:"hasPassword"`
	// MongoDB only.
	AuthSource *string `json:"authSource,omitempty"`
	TLS        bool    `json:"tls,omitempty"`
	ReplicaSet *string `json:"replicaSet,omitempty"`
	// SQL Server only.
	Instance  string    `json:"instance,omitempty"`
	Encrypt   string    `json:"encrypt,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func toDatabaseJSON(d db.Database) databaseJSON {
	return databaseJSON{ID: d.ID, Name: d.Name, Type: d.Type, Host: d.Host, Port: int(d.Port),
		Username: d.Username, Database: d.DatabaseName, AgentID: d.AgentID,
		HasPassword: d.PasswordEnc != nil, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
		AuthSource: d.AuthSource, TLS: d.TLS, ReplicaSet: d.ReplicaSet, Instance: d.Instance, Encrypt: d.Encrypt}
}

// databaseInput is the body of create, update and test-connection. Pointers
// tell "absent" (keep, or default) from "empty".
type databaseInput struct {
	DatabaseID *uuid.UUID `json:"databaseId"` // test-connection of a saved database
	Name       *string    `json:"name"`
	Type       *string    `json:"type"`
	Host       *string    `json:"host"`
	Port       *int       `json:"port"`
	Username   *string    `json:"username"`
	Password   *string    `json:"password"`
	Database   *string    `json:"database"`
	AgentID    *uuid.UUID `json:"agentId"`
	// MongoDB only: the database that holds the user (default the one
	// backed up, then admin as the driver does), TLS on or off, and the
	// replica set name.
	AuthSource *string `json:"authSource"`
	TLS        *bool   `json:"tls"`
	ReplicaSet *string `json:"replicaSet"`
	// SQL Server only: the named instance (empty: the default one, at
	// port) and the encryption, strict, mandatory or optional (empty:
	// mandatory).
	Instance *string `json:"instance"`
	Encrypt  *string `json:"encrypt"`
}

// dbFields is a database's settings once merged and validated.
type dbFields struct {
	Name, Type, Host, Username, Database string
	Port                                 int
	Password                             *string // nil: keep what is stored
	AgentID                              *uuid.UUID
	AuthSource, ReplicaSet               *string // nil: none
	TLS                                  bool
	Instance, Encrypt                    string // "": the default instance; mandatory
}

// merge applies in over cur (the stored values, or zero for a new database)
// and validates the result, naming every bad field.
func (in databaseInput) merge(cur dbFields, requireName bool) (dbFields, error) {
	out := cur
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = strings.TrimSpace(*src)
		}
	}
	set(&out.Name, in.Name)
	set(&out.Type, in.Type)
	set(&out.Host, in.Host)
	set(&out.Username, in.Username)
	if in.Database != nil {
		out.Database = *in.Database // names may legitimately hold spaces
	}
	if in.Port != nil {
		out.Port = *in.Port
	}
	if in.Password != nil {
		out.Password = in.Password
	}
	if in.AgentID != nil {
		out.AgentID = in.AgentID
	}
	optional(&out.AuthSource, in.AuthSource)
	optional(&out.ReplicaSet, in.ReplicaSet)
	if in.TLS != nil {
		out.TLS = *in.TLS
	}
	set(&out.Instance, in.Instance)
	set(&out.Encrypt, in.Encrypt)

	f := fieldErrors{}
	switch {
	case out.Name == "" && requireName:
		f.add("name", "is required")
	case len(out.Name) > 100:
		f.add("name", "must be at most 100 characters")
	}
	spec, known := engines.Lookup(out.Type)
	switch {
	case out.Type == "":
		f.add("type", "is required: one of "+strings.Join(engines.Types(), ", "))
	case !known:
		f.add("type", "must be one of "+strings.Join(engines.Types(), ", "))
	}
	if in.Port == nil && out.Port == 0 {
		out.Port = spec.DefaultPort
	}
	if out.Port < 1 || out.Port > 65535 {
		f.add("port", "must be 1-65535")
	}
	switch {
	case out.Host == "" && (spec.Requires(engines.FieldHost) || !known):
		f.add("host", "is required")
	case len(out.Host) > 255:
		f.add("host", "must be at most 255 characters")
	case strings.HasPrefix(out.Host, "-") || strings.ContainsFunc(out.Host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		f.add("host", "must be a host name, an IP address or a socket directory")
	}
	switch {
	case out.Username == "" && (spec.Requires(engines.FieldUsername) || !known):
		f.add("username", "is required")
	case len(out.Username) > 128:
		f.add("username", "must be at most 128 characters")
	case strings.ContainsFunc(out.Username, unicode.IsControl):
		f.add("username", "must not contain control characters")
	}
	switch {
	case out.Database == "" && (spec.Requires(engines.FieldDatabase) || !known):
		f.add("database", "is required")
	case len(out.Database) > 128:
		f.add("database", "must be at most 128 characters")
	case strings.ContainsFunc(out.Database, unicode.IsControl):
		f.add("database", "must not contain control characters")
	}
	if out.Type != engines.MongoDB {
		// Changing the type away from MongoDB drops its settings; naming
		// them for another type is a mistake.
		for field, given := range map[string]bool{"authSource": in.AuthSource != nil && *in.AuthSource != "",
			"tls": in.TLS != nil && *in.TLS, "replicaSet": in.ReplicaSet != nil && *in.ReplicaSet != ""} {
			if given {
				f.add(field, "applies to MongoDB databases only")
			}
		}
		out.AuthSource, out.ReplicaSet, out.TLS = nil, nil, false
	}
	for field, v := range map[string]*string{"authSource": out.AuthSource, "replicaSet": out.ReplicaSet} {
		if v != nil && (len(*v) > 128 || strings.ContainsFunc(*v, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("/\\.\"$", r)
		})) {
			f.add(field, "must be a name of at most 128 characters without spaces, dots, slashes, quotes or $")
		}
	}
	if out.Type != engines.MSSQL {
		// As for MongoDB's settings above.
		for field, given := range map[string]bool{"instance": in.Instance != nil && *in.Instance != "",
			"encrypt": in.Encrypt != nil && *in.Encrypt != ""} {
			if given {
				f.add(field, "applies to SQL Server databases only")
			}
		}
		out.Instance, out.Encrypt = "", ""
	}
	switch {
	case len(out.Instance) > 128:
		f.add("instance", "must be at most 128 characters")
	case strings.ContainsFunc(out.Instance, func(r rune) bool { return unicode.IsControl(r) || r == '/' || r == '\\' }):
		// The name becomes the path of the driver's URL
		// (sqlserver://host/instance), where a slash would be misread.
		f.add("instance", "must be an instance name without slashes, backslashes or control characters")
	}
	if !mssql.ValidEncrypt(out.Encrypt) {
		f.add("encrypt", "must be one of "+strings.Join([]string{mssql.EncryptStrict, mssql.EncryptMandatory, mssql.EncryptOptional}, ", "))
	}
	if out.Password != nil && len(*out.Password) > 1024 {
		f.add("password", "must be at most 1024 characters")
	}
	return out, f.err()
}

func fieldsOf(d db.Database) dbFields {
	return dbFields{Name: d.Name, Type: d.Type, Host: d.Host, Port: int(d.Port), Username: d.Username,
		Database: d.DatabaseName, AgentID: d.AgentID, AuthSource: d.AuthSource, TLS: d.TLS, ReplicaSet: d.ReplicaSet,
		Instance: d.Instance, Encrypt: d.Encrypt}
}

// sealPassword returns the stored form of a password: nil for none.
func (a *API) sealPassword(id uuid.UUID, pw *string, cur []byte) ([]byte, error) {
	if pw == nil {
		return cur, nil
	}
	return a.secrets.SealDatabasePassword(id, *pw)
}

// checkAgent returns 404 naming agentId when id is not one of the user's
// active agents.
func (a *API) checkAgent(ctx context.Context, user uuid.UUID, id *uuid.UUID) error {
	if id == nil {
		return nil
	}
	_, err := a.q.GetAgentStatus(ctx, a.pool, db.GetAgentStatusParams{ID: *id, UserID: user, OfflineAfterSecs: a.offlineSecs()})
	return owned(err, "agent", "agentId")
}

// listDatabases answers {results: [database]}.
func (a *API) listDatabases(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.q.ListDatabases(r.Context(), a.pool, userID(r.Context()))
	if err != nil {
		return err
	}
	out := make([]databaseJSON, 0, len(rows))
	for _, d := range rows {
		out = append(out, toDatabaseJSON(d))
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out, "totalResults": len(out)})
	return nil
}

// createDatabase answers 201 with the database. Without agentId the user's
// first online agent is assigned, if any. 400 names bad fields; 404 an
// agentId that is not the user's.
func (a *API) createDatabase(w http.ResponseWriter, r *http.Request) error {
	var in databaseInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.DatabaseID != nil {
		return fieldErrors{"databaseId": "unknown field"}.err()
	}
	f, err := in.merge(dbFields{}, true)
	if err != nil {
		return err
	}
	user := userID(r.Context())
	if err := a.checkAgent(r.Context(), user, f.AgentID); err != nil {
		return err
	}
	if f.AgentID == nil {
		if ag, err := a.firstOnlineAgent(r.Context(), user); err == nil {
			f.AgentID = &ag.ID
		}
	}
	id := uuid.New()
	pw, err := a.sealPassword(id, f.Password, nil)
	if err != nil {
		return err
	}
	d, err := a.q.CreateDatabase(r.Context(), a.pool, db.CreateDatabaseParams{
		ID: id, UserID: user, AgentID: f.AgentID, Name: f.Name, Type: f.Type, Host: f.Host,
		Port: int32(f.Port), Username: f.Username, PasswordEnc: pw, DatabaseName: f.Database,
		AuthSource: f.AuthSource, TLS: f.TLS, ReplicaSet: f.ReplicaSet, Instance: f.Instance, Encrypt: f.Encrypt,
	})
	if err != nil {
		return err
	}
	auditObject(r.Context(), d.ID.String())
	writeJSON(w, http.StatusCreated, toDatabaseJSON(d))
	return nil
}

func (a *API) loadDatabase(r *http.Request) (db.Database, error) {
	id, err := pathID(r, "database")
	if err != nil {
		return db.Database{}, err
	}
	d, err := a.q.GetDatabase(r.Context(), a.pool, db.GetDatabaseParams{ID: id, UserID: userID(r.Context())})
	return d, owned(err, "database", "")
}

// getDatabase answers one database; 404 when it is not the user's.
func (a *API) getDatabase(w http.ResponseWriter, r *http.Request) error {
	d, err := a.loadDatabase(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toDatabaseJSON(d))
	return nil
}

// updateDatabase changes the fields present in the body; "password": ""
// removes the password. 400 names bad fields; 404 for another user's
// database or agent.
func (a *API) updateDatabase(w http.ResponseWriter, r *http.Request) error {
	d, err := a.loadDatabase(r)
	if err != nil {
		return err
	}
	var in databaseInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.DatabaseID != nil {
		return fieldErrors{"databaseId": "unknown field"}.err()
	}
	f, err := in.merge(fieldsOf(d), true)
	if err != nil {
		return err
	}
	user := userID(r.Context())
	if in.AgentID != nil {
		if err := a.checkAgent(r.Context(), user, f.AgentID); err != nil {
			return err
		}
	}
	pw, err := a.sealPassword(d.ID, f.Password, d.PasswordEnc)
	if err != nil {
		return err
	}
	d, err = a.q.UpdateDatabase(r.Context(), a.pool, db.UpdateDatabaseParams{
		ID: d.ID, UserID: user, AgentID: f.AgentID, Name: f.Name, Type: f.Type, Host: f.Host,
		Port: int32(f.Port), Username: f.Username, PasswordEnc: pw, DatabaseName: f.Database,
		AuthSource: f.AuthSource, TLS: f.TLS, ReplicaSet: f.ReplicaSet, Instance: f.Instance, Encrypt: f.Encrypt,
	})
	if err != nil {
		return owned(err, "database", "")
	}
	writeJSON(w, http.StatusOK, toDatabaseJSON(d))
	return nil
}

// deleteDatabase answers 204; 404 when it is not the user's.
func (a *API) deleteDatabase(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "database")
	if err != nil {
		return err
	}
	_, err = a.q.DeleteDatabase(r.Context(), a.pool, db.DeleteDatabaseParams{ID: id, UserID: userID(r.Context())})
	if err != nil {
		return owned(err, "database", "")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

var errNoAgent = errorf(http.StatusServiceUnavailable, "no online agent: connect an agent (Agents → Connect) or start it, then try again")

func (a *API) firstOnlineAgent(ctx context.Context, user uuid.UUID) (db.ListAgentsRow, error) {
	rows, err := a.q.ListAgents(ctx, a.pool, db.ListAgentsParams{UserID: user, OfflineAfterSecs: a.offlineSecs()})
	if err != nil {
		return db.ListAgentsRow{}, err
	}
	for _, row := range rows {
		if row.Online {
			return row, nil
		}
	}
	return db.ListAgentsRow{}, errNoAgent
}

type testConnectionResponse struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
	Version string `json:"version,omitempty"`
}

// testConnection asks an agent to connect to a database and answers
// {success, message, version}. The body is a database's fields, or
// {databaseId} to test a saved one (other fields then override the saved
// values, so an edit form can test before saving). The agent is agentId, the
// database's agent, or the user's first online agent. 503 when that agent is
// offline or none is online, 504 when it does not answer within the RPC
// timeout.
func (a *API) testConnection(w http.ResponseWriter, r *http.Request) error {
	var in databaseInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	user := userID(r.Context())
	var cur dbFields
	var password string
	if in.DatabaseID != nil {
		d, err := a.q.GetDatabase(r.Context(), a.pool, db.GetDatabaseParams{ID: *in.DatabaseID, UserID: user})
		if err != nil {
			return owned(err, "database", "databaseId")
		}
		cur = fieldsOf(d)
		pw, err := a.secrets.DatabasePassword(d)
		if err != nil {
			return err
		}
		password = string(pw)
	}
	f, err := in.merge(cur, false)
	if err != nil {
		return err
	}
	if f.Password != nil {
		password = *f.Password
	}

	var agent db.ListAgentsRow
	if f.AgentID != nil {
		agent, err = a.agentStatus(r.Context(), user, *f.AgentID)
		if err != nil {
			return err
		}
		if !agent.Online {
			return errorf(http.StatusServiceUnavailable, "agent %q is offline: start it (rahatback-agent run) and try again", agent.Name)
		}
	} else if agent, err = a.firstOnlineAgent(r.Context(), user); err != nil {
		return err
	}

	pubKey, err := a.q.GetAgentPublicKey(r.Context(), a.pool, agent.ID)
	if err != nil {
		return err
	}
	conn, err := runs.SealConn(events.ConnSpec{Type: f.Type, Host: f.Host, Port: f.Port, Username: f.Username,
		Database: f.Database, AuthSource: deref(f.AuthSource), TLS: f.TLS, ReplicaSet: deref(f.ReplicaSet),
		Instance: f.Instance, Encrypt: f.Encrypt}, []byte(password), pubKey)
	if err != nil {
		return err
	}
	req := events.DBTestRequest{V: events.Version, RequestID: uuid.NewString(), Conn: conn}
	var reply events.DBTestReply
	err = events.Request(r.Context(), a.opts.NC, events.RPCSubject(agent.ID.String(), events.RPCDBTest), req, &reply, a.opts.RPCTimeout)
	if err != nil {
		return a.runs.RPCError(err, fmt.Sprintf("agent %q", agent.Name))
	}
	writeJSON(w, http.StatusOK, testConnectionResponse{Success: reply.Success, Message: reply.Message, Version: reply.Version})
	return nil
}

func (a *API) agentStatus(ctx context.Context, user, id uuid.UUID) (db.ListAgentsRow, error) {
	row, err := a.q.GetAgentStatus(ctx, a.pool, db.GetAgentStatusParams{ID: id, UserID: user, OfflineAfterSecs: a.offlineSecs()})
	if err != nil {
		return db.ListAgentsRow{}, owned(err, "agent", "agentId")
	}
	return db.ListAgentsRow(row), nil
}
