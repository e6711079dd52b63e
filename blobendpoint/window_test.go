package blobendpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
)

// testWindow is the window of the tests: small, in chunks of 64 KiB.
var testWindow = WindowOptions{Head: 1 << 20, Behind: 2 << 20, Ahead: 1 << 20, chunk: 64 << 10}

// windowBound is the most a source with o may buffer.
func windowBound(o WindowOptions) int64 { return o.Head + o.Behind + o.Ahead + o.chunk }

// checkPeak fails t when w ever buffered more than its bound.
func checkPeak(t *testing.T, w *WindowSource, o WindowOptions) {
	t.Helper()
	w.mu.Lock()
	peak := w.peak
	w.mu.Unlock()
	t.Logf("peak of %d bytes buffered, bound %d", peak, windowBound(o))
	if peak > windowBound(o) || peak == 0 {
		t.Errorf("peak of %d bytes buffered, bound %d", peak, windowBound(o))
	}
}

// readWindow reads length bytes from offset of w.
func readWindow(ctx context.Context, w *WindowSource, offset, length int64) ([]byte, error) {
	rc, err := w.ReadRange(ctx, offset, length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// wantWindow checks that w gives data's bytes for [offset, offset+length).
func wantWindow(t *testing.T, w *WindowSource, data []byte, offset, length int64) {
	t.Helper()
	got, err := readWindow(ctx, w, offset, length)
	if err != nil {
		t.Fatalf("range %d+%d: %v", offset, length, err)
	}
	if !bytes.Equal(got, data[offset:offset+length]) {
		t.Fatalf("range %d+%d: got %d bytes, not the stream's", offset, length, len(got))
	}
}

func TestWindowSequential(t *testing.T) {
	data := randomBytes(20<<20+12345, 11)
	size := int64(len(data))
	w := NewWindowSource(bytes.NewReader(data), size, testWindow)
	if w.Read() != 0 {
		t.Fatalf("%d bytes read before any range", w.Read())
	}
	const step = 4<<20 - 4321
	for off := int64(0); off < size; off += step {
		wantWindow(t, w, data, off, min(step, size-off))
		if read := w.Read(); read < off || read > min(size, off+step+testWindow.Ahead+testWindow.chunk) {
			t.Fatalf("%d bytes read after the range at %d", read, off)
		}
	}
	checkPeak(t, w, testWindow)
	if err := w.Drain(); err != nil || w.Read() != size || w.Err() != nil {
		t.Fatalf("Drain() = %v, Read() = %d, Err() = %v", err, w.Read(), w.Err())
	}
	if info := w.Info(); info.Size != size {
		t.Errorf("Info().Size = %d", info.Size)
	}
}

// SQL Server reads the start for RESTORE HEADERONLY and FILELISTONLY, then
// the restore reads it all from 0.
func TestWindowHeaderOnlyPattern(t *testing.T) {
	data := randomBytes(20<<20, 12)
	size := int64(len(data))
	w := NewWindowSource(bytes.NewReader(data), size, testWindow)
	for range 3 {
		wantWindow(t, w, data, 0, 64<<10)
		wantWindow(t, w, data, 64<<10, 512<<10)
	}
	for off := int64(0); off < size; off += 1 << 20 {
		wantWindow(t, w, data, off, 1<<20)
	}
	wantWindow(t, w, data, 0, 64<<10) // the head stays
	checkPeak(t, w, testWindow)
}

// Parallel buffers: ranges asked for in order, read concurrently, together
// more than the window holds.
func TestWindowParallel(t *testing.T) {
	data := randomBytes(20<<20+999, 13)
	size := int64(len(data))
	w := NewWindowSource(bytes.NewReader(data), size, testWindow)
	var (
		mu   sync.Mutex
		next int64
		wg   sync.WaitGroup
		errs = make(chan error, 4)
	)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				length := int64(1<<20 + (g*7+i)%5*(100<<10))
				mu.Lock()
				off := next
				if off >= size {
					mu.Unlock()
					return
				}
				length = min(length, size-off)
				next += length
				rc, err := w.ReadRange(ctx, off, length)
				mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(rc, 1000)))
				if err == nil {
					var rest []byte
					rest, err = io.ReadAll(rc)
					got = append(got, rest...)
				}
				rc.Close()
				if err == nil && !bytes.Equal(got, data[off:off+length]) {
					err = fmt.Errorf("range %d+%d: wrong bytes", off, length)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkPeak(t, w, testWindow)
}

// An open range keeps its bytes even when the furthest byte delivered
// runs past Behind; a range further ahead than the window can reach while
// it holds them waits for it.
//
// This test used to ask for the range ahead (at 9 MiB) right away and
// watch the furthest offset jump to its start: asking for a range moved
// the window then. Now only bytes delivered move it, so another range
// delivers bytes past Behind first (as a client's concurrent reads do),
// and the range ahead sits just beyond what the window reaches while the
// open range holds its bytes, and within it once they are read.
func TestWindowOpenRangeHoldsBytes(t *testing.T) {
	data := randomBytes(16<<20, 14)
	w := NewWindowSource(bytes.NewReader(data), int64(len(data)), testWindow)
	const slow = 3 << 20
	rc, err := w.ReadRange(ctx, slow, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Delivered past slow + Behind: the open range's bytes stay.
	wantWindow(t, w, data, slow+512<<10, 2<<20)
	w.mu.Lock()
	furthest, start := w.furthest, w.windowStart()
	w.mu.Unlock()
	if furthest <= slow+testWindow.Behind || start > slow {
		t.Fatalf("furthest byte delivered %d, window from %d; want past %d, from %d at most",
			furthest, start, slow+testWindow.Behind, slow)
	}
	const far = 6<<20 + 256<<10 // 3.25 MiB past the open range; 2.75 MiB past Behind before the furthest byte delivered
	ahead := make(chan error, 1)
	go func() {
		got, err := readWindow(ctx, w, far, 1<<20)
		if err == nil && !bytes.Equal(got, data[far:far+1<<20]) {
			err = errors.New("the range ahead got wrong bytes")
		}
		ahead <- err
	}()
	waitWindow(t, w, "the range ahead waiting for the window", func() bool {
		return len(w.readers) == 2 && !w.reachable(far)
	})
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data[slow:slow+1<<20]) {
		t.Fatalf("the open range got %d bytes, %v", len(got), err)
	}
	if err := <-ahead; err != nil {
		t.Fatal(err)
	}
	checkPeak(t, w, testWindow)
}

// waitWindow polls cond, with w.mu held, until it holds.
func waitWindow(t *testing.T, w *WindowSource, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		ok := cond()
		w.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWindowBehind(t *testing.T) {
	data := randomBytes(12<<20, 15)
	w := NewWindowSource(bytes.NewReader(data), int64(len(data)), testWindow)
	for off := int64(0); off < 10<<20; off += 1 << 20 {
		wantWindow(t, w, data, off, 1<<20)
	}
	_, err := w.ReadRange(ctx, 2<<20, 4096)
	if !errors.Is(err, ErrBehindWindow) || !strings.Contains(err.Error(), fmt.Sprint(2<<20)) {
		t.Fatalf("range behind the window: %v", err)
	}
	t.Log(err)
	// Straddling the head's end, and a range starting in the head, needs
	// bytes gone too.
	if _, err := w.ReadRange(ctx, 1<<20-10, 20); !errors.Is(err, ErrBehindWindow) {
		t.Errorf("range across the head's end: %v", err)
	}
	wantWindow(t, w, data, 0, 1<<20)                 // the head
	wantWindow(t, w, data, 8<<20+100, 2<<20-100)     // Behind bytes back
	wantWindow(t, w, data, 10<<20, int64(2<<20)-100) // and on
	if _, err := w.ReadRange(ctx, 12<<20-10, 20); err == nil {
		t.Error("range past the end accepted")
	}
}

var errBoom = errors.New("boom")

func TestWindowStreamError(t *testing.T) {
	data := randomBytes(12<<20, 16)
	size := int64(len(data))
	const at = 5<<20 + 12345
	t.Run("Error", func(t *testing.T) {
		w := NewWindowSource(io.MultiReader(bytes.NewReader(data[:at]), iotest.ErrReader(errBoom)), size, testWindow)
		wantWindow(t, w, data, 0, 4<<20)
		wantWindow(t, w, data, 4<<20, at-4<<20) // up to the failure
		// Across the failure: ReadRange fails when the failure is known
		// already, else the reader does after the bytes before it.
		got, err := readWindow(ctx, w, at-100, 200)
		if !errors.Is(err, errBoom) || (got != nil && !bytes.Equal(got, data[at-100:at])) {
			t.Fatalf("range across the failure: %d bytes, %v", len(got), err)
		}
		if _, err := w.ReadRange(ctx, 8<<20, 10); !errors.Is(err, errBoom) {
			t.Fatalf("range after the failure: %v", err)
		}
		if !errors.Is(w.Err(), errBoom) || w.Read() != at {
			t.Errorf("Err() = %v, Read() = %d", w.Err(), w.Read())
		}
		if err := w.Drain(); !errors.Is(err, errBoom) {
			t.Errorf("Drain() = %v", err)
		}
	})
	t.Run("Short", func(t *testing.T) {
		w := NewWindowSource(bytes.NewReader(data[:7<<20]), size, testWindow)
		for off := int64(0); off < 6<<20; off += 1 << 20 {
			wantWindow(t, w, data, off, 1<<20)
		}
		_, err := readWindow(ctx, w, 6<<20+512<<10, 1<<20)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("range past a short stream's end: %v", err)
		}
		if !errors.Is(w.Err(), io.ErrUnexpectedEOF) || !errors.Is(w.Drain(), io.ErrUnexpectedEOF) {
			t.Errorf("Err() = %v", w.Err())
		}
	})
	t.Run("DrainShort", func(t *testing.T) {
		w := NewWindowSource(bytes.NewReader(data[:7<<20]), size, testWindow)
		wantWindow(t, w, data, 0, 100)
		if err := w.Drain(); !errors.Is(err, io.ErrUnexpectedEOF) || w.Read() != 7<<20 {
			t.Fatalf("Drain() = %v after %d bytes", err, w.Read())
		}
		if _, err := w.ReadRange(ctx, 10<<20, 10); !errors.Is(err, ErrBehindWindow) {
			t.Errorf("range after Drain: %v", err)
		}
	})
	t.Run("DrainLong", func(t *testing.T) {
		w := NewWindowSource(bytes.NewReader(data), size-10, testWindow)
		if err := w.Drain(); err == nil || !strings.Contains(err.Error(), "more than its size") {
			t.Fatalf("Drain() = %v", err)
		}
		if err2 := w.Drain(); err2 == nil || err2.Error() != w.Err().Error() {
			t.Errorf("second Drain() = %v", err2)
		}
	})
	t.Run("DrainChecksum", func(t *testing.T) {
		// r's check at its end runs even when every byte was served.
		w := NewWindowSource(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(errBoom)), size, testWindow)
		for off := int64(0); off < size; off += 2 << 20 {
			wantWindow(t, w, data, off, 2<<20)
		}
		if w.Err() != nil {
			t.Fatalf("Err() = %v before Drain", w.Err())
		}
		if err := w.Drain(); !errors.Is(err, errBoom) {
			t.Fatalf("Drain() = %v", err)
		}
	})
}

