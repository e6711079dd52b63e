package egress_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rahatback/rahatback/egress"
)

func TestClassify(t *testing.T) {
	for addr, want := range map[string]string{
		"8.8.8.8":                "",
		"2606:4700::1111":        "",
		"127.0.0.1":              "loopback",
		"127.10.0.3":             "loopback",
		"::1":                    "loopback",
		"::ffff:127.0.0.1":       "loopback",
		"10.0.0.5":               "private",
		"172.31.255.1":           "private",
		"192.168.1.1":            "private",
		"fd12:3456::1":           "private",
		"169.254.169.254":        "metadata",
		"fd00:ec2::254":          "metadata",
		"100.100.100.200":        "metadata",
		"169.254.10.1":           "link-local",
		"fe80::1":                "link-local",
		"0.0.0.0":                "unspecified",
		"::":                     "unspecified",
		"100.64.0.1":             "shared (carrier-grade NAT)",
		"224.0.0.1":              "multicast",
		"255.255.255.255":        "reserved",
		"64:ff9b::7f00:1":        "loopback", // NAT64 of 127.0.0.1
		"64:ff9b::808:808":       "",         // NAT64 of 8.8.8.8
		"2002:a00:5::1":          "private",  // 6to4 of 10.0.0.5
		"2002:808:808::1":        "",
		"198.51.100.7":           "reserved",
		"fe80::1%eth0":           "link-local",
		"::ffff:169.254.169.254": "metadata",
		"::127.0.0.1":            "loopback", // IPv4-compatible
		"::ffff:0:127.0.0.1":     "loopback", // SIIT
		"2001::1":                "reserved", // Teredo
		"fec0::1":                "private",
		"100::1":                 "reserved",
		"192.88.99.1":            "reserved",
	} {
		if got := egress.Classify(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Classify(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestNewRejectsBadEntries(t *testing.T) {
	for _, bad := range []string{"not a host", "10.0.0.0/33", "minio.lan:0", "minio.lan:99999", "-bad.lan", "a..b"} {
		if _, err := egress.New([]string{bad}); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	if _, err := egress.New([]string{"10.0.0.0/8, 127.0.0.1:9000", "[::1]:9000", "minio.lan", "MinIO.LAN.:9000", "fd00::/8"}); err != nil {
		t.Fatal(err)
	}
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	p, err := egress.New([]string{"10.1.0.0/16", "127.0.0.1:9000", "minio.lan"})
	if err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]string{
		"https://8.8.8.8":              "",
		"http://10.1.2.3:9000":         "",
		"http://127.0.0.1:9000":        "",
		"http://127.0.0.1:9001":        "127.0.0.1 is a loopback address; an operator can allow it with --allow-endpoint",
		"http://127.0.0.1":             "127.0.0.1 is a loopback address; an operator can allow it with --allow-endpoint",
		"http://10.0.0.5":              "10.0.0.5 is a private address; an operator can allow it with --allow-endpoint",
		"http://169.254.169.254":       "169.254.169.254 is a metadata address; an operator can allow it with --allow-endpoint",
		"http://[::1]:9000":            "::1 is a loopback address; an operator can allow it with --allow-endpoint",
		"http://[::ffff:127.0.0.1]:80": "::ffff:127.0.0.1 is a loopback address; an operator can allow it with --allow-endpoint",
		"http://minio.lan:9000":        "", // allowed by name: not even resolved
		"http://localhost:9001":        "localhost does not resolve, or resolves to an address that is not public (loopback, private, link-local or metadata); an operator can allow it with --allow-endpoint",
		"http://rahatback.invalid":     "rahatback.invalid does not resolve, or resolves to an address that is not public (loopback, private, link-local or metadata); an operator can allow it with --allow-endpoint",
	} {
		err := p.CheckURL(ctx, raw)
		got := ""
		if err != nil {
			if _, ok := egress.IsRefused(err); !ok {
				t.Errorf("%s: %v is not a refusal", raw, err)
			}
			got = err.Error()
		}
		if got != want {
			t.Errorf("%s:\n got %q\nwant %q", raw, got, want)
		}
	}
	// A covering CIDR does not open a metadata address; naming it exactly does.
	cover, err := egress.New([]string{"fd00::/8", "100.64.0.0/10", "169.254.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{"http://[fd00:ec2::254]", "http://100.100.100.200", "http://169.254.169.254"} {
		if err := cover.CheckURL(ctx, raw); err == nil {
			t.Errorf("%s passed through a covering CIDR", raw)
		}
	}
	if err := cover.CheckURL(ctx, "http://169.254.10.1"); err != nil {
		t.Errorf("link-local address inside the allowed CIDR: %v", err)
	}
	exact, _ := egress.New([]string{"169.254.169.254"})
	if err := exact.CheckURL(ctx, "http://169.254.169.254"); err != nil {
		t.Errorf("an exact allowance of the metadata address: %v", err)
	}
	// The zero policy allows public addresses only.
	var none *egress.Policy
	if err := none.CheckURL(ctx, "http://127.0.0.1:9000"); err == nil {
		t.Error("nil policy allowed loopback")
	}
	if err := none.CheckURL(ctx, "https://1.1.1.1"); err != nil {
		t.Errorf("nil policy refused a public address: %v", err)
	}
}

// resolver answers a fixed address per name, counting lookups.
type resolver struct {
	addrs   map[string][]netip.Addr
	lookups atomic.Int32
}

func (r *resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	if a, ok := r.addrs[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestDialerChecksResolvedAddresses: a name that resolves to loopback is
// refused at the dial, before any connection; one loopback address among
// public ones refuses the name; an allowed loopback address is dialed as
// resolved, with one lookup (no second lookup to rebind).
func TestDialerChecksResolvedAddresses(t *testing.T) {
	var accepted atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	r := &resolver{addrs: map[string][]netip.Addr{
		"rebind.test": {netip.MustParseAddr("127.0.0.1")},
		"mixed.test":  {netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("127.0.0.1")},
		"imds.test":   {netip.MustParseAddr("169.254.169.254")},
	}}
	ctx := context.Background()

	d := &egress.Dialer{Resolver: r}
	for _, host := range []string{"rebind.test", "mixed.test", "127.0.0.1"} {
		_, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
		if _, ok := egress.IsRefused(err); !ok {
			t.Fatalf("%s: %v, want a refusal", host, err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("%d connections reached the listener", n)
	}

	p, err := egress.New([]string{"127.0.0.1:" + port})
	if err != nil {
		t.Fatal(err)
	}
	d = &egress.Dialer{Policy: p, Resolver: r}
	before := r.lookups.Load()
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("rebind.test", port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := r.lookups.Load() - before; n != 1 {
		t.Errorf("%d lookups for one dial", n)
	}
	// A name the operator allowed still never reaches a metadata address.
	p, err = egress.New([]string{"imds.test"})
	if err != nil {
		t.Fatal(err)
	}
	d = &egress.Dialer{Policy: p, Resolver: r}
	if _, err := d.DialContext(ctx, "tcp", "imds.test:80"); err == nil {
		t.Fatal("an allowed name reached the metadata address")
	} else if _, ok := egress.IsRefused(err); !ok {
		t.Fatalf("allowed name to metadata: %v", err)
	}
}

// TestHTTPClientRedirect: a redirect from an allowed server to a loopback
// address is refused before it is followed, with the same message whether
// anything listens there or not.
func TestHTTPClientRedirect(t *testing.T) {
	var reached atomic.Int32
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer inner.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	redirector := func(to string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, to+"/bucket/key", http.StatusTemporaryRedirect)
		}))
	}
	toOpen, toClosed := redirector(inner.URL), redirector(closedURL)
	defer toOpen.Close()
	defer toClosed.Close()
	p, err := egress.New([]string{strings.TrimPrefix(toOpen.URL, "http://"), strings.TrimPrefix(toClosed.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	c := p.HTTPClient()
	var msgs []string
	for _, u := range []string{toOpen.URL, toClosed.URL} {
		resp, err := c.Get(u + "/bucket/key")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			t.Fatalf("%s: followed the redirect (%d)", u, resp.StatusCode)
		}
		rf, ok := egress.IsRefused(err)
		if !ok || !rf.Redirect {
			t.Fatalf("%s: %v, want a redirect refusal", u, err)
		}
		msgs = append(msgs, rf.Error())
	}
	if msgs[0] != msgs[1] {
		t.Errorf("messages differ:\n%s\n%s", msgs[0], msgs[1])
	}
	if reached.Load() != 0 {
		t.Error("the loopback server was reached through the redirect")
	}
	// The allowed server itself is reachable.
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }))
	defer ok.Close()
	p, _ = egress.New([]string{strings.TrimPrefix(ok.URL, "http://")})
	resp, err := p.HTTPClient().Get(ok.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("allowed server: %d", resp.StatusCode)
	}
}
