// Package egress decides which addresses the control plane may connect to
// on a user's behalf (an S3 endpoint a user typed, later webhook targets):
// public addresses only, unless an operator allows more. It checks names
// after DNS resolution, at every dial and at every redirect, so neither a
// name that resolves to 127.0.0.1, nor DNS rebinding, nor a redirect
// reaches an address the policy refuses.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Policy is the set of addresses an operator allows beyond the public
// internet. The zero Policy (and a nil *Policy) allows public unicast
// addresses only.
type Policy struct {
	prefixes []netip.Prefix          // CIDRs and bare IPs: any port
	addrs    map[netip.AddrPort]bool // IP:port
	hosts    map[string]bool         // "name" (any port) or "name:port", lower case
}

// New returns the policy that allows, beyond public addresses, every entry
// of allow: a CIDR ("10.0.0.0/8", "fd00::/8"), an IP ("10.0.0.5"), an
// IP and port ("127.0.0.1:9000", "[::1]:9000"), a host name
// ("minio.lan") or a host name and port ("minio.lan:9000"). Entries may
// also be comma-separated. A host name is allowed as the URL names it,
// whatever it resolves to but a cloud metadata address, which only an
// entry naming exactly that IP allows (a covering CIDR does not). Errors
// name the entry that is none of these.
func New(allow []string) (*Policy, error) {
	p := &Policy{addrs: map[netip.AddrPort]bool{}, hosts: map[string]bool{}}
	for _, list := range allow {
		for _, e := range strings.Split(list, ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if err := p.add(e); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

func (p *Policy) add(e string) error {
	if pfx, err := netip.ParsePrefix(e); err == nil {
		p.prefixes = append(p.prefixes, pfx.Masked())
		return nil
	}
	if a, err := netip.ParseAddr(e); err == nil {
		a = a.Unmap().WithZone("")
		p.prefixes = append(p.prefixes, netip.PrefixFrom(a, a.BitLen()))
		return nil
	}
	if ap, err := netip.ParseAddrPort(e); err == nil {
		p.addrs[netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())] = true
		return nil
	}
	host, port := e, ""
	if h, pt, err := net.SplitHostPort(e); err == nil {
		if n, err := strconv.Atoi(pt); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("egress: %q: the port must be a number from 1 to 65535", e)
		}
		host, port = h, pt
	}
	host = normalizeHost(host)
	if !validHostName(host) {
		return fmt.Errorf("egress: %q is not a CIDR, an IP address or a host name (with an optional :port)", e)
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	}
	p.hosts[host] = true
	return nil
}

func normalizeHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Refused is the error for an address the policy does not allow. Its
// text depends only on what the user supplied, never on whether anything
// listens there, and never names what a host name resolves to (that would
// map the control plane's private DNS).
type Refused struct {
	Host     string // the host as the URL names it (no port); "" for a redirect
	Kind     string // for an IP: loopback, private, link-local, metadata, …; "" for a name
	Redirect bool   // the refused address came from a redirect
	err      error  // the DNS error, for a name that does not resolve
}

// Error reads "10.0.0.5 is a private address; an operator can allow it
// with --allow-endpoint"; for a host name, "minio.lan does not resolve to
// public addresses only …", whether it failed to resolve or resolved to a
// refused address.
func (e *Refused) Error() string {
	const allow = "; an operator can allow it with --allow-endpoint"
	switch {
	case e.Redirect:
		return "the endpoint redirected to an address that is not public (loopback, private, link-local or metadata)" + allow
	case e.Kind != "":
		return e.Host + " is " + article(e.Kind) + " " + e.Kind + " address" + allow
	}
	return e.Host + " does not resolve, or resolves to an address that is not public (loopback, private, link-local or metadata)" + allow
}

func (e *Refused) Unwrap() error { return e.err }

func article(kind string) string {
	if strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an"
	}
	return "a"
}

