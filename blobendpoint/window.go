package blobendpoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of WindowOptions.
const (
	DefaultWindowHead   = 32 << 20
	DefaultWindowBehind = 64 << 20
	DefaultWindowAhead  = 16 << 20
)

// windowChunk is the unit a WindowSource reads its stream in, keeps and
// frees.
const windowChunk = 1 << 20

// windowAloneWait is how long a range too far ahead waits with no other
// open range that can move the window towards it: time for a client
// reading ranges in parallel to ask for the ones before it, which may
// arrive after it, or for its next ones.
const windowAloneWait = 5 * time.Second

// ErrBehindWindow is what a WindowSource's ReadRange returns (wrapped, with
// the range and the bytes still kept) for a range whose bytes have already
// gone past: a forward-only stream cannot be read again.
var ErrBehindWindow = errors.New("blobendpoint: range no longer kept from the forward-only stream")

// ErrTooFarAhead is what a WindowSource's ReadRange returns (wrapped, with
// the offset asked, the bytes read and delivered, and how far the window
// reaches) for a range so far ahead that reading up to it would drop
// bytes the window must keep, when for a few seconds no other open range
// could move the window towards it (see WindowSource). Nothing of the
// stream is read or dropped for it: the same range asked again once the
// window has moved on can be served.
var ErrTooFarAhead = errors.New("blobendpoint: range too far ahead of the forward-only stream")

// WindowOptions bound what a WindowSource keeps of its stream. Each size
// is rounded up to whole chunks of 1 MiB.
type WindowOptions struct {
	// Head is the number of bytes from offset 0 kept for the whole life of
	// the source, for the RESTORE HEADERONLY, FILELISTONLY and the
	// restore's own start that all read the backup's first megabytes; 0
	// or less means DefaultWindowHead (32 MiB).
	Head int64
	// Behind is the number of bytes kept behind the furthest byte
	// delivered, for ranges that arrive late or are retried; 0 or less
	// means DefaultWindowBehind (64 MiB).
	Behind int64
	// Ahead is how far past the furthest byte delivered the stream is read
	// before anyone asks; 0 or less means DefaultWindowAhead (16 MiB).
	// Behind + Ahead is also how far past the window's start a range may
	// begin and still be read at once (see WindowSource).
	Ahead int64
	// ModTime is the blob's Last-Modified.
	ModTime time.Time

	// chunk replaces windowChunk when above 0 (tests).
	chunk int64
	// alone replaces windowAloneWait when above 0 (tests).
	alone time.Duration
}

