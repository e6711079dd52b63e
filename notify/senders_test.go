package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/notify"
	"github.com/rahatback/rahatback/testsupport"
)

// TestSenders is the channels' conformance suite: every channel type
// delivers the same notification to its real receiver (mailpit for email,
// an HTTP server for the webhooks) with the job, database, status, size,
// duration, error and link in it, and reports a receiver's failure as
// temporary or permanent as retrying would or would not help.
func TestSenders(t *testing.T) {
	mp := testsupport.StartMailpit(t, testsupport.MailpitOptions{})
	smtp, err := notify.ParseSMTP(mp.SMTPURL(), "rb@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	var status = http.StatusOK
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.WriteHeader(status)
	}))
	defer srv.Close()
	pol, _ := egress.New([]string{strings.TrimPrefix(srv.URL, "http://")})
	senders := notify.Senders{Email: &notify.EmailSender{SMTP: smtp}, Webhook: &notify.WebhookSender{Client: pol.HTTPClient(), Timeout: 5 * time.Second}}
	n := sample()
	received := map[string]func(t *testing.T) string{
		notify.TypeEmail: func(t *testing.T) string {
			m := mp.WaitMessages(t, 1, 20*time.Second)[0]
			mp.Clear(t)
			return m.Subject + "\n" + m.Text + "\n" + m.HTML
		},
		notify.TypeWebhook: func(*testing.T) string { return string(got) },
		notify.TypeSlack:   func(*testing.T) string { return string(got) },
		notify.TypeDiscord: func(*testing.T) string { return string(got) },
	}
	for _, typ := range notify.Types {
		t.Run(typ, func(t *testing.T) {
			ch := notify.Channel{Type: typ, URL: srv.URL + "/" + typ, Secret: "0123456789abcdef", Address: "ops@example.com"}
			status = http.StatusOK
			if err := senders.Send(context.Background(), ch, n, "7"); err != nil {
				t.Fatal(err)
			}
			body := received[typ](t)
			if typ != notify.TypeEmail && !json.Valid([]byte(body)) {
				t.Fatalf("not JSON: %s", body)
			}
			for _, want := range []string{"shop", "postgresql", "failed", "3.0 MiB", "pg_dump: connection refused", "https://rb.example/history/r1"} {
				if typ == notify.TypeWebhook && want == "3.0 MiB" {
					want = `"sizeBytes":3145728`
				}
				if !strings.Contains(body, want) {
					t.Fatalf("%s lacks %q: %s", typ, want, body)
				}
			}
			if typ == notify.TypeEmail {
				return
			}
			for code, permanent := range map[int]bool{500: false, 503: false, 429: false, 408: false, 400: true, 404: true, 410: true, 301: true} {
				status = code
				err := senders.Send(context.Background(), ch, n, "8")
				if err == nil || notify.IsPermanent(err) != permanent || strings.Contains(err.Error(), "/"+typ) {
					t.Fatalf("answer %d: %v (permanent %v, want %v)", code, err, notify.IsPermanent(err), permanent)
				}
			}
		})
	}
	if err := (notify.Senders{}).Send(context.Background(), notify.Channel{Type: notify.TypeEmail, Address: "a@b.c"}, n, "9"); !notify.IsPermanent(err) {
		t.Fatalf("email without SMTP: %v", err)
	}
}

// TestWebhookErrorsHideTheURL: whatever spelling a channel's URL has, a
// network failure's message (logged, and shown on the channel) names its
// scheme and host only, never the path that holds the token.
func TestWebhookErrorsHideTheURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a closed port: connection refused
	pol, _ := egress.New([]string{addr})
	s := &notify.WebhookSender{Client: pol.HTTPClient(), Timeout: 5 * time.Second}
	for _, u := range []string{"http://" + addr + "/T0/B0/tok3n", "HTTP://" + addr + "/T0/B0/tok3n", "http://" + addr + "/T0/B0/tok3n|x{y}^`z",
		"http://" + addr + "/T0/ünï/tok3n", "http://" + addr + "/T0 B0/tok3n?x=tok3n"} {
		for _, typ := range []string{notify.TypeSlack, notify.TypeWebhook} {
			err := s.Send(context.Background(), notify.Channel{Type: typ, URL: u, Secret: "0123456789abcdef"}, sample(), "1")
			if err == nil || strings.Contains(err.Error(), "tok3n") || notify.IsPermanent(err) {
				t.Fatalf("%s: %v", u, err)
			}
		}
	}
	long := sample()
	long.Title = strings.Repeat("ü", 400)
	long.Error = strings.Repeat("x", 5000)
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { body, _ = io.ReadAll(r.Body) }))
	defer srv.Close()
	pol, _ = egress.New([]string{strings.TrimPrefix(srv.URL, "http://")})
	s = &notify.WebhookSender{Client: pol.HTTPClient()}
	if err := s.Send(context.Background(), notify.Channel{Type: notify.TypeSlack, URL: srv.URL}, long, "2"); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Blocks []struct {
			Text   struct{ Text string }
			Fields []struct{ Text string }
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if n := len([]rune(m.Blocks[0].Text.Text)); n > 150 {
		t.Fatalf("Slack header of %d characters", n)
	}
	for _, f := range m.Blocks[1].Fields {
		if n := len([]rune(f.Text)); n > 2000 {
			t.Fatalf("Slack field of %d characters", n)
		}
	}
}
