// Package web is the dashboard: html/template pages and a small hand-written
// JavaScript module, served beside the REST API. The browser holds a sealed
// session cookie; the dashboard calls the API in-process with the session's
// bearer tokens, for the pages it renders and for the JavaScript through a
// same-origin proxy under /ui/v1 (CSRF-checked on every state change).
package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

//go:embed templates static
var assets embed.FS

// Opts configures New.
type Opts struct {
	// API is the REST API handler (routes under /v1), called in-process;
	// required.
	API http.Handler
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SecureCookies marks the session cookie Secure: set it when the
	// dashboard is served over HTTPS. Default false.
	SecureCookies bool
	// SessionKey seals session cookies (32 bytes). Default: a random key,
	// so sessions end when the process restarts; replicas serving the same
	// users must share one key.
	SessionKey []byte
}

// Web serves the dashboard.
type Web struct {
	opts      Opts
	log       *slog.Logger
	sealer    *sealer
	refresher refresher
	pages     map[string]*template.Template
	handler   http.Handler
}

// New validates opts and builds the dashboard. Errors: a missing API, a
// SessionKey that is not 32 bytes, a template that does not parse.
func New(opts Opts) (*Web, error) {
	if opts.API == nil {
		return nil, errors.New("web: API is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s, err := newSealer(opts.SessionKey)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	wb := &Web{opts: opts, log: opts.Logger, sealer: s, pages: pages}
	wb.handler = wb.routes()
	return wb, nil
}

// ServeHTTP implements http.Handler.
func (wb *Web) ServeHTTP(w http.ResponseWriter, r *http.Request) { wb.handler.ServeHTTP(w, r) }

// routes is every route of the dashboard, with its method and path.
func (wb *Web) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer, securityHeaders)
	static, _ := fs.Sub(assets, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))

	r.Get("/login", wb.page(wb.loginPage, false))
	r.Post("/login", wb.page(wb.login, false))
	r.Get("/register", wb.page(wb.registerPage, false))
	r.Post("/register", wb.page(wb.register, false))
	r.Post("/logout", wb.page(wb.logout, false))

	r.Get("/", wb.page(func(w http.ResponseWriter, r *http.Request, _ *session) error {
		http.Redirect(w, r, "/history", http.StatusSeeOther)
		return nil
	}, true))
	r.Get("/agents", wb.page(wb.agentsPage, true))
	r.Get("/databases", wb.page(wb.databasesPage, true))
	r.Get("/databases/new", wb.page(wb.databaseForm, true))
	r.Get("/databases/{id}/edit", wb.page(wb.databaseForm, true))
	r.Get("/storage", wb.page(wb.storagePage, true))
	r.Get("/storage/new", wb.page(wb.storageForm, true))
	r.Get("/storage/{id}/edit", wb.page(wb.storageForm, true))
	r.Get("/jobs", wb.page(wb.jobsPage, true))
	r.Get("/jobs/new", wb.page(wb.jobForm, true))
	r.Get("/jobs/{id}", wb.page(wb.jobPage, true))
	r.Get("/jobs/{id}/edit", wb.page(wb.jobForm, true))
	r.Get("/history", wb.page(wb.historyPage, true))
	r.Get("/history/{id}", wb.page(wb.runPage, true))
	r.Get("/restores", wb.page(wb.restoresPage, true))
	r.Get("/channels", wb.page(wb.channelsPage, true))
	r.Get("/channels/{id}/edit", wb.page(wb.channelsPage, true))
	r.Get("/audit", wb.page(wb.auditPage, true))

	r.Get(GoogleCallbackPath, wb.page(wb.googleCallback, false))
	r.Handle("/ui/v1/*", http.HandlerFunc(wb.proxy))
	r.NotFound(wb.page(func(http.ResponseWriter, *http.Request, *session) error { return errNotFound }, false))
	return r
}

// securityHeaders forbids everything the dashboard does not do: scripts,
// styles and connections come from this origin only, no framing.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

// cacheStatic makes browsers revalidate the embedded assets, which change
// with the binary and carry no modification time.
func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// apiError is an error answer of the REST API (SPEC §3).
type apiError struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

var (
	errNotFound  = &apiError{Code: http.StatusNotFound, Message: "page not found"}
	errSignedOut = &apiError{Code: http.StatusUnauthorized, Message: "please sign in"}
	errCSRF      = &apiError{Code: http.StatusForbidden, Message: "the form expired or came from another site; reload the page and try again"}
)

// pageFunc is a page handler; it returns its error instead of writing it.
type pageFunc func(w http.ResponseWriter, r *http.Request, s *session) error

