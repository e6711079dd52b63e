package testsupport

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MailpitVersion is the mailpit release the tests run, installed from the
// Go module proxy.
const MailpitVersion = "v1.33.1"

const mailpitModule = "github.com/axllent/mailpit"

// MailpitBinary returns the path of the mailpit binary, installing it on
// first use with `go install` of MailpitVersion (from the Go module proxy,
// as GOPROXY says) into <user cache dir>/rahatback/mailpit-<version>, as
// VersityGWBinary does.
func MailpitBinary() (string, error) {
	return goInstalled("mailpit", mailpitModule, MailpitVersion)
}

// MailpitOptions says how StartMailpit configures the SMTP server. The zero
// value is a plain SMTP server that accepts any mail without
// authentication.
type MailpitOptions struct {
	// TLS is "" for plain SMTP (no TLS offered), "starttls" for SMTP where
	// STARTTLS is offered and required before anything but EHLO/NOOP/QUIT,
	// or "tls" for implicit TLS (SMTPS: the connection starts with a TLS
	// handshake). The server's certificate, for 127.0.0.1 and localhost, is
	// signed by a CA made for the test: see Mailpit.CAFile and TLSConfig.
	TLS string
	// Auth requires SMTP AUTH (PLAIN or LOGIN) before MAIL, with the one
	// random user and password of Mailpit.Username and Mailpit.Password;
	// other credentials are refused. Without TLS, authentication happens
	// in clear text (mailpit's --smtp-auth-allow-insecure).
	Auth bool
}

// Mailpit is a real SMTP server for a test, mailpit, that keeps what it
// receives and shows it through its HTTP API (see Messages).
type Mailpit struct {
	Host     string // "127.0.0.1", for the SMTP server and the API
	SMTPPort int
	APIURL   string // "http://127.0.0.1:<port>", no trailing slash
	// Username and Password are the only accepted SMTP credentials when
	// MailpitOptions.Auth; empty otherwise.
	Username, Password string
	// CAFile is the PEM file of the CA that signed the server's
	// certificate when MailpitOptions.TLS is set; empty otherwise.
	CAFile string

	tls    string
	caPool *x509.CertPool
	http   *http.Client
}

// SMTPURL returns the server's address as a URL, with the credentials
// (URL-escaped) when MailpitOptions.Auth:
//
//	plain:    smtp://[user:pass@]127.0.0.1:PORT?tls=none
//	starttls: smtp://[user:pass@]127.0.0.1:PORT
//	tls:      smtps://[user:pass@]127.0.0.1:PORT
func (m *Mailpit) SMTPURL() string {
	u := url.URL{Scheme: "smtp", Host: net.JoinHostPort(m.Host, strconv.Itoa(m.SMTPPort))}
	switch m.tls {
	case "":
		u.RawQuery = "tls=none"
	case "tls":
		u.Scheme = "smtps"
	}
	if m.Username != "" {
		u.User = url.UserPassword(m.Username, m.Password)
	}
	return u.String()
}

// TLSConfig returns a client configuration that trusts only the test CA
// (CAFile) and expects the server name Host, or nil when the server has
// no TLS. Each call returns a new configuration.
func (m *Mailpit) TLSConfig() *tls.Config {
	if m.caPool == nil {
		return nil
	}
	return &tls.Config{RootCAs: m.caPool, ServerName: m.Host, MinVersion: tls.VersionTLS12}
}

