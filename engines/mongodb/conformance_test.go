package mongodb_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/enginetest"
	"github.com/rahatback/rahatback/engines/mongodb"
	"github.com/rahatback/rahatback/engines/mongodb/archive"
	"github.com/rahatback/rahatback/ferretserver"
)

var srv *ferretserver.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rahatback-ferretdb-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv, err = ferretserver.Start(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	srv.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is the conformance suite's view of FerretDB. Exec takes
// {"commands": [command, …]} in extended JSON and runs them in order.
type server struct{ cl *mongo.Client }

func newServer(t testing.TB) *server {
	cl, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Disconnect(context.Background()) })
	return &server{cl}
}

func (s *server) Conn(database string) engines.Conn {
	return engines.Conn{Host: srv.Host(), Port: srv.Port(), Database: database}
}

// CreateDatabase creates the database with one collection, "created":
// MongoDB has no empty databases.
func (s *server) CreateDatabase(t *testing.T, name string) {
	t.Helper()
	if err := s.cl.Database(name).CreateCollection(context.Background(), "created"); err != nil {
		t.Fatalf("create database %q: %v", name, err)
	}
}

func (s *server) DropDatabase(t *testing.T, name string) {
	t.Helper()
	if err := s.cl.Database(name).Drop(context.Background()); err != nil {
		t.Errorf("drop database %q: %v", name, err)
	}
}

func (s *server) Exists(t *testing.T, name string) bool {
	t.Helper()
	names, err := s.cl.ListDatabaseNames(context.Background(), bson.D{{Key: "name", Value: name}})
	if err != nil {
		t.Fatal(err)
	}
	return len(names) > 0
}

func (s *server) Exec(t *testing.T, database, statements string) {
	t.Helper()
	var in struct {
		Commands []bson.D `bson:"commands"`
	}
	if err := bson.UnmarshalExtJSON([]byte(statements), true, &in); err != nil {
		t.Fatalf("commands: %v", err)
	}
	for _, cmd := range in.Commands {
		if err := s.cl.Database(database).RunCommand(context.Background(), cmd).Err(); err != nil {
			t.Fatalf("%v: %v", cmd[0], err)
		}
	}
}

// Contents is every collection with its documents' count and a hash of
// the documents in _id order and of its indexes (name, key, unique).
func (s *server) Contents(t *testing.T, database string) map[string]enginetest.Table {
	t.Helper()
	return contents(t, s.cl.Database(database))
}

func contents(t testing.TB, db *mongo.Database) map[string]enginetest.Table {
	t.Helper()
	cs, err := ferretserver.Contents(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]enginetest.Table{}
	for name, c := range cs {
		out[name] = enginetest.Table{Rows: c.Docs, Hash: c.Hash}
	}
	return out
}

// hostileSchema makes collections with awkward names (quotes, spaces,
// non-ASCII, a leading '-', a reserved word, names that differ only in
// case; not dots, which FerretDB's renameCollection refuses, nor double
// quotes, which break its SQLite backend) holding every common BSON type, large values and several
// _id types, with compound and unique indexes.
func hostileSchema() string {
	big := strings.Repeat("ü€x", 60000) // ~360 KB
	doc := func(id string, extra string) string {
		return `{"_id": ` + id + `, "s": "naïve 'quoted' \"double\" \\ back", "i": {"$numberInt": "-42"},
			"l": {"$numberLong": "9007199254740993"}, "d": {"$numberDouble": "3.141592653589793"}, "neg0": {"$numberDouble": "-0.0"},
			"b": true, "n": null, "date": {"$date": {"$numberLong": "1700000000123"}},
			"bin": {"$binary": {"base64": "AAEC/w==", "subType": "00"}}, "uuid": {"$binary": {"base64": "c3RyaW5nIHV1aWQgMTIzNA==", "subType": "04"}},
			"oid": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "re": {"$regularExpression": {"pattern": "^a.*b$", "options": "i"}},
			"ts": {"$timestamp": {"t": 1700000000, "i": 7}}, "arr": [1, "two", {"three": 3}, {"four": [4]}],
			"nested": {"a": {"b": {"c": "deep"}}, "empty": {}}, "emptyArr": []` + extra + `}`
	}
	var b strings.Builder
	b.WriteString(`{"commands": [`)
	b.WriteString(`{"create": "a 'q' ü select"}, {"create": "-dash"}, {"create": "Mixed"}, {"create": "mixed"}, {"create": "dots_not_here"},`)
	b.WriteString(`{"insert": "a 'q' ü select", "documents": [` + doc(`{"$numberInt": "1"}`, "") + `,` + doc(`"text id ü"`, "") + `,` +
		doc(`{"$oid": "65a1b2c3d4e5f60718293a4c"}`, `, "big": "`+big+`"`) + `]},`)
	var many []string
	for i := 0; i < 300; i++ {
		many = append(many, fmt.Sprintf(`{"_id": {"$numberInt": "%d"}, "n": {"$numberInt": "%d"}, "a": "a%d", "b": {"$numberInt": "%d"}}`, i, i, i%7, i%5))
	}
	b.WriteString(`{"insert": "Mixed", "documents": [` + strings.Join(many, ",") + `]},`)
	b.WriteString(`{"insert": "mixed", "documents": [{"_id": "lower", "v": "only one"}]},`)
	b.WriteString(`{"insert": "-dash", "documents": [{"_id": {"$numberInt": "1"}}, {"_id": {"$numberInt": "2"}, "x": null}]},`)
	b.WriteString(`{"insert": "dots_not_here", "documents": [{"_id": {"$numberLong": "1"}, "k": "v"}]},`)
	b.WriteString(`{"createIndexes": "Mixed", "indexes": [{"key": {"n": {"$numberInt": "1"}}, "name": "n unique", "unique": true},
		{"key": {"a": {"$numberInt": "1"}, "b": {"$numberInt": "-1"}}, "name": "a_1_b_-1"}]},`)
	b.WriteString(`{"createIndexes": "a 'q' ü select", "indexes": [{"key": {"s": {"$numberInt": "1"}}, "name": "by s"}]}`)
	b.WriteString(`]}`)
	return b.String()
}

