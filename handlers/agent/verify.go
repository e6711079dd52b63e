package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rahatback/rahatback/chunkstore"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mongodb/archive"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
)

// Verify checks a stored backup at its level, reading it once, streamed:
//
//   - BASIC: the object exists, its size and SHA-256 match what was
//     recorded, it decrypts and decompresses completely, and its manifest
//     agrees;
//   - DATABASE: BASIC, and the dump, parsed by its engine, ends with the
//     engine's completion marker and holds the tables, rows, content
//     hashes and schema objects its manifest recorded;
//   - FULL: DATABASE, and the dump restores into a scratch database
//     (engines.ScratchPrefix + the verification id) made on cmd.Target's
//     server, whose own dump gives the manifest's tables, rows, hashes and
//     objects again; the scratch database is dropped whatever happens, and
//     at the agent's next start after a crash (RecoverScratch).
//
// It publishes started, progress and completed (with every check) or
// failed (when it could not run), and returns an error only when the
// outcome could not be published.
func (h *Handlers) Verify(ctx context.Context, cmd events.VerifyCommand, publish Publisher, keepAlive func()) error {
	ev := func(id string) events.VerifyEvent {
		return events.VerifyEvent{V: events.Version, ID: cmd.VerifyID + ":" + id, VerifyID: cmd.VerifyID,
			BackupID: cmd.BackupID, Level: cmd.Level, At: time.Now().UTC()}
	}
	if err := publish(ctx, events.KindVerify, events.PhaseStarted, cmd.VerifyID+":started", ev("started")); err != nil {
		return err
	}
	if !slices.Contains(Levels, cmd.Level) {
		fail := ev("failed")
		fail.Error = fmt.Sprintf("verification level %q is not supported by this agent", cmd.Level)
		return publish(context.WithoutCancel(ctx), events.KindVerify, events.PhaseFailed, fail.ID, fail)
	}
	v := &verification{h: h, cmd: cmd, res: &events.VerificationResult{VerificationMethod: cmd.Level}}
	v.step.Store("reading the backup")
	stop := h.progress(ctx, ProgressInterval, keepAlive, func(seq int64) {
		p := ev(fmt.Sprintf("progress:%d", seq))
		p.Seq, p.Step, p.Bytes = seq, v.step.Load().(string), v.read.Load()
		total := cmd.Object.Size
		if IsChunked(cmd.Object.Key) {
			total = cmd.Object.RawSize
		}
		p.Percent = percent(p.Bytes, total)
		if err := publish(ctx, events.KindVerify, events.PhaseProgress, p.ID, p); err != nil {
			h.Logger.Debug("progress not published", "err", err)
		}
	})
	err := v.run(ctx)
	stop()
	if err != nil {
		fail := ev("failed")
		fail.Error = err.Error()
		return publish(context.WithoutCancel(ctx), events.KindVerify, events.PhaseFailed, fail.ID, fail)
	}
	res := v.finish()
	done := ev("completed")
	done.Result = res
	h.Logger.Info("verification done", "backupId", cmd.BackupID, "level", cmd.Level, "status", res.OverallStatus)
	return publish(context.WithoutCancel(ctx), events.KindVerify, events.PhaseCompleted, done.ID, done)
}

// Levels are the verification levels, in increasing depth.
var Levels = []string{"BASIC", "DATABASE", "FULL"}

// verification is one Verify under way.
type verification struct {
	h    *Handlers
	cmd  events.VerifyCommand
	res  *events.VerificationResult
	step atomic.Value // string: what it is doing, for progress
	read atomic.Int64 // stored bytes read
}

func (v *verification) add(name string, ok bool, format string, args ...any) {
	v.res.Checks = append(v.res.Checks, events.Check{Check: name, Passed: ok, Message: fmt.Sprintf(format, args...)})
}