// ranges are the addresses refused by default, with their kind; the first
// match counts. IPv4-mapped IPv6 addresses are checked as IPv4.
var ranges = func() []struct {
	p    netip.Prefix
	kind string
} {
	var out []struct {
		p    netip.Prefix
		kind string
	}
	for _, r := range [][2]string{
		{"169.254.169.254/32", "metadata"}, // AWS, GCP, Azure, OpenStack
		{"fd00:ec2::254/128", "metadata"},  // AWS over IPv6
		{"100.100.100.200/32", "metadata"}, // Alibaba Cloud
		{"0.0.0.0/8", "unspecified"},
		{"::/128", "unspecified"},
		{"127.0.0.0/8", "loopback"},
		{"::1/128", "loopback"},
		{"10.0.0.0/8", "private"},
		{"172.16.0.0/12", "private"},
		{"192.168.0.0/16", "private"},
		{"fc00::/7", "private"},
		{"169.254.0.0/16", "link-local"},
		{"fe80::/10", "link-local"},
		{"100.64.0.0/10", "shared (carrier-grade NAT)"},
		{"192.0.0.0/24", "reserved"},
		{"192.0.2.0/24", "reserved"},
		{"198.18.0.0/15", "reserved"},
		{"198.51.100.0/24", "reserved"},
		{"203.0.113.0/24", "reserved"},
		{"240.0.0.0/4", "reserved"},
		{"2001:db8::/32", "reserved"},
		{"2001::/32", "reserved"},      // Teredo
		{"100::/64", "reserved"},       // discard
		{"fec0::/10", "private"},       // site-local (deprecated)
		{"192.88.99.0/24", "reserved"}, // 6to4 relay anycast
		{"224.0.0.0/4", "multicast"},
		{"ff00::/8", "multicast"},
	} {
		out = append(out, struct {
			p    netip.Prefix
			kind string
		}{netip.MustParsePrefix(r[0]), r[1]})
	}
	return out
}()

// embedded are IPv6 ranges that carry an IPv4 address reached through a
// translator: the embedded address is what gets checked.
var (
	nat64   = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4  = netip.MustParsePrefix("2002::/16")
	nat64Lo = netip.MustParsePrefix("64:ff9b:1::/48")
	// ::a.b.c.d (deprecated IPv4-compatible) and ::ffff:0:a.b.c.d (SIIT).
	ipv4Compat = netip.MustParsePrefix("::/96")
	siit       = netip.MustParsePrefix("::ffff:0:0:0/96")
)

// Classify returns the kind of a refused address ("loopback", "private",
// "link-local", "metadata", …) or "" for a public unicast address.
func Classify(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		b := a.As16()
		switch {
		case ipv4Compat.Contains(a) && a != netip.IPv6Unspecified() && a != netip.IPv6Loopback():
			return Classify(netip.AddrFrom4([4]byte(b[12:16])))
		case siit.Contains(a):
			return Classify(netip.AddrFrom4([4]byte(b[12:16])))
		case nat64.Contains(a):
			return Classify(netip.AddrFrom4([4]byte(b[12:16])))
		case sixTo4.Contains(a):
			return Classify(netip.AddrFrom4([4]byte(b[2:6])))
		case nat64Lo.Contains(a):
			return "private"
		}
	}
	for _, r := range ranges {
		if r.p.Contains(a) {
			return r.kind
		}
	}
	if a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "reserved"
	}
	return ""
}

// allowedAddr reports whether the policy lets the control plane reach ap.
// A metadata address passes only through an entry naming exactly it (an
// IP, or IP:port), never through a covering CIDR or a host name: allowing
// fd00::/8 or 100.64.0.0/10 must not open a cloud's metadata service.
func (p *Policy) allowedAddr(ap netip.AddrPort) (kind string, ok bool) {
	return p.allowedAddrAs(ap, false)
}

// allowedAddrAs is allowedAddr for an address a name allowed by the
// operator resolved to (byName): any address but a metadata one passes.
func (p *Policy) allowedAddrAs(ap netip.AddrPort, byName bool) (kind string, ok bool) {
	a := ap.Addr().Unmap().WithZone("")
	kind = Classify(a)
	if kind == "" {
		return "", true
	}
	if p == nil {
		return kind, false
	}
	if p.addrs[netip.AddrPortFrom(a, ap.Port())] {
		return kind, true
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(a) && (kind != "metadata" || pfx.Bits() == a.BitLen()) {
			return kind, true
		}
	}
	return kind, byName && kind != "metadata"
}

// allowedHost reports whether host (a name, not an IP) is allowed as named.
func (p *Policy) allowedHost(host, port string) bool {
	if p == nil {
		return false
	}
	h := normalizeHost(host)
	return p.hosts[h] || p.hosts[net.JoinHostPort(h, port)]
}

// Resolver looks up host names; net.DefaultResolver by default.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckURL checks the host of raw, an http(s) URL, before any connection
// is made: an IP must be allowed; a name must be allowed as named, or
// every address it resolves to must be. It returns nil or a *Refused
// (also for a name that does not resolve: it cannot be checked).
func (p *Policy) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	return p.check(ctx, nil, u, false)
}

