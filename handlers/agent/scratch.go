package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/securefile"
)

// scratchDB is the scratch database of a FULL verification.
type scratchDB struct {
	eng     engines.Engine
	conn    engines.Conn // the target server, connected to its own database
	name    string
	where   string // host:port
	journal string // its journal entry; "" without a journal
}

// scratchEntry is a journal entry: a scratch database that exists or may.
// A killed agent finds the entries at its next start and drops them.
type scratchEntry struct {
	Conn events.ConnSpec `json:"conn"` // the password stays sealed to this agent
	Name string          `json:"name"`
}

// scratchSuffix ends the name of a scratch journal entry.
const scratchSuffix = ".scratch"

// dropTimeout bounds dropping a scratch database.
const dropTimeout = 2 * time.Minute

// createScratch makes the scratch database on the command's target and
// adds the "scratch database" check; it returns nil when there is none
// (the check says why).
func (v *verification) createScratch(ctx context.Context, eng engines.Engine) (*scratchDB, error) {
	if v.cmd.Target == nil {
		v.add("scratch database", false, "the command names no server for the test restore")
		return nil, nil
	}
	teng, conn, err := v.h.openConn(*v.cmd.Target)
	if err != nil {
		v.add("scratch database", false, "%v", err)
		return nil, nil
	}
	if teng.Spec().Type != eng.Spec().Type {
		v.add("scratch database", false, "the verification target is a %s database; the backup is %s", teng.Spec().Name, eng.Spec().Name)
		return nil, nil
	}
	sc := &scratchDB{eng: eng, conn: conn, name: engines.ScratchPrefix + strings.ReplaceAll(v.cmd.VerifyID, "-", ""),
		where: net.JoinHostPort(conn.Host, strconv.Itoa(conn.Port))}
	// The entry comes first: a crash right after the CREATE leaves it.
	sc.journal = v.h.journalScratch(*v.cmd.Target, sc.name)
	v.step.Store("creating the scratch database")
	if err := eng.CreateScratch(ctx, conn, sc.name); err != nil {
		if errors.Is(err, engines.ErrPrivilege) {
			v.add("scratch database", false, "%v", err)
		} else {
			v.add("scratch database", false, "cannot create %s on %s: %v", sc.name, sc.where, err)
		}
		v.h.unjournal(sc.journal)
		return nil, nil
	}
	v.add("scratch database", true, "created %s on %s", sc.name, sc.where)
	return sc, nil
}

// dropScratch drops the scratch database, even after ctx ended, and adds
// the "cleanup" check.
func (v *verification) dropScratch(sc *scratchDB) {
	v.step.Store("dropping the scratch database")
	ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
	defer cancel()
	if err := sc.eng.DropScratch(ctx, sc.conn, sc.name); err != nil {
		v.add("cleanup", false, "could not drop %s on %s: %v; the agent tries again at its next start", sc.name, sc.where, err)
		return
	}
	v.h.unjournal(sc.journal)
	v.add("cleanup", true, "dropped %s", sc.name)
}

// scratchLoad is a test restore being fed.
type scratchLoad struct {
	pw      *io.PipeWriter
	done    chan struct{}
	err     error
	started time.Time
	took    time.Duration
}

var errLoadEnded = errors.New("the test restore ended")

// startLoad starts restoring what is written to the returned load's pw.
// size is the dump's length, which an engine whose server reads by range
// needs (engines.Sized).
func (v *verification) startLoad(ctx context.Context, eng engines.Engine, sc *scratchDB, size int64) *scratchLoad {
	pr, pw := io.Pipe()
	l := &scratchLoad{pw: pw, done: make(chan struct{}), started: time.Now()}
	v.step.Store("reading the backup and restoring it into " + sc.name)
	go func() {
		defer close(l.done)
		l.err = eng.LoadScratch(ctx, sc.conn, sc.name, engines.WithSize(pr, size))
		l.took = time.Since(l.started)
		pr.CloseWithError(errLoadEnded)
	}()
	return l
}

// end closes the load's input, failing it when the backup could not be
// read whole (readErr), and waits for it.
func (l *scratchLoad) end(readErr error) {
	if readErr != nil {
		l.pw.CloseWithError(readErr)
	} else {
		l.pw.Close()
	}
	<-l.done
	if readErr != nil && l.err == nil {
		l.err = fmt.Errorf("the backup could not be read whole: %w", readErr)
	}
}