func (v *verification) finish() *events.VerificationResult {
	v.res.OverallStatus = "PASSED"
	for _, c := range v.res.Checks {
		if !c.Passed {
			v.res.OverallStatus = "FAILED"
		}
	}
	return v.res
}

func (v *verification) deep() bool { return v.cmd.Level != "BASIC" }
func (v *verification) full() bool { return v.cmd.Level == "FULL" }

// run adds every check to v.res; an error means it could not run at all.
func (v *verification) run(ctx context.Context) error {
	ref := v.cmd.Object
	store, err := v.h.storageFor(ref.Storage)
	if err != nil {
		return err
	}
	obj, err := store.Stat(ctx, ref.Key)
	if errors.Is(err, storage.ErrNotFound) {
		v.add("exists", false, "no object at %s", ref.Key)
		return nil
	} else if err != nil {
		return err
	}
	v.add("exists", true, "found %s", ref.Key)
	chunked := IsChunked(ref.Key)
	if !chunked {
		v.add("size", obj.Size == ref.Size, "stored %d bytes, recorded %d", obj.Size, ref.Size)
	}

	// The manifest first: DATABASE and FULL compare against it.
	m, merr := v.manifest(ctx, store)
	if chunked {
		switch {
		case merr != nil || m.Chain == nil:
			v.add("size", false, "the manifest does not record the chunk index's size")
		default:
			v.add("size", obj.Size == m.Chain.IndexSize, "chunk index of %d bytes, recorded %d", obj.Size, m.Chain.IndexSize)
		}
	}

	var eng engines.Engine
	if v.deep() {
		typ := v.cmd.Engine
		if typ == "" && m != nil {
			typ = m.Engine
		}
		if eng, err = v.h.Engines.Lookup(typ); err != nil {
			return err
		}
	}
	var scratch *scratchDB
	if v.full() {
		if scratch, err = v.createScratch(ctx, eng); err != nil {
			return err
		}
		if scratch != nil {
			defer v.dropScratch(scratch)
		}
	}

	var stored *pipeline.DigestReader
	var dec io.ReadCloser
	var rawSize int64
	var chain *chunkstore.Index
	if chunked {
		chain, dec, err = v.h.openChunked(ctx, store, ref)
		switch {
		case errors.Is(err, ErrChecksum):
			v.add("checksum", false, "the chunk index does not match its recorded sha256 %s", ref.Checksum)
		case errors.Is(err, ErrWrongKey):
			v.add("decryption", false, "%v", err)
		case err == nil:
			v.add("checksum", true, "chunk index sha256 %s as recorded", ref.Checksum)
			if chain.Encrypted {
				v.add("decryption", true, "index opened with the job's key (age X25519); chunks are sealed with XChaCha20-Poly1305")
			}
			dec = readCloser{&tallyReader{r: dec, n: &v.read}, dec}
		case errors.Is(err, ErrDamaged):
		default:
			return err
		}
	} else {
		f, gerr := store.Get(ctx, ref.Key, 0)
		if gerr != nil {
			return gerr
		}
		defer f.Close()
		stored = pipeline.NewDigestReader(&tallyReader{r: f, n: &v.read})
		var plain io.Reader
		plain, err = v.h.decrypt(stored, ref)
		if strings.HasSuffix(ref.Key, ".age") {
			if err != nil {
				v.add("decryption", false, "%v", err)
			} else {
				v.add("decryption", true, "opened with the job's key (age X25519)")
			}
		}
		if err == nil {
			dec, err = pipeline.NewDecompressor(plain, ref.Compression)
		}
	}
	var docs map[string]int64 // BASIC: a mongodump archive's documents per collection
	var inspector engines.Inspector
	var load *scratchLoad
	var server *serverCheck
	if err == nil {
		counted := &countingReader{r: dec}
		switch {
		case v.deep():
			inspector = eng.Inspector()
			sinks := &fanout{}
			sinks.add(inspector)
			size := rawSizeOf(ref, m)
			if scratch != nil {
				load = v.startLoad(ctx, eng, scratch, size)
				sinks.add(load.pw)
			} else if sv, ok := eng.(engines.ServerVerifier); ok && !v.full() {
				server = v.startServerCheck(ctx, sv, size, m)
				if server != nil {
					sinks.add(server.pw)
				}
			}
			_, err = io.Copy(sinks, counted)
			if load != nil {
				load.end(err)
			}
			if server != nil {
				server.end(err)
			}
		case isArchive(ref.Key):
			var aerr error
			docs, aerr = checkArchive(counted)
			if errors.Is(aerr, archive.ErrFormat) {
				v.add("archive", false, "%v", aerr)
			} else if aerr == nil {
				v.add("archive", true, "mongodump archive: %d collections and views, every block framed and every CRC-64 matching", len(docs))
			}
			err = aerr
			if errors.Is(aerr, archive.ErrFormat) {
				_, err = io.Copy(io.Discard, counted) // the rest, for the size and checksum
			}
		default:
			_, err = io.Copy(io.Discard, counted)
		}
		rawSize = counted.n.Load()
		dec.Close()
	}
	decompressed := err == nil
	switch {
	case chunked && decompressed:
		v.add("chunks", true, "%d chunks in %d packs decrypted, decompressed and matched their ids; the %d-byte dump matches its sha256",
			len(chain.Chunks), len(chain.Packs), rawSize)
	case chunked:
		v.add("chunks", false, "%v", err)
		var pe *chunkstore.PackError
		if errors.As(err, &pe) {
			v.res.DamagedBackups = append(v.res.DamagedBackups, pe.Backup)
		}
	case decompressed:
		v.add("decompression", true, "%s stream intact: %d bytes of dump", ref.Compression, rawSize)
	default:
		v.add("decompression", false, "%s stream damaged: %v", ref.Compression, err)
	}
	if stored != nil {
		if _, err := io.Copy(io.Discard, stored); err != nil {
			return err
		}
		sum := stored.Sum()
		v.add("checksum", sum == ref.Checksum, "sha256 %s, recorded %s", sum, ref.Checksum)
	}

	switch {
	case merr != nil:
		v.add("manifest", false, "%v", merr)
	case m.Checksum != ref.Checksum || m.StoredSize != ref.Size:
		v.add("manifest", false, "manifest records %d bytes, sha256 %s; history records %d bytes, sha256 %s", m.StoredSize, m.Checksum, ref.Size, ref.Checksum)
	case decompressed && m.RawSize != rawSize:
		v.add("manifest", false, "manifest records %d bytes of dump, found %d", m.RawSize, rawSize)
	case docs != nil && !sameCounts(m.Tables, docs):
		v.add("manifest", false, "manifest's document counts differ from the archive's")
	default:
		v.add("manifest", true, "manifest agrees: %s %s, %d tables", m.Engine, m.ServerVersion, len(m.Tables))
	}
	if _, native := eng.(engines.ServerVerifier); native && inspector != nil {
		v.native(inspector, decompressed, server)
	} else if inspector != nil {
		v.database(inspector, decompressed, m)
	}
	if load != nil {
		v.restored(ctx, eng, scratch, load, m, rawSize)
	}
	return nil
}

