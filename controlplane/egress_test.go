package controlplane_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rahatback/rahatback/testsupport"
)

// TestEgressPolicy: a user's storage endpoint makes the control plane
// connect only where the operator allows. Loopback (open port or closed),
// the metadata address, [::1], a name that resolves to loopback and a
// redirect from an allowed server to loopback are refused on the field
// before any connection, and the answer never tells whether something
// listens there. Probe messages are classified: an allowed closed port and
// an allowed server that is not S3 read the same, and the secret never
// changes a message.
func TestEgressPolicy(t *testing.T) {
	gw := testsupport.StartVersityGW(t)

	// A loopback port that counts every connection it gets.
	var connections atomic.Int32
	open, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	go func() {
		for {
			c, err := open.Accept()
			if err != nil {
				return
			}
			connections.Add(1)
			c.Close()
		}
	}()
	openAddr := open.Addr().String()
	_, openPort, _ := net.SplitHostPort(openAddr)
	closedAddr := freeAddr(t)
	_, closedPort, _ := net.SplitHostPort(closedAddr)

	// Allowed servers: two that redirect to loopback, one closed port, one
	// HTTP server that is not S3.
	redirector := func(to string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://"+to+r.URL.Path, http.StatusTemporaryRedirect)
		}))
	}
	toOpen, toClosed := redirector(openAddr), redirector(closedAddr)
	defer toOpen.Close()
	defer toClosed.Close()
	notS3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "<html>intranet wiki, http://10.20.30.40/admin</html>")
	}))
	defer notS3.Close()
	allowedClosed := freeAddr(t)

	dbURL, _ := testsupport.NewDatabase(t)
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	args := []string{"--data-dir", t.TempDir(), "--http", httpAddr, "--nats-listen", freeAddr(t), "--database-url", dbURL}
	// The allowance through the environment equivalent of --allow-endpoint,
	// comma-separated (the other tests use the flag).
	env := map[string]string{"RAHATBACK_ALLOW_ENDPOINT": strings.Join([]string{endpointHost(t, gw.Endpoint), allowedClosed,
		endpointHost(t, toOpen.URL), endpointHost(t, toClosed.URL), endpointHost(t, notS3.URL)}, ",")}
	sys := startUp(t, args, env, base)
	defer sys.stop(t)
	c := client{t, base}
	token := c.register("egress@example.com")

	body := func(endpoint, secret string) map[string]any {
		return map[string]any{"storageType": "s3", "name": "probe", "s3AccessKeyId": gw.AccessKey, "s3SecretAccessKey": secret,
			"s3Region": gw.Region, "s3Bucket": gw.Bucket, "s3Endpoint": endpoint, "s3ForcePathStyle": true}
	}
	type answer struct {
		Success bool
		Message string
		Fields  map[string]string
	}
	refusal := func(path, endpoint string) string {
		t.Helper()
		r := c.want(c.call("POST", path, token, body(endpoint, gw.SecretKey)), 400)
		var a answer
		r.decode(t, &a)
		msg := a.Fields["s3Endpoint"]
		if !strings.Contains(msg, "--allow-endpoint") || len(a.Fields) != 1 {
			t.Fatalf("%s %s: %s", path, endpoint, r.body)
		}
		return msg
	}

	t.Run("RefusedUpFront", func(t *testing.T) {
		for _, path := range []string{"/v1/cloud-storage/test", "/v1/cloud-storage"} {
			pairs := []struct{ name, open, closed string }{
				{"Loopback", "http://" + openAddr, "http://" + closedAddr},
				{"IPv6Loopback", "http://[::1]:" + openPort, "http://[::1]:" + closedPort},
				{"NameResolvingToLoopback", "http://localhost:" + openPort, "http://localhost:" + closedPort},
			}
			if path == "/v1/cloud-storage/test" { // saving makes no connection, so sees no redirect
				pairs = append(pairs, struct{ name, open, closed string }{"RedirectToLoopback", toOpen.URL, toClosed.URL})
			}
			for _, p := range pairs {
				a, b := refusal(path, p.open), refusal(path, p.closed)
				if a != b {
					t.Errorf("%s %s: an open port and a closed one answer differently:\n%s\n%s", path, p.name, a, b)
				}
				for _, leak := range []string{"127.0.0.1:" + openPort, "127.0.0.1:" + closedPort, "EOF", "refused", "dial"} {
					if strings.Contains(a, leak) {
						t.Errorf("%s %s: the message holds %q: %s", path, p.name, leak, a)
					}
				}
				t.Logf("%s: %s", p.name, a)
			}
			if msg := refusal(path, "http://169.254.169.254"); msg != "169.254.169.254 is a metadata address; an operator can allow it with --allow-endpoint" {
				t.Errorf("metadata: %s", msg)
			}
			if msg := refusal(path, "http://10.0.0.5:9000"); msg != "10.0.0.5 is a private address; an operator can allow it with --allow-endpoint" {
				t.Errorf("private: %s", msg)
			}
		}
		if n := connections.Load(); n != 0 {
			t.Fatalf("the loopback port got %d connections", n)
		}
		// Nothing refused was saved.
		var list struct{ Results []json.RawMessage }
		c.want(c.call("GET", "/v1/cloud-storage", token, nil), 200).decode(t, &list)
		if len(list.Results) != 0 {
			t.Fatalf("refused storages were saved: %s", list.Results)
		}
	})

	probe := func(endpoint, secret string) answer {
		t.Helper()
		var a answer
		c.want(c.call("POST", "/v1/cloud-storage/test", token, body(endpoint, secret)), 200).decode(t, &a)
		return a
	}

	t.Run("ClassifiedMessages", func(t *testing.T) {
		closed := probe("http://"+allowedClosed, gw.SecretKey)
		notS3 := probe(notS3.URL, gw.SecretKey)
		if closed.Success || notS3.Success || closed.Message != notS3.Message {
			t.Fatalf("a closed port and a server that is not S3 answer differently:\n%+v\n%+v", closed, notS3)
		}
		for _, leak := range []string{"10.20.30.40", "intranet", "http", "403", "Forbidden"} {
			if strings.Contains(notS3.Message, leak) {
				t.Errorf("the message echoes the server (%q): %s", leak, notS3.Message)
			}
		}
		t.Logf("unreachable or not S3: %s", closed.Message)
	})

	t.Run("SecretNeverChangesAMessage", func(t *testing.T) {
		// A one-character secret is a field error, not a test.
		r := c.want(c.call("POST", "/v1/cloud-storage/test", token, body(gw.Endpoint, "b")), 400)
		var a answer
		r.decode(t, &a)
		if a.Fields["s3SecretAccessKey"] == "" {
			t.Fatalf("short secret: %s", r.body)
		}
		// Secrets that are words of the messages change nothing in them.
		for _, endpoint := range []string{gw.Endpoint, "http://" + allowedClosed} {
			var msgs []string
			for _, secret := range []string{"endpoint", "zzzzzzzzzz", "reached,"} {
				p := probe(endpoint, secret)
				if p.Success || strings.Contains(p.Message, "[secret]") {
					t.Fatalf("secret %q: %+v", secret, p)
				}
				msgs = append(msgs, p.Message)
			}
			for _, m := range msgs[1:] {
				if m != msgs[0] {
					t.Errorf("%s: the message depends on the secret:\n%s\n%s", endpoint, msgs[0], m)
				}
			}
		}
	})

	t.Run("AllowedVersityGW", func(t *testing.T) {
		if p := probe(gw.Endpoint, gw.SecretKey); !p.Success {
			t.Fatalf("allowlisted versitygw: %+v", p)
		}
		c.want(c.call("POST", "/v1/cloud-storage", token, body(gw.Endpoint, gw.SecretKey)), 201)
	})
}
