package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/rahatback/rahatback/chunkstore"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/securefile"
	"github.com/rahatback/rahatback/storage"
)

// ChunkedKey is where a chunked backup's index is stored:
// <job>/<UTC time>-<run><engine ext>.chunks; its packs go under
// <job>/packs/<run>/.
func ChunkedKey(jobID, runID string, at time.Time, engineExt string) string {
	return path.Join(jobID, at.UTC().Format("20060102T150405Z")+"-"+runID+engineExt+chunkstore.IndexSuffix)
}

// IsChunked reports whether key is a chunked backup's index.
func IsChunked(key string) bool { return strings.HasSuffix(key, chunkstore.IndexSuffix) }

// identities opens the job identity sealed to this agent (none when
// sealedID is "").
func (h *Handlers) identities(sealedID string) ([]age.Identity, error) {
	if sealedID == "" {
		return nil, nil
	}
	raw, err := sealed.Open(h.Identity, sealedID)
	if err != nil {
		return nil, errors.New("this agent cannot open the job key sent to it; revoke and re-enroll the agent")
	}
	id, err := age.ParseX25519Identity(string(raw))
	if err != nil {
		return nil, fmt.Errorf("bad job key: %w", err)
	}
	return []age.Identity{id}, nil
}

// chunkErr maps the chunk store's errors onto the agent's, so that a
// restore says the target was left alone and a verification fails its
// checks rather than erroring.
func chunkErr(err error) error {
	switch {
	case err == nil || errors.Is(err, ErrChecksum) || errors.Is(err, ErrDamaged) || errors.Is(err, ErrWrongKey):
		return err
	case errors.Is(err, chunkstore.ErrChecksum):
		return ErrChecksum
	case errors.Is(err, chunkstore.ErrWrongKey):
		return ErrWrongKey
	case errors.Is(err, chunkstore.ErrDamaged):
		return fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	return err
}

// chunkReader maps the errors of a chunked backup's stream.
type chunkReader struct{ r io.Reader }

func (c chunkReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = chunkErr(err)
	}
	return n, err
}

// openChunked opens a chunked backup's dump: its index checked against
// ref's checksum, its chunks against their ids as they stream.
func (h *Handlers) openChunked(ctx context.Context, store storage.Storage, ref events.ObjectRef) (*chunkstore.Index, io.ReadCloser, error) {
	ids, err := h.identities(ref.SealedIdentity)
	if err != nil {
		return nil, nil, err
	}
	ix, err := chunkstore.ReadIndex(ctx, store, ref.Key, ref.Checksum, ids...)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, fmt.Errorf("the backup file %s is no longer in storage", ref.Key)
	} else if err != nil {
		return nil, nil, chunkErr(err)
	}
	rc := ix.Reader(ctx, store, chunkstore.Dir(ref.Key))
	return ix, struct {
		io.Reader
		io.Closer
	}{chunkReader{rc}, rc}, nil
}

// chunkedJournal is a journal entry of a chunked backup in progress, or
// of a failed one whose objects could not be deleted: the agent deletes
// what it stored at its next start (a redelivered command is reported
// failed, never run again, so nothing else will).
type chunkedJournal struct {
	Storage events.StorageSpec `json:"storage"` // secrets stay sealed to this agent
	Key     string             `json:"key"`
	RunID   string             `json:"runId"`
}

const chunkedSuffix = ".chunked"

func (h *Handlers) chunkedStart(runID string, spec events.StorageSpec, key string) func() {
	if h.JournalDir == "" {
		return func() {}
	}
	p := filepath.Join(h.JournalDir, runID+chunkedSuffix)
	data, _ := json.Marshal(chunkedJournal{Storage: spec, Key: key, RunID: runID})
	if err := securefile.Write(p, data); err != nil {
		h.Logger.Warn("backup journal not written", "err", err)
		return func() {}
	}
	return func() { os.Remove(p) }
}

// RecoverChunked deletes what chunked backups interrupted by a crash
// stored (their packs, index and manifest), and returns how many it
// cleaned.
func (h *Handlers) RecoverChunked(ctx context.Context) (int, error) {
	return h.replayJournal(chunkedSuffix, "could not clean an interrupted chunked backup; will retry at next start", func(data []byte) error {
		var j chunkedJournal
		if err := json.Unmarshal(data, &j); err != nil {
			return err
		}
		store, err := h.storageFor(j.Storage)
		if err != nil {
			return err
		}
		return deleteChunked(ctx, store, j.Key, j.RunID)
	})
}

