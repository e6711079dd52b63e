package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mongodb/archive"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
)

// Verify checks a stored backup at BASIC level: the object exists, its size
// and SHA-256 match what was recorded, it decompresses completely, and its
// manifest agrees. It publishes started and completed (with every check) or
// failed (when it could not run), and returns an error only when the outcome
// could not be published.
func (h *Handlers) Verify(ctx context.Context, cmd events.VerifyCommand, publish Publisher, keepAlive func()) error {
	ev := func(id string) events.VerifyEvent {
		return events.VerifyEvent{V: events.Version, ID: cmd.VerifyID + ":" + id, VerifyID: cmd.VerifyID,
			BackupID: cmd.BackupID, Level: cmd.Level, At: time.Now().UTC()}
	}
	if err := publish(ctx, events.KindVerify, events.PhaseStarted, cmd.VerifyID+":started", ev("started")); err != nil {
		return err
	}
	if cmd.Level != "BASIC" {
		fail := ev("failed")
		fail.Error = fmt.Sprintf("verification level %q is not supported by this agent", cmd.Level)
		return publish(context.WithoutCancel(ctx), events.KindVerify, events.PhaseFailed, fail.ID, fail)
	}
	stop := h.progress(ctx, 10*time.Second, keepAlive, func(int64) {})
	res, err := h.verifyBasic(ctx, cmd.Object)
	stop()
	if err != nil {
		fail := ev("failed")
		fail.Error = err.Error()
		return publish(context.WithoutCancel(ctx), events.KindVerify, events.PhaseFailed, fail.ID, fail)
	}
	done := ev("completed")
	done.Result = res
	h.Logger.Info("verification done", "backupId", cmd.BackupID, "status", res.OverallStatus)
	return publish(context.WithoutCancel(ctx), events.KindVerify, events.PhaseCompleted, done.ID, done)
}

func (h *Handlers) verifyBasic(ctx context.Context, ref events.ObjectRef) (*events.VerificationResult, error) {
	store, err := h.storageFor(ref.Storage)
	if err != nil {
		return nil, err
	}
	res := &events.VerificationResult{VerificationMethod: "BASIC"}
	add := func(name string, ok bool, format string, args ...any) {
		res.Checks = append(res.Checks, events.Check{Check: name, Passed: ok, Message: fmt.Sprintf(format, args...)})
	}
	finish := func() *events.VerificationResult {
		res.OverallStatus = "PASSED"
		for _, c := range res.Checks {
			if !c.Passed {
				res.OverallStatus = "FAILED"
			}
		}
		return res
	}

	obj, err := store.Stat(ctx, ref.Key)
	if errors.Is(err, storage.ErrNotFound) {
		add("exists", false, "no object at %s", ref.Key)
		return finish(), nil
	} else if err != nil {
		return nil, err
	}
	add("exists", true, "found %s", ref.Key)
	add("size", obj.Size == ref.Size, "stored %d bytes, recorded %d", obj.Size, ref.Size)

	f, err := store.Get(ctx, ref.Key, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	stored := pipeline.NewDigestReader(f)
	var rawSize int64
	plain, err := h.decrypt(stored, ref)
	if strings.HasSuffix(ref.Key, ".age") {
		if err != nil {
			add("decryption", false, "%v", err)
		} else {
			add("decryption", true, "opened with the job's key (age X25519)")
		}
	}
	var dec io.ReadCloser
	if err == nil {
		dec, err = pipeline.NewDecompressor(plain, ref.Compression)
	}
	var docs map[string]int64 // a mongodump archive's documents per collection
	if err == nil {
		counted := &countingReader{r: dec}
		if isArchive(ref.Key) {
			var aerr error
			docs, aerr = checkArchive(counted)
			if errors.Is(aerr, archive.ErrFormat) {
				add("archive", false, "%v", aerr)
			} else if aerr == nil {
				add("archive", true, "mongodump archive: %d collections and views, every block framed and every CRC-64 matching", len(docs))
			}
			err = aerr
			if errors.Is(aerr, archive.ErrFormat) {
				_, err = io.Copy(io.Discard, counted) // the rest, for the size and checksum
			}
		} else {
			_, err = io.Copy(io.Discard, counted)
		}
		rawSize = counted.n.Load()
		dec.Close()
	}
	decompressed := err == nil
	if decompressed {
		add("decompression", true, "%s stream intact: %d bytes of dump", ref.Compression, rawSize)
	} else {
		add("decompression", false, "%s stream damaged: %v", ref.Compression, err)
	}
	if _, err := io.Copy(io.Discard, stored); err != nil {
		return nil, err
	}
	sum := stored.Sum()
	add("checksum", sum == ref.Checksum, "sha256 %s, recorded %s", sum, ref.Checksum)

	mf, err := store.Get(ctx, ref.Key+pipeline.ManifestSuffix, 0)
	if err != nil {
		add("manifest", false, "manifest missing: %v", err)
		return finish(), nil
	}
	data, err := io.ReadAll(io.LimitReader(mf, 16<<20))
	mf.Close()
	if err != nil {
		return nil, err
	}
	m, err := pipeline.ParseManifest(data)
	switch {
	case err != nil:
		add("manifest", false, "manifest unreadable: %v", err)
	case m.Checksum != ref.Checksum || m.StoredSize != ref.Size:
		add("manifest", false, "manifest records %d bytes, sha256 %s; history records %d bytes, sha256 %s", m.StoredSize, m.Checksum, ref.Size, ref.Checksum)
	case decompressed && m.RawSize != rawSize:
		add("manifest", false, "manifest records %d bytes of dump, found %d", m.RawSize, rawSize)
	case docs != nil && !sameCounts(m.Tables, docs):
		add("manifest", false, "manifest's document counts differ from the archive's")
	default:
		add("manifest", true, "manifest agrees: %s %s, %d tables", m.Engine, m.ServerVersion, len(m.Tables))
	}
	return finish(), nil
}

// Delete removes a stored backup and its manifest.
func (h *Handlers) Delete(ctx context.Context, req events.DeleteRequest) events.DeleteReply {
	store, err := h.storageFor(req.Storage)
	if err != nil {
		return events.DeleteReply{V: events.Version, Error: err.Error()}
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
