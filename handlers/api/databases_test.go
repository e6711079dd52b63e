package api_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/vault"
)

type dbResp struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Type        string  `json:"type"`
	Host        string  `json:"host"`
	Port        int     `json:"port"`
	Username    string  `json:"username"`
	Database    string  `json:"database"`
	AgentID     *string `json:"agentId"`
	HasPassword bool    `json:"hasPassword"`
}

func validDB() map[string]any {
	return map[string]any{"name": "orders", "type": "postgresql", "host": "db.internal", "port": 5432,
		"username": "app", "password": "s3cr3t-Pa55", "database": "orders prod"}
}

func TestDatabasesCRUD(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "owner@example.com").Tokens.Access.Token

	r := s.do(t, "POST", "/v1/databases", tok, validDB())
	wantCode(t, r, http.StatusCreated)
	if strings.Contains(string(r.Body), "s3cr3t-Pa55") || strings.Contains(string(r.Body), "password\"") {
		t.Fatalf("response leaks the password: %s", r.Body)
	}
	var created dbResp
	r.JSON(t, &created)
	if created.Name != "orders" || created.Database != "orders prod" || !created.HasPassword || created.Port != 5432 {
		t.Fatalf("created %+v", created)
	}

	t.Run("PasswordSealedAtRest", func(t *testing.T) {
		var enc []byte
		id := uuid.MustParse(created.ID)
		if err := s.pool.QueryRow(context.Background(), "SELECT password_enc FROM databases WHERE id = $1", id).Scan(&enc); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(enc, []byte("s3cr3t-Pa55")) {
			t.Fatal("password stored in plaintext")
		}
		pt, err := s.vault.Open(enc, vault.Binding("databases", "password", created.ID))
		if err != nil || string(pt) != "s3cr3t-Pa55" {
			t.Fatalf("stored password does not open: %q %v", pt, err)
		}
		// Bound to its row: the same ciphertext under another row id does not open.
		if _, err := s.vault.Open(enc, vault.Binding("databases", "password", uuid.NewString())); err == nil {
			t.Fatal("ciphertext opened under another row's binding")
		}
	})

	t.Run("DefaultPortFollowsType", func(t *testing.T) {
		body := validDB()
		delete(body, "port")
		body["type"] = "mysql"
		r := s.do(t, "POST", "/v1/databases", tok, body)
		wantCode(t, r, http.StatusCreated)
		var d dbResp
		r.JSON(t, &d)
		if d.Port != 3306 {
			t.Fatalf("mysql default port %d", d.Port)
		}
		wantCode(t, s.do(t, "DELETE", "/v1/databases/"+d.ID, tok, nil), http.StatusNoContent)
	})

	t.Run("List", func(t *testing.T) {
		r := s.do(t, "GET", "/v1/databases", tok, nil)
		wantCode(t, r, http.StatusOK)
		var l struct {
			Results      []dbResp `json:"results"`
			TotalResults int      `json:"totalResults"`
		}
		r.JSON(t, &l)
		if len(l.Results) != 1 || l.TotalResults != 1 || l.Results[0].ID != created.ID {
			t.Fatalf("list %s", r.Body)
		}
	})

	t.Run("PatchKeepsPasswordUnlessGiven", func(t *testing.T) {
		r := s.do(t, "PATCH", "/v1/databases/"+created.ID, tok, map[string]any{"host": "db2.internal", "port": 6543})
		wantCode(t, r, http.StatusOK)
		var d dbResp
		r.JSON(t, &d)
		if d.Host != "db2.internal" || d.Port != 6543 || !d.HasPassword || d.Name != "orders" {
			t.Fatalf("patched %+v", d)
		}
		r = s.do(t, "PATCH", "/v1/databases/"+created.ID, tok, map[string]any{"password": ""})
		r.JSON(t, &d)
		if d.HasPassword {
			t.Fatal("empty password did not clear it")
		}
		r = s.do(t, "PATCH", "/v1/databases/"+created.ID, tok, map[string]any{"port": 0})
		wantCode(t, r, http.StatusBadRequest)
		if r.Fields(t)["port"] == "" {
			t.Fatalf("no port field in %s", r.Body)
		}
	})

	t.Run("OtherUserGets404", func(t *testing.T) {
		other := s.register(t, "intruder@example.com").Tokens.Access.Token
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/v1/databases/" + created.ID, nil},
			{"PATCH", "/v1/databases/" + created.ID, map[string]any{"name": "mine"}},
			{"DELETE", "/v1/databases/" + created.ID, nil},
			{"POST", "/v1/databases/test-connection", map[string]any{"databaseId": created.ID}},
		} {
			r := s.do(t, c.method, c.path, other, c.body)
			wantCode(t, r, http.StatusNotFound)
			if strings.Contains(string(r.Body), "orders") {
				t.Fatalf("404 body leaks data: %s", r.Body)
			}
		}
		r := s.do(t, "GET", "/v1/databases", other, nil)
		if strings.Contains(string(r.Body), created.ID) {
			t.Fatalf("other user's list shows the database: %s", r.Body)
		}
		// Still there, unchanged, for its owner.
		r = s.do(t, "GET", "/v1/databases/"+created.ID, tok, nil)
		wantCode(t, r, http.StatusOK)
		var d dbResp
		r.JSON(t, &d)
		if d.Name != "orders" {
			t.Fatalf("another user changed the database: %+v", d)
		}
	})

	t.Run("AgentOfAnotherUser", func(t *testing.T) {
		other := s.register(t, "agentowner@example.com")
		agentID := enrollAgent(t, s, other.Tokens.Access.Token)
		body := validDB()
		body["agentId"] = agentID
		r := s.do(t, "POST", "/v1/databases", tok, body)
		wantCode(t, r, http.StatusNotFound)
		if r.Fields(t)["agentId"] == "" {
			t.Fatalf("404 does not name agentId: %s", r.Body)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		wantCode(t, s.do(t, "DELETE", "/v1/databases/"+created.ID, tok, nil), http.StatusNoContent)
		wantCode(t, s.do(t, "GET", "/v1/databases/"+created.ID, tok, nil), http.StatusNotFound)
		wantCode(t, s.do(t, "DELETE", "/v1/databases/"+created.ID, tok, nil), http.StatusNotFound)
	})
}

