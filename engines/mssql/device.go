package mssql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rahatback/rahatback/blobendpoint"
)

// blobName is the one blob of an operation's container.
const blobName = "backup.bak"

// credentialLife bounds the SAS of one operation; the credential is
// dropped as soon as the operation ends, whatever its expiry.
const credentialLife = 7 * 24 * time.Hour

// ioBuffer is the buffer a TO DISK file is copied with.
const ioBuffer = 1 << 20

// device is where one backup or restore statement finds its backup, as the
// server sees it: a blob URL on the agent's endpoint, or a file beside the
// agent.
type device struct {
	kind   string // DeviceURL or DeviceDisk
	target string // the blob's URL or the file's path
	// finish ends the reading of a restore's backup (nil for a backup):
	// it reads what the server left unread, so the stream's checksum is
	// checked, and returns the stream's error.
	finish func() error
	// err is the stream's error so far, without waiting (nil: none
	// known); nil for a backup or a file.
	err func() error
	// stop releases the device (credential, endpoint container, file); it
	// logs what it cannot release.
	stop func()
}

// randomName is prefix followed by 16 random hex digits.
func randomName(prefix string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b), nil
}

// errNoDevice is returned by an engine configured with neither mode.
var errNoDevice = errors.New("mssql: this agent has no way to receive a SQL Server backup: start it with a blob endpoint (--mssql-endpoint, --mssql-listen, --mssql-cert, --mssql-key) or a directory shared with the server (--mssql-disk-dir); see the README")

// serve serves store in a new container on the agent's endpoint and
// creates the SAS credential SQL Server authenticates with (permissions as
// blobendpoint.NewSAS takes them). It returns the blob's URL.
func (e *Engine) serve(ctx context.Context, db *sql.DB, store blobendpoint.Store, permissions string) (string, func(), error) {
	container, err := randomName(containerPrefix)
	if err != nil {
		return "", nil, err
	}
	sas, err := blobendpoint.NewSAS(permissions, time.Now().Add(credentialLife))
	if err != nil {
		return "", nil, err
	}
	srv, err := blobendpoint.New(blobendpoint.Options{Container: container, SAS: sas, Store: store, Logger: e.log()})
	if err != nil {
		return "", nil, err
	}
	remove, err := e.o.Hub.Add(srv)
	if err != nil {
		srv.Close()
		return "", nil, err
	}
	e.dropStaleCredentials(ctx, db)
	base := strings.TrimRight(e.o.Endpoint, "/") + "/" + container
	release := func() {
		remove()
		srv.Close()
	}
	create, err := CreateCredential(base, sas.Encode())
	if err != nil {
		release()
		return "", nil, err
	}
	// The statement holds the SAS: its text is never logged, and the
	// driver's error does not quote it.
	if _, err := db.ExecContext(ctx, create); err != nil {
		release()
		return "", nil, fmt.Errorf("mssql: CREATE CREDENTIAL for the agent's endpoint (the login needs ALTER ANY CREDENTIAL): %w", err)
	}
	stop := func() {
		drop, _ := DropCredential(base)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(dctx, drop); err != nil {
			e.log().Warn("could not drop the SQL Server credential of a finished operation; its SAS no longer opens anything", "credential", base, "err", err)
		}
		release()
	}
	return base + "/" + blobName, stop, nil
}

// containerPrefix starts the name of every container the engine serves.
const containerPrefix = "rahatback-"

// dropStaleCredentials drops the credentials of this endpoint's containers
// that no operation serves any more: what an agent killed mid-operation
// left on the server (their SAS opens nothing after the restart, but they
// would pile up). It only logs what it cannot drop.
func (e *Engine) dropStaleCredentials(ctx context.Context, db *sql.DB) {
	prefix := strings.TrimRight(e.o.Endpoint, "/") + "/" + containerPrefix
	rows, err := db.QueryContext(ctx, Credentials, prefix)
	if err != nil {
		e.log().Warn("could not list the server's credentials to drop stale ones", "err", err)
		return
	}
	var stale []string
	for rows.Next() {
		var name string
		if rows.Scan(&name) == nil && !e.o.Hub.Serves(strings.TrimPrefix(name, prefix[:len(prefix)-len(containerPrefix)])) {
			stale = append(stale, name)
		}
	}
	rows.Close()
	for _, name := range stale {
		drop, err := DropCredential(name)
		if err == nil {
			_, err = db.ExecContext(ctx, drop)
		}
		if err != nil {
			e.log().Warn("could not drop a stale credential", "credential", name, "err", err)
		}
	}
}

// backupDevice is where a BACKUP writes: a blob on the endpoint whose
// bytes go to w as they arrive, or a file in the shared directory that is
// copied to w afterwards.
func (e *Engine) backupDevice(ctx context.Context, db *sql.DB, w io.Writer) (*device, func() error, error) {
	switch {
	case e.o.Hub != nil:
		store := &backupStore{w: w}
		url, stop, err := e.serve(ctx, db, store, "rwdl")
		if err != nil {
			return nil, nil, err
		}
		return &device{kind: DeviceURL, target: url, stop: stop}, store.result, nil
	case e.o.DiskDir != "":
		path, remove, err := e.diskFile()
		if err != nil {
			return nil, nil, err
		}
		copyOut := func() error {
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("mssql: the backup file SQL Server wrote cannot be read by the agent: %w", err)
			}
			defer f.Close()
			_, err = io.CopyBuffer(w, f, make([]byte, ioBuffer))
			return err
		}
		return &device{kind: DeviceDisk, target: path, stop: remove}, copyOut, nil
	default:
		return nil, nil, errNoDevice
	}
}