// WindowSource is a Source for RESTORE … FROM URL whose blob is one
// forward-only stream: a stored backup decrypted and decompressed as it is
// read, which cannot seek. NewWindowSource makes one. It is safe for
// concurrent use.
//
// The stream is read in chunks, forward only, as ranges need it. The
// source keeps:
//
//   - the first Head bytes, until it is dropped;
//   - a window that slides forward, from Behind bytes before the furthest
//     byte delivered (read by a range's reader: asking for a range
//     delivers nothing, so it moves nothing) up to what has been read.
//     Without a range asking, reading runs Ahead past that byte.
//
// A chunk may leave the window once it lies wholly before both that mark
// and the next byte of every range still open (asked for and not yet
// closed): an open range never loses a byte it has yet to deliver. A
// chunk a range delivered bytes of leaves at once; one that none did
// (skipped to reach a range further on) stays until a range needs the
// room for the stream's next chunk, so that reading ahead never drops
// bytes a later pass may come back for. The window holds at most Behind +
// Ahead bytes before it reads its next chunk, so the bytes buffered never
// exceed Head + Behind + Ahead + one chunk, whatever the stream's size;
// when open ranges hold chunks so far back that reading on would pass
// that bound, reading waits for them to move on. A range behind what is
// kept fails at once with ErrBehindWindow.
//
// A range ahead is read for as soon as it is asked when its first byte is
// within Behind + Ahead (rounded to whole chunks) of the first byte the
// window must keep, as above: within reach, its chunk fits beside every
// byte that must stay, and the bytes skipped to reach it stay too, as
// long as the bound allows. That is always so within Ahead past the
// furthest byte delivered, unless open ranges hold the window back. A
// range further ahead is not read for, since reading up to it would drop
// bytes that must stay: it waits, bounded by its context, while other
// open ranges within reach deliver bytes and move the window up to it.
// When none can (none is open, or each is too far ahead itself), waiting
// could last forever: once the range has been so for 5 seconds in a row,
// from when it is asked or from when the last other range closed, it
// fails with ErrTooFarAhead. The seconds let a client reading ranges in
// parallel ask for the ones before it (which may arrive after it) or its
// next ones. Nothing of the stream is read or dropped for a range while
// it waits so, nor when it fails. A backup's end asked for before its
// middle is thus served at once when all of it up to there fits within
// Head + Behind + Ahead, served once a concurrent pass from the start
// comes near, and otherwise refused, with every earlier byte still there
// for the pass.
//
// Reading happens in a goroutine started when a range needs bytes and
// ended when none is wanted; it blocks in r's Read for as long as r does,
// so a stalled r is unblocked by its owner (closing what feeds it), not by
// the source.
type WindowSource struct {
	r       io.Reader
	size    int64
	modTime time.Time
	chunk   int64
	headEnd int64 // Head, in whole chunks
	behind  int64
	ahead   int64
	alone   time.Duration // how long a range too far ahead waits alone

	consumed atomic.Int64 // bytes taken from r, Drain's included

	mu       sync.Mutex
	changed  chan struct{} // closed (and replaced) when stored, err, filling, drained, the window's reach or its ranges change
	head     [][]byte      // chunks 0, 1, … below headEnd; never freed
	win      []winChunk    // the window: chunks winBase, winBase+1, …
	winBase  int64
	winBytes int64    // capacity of win's chunks
	spare    [][]byte // freed chunks, for reuse
	stored   int64    // bytes read from r into chunks (kept or freed since)
	furthest int64    // the end of the furthest byte delivered
	readers  map[*windowReader]struct{}
	// farWaiting counts the ranges waiting in reach.
	farWaiting int
	filling    bool // a goroutine (fill, or Drain) reads r
	draining   bool
	drained    bool
	err        error // r's error, or io.ErrUnexpectedEOF for a short r

	// buffered is the bytes of the chunks held (head, window, and the
	// chunk being read); peak is its maximum. Tests read them.
	buffered, peak int64
}

// winChunk is a chunk of the window.
type winChunk struct {
	b         []byte
	delivered bool // a range delivered some of its bytes
}

// NewWindowSource returns a Source of size bytes read once from r, which
// it does not start reading until a range is asked for. Options at zero
// take their defaults; o.ModTime is the blob's Last-Modified (its ETag is
// derived from it and size). A negative size is taken as 0.
func NewWindowSource(r io.Reader, size int64, o WindowOptions) *WindowSource {
	chunk := o.chunk
	if chunk <= 0 {
		chunk = windowChunk
	}
	whole := func(n, def int64) int64 {
		if n <= 0 {
			n = def
		}
		return (n + chunk - 1) / chunk * chunk
	}
	return &WindowSource{
		r:       r,
		size:    max(size, 0),
		modTime: o.ModTime,
		chunk:   chunk,
		headEnd: whole(o.Head, DefaultWindowHead),
		behind:  whole(o.Behind, DefaultWindowBehind),
		ahead:   whole(o.Ahead, DefaultWindowAhead),
		alone:   cmp.Or(o.alone, windowAloneWait),
		changed: make(chan struct{}),
		readers: make(map[*windowReader]struct{}),
	}
}

// Info describes the blob: its size and ModTime.
func (w *WindowSource) Info() Info { return Info{Size: w.size, ModTime: w.modTime} }

// Err is r's read error, io.ErrUnexpectedEOF when r ended before size
// bytes, or the error of Drain; nil when there was none (yet).
func (w *WindowSource) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Read is the number of bytes taken from r so far.
func (w *WindowSource) Read() int64 { return w.consumed.Load() }

