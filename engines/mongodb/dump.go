package mongodb

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mongodb/archive"
)

// Dump writes database c.Database to w in mongodump's archive format,
// version archive.Version: every collection with its options, indexes
// and documents, and every view, one namespace after another
// (concurrent_collections 1). On a replica set or a sharded cluster all
// collections are read in one snapshot session (one cluster time); on a
// standalone server each collection is read by one query. DumpInfo
// records which (Consistency) and the documents of every collection,
// counted as written. A dump stops at the first error of the server, of
// w or of ctx, and never reports a partial archive as a success.
func (e Engine) Dump(ctx context.Context, c engines.Conn, w io.Writer) (engines.DumpInfo, error) {
	info := engines.DumpInfo{Format: e.Spec().Format, ToolVersion: e.toolVersion()}
	cl, err := connect(c)
	if err != nil {
		return info, err
	}
	defer disconnect(cl)
	if info.ServerVersion, err = buildInfo(ctx, cl); err != nil {
		return info, err
	}
	var hello struct {
		SetName        string `bson:"setName"`
		Msg            string `bson:"msg"`
		MaxWireVersion int32  `bson:"maxWireVersion"`
	}
	if err := cl.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return info, serverError(err)
	}
	readCtx := ctx
	info.Consistency = PerCollection
	// Snapshot reads came with MongoDB 5.0 (wire version 13).
	if (hello.SetName != "" || hello.Msg == "isdbgrid") && hello.MaxWireVersion >= 13 {
		sess, err := cl.StartSession(options.Session().SetSnapshot(true))
		if err != nil {
			return info, serverError(err)
		}
		defer sess.EndSession(context.WithoutCancel(ctx))
		readCtx = mongo.NewSessionContext(ctx, sess)
		info.Consistency = Snapshot
	}

	db := cl.Database(c.Database)
	colls, err := listCollections(ctx, db)
	if err != nil {
		return info, err
	}
	namespaces := make([]archive.Namespace, 0, len(colls))
	for _, col := range colls {
		if col.Type == "timeseries" {
			// mongodump writes a time series as its system.buckets
			// collection; this writer does not (yet), and a backup that
			// no tool could restore must not pass for one.
			return info, fmt.Errorf("collection %q is a time series collection, which RahatBack cannot back up yet", col.Name)
		}
		ns, err := namespaceOf(ctx, db, col)
		if err != nil {
			return info, err
		}
		namespaces = append(namespaces, ns)
	}
	// The archive is read back as it is written: the tables' hashes and
	// the objects come from the same reader that verification uses.
	in := e.Inspector()
	defer in.Inspection()
	w = io.MultiWriter(w, in)
	aw, err := archive.NewWriter(w, archive.Header{ConcurrentCollections: 1, ServerVersion: info.ServerVersion,
		ToolVersion: info.ToolVersion}, namespaces)
	if err != nil {
		return info, err
	}
	for _, col := range colls {
		if err := aw.Begin(c.Database, col.Name); err != nil {
			return info, err
		}
		if col.Type != "view" {
			if _, err := dumpCollection(readCtx, db.Collection(col.Name), aw); err != nil {
				return info, fmt.Errorf("collection %q: %w", col.Name, err)
			}
		}
		if err := aw.End(); err != nil {
			return info, err
		}
	}
	if err := aw.Close(); err != nil {
		return info, err
	}
	got, err := in.Inspection()
	if err != nil {
		return info, fmt.Errorf("the archive written does not read back: %w", err)
	}
	info.Tables, info.Objects = got.Tables, got.Objects
	return info, ctx.Err()
}

func (e Engine) toolVersion() string {
	if e.ToolVersion != "" {
		return e.ToolVersion
	}
	return "rahatback"
}

// dumpCollection writes every document of coll, as the server sent it.
func dumpCollection(ctx context.Context, coll *mongo.Collection, aw *archive.Writer) (int64, error) {
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return 0, serverError(err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var n int64
	for cur.Next(ctx) {
		if err := aw.Doc(cur.Current); err != nil {
			return n, err
		}
		n++
	}
	if err := cur.Err(); err != nil {
		return n, serverError(err)
	}
	return n, nil
}

// namespaceOf is col's prelude entry: its metadata as mongodump writes it,
// canonical extended JSON of {options, indexes, uuid, collectionName,
// type}, options left out when empty, uuid as 32 hex digits.
func namespaceOf(ctx context.Context, db *mongo.Database, col collection) (archive.Namespace, error) {
	ns := archive.Namespace{DB: db.Name(), Collection: col.Name}
	meta := bson.D{}
	if len(col.Options) > 5 {
		meta = append(meta, bson.E{Key: "options", Value: col.Options})
	}
	indexes := bson.A{}
	if col.Type != "view" {
		cur, err := db.Collection(col.Name).Indexes().List(ctx)
		if err != nil {
			return ns, fmt.Errorf("indexes of %q: %w", col.Name, serverError(err))
		}
		defer cur.Close(context.WithoutCancel(ctx))
		for cur.Next(ctx) {
			indexes = append(indexes, bson.Raw(append([]byte(nil), cur.Current...)))
		}
		if err := cur.Err(); err != nil {
			return ns, fmt.Errorf("indexes of %q: %w", col.Name, serverError(err))
		}
	}
	meta = append(meta, bson.E{Key: "indexes", Value: indexes})
	if len(col.Info.UUID.Data) == 16 {
		meta = append(meta, bson.E{Key: "uuid", Value: hex.EncodeToString(col.Info.UUID.Data)})
	}
	meta = append(meta, bson.E{Key: "collectionName", Value: col.Name})
	if col.Type == "view" || col.Type == "timeseries" {
		meta = append(meta, bson.E{Key: "type", Value: col.Type})
		ns.Type = col.Type
	}
	js, err := bson.MarshalExtJSON(meta, true, false)
	if err != nil {
		return ns, err
	}
	ns.Metadata = string(js)
	return ns, nil
}