// manifest reads and parses the backup's manifest.
func (v *verification) manifest(ctx context.Context, store storage.Storage) (*pipeline.Manifest, error) {
	mf, err := store.Get(ctx, v.cmd.Object.Key+pipeline.ManifestSuffix, 0)
	if err != nil {
		return nil, fmt.Errorf("manifest missing: %v", err)
	}
	data, err := io.ReadAll(io.LimitReader(mf, 64<<20))
	mf.Close()
	if err != nil {
		return nil, fmt.Errorf("manifest unreadable: %v", err)
	}
	m, err := pipeline.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("manifest unreadable: %v", err)
	}
	return m, nil
}

// database adds DATABASE's checks: what the dump holds against what the
// manifest recorded.
func (v *verification) database(in engines.Inspector, whole bool, m *pipeline.Manifest) {
	got, err := in.Inspection()
	switch {
	case err != nil:
		v.add("completion marker", false, "the dump does not parse: %v", err)
		return
	case !whole:
		v.add("completion marker", false, "the dump could not be read to its end")
		return
	case !got.Complete:
		v.add("completion marker", false, "the dump does not end with its engine's completion marker: it is incomplete")
	default:
		v.add("completion marker", true, "the dump ends with its engine's completion marker")
	}
	if m == nil {
		v.add("tables", false, "no manifest to compare the dump with")
		return
	}
	rows, hashes := pipeline.CompareTables(m.Tables, got.Tables, "in the dump")
	if len(rows) > 0 {
		v.add("tables", false, "%s", pipeline.Summarize(rows, 5))
	} else {
		v.add("tables", true, "%d tables, %d rows, as the manifest records", len(m.Tables), totalRows(m.Tables))
	}
	if m.Inventory < pipeline.InventoryObjects {
		v.add("schema objects", true, "not recorded at backup time (the backup predates it): the dump defines %s", pipeline.CountObjects(got.Objects))
		return
	}
	if len(hashes) > 0 {
		v.add("content", false, "%s", pipeline.Summarize(hashes, 5))
	} else {
		v.add("content", true, "every table's content hash matches the manifest's")
	}
	if d := pipeline.CompareObjects(m.Objects, got.Objects, "from the dump"); len(d) > 0 {
		v.add("schema objects", false, "%s", pipeline.Summarize(d, 5))
	} else {
		v.add("schema objects", true, "%s, as the manifest records", pipeline.CountObjects(m.Objects))
	}
}

