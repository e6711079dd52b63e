package notify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rahatback/rahatback/notify"
	"github.com/rahatback/rahatback/testsupport"
)

func sample() notify.Notification {
	size, dur := int64(3<<20), int64(61500)
	return notify.Notification{V: 1, ID: "backup.failed:r1", Event: notify.EventBackupFailed, Status: "failed",
		Title: `Backup of <script>alert(1)</script> failed`, At: time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC),
		Link: "https://rb.example/history/r1", Job: &notify.Ref{ID: "j", Name: "<script>alert(1)</script>"},
		DB:  &notify.DBRef{Name: "shop", Engine: "postgresql"},
		Run: &notify.Run{Type: "backup", ID: "r1", Status: "failed", SizeBytes: &size, DurationMs: &dur}, Error: "pg_dump: connection refused"}
}

func TestRendering(t *testing.T) {
	n := sample()
	text := n.Text()
	for _, want := range []string{"Database:  shop (postgresql)", "Size:      3.0 MiB", "Duration:  1m1.5s", "Error:     pg_dump: connection refused",
		"Open in RahatBack: https://rb.example/history/r1"} {
		if !strings.Contains(text, want) {
			t.Fatalf("text lacks %q:\n%s", want, text)
		}
	}
	if h := n.HTML(); strings.Contains(h, "<script>") || !strings.Contains(h, "&lt;script&gt;") {
		t.Fatalf("HTML not escaped: %s", h)
	}
}

func TestParseSMTP(t *testing.T) {
	s, err := notify.ParseSMTP("smtp://u:p%40ss@mail.example", "RahatBack <rb@example.com>", "")
	if err != nil || s.Port != 587 || s.Security != "starttls" || s.Password != "p@ss" || strings.Contains(s.String(), "p@ss") {
		t.Fatalf("%+v %v (%s)", s, err, s)
	}
	if s, _ := notify.ParseSMTP("smtps://mail.example", "rb@example.com", ""); s.Port != 465 || s.Security != "tls" {
		t.Fatalf("smtps: %+v", s)
	}
	for _, bad := range []string{"http://x", "smtps://h?tls=none", "smtp://h:99999", "smtp://h?tls=maybe", "smtp://"} {
		if _, err := notify.ParseSMTP(bad, "rb@example.com", ""); err == nil {
			t.Fatalf("%s accepted", bad)
		}
	}
	if _, err := notify.ParseSMTP("smtp://u:secret@h", "", ""); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("no From: %v", err)
	}
}

// TestEmailSender sends through a real SMTP server (mailpit) with
// STARTTLS and with implicit TLS, both with authentication, and checks a
// wrong password is a permanent failure.
func TestEmailSender(t *testing.T) {
	for _, mode := range []string{"starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			mp := testsupport.StartMailpit(t, testsupport.MailpitOptions{TLS: mode, Auth: true})
			cfg, err := notify.ParseSMTP(mp.SMTPURL(), "RahatBack <rb@example.com>", mp.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			s := &notify.EmailSender{SMTP: cfg}
			ch := notify.Channel{Type: notify.TypeEmail, Address: "ops@example.com, dba@example.com"}
			if err := s.Send(context.Background(), ch, sample(), "42"); err != nil {
				t.Fatal(err)
			}
			m := mp.WaitMessages(t, 1, 20*time.Second)[0]
			if m.Subject != "[RahatBack] Backup of <script>alert(1)</script> failed" || len(m.To) != 2 ||
				!strings.Contains(m.Text, "pg_dump: connection refused") || !strings.Contains(m.HTML, "&lt;script&gt;") ||
				!strings.Contains(m.MessageID, "rahatback.42@example.com") {
				t.Fatalf("message: %+v", m)
			}
			bad := cfg
			bad.Password = "wrong"
			err = (&notify.EmailSender{SMTP: bad}).Send(context.Background(), ch, sample(), "43")
			if err == nil || !notify.IsPermanent(err) {
				t.Fatalf("wrong password: %v (permanent %v)", err, notify.IsPermanent(err))
			}
			noCA := cfg
			noCA.RootCAs = nil
			if err := (&notify.EmailSender{SMTP: noCA}).Send(context.Background(), ch, sample(), "44"); err == nil {
				t.Fatal("a certificate from an untrusted CA was accepted")
			}
		})
	}
}
