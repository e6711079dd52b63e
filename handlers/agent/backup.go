package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/sealed"
)

// Publisher publishes one of this agent's events on
// rahat.evt.<agent>.<kind>.<phase> with Nats-Msg-Id msgID.
type Publisher func(ctx context.Context, kind, phase, msgID string, payload any) error

// ProgressInterval is the minimum time between two progress events of a run.
const ProgressInterval = time.Second

// keepAliveEvery is how often a running command tells the broker it is
// still being worked on (its ack wait is a minute).
const keepAliveEvery = 10 * time.Second

// openConn turns a ConnSpec into engine and connection settings.
func (h *Handlers) openConn(c events.ConnSpec) (engines.Engine, engines.Conn, error) {
	eng, err := h.Engines.Lookup(c.Type)
	if err != nil {
		return nil, engines.Conn{}, err
	}
	pw, err := sealed.Open(h.Identity, c.SealedPassword)
	if err != nil {
		return nil, engines.Conn{}, errors.New("this agent cannot decrypt the database password sent to it; revoke and re-enroll the agent")
	}
	return eng, connOf(c, pw), nil
}

// BackupKey is where a run's backup is stored:
// <job>/<UTC time>-<run><engine ext><compression ext>[.age], the engine's
// extension being its Spec's (".sql").
func BackupKey(jobID, runID string, at time.Time, engineExt, compression string, encrypted bool) string {
	name := at.UTC().Format("20060102T150405Z") + "-" + runID + engineExt + pipeline.Extension(compression)
	if encrypted {
		name += ".age"
	}
	return path.Join(jobID, name)
}

// counter counts bytes for progress reports from another goroutine.
type counter struct{ n atomic.Int64 }