const change = `{"commands": [
	{"update": "Mixed", "updates": [{"q": {}, "u": {"$set": {"changed": true}}, "multi": true}]},
	{"delete": "-dash", "deletes": [{"q": {}, "limit": {"$numberInt": "0"}}]},
	{"insert": "mixed", "documents": [{"_id": "extra"}]}
]}`

func TestConformance(t *testing.T) {
	enginetest.Run(t, mongodb.Engine{}, newServer(t), enginetest.Options{
		HostileSchema: hostileSchema(),
		Change:        change,
		// Bytes after the archive's last block: the restore must refuse
		// the archive, as mongorestore does.
		Failing:            "this is not a block of the archive",
		NoAuth:             true,
		PlainDatabaseNames: true,
	})
}

// TestRestoreLeavesOtherCollections: collections of the target that the
// backup does not hold stay as they were; those it holds are replaced,
// with their indexes, and no scratch or undo collection is left.
func TestRestoreLeavesOtherCollections(t *testing.T) {
	ctx := context.Background()
	s := newServer(t)
	src, dst := "rb_keep_src", "rb_keep_dst"
	for _, d := range []string{src, dst} {
		s.CreateDatabase(t, d)
		t.Cleanup(func() { s.DropDatabase(t, d) })
	}
	s.Exec(t, src, `{"commands": [{"insert": "orders", "documents": [{"_id": 1, "v": "backup"}, {"_id": 2, "v": "backup"}]},
		{"createIndexes": "orders", "indexes": [{"key": {"v": 1}, "name": "by v"}]}]}`)
	s.Exec(t, dst, `{"commands": [{"insert": "orders", "documents": [{"_id": 1, "v": "old"}, {"_id": 3, "v": "old"}]},
		{"insert": "keep_me", "documents": [{"_id": "k"}]}]}`)
	keep := s.Contents(t, dst)["keep_me"]
	var dump bytes.Buffer
	if _, err := (mongodb.Engine{}).Dump(ctx, s.Conn(src), &dump); err != nil {
		t.Fatal(err)
	}
	if err := (mongodb.Engine{}).Restore(ctx, s.Conn(dst), &dump); err != nil {
		t.Fatal(err)
	}
	got, want := s.Contents(t, dst), s.Contents(t, src)
	if got["orders"] != want["orders"] || got["keep_me"] != keep || len(got) != 3 {
		t.Fatalf("after the restore: %+v; want orders %+v and keep_me %+v", got, want["orders"], keep)
	}
}

// TestRestoreRefusesWhatItCannotRestore: archives of several databases,
// of an oplog or of users and roles are refused before the target is
// touched.
func TestRestoreRefusesWhatItCannotRestore(t *testing.T) {
	s := newServer(t)
	dst := "rb_refuse_dst"
	s.CreateDatabase(t, dst)
	t.Cleanup(func() { s.DropDatabase(t, dst) })
	before := s.Contents(t, dst)
	for name, nss := range map[string][]archive.Namespace{
		"TwoDatabases": {{DB: "a", Collection: "x"}, {DB: "b", Collection: "y"}},
		"Oplog":        {{DB: "", Collection: "oplog"}},
		"UsersRoles":   {{DB: "a", Collection: "$admin.system.users"}},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := archive.NewWriter(&buf, archive.Header{ServerVersion: "7.0.0"}, nss)
			if err != nil {
				t.Fatal(err)
			}
			for _, ns := range nss {
				w.Begin(ns.DB, ns.Collection)
				w.End()
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			err = (mongodb.Engine{}).Restore(context.Background(), s.Conn(dst), &buf)
			if err == nil {
				t.Fatal("restored")
			}
			t.Log(err)
			if got := s.Contents(t, dst); !maps.Equal(got, before) {
				t.Fatalf("the target changed: %v", got)
			}
		})
	}
}
