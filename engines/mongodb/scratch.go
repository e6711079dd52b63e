package mongodb

import (
	"context"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mongodb/archive"
	"github.com/rahatback/rahatback/pipeline"
)

// inspector reads an archive written to it, in a goroutine reading the
// other end of a pipe.
type inspector struct {
	pw   *io.PipeWriter
	done chan struct{}
	res  engines.Inspection
	err  error
}

// Inspector reads a mongodump archive as archive.Reader checks it
// (framing, every CRC-64, the end): documents and content hash (over each
// document's raw BSON) of every collection, and the collections, views and
// indexes of its prelude. Complete means the archive ended properly;
// Write fails once the bytes are not a valid archive.
func (Engine) Inspector() engines.Inspector {
	pr, pw := io.Pipe()
	in := &inspector{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		in.res, in.err = inspectArchive(pr)
		pr.CloseWithError(in.err) // a writer after a format error gets it
		_, _ = io.Copy(io.Discard, pr)
	}()
	return in
}

func (in *inspector) Write(p []byte) (int, error) { return in.pw.Write(p) }

// Inspection ends the input (the archive must be whole by now).
func (in *inspector) Inspection() (engines.Inspection, error) {
	in.pw.Close()
	<-in.done
	return in.res, in.err
}

func inspectArchive(r io.Reader) (engines.Inspection, error) {
	var res engines.Inspection
	ar, err := archive.NewReader(r)
	if err != nil {
		return res, err
	}
	idx := map[string]int{}
	var hashes []pipeline.RowHash
	for _, ns := range ar.Namespaces() {
		typ := "collection"
		if ns.Type != "" {
			typ = ns.Type
		}
		res.Objects = append(res.Objects, pipeline.SchemaObject{Type: typ, Name: ns.Collection})
		var meta struct {
			Indexes []struct {
				Name string `bson:"name"`
			} `bson:"indexes"`
		}
		if err := bson.UnmarshalExtJSON([]byte(ns.Metadata), true, &meta); err != nil {
			return res, fmt.Errorf("%w: metadata of %q: %v", archive.ErrFormat, ns.Collection, err)
		}
		for _, ix := range meta.Indexes {
			res.Objects = append(res.Objects, pipeline.SchemaObject{Type: "index", Name: ns.Collection + "." + ix.Name})
		}
		if ns.Type != "view" {
			idx[ns.Collection] = len(res.Tables)
			res.Tables = append(res.Tables, pipeline.TableCount{Name: ns.Collection})
			hashes = append(hashes, pipeline.RowHash{})
		}
	}
	for {
		it, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, err
		}
		if i, ok := idx[it.Collection]; ok && !it.EOF {
			res.Tables[i].Rows++
			hashes[i].Add(it.Doc)
		}
	}
	for i := range res.Tables {
		res.Tables[i].Hash = hashes[i].String()
	}
	res.Complete = true
	return res, nil
}

// scratchMarker is the collection that makes a scratch database exist
// (MongoDB has no empty databases) until LoadScratch fills it.
const scratchMarker = "rahatback_scratch"

// CreateScratch creates database name with one empty collection, which
// LoadScratch drops once the archive is in. It fails when name exists; a
// user not authorized to create it gets an error wrapping
// engines.ErrPrivilege.
func (Engine) CreateScratch(ctx context.Context, c engines.Conn, name string) error {
	cl, err := connect(c)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	names, err := cl.ListDatabaseNames(ctx, bson.D{{Key: "name", Value: name}})
	if err != nil {
		return privilegeError(c, name, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("database %q already exists", name)
	}
	return privilegeError(c, name, serverError(cl.Database(name).CreateCollection(ctx, scratchMarker)))
}

// LoadScratch restores an archive into database name (Restore). A user
// not authorized to write there gets an error wrapping
// engines.ErrPrivilege.
func (e Engine) LoadScratch(ctx context.Context, c engines.Conn, name string, r io.Reader) error {
	c.Database = name
	if err := e.Restore(ctx, c, r); err != nil {
		return privilegeError(c, name, err)
	}
	cl, err := connect(c)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	return serverError(cl.Database(name).Collection(scratchMarker).Drop(ctx))
}

// DropScratch drops database name; dropping one that does not exist
// succeeds.
func (Engine) DropScratch(ctx context.Context, c engines.Conn, name string) error {
	cl, err := connect(c)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	return serverError(cl.Database(name).Drop(ctx))
}

// privilegeError wraps an Unauthorized (13) error in engines.ErrPrivilege
// with the role the user needs.
func privilegeError(c engines.Conn, name string, err error) error {
	var se mongo.ServerError
	if errors.As(err, &se) && se.HasErrorCode(13) {
		return fmt.Errorf("%w: the user %q is not authorized to create and write database %s (%v); grant it readWrite on that database (or readWriteAnyDatabase), or have the job name a verification target where it has it",
			engines.ErrPrivilege, c.Username, name, serverError(err))
	}
	return err
}

// ReadBack is a Dump of c into io.Discard: rows, content hashes and
// objects exactly as a backup records them.
func (e Engine) ReadBack(ctx context.Context, c engines.Conn) (engines.DumpInfo, error) {
	return e.Dump(ctx, c, io.Discard)
}