func defaultPort(u *url.URL) string {
	if pt := u.Port(); pt != "" {
		return pt
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

func (p *Policy) check(ctx context.Context, r Resolver, u *url.URL, redirect bool) error {
	host, port := u.Hostname(), defaultPort(u)
	_, err := p.resolve(ctx, r, host, port, redirect)
	if _, ok := IsRefused(err); err != nil && !ok && p.allowedHost(host, port) {
		return nil // allowed as named; the dial resolves it again and checks
	}
	if _, ok := IsRefused(err); err != nil && !ok {
		// A name that cannot be checked cannot be used; the message is the
		// one of a refused name, so a lookup failure and an internal
		// answer read the same.
		return &Refused{Host: host, Redirect: redirect, err: err}
	}
	return err
}

// resolve returns the addresses to dial for host:port, or why not. A name
// the operator allowed may resolve to any address but a metadata one.
func (p *Policy) resolve(ctx context.Context, r Resolver, host, port string, redirect bool) ([]netip.AddrPort, error) {
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("egress: bad port %q", port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		ap := netip.AddrPortFrom(a.WithZone(""), uint16(pn))
		if kind, ok := p.allowedAddr(ap); !ok {
			return nil, &Refused{Host: host, Kind: kind, Redirect: redirect}
		}
		return []netip.AddrPort{ap}, nil
	}
	byName := p.allowedHost(host, port)
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap().WithZone(""), uint16(pn))
		// One refused address refuses the name: which one a dial would
		// pick must not decide.
		if _, ok := p.allowedAddrAs(ap, byName); !ok {
			return nil, &Refused{Host: host, Redirect: redirect}
		}
		out = append(out, ap)
	}
	return out, nil
}

// Dialer dials TCP only to addresses the policy allows: it resolves a name
// once, checks every address and connects to a checked one, so a second
// lookup cannot answer differently (DNS rebinding). Its errors wrap
// *Refused.
type Dialer struct {
	Policy   *Policy
	Resolver Resolver   // net.DefaultResolver when nil
	Dialer   net.Dialer // the underlying dialer (timeouts, keep-alive)
}

// DialContext is net.Dialer.DialContext under the policy.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	targets, err := d.Policy.resolve(ctx, d.Resolver, host, port, false)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	dialer := d.Dialer
	// The connection goes to the address checked above; the Control hook
	// checks it once more at the socket.
	dialer.Control = func(_, addr string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return err
		}
		if kind, ok := d.Policy.allowedAddrAs(ap, d.Policy.allowedHost(host, port)); !ok {
			return &Refused{Host: ap.Addr().String(), Kind: kind}
		}
		return nil
	}
	var first error
	for _, ap := range targets {
		c, err := dialer.DialContext(ctx, network, ap.String())
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// MaxRedirects is how many redirects HTTPClient follows.
const MaxRedirects = 5

// HTTPClient returns a client whose connections all pass the policy: the
// dialer above, no proxy from the environment (a proxy would connect in
// its place), and every redirect checked before it is followed. Its
// errors wrap *Refused for a refused address.
func (p *Policy) HTTPClient() *http.Client {
	d := &Dialer{Policy: p, Dialer: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: redirectGuard{base: tr, p: p},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= MaxRedirects {
				return fmt.Errorf("egress: more than %d redirects", MaxRedirects)
			}
			if err := p.check(req.Context(), nil, req.URL, true); err != nil {
				return err
			}
			return nil
		},
	}
}

// redirectGuard refuses a redirect response whose target the policy does
// not allow, whether or not the client would follow it (net/http does not
// follow a 307 of a request whose body it cannot replay, and the caller
// may follow it itself), so that such a redirect always reads the same.
type redirectGuard struct {
	base http.RoundTripper
	p    *Policy
}

func (g redirectGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		loc := resp.Header.Get("Location")
		if loc == "" {
			return resp, nil
		}
		u, perr := req.URL.Parse(loc)
		if perr == nil && u.Scheme != "http" && u.Scheme != "https" {
			perr = errors.New("not http")
		}
		if perr == nil {
			perr = g.p.check(req.Context(), nil, u, true)
		}
		if perr != nil {
			resp.Body.Close()
			if _, ok := IsRefused(perr); !ok {
				perr = &Refused{Redirect: true, err: perr}
			}
			return nil, perr
		}
	}
	return resp, nil
}

// IsRefused reports whether err comes from an address the policy refused,
// and returns that refusal.
func IsRefused(err error) (*Refused, bool) {
	var r *Refused
	ok := errors.As(err, &r)
	return r, ok
}