// ReadRange returns a reader of length bytes from offset, once its first
// byte has been read from the stream (so that a range the stream cannot
// give fails before the server answers). It returns an error wrapping
// ErrBehindWindow when some of the bytes are neither in the head nor
// still in the window, one wrapping ErrTooFarAhead when offset stays too
// far ahead with no other open range to move the window to it, one wrapping
// r's error when the stream failed before the range's end, ctx's error
// when ctx ends while it waits, and an error for a range outside the
// blob. The reader's Read waits for the stream in the same way, and fails
// with r's error where the stream failed; it must be closed, which lets
// the window slide past its bytes.
func (w *WindowSource) ReadRange(ctx context.Context, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length <= 0 || offset > w.size-length {
		return nil, fmt.Errorf("blobendpoint: range of %d bytes at offset %d outside the stream's %d bytes", length, offset, w.size)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	rd := &windowReader{w: w, ctx: ctx, cur: offset, end: offset + length}
	if err := w.check(rd); err != nil {
		return nil, err
	}
	w.readers[rd] = struct{}{}
	w.kick()
	err := w.reach(rd)
	if err == nil {
		err = w.wait(rd)
	}
	if err != nil {
		rd.closeLocked()
		return nil, err
	}
	return rd, nil
}

// check returns the error of a range whose bytes cannot all come.
func (w *WindowSource) check(rd *windowReader) error {
	first := max(rd.cur, w.headEnd) // the first byte not in the head
	if first >= rd.end {
		return nil
	}
	if first < w.windowStart() || (w.drained && rd.end > w.stored) {
		return w.behindError(rd.cur, rd.end)
	}
	if w.err != nil && rd.end > w.stored {
		return w.streamError()
	}
	return nil
}

// windowStart is the first byte past the head still kept or still to be
// read.
func (w *WindowSource) windowStart() int64 {
	if len(w.win) > 0 {
		return w.winBase * w.chunk
	}
	return max(w.stored, w.headEnd)
}

func (w *WindowSource) behindError(start, end int64) error {
	kept := fmt.Sprintf("[0, %d)", min(w.headEnd, w.stored))
	if lo := w.windowStart(); lo < w.stored {
		kept += fmt.Sprintf(" and [%d, %d)", lo, w.stored)
	}
	if w.drained {
		return fmt.Errorf("%w: bytes [%d, %d) asked after the stream was drained; kept: %s",
			ErrBehindWindow, start, end, kept)
	}
	return fmt.Errorf("%w: bytes [%d, %d) asked with %d bytes read; kept: %s",
		ErrBehindWindow, start, end, w.stored, kept)
}

// reachEnd is the first byte past the head that the window cannot read
// without dropping a chunk it must keep (at or after freeBound): it holds
// at most Behind + Ahead bytes before it reads its next chunk.
func (w *WindowSource) reachEnd() int64 {
	first := max(w.windowStart(), w.freeBound()) / w.chunk
	return (first + (w.behind+w.ahead)/w.chunk + 1) * w.chunk
}

// reachable reports whether byte off is read or can be read without
// dropping a chunk the window must keep.
func (w *WindowSource) reachable(off int64) bool {
	return off < w.headEnd || off < w.stored || off < w.reachEnd()
}

// othersMove reports whether an open range other than rd can move the
// window: one admitted, not too far ahead itself.
func (w *WindowSource) othersMove(rd *windowReader) bool {
	for o := range w.readers {
		if o != rd && o.admitted {
			return true
		}
	}
	return false
}

func (w *WindowSource) tooFarError(off int64) error {
	return fmt.Errorf("%w: byte %d asked with %d bytes of the stream read and %d delivered; "+
		"the window reaches byte %d before it would drop bytes it must keep (it holds Head + Behind + Ahead = %d bytes), "+
		"and no other open range moved it on for %v",
		ErrTooFarAhead, off, w.stored, w.furthest, w.reachEnd(), w.headEnd+w.behind+w.ahead, w.alone)
}

func (w *WindowSource) streamError() error {
	return fmt.Errorf("blobendpoint: the stream failed after %d of its %d bytes: %w", w.stored, w.size, w.err)
}

// advance moves the furthest byte delivered to off (the end of the bytes
// a reader just delivered) when off is beyond it, frees what that lets go
// and starts reading if more is wanted.
func (w *WindowSource) advance(off int64) {
	if off > w.furthest {
		w.furthest = off
	}
	w.free(false)
	w.kick()
	if w.farWaiting > 0 {
		w.broadcast() // the window may reach further
	}
}

// freeBound is the byte before which the window's chunks may go: Behind
// bytes before the furthest byte delivered, or the next byte of an open
// range that still needs bytes past the head when that is lower.
func (w *WindowSource) freeBound() int64 {
	bound := w.furthest - w.behind
	for rd := range w.readers {
		if rd.end > w.headEnd {
			bound = min(bound, max(rd.cur, w.headEnd))
		}
	}
	return bound
}

// free drops the window's first chunks that lie wholly before freeBound
// and that a range delivered bytes of; with room set, also the ones none
// did (skipped to reach a range further on) for as long as the window
// holds more than Behind + Ahead. Dropping wakes the ranges waiting for
// the window to reach them.
func (w *WindowSource) free(room bool) {
	bound := w.freeBound()
	dropped := false
	for len(w.win) > 0 {
		c := w.win[0]
		if w.winBase*w.chunk+int64(len(c.b)) > bound ||
			!c.delivered && !(room && w.winBytes > w.behind+w.ahead) {
			break
		}
		w.win[0] = winChunk{}
		w.win = w.win[1:]
		w.winBase++
		w.winBytes -= int64(cap(c.b))
		w.release(c.b)
		dropped = true
	}
	if dropped {
		w.broadcast()
	}
}

// full reports whether the window holds too much to read its next chunk
// now: more than Behind + Ahead once free(false) has run, and, unless an
// admitted range needs bytes not read yet, whatever free(true) would drop.
func (w *WindowSource) full() bool {
	over := w.winBytes - (w.behind + w.ahead)
	if w.stored < w.headEnd || over <= 0 {
		return false
	}
	needed := false
	for rd := range w.readers {
		if rd.admitted && rd.end > w.stored {
			needed = true
			break
		}
	}
	if !needed {
		return true
	}
	bound := w.freeBound()
	for i, c := range w.win {
		if (w.winBase+int64(i))*w.chunk+int64(len(c.b)) > bound {
			return true
		}
		if over -= int64(cap(c.b)); over <= 0 {
			return false
		}
	}
	return true
}

// release puts a chunk no longer held aside for reuse.
func (w *WindowSource) release(c []byte) {
	w.buffered -= int64(cap(c))
	w.spare = append(w.spare, c[:0])
}

// wantRead reports whether the stream should be read further: with the
// window at most Behind + Ahead before the next chunk (see full), up to
// Ahead past the furthest byte delivered, or further for an admitted
// range's bytes (not for a range too far ahead).
func (w *WindowSource) wantRead() bool {
	switch {
	case w.draining || w.err != nil || w.stored >= w.size:
		return false
	case w.full():
		return false
	case w.stored < w.furthest+w.ahead:
		return true
	}
	for rd := range w.readers {
		if rd.admitted && rd.end > w.stored {
			return true
		}
	}
	return false
}

// kick starts the reading goroutine when the stream should be read and
// none runs.
func (w *WindowSource) kick() {
	if !w.filling && w.wantRead() {
		w.filling = true
		go w.fill()
	}
}

// broadcast wakes everything waiting on w.changed.
func (w *WindowSource) broadcast() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// fill reads chunks for as long as wantRead, outside the lock.
func (w *WindowSource) fill() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.wantRead() {
		w.free(true)
		var buf []byte
		if n := len(w.spare); n > 0 {
			buf, w.spare = w.spare[n-1][:w.chunk], w.spare[:n-1]
		} else {
			buf = make([]byte, w.chunk)
		}
		w.buffered += int64(cap(buf))
		w.peak = max(w.peak, w.buffered)
		off := w.stored
		n := min(w.chunk, w.size-off)
		w.mu.Unlock()
		got, err := io.ReadFull(w.r, buf[:n])
		w.consumed.Add(int64(got))
		w.mu.Lock()
		switch {
		case got == 0:
			w.release(buf)
		case off < w.headEnd:
			w.head = append(w.head, buf[:got])
		default:
			if len(w.win) == 0 {
				w.winBase = off / w.chunk
			}
			w.win = append(w.win, winChunk{b: buf[:got]})
			w.winBytes += int64(cap(buf))
		}
		w.stored += int64(got)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			w.err = err
		}
		w.broadcast()
	}
	w.filling = false
	w.broadcast()
}

