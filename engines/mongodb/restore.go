package mongodb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mongodb/archive"
)

const (
	// insertBatchDocs and insertBatchBytes bound one insertMany.
	insertBatchDocs  = 1000
	insertBatchBytes = 8 << 20
	// maxNamespace is MongoDB's limit on "db.collection", in bytes.
	maxNamespace = 255
	// scratchPrefix and undoPrefix name the collections a restore loads
	// into and moves the old ones to, with a random tag per restore.
	scratchPrefix = "rbtmp_"
	undoPrefix    = "rbold_"
)

// metadata is the part of a prelude entry's metadata a restore uses.
type metadata struct {
	Options bson.D   `bson:"options"`
	Indexes []bson.D `bson:"indexes"`
}

// Restore loads the archive read from r into c.Database, whatever database
// the archive was dumped from:
//
//  1. every collection is created, with its options, under a scratch name
//     ("rbtmp_<tag>_<name>") in the target database, filled and indexed;
//     the archive's checksums are verified as it is read;
//  2. only when the whole archive loaded, the target's collections and
//     views of the archive's names are renamed aside ("rbold_<tag>_<name>")
//     or dropped (views), the scratch collections renamed to their names
//     and the archive's views created;
//  3. the old collections are dropped.
//
// A failure in 1 drops the scratch collections: the target is as it was.
// A failure in 2 undoes what 2 did (the error says if that failed too).
// After a restore the archive's collections and views are in the target as
// they were dumped; the target's collections and views of other names are
// left alone, as the other engines do. MongoDB cannot rename several collections atomically: during
// step 2 (renames only, no copying) readers may see a mix.
func (e Engine) Restore(ctx context.Context, c engines.Conn, r io.Reader) error {
	ar, err := archive.NewReader(r)
	if err != nil {
		return err
	}
	cl, err := connect(c)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	var tagb [4]byte
	if _, err := rand.Read(tagb[:]); err != nil {
		return err
	}
	rs := &restore{cl: cl, db: cl.Database(c.Database), tag: hex.EncodeToString(tagb[:]), metas: map[string]metadata{}}
	if err := rs.load(ctx, ar); err != nil {
		rs.dropScratch()
		return err
	}
	return rs.swap(ctx, ar.Namespaces())
}

type restore struct {
	cl      *mongo.Client
	db      *mongo.Database
	tag     string
	metas   map[string]metadata // by collection name
	scratch []string            // scratch collections created
}

func (rs *restore) scratchName(name string) string { return scratchPrefix + rs.tag + "_" + name }
func (rs *restore) undoName(name string) string    { return undoPrefix + rs.tag + "_" + name }

