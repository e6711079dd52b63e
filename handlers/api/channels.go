package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/egress"
	hnotify "github.com/rahatback/rahatback/handlers/notify"
	"github.com/rahatback/rahatback/notify"
)

type channelJSON struct {
	ID            uuid.UUID  `json:"id"`
	Name          string     `json:"name"`
	Type          string     `json:"type"`
	Enabled       bool       `json:"enabled"`
	Address       *string    `json:"address,omitempty"`
	URL           *string    `json:"url,omitempty"` // scheme and host only: the rest may be a token
	HasSecret     bool       `json:"hasSecret,omitempty"`
	LastSuccessAt *time.Time `json:"lastSuccessAt"`
	LastError     *string    `json:"lastError"`
	LastErrorAt   *time.Time `json:"lastErrorAt"`
	CreatedAt     time.Time  `json:"createdAt"`
	UpdatedAt     time.Time  `json:"updatedAt"`
}

func toChannelJSON(c db.NotificationChannel) channelJSON {
	return channelJSON{ID: c.ID, Name: c.Name, Type: c.Type, Enabled: c.Enabled, Address: c.Address, URL: c.UrlDisplay,
		HasSecret: c.SecretEnc != nil, LastSuccessAt: c.LastSuccessAt, LastError: c.LastError, LastErrorAt: c.LastErrorAt,
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// channelInput is the body of create and update; absent fields keep their
// value on update. url and secret are write-only.
type channelInput struct {
	Name    *string `json:"name"`
	Type    *string `json:"type"`
	Enabled *bool   `json:"enabled"`
	Address *string `json:"address"`
	URL     *string `json:"url"`
	Secret  *string `json:"secret"`
}

// Limits: channels per user, and the length of webhook signing secrets.
const (
	maxChannels      = 20
	minChannelSecret = 16
	maxChannelSecret = 256
)

func (a *API) listChannels(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.q.ListNotificationChannels(r.Context(), a.pool, userID(r.Context()))
	if err != nil {
		return err
	}
	out := make([]channelJSON, 0, len(rows))
	for _, c := range rows {
		out = append(out, toChannelJSON(c))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) getChannel(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "notification channel")
	if err != nil {
		return err
	}
	c, err := a.q.GetNotificationChannel(r.Context(), a.pool, db.GetNotificationChannelParams{ID: id, UserID: userID(r.Context())})
	if err != nil {
		return owned(err, "notification channel", "")
	}
	writeJSON(w, http.StatusOK, toChannelJSON(c))
	return nil
}

// createChannel adds a channel: 201 with it; 400 naming a bad field,
// including a URL the egress policy refuses (loopback, private,
// link-local and metadata addresses, after DNS, unless --allow-endpoint
// allows them); 409 when the user has 20 channels.
func (a *API) createChannel(w http.ResponseWriter, r *http.Request) error {
	var in channelInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	c := db.NotificationChannel{ID: uuid.New(), UserID: userID(r.Context()), Enabled: true}
	if in.Type == nil {
		return fieldErrors{"type": "is required"}.err()
	}
	c.Type = *in.Type
	if err := a.applyChannel(r.Context(), &c, in, true); err != nil {
		return err
	}
	// Each of a user's channels takes a send slot at each event: a cap
	// keeps one user's many (or broken) channels from holding them all.
	if n, err := a.q.CountNotificationChannels(r.Context(), a.pool, c.UserID); err != nil {
		return err
	} else if n >= maxChannels {
		return errorf(http.StatusConflict, "at most %d notification channels per user; delete one first", maxChannels)
	}
	c, err := a.q.CreateNotificationChannel(r.Context(), a.pool, db.CreateNotificationChannelParams{ID: c.ID, UserID: c.UserID,
		Name: c.Name, Type: c.Type, Enabled: c.Enabled, Address: c.Address, UrlEnc: c.UrlEnc, UrlDisplay: c.UrlDisplay, SecretEnc: c.SecretEnc})
	if err != nil {
		return err
	}
	auditObject(r.Context(), c.ID.String())
	writeJSON(w, http.StatusCreated, toChannelJSON(c))
	return nil
}

// updateChannel changes the fields given: 200 with the channel; 400 naming
// a bad field; 404 for a channel that is not the user's. The type does not
// change.
func (a *API) updateChannel(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "notification channel")
	if err != nil {
		return err
	}
	var in channelInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	c, err := a.q.GetNotificationChannel(r.Context(), a.pool, db.GetNotificationChannelParams{ID: id, UserID: userID(r.Context())})
	if err != nil {
		return owned(err, "notification channel", "")
	}
	if in.Type != nil && *in.Type != c.Type {
		return fieldErrors{"type": "cannot change; create another channel"}.err()
	}
	if err := a.applyChannel(r.Context(), &c, in, false); err != nil {
		return err
	}
	c, err = a.q.UpdateNotificationChannel(r.Context(), a.pool, db.UpdateNotificationChannelParams{ID: c.ID, UserID: c.UserID,
		Name: c.Name, Enabled: c.Enabled, Address: c.Address, UrlEnc: c.UrlEnc, UrlDisplay: c.UrlDisplay, SecretEnc: c.SecretEnc})
	if err != nil {
		return owned(err, "notification channel", "")
	}
	writeJSON(w, http.StatusOK, toChannelJSON(c))
	return nil
}

// applyChannel validates in onto c, sealing a new URL and secret.
func (a *API) applyChannel(ctx context.Context, c *db.NotificationChannel, in channelInput, create bool) error {
	f := fieldErrors{}
	if !slices.Contains(notify.Types, c.Type) {
		f.add("type", "must be one of "+strings.Join(notify.Types, ", "))
		return f.err()
	}
	if in.Name != nil {
		c.Name = strings.TrimSpace(*in.Name)
	}
	switch {
	case c.Name == "" && create && in.Name == nil:
		c.Name = c.Type
	case c.Name == "":
		f.add("name", "is required")
	case len(c.Name) > 100:
		f.add("name", "must be at most 100 characters")
	}
	if in.Enabled != nil {
		c.Enabled = *in.Enabled
	}
	if c.Type == notify.TypeEmail {
		for field, v := range map[string]*string{"url": in.URL, "secret": in.Secret} {
			if v != nil {
				f.add(field, "is not a field of an email channel")
			}
		}
		if in.Address != nil || create {
			addrs, err := notify.ParseAddresses(deref(in.Address))
			if err != nil {
				f.add("address", err.Error())
			} else {
				joined := strings.Join(addrs, ", ")
				c.Address = &joined
			}
		}
		return f.err()
	}
	if in.Address != nil {
		f.add("address", "is a field of email channels only")
	}
	if in.URL != nil || create {
		raw := strings.TrimSpace(deref(in.URL))
		display, err := notify.CheckWebhookURL(raw)
		switch {
		case raw == "":
			f.add("url", "is required")
		case err != nil:
			f.add("url", err.Error())
		default:
			if err := a.opts.Egress.CheckURL(ctx, raw); err != nil {
				rf, ok := egress.IsRefused(err)
				if !ok {
					return err
				}
				f.add("url", rf.Error())
			} else {
				enc, err := a.secrets.SealChannelURL(c.ID, raw)
				if err != nil {
					return err
				}
				c.UrlEnc, c.UrlDisplay = enc, &display
			}
		}
	}
	if c.Type == notify.TypeWebhook {
		if in.Secret != nil || create {
			s := deref(in.Secret)
			switch {
			case len(s) < minChannelSecret:
				f.add("secret", "must be at least 16 characters (it signs every request: X-RahatBack-Signature)")
			case len(s) > maxChannelSecret:
				f.add("secret", "must be at most 256 characters")
			default:
				enc, err := a.secrets.SealChannelSecret(c.ID, s)
				if err != nil {
					return err
				}
				c.SecretEnc = enc
			}
		}
	} else if in.Secret != nil {
		f.add("secret", "is a field of webhook channels only (Slack and Discord URLs carry their own token)")
	}
	return f.err()
}

// deleteChannel: 204; 404 for a channel that is not the user's. Its
// pending deliveries go with it.
func (a *API) deleteChannel(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "notification channel")
	if err != nil {
		return err
	}
	if _, err := a.q.DeleteNotificationChannel(r.Context(), a.pool, db.DeleteNotificationChannelParams{ID: id, UserID: userID(r.Context())}); err != nil {
		return owned(err, "notification channel", "")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// testChannel sends a test notification through the channel now and
// answers 200 {success, message}; the channel's last success or last
// error records the outcome. 404 for a channel that is not the user's.
func (a *API) testChannel(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "notification channel")
	if err != nil {
		return err
	}
	c, err := a.q.GetNotificationChannel(r.Context(), a.pool, db.GetNotificationChannelParams{ID: id, UserID: userID(r.Context())})
	if err != nil {
		return owned(err, "notification channel", "")
	}
	ch, err := hnotify.OpenChannel(a.secrets, c)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	n := notify.Notification{V: 1, ID: "test:" + uuid.NewString(), Event: notify.EventTest, Status: "test", At: now,
		Title: "Test notification from RahatBack", Link: strings.TrimRight(a.opts.PublicURL, "/") + "/channels",
		Details: []notify.Detail{{Name: "Channel", Value: c.Name}}}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	sendErr := a.opts.Notify.Send(ctx, ch, n, "test-"+uuid.NewString())
	resp := map[string]any{"success": sendErr == nil, "message": "sent"}
	if sendErr != nil {
		msg := sendErr.Error()
		if errors.Is(sendErr, notify.ErrNoSMTP) {
			msg = notify.ErrNoSMTP.Error()
		}
		resp["message"] = msg
		auditFailed(r.Context(), msg)
		if err := a.q.ChannelFailed(r.Context(), a.pool, db.ChannelFailedParams{ID: c.ID, Error: &msg, At: &now}); err != nil {
			return err
		}
	} else if err := a.q.ChannelDelivered(r.Context(), a.pool, db.ChannelDeliveredParams{ID: c.ID, At: &now}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// getNotifyRules answers the user's default rules.
func (a *API) getNotifyRules(w http.ResponseWriter, r *http.Request) error {
	raw, err := a.q.GetUserNotifyRules(r.Context(), a.pool, userID(r.Context()))
	if err != nil {
		return err
	}
	rules, err := notify.ParseRules(raw)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rules)
	return nil
}

// putNotifyRules replaces the user's default rules: 200 with them; 400
// naming a bad field. A job with its own rules keeps them.
func (a *API) putNotifyRules(w http.ResponseWriter, r *http.Request) error {
	var rules notify.Rules
	if err := a.decodeJSON(w, r, &rules); err != nil {
		return err
	}
	if f := rules.Validate(false); len(f) > 0 {
		return fieldErrors(f).err()
	}
	raw, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	if err := a.q.SetUserNotifyRules(r.Context(), a.pool, db.SetUserNotifyRulesParams{ID: userID(r.Context()), NotifyRules: raw}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rules)
	return nil
}
