// Package blobendpoint serves one container of an Azure-Blob-compatible
// endpoint, so that SQL Server's BACKUP … TO URL streams a native backup
// straight into RahatBack's pipeline and RESTORE … FROM URL reads it back,
// with no temporary file on either side.
//
// The Server is an http.Handler for the part of the Blob service REST API
// that SQL Server (2016 and later, block blobs, a SAS credential) and
// Microsoft's azblob client use on one container:
//
//	PUT    /<container>/<blob>?comp=block&blockid=…  Put Block
//	PUT    /<container>/<blob>?comp=blocklist        Put Block List
//	GET    /<container>/<blob>?comp=blocklist        Get Block List
//	PUT    /<container>/<blob>                       Put Blob (x-ms-blob-type: BlockBlob)
//	GET    /<container>/<blob>                       Get Blob (Range or x-ms-range)
//	HEAD   /<container>/<blob>                       Get Blob Properties
//	DELETE /<container>/<blob>                       Delete Blob
//	PUT    /<container>/<blob>?comp=lease            Lease Blob
//	GET    /<container>?restype=container            Get Container Properties
//
// Every request must carry the server's SAS (see SAS and NewSAS). Anything
// else is refused with Azure's error codes, so that an unexpected request
// shows up as a clear failure rather than being silently accepted. The
// handler speaks plain HTTP; SQL Server only talks HTTPS, so the agent
// serves it through TLS with a certificate SQL Server's host trusts.
//
// # Writes are streams
//
// A blob's bytes go to a Sink in order, as they arrive, never to a
// temporary file. Azure only learns a blob's block order from Put Block
// List, at the end; a stream needs it at once, so the order is fixed
// earlier:
//
//   - By default (Options.BlockNumber nil) the stream order is arrival
//     order: each block is written to the Sink as soon as its body has been
//     received. SQL Server is expected to write one device's blocks one
//     after the other (a striped backup uses one URL, so one blob, per
//     device), so that arrival order is the order it commits. That has not
//     been watched against a real SQL Server (none runs on RahatBack's
//     build machines); if it ever differs, the commit fails loudly
//     rather than storing a scrambled backup.
//   - With Options.BlockNumber set, a block's place is the number that
//     function reads from its id (AzblobBlockNumber reads the ids of
//     Microsoft's Go SDK, which uploads blocks concurrently). A block that
//     extends the stream is written at once, followed by any held blocks it
//     makes contiguous; a block ahead of its turn is held in memory, up to
//     Options.MaxHeldBytes over the whole server, and refused beyond that
//     with 503 ServerBusy, which clients retry.
//
// Put Block List must then name exactly the blocks received, in stream
// order, once each. Anything else (another order, a missing or extra
// block, a block of an earlier version) fails with 400 InvalidBlockList and
// aborts the Sink. A block sent again with the same id and bytes (a retry)
// is accepted and ignored; with other bytes it aborts the blob, since the
// first copy is already downstream. An upload that receives no block
// for Options.IdleTimeout, or is still open at Close, is aborted too.
//
// Reads go to the Store's Source by range: Get Blob asks for exactly the
// bytes the client asked for. Blob metadata, content headers, tags and
// access tiers sent with writes are not kept.
//
// Leases follow Azure's state machine (available, leased, expired,
// breaking, broken) and live in the Server's memory; a write or delete on a
// locked blob needs its lease id.
package blobendpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Defaults of Options.
const (
	DefaultMaxHeldBytes = 64 << 20
	DefaultMaxBlockSize = 100 << 20
	DefaultIdleTimeout  = 10 * time.Minute
)

// defaultAPIVersion is the x-ms-version answered to a request without one.
const defaultAPIVersion = "2021-12-02"

// maxBlobName is Azure's limit on a blob name, in characters.
const maxBlobName = 1024

var containerName = regexp.MustCompile(`^[a-z0-9]+(?:-[a-z0-9]+)*$`)