// page adapts h: it loads the session (sending to /login when signedIn is
// required and missing), checks the CSRF token of every POST, and writes any
// error in one place: 401 redirects to /login, an API error is shown with
// its status, anything else is logged and shown as a generic 500.
func (wb *Web) page(h pageFunc, signedIn bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, isNew := wb.loadSession(r)
		err := func() error {
			if r.Method != http.MethodGet && r.Method != http.MethodHead && !csrfOK(r, s) {
				return errCSRF
			}
			if signedIn && !s.signedIn() {
				return errSignedOut
			}
			if isNew {
				if err := wb.saveSession(w, s); err != nil {
					return err
				}
			}
			return h(w, r, s)
		}()
		if err == nil {
			return
		}
		var ae *apiError
		if !errors.As(err, &ae) {
			wb.log.Error("dashboard request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			ae = &apiError{Code: http.StatusInternalServerError, Message: "something went wrong; see the server log"}
		}
		if ae.Code == http.StatusUnauthorized {
			if s.signedIn() {
				*s = session{CSRF: newCSRF()}
				_ = wb.saveSession(w, s)
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		wb.render(w, r, ae.Code, "error", s, view{Title: http.StatusText(ae.Code), Message: ae.Message})
	}
}

// call sends one request to the API in-process and decodes a 2xx JSON
// answer into out (when not nil). A non-2xx answer is returned as
// *apiError. token, when set, is sent as the bearer token.
func (wb *Web) call(ctx context.Context, r *http.Request, token, method, path string, body, out any) error {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(apiContext(ctx), method, path, rd)
	if err != nil {
		return err
	}
	req.RemoteAddr = r.RemoteAddr // the API rate-limits sign-ins per client
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := &recorder{header: http.Header{}, code: http.StatusOK}
	wb.opts.API.ServeHTTP(rec, req)
	if rec.code < 200 || rec.code > 299 {
		ae := &apiError{}
		if json.Unmarshal(rec.body.Bytes(), ae) != nil || ae.Code == 0 {
			ae = &apiError{Code: rec.code, Message: strings.TrimSpace(rec.body.String())}
		}
		return ae
	}
	if out != nil && rec.code != http.StatusNoContent {
		return json.Unmarshal(rec.body.Bytes(), out)
	}
	return nil
}

// apiContext hides the dashboard's routing state from the API's router,
// which would otherwise take the request for one mounted below it.
func apiContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, chi.RouteCtxKey, (*chi.Context)(nil))
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

// accessToken returns the session's access token, refreshing it (and
// saving the session cookie on w, before anything is written) when it is
// about to expire. errSignedOut when the session has no tokens or the API
// refuses its refresh token.
func (wb *Web) accessToken(w http.ResponseWriter, r *http.Request, s *session) (string, error) {
	if !s.signedIn() {
		return "", errSignedOut
	}
	if s.Access != "" && timeNow().Add(refreshMargin).Before(s.AccessExp) {
		return s.Access, nil
	}
	t, err := wb.refresher.do(r.Context(), s.Refresh, func(ctx context.Context) (tokens, error) {
		var t tokens
		err := wb.call(ctx, r, "", "POST", "/v1/auth/refresh-tokens", map[string]string{"refreshToken": s.Refresh}, &t)
		return t, err
	})
	var ae *apiError
	if errors.As(err, &ae) && ae.Code == http.StatusUnauthorized {
		*s = session{CSRF: s.CSRF}
		_ = wb.saveSession(w, s)
		return "", errSignedOut
	}
	if err != nil {
		return "", err
	}
	s.setTokens(t)
	if err := wb.saveSession(w, s); err != nil {
		return "", err
	}
	return s.Access, nil
}

// get calls GET path on the API as the session's user.
func (wb *Web) get(w http.ResponseWriter, r *http.Request, s *session, path string, out any) error {
	tok, err := wb.accessToken(w, r, s)
	if err != nil {
		return err
	}
	return wb.call(r.Context(), r, tok, "GET", path, nil, out)
}

// proxy forwards /ui/v1/<path> to the API's /v1/<path> as the session's
// user. Non-GET requests must carry the session's CSRF token in
// X-CSRF-Token (403 otherwise); /v1/auth/* (whose answers hold tokens) is
// not reachable except /v1/auth/me (404). 401 without a session. Answers,
// downloads and the event stream pass through unchanged.
func (wb *Web) proxy(w http.ResponseWriter, r *http.Request) {
	s, _ := wb.loadSession(r)
	fail := func(e *apiError) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(e.Code)
		_ = json.NewEncoder(w).Encode(e)
	}
	rest := strings.TrimPrefix(r.URL.Path, "/ui")
	if strings.HasPrefix(rest, "/v1/auth/") && rest != "/v1/auth/me" || rest == "/v1/agents/enroll" {
		fail(&apiError{Code: http.StatusNotFound, Message: "route not found"})
		return
	}
	safe := r.Method == http.MethodGet || r.Method == http.MethodHead
	// Only the header counts here: a cross-site form can post fields, not headers.
	if !safe && (r.Header.Get("X-CSRF-Token") == "" || !csrfOK(r, s)) {
		fail(errCSRF)
		return
	}
	tok, err := wb.accessToken(w, r, s)
	var ae *apiError
	if errors.As(err, &ae) {
		fail(ae)
		return
	} else if err != nil {
		wb.log.Error("dashboard proxy", "path", r.URL.Path, "err", err)
		fail(&apiError{Code: http.StatusInternalServerError, Message: "internal error"})
		return
	}
	req := r.Clone(apiContext(r.Context()))
	req.URL.Path, req.URL.RawPath, req.RequestURI = rest, "", ""
	req.Header.Del("Cookie")
	req.Header.Del("X-CSRF-Token")
	req.Header.Set("Authorization", "Bearer "+tok)
	wb.opts.API.ServeHTTP(w, req)
}

// GoogleCallbackPath is where Google sends the browser back after the
// Drive consent page (the API's default redirect URL).
const GoogleCallbackPath = "/v1/cloud-storage/google/callback"

// Mount serves api and the dashboard on one listener: /v1/…, /healthz and
// /readyz go to api, everything else to dashboard. A browser page load of
// GoogleCallbackPath also goes to dashboard, which completes it through the
// API and shows the result; API clients get the API's JSON.
func Mount(api, dashboard http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == GoogleCallbackPath && r.Header.Get("Sec-Fetch-Mode") == "navigate" {
			dashboard.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(p, "/v1/") || p == "/v1" || p == "/healthz" || p == "/readyz" {
			api.ServeHTTP(w, r)
			return
		}
		dashboard.ServeHTTP(w, r)
	})
}
