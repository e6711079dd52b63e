package notify

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
)

// Channel types.
const (
	TypeEmail   = "email"
	TypeWebhook = "webhook"
	TypeSlack   = "slack"
	TypeDiscord = "discord"
)

// Types are every channel type, in the order the dashboard offers them.
var Types = []string{TypeEmail, TypeWebhook, TypeSlack, TypeDiscord}

// Channel is where one user's notifications go, its secrets opened.
type Channel struct {
	ID      string
	Type    string
	Name    string
	Address string // email: one or more addresses, comma-separated
	URL     string // webhook, slack, discord
	Secret  string // webhook: the HMAC-SHA256 key
}

// Sender delivers a notification to a channel. Errors are temporary
// (worth another attempt later) unless Permanent says otherwise.
type Sender interface {
	Send(ctx context.Context, ch Channel, n Notification, deliveryID string) error
}

// permanentError is a failure another attempt will not cure.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that retrying will not cure.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// ErrNoSMTP is the error of an email sent by a control plane without an
// SMTP server.
var ErrNoSMTP = errors.New("the control plane has no SMTP server configured (--smtp-url or RAHATBACK_SMTP_URL)")

// Senders sends through the sender of each channel type.
type Senders struct {
	Email   Sender // nil: no SMTP server; email fails with ErrNoSMTP
	Webhook Sender // webhook, slack and discord
}

// Send implements Sender.
func (s Senders) Send(ctx context.Context, ch Channel, n Notification, deliveryID string) error {
	switch ch.Type {
	case TypeEmail:
		if s.Email == nil {
			return Permanent(ErrNoSMTP)
		}
		return s.Email.Send(ctx, ch, n, deliveryID)
	case TypeWebhook, TypeSlack, TypeDiscord:
		if s.Webhook == nil {
			return Permanent(errors.New("webhooks are not configured"))
		}
		return s.Webhook.Send(ctx, ch, n, deliveryID)
	}
	return Permanent(fmt.Errorf("unknown channel type %q", ch.Type))
}

// MaxAddresses is how many addresses one email channel may hold.
const MaxAddresses = 10

// ParseAddresses checks an email channel's comma-separated addresses and
// returns them cleaned; errors say which one is wrong.
func ParseAddresses(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		a, err := mail.ParseAddress(p)
		if err != nil || a.Name != "" || !strings.Contains(a.Address, "@") {
			return nil, fmt.Errorf("%q is not an email address", p)
		}
		out = append(out, a.Address)
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("is required")
	case len(out) > MaxAddresses:
		return nil, fmt.Errorf("at most %d addresses", MaxAddresses)
	}
	return out, nil
}

// CheckWebhookURL checks the form of a webhook URL (http or https, a host,
// no user info, at most 2048 bytes); the egress policy checks where it
// points. It returns what the API shows of it: scheme and host only, as
// the path of Slack's and Discord's URLs is their secret.
func CheckWebhookURL(raw string) (display string, err error) {
	if len(raw) > 2048 {
		return "", errors.New("must be at most 2048 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return "", errors.New("must be an http or https URL")
	}
	if u.User != nil {
		return "", errors.New("must not carry a user name or password")
	}
	return u.Scheme + "://" + u.Host + "/…", nil
}