// load creates and fills the scratch collections.
func (rs *restore) load(ctx context.Context, ar *archive.Reader) error {
	var db string
	for i, ns := range ar.Namespaces() {
		switch {
		case i > 0 && ns.DB != db:
			return fmt.Errorf("the archive holds more than one database (%q and %q); RahatBack restores one", db, ns.DB)
		case ns.DB == "":
			return fmt.Errorf("the archive holds an oplog or a namespace without a database (%q), which RahatBack does not restore", ns.Collection)
		case strings.Contains(ns.Collection, "$") || strings.HasPrefix(ns.Collection, "system.") && ns.Collection != "system.js":
			return fmt.Errorf("the archive holds %q, a system or user-and-role namespace, which RahatBack does not restore", ns.Collection)
		}
		db = ns.DB
		var m metadata
		if ns.Metadata != "" {
			if err := bson.UnmarshalExtJSON([]byte(ns.Metadata), true, &m); err != nil {
				return fmt.Errorf("the metadata of %q: %w", ns.Collection, err)
			}
		}
		rs.metas[ns.Collection] = m
		if ns.Type == "view" {
			continue
		}
		if ns.Type == "timeseries" {
			return fmt.Errorf("collection %q is a time series collection, which this restore does not support", ns.Collection)
		}
		if n := len(rs.db.Name()) + 1 + len(rs.undoName(ns.Collection)); n > maxNamespace {
			return fmt.Errorf("collection %q: its name is too long to restore beside the old one (%d bytes with the database's, at most %d)", ns.Collection, n, maxNamespace)
		}
		cmd := bson.D{{Key: "create", Value: rs.scratchName(ns.Collection)}}
		for _, o := range m.Options {
			if o.Key != "viewOn" && o.Key != "pipeline" {
				cmd = append(cmd, o)
			}
		}
		rs.scratch = append(rs.scratch, rs.scratchName(ns.Collection))
		if err := rs.db.RunCommand(ctx, cmd).Err(); err != nil {
			return fmt.Errorf("create collection %q: %w", ns.Collection, serverError(err))
		}
	}
	var (
		batch []any
		size  int
		coll  string
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// Validated as mongorestore does by default: bypassing needs a
		// role beyond readWrite.
		_, err := rs.db.Collection(rs.scratchName(coll)).InsertMany(ctx, batch, options.InsertMany().SetOrdered(true))
		batch, size = batch[:0], 0
		if err != nil {
			return fmt.Errorf("insert into %q: %w", coll, serverError(err))
		}
		return nil
	}
	for {
		it, err := ar.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if it.Collection != coll {
			if err := flush(); err != nil {
				return err
			}
			coll = it.Collection
		}
		if it.EOF {
			if err := flush(); err != nil {
				return err
			}
			if err := rs.indexes(ctx, it.Collection); err != nil {
				return err
			}
			continue
		}
		if rs.isView(it.Collection) {
			return fmt.Errorf("the archive holds documents for view %q", it.Collection)
		}
		batch = append(batch, bson.Raw(append([]byte(nil), it.Doc...)))
		size += len(it.Doc)
		if len(batch) >= insertBatchDocs || size >= insertBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

func (rs *restore) isView(name string) bool {
	for _, o := range rs.metas[name].Options {
		if o.Key == "viewOn" {
			return true
		}
	}
	return false
}

// indexes builds the archive's indexes of collection name (but _id's,
// which create made), without the "ns" and "v" fields the server sets.
func (rs *restore) indexes(ctx context.Context, name string) error {
	if rs.isView(name) {
		return nil
	}
	var specs bson.A
	for _, ix := range rs.metas[name].Indexes {
		spec := bson.D{}
		isID := false
		for _, f := range ix {
			switch f.Key {
			case "ns", "v":
				continue
			case "name":
				isID = f.Value == "_id_"
			}
			spec = append(spec, f)
		}
		if !isID {
			specs = append(specs, spec)
		}
	}
	if len(specs) == 0 {
		return nil
	}
	err := rs.db.RunCommand(ctx, bson.D{{Key: "createIndexes", Value: rs.scratchName(name)}, {Key: "indexes", Value: specs}}).Err()
	if err != nil {
		return fmt.Errorf("indexes of %q: %w", name, serverError(err))
	}
	return nil
}

func (rs *restore) rename(ctx context.Context, from, to string) error {
	db := rs.db.Name()
	return serverError(rs.cl.Database("admin").RunCommand(ctx, bson.D{{Key: "renameCollection", Value: db + "." + from},
		{Key: "to", Value: db + "." + to}}).Err())
}

// cleanupCtx is for undoing after ctx ended.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

func (rs *restore) dropScratch() {
	ctx, cancel := cleanupCtx()
	defer cancel()
	for _, n := range rs.scratch {
		_ = rs.db.Collection(n).Drop(ctx)
	}
}

// swap puts the scratch collections and the archive's views in place of
// the target's collections and views.
func (rs *restore) swap(ctx context.Context, namespaces []archive.Namespace) error {
	existing, err := listCollections(ctx, rs.db)
	if err != nil {
		rs.dropScratch()
		return err
	}
	var (
		movedAside []string     // target collections renamed to their undo names
		droppedV   []collection // target views dropped
		placed     []string     // archive collections renamed into place
		createdV   []string     // archive views created
	)
	undo := func(cause error) error {
		uctx, cancel := cleanupCtx()
		defer cancel()
		var errs []error
		for _, v := range createdV {
			errs = append(errs, rs.db.Collection(v).Drop(uctx))
		}
		for _, n := range placed {
			errs = append(errs, rs.rename(uctx, n, rs.scratchName(n)))
		}
		for _, n := range movedAside {
			errs = append(errs, rs.rename(uctx, rs.undoName(n), n))
		}
		for _, v := range droppedV {
			if err := rs.createView(uctx, v.Name, v.Options); err != nil {
				def, _ := bson.MarshalExtJSON(v.Options, false, false)
				errs = append(errs, fmt.Errorf("view %q (%s) could not be created again: %w", v.Name, def, err))
			}
		}
		rs.dropScratch()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%w; undoing the restore failed too, the database may be incomplete (collections named %s%s_* hold the old data): %v",
				cause, undoPrefix, rs.tag, err)
		}
		return fmt.Errorf("%w (the database was left as it was)", cause)
	}
	byName := map[string]collection{}
	for _, col := range existing {
		byName[col.Name] = col
	}
	// Each name is cleared and filled back to back, so the window in
	// which an archive's name holds nothing stays short; stop the
	// applications writing to the target during a restore.
	for _, ns := range namespaces {
		col, exists := byName[ns.Collection]
		switch {
		case exists && col.Type == "view":
			if err := rs.db.Collection(col.Name).Drop(ctx); err != nil {
				return undo(fmt.Errorf("drop view %q: %w", col.Name, serverError(err)))
			}
			droppedV = append(droppedV, col)
		case exists:
			if err := rs.rename(ctx, col.Name, rs.undoName(col.Name)); err != nil {
				return undo(fmt.Errorf("move collection %q aside: %w", col.Name, err))
			}
			movedAside = append(movedAside, col.Name)
		}
		if ns.Type == "view" {
			continue
		}
		if err := rs.rename(ctx, rs.scratchName(ns.Collection), ns.Collection); err != nil {
			return undo(fmt.Errorf("rename collection %q into place: %w", ns.Collection, err))
		}
		placed = append(placed, ns.Collection)
	}
	for _, ns := range namespaces {
		if ns.Type != "view" {
			continue
		}
		opts, err := bson.Marshal(rs.metas[ns.Collection].Options)
		if err != nil {
			return undo(err)
		}
		if err := rs.createView(ctx, ns.Collection, opts); err != nil {
			return undo(fmt.Errorf("create view %q: %w", ns.Collection, err))
		}
		createdV = append(createdV, ns.Collection)
	}
	rs.scratch = nil
	// The restore is done; the old collections go.
	dctx, cancel := cleanupCtx()
	defer cancel()
	var leftover []string
	for _, n := range movedAside {
		if err := rs.db.Collection(rs.undoName(n)).Drop(dctx); err != nil {
			leftover = append(leftover, rs.undoName(n))
		}
	}
	if len(leftover) > 0 {
		return fmt.Errorf("the restore succeeded, but the old collections %s could not be dropped: drop them by hand", strings.Join(leftover, ", "))
	}
	return nil
}

// createView creates view name from its listCollections options
// (viewOn, pipeline, collation).
func (rs *restore) createView(ctx context.Context, name string, opts bson.Raw) error {
	cmd := bson.D{{Key: "create", Value: name}}
	elems, err := opts.Elements()
	if err != nil {
		return err
	}
	for _, e := range elems {
		cmd = append(cmd, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return serverError(rs.db.RunCommand(ctx, cmd).Err())
}
