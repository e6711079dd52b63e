package blobendpoint

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and localhost
// with serial to certFile and keyFile, with mtime as both files'
// modification time (so that a rewrite within a file system's time
// granularity still shows), and returns it.
func writeCert(t *testing.T, certFile, keyFile string, serial int64, mtime time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "rahatback hub test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certFile, "CERTIFICATE", der, mtime)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER, mtime)
	return cert
}

func writePEM(t *testing.T, path, typ string, der []byte, mtime time.Time) {
	t.Helper()
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mtime)
}

func writeFile(t *testing.T, path string, data []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// logBuffer is a log destination safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type hubEnv struct {
	hub               *Hub
	certFile, keyFile string
	roots             *x509.CertPool
	http              *http.Client
	log               *logBuffer
	mtime             time.Time // of the certificate files
}

func newHubEnv(t *testing.T) *hubEnv {
	t.Helper()
	dir := t.TempDir()
	e := &hubEnv{
		certFile: filepath.Join(dir, "cert.pem"),
		keyFile:  filepath.Join(dir, "key.pem"),
		roots:    x509.NewCertPool(),
		log:      &logBuffer{},
		mtime:    time.Now().Add(-time.Hour).Truncate(time.Second),
	}
	e.roots.AddCert(writeCert(t, e.certFile, e.keyFile, 1, e.mtime))
	var err error
	e.hub, err = NewHub(HubOptions{Listen: "127.0.0.1:0", CertFile: e.certFile, KeyFile: e.keyFile,
		Logger: slog.New(slog.NewTextHandler(e.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}
	e.http = &http.Client{Transport: tr}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := e.hub.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

// server adds a Server of container, with its own SAS and store, to the
// hub.
func (e *hubEnv) server(t *testing.T, container string) (*Server, SAS, *memStore, func()) {
	t.Helper()
	sas, err := NewSAS("rwdl", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore()
	s, err := New(Options{Container: container, SAS: sas, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	remove, err := e.hub.Add(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, sas, store, remove
}

func (e *hubEnv) url(container, name string) string {
	return "https://" + e.hub.Addr().String() + "/" + container + "/" + name
}

// client is azblob's client for container/name with sas, over HTTPS
// trusting the test certificates, without retries.
func (e *hubEnv) client(t *testing.T, container, name string, sas SAS) *blockblob.Client {
	t.Helper()
	c, err := blockblob.NewClientWithNoCredential(e.url(container, name)+"?"+sas.Encode(), &blockblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: e.http, Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serial is the serial number of the certificate a new TLS connection to
// the hub sees.
func (e *hubEnv) serial(t *testing.T) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", e.hub.Addr().String(), &tls.Config{RootCAs: e.roots})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestHub(t *testing.T) {
	e := newHubEnv(t)
	a, sasA, storeA, removeA := e.server(t, "alpha")
	_, sasB, storeB, _ := e.server(t, "beta")
	if a.Container() != "alpha" {
		t.Fatalf("Container() = %q", a.Container())
	}
	dataA, dataB := randomBytes(3<<20+5, 21), randomBytes(2<<20+7, 22)

	if _, err := e.client(t, "alpha", "a.bak", sasA).Upload(ctx, body(dataA), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(t, "beta", "b.bak", sasB).UploadStream(ctx, bytes.NewReader(dataB),
		&blockblob.UploadStreamOptions{BlockSize: 1 << 20, Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := storeB.lastSink(t, "b.bak").wait(t); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		container, name string
		sas             SAS
		store           *memStore
		data            []byte
	}{
		{"alpha", "a.bak", sasA, storeA, dataA},
		{"beta", "b.bak", sasB, storeB, dataB},
	} {
		if sink := tc.store.lastSink(t, tc.name); sink.store != tc.store {
			t.Fatalf("%s written to another store", tc.name)
		}
		buf := make([]byte, len(tc.data))
		n, err := e.client(t, tc.container, tc.name, tc.sas).DownloadBuffer(ctx, buf, nil)
		if err != nil || n != int64(len(tc.data)) || !bytes.Equal(buf, tc.data) {
			t.Fatalf("%s/%s read back: %d bytes, %v", tc.container, tc.name, n, err)
		}
	}

	t.Run("OtherSAS", func(t *testing.T) {
		_, err := e.client(t, "alpha", "a.bak", sasB).GetProperties(ctx, nil)
		wantCode(t, err, http.StatusForbidden, "AuthenticationFailed")
		_, err = e.client(t, "beta", "x.bak", sasA).Upload(ctx, body([]byte("x")), nil)
		wantCode(t, err, http.StatusForbidden, "AuthenticationFailed")
	})
	t.Run("UnknownContainer", func(t *testing.T) {
		_, err := e.client(t, "gamma", "a.bak", sasA).GetProperties(ctx, nil)
		wantCode(t, err, http.StatusNotFound, "ContainerNotFound")
		req, _ := http.NewRequest(http.MethodGet, e.url("gamma", "a.bak")+"?"+sasA.Encode(), nil)
		req.Header.Set("x-ms-version", "2020-04-08")
		req.Header.Set("x-ms-client-request-id", "abc")
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var azErr struct{ Code, Message string }
		if err := xml.NewDecoder(resp.Body).Decode(&azErr); err != nil {
			t.Fatal(err)
		}
		h := resp.Header
		if resp.StatusCode != http.StatusNotFound || azErr.Code != "ContainerNotFound" || h.Get("x-ms-error-code") != "ContainerNotFound" ||
			h.Get("x-ms-request-id") == "" || !strings.Contains(azErr.Message, "RequestId:"+h.Get("x-ms-request-id")) ||
			h.Get("x-ms-version") != "2020-04-08" || h.Get("x-ms-client-request-id") != "abc" {
			t.Fatalf("got %d %+v, headers %v", resp.StatusCode, azErr, h)
		}
	})
	t.Run("Add", func(t *testing.T) {
		dup, err := New(Options{Container: "alpha", SAS: sasB, Store: newMemStore()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.hub.Add(dup); err == nil || !strings.Contains(err.Error(), `"alpha"`) {
			t.Fatalf("second Server for alpha: %v", err)
		}
		if _, err := e.hub.Add(nil); err == nil {
			t.Fatal("Add(nil) accepted")
		}
		// The first Server still serves alpha.
		if _, err := e.client(t, "alpha", "a.bak", sasA).GetProperties(ctx, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Remove", func(t *testing.T) {
		removeA()
		_, err := e.client(t, "alpha", "a.bak", sasA).GetProperties(ctx, nil)
		wantCode(t, err, http.StatusNotFound, "ContainerNotFound")
		if _, err := e.client(t, "beta", "b.bak", sasB).GetProperties(ctx, nil); err != nil {
			t.Fatalf("beta after alpha's removal: %v", err)
		}
		// A new Server may take the container; the old remove does not
		// touch it.
		_, sasA2, storeA2, _ := e.server(t, "alpha")
		storeA2.put("c.bak", []byte("again"))
		removeA()
		if _, err := e.client(t, "alpha", "c.bak", sasA2).GetProperties(ctx, nil); err != nil {
			t.Fatalf("the new alpha: %v", err)
		}
	})
}

func TestHubCertificateReload(t *testing.T) {
	e := newHubEnv(t)
	if s := e.serial(t); s != 1 {
		t.Fatalf("serial %d served, want 1", s)
	}
	_, sas, store, _ := e.server(t, "alpha")
	store.put("a.bak", []byte("data"))

	// A key that does not parse: the old certificate stays, once logged.
	writeFile(t, e.keyFile, []byte("not a key"), e.mtime.Add(time.Minute))
	for range 3 {
		if s := e.serial(t); s != 1 {
			t.Fatalf("serial %d served after a failed reload, want 1", s)
		}
	}
	if n := strings.Count(e.log.String(), "not reloaded"); n != 1 {
		t.Fatalf("%d reload failures logged, want 1:\n%s", n, e.log.String())
	}

	// A renewed certificate is served on new connections.
	e.roots.AddCert(writeCert(t, e.certFile, e.keyFile, 2, e.mtime.Add(2*time.Minute)))
	deadline := time.Now().Add(10 * time.Second)
	for e.serial(t) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate is not served; log:\n%s", e.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(e.log.String(), "reloaded") {
		t.Errorf("reload not logged:\n%s", e.log.String())
	}
	// A client trusting only the new certificate gets through.
	only := x509.NewCertPool()
	cert, err := tls.LoadX509KeyPair(e.certFile, e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	only.AddCert(cert.Leaf)
	c, err := blockblob.NewClientWithNoCredential(e.url("alpha", "a.bak")+"?"+sas.Encode(), &blockblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Transport: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: only}}},
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.DownloadStream(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != "data" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestHubClose(t *testing.T) {
	e := newHubEnv(t)
	addr := e.hub.Addr().String()
	if err := e.hub.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Container: "alpha", SAS: mustSAS(t), Store: newMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Add(s); err == nil {
		t.Error("Add after Close accepted")
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Error("the hub still listens after Close")
	}
}

func mustSAS(t *testing.T) SAS {
	t.Helper()
	sas, err := NewSAS("rl", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return sas
}

func TestNewHubErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	otherCert, otherKey := filepath.Join(dir, "other.pem"), filepath.Join(dir, "other-key.pem")
	now := time.Now()
	writeCert(t, certFile, keyFile, 1, now)
	writeCert(t, otherCert, otherKey, 2, now)
	missing := filepath.Join(dir, "missing.pem")

	_, err := NewHub(HubOptions{Listen: "127.0.0.1:0", CertFile: missing, KeyFile: keyFile})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing certificate file: %v", err)
	}
	_, err = NewHub(HubOptions{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: missing})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing key file: %v", err)
	}
	for _, tc := range []struct {
		name string
		o    HubOptions
	}{
		{"NoCert", HubOptions{Listen: "127.0.0.1:0", KeyFile: keyFile}},
		{"NoKey", HubOptions{Listen: "127.0.0.1:0", CertFile: certFile}},
		{"NoListen", HubOptions{CertFile: certFile, KeyFile: keyFile}},
		{"NotAPair", HubOptions{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: otherKey}},
		{"BadAddress", HubOptions{Listen: "127.0.0.1:99999", CertFile: certFile, KeyFile: keyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHub(tc.o)
			if err == nil {
				h.Close()
				t.Fatal("NewHub accepted")
			}
			t.Log(err)
		})
	}
}