// reach admits rd once its first byte is reachable (or the stream has
// failed or been drained, which wait then reports); it returns
// ErrTooFarAhead when no other admitted range has been open to move the
// window for the alone wait, or ctx's error. It is called with w.mu held,
// which it releases while it waits.
func (w *WindowSource) reach(rd *windowReader) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	w.farWaiting++
	defer func() { w.farWaiting-- }()
	for !w.reachable(rd.cur) && w.err == nil && !w.drained {
		var alone <-chan time.Time
		if w.othersMove(rd) {
			if timer != nil {
				timer.Stop()
				timer = nil
			}
		} else {
			if timer == nil {
				timer = time.NewTimer(w.alone)
			}
			alone = timer.C
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
			w.mu.Lock()
		case <-alone:
			w.mu.Lock()
			timer = nil
			if !w.reachable(rd.cur) && !w.othersMove(rd) {
				return w.tooFarError(rd.cur)
			}
		case <-rd.ctx.Done():
			w.mu.Lock()
			return fmt.Errorf("blobendpoint: waiting for the window to reach byte %d of the stream: %w", rd.cur, context.Cause(rd.ctx))
		}
	}
	rd.admitted = true
	w.broadcast() // a range too far ahead, alone until now, has company
	return nil
}

// wait returns once rd's next byte has been read, or with the error that
// keeps it from coming. It is called with w.mu held, which it releases
// while it waits.
func (w *WindowSource) wait(rd *windowReader) error {
	for rd.cur >= w.stored {
		switch {
		case w.err != nil:
			return w.streamError()
		case w.drained:
			return w.behindError(rd.cur, rd.end)
		}
		w.kick()
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-rd.ctx.Done():
			w.mu.Lock()
			return fmt.Errorf("blobendpoint: waiting for byte %d of the stream: %w", rd.cur, context.Cause(rd.ctx))
		}
		w.mu.Lock()
	}
	return nil
}