func (c *counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// progress publishes a progress event per ProgressInterval while work runs,
// and calls keepAlive so the command is not redelivered meanwhile.
func (h *Handlers) progress(ctx context.Context, every time.Duration, keepAlive func(), emit func(seq int64)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		var seq int64
		nudged := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				seq++
				emit(seq)
				// The command's ack deadline is a minute: a nudge every
				// ten seconds keeps it ours without chatter.
				if keepAlive != nil && time.Since(nudged) >= keepAliveEvery {
					keepAlive()
					nudged = time.Now()
				}
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func percent(done, total int64) int {
	if total <= 0 {
		return 0
	}
	p := int(done * 100 / total)
	if p > 99 {
		p = 99
	}
	return p
}

// Backup runs one backup: dump → compress → SHA-256 → storage in one
// stream, then the manifest beside it. It publishes started, progress and
// completed or failed, and returns an error only when the outcome event
// could not be published (the command is then retried).
func (h *Handlers) Backup(ctx context.Context, cmd events.BackupCommand, publish Publisher, keepAlive func()) error {
	started := time.Now().UTC()
	ev := func(id string) events.BackupEvent {
		return events.BackupEvent{V: events.Version, ID: cmd.RunID + ":" + id, RunID: cmd.RunID, At: time.Now().UTC()}
	}
	if err := publish(ctx, events.KindBackup, events.PhaseStarted, cmd.RunID+":started", ev("started")); err != nil {
		return err
	}
	res, err := h.backup(ctx, cmd, started, publish, keepAlive)
	if err != nil {
		h.Logger.Warn("backup failed", "runId", cmd.RunID, "err", err)
		fail := ev("failed")
		fail.Error = err.Error()
		return publish(context.WithoutCancel(ctx), events.KindBackup, events.PhaseFailed, fail.ID, fail)
	}
	done := ev("completed")
	done.FileName, done.StorageKey, done.FileSize, done.RawSize = path.Base(res.key), res.key, res.m.StoredSize, res.m.RawSize
	done.Checksum, done.ChecksumAlgorithm = res.m.Checksum, res.m.ChecksumAlgorithm
	done.DurationMs = res.m.CompletedAt.Sub(started).Milliseconds()
	done.Manifest = res.manifest
	if err := publish(context.WithoutCancel(ctx), events.KindBackup, events.PhaseCompleted, done.ID, done); err != nil {
		return err
	}
	h.Logger.Info("backup done", "runId", cmd.RunID, "key", res.key, "bytes", res.m.StoredSize, "rawBytes", res.m.RawSize)
	if cmd.Verify != "" {
		vc := events.VerifyCommand{V: events.Version, VerifyID: cmd.VerifyID, BackupID: cmd.RunID, Level: cmd.Verify,
			Object: events.ObjectRef{Storage: cmd.Storage, Key: res.key, Size: res.m.StoredSize, Checksum: res.m.Checksum, RawSize: res.m.RawSize,
				Compression: cmd.Compression, SealedIdentity: cmd.SealedIdentity},
			Engine: cmd.Conn.Type, Target: cmd.VerifyTarget}
		if vc.Target == nil {
			vc.Target = &cmd.Conn
		}
		return h.Verify(ctx, vc, publish, keepAlive)
	}
	return nil
}

type backupResult struct {
	key      string
	m        *pipeline.Manifest
	manifest []byte
}

func (h *Handlers) backup(ctx context.Context, cmd events.BackupCommand, started time.Time, publish Publisher, keepAlive func()) (*backupResult, error) {
	if !pipeline.ValidCompression(cmd.Compression) {
		return nil, fmt.Errorf("unknown compression %q", cmd.Compression)
	}
	store, err := h.storageFor(cmd.Storage)
	if err != nil {
		return nil, err
	}
	eng, conn, err := h.openConn(cmd.Conn)
	if err != nil {
		return nil, err
	}
	estimate, err := eng.Size(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the database: %w", err)
	}
	var recipients []age.Recipient
	for _, r := range cmd.Recipients {
		rc, err := age.ParseX25519Recipient(r)
		if err != nil {
			return nil, fmt.Errorf("bad encryption recipient %q: %w", r, err)
		}
		recipients = append(recipients, rc)
	}
	if cmd.Chain != nil {
		return h.backupChunked(ctx, cmd, started, store, eng, conn, estimate, recipients, publish, keepAlive)
	}
	key := BackupKey(cmd.JobID, cmd.RunID, started, eng.Spec().Extension, cmd.Compression, len(recipients) > 0)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	type putResult struct {
		n   int64
		err error
	}
	putDone := make(chan putResult, 1)
	done := h.journalStart(cmd.RunID, cmd.Storage, key)
	go func() {
		defer done()
		n, err := store.Put(ctx, key, pr)
		pr.CloseWithError(err) // unblocks the dump if storage fails first
		putDone <- putResult{n, err}
	}()

	stored := pipeline.NewDigestWriter(pw)
	// dump → compress → encrypt (when asked) → checksum → storage.
	var sink io.Writer = stored
	var enc io.WriteCloser
	encryption := pipeline.EncryptionNone
	if len(recipients) > 0 {
		if enc, err = age.Encrypt(stored, recipients...); err != nil {
			pw.CloseWithError(err)
			<-putDone
			return nil, err
		}
		sink, encryption = enc, pipeline.EncryptionAge
	}
	comp, err := pipeline.NewCompressor(sink, cmd.Compression)
	if err != nil {
		pw.CloseWithError(err)
		<-putDone
		return nil, err
	}
	raw, stop := h.dumpProgress(ctx, cmd.RunID, estimate, publish, keepAlive)
	info, dumpErr := eng.Dump(ctx, conn, io.MultiWriter(raw, comp))
	stop()
	if dumpErr == nil {
		dumpErr = comp.Close()
	}
	if dumpErr == nil && enc != nil {
		dumpErr = enc.Close()
	}
	if dumpErr != nil {
		pw.CloseWithError(dumpErr)
		<-putDone
		return nil, dumpErr
	}
	pw.Close()
	put := <-putDone
	if put.err != nil {
		return nil, fmt.Errorf("storing the backup: %w", put.err)
	}
	m := &pipeline.Manifest{Version: pipeline.ManifestVersion, BackupID: cmd.RunID, JobID: cmd.JobID,
		Engine: cmd.Conn.Type, ServerVersion: info.ServerVersion, ToolVersion: info.ToolVersion,
		Database: cmd.Conn.Database, Format: info.Format, RawSize: raw.n.Load(), StoredSize: stored.Size(),
		Checksum: stored.Sum(), ChecksumAlgorithm: "sha256", Compression: cmd.Compression, Encryption: encryption,
		StartedAt: started, CompletedAt: time.Now().UTC(), Tables: info.Tables, Consistency: info.Consistency,
		Inventory: pipeline.InventoryObjects, Objects: info.Objects}
	if m.Tables == nil {
		m.Tables = []pipeline.TableCount{}
	}
	data, err := m.Marshal()
	if err == nil {
		_, err = store.Put(context.WithoutCancel(ctx), key+pipeline.ManifestSuffix, bytes.NewReader(data))
	}
	if err != nil {
		// A backup without its manifest is not self-describing: remove it.
		_ = store.Delete(context.WithoutCancel(ctx), key)
		return nil, fmt.Errorf("storing the manifest: %w", err)
	}
	return &backupResult{key: key, m: m, manifest: data}, nil
}

// dumpProgress counts the dump's bytes (write them to raw) and reports
// them as run's progress, against the engine's estimate, until stop.
func (h *Handlers) dumpProgress(ctx context.Context, run string, estimate int64, publish Publisher, keepAlive func()) (raw *counter, stop func()) {
	raw = &counter{}
	stop = h.progress(ctx, ProgressInterval, keepAlive, func(seq int64) {
		p := events.BackupEvent{V: events.Version, ID: fmt.Sprintf("%s:progress:%d", run, seq), RunID: run,
			At: time.Now().UTC(), Seq: seq, Step: "dumping", Bytes: raw.n.Load(), Percent: percent(raw.n.Load(), estimate)}
		if err := publish(ctx, events.KindBackup, events.PhaseProgress, p.ID, p); err != nil {
			h.Logger.Debug("progress not published", "err", err)
		}
	})
	return raw, stop
}

// connOf is the engine's connection for spec c with its opened password.
func connOf(c events.ConnSpec, password []byte) engines.Conn {
	return engines.Conn{Host: c.Host, Port: c.Port, Username: c.Username, Password: string(password), Database: c.Database,
		AuthSource: c.AuthSource, TLS: c.TLS, ReplicaSet: c.ReplicaSet, Instance: c.Instance, Encrypt: c.Encrypt}
}