func TestDatabaseValidation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "v@example.com").Tokens.Access.Token
	with := func(k string, v any) map[string]any {
		b := validDB()
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return b
	}
	cases := []struct {
		name  string
		body  any
		code  int
		field string
	}{
		{"PortTooHigh", with("port", 70000), 400, "port"},
		{"PortNotNumber", with("port", "5432x"), 400, "port"},
		{"UnknownType", with("type", "oracle"), 400, "type"},
		{"MissingHost", with("host", nil), 400, "host"},
		{"HostLooksLikeOption", with("host", "-oProxyCommand=x"), 400, "host"},
		{"MissingName", with("name", nil), 400, "name"},
		{"MissingUsername", with("username", ""), 400, "username"},
		{"MissingDatabase", with("database", nil), 400, "database"},
		{"UserIDNotSettable", with("userId", uuid.NewString()), 400, "userId"},
		{"MalformedJSON", `{"name": "x",`, 400, ""},
		{"NotAnObject", `[1,2]`, 400, ""},
		{"EmptyBody", ``, 400, ""},
		{"Oversized", `{"name":"` + strings.Repeat("a", 2<<20) + `"}`, 413, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.do(t, "POST", "/v1/databases", tok, c.body)
			wantCode(t, r, c.code)
			f := r.Fields(t)
			if c.field != "" && f[c.field] == "" {
				t.Fatalf("error does not name %q: %s", c.field, r.Body)
			}
		})
	}
	t.Run("EveryBadFieldNamed", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/databases", tok, map[string]any{"type": "oracle", "port": 0})
		wantCode(t, r, 400)
		f := r.Fields(t)
		for _, k := range []string{"name", "type", "host", "port", "username", "database"} {
			if f[k] == "" {
				t.Errorf("field %s not named in %s", k, r.Body)
			}
		}
	})
	t.Run("UnknownIDIs404", func(t *testing.T) {
		wantCode(t, s.do(t, "GET", "/v1/databases/"+uuid.NewString(), tok, nil), 404)
		wantCode(t, s.do(t, "GET", "/v1/databases/not-a-uuid", tok, nil), 404)
	})
}

// TestMongoDBConnectionFields: MongoDB databases keep authSource, tls and
// replicaSet, and default to port 27017; other types refuse those fields,
// and bad names are refused on their field.
func TestMongoDBConnectionFields(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "mongo-fields@example.com").Tokens.Access.Token
	r := s.do(t, "POST", "/v1/databases", tok, map[string]any{"name": "events", "type": "mongodb", "host": "mongo.internal",
		"username": "backup", "password": "p4ss-word", "database": "events", "authSource": "admin", "tls": true, "replicaSet": "rs0"})
	wantCode(t, r, http.StatusCreated)
	var d struct {
		ID                     string
		Port                   int
		AuthSource, ReplicaSet *string
		TLS                    bool
	}
	r.JSON(t, &d)
	if d.Port != 27017 || d.AuthSource == nil || *d.AuthSource != "admin" || !d.TLS || d.ReplicaSet == nil || *d.ReplicaSet != "rs0" {
		t.Fatalf("created %+v", d)
	}
	// Clearing them.
	r = s.do(t, "PATCH", "/v1/databases/"+d.ID, tok, map[string]any{"authSource": "", "tls": false})
	wantCode(t, r, http.StatusOK)
	d.AuthSource, d.ReplicaSet, d.TLS = nil, nil, false
	r.JSON(t, &d)
	if d.AuthSource != nil || d.TLS || d.ReplicaSet == nil || *d.ReplicaSet != "rs0" {
		t.Fatalf("after clearing %+v", d)
	}
	for name, body := range map[string]map[string]any{
		"authSourceOnPostgres": {"authSource": "admin"},
		"tlsOnPostgres":        {"tls": true},
	} {
		b := validDB()
		for k, v := range body {
			b[k] = v
		}
		r := s.do(t, "POST", "/v1/databases", tok, b)
		wantCode(t, r, http.StatusBadRequest)
		for k := range body {
			if !strings.Contains(string(r.Body), k) {
				t.Errorf("%s: %s", name, r.Body)
			}
		}
	}
	r = s.do(t, "POST", "/v1/databases", tok, map[string]any{"name": "x", "type": "mongodb", "host": "h", "database": "d", "replicaSet": "rs 0/$"})
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.Body), "replicaSet") {
		t.Fatalf("bad replica set: %s", r.Body)
	}
}

