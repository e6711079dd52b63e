package blobendpoint

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Timeouts of the Hub's HTTP server. There is no read or write timeout on
// a whole request: a block or a restore's range takes as long as the
// network and the stream behind it take.
const (
	hubReadHeaderTimeout = 30 * time.Second
	hubIdleTimeout       = 2 * time.Minute
	hubMaxHeaderBytes    = 64 << 10
)

// HubOptions configure a Hub.
type HubOptions struct {
	// Listen is the TCP address served, host:port (required; ":0" picks
	// a free port, see Hub.Addr).
	Listen string
	// CertFile and KeyFile are the PEM certificate (chain) and private key
	// the Hub serves TLS with (both required: SQL Server only speaks
	// HTTPS). They are read again when either file's modification time or
	// size changes, so a renewed certificate is served without a restart.
	CertFile, KeyFile string
	// Logger receives certificate reloads and their failures, TLS and
	// connection errors, and a listener that stops; nil discards them.
	Logger *slog.Logger
}

// Hub serves many Servers, each with its own container and SAS, on one
// HTTPS listener: the agent's blob endpoint, which gets a Server per
// backup or restore. A request goes to the Server whose container is its
// path's first segment; a container no Server serves is answered with 404
// ContainerNotFound. It speaks HTTP/1.1 only, as Azure's Blob service
// does, with TLS 1.2 or later. NewHub makes one; it is safe for
// concurrent use.
type Hub struct {
	ln    net.Listener
	srv   *http.Server
	certs *certReloader
	log   *slog.Logger
	done  chan struct{} // closed when Serve returns
	errs  *Server       // writes the Hub's own error answers

	mu      sync.RWMutex
	servers map[string]*Server
	closed  bool
}

// NewHub loads o's certificate, listens on o.Listen and serves in a
// goroutine until Close. It returns an error when Listen, CertFile or
// KeyFile is empty, the certificate and key cannot be read or do not make
// a pair, or the address cannot be listened on.
func NewHub(o HubOptions) (*Hub, error) {
	if o.Listen == "" {
		return nil, errors.New("blobendpoint: hub has no listen address")
	}
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("blobendpoint: hub needs a certificate and a key file (SQL Server only speaks HTTPS)")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	certs := &certReloader{certFile: o.CertFile, keyFile: o.KeyFile, log: log}
	if err := certs.load(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("blobendpoint: hub: %w", err)
	}
	h := &Hub{
		ln:      ln,
		certs:   certs,
		log:     log,
		done:    make(chan struct{}),
		errs:    &Server{now: time.Now},
		servers: make(map[string]*Server),
	}
	h.srv = &http.Server{
		Handler:           http.HandlerFunc(h.serveHTTP),
		ReadHeaderTimeout: hubReadHeaderTimeout,
		IdleTimeout:       hubIdleTimeout,
		MaxHeaderBytes:    hubMaxHeaderBytes,
		// Not nil: no HTTP/2.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	tlsLn := tls.NewListener(ln, &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: certs.get,
	})
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(tlsLn); !errors.Is(err, http.ErrServerClosed) {
			log.Error("blobendpoint: the hub stopped serving", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return h, nil
}

// Addr is the address the Hub listens on.
func (h *Hub) Addr() net.Addr { return h.ln.Addr() }

// Close closes the listener and every connection, cutting the requests in
// progress, and waits for the serving goroutine to end. The Servers added
// are left to their owners to close. It returns the listener's close
// error.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	err := h.srv.Close()
	<-h.done
	return err
}

// Add routes the requests for s's container to s until remove is called
// (more calls of remove do nothing). It returns an error when s is nil,
// another Server already serves that container, or the Hub is closed.
func (h *Hub) Add(s *Server) (remove func(), err error) {
	if s == nil {
		return nil, errors.New("blobendpoint: hub: nil Server")
	}
	c := s.Container()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("blobendpoint: hub closed")
	}
	if _, ok := h.servers[c]; ok {
		return nil, fmt.Errorf("blobendpoint: hub already serves container %q", c)
	}
	h.servers[c] = s
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.servers[c] == s {
				delete(h.servers, c)
			}
		})
	}, nil
}

// Serves reports whether a Server is routed to for container.
func (h *Hub) Serves(container string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, ok := h.servers[container]
	return ok
}

// Container is the name of the one container s serves.
func (s *Server) Container() string { return s.container }

// serveHTTP hands r to the Server of its container.
func (h *Hub) serveHTTP(w http.ResponseWriter, r *http.Request) {
	container, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	h.mu.RLock()
	s := h.servers[container]
	h.mu.RUnlock()
	if s != nil {
		s.ServeHTTP(w, r)
		return
	}
	h.errs.writeError(w, r, startResponse(w, r), &azError{http.StatusNotFound, "ContainerNotFound", "The specified container does not exist."})
}

// certReloader is the Hub's certificate, read again from its files on the
// first TLS handshake after either file changed.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded filesVersion // the files' version cert was read from
	failed filesVersion // the last version that failed to load, logged once
	// missing: a file could not be stat'ed at the last handshake (logged
	// once).
	missing bool
}

// filesVersion tells a certificate's files' contents apart by their
// modification times and sizes.
type filesVersion struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func (c *certReloader) version() (filesVersion, error) {
	ci, err := os.Stat(c.certFile)
	if err != nil {
		return filesVersion{}, err
	}
	ki, err := os.Stat(c.keyFile)
	if err != nil {
		return filesVersion{}, err
	}
	return filesVersion{ci.ModTime(), ki.ModTime(), ci.Size(), ki.Size()}, nil
}

// load reads the certificate at start.
func (c *certReloader) load() error {
	v, err := c.version()
	if err == nil {
		var cert tls.Certificate
		if cert, err = tls.LoadX509KeyPair(c.certFile, c.keyFile); err == nil {
			c.cert, c.loaded = &cert, v
			return nil
		}
	}
	return fmt.Errorf("blobendpoint: hub certificate %s and key %s: %w", c.certFile, c.keyFile, err)
}

// get is tls.Config.GetCertificate: the loaded certificate, read again
// when its files changed. A reload that fails (a file missing, half
// written, or the two not a pair) keeps the previous certificate and is
// logged once per version of the files.
func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.version()
	switch {
	case err != nil:
		if c.missing {
			return c.cert, nil
		}
		c.missing = true
	case v == c.loaded || v == c.failed:
		c.missing = false
		return c.cert, nil
	default:
		c.missing = false
		var cert tls.Certificate
		if cert, err = tls.LoadX509KeyPair(c.certFile, c.keyFile); err == nil {
			c.cert, c.loaded, c.failed = &cert, v, filesVersion{}
			attrs := []any{"cert", c.certFile}
			if cert.Leaf != nil {
				attrs = append(attrs, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
			}
			c.log.Info("blobendpoint: hub certificate reloaded", attrs...)
			return c.cert, nil
		}
		c.failed = v
	}
	c.log.Error("blobendpoint: hub certificate not reloaded; serving the previous one",
		"cert", c.certFile, "key", c.keyFile, "err", err)
	return c.cert, nil
}
