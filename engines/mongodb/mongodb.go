// Package mongodb is the MongoDB engine, on the official Go driver: it
// dumps one database into mongodump's archive format (package archive),
// so `mongorestore --archive` restores it without RahatBack, and restores
// such an archive into new collections beside the old ones, renamed into
// place only once everything loaded.
package mongodb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/rahatback/rahatback/engines"
)

// ConnectTimeout bounds server selection (connecting and finding a server).
const ConnectTimeout = 15 * time.Second

// Consistency of a dump, as its manifest records it.
const (
	// Snapshot: every collection was read at one cluster time (a replica
	// set or sharded cluster, with snapshot reads).
	Snapshot = "snapshot"
	// PerCollection: each collection was read by one query; collections
	// were read one after another (a standalone server has no snapshot
	// reads across collections).
	PerCollection = "per-collection"
)

// Engine drives MongoDB servers (and servers of its wire protocol).
type Engine struct {
	// ToolVersion names this writer in the archive's header; default
	// "rahatback".
	ToolVersion string
}

// Spec is the MongoDB engine's engines.Spec.
func (Engine) Spec() engines.Spec {
	s, _ := engines.Lookup(engines.MongoDB)
	return s
}

// clientOptions builds the driver's options field by field: no URI
// string exists, so the password is in no argument and no log, and no
// name can smuggle options in. Without a replica set name the driver
// connects to that one server directly.
func clientOptions(c engines.Conn) *options.ClientOptions {
	o := options.Client().SetHosts([]string{net.JoinHostPort(c.Host, strconv.Itoa(c.Port))}).
		SetServerSelectionTimeout(ConnectTimeout).SetConnectTimeout(ConnectTimeout).SetAppName("rahatback")
	if c.Username != "" {
		src := c.AuthSource
		if src == "" {
			src = c.Database
		}
		o.SetAuth(options.Credential{Username: c.Username, Password: c.Password, AuthSource: src, PasswordSet: true})
	}
	if c.TLS {
		o.SetTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	if c.ReplicaSet != "" {
		o.SetReplicaSet(c.ReplicaSet)
	} else {
		o.SetDirect(true)
	}
	return o
}

// connect opens a client for c.
func connect(c engines.Conn) (*mongo.Client, error) {
	if c.Host == "" {
		return nil, errors.New("no host")
	}
	return mongo.Connect(clientOptions(c))
}

func disconnect(cl *mongo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = cl.Disconnect(ctx)
}

// serverError is err with the server's own message when it has one.
func serverError(err error) error {
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.Message != "" {
		return errors.New(ce.Message)
	}
	return err
}

// buildInfo returns the server's version ("7.0.14").
func buildInfo(ctx context.Context, cl *mongo.Client) (string, error) {
	var bi struct {
		Version string `bson:"version"`
	}
	if err := cl.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&bi); err != nil {
		return "", serverError(err)
	}
	return bi.Version, nil
}

// Test connects, authenticates and returns "MongoDB <version>" from
// buildInfo. Errors are the server's own words (authentication failed…),
// or say the database has no collections (MongoDB creates a database with
// its first collection, so a misspelt name looks like an empty one).
func (Engine) Test(ctx context.Context, c engines.Conn) (string, error) {
	cl, err := connect(c)
	if err != nil {
		return "", err
	}
	defer disconnect(cl)
	v, err := buildInfo(ctx, cl)
	if err != nil {
		return "", err
	}
	names, err := cl.Database(c.Database).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return "", serverError(err)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("database %q has no collections: it does not exist on this server, or is empty", c.Database)
	}
	return "MongoDB " + v, nil
}

// Size returns the database's data size (dbStats.dataSize), the estimate
// behind the progress percentage.
func (Engine) Size(ctx context.Context, c engines.Conn) (int64, error) {
	cl, err := connect(c)
	if err != nil {
		return 0, err
	}
	defer disconnect(cl)
	var st bson.M
	if err := cl.Database(c.Database).RunCommand(ctx, bson.D{{Key: "dbStats", Value: 1}}).Decode(&st); err != nil {
		return 0, serverError(err)
	}
	switch v := st["dataSize"].(type) {
	case int32:
		return int64(v), nil
	case int64:
		return v, nil
	case float64:
		return int64(v), nil
	}
	return 0, nil
}

// collection is one entry of listCollections.
type collection struct {
	Name    string   `bson:"name"`
	Type    string   `bson:"type"`
	Options bson.Raw `bson:"options"`
	Info    struct {
		UUID bson.Binary `bson:"uuid"`
	} `bson:"info"`
}

// listCollections returns db's collections and views, without system
// collections (but system.js, as mongodump) and without the scratch and
// undo collections a restore that died left behind.
func listCollections(ctx context.Context, db *mongo.Database, opts ...options.Lister[options.ListCollectionsOptions]) ([]collection, error) {
	cur, err := db.ListCollections(ctx, bson.D{}, opts...)
	if err != nil {
		return nil, serverError(err)
	}
	var all []collection
	if err := cur.All(ctx, &all); err != nil {
		return nil, serverError(err)
	}
	out := all[:0]
	for _, c := range all {
		if strings.HasPrefix(c.Name, "system.") && c.Name != "system.js" ||
			strings.HasPrefix(c.Name, scratchPrefix) || strings.HasPrefix(c.Name, undoPrefix) {
			continue
		}
		out = append(out, c)
	}
	return out, nil
}