// Options configure a Server.
type Options struct {
	// Container is the one container served (required), named as Azure
	// names containers: 3 to 63 lowercase letters, digits and single
	// hyphens, starting and ending with a letter or digit.
	Container string
	// SAS is the signature every request must carry (required; see
	// NewSAS).
	SAS SAS
	// Store keeps the blobs (required).
	Store Store
	// MaxHeldBytes bounds the out-of-order blocks held in memory, over all
	// blobs; 0 means DefaultMaxHeldBytes (64 MiB). Only used with
	// BlockNumber.
	MaxHeldBytes int64
	// MaxBlockSize is the largest Put Block body accepted (each block is
	// received whole into memory before it goes downstream, so that a
	// failed or retried request never leaves half a block in the stream);
	// 0 means DefaultMaxBlockSize (100 MiB). SQL Server sends 4 MiB blocks
	// with MAXTRANSFERSIZE = 4194304. Larger blocks get 413
	// RequestBodyTooLarge.
	MaxBlockSize int64
	// IdleTimeout aborts an upload (ErrIdle) that has received no block
	// for that long; 0 means DefaultIdleTimeout (10 minutes).
	IdleTimeout time.Duration
	// BlockNumber, when set, gives each block's place in its blob's stream
	// (0 for the first block) from its decoded id; ok false refuses the
	// block with 400 InvalidBlockId. Nil means arrival order (see the
	// package documentation).
	BlockNumber func(id []byte) (n uint64, ok bool)
	// Logger, when set, receives the errors answered as 500 InternalError,
	// with their request id (the client only sees the id).
	Logger *slog.Logger
}

// Server is the endpoint; New makes one. It is an http.Handler, safe for
// concurrent use. One Server serves one SAS: the agent makes one per
// backup or restore.
type Server struct {
	container   string
	sas         SAS
	store       Store
	maxHeld     int64
	maxBlock    int64
	idle        time.Duration
	blockNumber func([]byte) (uint64, bool)
	log         *slog.Logger
	started     time.Time
	// ops are the blob operations by comp, then method.
	ops map[string]map[string]op

	// now is the clock of leases, SAS expiry and Last-Modified (tests
	// move it); idle timeouts use real time.
	now func() time.Time

	ctx    context.Context // the Stores' Create context, canceled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	blobs  map[string]*blobState
	held   int64 // bytes of out-of-order blocks held, over all uploads
	closed bool

	etags atomic.Uint64
	// heldBlocks and busy count blocks ever held and ever refused; tests
	// read them.
	heldBlocks, busy atomic.Int64
}

// op is one blob operation: the SAS permission it needs and its handler.
type op struct {
	perm byte
	run  func(http.ResponseWriter, *http.Request, string) error
}

// blobState is the Server's memory of one blob name: its lease, its upload in
// progress, and the block list of its last commit made here.
type blobState struct {
	mu     sync.Mutex
	lease  lease
	up     *upload
	blocks []blockInfo
}

// New returns a Server for o. It returns an error when Container is not a
// valid container name, SAS is incomplete (no version, no expiry, unknown
// permissions or a signature shorter than 32 characters), Store is nil, or
// a size or timeout is negative.
func New(o Options) (*Server, error) {
	if len(o.Container) < 3 || len(o.Container) > 63 || !containerName.MatchString(o.Container) {
		return nil, fmt.Errorf("blobendpoint: invalid container name %q", o.Container)
	}
	if err := o.SAS.check(); err != nil {
		return nil, err
	}
	if o.Store == nil {
		return nil, errors.New("blobendpoint: no Store")
	}
	if o.MaxHeldBytes < 0 || o.MaxBlockSize < 0 || o.IdleTimeout < 0 {
		return nil, errors.New("blobendpoint: negative MaxHeldBytes, MaxBlockSize or IdleTimeout")
	}
	s := &Server{
		container:   o.Container,
		sas:         o.SAS,
		store:       o.Store,
		maxHeld:     o.MaxHeldBytes,
		maxBlock:    o.MaxBlockSize,
		idle:        o.IdleTimeout,
		blockNumber: o.BlockNumber,
		log:         o.Logger,
		now:         time.Now,
		blobs:       make(map[string]*blobState),
	}
	if s.maxHeld == 0 {
		s.maxHeld = DefaultMaxHeldBytes
	}
	if s.maxBlock == 0 {
		s.maxBlock = DefaultMaxBlockSize
	}
	if s.idle == 0 {
		s.idle = DefaultIdleTimeout
	}
	s.ops = map[string]map[string]op{
		"": {
			http.MethodGet:    {'r', s.getBlob},
			http.MethodHead:   {'r', s.getBlob},
			http.MethodPut:    {'w', s.putBlob},
			http.MethodDelete: {'d', s.deleteBlob},
		},
		"block":     {http.MethodPut: {'w', s.putBlock}},
		"blocklist": {http.MethodPut: {'w', s.putBlockList}, http.MethodGet: {'r', s.getBlockList}},
		"lease":     {http.MethodPut: {'w', s.leaseBlob}},
	}
	s.started = s.now()
	s.etags.Store(uint64(s.started.UnixNano()))
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close aborts every upload still open (their Sinks get ErrClosed) and
// makes later requests fail with 503 ServerBusy. Call it after the
// http.Server's Shutdown, so that no request is cut in the middle. It
// always returns nil.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	blobs := make([]*blobState, 0, len(s.blobs))
	for _, b := range s.blobs {
		blobs = append(blobs, b)
	}
	s.mu.Unlock()
	for _, b := range blobs {
		b.mu.Lock()
		up := b.up
		b.up = nil
		b.mu.Unlock()
		if up != nil {
			up.abort(ErrClosed)
		}
	}
	s.cancel()
	return nil
}