// restored adds FULL's checks: the test restore, then the restored
// database read back by the engine (ReadBack) against the manifest.
func (v *verification) restored(ctx context.Context, eng engines.Engine, sc *scratchDB, l *scratchLoad, m *pipeline.Manifest, rawSize int64) {
	if l.err != nil {
		v.add("test restore", false, "the backup does not restore: %v", l.err)
		return
	}
	v.add("test restore", true, "%d bytes of dump restored into %s on %s in %s", rawSize, sc.name, sc.where, l.took.Round(time.Millisecond))
	v.step.Store("reading the restored database back")
	start := time.Now()
	c := sc.conn
	c.Database = sc.name
	info, err := eng.ReadBack(ctx, c)
	if err != nil {
		v.add("restored tables", false, "the restored database cannot be read back: %v", err)
		return
	}
	took := time.Since(start).Round(time.Millisecond)
	if m == nil {
		v.add("restored tables", false, "no manifest to compare the restored database with")
		return
	}
	rows, hashes := pipeline.CompareTables(m.Tables, info.Tables, "restored")
	if len(rows) > 0 {
		v.add("restored tables", false, "%s", pipeline.Summarize(rows, 5))
	} else {
		v.add("restored tables", true, "%d tables, %d rows restored, as the manifest records (read back in %s)", len(m.Tables), totalRows(m.Tables), took)
	}
	if m.Inventory < pipeline.InventoryObjects {
		return // nothing more was recorded
	}
	hashed := slices.ContainsFunc(info.Tables, func(t pipeline.TableCount) bool { return t.Hash != "" })
	switch {
	case !hashed:
		v.add("restored content", true, "not hashed again: %s computes no content hash cheaply; the rows restored are the dump's, whose hashes match the manifest's", eng.Spec().Name)
	case len(hashes) == 0:
		v.add("restored content", true, "every restored table's content hash matches the manifest's")
	case info.ServerVersion != m.ServerVersion:
		v.add("restored content", true, "not compared: the backup came from server %s and was restored on %s, which may spell values differently; rows were compared", m.ServerVersion, info.ServerVersion)
	default:
		v.add("restored content", false, "%s", pipeline.Summarize(hashes, 5))
	}
	if d := pipeline.CompareObjects(m.Objects, info.Objects, "after the restore"); len(d) > 0 {
		v.add("restored schema objects", false, "%s", pipeline.Summarize(d, 5))
	} else {
		v.add("restored schema objects", true, "%s restored", pipeline.CountObjects(m.Objects))
	}
}

// journalScratch records a scratch database about to be created; it
// returns the entry's path, or "" without a journal directory.
func (h *Handlers) journalScratch(conn events.ConnSpec, name string) string {
	if h.JournalDir == "" {
		return ""
	}
	p := filepath.Join(h.JournalDir, name+scratchSuffix)
	data, _ := json.Marshal(scratchEntry{Conn: conn, Name: name})
	if err := securefile.Write(p, data); err != nil {
		h.Logger.Warn("scratch journal not written", "err", err)
		return ""
	}
	return p
}

func (h *Handlers) unjournal(path string) {
	if path != "" {
		os.Remove(path)
	}
}

// RecoverScratch drops the scratch databases of verifications a crash
// interrupted, then clears their journal entries; an entry whose drop
// fails stays for the next start. It returns how many it dropped.
func (h *Handlers) RecoverScratch(ctx context.Context) (int, error) {
	return h.replayJournal(scratchSuffix, "could not drop the scratch database of an interrupted verification; will retry at next start", func(data []byte) error {
		var s scratchEntry
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		if !strings.HasPrefix(s.Name, engines.ScratchPrefix) {
			return fmt.Errorf("entry names %q, not a scratch database", s.Name)
		}
		return h.dropEntry(ctx, s)
	})
}

func (h *Handlers) dropEntry(ctx context.Context, s scratchEntry) error {
	eng, conn, err := h.openConn(s.Conn)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, dropTimeout)
	defer cancel()
	return eng.DropScratch(ctx, conn, s.Name)
}