func TestWindowCancel(t *testing.T) {
	data := randomBytes(1<<20, 17)
	pr, pw := io.Pipe()
	defer pw.Close()
	w := NewWindowSource(pr, int64(len(data)), testWindow)

	// ReadRange waits for its first byte.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := w.ReadRange(cctx, 0, 100)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadRange after cancel: %v", err)
	}

	// Read waits for the next chunk.
	cctx, cancel = context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = pw.Write(data[:64<<10]) }()
	rc, err := w.ReadRange(cctx, 0, 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, 64<<10)
	if _, err := io.ReadFull(rc, got); err != nil || !bytes.Equal(got, data[:64<<10]) {
		t.Fatalf("first chunk: %v", err)
	}
	go func() {
		_, err := rc.Read(got)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel: %v", err)
	}
	pw.CloseWithError(errBoom) // ends the reading goroutine
}

// patternStream is size bytes of block repeated, made as they are read.
type patternStream struct {
	block     []byte
	off, size int64
}

func (p *patternStream) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.size-p.off)]
	n := 0
	for n < len(b) {
		n += copy(b[n:], p.block[(p.off+int64(n))%int64(len(p.block)):])
	}
	p.off += int64(n)
	return n, nil
}

// isPattern reports whether got is the bytes from off of a patternStream
// of block.
func isPattern(block []byte, off int64, got []byte) bool {
	for len(got) > 0 {
		b := block[off%int64(len(block)):]
		b = b[:min(len(b), len(got))]
		if !bytes.Equal(got[:len(b)], b) {
			return false
		}
		got, off = got[len(b):], off+int64(len(b))
	}
	return true
}