// blob returns the memory of name, made when create is set (else nil when
// there is none).
func (s *Server) blob(name string, create bool) *blobState {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[name]
	if b == nil && create {
		b = &blobState{}
		s.blobs[name] = b
	}
	return b
}

// ServeHTTP answers one Blob service request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := startResponse(w, r)
	if err := s.route(w, r); err != nil {
		s.writeError(w, r, reqID, err)
	}
}

// startResponse sets the headers every answer carries (a new request id,
// the API version, the client's request id) and returns the request id.
func startResponse(w http.ResponseWriter, r *http.Request) string {
	reqID := uuid.NewString()
	h := w.Header()
	h.Set("x-ms-request-id", reqID)
	v := r.Header.Get("x-ms-version")
	if v == "" {
		v = defaultAPIVersion
	}
	h.Set("x-ms-version", v)
	if c := r.Header.Get("x-ms-client-request-id"); c != "" {
		h.Set("x-ms-client-request-id", c)
	}
	return reqID
}

// route authenticates, finds the operation, checks its permission and runs
// it. Handlers return an error only before they have written anything.
func (s *Server) route(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errServerBusy("The endpoint is closed.")
	}
	q := r.URL.Query()
	if err := s.authenticate(q); err != nil {
		return err
	}
	container, name, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if container != s.container {
		return &azError{http.StatusNotFound, "ContainerNotFound", "The specified container does not exist."}
	}
	if name == "" {
		if !strings.EqualFold(q.Get("restype"), "container") || q.Has("comp") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			return unsupported("Only Get Container Properties is served on the container.")
		}
		if err := s.authorize('r'); err != nil {
			return err
		}
		h := w.Header()
		h.Set("ETag", etagOf(Info{ModTime: s.started}))
		h.Set("Last-Modified", httpTime(s.started))
		h.Set("x-ms-lease-status", "unlocked")
		h.Set("x-ms-lease-state", "available")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	if len([]rune(name)) > maxBlobName {
		return &azError{http.StatusBadRequest, "InvalidUri", "The blob name is longer than 1024 characters."}
	}
	comp := strings.ToLower(q.Get("comp"))
	byMethod, ok := s.ops[comp]
	if !ok {
		return unsupported("comp=" + comp + " is not served by this endpoint.")
	}
	o, ok := byMethod[r.Method]
	if !ok {
		return &azError{http.StatusMethodNotAllowed, "UnsupportedHttpVerb",
			"The resource doesn't support the specified HTTP verb."}
	}
	if err := s.authorize(o.perm); err != nil {
		return err
	}
	return o.run(w, r, name)
}

func unsupported(detail string) *azError {
	return &azError{http.StatusBadRequest, "InvalidQueryParameterValue",
		"Value for one of the query parameters specified in the request URI is invalid. " + detail}
}

// newInfo describes a blob committed now with size bytes, under a fresh
// ETag.
func (s *Server) newInfo(size int64) Info {
	return Info{Size: size, ModTime: s.now(), ETag: fmt.Sprintf(`"0x%X"`, s.etags.Add(1))}
}

// etagOf is info's ETag, quoted, derived from size and time when empty.
func etagOf(info Info) string {
	e := info.ETag
	if e == "" {
		e = fmt.Sprintf("0x%X", uint64(info.ModTime.UnixNano())^uint64(info.Size))
	}
	if !strings.HasPrefix(e, `"`) && !strings.HasPrefix(e, `W/"`) {
		e = `"` + e + `"`
	}
	return e
}

// infoOf is src's Info with its ETag filled in.
func infoOf(src Source) Info {
	info := src.Info()
	info.ETag = etagOf(info)
	return info
}

// setVersionHeaders sets the ETag and Last-Modified of a blob version.
func setVersionHeaders(h http.Header, info Info) {
	h.Set("ETag", info.ETag)
	h.Set("Last-Modified", httpTime(info.ModTime))
}

func httpTime(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

func formatInt(n int64) string { return strconv.FormatInt(n, 10) }