// deleteChunked deletes a chunked backup: index, manifest and the packs it
// wrote. What is already gone counts as deleted.
func deleteChunked(ctx context.Context, store storage.Storage, key, runID string) error {
	if err := chunkstore.Delete(ctx, store, key, runID); err != nil {
		return err
	}
	if err := store.Delete(ctx, key+pipeline.ManifestSuffix); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return nil
}

// backupChunked is backup for a chunked job: the dump goes through the
// chunk store, reusing the parent's chunks when the command names one.
func (h *Handlers) backupChunked(ctx context.Context, cmd events.BackupCommand, started time.Time, store storage.Storage,
	eng engines.Engine, conn engines.Conn, estimate int64, recipients []age.Recipient, publish Publisher, keepAlive func()) (*backupResult, error) {
	key := ChunkedKey(cmd.JobID, cmd.RunID, started, eng.Spec().Extension)
	typ, fallback := cmd.Chain.Type, ""
	var parent *chunkstore.Index
	if p := cmd.Chain.Parent; p != nil && typ != chunkstore.Full {
		ids, err := h.identities(cmd.SealedIdentity)
		if err != nil {
			return nil, err
		}
		parent, err = chunkstore.ReadIndex(ctx, store, p.Key, p.Checksum, ids...)
		switch {
		case err != nil:
			fallback = fmt.Sprintf("the previous backup %s could not be read (%v); a full backup was made instead", p.BackupID, err)
		case parent.BackupID != p.BackupID || parent.JobID != cmd.JobID:
			fallback = fmt.Sprintf("the previous backup's index at %s is not backup %s of this job; a full backup was made instead", p.Key, p.BackupID)
		case parent.Encrypted != (len(recipients) > 0) || parent.Compression != cmd.Compression:
			fallback = "the job's compression or encryption changed since the previous backup; a full backup was made instead"
		case parent.Recipients != chunkstore.RecipientsID(recipients):
			fallback = "the job's encryption recipients changed since the previous backup; a full backup starts a chain with new keys"
		}
		if fallback == "" {
			// A chain with a lost pack cannot be built on.
			if pk, err := missingPack(ctx, store, p.Key, parent.Packs, ""); err != nil {
				return nil, err
			} else if pk != "" {
				writer, _, _ := strings.Cut(pk, "/")
				fallback = fmt.Sprintf("pack %s of backup %s, which the previous backup uses, is missing; a full backup was made instead", pk, writer)
			}
		}
		if fallback != "" {
			h.Logger.Warn("chain parent unusable", "runId", cmd.RunID, "why", fallback)
			parent, typ = nil, chunkstore.Full
		}
	} else {
		typ = chunkstore.Full
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The journal entry goes once the backup is stored, or once what a
	// failure stored is deleted; otherwise the next start deletes it.
	done := h.chunkedStart(cmd.RunID, cmd.Storage, key)
	pr, pw := io.Pipe()
	type written struct {
		ix   *chunkstore.Index
		data []byte
		err  error
	}
	wrote := make(chan written, 1)
	go func() {
		w := chunkstore.Write{Store: store, Key: key, BackupID: cmd.RunID, JobID: cmd.JobID, Compression: cmd.Compression,
			Recipients: recipients, Parent: parent, Type: typ}
		ix, data, err := w.Run(ctx, pr)
		pr.CloseWithError(err) // unblocks the dump if storage fails first
		wrote <- written{ix, data, err}
	}()
	raw, stop := h.dumpProgress(ctx, cmd.RunID, estimate, publish, keepAlive)
	conn.ForChunks = true // a server's own compression would defeat the dedup
	info, dumpErr := eng.Dump(ctx, conn, io.MultiWriter(raw, pw))
	stop()
	if dumpErr != nil {
		pw.CloseWithError(dumpErr)
		if res := <-wrote; !isUnclean(res.err) {
			done()
		}
		return nil, dumpErr
	}
	pw.Close()
	res := <-wrote
	if res.err != nil {
		if !isUnclean(res.err) {
			done()
		}
		return nil, fmt.Errorf("storing the backup: %w", res.err)
	}
	ix := res.ix
	fail := func(err error) (*backupResult, error) {
		if deleteChunked(context.WithoutCancel(ctx), store, key, cmd.RunID) == nil {
			done()
		}
		return nil, err
	}
	// The parent's packs must still be there: a deletion that raced this
	// backup would leave it unreadable.
	if pk, err := missingPack(ctx, store, key, ix.Packs, cmd.RunID); err != nil {
		return fail(err)
	} else if pk != "" {
		return fail(fmt.Errorf("pack %s of an earlier backup, which this one reuses, was deleted during the backup; the next backup will be a full", pk))
	}
	sum := sha256.Sum256(res.data)
	encryption := pipeline.EncryptionNone
	if len(recipients) > 0 {
		encryption = pipeline.EncryptionAge
	}
	deps := ix.DependsOn()
	if deps == nil {
		deps = []string{}
	}
	m := &pipeline.Manifest{Version: pipeline.ManifestVersion, BackupID: cmd.RunID, JobID: cmd.JobID,
		Engine: cmd.Conn.Type, ServerVersion: info.ServerVersion, ToolVersion: info.ToolVersion,
		Database: cmd.Conn.Database, Format: info.Format, RawSize: raw.n.Load(), StoredSize: int64(len(res.data)) + ix.StoredBytes,
		Checksum: hex.EncodeToString(sum[:]), ChecksumAlgorithm: "sha256", Compression: cmd.Compression, Encryption: encryption,
		StartedAt: started, CompletedAt: time.Now().UTC(), Tables: info.Tables, Consistency: info.Consistency,
		Inventory: pipeline.InventoryObjects, Objects: info.Objects,
		Chain: &pipeline.Chain{Type: ix.Type, Parent: ix.Parent, Base: ix.Base, DependsOn: deps, Chunks: len(ix.Chunks),
			NewChunks: ix.NewChunks, NewRawBytes: ix.NewRawBytes, Packs: ix.PacksWritten, PackBytes: ix.StoredBytes,
			IndexSize: int64(len(res.data)), DumpSHA256: ix.SHA256, Fallback: fallback}}
	if m.Tables == nil {
		m.Tables = []pipeline.TableCount{}
	}
	if m.RawSize != ix.RawSize {
		return fail(fmt.Errorf("the chunk store took %d bytes of a %d-byte dump", ix.RawSize, m.RawSize))
	}
	data, err := m.Marshal()
	if err == nil {
		_, err = store.Put(context.WithoutCancel(ctx), key+pipeline.ManifestSuffix, strings.NewReader(string(data)))
	}
	if err != nil {
		return fail(fmt.Errorf("storing the manifest: %w", err))
	}
	done()
	if n, err := collectPacks(context.WithoutCancel(ctx), store, key, append(cmd.Chain.Keep, cmd.RunID), time.Now().Add(-OrphanAge)); err != nil {
		h.Logger.Warn("collecting unreferenced packs", "jobId", cmd.JobID, "err", err)
	} else if n > 0 {
		h.Logger.Info("deleted unreferenced packs", "jobId", cmd.JobID, "packs", n)
	}
	return &backupResult{key: key, m: m, manifest: data}, nil
}

// OrphanAge is how old the newest pack of a backup the control plane no
// longer keeps must be before collectPacks deletes its packs: far beyond
// the time between a command being built and run.
const OrphanAge = 24 * time.Hour

// collectPacks deletes, in the job of index key, the packs of every
// backup not in keep whose packs are all older than before, and returns
// how many it deleted.
func collectPacks(ctx context.Context, store storage.Storage, key string, keep []string, before time.Time) (int, error) {
	objs, err := store.List(ctx, chunkstore.PacksPrefix(chunkstore.Dir(key)))
	if err != nil {
		return 0, err
	}
	prefix := chunkstore.PacksPrefix(chunkstore.Dir(key))
	byRun := map[string][]storage.Object{}
	for _, o := range objs {
		run, _, ok := strings.Cut(strings.TrimPrefix(o.Key, prefix), "/")
		if ok && !slices.Contains(keep, run) {
			byRun[run] = append(byRun[run], o)
		}
	}
	n := 0
	for _, packs := range byRun {
		if slices.ContainsFunc(packs, func(o storage.Object) bool { return !o.ModTime.Before(before) }) {
			continue
		}
		for _, o := range packs {
			if err := store.Delete(ctx, o.Key); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func isUnclean(err error) bool {
	var u *chunkstore.Unclean
	return errors.As(err, &u)
}

// missingPack is the first of packs (named "<backup>/<n>", in the job of
// index key) not in storage, or "" when all are; packs of backup skip are
// not checked. One listing of the job's packs, not a request per pack.
func missingPack(ctx context.Context, store storage.Storage, key string, packs []string, skip string) (string, error) {
	objs, err := store.List(ctx, chunkstore.PacksPrefix(chunkstore.Dir(key)))
	if err != nil {
		return "", fmt.Errorf("listing the job's packs: %w", err)
	}
	have := make(map[string]bool, len(objs))
	for _, o := range objs {
		have[o.Key] = true
	}
	for _, p := range packs {
		if skip != "" && strings.HasPrefix(p, skip+"/") {
			continue
		}
		if !have[chunkstore.PackKey(chunkstore.Dir(key), p)] {
			return p, nil
		}
	}
	return "", nil
}