func totalRows(ts []pipeline.TableCount) int64 {
	var n int64
	for _, t := range ts {
		n += t.Rows
	}
	return n
}

// readCloser joins a reader and another's Close.
type readCloser struct {
	io.Reader
	io.Closer
}

// tallyReader adds the bytes read to n.
type tallyReader struct {
	r io.Reader
	n *atomic.Int64
}

func (t *tallyReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.n.Add(int64(n))
	return n, err
}

// fanout writes to several writers; one that fails is left out from then
// on, and Write never fails (its own errors are the writers' business).
type fanout struct{ ws []io.Writer }

func (f *fanout) add(w io.Writer) { f.ws = append(f.ws, w) }

func (f *fanout) Write(p []byte) (int, error) {
	for i, w := range f.ws {
		if w == nil {
			continue
		}
		if _, err := w.Write(p); err != nil {
			f.ws[i] = nil
		}
	}
	return len(p), nil
}

// Delete removes a stored backup and its manifest.
func (h *Handlers) Delete(ctx context.Context, req events.DeleteRequest) events.DeleteReply {
	store, err := h.storageFor(req.Storage)
	if err != nil {
		return events.DeleteReply{V: events.Version, Error: err.Error()}
	}
	if req.Packs != "" {
		// A chunked backup: its packs first, so a failure leaves the
		// index, and a retry finds the rest.
		if _, err := chunkstore.DeletePacks(ctx, store, req.Key, req.Packs); err != nil {
			return events.DeleteReply{V: events.Version, Error: err.Error()}
		}
	}
	err = store.Delete(ctx, req.Key)
	notFound := errors.Is(err, storage.ErrNotFound)
	if err != nil && !notFound {
		return events.DeleteReply{V: events.Version, Error: err.Error()}
	}
	if err := store.Delete(ctx, req.Key+pipeline.ManifestSuffix); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return events.DeleteReply{V: events.Version, Error: err.Error()}
	}
	return events.DeleteReply{V: events.Version, OK: true, NotFound: notFound}
}

// isArchive reports whether key is a mongodump archive (the MongoDB
// engine's extension, before compression's and encryption's).
func isArchive(key string) bool {
	s, _ := engines.Lookup(engines.MongoDB)
	return strings.Contains(key, s.Extension+".") || strings.HasSuffix(key, s.Extension)
}

