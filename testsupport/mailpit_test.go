package testsupport_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rahatback/rahatback/testsupport"
)

func TestMailpit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   testsupport.MailpitOptions
		scheme string
		query  string
	}{
		{"plain", testsupport.MailpitOptions{}, "smtp", "tls=none"},
		{"plain+auth", testsupport.MailpitOptions{Auth: true}, "smtp", "tls=none"},
		{"starttls+auth", testsupport.MailpitOptions{TLS: "starttls", Auth: true}, "smtp", ""},
		{"tls+auth", testsupport.MailpitOptions{TLS: "tls", Auth: true}, "smtps", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := testsupport.StartMailpit(t, tc.opts)

			u, err := url.Parse(m.SMTPURL())
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != tc.scheme || u.Host != net.JoinHostPort("127.0.0.1", strconv.Itoa(m.SMTPPort)) || u.RawQuery != tc.query {
				t.Errorf("SMTPURL() = %s", m.SMTPURL())
			}
			pass, _ := u.User.Password()
			if u.User.Username() != m.Username || pass != m.Password || (tc.opts.Auth && m.Username == "") {
				t.Errorf("SMTPURL() = %s, credentials %q %q", m.SMTPURL(), m.Username, m.Password)
			}
			if (tc.opts.TLS != "") != (m.CAFile != "") {
				t.Errorf("CAFile = %q", m.CAFile)
			}

			subject := "Hello " + tc.name
			from, to := "sender@example.com", "rcpt@example.org"
			body := "First line.\r\nSecond line: " + tc.name + ".\r\n"
			c := dialMailpit(t, m, tc.opts)
			if tc.opts.Auth {
				if err := c.Auth(smtp.PlainAuth("", m.Username, m.Password, m.Host)); err != nil {
					t.Fatalf("auth: %v", err)
				}
			}
			sendMessage(t, c, from, to, subject, body)

			msgs := m.WaitMessages(t, 1, 10*time.Second)
			if len(msgs) != 1 {
				t.Fatalf("%d messages, want 1", len(msgs))
			}
			got := msgs[0]
			if got.Subject != subject || got.From != from || len(got.To) != 1 || got.To[0] != to {
				t.Errorf("got subject %q from %q to %q", got.Subject, got.From, got.To)
			}
			if crlf := strings.NewReplacer("\r\n", "\n"); strings.TrimSpace(crlf.Replace(got.Text)) != strings.TrimSpace(crlf.Replace(body)) {
				t.Errorf("text = %q", got.Text)
			}
			if got.ID == "" || !strings.HasSuffix(got.MessageID, "@test.invalid") {
				t.Errorf("ID %q, MessageID %q", got.ID, got.MessageID)
			}
			if h := got.Headers["Subject"]; len(h) != 1 || h[0] != subject {
				t.Errorf("Subject header = %q", h)
			}

			m.Clear(t)
			if msgs := m.Messages(t); len(msgs) != 0 {
				t.Errorf("%d messages after Clear", len(msgs))
			}
		})
	}
}

// TestMailpitAuthRefused checks that the starttls+auth server refuses a
// wrong password, a MAIL before AUTH and a MAIL before STARTTLS.
func TestMailpitAuthRefused(t *testing.T) {
	t.Parallel()
	opts := testsupport.MailpitOptions{TLS: "starttls", Auth: true}
	m := testsupport.StartMailpit(t, opts)

	c := dialMailpit(t, m, opts)
	wantCode(t, "AUTH with a wrong password", c.Auth(smtp.PlainAuth("", m.Username, m.Password+"x", m.Host)), 535)
	c.Close()

	c = dialMailpit(t, m, opts)
	wantCode(t, "MAIL without AUTH", c.Mail("sender@example.com"), 530)
	c.Close()

	c, err := smtp.Dial(net.JoinHostPort(m.Host, strconv.Itoa(m.SMTPPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wantCode(t, "MAIL without STARTTLS", c.Mail("sender@example.com"), 530)

	if msgs := m.Messages(t); len(msgs) != 0 {
		t.Errorf("%d messages, want none", len(msgs))
	}
}

// wantCode checks that err is an SMTP reply with code.
func wantCode(t *testing.T, what string, err error, code int) {
	t.Helper()
	var e *textproto.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Errorf("%s: %v, want a %d reply", what, err, code)
	}
}

// dialMailpit connects to m's SMTP server, with TLS as opts says.
func dialMailpit(t *testing.T, m *testsupport.Mailpit, opts testsupport.MailpitOptions) *smtp.Client {
	t.Helper()
	addr := net.JoinHostPort(m.Host, strconv.Itoa(m.SMTPPort))
	var c *smtp.Client
	switch opts.TLS {
	case "tls":
		conn, err := tls.Dial("tcp", addr, m.TLSConfig())
		if err != nil {
			t.Fatal(err)
		}
		if c, err = smtp.NewClient(conn, m.Host); err != nil {
			conn.Close()
			t.Fatal(err)
		}
	default:
		var err error
		if c, err = smtp.Dial(addr); err != nil {
			t.Fatal(err)
		}
		if opts.TLS == "starttls" {
			if err := c.StartTLS(m.TLSConfig()); err != nil {
				c.Close()
				t.Fatalf("starttls: %v", err)
			}
		}
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendMessage sends a simple text message over c and quits.
func sendMessage(t *testing.T, c *smtp.Client, from, to, subject, body string) {
	t.Helper()
	if err := c.Mail(from); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	fmt.Fprintf(w, "From: Sender <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@test.invalid>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s",
		from, to, subject, time.Now().Format(time.RFC1123Z), testsupport.RandomString(8), body)
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
}
