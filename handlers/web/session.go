package web

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// CookieName is the name of the dashboard's session cookie.
const CookieName = "rahatback_session"

// refreshMargin: an access token this close to expiry is refreshed first.
const refreshMargin = 30 * time.Second

// session is what the browser's cookie holds, sealed (AES-256-GCM) so the
// browser can neither read nor alter it. The tokens are the REST API's own;
// they never reach JavaScript.
type session struct {
	CSRF       string    `json:"c"`
	Email      string    `json:"e,omitempty"`
	Access     string    `json:"a,omitempty"`
	AccessExp  time.Time `json:"ax,omitzero"`
	Refresh    string    `json:"r,omitempty"`
	RefreshExp time.Time `json:"rx,omitzero"`
}

func (s *session) signedIn() bool { return s.Refresh != "" }

func newCSRF() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sealer seals and opens session cookies.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	if len(key) != 32 {
		return nil, errors.New("web: SessionKey must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead}, nil
}

// The cookie name is the additional data: a sealed value is valid only as
// this cookie.
var sessionAD = []byte(CookieName)

func (s *sealer) seal(v *session) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, sessionAD)), nil
}

func (s *sealer) open(value string) (*session, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return nil, false
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], sessionAD)
	if err != nil {
		return nil, false
	}
	var v session
	if json.Unmarshal(plain, &v) != nil || v.CSRF == "" {
		return nil, false
	}
	return &v, true
}

// loadSession returns the request's session, or a new anonymous one with a
// fresh CSRF token (isNew true) when there is none or it does not open.
func (wb *Web) loadSession(r *http.Request) (s *session, isNew bool) {
	if c, err := r.Cookie(CookieName); err == nil {
		if s, ok := wb.sealer.open(c.Value); ok {
			return s, false
		}
	}
	return &session{CSRF: newCSRF()}, true
}

// saveSession sets the session cookie: HttpOnly, SameSite=Lax, Secure when
// Opts.SecureCookies. A signed-in session lives as long as its refresh
// token; an anonymous one until the browser closes.
func (wb *Web) saveSession(w http.ResponseWriter, s *session) error {
	v, err := wb.sealer.seal(s)
	if err != nil {
		return err
	}
	c := &http.Cookie{Name: CookieName, Value: v, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: wb.opts.SecureCookies}
	if s.signedIn() {
		c.Expires = s.RefreshExp
	}
	http.SetCookie(w, c)
	return nil
}

// csrfOK reports whether the request carries the session's CSRF token, in
// the X-CSRF-Token header or the csrf form field.
func csrfOK(r *http.Request, s *session) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		got = r.PostFormValue("csrf")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) == 1
}

// tokens is the API's answer to login, register and refresh.
type tokens struct {
	User struct {
		Email string `json:"email"`
	} `json:"user"`
	Tokens struct {
		Access struct {
			Token   string    `json:"token"`
			Expires time.Time `json:"expires"`
		} `json:"access"`
		Refresh struct {
			Token   string    `json:"token"`
			Expires time.Time `json:"expires"`
		} `json:"refresh"`
	} `json:"tokens"`
}

func (s *session) setTokens(t tokens) {
	s.Email = t.User.Email
	s.Access, s.AccessExp = t.Tokens.Access.Token, t.Tokens.Access.Expires
	s.Refresh, s.RefreshExp = t.Tokens.Refresh.Token, t.Tokens.Refresh.Expires
}

// refresher rotates refresh tokens once however many requests of one
// session need it at the same time: the API revokes a whole token family
// when a refresh token is used twice, so parallel requests (a page and its
// event stream) must share one rotation. Successful results are kept
// for a minute; a failed one is not kept.
type refresher struct {
	mu   sync.Mutex
	done map[[32]byte]*refreshCall
}

type refreshCall struct {
	ready chan struct{}
	t     tokens
	err   error
	at    time.Time
}

func (f *refresher) do(ctx context.Context, refresh string, call func(context.Context) (tokens, error)) (tokens, error) {
	key := sha256.Sum256([]byte(refresh))
	f.mu.Lock()
	if f.done == nil {
		f.done = map[[32]byte]*refreshCall{}
	}
	for k, c := range f.done {
		if time.Since(c.at) > time.Minute {
			delete(f.done, k)
		}
	}
	c, ok := f.done[key]
	if !ok {
		c = &refreshCall{ready: make(chan struct{}), at: time.Now()}
		f.done[key] = c
		f.mu.Unlock()
		c.t, c.err = call(context.WithoutCancel(ctx))
		close(c.ready)
		if c.err != nil {
			// The requests waiting now get the error; later ones try again
			// rather than failing for a minute.
			f.mu.Lock()
			if f.done[key] == c {
				delete(f.done, key)
			}
			f.mu.Unlock()
		}
	} else {
		f.mu.Unlock()
	}
	select {
	case <-c.ready:
		return c.t, c.err
	case <-ctx.Done():
		return tokens{}, ctx.Err()
	}
}
