package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/version"
)

// Headers of a generic webhook request. The signature is
// "sha256=" + hex(HMAC-SHA256(channel secret, body)); the body carries
// sentAt, equal to the timestamp header, so a receiver that checks both
// (and rejects old ones) is safe from replays.
const (
	HeaderSignature = "X-RahatBack-Signature"
	HeaderTimestamp = "X-RahatBack-Timestamp" // Unix seconds
	HeaderDelivery  = "X-RahatBack-Delivery"  // the same at every attempt of one delivery
	HeaderEvent     = "X-RahatBack-Event"
)

// Sign is the HMAC-SHA256 signature of body under secret, as sent in
// HeaderSignature.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// WebhookSender posts to webhook, Slack and Discord channels.
type WebhookSender struct {
	// Client must be an egress-checked client (egress.Policy.HTTPClient),
	// so no channel reaches an address the operator did not allow.
	Client  *http.Client
	Timeout time.Duration    // per attempt; default 15 s
	Now     func() time.Time // default time.Now
}

// Send implements Sender. A refused address, a redirect and a 4xx other
// than 408 and 429 are permanent; other failures are temporary.
func (s *WebhookSender) Send(ctx context.Context, ch Channel, n Notification, deliveryID string) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	sent := now().UTC().Truncate(time.Second)
	var body []byte
	var err error
	switch ch.Type {
	case TypeSlack:
		body, err = json.Marshal(slackMessage(n))
	case TypeDiscord:
		body, err = json.Marshal(discordMessage(n))
	default:
		n.SentAt = sent
		body, err = json.Marshal(n)
	}
	if err != nil {
		return Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ch.URL, bytes.NewReader(body))
	if err != nil {
		// The parser's error quotes the URL, token and all.
		return Permanent(fmt.Errorf("%s: not a usable URL", redact(ch.URL)))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "RahatBack/"+version.String())
	if ch.Type == TypeWebhook {
		req.Header.Set(HeaderSignature, Sign(ch.Secret, body))
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(sent.Unix(), 10))
		req.Header.Set(HeaderDelivery, deliveryID)
		req.Header.Set(HeaderEvent, n.Event)
	}
	client := s.Client
	// A webhook answers where it is: a redirect is not followed (its
	// target is checked by the policy all the same), and is reported.
	noFollow := *client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Do(req)
	if err != nil {
		if r, ok := egress.IsRefused(err); ok {
			return Permanent(r)
		}
		return fmt.Errorf("POST %s: %w", redact(ch.URL), scrub(err, ch.URL, req.URL.String()))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		return Permanent(fmt.Errorf("%s answered %d (a redirect; webhooks are not followed)", redact(ch.URL), code))
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("%s answered %d %s", redact(ch.URL), code, oneLine(snippet))
	default:
		return Permanent(fmt.Errorf("%s answered %d %s", redact(ch.URL), code, oneLine(snippet)))
	}
}

// redact is a URL without its path and query (where Slack and Discord
// keep their tokens).
func redact(raw string) string {
	d, err := CheckWebhookURL(raw)
	if err != nil {
		return "the webhook"
	}
	return d
}

// scrub is err without the URL: net/http's *url.Error names the request's
// URL (in its own spelling, canonical is the one sent), which holds
// Slack's and Discord's tokens; only its cause is kept, and any spelling
// of the URL left in it is replaced by the redacted one.
func scrub(err error, raw, canonical string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	for _, u := range []string{raw, canonical} {
		if u == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, u, redact(raw))
		if q := strings.Trim(fmt.Sprintf("%q", u), `"`); q != u {
			msg = strings.ReplaceAll(msg, q, redact(raw))
		}
	}
	return errors.New(msg)
}

func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// slackMessage is n in Slack's incoming-webhook format: a fallback text and
// blocks (a header, the facts as fields, the link).
func slackMessage(n Notification) map[string]any {
	// Slack refuses (400) a header over 150 characters and a field over
	// 2000.
	var fields []map[string]any
	for _, l := range n.Lines() {
		fields = append(fields, map[string]any{"type": "mrkdwn", "text": "*" + slackEscape(cut(l.Name, 100)) + "*\n" + slackEscape(cut(l.Value, 1800))})
	}
	blocks := []map[string]any{
		{"type": "header", "text": map[string]any{"type": "plain_text", "text": cut(n.Title, 150)}},
	}
	// Slack takes at most 10 fields per section.
	for i := 0; i < len(fields); i += 10 {
		blocks = append(blocks, map[string]any{"type": "section", "fields": fields[i:min(i+10, len(fields))]})
	}
	if n.Link != "" {
		blocks = append(blocks, map[string]any{"type": "section",
			"text": map[string]any{"type": "mrkdwn", "text": "<" + n.Link + "|Open in RahatBack>"}})
	}
	return map[string]any{"text": n.Subject(), "blocks": blocks}
}

// cut is s in at most n characters (runes), with an ellipsis when cut.
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// discordMessage is n in Discord's webhook format: one embed.
func discordMessage(n Notification) map[string]any {
	color := 0x067647
	if n.Failure() {
		color = 0xB42318
	}
	var fields []map[string]any
	for _, l := range n.Lines() {
		// Discord's limits: 256 per field name and title, 1024 per value.
		v := cut(l.Value, 1000)
		fields = append(fields, map[string]any{"name": cut(l.Name, 250), "value": v, "inline": len(v) < 40})
	}
	if len(fields) > 25 {
		fields = fields[:25]
	}
	embed := map[string]any{"title": cut(n.Title, 250), "color": color, "fields": fields, "timestamp": n.At.UTC().Format(time.RFC3339)}
	if n.Link != "" {
		embed["url"] = n.Link
	}
	return map[string]any{"content": n.Subject(), "embeds": []any{embed}, "allowed_mentions": map[string]any{"parse": []string{}}}
}