// Drain reads r to its end and discards what it reads, so that whatever
// r checks at its end (a checksum) runs; call it once the restore is
// over. Ranges past the bytes read before it then fail with
// ErrBehindWindow. It returns r's error (the first one, also when it came
// before Drain), io.ErrUnexpectedEOF when r ends before size bytes, or an
// error when r has more than size bytes; calling it again returns the
// same.
func (w *WindowSource) Drain() error {
	w.mu.Lock()
	w.draining = true
	for w.filling {
		changed := w.changed
		w.mu.Unlock()
		<-changed
		w.mu.Lock()
	}
	if w.drained || w.err != nil {
		err := w.err
		w.drained = true
		w.mu.Unlock()
		return err
	}
	w.filling = true
	w.spare = nil
	start := w.stored
	w.mu.Unlock()

	n, err := io.Copy(io.Discard, countingReader{w.r, &w.consumed})
	if err == nil {
		switch total := start + n; {
		case total < w.size:
			err = io.ErrUnexpectedEOF
		case total > w.size:
			err = fmt.Errorf("blobendpoint: the stream has %d bytes, more than its size of %d", total, w.size)
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.filling = false
	w.drained = true
	w.err = err
	w.broadcast()
	return err
}

// countingReader adds what it reads to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// windowReader is one open range of a WindowSource.
type windowReader struct {
	w        *WindowSource
	ctx      context.Context
	cur, end int64 // the next byte to deliver, and the range's end
	admitted bool  // its first byte was reachable (see WindowSource.reach)
	closed   bool
}

var errRangeClosed = errors.New("blobendpoint: read of a closed range")

// Read delivers the range's next bytes, waiting for the stream as
// ReadRange does.
func (rd *windowReader) Read(p []byte) (int, error) {
	w := rd.w
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case rd.closed:
		return 0, errRangeClosed
	case rd.cur >= rd.end:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if err := w.wait(rd); err != nil {
		return 0, err
	}
	k := rd.cur / w.chunk
	var c []byte
	if rd.cur < w.headEnd {
		c = w.head[k]
	} else if i := k - w.winBase; i >= 0 && i < int64(len(w.win)) {
		c = w.win[i].b
		w.win[i].delivered = true
	} else {
		// An open range's bytes are never freed; this is a bug.
		return 0, fmt.Errorf("blobendpoint: byte %d of an open range was freed", rd.cur)
	}
	n := copy(p, c[rd.cur-k*w.chunk:min(int64(len(c)), rd.end-k*w.chunk)])
	rd.cur += int64(n)
	w.advance(rd.cur)
	return n, nil
}

// Close ends the range: its bytes may leave the window. It always
// returns nil.
func (rd *windowReader) Close() error {
	rd.w.mu.Lock()
	defer rd.w.mu.Unlock()
	rd.closeLocked()
	return nil
}

func (rd *windowReader) closeLocked() {
	if rd.closed {
		return
	}
	rd.closed = true
	delete(rd.w.readers, rd)
	rd.w.free(false)
	rd.w.kick()
	rd.w.broadcast() // a range too far ahead may be alone now
}
