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
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