// passWindow reads w from 0 to size in ranges of n bytes, parallel of
// them at a time, and checks them with ok. The ranges are asked for in
// order when inOrder is set, else as SQL Server's restore does: from
// parallel goroutines, in whatever order they run.
func passWindow(w *WindowSource, size, n int64, parallel int, inOrder bool, ok func(off int64, got []byte) bool) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	bufs := make(chan []byte, parallel) // also the limit on ranges at once
	for range parallel {
		bufs <- make([]byte, n)
	}
	for off := int64(0); off < size; off += n {
		cnt := min(n, size-off)
		buf := <-bufs
		var (
			rc  io.ReadCloser
			err error
		)
		if inOrder {
			rc, err = w.ReadRange(ctx, off, cnt)
		}
		wg.Go(func() {
			defer func() { bufs <- buf }()
			got := buf[:cnt]
			if !inOrder {
				rc, err = w.ReadRange(ctx, off, cnt)
			}
			if err == nil {
				_, err = io.ReadFull(rc, got)
				rc.Close()
			}
			if err == nil && !ok(off, got) {
				err = fmt.Errorf("range %d+%d: wrong bytes", off, cnt)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// idleWindow waits for w's reading to stop and returns the bytes read.
func idleWindow(t *testing.T, w *WindowSource) int64 {
	t.Helper()
	waitWindow(t, w, "reading to stop", func() bool { return !w.filling })
	return w.Read()
}

// The review's case, with the default window: a restore reads the head,
// then the backup's last 64 KiB, then all of it from 0. Asking for the
// end used to move the window there, reading and dropping everything
// before it, so that a read at 40 MiB failed. The end is more than Head +
// Behind + Ahead away, so it cannot be kept with the rest: asked alone it
// fails with ErrTooFarAhead after the alone wait (shortened here) without
// reading the stream, and it is served once the pass from 0 has come to
// it.
func TestWindowTrailerFirst(t *testing.T) {
	t.Parallel()
	block := randomBytes(1<<20+4099, 19)
	const size = 200 << 20
	o := WindowOptions{alone: 100 * time.Millisecond}
	w := NewWindowSource(&patternStream{block: block, size: size}, size, o)
	want := func(off, n int64) {
		t.Helper()
		got, err := readWindow(ctx, w, off, n)
		if err != nil || int64(len(got)) != n || !isPattern(block, off, got) {
			t.Fatalf("range %d+%d: %d bytes, %v", off, n, len(got), err)
		}
	}
	for range 3 { // HEADERONLY, FILELISTONLY, the restore's start
		want(0, 64<<10)
	}
	read := idleWindow(t, w)
	const trailer = size - 64<<10
	start := time.Now()
	_, err := w.ReadRange(ctx, trailer, 64<<10)
	if !errors.Is(err, ErrTooFarAhead) || errors.Is(err, ErrBehindWindow) || !strings.Contains(err.Error(), fmt.Sprint(trailer)) {
		t.Fatalf("the trailer asked alone: %v, want ErrTooFarAhead", err)
	}
	if d := time.Since(start); d < o.alone {
		t.Errorf("the trailer failed after %v, before the alone wait", d)
	}
	t.Log(err)
	if now := idleWindow(t, w); now != read {
		t.Fatalf("%d bytes read before the trailer was asked, %d after: the stream was consumed for it", read, now)
	}
	want(40<<20, 64<<10) // the review's failing read
	if err := passWindow(w, size, 4<<20, 3, false, func(off int64, got []byte) bool { return isPattern(block, off, got) }); err != nil {
		t.Fatal(err)
	}
	want(trailer, 64<<10)
	checkPeak(t, w, WindowOptions{Head: DefaultWindowHead, Behind: DefaultWindowBehind, Ahead: DefaultWindowAhead, chunk: windowChunk})
	if err := w.Drain(); err != nil || w.Read() != size {
		t.Fatalf("Drain() = %v after %d bytes", err, w.Read())
	}
}

// A trailer within Head + Behind + Ahead of the start is read at once,
// and the bytes skipped to reach it are kept for the pass from 0: reading
// ahead (Ahead past the trailer, once it is delivered) drops none of them;
// only a range that needs the room does, behind its own next byte.
func TestWindowTrailerFits(t *testing.T) {
	for _, c := range []struct {
		name          string
		size, trailer int64
	}{
		{"WholeStream", 4<<20 + 32<<10, 4<<20 - 32<<10},
		{"Probe", 8 << 20, 3<<20 + 512<<10},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := randomBytes(int(c.size), 23)
			w := NewWindowSource(bytes.NewReader(data), c.size, testWindow)
			wantWindow(t, w, data, 0, 64<<10)
			wantWindow(t, w, data, c.trailer, 64<<10)
			idleWindow(t, w)
			w.mu.Lock()
			start := w.windowStart()
			w.mu.Unlock()
			if start != testWindow.Head {
				t.Fatalf("the window starts at %d after the trailer, not at the head's end", start)
			}
			for off := int64(0); off < c.size; off += 1 << 20 {
				wantWindow(t, w, data, off, min(1<<20, c.size-off))
			}
			checkPeak(t, w, testWindow)
		})
	}
}

// A range too far ahead, asked while other ranges are open, waits for a
// concurrent pass to move the window up to it, and is then served.
func TestWindowFarAheadWaits(t *testing.T) {
	data := randomBytes(16<<20+777, 24)
	size := int64(len(data))
	w := NewWindowSource(bytes.NewReader(data), size, testWindow)
	company, err := w.ReadRange(ctx, 0, 64<<10) // in the head: holds nothing back
	if err != nil {
		t.Fatal(err)
	}
	const far = 12 << 20
	type result struct {
		furthest int64 // the furthest byte delivered when the range was served
		err      error
	}
	done := make(chan result, 1)
	go func() {
		rc, err := w.ReadRange(ctx, far, 1<<20)
		if err != nil {
			done <- result{err: err}
			return
		}
		w.mu.Lock()
		furthest := w.furthest
		w.mu.Unlock()
		got, err := io.ReadAll(rc)
		rc.Close()
		if err == nil && !bytes.Equal(got, data[far:far+1<<20]) {
			err = errors.New("the range ahead got wrong bytes")
		}
		done <- result{furthest, err}
	}()
	waitWindow(t, w, "the range ahead waiting", func() bool {
		return len(w.readers) == 2 && !w.reachable(far)
	})
	// In order: the test window's Behind of 2 MiB does not cover 3
	// ranges of 1 MiB asked in any order.
	if err := passWindow(w, size, 1<<20, 3, true, func(off int64, got []byte) bool { return bytes.Equal(got, data[off:off+int64(len(got))]) }); err != nil {
		t.Fatal(err)
	}
	company.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if min := int64(far - testWindow.Behind - testWindow.Ahead); r.furthest < min {
		t.Errorf("the range ahead was served with bytes delivered up to %d, before the window could hold it (%d)", r.furthest, min)
	}
	checkPeak(t, w, testWindow)
}

// Ranges too far ahead whose company leaves fail with ErrTooFarAhead after
// the alone wait (together: none moves the window for the other), and
// every byte before them can still be read; nothing was read for them.
func TestWindowFarAheadAlone(t *testing.T) {
	t.Parallel()
	data := randomBytes(8<<20, 25)
	size := int64(len(data))
	o := testWindow
	o.alone = 100 * time.Millisecond
	w := NewWindowSource(bytes.NewReader(data), size, o)
	company, err := w.ReadRange(ctx, 0, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 3)
	for _, off := range []int64{5 << 20, 6 << 20} {
		go func() {
			_, err := w.ReadRange(ctx, off, 1<<20)
			errs <- err
		}()
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_, err := w.ReadRange(cctx, 7<<20, 1<<20)
		errs <- err
	}()
	waitWindow(t, w, "the ranges ahead waiting", func() bool { return len(w.readers) == 4 })
	read := idleWindow(t, w)
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("a range ahead whose context ended: %v", err)
	}
	time.Sleep(2 * o.alone) // company keeps them waiting
	select {
	case err := <-errs:
		t.Fatalf("a range ahead ended with company open: %v", err)
	default:
	}
	start := time.Now()
	company.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrTooFarAhead) {
			t.Fatalf("a range ahead left alone: %v, want ErrTooFarAhead", err)
		}
	}
	if d := time.Since(start); d < o.alone {
		t.Errorf("the ranges ahead failed %v after they were left alone, before the alone wait", d)
	}
	if now := idleWindow(t, w); now != read {
		t.Errorf("%d bytes read while the ranges ahead waited, %d after", read, now)
	}
	for off := int64(0); off < size; off += 1 << 20 {
		wantWindow(t, w, data, off, 1<<20)
	}
	checkPeak(t, w, o)
}

