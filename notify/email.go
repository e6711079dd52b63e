package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// SMTP is the control plane's mail server.
type SMTP struct {
	Host     string
	Port     int
	Username string // empty: no authentication
	Password string
	// Security is "starttls" (required: smtp://, the default), "tls"
	// (implicit TLS: smtps://), or "none" (smtp://…?tls=none, for a
	// relay on the same host).
	Security string
	From     string         // the From address
	RootCAs  *x509.CertPool // nil: the system's
}

// ParseSMTP reads an SMTP URL (smtp://user:pass@host:587, smtps://…:465,
// smtp://host:25?tls=none), the From address and an optional PEM file of
// CA certificates to trust. The default port is 587 for smtp and 465 for
// smtps. Errors name what is wrong and never hold the password.
func ParseSMTP(raw, from, caFile string) (SMTP, error) {
	var s SMTP
	u, err := url.Parse(raw)
	if err != nil {
		return s, errors.New("not a URL (smtp://user:password@host:587)")
	}
	switch u.Scheme {
	case "smtp":
		s.Security, s.Port = "starttls", 587
	case "smtps":
		s.Security, s.Port = "tls", 465
	default:
		return s, fmt.Errorf("scheme %q is not smtp or smtps", u.Scheme)
	}
	switch t := u.Query().Get("tls"); t {
	case "":
	case "none":
		if u.Scheme == "smtps" {
			return s, errors.New("smtps:// is TLS; tls=none contradicts it")
		}
		s.Security = "none"
	default:
		return s, fmt.Errorf("tls=%q: only tls=none is known", t)
	}
	s.Host = u.Hostname()
	if s.Host == "" {
		return s, errors.New("no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return s, fmt.Errorf("port %q is not 1-65535", p)
		}
		s.Port = n
	}
	if u.User != nil {
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
	}
	if from == "" {
		return s, errors.New("a From address is required (--smtp-from or RAHATBACK_SMTP_FROM)")
	}
	a, err := mail.ParseAddress(from)
	if err != nil {
		return s, fmt.Errorf("From address %q: %v", from, err)
	}
	s.From = a.String()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return s, fmt.Errorf("CA file: %w", err)
		}
		s.RootCAs = x509.NewCertPool()
		if !s.RootCAs.AppendCertsFromPEM(pem) {
			return s, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
	}
	return s, nil
}

// String is the server without its password, for logs.
func (s SMTP) String() string {
	u := url.URL{Scheme: "smtp", Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port))}
	if s.Security == "tls" {
		u.Scheme = "smtps"
	}
	if s.Username != "" {
		u.User = url.User(s.Username)
	}
	return u.String() + " (" + s.Security + ")"
}

// EmailSender sends email channels' notifications through SMTP, as a
// plain-text and an HTML part.
type EmailSender struct {
	SMTP    SMTP
	Timeout time.Duration // per attempt; default 30 s
}

// Send implements Sender. The Message-ID is derived from deliveryID, so a
// message sent again after a crash is recognisable as the same one. An
// SMTP 5xx answer is permanent; anything else is temporary.
func (e *EmailSender) Send(ctx context.Context, ch Channel, n Notification, deliveryID string) error {
	to, err := ParseAddresses(ch.Address)
	if err != nil {
		return Permanent(fmt.Errorf("address: %w", err))
	}
	m := gomail.NewMsg()
	if err := m.From(e.SMTP.From); err != nil {
		return Permanent(err)
	}
	if err := m.To(to...); err != nil {
		return Permanent(err)
	}
	m.Subject(n.Subject())
	m.SetDate()
	domain := "rahatback.local"
	if at := strings.LastIndex(e.SMTP.From, "@"); at >= 0 {
		domain = strings.Trim(e.SMTP.From[at+1:], "> ")
	}
	m.SetMessageIDWithValue("rahatback." + deliveryID + "@" + domain)
	m.SetGenHeader("X-RahatBack-Event", n.Event)
	m.SetBodyString(gomail.TypeTextPlain, n.Text())
	m.AddAlternativeString(gomail.TypeTextHTML, n.HTML())

	timeout := e.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	opts := []gomail.Option{gomail.WithPort(e.SMTP.Port), gomail.WithTimeout(timeout),
		gomail.WithTLSConfig(&tls.Config{ServerName: e.SMTP.Host, RootCAs: e.SMTP.RootCAs, MinVersion: tls.VersionTLS12})}
	switch e.SMTP.Security {
	case "tls":
		opts = append(opts, gomail.WithSSL())
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if e.SMTP.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(e.SMTP.Username), gomail.WithPassword(e.SMTP.Password))
	}
	c, err := gomail.NewClient(e.SMTP.Host, opts...)
	if err != nil {
		return Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.DialAndSendWithContext(ctx, m); err != nil {
		// A 5xx answer (authentication refused, recipient rejected) will
		// be the same next time; 4xx and network errors may not.
		var se *gomail.SendError
		var te *textproto.Error
		if errors.As(err, &se) && !se.IsTemp() && se.ErrorCode() >= 500 || errors.As(err, &te) && te.Code >= 500 {
			return Permanent(fmt.Errorf("SMTP %s: %w", e.SMTP.Host, err))
		}
		return fmt.Errorf("SMTP %s: %w", e.SMTP.Host, err)
	}
	return nil
}