// restoreDevice is where a RESTORE reads r (of size bytes): a blob on the
// endpoint served from the stream through a window, or a file in the
// shared directory that r is first copied to.
func (e *Engine) restoreDevice(ctx context.Context, db *sql.DB, r io.Reader, size int64) (*device, error) {
	switch {
	case e.o.Hub != nil:
		src := blobendpoint.NewWindowSource(r, size, e.o.Window)
		// "w" too: SQL Server takes a lease on the blob it restores from;
		// the store refuses writes and deletes whatever the SAS allows.
		url, stop, err := e.serve(ctx, db, &restoreStore{src: src}, "rwdl")
		if err != nil {
			return nil, err
		}
		return &device{kind: DeviceURL, target: url, finish: src.Drain, err: src.Err, stop: stop}, nil
	case e.o.DiskDir != "":
		path, remove, err := e.diskFile()
		if err != nil {
			return nil, err
		}
		// 0644: the server's service account reads the file.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("mssql: the shared directory: %w", err)
		}
		n, err := io.CopyBuffer(f, r, make([]byte, ioBuffer))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && n != size {
			err = fmt.Errorf("mssql: the backup has %d bytes, the manifest records %d", n, size)
		}
		if err != nil {
			remove()
			return nil, err
		}
		return &device{kind: DeviceDisk, target: path, finish: func() error { return nil }, stop: remove}, nil
	default:
		return nil, errNoDevice
	}
}

// diskFile is a new file name in the shared directory, and what removes
// the file (logging when it cannot).
func (e *Engine) diskFile() (string, func(), error) {
	name, err := randomName("rahatback-")
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(e.o.DiskDir, name+".bak")
	return path, func() {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			e.log().Warn("could not remove a SQL Server backup file from the shared directory", "path", path, "err", err)
		}
	}, nil
}

// backupStore is the Store of a backup TO URL: its one blob's bytes go to
// w as they arrive. SQL Server is documented to create the blob empty
// first (a Put Blob of 0 bytes), take an infinite lease on it, then upload
// blocks and commit them: an empty version may be committed and written
// again, but once bytes went to w the stream cannot start over. Nothing is
// kept to be read back; the blob's properties (for HEAD and leases) are
// those of the last version committed.
type backupStore struct {
	w io.Writer

	mu        sync.Mutex
	gen       int   // the Sink allowed to write: the last created
	written   int64 // bytes gone to w
	committed bool  // some version was committed
	size      int64 // the last committed version's size
	modTime   time.Time
	err       error // why the blob failed, when it did
}

func (s *backupStore) Create(_ context.Context, name string) (blobendpoint.Sink, error) {
	if name != blobName {
		return nil, fmt.Errorf("mssql: SQL Server wrote a blob %q, expected %q", name, blobName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written > 0 {
		return nil, fmt.Errorf("mssql: SQL Server started the blob again after %d bytes had gone to storage", s.written)
	}
	s.gen++
	return &backupSink{s: s, gen: s.gen}, nil
}

func (s *backupStore) Open(_ context.Context, name string) (blobendpoint.Source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name != blobName || !s.committed {
		return nil, blobendpoint.ErrNotFound
	}
	return propsOnly{blobendpoint.Info{Size: s.size, ModTime: s.modTime}}, nil
}

func (s *backupStore) Delete(context.Context, string) error {
	return errors.New("mssql: a backup's blob is not deleted through the endpoint")
}

// result says whether a blob with bytes was committed whole.
func (s *backupStore) result() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return s.err
	case !s.committed || s.size == 0:
		return errors.New("mssql: SQL Server never committed the backup's block list")
	case s.size != s.written:
		return fmt.Errorf("mssql: SQL Server committed %d bytes of the %d it wrote", s.size, s.written)
	default:
		return nil
	}
}

type backupSink struct {
	s   *backupStore
	gen int
}

func (k *backupSink) Write(p []byte) (int, error) {
	s := k.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.gen != s.gen {
		return 0, errors.New("mssql: the blob was started again")
	}
	n, err := s.w.Write(p)
	s.written += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

func (k *backupSink) Commit(info blobendpoint.Info) error {
	s := k.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.gen != s.gen {
		return errors.New("mssql: the blob was started again")
	}
	s.committed, s.size, s.modTime = true, s.written, time.Now()
	return nil
}

func (k *backupSink) Abort(err error) {
	s := k.s
	s.mu.Lock()
	defer s.mu.Unlock()
	// An empty version aborted (a restarted upload) costs nothing; once
	// bytes went downstream the backup is lost.
	if k.gen == s.gen && s.err == nil && s.written > 0 {
		s.err = err
	}
}

// propsOnly is a committed backup blob as HEAD and leases see it: its
// bytes are in storage, not kept here.
type propsOnly struct{ info blobendpoint.Info }

func (p propsOnly) Info() blobendpoint.Info { return p.info }

func (p propsOnly) ReadRange(context.Context, int64, int64) (io.ReadCloser, error) {
	return nil, errors.New("mssql: a backup's blob cannot be read back through the endpoint while it is being taken")
}

// restoreStore is the Store of a restore FROM URL: its one blob, read-only.
type restoreStore struct{ src *blobendpoint.WindowSource }

func (s *restoreStore) Create(context.Context, string) (blobendpoint.Sink, error) {
	return nil, errors.New("mssql: a restore's endpoint is read-only")
}

func (s *restoreStore) Open(_ context.Context, name string) (blobendpoint.Source, error) {
	if name != blobName {
		return nil, blobendpoint.ErrNotFound
	}
	return s.src, nil
}

func (s *restoreStore) Delete(context.Context, string) error {
	return errors.New("mssql: a restore's endpoint is read-only")
}