// windowStore serves one WindowSource as the blob name.
type windowStore struct {
	name string
	src  *WindowSource
}

func (s *windowStore) Create(context.Context, string) (Sink, error) {
	return nil, errors.New("read-only")
}

func (s *windowStore) Open(_ context.Context, name string) (Source, error) {
	if name != s.name {
		return nil, ErrNotFound
	}
	return s.src, nil
}

func (s *windowStore) Delete(context.Context, string) error { return errors.New("read-only") }

// A restore's reads through the Server, by Microsoft's client.
func TestWindowOverServer(t *testing.T) {
	data := randomBytes(24<<20+777, 18)
	size := int64(len(data))
	o := WindowOptions{Head: 1 << 20, Behind: 6 << 20, Ahead: 2 << 20, chunk: 256 << 10,
		ModTime: time.Now().Truncate(time.Second)}
	w := NewWindowSource(bytes.NewReader(data), size, o)
	e := newEnv(t, func(opts *Options) { opts.Store = &windowStore{name: "restore.bak", src: w} }, nil)
	c := e.client(t, "restore.bak", 0)

	props, err := c.GetProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *props.ContentLength != size || !props.LastModified.Equal(o.ModTime) {
		t.Fatalf("properties: size %d, modified %v", *props.ContentLength, props.LastModified)
	}
	download := func(offset, count int64) ([]byte, error) {
		resp, err := c.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: offset, Count: count}})
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	for range 3 { // HEADERONLY, FILELISTONLY, the restore's start
		got, err := download(0, 64<<10)
		if err != nil || !bytes.Equal(got, data[:64<<10]) {
			t.Fatalf("head: %d bytes, %v", len(got), err)
		}
	}
	buf := make([]byte, size)
	n, err := c.DownloadBuffer(ctx, buf, &blob.DownloadBufferOptions{BlockSize: 1 << 20, Concurrency: 4})
	if err != nil || n != size || !bytes.Equal(buf, data) {
		t.Fatalf("DownloadBuffer: %d bytes, %v", n, err)
	}
	got, err := download(0, 64<<10)
	if err != nil || !bytes.Equal(got, data[:64<<10]) {
		t.Fatalf("head again: %d bytes, %v", len(got), err)
	}
	got, err = download(size-(4<<20), 0)
	if err != nil || !bytes.Equal(got, data[size-(4<<20):]) {
		t.Fatalf("the end again: %d bytes, %v", len(got), err)
	}
	_, err = download(2<<20, 4096)
	wantCode(t, err, http.StatusInternalServerError, "InternalError")
	checkPeak(t, w, o)
	if err := w.Drain(); err != nil || w.Read() != size {
		t.Fatalf("Drain() = %v after %d bytes", err, w.Read())
	}
}