// StartMailpit starts mailpit for t (installing it first if needed, see
// MailpitBinary) with its SMTP server and its HTTP API on random loopback
// ports and its database in a temporary directory, waits until both
// answer, and stops the server when t ends. The server keeps every message
// (no limit on their number) and makes no outside connection (no version
// check, no reverse DNS lookup). It fails t when o is invalid or the server
// does not start; its output is logged when t has failed.
func StartMailpit(t testing.TB, o MailpitOptions) *Mailpit {
	t.Helper()
	if o.TLS != "" && o.TLS != "starttls" && o.TLS != "tls" {
		t.Fatalf("mailpit: MailpitOptions.TLS %q: want \"\", \"starttls\" or \"tls\"", o.TLS)
	}
	bin, err := MailpitBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m := &Mailpit{Host: "127.0.0.1", tls: o.TLS, http: &http.Client{Timeout: 10 * time.Second}}
	args := []string{
		"--database", filepath.Join(dir, "mailpit.db"),
		"--max", "0", // keep everything
		"--disable-version-check", "--smtp-disable-rdns",
	}
	switch o.TLS {
	case "starttls", "tls":
		cert, key, err := writeTestCerts(dir)
		if err != nil {
			t.Fatalf("mailpit: certificates: %v", err)
		}
		m.CAFile = filepath.Join(dir, "ca.pem")
		pemCA, err := os.ReadFile(m.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		m.caPool = x509.NewCertPool()
		m.caPool.AppendCertsFromPEM(pemCA)
		args = append(args, "--smtp-tls-cert", cert, "--smtp-tls-key", key)
		if o.TLS == "tls" {
			args = append(args, "--smtp-require-tls")
		} else {
			args = append(args, "--smtp-require-starttls")
		}
	}
	if o.Auth {
		m.Username, m.Password = "u"+RandomString(6), RandomString(16)
		// An htpasswd file; a hex password is taken as plain text.
		authFile := filepath.Join(dir, "smtp-auth")
		if err := os.WriteFile(authFile, []byte(m.Username+":"+m.Password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--smtp-auth-file", authFile)
		if o.TLS == "" {
			args = append(args, "--smtp-auth-allow-insecure")
		}
	}

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		smtpPort, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		apiPort, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if apiPort == smtpPort {
			continue
		}
		err = m.start(t, bin, args, dir, smtpPort, apiPort)
		if err == nil {
			return m
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	t.Fatal(lastErr)
	return nil
}

// start runs the server on the ports and waits for it; on failure the
// error holds the server's output.
func (m *Mailpit) start(t testing.TB, bin string, args []string, dir string, smtpPort, apiPort int) error {
	smtpAddr := net.JoinHostPort(m.Host, strconv.Itoa(smtpPort))
	apiAddr := net.JoinHostPort(m.Host, strconv.Itoa(apiPort))
	args = append(slices.Clip(args), "--smtp", smtpAddr, "--listen", apiAddr)
	cmd := exec.Command(bin, args...)
	// A clean environment: no MP_* setting of the developer's leaks in.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	cmd.Dir = dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mailpit: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	apiURL := "http://" + apiAddr
	db := filepath.Join(dir, "mailpit.db")
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The API reporting our database proves the server on the port is
		// ours, not another test's.
		err := m.probeAPI(apiURL, db)
		if err == nil {
			err = m.probeSMTP(smtpAddr)
		}
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("mailpit exited (%v): %s", werr, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("mailpit did not answer on %s and %s within 30s (%v): %s", smtpAddr, apiAddr, err, out.String())
		}
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("mailpit output:\n%s", out.String())
		}
	})
	m.SMTPPort, m.APIURL = smtpPort, apiURL
	return nil
}

// probeAPI checks that GET /api/v1/info answers with database db.
func (m *Mailpit) probeAPI(apiURL, db string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var info struct{ Database string }
	if err := m.getJSON(ctx, apiURL+"/api/v1/info", &info); err != nil {
		return err
	}
	if info.Database != db {
		return fmt.Errorf("mailpit API on %s serves database %q, not %q", apiURL, info.Database, db)
	}
	return nil
}

// probeSMTP checks that the SMTP server greets with 220 (after the TLS
// handshake in mode "tls").
func (m *Mailpit) probeSMTP(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if m.tls == "tls" {
		tc := tls.Client(conn, m.TLSConfig())
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("mailpit SMTP TLS handshake: %w", err)
		}
		conn = tc
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("mailpit SMTP greeting: %w", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("mailpit SMTP greeting: %q", strings.TrimSpace(line))
	}
	fmt.Fprint(conn, "QUIT\r\n")
	return nil
}

// writeTestCerts writes into dir a self-signed CA (ca.pem) and a server
// certificate it signs for 127.0.0.1 and localhost (cert.pem, key.pem), all
// ECDSA P-256, valid from an hour ago for a day, and returns the paths of
// the server's certificate and key.
func writeTestCerts(dir string) (certFile, keyFile string, err error) {
	now := time.Now()
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		return n
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "rahatback test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER, 0o644},
		{certFile, "CERTIFICATE", der, 0o644},
		{keyFile, "PRIVATE KEY", keyDER, 0o600},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return "", "", err
		}
	}
	return certFile, keyFile, nil
}

