package agent

import (
	"strings"
	"sync/atomic"

	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"filippo.io/age"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/storage"
)

// ErrChecksum is returned when stored bytes do not match the recorded
// size or SHA-256.
var ErrChecksum = errors.New("the backup does not match its recorded checksum: it was modified or damaged in storage")

// ErrWrongKey is returned when an encrypted backup does not open with the
// key given: age authenticates, so a wrong key is an error, never garbage.
var ErrWrongKey = errors.New("the backup cannot be decrypted with this job's key (authentication failed)")

// decrypt returns r decrypted with the identity sealed in ref, or r itself
// for an unencrypted backup (one whose key does not end in .age).
func (h *Handlers) decrypt(r io.Reader, ref events.ObjectRef) (io.Reader, error) {
	encrypted := strings.HasSuffix(ref.Key, ".age")
	switch {
	case !encrypted:
		return r, nil
	case ref.SealedIdentity == "":
		return nil, errors.New("the backup is encrypted but no key was sent with the command")
	}
	raw, err := sealed.Open(h.Identity, ref.SealedIdentity)
	if err != nil {
		return nil, errors.New("this agent cannot open the job key sent to it; revoke and re-enroll the agent")
	}
	id, err := age.ParseX25519Identity(string(raw))
	if err != nil {
		return nil, fmt.Errorf("bad job key: %w", err)
	}
	dr, err := age.Decrypt(r, id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, ErrWrongKey
		}
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return &ageErrors{dr}, nil
}

// ageErrors labels errors from inside an age stream (a chunk failing
// authentication) as damage.
type ageErrors struct{ r io.Reader }

func (a *ageErrors) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, ErrChecksum) {
		err = fmt.Errorf("%w: decryption failed: %v", ErrDamaged, err)
	}
	return n, err
}

// ErrDamaged is returned when a stored backup cannot be decompressed.
var ErrDamaged = errors.New("the backup is damaged: it cannot be decompressed")

// countingReader counts the bytes read, for progress reports from another
// goroutine.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// checkedReader passes the stored bytes through and, at their end, returns
// ErrChecksum instead of io.EOF when they differ from what was recorded.
type checkedReader struct {
	d        *pipeline.DigestReader
	size     int64
	checksum string
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.d.Read(p)
	if c.d.Size() > c.size {
		return n, ErrChecksum
	}
	if errors.Is(err, io.EOF) && (c.d.Size() != c.size || c.d.Sum() != c.checksum) {
		return n, ErrChecksum
	}
	return n, err
}

// wholeStream reads the decompressed stream and, once it ends, drains what
// is left of the stored bytes so their checksum is always checked before
// io.EOF is returned.
type wholeStream struct {
	dec    io.Reader
	stored io.Reader
}

func (w *wholeStream) Read(p []byte) (int, error) {
	n, err := w.dec.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, ErrChecksum) {
		return n, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	if errors.Is(err, io.EOF) {
		if _, derr := io.Copy(io.Discard, w.stored); derr != nil {
			return n, derr
		}
	}
	return n, err
}

// openChecked opens a stored backup for reading its decompressed content,
// checked against ref's size and checksum. It also returns the counter of
// stored bytes read, for progress.
func (h *Handlers) openChecked(ctx context.Context, ref events.ObjectRef) (io.Reader, *countingReader, func(), error) {
	store, err := h.storageFor(ref.Storage)
	if err != nil {
		return nil, nil, nil, err
	}
	if IsChunked(ref.Key) {
		_, rc, err := h.openChunked(ctx, store, ref)
		if err != nil {
			return nil, nil, nil, err
		}
		read := &countingReader{r: rc}
		return read, read, func() { rc.Close() }, nil
	}
	f, err := store.Get(ctx, ref.Key, 0)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, nil, fmt.Errorf("the backup file %s is no longer in storage", ref.Key)
	} else if err != nil {
		return nil, nil, nil, err
	}
	read := &countingReader{r: f}
	d := pipeline.NewDigestReader(read)
	checked := &checkedReader{d: d, size: ref.Size, checksum: ref.Checksum}
	plain, err := h.decrypt(checked, ref)
	if err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	dec, err := pipeline.NewDecompressor(plain, ref.Compression)
	if err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	closeAll := func() { dec.Close(); f.Close() }
	return &wholeStream{dec: dec, stored: checked}, read, closeAll, nil
}

// Restore applies a stored backup to the target database as its engine's
// Spec().Restore says, checking the checksum while streaming: a damaged
// backup or a failing statement leaves the target as it was. It publishes started,
// progress and completed or failed, and returns an error only when the
// outcome could not be published.
func (h *Handlers) Restore(ctx context.Context, cmd events.RestoreCommand, publish Publisher, keepAlive func()) error {
	ev := func(id string) events.RestoreEvent {
		return events.RestoreEvent{V: events.Version, ID: cmd.RestoreID + ":" + id, RestoreID: cmd.RestoreID, At: time.Now().UTC()}
	}
	started := time.Now()
	if err := publish(ctx, events.KindRestore, events.PhaseStarted, cmd.RestoreID+":started", ev("started")); err != nil {
		return err
	}
	err := h.restore(ctx, cmd, publish, keepAlive)
	if err != nil {
		h.Logger.Warn("restore failed", "restoreId", cmd.RestoreID, "err", err)
		fail := ev("failed")
		fail.Error = err.Error()
		if errors.Is(err, ErrChecksum) || errors.Is(err, ErrDamaged) || errors.Is(err, ErrWrongKey) {
			fail.Error += "; the restore was refused and the target database left as it was"
		}
		return publish(context.WithoutCancel(ctx), events.KindRestore, events.PhaseFailed, fail.ID, fail)
	}
	done := ev("completed")
	done.DurationMs = time.Since(started).Milliseconds()
	return publish(context.WithoutCancel(ctx), events.KindRestore, events.PhaseCompleted, done.ID, done)
}

func (h *Handlers) restore(ctx context.Context, cmd events.RestoreCommand, publish Publisher, keepAlive func()) error {
	eng, conn, err := h.openConn(cmd.Target)
	if err != nil {
		return err
	}
	r, stored, closeAll, err := h.openChecked(ctx, cmd.Object)
	if err != nil {
		return err
	}
	defer closeAll()
	total := cmd.Object.Size
	if IsChunked(cmd.Object.Key) {
		total = cmd.Object.RawSize // a chunked backup's progress counts dump bytes
	}
	stop := h.progress(ctx, ProgressInterval, keepAlive, func(seq int64) {
		p := events.RestoreEvent{V: events.Version, ID: fmt.Sprintf("%s:progress:%d", cmd.RestoreID, seq), RestoreID: cmd.RestoreID,
			At: time.Now().UTC(), Seq: seq, Step: "restoring", Bytes: stored.n.Load(), Percent: percent(stored.n.Load(), total)}
		_ = publish(ctx, events.KindRestore, events.PhaseProgress, p.ID, p)
	})
	defer stop()
	return eng.Restore(ctx, conn, engines.WithSize(r, cmd.Object.RawSize))
}