// checkArchive reads a whole mongodump archive, checking its framing and
// every namespace's CRC-64, and returns the documents of each collection.
func checkArchive(r io.Reader) (map[string]int64, error) {
	ar, err := archive.NewReader(r)
	if err != nil {
		return nil, err
	}
	docs := map[string]int64{}
	for _, ns := range ar.Namespaces() {
		if ns.Type != "view" {
			docs[ns.Collection] = 0
		}
	}
	for {
		it, err := ar.Next()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if !it.EOF {
			docs[it.Collection]++
		}
	}
}

// sameCounts reports whether a manifest's tables are the archive's
// collections with the same documents.
func sameCounts(tables []pipeline.TableCount, docs map[string]int64) bool {
	if len(tables) != len(docs) {
		return false
	}
	for _, t := range tables {
		if n, ok := docs[t.Name]; !ok || n != t.Rows {
			return false
		}
	}
	return true
}

// rawSizeOf is the dump's length: the history's, else the manifest's.
func rawSizeOf(ref events.ObjectRef, m *pipeline.Manifest) int64 {
	if ref.RawSize > 0 || m == nil {
		return ref.RawSize
	}
	return m.RawSize
}

// serverCheck is a backup being checked by its engine's server
// (engines.ServerVerifier) as it is read.
type serverCheck struct {
	pw     *io.PipeWriter
	done   chan struct{}
	checks []engines.Check
	err    error
}

// startServerCheck has the server of the verification's target check
// what is written to the returned check's pw; nil, with a failed check,
// when the command names no server.
func (v *verification) startServerCheck(ctx context.Context, sv engines.ServerVerifier, size int64, m *pipeline.Manifest) *serverCheck {
	if v.cmd.Target == nil {
		v.add("server verification", false, "the command names no server to verify the backup on")
		return nil
	}
	teng, conn, err := v.h.openConn(*v.cmd.Target)
	if err != nil {
		v.add("server verification", false, "%v", err)
		return nil
	}
	if eng, ok := sv.(engines.Engine); ok && teng.Spec().Type != eng.Spec().Type {
		v.add("server verification", false, "the verification target is a %s database; the backup is %s", teng.Spec().Name, eng.Spec().Name)
		return nil
	}
	if m != nil && m.Database != "" {
		conn.Database = m.Database // the backup set's database, as its header names it
	}
	pr, pw := io.Pipe()
	c := &serverCheck{pw: pw, done: make(chan struct{})}
	v.step.Store("having the server verify the backup")
	go func() {
		defer close(c.done)
		c.checks, c.err = sv.VerifyBackup(ctx, conn, engines.WithSize(pr, size))
		pr.CloseWithError(errLoadEnded)
	}()
	return c
}

// end closes the check's input, failing it when the backup could not be
// read whole (readErr), and waits for it.
func (c *serverCheck) end(readErr error) {
	if readErr != nil {
		c.pw.CloseWithError(readErr)
	} else {
		c.pw.Close()
	}
	<-c.done
}

// native adds DATABASE's checks for a backup only its server can read:
// its media header, then what the server reported (nil at FULL, whose
// test restore and integrity check go further).
func (v *verification) native(in engines.Inspector, whole bool, c *serverCheck) {
	if _, err := in.Inspection(); err != nil {
		v.add("media header", false, "%v", err)
	} else {
		v.add("media header", true, "starts with a Microsoft Tape Format media header")
	}
	if c == nil {
		return
	}
	if c.err != nil {
		v.add("server verification", false, "%v", c.err)
		return
	}
	for _, ch := range c.checks {
		v.add(ch.Name, ch.OK, "%s", ch.Detail)
	}
	if !whole && len(c.checks) > 0 {
		v.add("server verification", false, "the backup could not be read to its end")
	}
}