// MailpitMessage is a message mailpit received, as its API shows it.
type MailpitMessage struct {
	ID        string // mailpit's database ID
	MessageID string // the Message-ID header, without angle brackets
	Subject   string // decoded
	From      string // the address of the From header, without display name
	To        []string
	Cc        []string
	Bcc       []string // envelope recipients in neither To nor Cc
	Text      string   // the text/plain body, decoded
	HTML      string   // the text/html body, decoded
	// Headers holds the raw header fields, keyed by canonical name
	// (textproto.CanonicalMIMEHeaderKey) as net/mail parses them.
	Headers map[string][]string
}

// Messages returns every message mailpit holds, oldest first, each read in
// full (GET /api/v1/messages, then GET /api/v1/message/{ID} and
// /api/v1/message/{ID}/headers per message). It fails t when the API does.
func (m *Mailpit) Messages(t testing.TB) []MailpitMessage {
	t.Helper()
	msgs, err := m.messages()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func (m *Mailpit) messages() ([]MailpitMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const page = 200
	var ids []string
	for start := 0; ; start += page {
		var list struct {
			Total    int `json:"total"`
			Messages []struct{ ID string }
		}
		if err := m.getJSON(ctx, fmt.Sprintf("%s/api/v1/messages?start=%d&limit=%d", m.APIURL, start, page), &list); err != nil {
			return nil, err
		}
		for _, s := range list.Messages {
			ids = append(ids, s.ID)
		}
		if len(list.Messages) < page || start+page >= list.Total {
			break
		}
	}
	slices.Reverse(ids) // the API lists the newest first
	msgs := make([]MailpitMessage, 0, len(ids))
	for _, id := range ids {
		type address struct{ Name, Address string }
		var full struct {
			ID, MessageID, Subject string
			From                   *address
			To, Cc, Bcc            []address
			Text, HTML             string
		}
		if err := m.getJSON(ctx, m.APIURL+"/api/v1/message/"+url.PathEscape(id), &full); err != nil {
			if isNotFound(err) { // deleted meanwhile
				continue
			}
			return nil, err
		}
		msg := MailpitMessage{ID: full.ID, MessageID: full.MessageID, Subject: full.Subject, Text: full.Text, HTML: full.HTML}
		if full.From != nil {
			msg.From = full.From.Address
		}
		addrs := func(l []address) []string {
			var s []string
			for _, a := range l {
				s = append(s, a.Address)
			}
			return s
		}
		msg.To, msg.Cc, msg.Bcc = addrs(full.To), addrs(full.Cc), addrs(full.Bcc)
		if err := m.getJSON(ctx, m.APIURL+"/api/v1/message/"+url.PathEscape(id)+"/headers", &msg.Headers); err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, err
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// WaitMessages polls mailpit until it holds at least n messages and
// returns them all (as Messages). After timeout it fails t, listing what
// it saw; errors of the API before then are retried.
func (m *Mailpit) WaitMessages(t testing.TB, n int, timeout time.Duration) []MailpitMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := m.messages()
		if err == nil && len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			var seen strings.Builder
			for _, msg := range msgs {
				fmt.Fprintf(&seen, "\n\tfrom %s to %v: %q", msg.From, msg.To, msg.Subject)
			}
			if err != nil {
				fmt.Fprintf(&seen, "\n\tlast error: %v", err)
			}
			t.Fatalf("mailpit: %d message(s) after %v, want at least %d:%s", len(msgs), timeout, n, seen.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Clear deletes every message (DELETE /api/v1/messages). It fails t when
// the API does.
func (m *Mailpit) Clear(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, m.APIURL+"/api/v1/messages", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.http.Do(req)
	if err != nil {
		t.Fatalf("mailpit: clear: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("mailpit: clear: %s: %s", resp.Status, body)
	}
}

// apiError is a non-200 answer of the API.
type apiError struct {
	url    string
	status int
	body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("mailpit: GET %s: %d %s: %s", e.url, e.status, http.StatusText(e.status), e.body)
}

func isNotFound(err error) bool {
	e, ok := err.(*apiError)
	return ok && e.status == http.StatusNotFound
}

// getJSON GETs url and decodes its JSON answer into v.
func (m *Mailpit) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return fmt.Errorf("mailpit: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &apiError{url: url, status: resp.StatusCode, body: strings.TrimSpace(string(body))}
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("mailpit: GET %s: %w", url, err)
	}
	return nil
}
