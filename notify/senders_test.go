package notify_test

import (
	"context"
	"encoding/json"
	"io"
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