// TestMSSQLConnectionFields: SQL Server databases keep instance and encrypt,
// and default to port 1433; other types refuse those fields, and bad values
// are refused on their field.
func TestMSSQLConnectionFields(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "mssql-fields@example.com").Tokens.Access.Token
	r := s.do(t, "POST", "/v1/databases", tok, map[string]any{"name": "erp", "type": "mssql", "host": "sql.internal",
		"username": "backup", "password": "p4ss-word", "database": "erp", "instance": "SQLEXPRESS", "encrypt": "strict"})
	wantCode(t, r, http.StatusCreated)
	type mssqlDB struct {
		ID, Instance, Encrypt string
		Port                  int
	}
	var d mssqlDB
	r.JSON(t, &d)
	if d.Port != 1433 || d.Instance != "SQLEXPRESS" || d.Encrypt != "strict" {
		t.Fatalf("created %+v", d)
	}
	t.Run("ReadBack", func(t *testing.T) {
		var got mssqlDB
		r := s.do(t, "GET", "/v1/databases/"+d.ID, tok, nil)
		wantCode(t, r, http.StatusOK)
		r.JSON(t, &got)
		if got != d {
			t.Errorf("get %+v, want %+v", got, d)
		}
		var list struct{ Results []mssqlDB }
		r = s.do(t, "GET", "/v1/databases", tok, nil)
		wantCode(t, r, http.StatusOK)
		r.JSON(t, &list)
		if len(list.Results) != 1 || list.Results[0] != d {
			t.Errorf("list %+v, want [%+v]", list.Results, d)
		}
	})
	t.Run("Update", func(t *testing.T) {
		r := s.do(t, "PATCH", "/v1/databases/"+d.ID, tok, map[string]any{"encrypt": "optional"})
		wantCode(t, r, http.StatusOK)
		var got mssqlDB
		r.JSON(t, &got)
		if got.Instance != "SQLEXPRESS" || got.Encrypt != "optional" {
			t.Fatalf("after changing encrypt %+v", got)
		}
		// Clearing them: the default instance, mandatory encryption.
		r = s.do(t, "PATCH", "/v1/databases/"+d.ID, tok, map[string]any{"instance": "", "encrypt": ""})
		wantCode(t, r, http.StatusOK)
		if strings.Contains(string(r.Body), `"instance"`) || strings.Contains(string(r.Body), `"encrypt"`) {
			t.Fatalf("after clearing %s", r.Body)
		}
	})
	mongo := map[string]any{"name": "events", "type": "mongodb", "host": "mongo.internal", "database": "events"}
	sqlServer := map[string]any{"name": "erp", "type": "mssql", "host": "sql.internal", "username": "backup", "database": "erp"}
	for _, c := range []struct {
		name  string
		base  map[string]any
		field string
		value string
	}{
		{"BogusEncrypt", sqlServer, "encrypt", "bogus"},
		{"InstanceOnPostgres", validDB(), "instance", "SQLEXPRESS"},
		{"EncryptOnPostgres", validDB(), "encrypt", "mandatory"},
		{"EncryptOnMongoDB", mongo, "encrypt", "strict"},
		{"InstanceWithBackslash", sqlServer, "instance", `sql\SQLEXPRESS`},
		{"InstanceWithSlash", sqlServer, "instance", "a/b"},
		{"InstanceWithControl", sqlServer, "instance", "SQL\x00EXPRESS"},
		{"InstanceTooLong", sqlServer, "instance", strings.Repeat("i", 129)},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := map[string]any{c.field: c.value}
			for k, v := range c.base {
				b[k] = v
			}
			r := s.do(t, "POST", "/v1/databases", tok, b)
			wantCode(t, r, http.StatusBadRequest)
			if f := r.Fields(t); f[c.field] == "" || len(f) != 1 {
				t.Fatalf("error does not name only %q: %s", c.field, r.Body)
			}
		})
	}
	t.Run("TypeChangeDropsThem", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/databases", tok, map[string]any{"name": "erp2", "type": "mssql", "host": "sql.internal",
			"username": "backup", "database": "erp", "instance": "SQLEXPRESS", "encrypt": "strict"})
		wantCode(t, r, http.StatusCreated)
		var got mssqlDB
		r.JSON(t, &got)
		r = s.do(t, "PATCH", "/v1/databases/"+got.ID, tok, map[string]any{"type": "postgresql", "port": 5432})
		wantCode(t, r, http.StatusOK)
		got = mssqlDB{}
		r.JSON(t, &got)
		if got.Instance != "" || got.Encrypt != "" {
			t.Fatalf("after changing the type %+v", got)
		}
	})
}
