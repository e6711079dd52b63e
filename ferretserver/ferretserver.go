// Package ferretserver runs a real MongoDB wire-protocol server inside the
// test binary: FerretDB v1 (embedded through its ferretdb package) over
// SQLite files in a directory of its own, on a random loopback port. It
// is what the MongoDB engine's tests talk to, since no MongoDB server is
// packaged for this project's machines.
//
// What FerretDB v1 does not do, and what these tests therefore cannot
// exercise: authentication (the embedded server accepts any user and
// password), roles, views, TTL/partial/text/2dsphere indexes, replica
// sets, snapshot reads and change streams.
package ferretserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Server is a running FerretDB.
type Server struct {
	uri    string
	host   string
	port   int
	cancel context.CancelFunc
	done   chan error
}

// Start runs FerretDB with its SQLite backend in dir (created), listening
// on 127.0.0.1 at a random port, and waits until it answers a ping. Stop
// ends it. Its log goes to log (nil: discarded).
func Start(dir string, log io.Writer) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if log == nil {
		log = io.Discard
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
		Logger:    slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, fmt.Errorf("ferretserver: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- f.Run(ctx) }()

	// The listener binds inside Run: wait for the URI to name a port.
	deadline := time.Now().Add(30 * time.Second)
	for {
		uri := f.MongoDBURI()
		if !strings.Contains(uri, ":0/") {
			s.uri = uri
			break
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("ferretserver: no listener within 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.parseHostPort(); err != nil {
		s.Stop()
		return nil, err
	}
	for {
		err := s.ping()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("ferretserver: no answer within 30 s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) parseHostPort() error {
	opts := options.Client().ApplyURI(s.uri)
	if err := opts.Validate(); err != nil || len(opts.Hosts) != 1 {
		return fmt.Errorf("ferretserver: URI %q: %v", s.uri, err)
	}
	var port int
	host := opts.Hosts[0]
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return fmt.Errorf("ferretserver: URI %q has no port", s.uri)
	}
	if _, err := fmt.Sscan(host[i+1:], &port); err != nil {
		return err
	}
	s.host, s.port = host[:i], port
	return nil
}

func (s *Server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.Client()
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background())
	return c.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err()
}

// URI is the server's mongodb:// URI.
func (s *Server) URI() string { return s.uri }

// Host and Port are where the server listens.
func (s *Server) Host() string { return s.host }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// Client connects to the server.
func (s *Server) Client() (*mongo.Client, error) {
	return mongo.Connect(options.Client().ApplyURI(s.uri).SetServerSelectionTimeout(10 * time.Second))
}

// Stop ends the server and waits for it.
func (s *Server) Stop() {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
	}
}

// Content is one collection as tests compare it.
type Content struct {
	Docs int64
	// Hash is a SHA-256 of the documents in _id order, then of the
	// indexes (name, key, unique), sorted by name.
	Hash string
}

// Contents is every collection of db (views aside) with its content.
func Contents(ctx context.Context, db *mongo.Database) (map[string]Content, error) {
	cols, err := db.ListCollections(ctx, bson.D{{Key: "type", Value: "collection"}})
	if err != nil {
		return nil, err
	}
	var names []string
	collOptions := map[string]string{} // listCollections options, as extended JSON
	for cols.Next(ctx) {
		name := cols.Current.Lookup("name").StringValue()
		names = append(names, name)
		if o, ok := cols.Current.Lookup("options").DocumentOK(); ok {
			js, err := bson.MarshalExtJSON(o, true, false)
			if err != nil {
				return nil, err
			}
			collOptions[name] = string(js)
		}
	}
	cols.Close(ctx)
	if err := cols.Err(); err != nil {
		return nil, err
	}
	out := map[string]Content{}
	for _, name := range names {
		h := sha256.New()
		cur, err := db.Collection(name).Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			return nil, err
		}
		var n int64
		for cur.Next(ctx) {
			h.Write(cur.Current)
			n++
		}
		err = cur.Err()
		cur.Close(ctx)
		if err != nil {
			return nil, err
		}
		ic, err := db.Collection(name).Indexes().List(ctx)
		if err != nil {
			return nil, err
		}
		var specs []string
		for ic.Next(ctx) {
			// The whole spec but what the server sets (v, ns).
			var spec bson.D
			elems, err := ic.Current.Elements()
			if err != nil {
				ic.Close(ctx)
				return nil, err
			}
			for _, e := range elems {
				if k := e.Key(); k != "v" && k != "ns" {
					spec = append(spec, bson.E{Key: k, Value: e.Value()})
				}
			}
			js, err := bson.MarshalExtJSON(spec, true, false)
			if err != nil {
				ic.Close(ctx)
				return nil, err
			}
			specs = append(specs, string(js))
		}
		ic.Close(ctx)
		specs = append(specs, "options "+collOptions[name])
		slices.Sort(specs)
		h.Write([]byte(strings.Join(specs, "\n")))
		out[name] = Content{Docs: n, Hash: hex.EncodeToString(h.Sum(nil))}
	}
	return out, nil
}

// LoadExtJSON inserts into coll the documents of r, one extended JSON
// document per line (mongoexport's output, canonical or relaxed), and
// returns how many.
func LoadExtJSON(ctx context.Context, coll *mongo.Collection, r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var docs []any
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var d bson.D
		if err := bson.UnmarshalExtJSON(line, false, &d); err != nil {
			return 0, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		docs = append(docs, d)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if len(docs) == 0 {
		return 0, nil
	}
	_, err := coll.InsertMany(ctx, docs)
	return len(docs), err
}
