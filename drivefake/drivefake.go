// Package drivefake is an in-memory stand-in for Google Drive v3 and
// Google's OAuth 2 endpoints, for tests: Google cannot be reached from where
// they run. It speaks the wire protocol that google.golang.org/api/drive/v3
// and golang.org/x/oauth2 use, unchanged: the authorization-code and
// refresh-token grants, bearer tokens, partial responses (?fields=), the
// resumable upload protocol (session URIs, Content-Range, 308 or its
// X-GUploader-No-308 form, status queries, cancellation), multipart and media
// uploads, files.get with alt=media and Range, files.list with the subset of
// the query language RahatBack uses, files.update and files.delete.
//
// Whatever it does not implement it refuses loudly (400 or 501 with a
// message starting "drivefake:"), so a client that drifts outside the
// supported subset fails its tests instead of passing against a lenient fake.
package drivefake

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FolderMimeType is the MIME type Drive gives folders.
const FolderMimeType = "application/vnd.google-apps.folder"

// Scopes the fake grants and accepts.
const (
	ScopeDrive     = "https://www.googleapis.com/auth/drive"
	ScopeDriveFile = "https://www.googleapis.com/auth/drive.file"
)

// Limits Drive enforces that the fake enforces too.
const (
	// MinChunk is the granularity of resumable uploads: every chunk but the
	// last must be a multiple of it.
	MinChunk = 256 * 1024
	// MaxPropertyBytes bounds key plus value of one appProperty (UTF-8 bytes).
	MaxPropertyBytes = 124
)

// Options configure a Server. The zero value works.
type Options struct {
	// ClientID and ClientSecret are the only OAuth client the token
	// endpoint accepts. Default "drivefake-client" and "drivefake-secret".
	ClientID, ClientSecret string
	// RedirectURIs, when set, are the only redirect_uri values /auth
	// accepts (Google checks them against the client's registration).
	RedirectURIs []string
	// TokenLifetime is the expires_in of access tokens. Default 1 hour.
	TokenLifetime time.Duration
	// MaxPageSize caps files.list pages below the pageSize asked for (Drive
	// may return short pages before the end too). Default 1000.
	MaxPageSize int
}

// Request describes one request to an intercept function.
type Request struct {
	// Op is one of token, auth, files.create, files.list, files.get,
	// files.download, files.update, files.delete, upload.init,
	// upload.multipart, upload.media, upload.chunk, upload.cancel.
	Op     string
	Method string
	URL    *url.URL
	// FileID is the file of files.get/download/update/delete.
	FileID string
	// UploadID and ContentRange are set for upload.chunk.
	UploadID     string
	ContentRange string
	// Chunk counts the chunk requests of this upload session, from 1.
	Chunk int
}

// Stats counts what the server has seen.
type Stats struct {
	TokenGrants      int // successful answers of the token endpoint
	RefreshGrants    int // of which refresh_token grants
	APIRequests      int // requests under /drive/v3 and /upload/drive/v3
	Unauthorized     int // API requests refused for their bearer token
	UploadSessions   int // resumable sessions started
	OpenSessions     int // sessions neither completed nor cancelled
	ChunkRequests    int // requests to session URIs, status queries included
	MultipartUploads int
	MediaUploads     int
	Downloads        int // files.get alt=media answered with content
	Updates          int
	Deletes          int
	Lists            int
	Intercepted      int // requests answered by the intercept function
}

// File is a snapshot of one file (or folder) the server holds.
type File struct {
	ID, Name, MimeType string
	Parents            []string
	AppProperties      map[string]string
	Content            []byte
	Trashed            bool
	CreatedTime        time.Time
	ModifiedTime       time.Time
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL, like http://127.0.0.1:PORT.
	URL string

	ts   *httptest.Server
	opts Options

	mu         sync.Mutex
	rootID     string
	files      map[string]*file
	sessions   map[string]*session
	codes      map[string]*authCode
	refresh    map[string]refreshGrant
	access     map[string]accessGrant
	lastTime   time.Time
	stats      Stats
	intercept  func(Request) int
	denyNext   bool
	chunkCount map[string]int
}

type file struct {
	id, name, mimeType string
	parents            []string
	appProps           map[string]string
	content            []byte
	trashed            bool
	created, modified  time.Time
	version            int64
	md5, sha256        string
}

type session struct {
	id          string
	meta        fileMeta
	fields      string
	contentType string
	declared    int64 // X-Upload-Content-Length, -1 if not given
	data        []byte
	fileID      string // set once complete
	cancelled   bool
}

type authCode struct {
	clientID, redirectURI, scope string
	offline                      bool
	challenge, method            string
	expires                      time.Time
}

type refreshGrant struct{ clientID, scope string }

type accessGrant struct {
	scope   string
	expires time.Time
}

// New starts a Server on a loopback port. Close it when done.
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = "drivefake-client"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "drivefake-secret"
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.MaxPageSize <= 0 || opts.MaxPageSize > 1000 {
		opts.MaxPageSize = 1000
	}
	s := &Server{
		opts:       opts,
		files:      map[string]*file{},
		sessions:   map[string]*session{},
		codes:      map[string]*authCode{},
		refresh:    map[string]refreshGrant{},
		access:     map[string]accessGrant{},
		chunkCount: map[string]int{},
	}
	now := s.now()
	s.rootID = "0A" + randID(16)
	s.files[s.rootID] = &file{id: s.rootID, name: "My Drive", mimeType: FolderMimeType, created: now, modified: now, version: 1}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth", s.handleAuth)
	mux.HandleFunc("POST /token", s.handleToken)
	mux.HandleFunc("GET /drive/v3/files", s.api("files.list", s.handleList))
	mux.HandleFunc("POST /drive/v3/files", s.api("files.create", s.handleCreate))
	mux.HandleFunc("GET /drive/v3/files/{id}", s.api("files.get", s.handleGet))
	mux.HandleFunc("PATCH /drive/v3/files/{id}", s.api("files.update", s.handleUpdate))
	mux.HandleFunc("DELETE /drive/v3/files/{id}", s.api("files.delete", s.handleDelete))
	mux.HandleFunc("POST /upload/drive/v3/files", s.api("upload", s.handleUpload))
	mux.HandleFunc("PUT /upload/drive/v3/files", s.api("upload", s.handleUpload))
	mux.HandleFunc("DELETE /upload/drive/v3/files", s.api("upload", s.handleUpload))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotImplemented, "notImplemented", "drivefake: not implemented: "+r.Method+" "+r.URL.Path)
	})
	s.ts = httptest.NewServer(mux)
	s.URL = s.ts.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.ts.Close() }

// Client returns an HTTP client that reaches the server.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// APIEndpoint is the Drive API base URL, for option.WithEndpoint.
func (s *Server) APIEndpoint() string { return s.URL + "/drive/v3/" }

// AuthURL is the consent page: it approves at once and redirects back.
func (s *Server) AuthURL() string { return s.URL + "/auth" }

// TokenURL is the OAuth 2 token endpoint.
func (s *Server) TokenURL() string { return s.URL + "/token" }

// ClientID and ClientSecret return the OAuth client the server accepts.
func (s *Server) ClientID() string     { return s.opts.ClientID }
func (s *Server) ClientSecret() string { return s.opts.ClientSecret }

// RootID is the id of the root folder ("My Drive"; alias "root").
func (s *Server) RootID() string { return s.rootID }

// IssueRefreshToken returns a new refresh token for the configured client,
// as if the user had consented to scope (default drive.file).
func (s *Server) IssueRefreshToken(scope ...string) string {
	sc := strings.Join(scope, " ")
	if sc == "" {
		sc = ScopeDriveFile
	}
	tok := "1//fake-" + randID(24)
	s.mu.Lock()
	s.refresh[tok] = refreshGrant{clientID: s.opts.ClientID, scope: sc}
	s.mu.Unlock()
	return tok
}

// RevokeRefreshToken makes tok unusable, as when the user removes the
// app's access; the token endpoint then answers invalid_grant.
func (s *Server) RevokeRefreshToken(tok string) {
	s.mu.Lock()
	delete(s.refresh, tok)
	s.mu.Unlock()
}

// ExpireAccessTokens invalidates every access token issued so far.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	clear(s.access)
	s.mu.Unlock()
}

// DenyNextConsent makes the next visit to the consent page redirect back
// with error=access_denied, as when the user clicks Cancel.
func (s *Server) DenyNextConsent() {
	s.mu.Lock()
	s.denyNext = true
	s.mu.Unlock()
}

// Intercept installs f (nil removes it). It sees every request before it is
// served; a non-zero return answers the request with that status and a
// Google-style error, without any effect on the server's state.
func (s *Server) Intercept(f func(Request) int) {
	s.mu.Lock()
	s.intercept = f
	s.mu.Unlock()
}

// FailNextChunks answers the next n chunk requests (upload.chunk) with
// status, storing nothing. A 5xx makes the client library retry the chunk.
func (s *Server) FailNextChunks(n, status int) {
	var mu sync.Mutex
	left := n
	s.Intercept(func(r Request) int {
		if r.Op != "upload.chunk" {
			return 0
		}
		mu.Lock()
		defer mu.Unlock()
		if left <= 0 {
			return 0
		}
		left--
		return status
	})
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.OpenSessions = 0
	for _, se := range s.sessions {
		if se.fileID == "" && !se.cancelled {
			st.OpenSessions++
		}
	}
	return st
}

// Files returns a snapshot of every file and folder except the root,
// sorted by name then id.
func (s *Server) Files() []File {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []File
	for _, f := range s.files {
		if f.id == s.rootID {
			continue
		}
		out = append(out, File{
			ID: f.id, Name: f.name, MimeType: f.mimeType,
			Parents:       slices.Clone(f.parents),
			AppProperties: maps.Clone(f.appProps),
			Content:       bytes.Clone(f.content),
			Trashed:       f.trashed,
			CreatedTime:   f.created, ModifiedTime: f.modified,
		})
	}
	slices.SortFunc(out, func(a, b File) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// now returns a strictly increasing time at Drive's millisecond precision,
// so that "created later" is never a tie within one server.
func (s *Server) now() time.Time {
	t := time.Now().UTC().Truncate(time.Millisecond)
	if !t.After(s.lastTime) {
		t = s.lastTime.Add(time.Millisecond)
	}
	s.lastTime = t
	return t
}

func randID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// --- errors ---------------------------------------------------------------

var statusNames = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
	404: "NOT_FOUND", 409: "ABORTED", 416: "OUT_OF_RANGE", 429: "RESOURCE_EXHAUSTED",
	500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
}

// apiError writes the error envelope Google APIs use, which
// googleapi.CheckResponse parses into a *googleapi.Error.
func apiError(w http.ResponseWriter, code int, reason, msg string) {
	apiErrorAt(w, code, reason, msg, "", "")
}

func apiErrorAt(w http.ResponseWriter, code int, reason, msg, location, locationType string) {
	item := map[string]any{"domain": "global", "reason": reason, "message": msg}
	if location != "" {
		item["location"] = location
		item["locationType"] = locationType
	}
	body := map[string]any{"error": map[string]any{
		"code": code, "message": msg, "errors": []any{item}, "status": statusNames[code],
	}}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="invalid_token"`)
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

func notFound(w http.ResponseWriter, id string) {
	apiErrorAt(w, http.StatusNotFound, "notFound", "File not found: "+id+".", "fileId", "parameter")
}

// --- OAuth ----------------------------------------------------------------

// handleAuth plays Google's consent page: it checks the request the way
// Google does and redirects straight back to redirect_uri with a code and
// the state unchanged (or with error=access_denied after DenyNextConsent).
func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if code := s.intercepted(Request{Op: "auth", Method: r.Method, URL: r.URL}); code != 0 {
		http.Error(w, "drivefake: intercepted", code)
		return
	}
	if q.Get("client_id") != s.opts.ClientID {
		http.Error(w, "Error 401: invalid_client (The OAuth client was not found.)", http.StatusUnauthorized)
		return
	}
	redirect := q.Get("redirect_uri")
	ru, err := url.Parse(redirect)
	if redirect == "" || err != nil || !ru.IsAbs() || ru.Fragment != "" {
		http.Error(w, "Error 400: invalid_request (missing or malformed redirect_uri)", http.StatusBadRequest)
		return
	}
	if len(s.opts.RedirectURIs) > 0 && !slices.Contains(s.opts.RedirectURIs, redirect) {
		http.Error(w, "Error 400: redirect_uri_mismatch", http.StatusBadRequest)
		return
	}
	back := func(params url.Values) {
		if st := q.Get("state"); st != "" {
			params.Set("state", st)
		}
		u := *ru
		qq := u.Query()
		for k, v := range params {
			qq[k] = v
		}
		u.RawQuery = qq.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		back(url.Values{"error": {"unsupported_response_type"}})
		return
	}
	scope := q.Get("scope")
	if scope == "" {
		back(url.Values{"error": {"invalid_scope"}})
		return
	}
	for sc := range strings.FieldsSeq(scope) {
		if sc != ScopeDrive && sc != ScopeDriveFile {
			back(url.Values{"error": {"invalid_scope"}})
			return
		}
	}
	method := q.Get("code_challenge_method")
	if q.Get("code_challenge") != "" && method == "" {
		method = "plain"
	}
	if method != "" && method != "S256" && method != "plain" {
		back(url.Values{"error": {"invalid_request"}})
		return
	}
	s.mu.Lock()
	deny := s.denyNext
	s.denyNext = false
	code := "4/fake-" + randID(24)
	if !deny {
		s.codes[code] = &authCode{
			clientID: s.opts.ClientID, redirectURI: redirect, scope: scope,
			offline:   q.Get("access_type") == "offline",
			challenge: q.Get("code_challenge"), method: method,
			expires: time.Now().Add(10 * time.Minute),
		}
	}
	s.mu.Unlock()
	if deny {
		back(url.Values{"error": {"access_denied"}})
		return
	}
	back(url.Values{"code": {code}, "scope": {scope}})
}

func tokenError(w http.ResponseWriter, code int, errCode, desc string) {
	writeJSON(w, code, map[string]string{"error": errCode, "error_description": desc})
}

// handleToken implements the authorization_code and refresh_token grants.
// The client authenticates with HTTP Basic or with client_id and
// client_secret in the form, as Google allows.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if code := s.intercepted(Request{Op: "token", Method: r.Method, URL: r.URL}); code != 0 {
		tokenError(w, code, "temporarily_unavailable", "drivefake: intercepted")
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		tokenError(w, http.StatusBadRequest, "invalid_request", "drivefake: token requests must be form-encoded")
		return
	}
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: form-urlencoded before Basic encoding.
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != s.opts.ClientID || subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1 {
		tokenError(w, http.StatusUnauthorized, "invalid_client", "Unauthorized")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := map[string]any{"token_type": "Bearer", "expires_in": int(s.opts.TokenLifetime / time.Second)}
	var scope string
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		c, ok := s.codes[r.PostForm.Get("code")]
		delete(s.codes, r.PostForm.Get("code")) // single use, even when refused
		if !ok || time.Now().After(c.expires) || c.clientID != id {
			tokenError(w, http.StatusBadRequest, "invalid_grant", "Malformed auth code.")
			return
		}
		if r.PostForm.Get("redirect_uri") != c.redirectURI {
			tokenError(w, http.StatusBadRequest, "redirect_uri_mismatch", "Bad Request")
			return
		}
		if c.challenge != "" {
			v := r.PostForm.Get("code_verifier")
			want := v
			if c.method == "S256" {
				sum := sha256.Sum256([]byte(v))
				want = base64.RawURLEncoding.EncodeToString(sum[:])
			}
			if v == "" || want != c.challenge {
				tokenError(w, http.StatusBadRequest, "invalid_grant", "Invalid code verifier.")
				return
			}
		}
		scope = c.scope
		if c.offline {
			rt := "1//fake-" + randID(24)
			s.refresh[rt] = refreshGrant{clientID: id, scope: scope}
			resp["refresh_token"] = rt
		}
	case "refresh_token":
		g, ok := s.refresh[r.PostForm.Get("refresh_token")]
		if !ok || g.clientID != id {
			tokenError(w, http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")
			return
		}
		scope = g.scope
		s.stats.RefreshGrants++
	default:
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+r.PostForm.Get("grant_type"))
		return
	}
	at := "ya29.fake-" + randID(32)
	s.access[at] = accessGrant{scope: scope, expires: time.Now().Add(s.opts.TokenLifetime)}
	resp["access_token"] = at
	resp["scope"] = scope
	s.stats.TokenGrants++
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

// --- API plumbing ---------------------------------------------------------

func (s *Server) intercepted(req Request) int {
	s.mu.Lock()
	f := s.intercept
	s.mu.Unlock()
	if f == nil {
		return 0
	}
	code := f(req)
	if code != 0 {
		s.mu.Lock()
		s.stats.Intercepted++
		s.mu.Unlock()
	}
	return code
}

// api wraps an API handler with the bearer check. Google does not need the
// bearer on an upload session URI (the upload_id is the credential), but
// the client library always sends it, so the fake checks it there too.
func (s *Server) api(op string, h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.stats.APIRequests++
		s.mu.Unlock()
		if !s.authorized(w, r) {
			return
		}
		if op == "upload" {
			// the upload handler classifies the request and intercepts itself
			h(w, r)
			return
		}
		if op == "files.get" && r.URL.Query().Get("alt") == "media" {
			op = "files.download"
		}
		if code := s.intercepted(Request{Op: op, Method: r.Method, URL: r.URL, FileID: r.PathValue("id")}); code != 0 {
			apiError(w, code, "backendError", "drivefake: intercepted")
			return
		}
		h(w, r)
	}
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	authz := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	s.mu.Lock()
	g, known := s.access[tok]
	if !ok || !known || time.Now().After(g.expires) {
		s.stats.Unauthorized++
		s.mu.Unlock()
		apiErrorAt(w, http.StatusUnauthorized, "authError",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
			"Authorization", "header")
		return false
	}
	s.mu.Unlock()
	for sc := range strings.FieldsSeq(g.scope) {
		if sc == ScopeDrive || sc == ScopeDriveFile {
			return true
		}
	}
	apiError(w, http.StatusForbidden, "insufficientPermissions", "Request had insufficient authentication scopes.")
	return false
}

// badParam answers 400 for a query parameter.
func badParam(w http.ResponseWriter, name, msg string) {
	apiErrorAt(w, http.StatusBadRequest, "invalidParameter", msg, name, "parameter")
}

// checkParams refuses parameters the fake does not implement. Standard
// parameters every generated call sends (alt, prettyPrint, fields) and
// shared-drive flags (which change nothing in a single My Drive) pass.
func checkParams(w http.ResponseWriter, q url.Values, allowed ...string) bool {
	std := []string{"alt", "prettyPrint", "fields", "supportsAllDrives", "supportsTeamDrives", "key", "quotaUser", "$.xgafv"}
	for k := range q {
		if !slices.Contains(std, k) && !slices.Contains(allowed, k) {
			badParam(w, k, "drivefake: parameter not implemented: "+k)
			return false
		}
	}
	if a := q.Get("alt"); a != "" && a != "json" && a != "media" {
		badParam(w, "alt", "drivefake: alt="+a+" not implemented")
		return false
	}
	return true
}

// --- resources ------------------------------------------------------------

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// resource is the full JSON representation of f, before ?fields= selection.
func (s *Server) resource(f *file) map[string]any {
	m := map[string]any{
		"kind":         "drive#file",
		"id":           f.id,
		"name":         f.name,
		"mimeType":     f.mimeType,
		"parents":      slices.Clone(f.parents),
		"trashed":      f.trashed,
		"createdTime":  fmtTime(f.created),
		"modifiedTime": fmtTime(f.modified),
		"version":      strconv.FormatInt(f.version, 10),
	}
	if len(f.parents) == 0 {
		delete(m, "parents")
	}
	if len(f.appProps) > 0 {
		m["appProperties"] = maps.Clone(f.appProps)
	}
	if f.mimeType != FolderMimeType {
		// int64 fields travel as JSON strings in Google APIs.
		m["size"] = strconv.Itoa(len(f.content))
		m["md5Checksum"] = f.md5
		m["sha256Checksum"] = f.sha256
	}
	return m
}

// fileFields are the File fields the fake models; a selection of any
// other field fails loudly.
var fileFields = []string{"kind", "id", "name", "mimeType", "parents", "trashed", "createdTime",
	"modifiedTime", "version", "appProperties", "size", "md5Checksum", "sha256Checksum"}

const (
	defaultFileFields = "kind,id,name,mimeType"
	defaultListFields = "kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)"
)

// selector is a parsed ?fields= value: a nil sub-selector takes the
// field whole.
type selector map[string]selector

func parseFields(s string) (selector, error) {
	p := &fieldParser{s: s}
	sel, err := p.list()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("unexpected %q", p.s[p.i:])
	}
	return sel, nil
}

type fieldParser struct {
	s string
	i int
}

func (p *fieldParser) skip() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *fieldParser) list() (selector, error) {
	sel := selector{}
	for {
		if err := p.item(sel); err != nil {
			return nil, err
		}
		p.skip()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		return sel, nil
	}
}

func (p *fieldParser) item(into selector) error {
	p.skip()
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '*' || c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			p.i++
			continue
		}
		break
	}
	name := p.s[start:p.i]
	if name == "" {
		return fmt.Errorf("empty field name at %d", start)
	}
	p.skip()
	var sub selector
	switch {
	case p.i < len(p.s) && p.s[p.i] == '(':
		p.i++
		var err error
		if sub, err = p.list(); err != nil {
			return err
		}
		p.skip()
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return errors.New("missing )")
		}
		p.i++
	case p.i < len(p.s) && p.s[p.i] == '/':
		p.i++
		sub = selector{}
		if err := p.item(sub); err != nil {
			return err
		}
	}
	merge(into, name, sub)
	return nil
}

func merge(into selector, name string, sub selector) {
	old, had := into[name]
	switch {
	case !had:
		into[name] = sub
	case old == nil || sub == nil:
		into[name] = nil // whole field wins
	default:
		for k, v := range sub {
			merge(old, k, v)
		}
	}
}

// checkFileSel validates a selection on a File.
func checkFileSel(sel selector) error {
	for k, sub := range sel {
		switch {
		case k == "*":
		case !slices.Contains(fileFields, k):
			return fmt.Errorf("drivefake: field %q not implemented", k)
		case sub != nil && k != "appProperties":
			return fmt.Errorf("field %q has no subfields", k)
		}
	}
	return nil
}

func checkListSel(sel selector) error {
	for k, sub := range sel {
		switch k {
		case "*", "kind", "incompleteSearch", "nextPageToken":
			if sub != nil {
				return fmt.Errorf("field %q has no subfields", k)
			}
		case "files":
			if sub != nil {
				if err := checkFileSel(sub); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("drivefake: field %q not implemented", k)
		}
	}
	return nil
}

func apply(v any, sel selector) any {
	if sel == nil {
		return v
	}
	switch v := v.(type) {
	case map[string]any:
		if _, all := sel["*"]; all {
			return v
		}
		out := map[string]any{}
		for k, sub := range sel {
			if x, ok := v[k]; ok {
				out[k] = apply(x, sub)
			}
		}
		return out
	case map[string]string:
		out := map[string]string{}
		for k := range sel {
			if x, ok := v[k]; ok {
				out[k] = x
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = apply(x, sel)
		}
		return out
	}
	return v
}

// fileSelector parses ?fields= for a File response, or answers 400.
func fileSelector(w http.ResponseWriter, fields string) (selector, bool) {
	if fields == "" {
		fields = defaultFileFields
	}
	sel, err := parseFields(fields)
	if err == nil {
		err = checkFileSel(sel)
	}
	if err != nil {
		badParam(w, "fields", "Invalid field selection "+fields+": "+err.Error())
		return nil, false
	}
	return sel, true
}

// fileMeta is the File metadata a request body may carry. Unknown fields
// are refused.
type fileMeta struct {
	Name          *string            `json:"name"`
	MimeType      *string            `json:"mimeType"`
	Parents       []string           `json:"parents"`
	AppProperties map[string]*string `json:"appProperties"`
	Trashed       *bool              `json:"trashed"`
}

func decodeMeta(body io.Reader) (fileMeta, error) {
	var m fileMeta
	b, err := io.ReadAll(body)
	if err != nil {
		return m, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return m, nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return m, fmt.Errorf("drivefake: request body: %w", err)
	}
	return m, nil
}

func checkProps(props map[string]*string) error {
	for k, v := range props {
		n := len(k)
		if v != nil {
			n += len(*v)
		}
		if k == "" {
			return errors.New("appProperties: empty key")
		}
		if n > MaxPropertyBytes {
			return fmt.Errorf("The limit of %d bytes size per property (including both key and value) has been exceeded (property %q).", MaxPropertyBytes, k)
		}
	}
	return nil
}

// newFile checks m for a create and builds the file (content set later).
// The caller holds s.mu.
func (s *Server) newFile(m fileMeta, defaultMime string) (*file, int, string, string) {
	if m.Trashed != nil && *m.Trashed {
		return nil, 400, "invalidParameter", "drivefake: creating trashed files is not implemented"
	}
	if err := checkProps(m.AppProperties); err != nil {
		return nil, 400, "invalidProperty", err.Error()
	}
	if len(m.Parents) > 1 {
		return nil, 403, "cannotAddParent", "Increasing the number of parents is not allowed."
	}
	parent := s.rootID
	if len(m.Parents) == 1 {
		parent = m.Parents[0]
		if parent == "root" {
			parent = s.rootID
		}
		p, ok := s.files[parent]
		if !ok {
			return nil, 404, "notFound", "File not found: " + m.Parents[0] + "."
		}
		if p.mimeType != FolderMimeType {
			return nil, 400, "invalidParent", "The parent is not a folder."
		}
	}
	f := &file{id: "1" + randID(32), name: "Untitled", mimeType: defaultMime, parents: []string{parent}, version: 1}
	if f.mimeType == "" {
		f.mimeType = "application/octet-stream"
	}
	if m.Name != nil {
		f.name = *m.Name
	}
	if m.MimeType != nil && *m.MimeType != "" {
		f.mimeType = *m.MimeType
	}
	for k, v := range m.AppProperties {
		if v != nil {
			if f.appProps == nil {
				f.appProps = map[string]string{}
			}
			f.appProps[k] = *v
		}
	}
	return f, 0, "", ""
}

// store sets f's content and adds it. The caller holds s.mu.
func (s *Server) store(f *file, content []byte) {
	if f.mimeType == FolderMimeType {
		content = nil
	}
	f.content = content
	md := md5.Sum(content)
	sh := sha256.Sum256(content)
	f.md5, f.sha256 = hex.EncodeToString(md[:]), hex.EncodeToString(sh[:])
	f.created = s.now()
	f.modified = f.created
	s.files[f.id] = f
}

// --- files.create, files.get, files.update, files.delete -------------------

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !checkParams(w, q) {
		return
	}
	sel, ok := fileSelector(w, q.Get("fields"))
	if !ok {
		return
	}
	m, err := decodeMeta(r.Body)
	if err != nil {
		apiError(w, 400, "badRequest", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, code, reason, msg := s.newFile(m, "")
	if code != 0 {
		apiError(w, code, reason, msg)
		return
	}
	if f.mimeType != FolderMimeType {
		// Drive makes empty files of these, but RahatBack never needs one:
		// refuse, so that a lost media part shows.
		apiError(w, 400, "badRequest", "drivefake: metadata-only create is implemented for folders only")
		return
	}
	s.store(f, nil)
	writeJSON(w, 200, apply(s.resource(f), sel))
}

func (s *Server) lookup(id string) (*file, bool) {
	if id == "root" {
		id = s.rootID
	}
	f, ok := s.files[id]
	return f, ok
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !checkParams(w, q, "acknowledgeAbuse") {
		return
	}
	id := r.PathValue("id")
	if q.Get("alt") == "media" {
		s.download(w, r, id)
		return
	}
	sel, ok := fileSelector(w, q.Get("fields"))
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.lookup(id)
	if !ok {
		notFound(w, id)
		return
	}
	writeJSON(w, 200, apply(s.resource(f), sel))
}

// download serves alt=media with one optional byte range, as Drive does:
// 206 with Content-Range, or 416 for a range that starts past the end.
func (s *Server) download(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	f, ok := s.lookup(id)
	var content []byte
	var mt string
	if ok {
		content, mt = f.content, f.mimeType // never mutated in place
	}
	isFolder := ok && f.mimeType == FolderMimeType
	if ok && !isFolder {
		s.stats.Downloads++
	}
	s.mu.Unlock()
	if !ok {
		notFound(w, id)
		return
	}
	if isFolder {
		apiError(w, 403, "fileNotDownloadable", "Only files with binary content can be downloaded. Use Export with Docs Editors files.")
		return
	}
	size := int64(len(content))
	start, end := int64(0), size-1
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		spec, ok := strings.CutPrefix(rg, "bytes=")
		a, b, hasDash := strings.Cut(spec, "-")
		if !ok || !hasDash || strings.Contains(spec, ",") || (a == "" && b == "") {
			apiError(w, 400, "badRequest", "drivefake: unsupported Range "+rg)
			return
		}
		var err error
		if a == "" { // suffix: the last b bytes
			var n int64
			if n, err = strconv.ParseInt(b, 10, 64); err == nil && n > 0 {
				start = max(size-n, 0)
			} else if err == nil {
				start = size // nothing satisfies "bytes=-0"
			}
		} else {
			start, err = strconv.ParseInt(a, 10, 64)
			if err == nil && b != "" {
				var e int64
				if e, err = strconv.ParseInt(b, 10, 64); err == nil {
					if e < start {
						err = errors.New("last < first")
					}
					end = min(e, size-1)
				}
			}
		}
		if err != nil || start < 0 {
			apiError(w, 400, "badRequest", "drivefake: malformed Range "+rg)
			return
		}
		if start >= size {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			apiError(w, http.StatusRequestedRangeNotSatisfiable, "requestedRangeNotSatisfiable", "Request range not satisfiable")
			return
		}
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(content[start : end+1])
	}
}

func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !checkParams(w, q) {
		return
	}
	id := r.PathValue("id")
	sel, ok := fileSelector(w, q.Get("fields"))
	if !ok {
		return
	}
	m, err := decodeMeta(r.Body)
	if err != nil {
		apiError(w, 400, "badRequest", err.Error())
		return
	}
	if m.Parents != nil {
		apiError(w, 403, "parentsNotWritable", "The parents field is not directly writable in update requests. Use the addParents and removeParents parameters instead.")
		return
	}
	if err := checkProps(m.AppProperties); err != nil {
		apiError(w, 400, "invalidProperty", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.lookup(id)
	if !ok || f.id == s.rootID {
		notFound(w, id)
		return
	}
	s.stats.Updates++
	if m.Name != nil {
		f.name = *m.Name
	}
	if m.MimeType != nil && *m.MimeType != "" {
		f.mimeType = *m.MimeType
	}
	if m.Trashed != nil {
		f.trashed = *m.Trashed
	}
	// appProperties merge key by key; a null value removes the key.
	for k, v := range m.AppProperties {
		if v == nil {
			delete(f.appProps, k)
			continue
		}
		if f.appProps == nil {
			f.appProps = map[string]string{}
		}
		f.appProps[k] = *v
	}
	f.version++
	f.modified = s.now()
	writeJSON(w, 200, apply(s.resource(f), sel))
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	if !checkParams(w, r.URL.Query(), "enforceSingleParent") {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.lookup(id)
	if !ok || f.id == s.rootID {
		notFound(w, id)
		return
	}
	s.stats.Deletes++
	s.remove(f.id)
	w.WriteHeader(http.StatusNoContent)
}

// remove deletes id and, for a folder, everything under it, as Drive does.
func (s *Server) remove(id string) {
	delete(s.files, id)
	for cid, c := range s.files {
		if slices.Contains(c.parents, id) {
			s.remove(cid)
		}
	}
}

// --- files.list -----------------------------------------------------------

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !checkParams(w, q, "q", "pageSize", "pageToken", "spaces", "corpora", "includeItemsFromAllDrives", "includeTeamDriveItems") {
		return
	}
	if v := q.Get("spaces"); v != "" && v != "drive" {
		badParam(w, "spaces", "drivefake: only spaces=drive is implemented")
		return
	}
	if v := q.Get("corpora"); v != "" && v != "user" {
		badParam(w, "corpora", "drivefake: only corpora=user is implemented")
		return
	}
	fields := q.Get("fields")
	if fields == "" {
		fields = defaultListFields
	}
	sel, err := parseFields(fields)
	if err == nil {
		err = checkListSel(sel)
	}
	if err != nil {
		badParam(w, "fields", "Invalid field selection "+fields+": "+err.Error())
		return
	}
	pageSize := 100
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			badParam(w, "pageSize", "Invalid value '"+v+"'. Values must be within the range: [1, 1000]")
			return
		}
		pageSize = n
	}
	pageSize = min(pageSize, s.opts.MaxPageSize)
	var pred func(*file) bool
	if expr := q.Get("q"); expr != "" {
		p, err := parseQuery(expr, s.rootID)
		if err != nil {
			badParam(w, "q", "Invalid Value: "+err.Error())
			return
		}
		pred = p
	}
	offset := 0
	if tok := q.Get("pageToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err == nil {
			offset, err = strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		}
		if err != nil || offset < 0 {
			badParam(w, "pageToken", "Invalid Value")
			return
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Lists++
	var match []*file
	for _, f := range s.files {
		if f.id == s.rootID {
			continue
		}
		if pred != nil && !pred(f) {
			continue
		}
		match = append(match, f)
	}
	slices.SortFunc(match, func(a, b *file) int { return strings.Compare(a.id, b.id) })
	out := map[string]any{"kind": "drive#fileList", "incompleteSearch": false}
	files := []any{}
	for i := offset; i < len(match) && i < offset+pageSize; i++ {
		files = append(files, s.resource(match[i]))
	}
	out["files"] = files
	if offset+pageSize < len(match) {
		out["nextPageToken"] = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(offset+pageSize)))
	}
	writeJSON(w, 200, apply(out, sel))
}

// parseQuery compiles the subset of Drive's query language RahatBack uses:
// terms joined by "and", each one of
//
//	'<id>' in parents
//	trashed = true|false
//	name = '<s>'          name != '<s>'
//	mimeType = '<s>'      mimeType != '<s>'
//	appProperties has { key='<k>' and value='<v>' }
//
// Anything else (or, not, parentheses, contains, dates...) is an error, so
// a client using more than this fails its tests loudly.
func parseQuery(expr, rootID string) (func(*file) bool, error) {
	toks, err := lexQuery(expr)
	if err != nil {
		return nil, err
	}
	p := &queryParser{toks: toks, root: rootID}
	var preds []func(*file) bool
	for {
		pr, err := p.term()
		if err != nil {
			return nil, err
		}
		preds = append(preds, pr)
		if p.done() {
			break
		}
		if t := p.next(); t.kind != tWord || t.text != "and" {
			return nil, fmt.Errorf("drivefake: query: only 'and' between terms is implemented, got %q", t.text)
		}
	}
	return func(f *file) bool {
		for _, pr := range preds {
			if !pr(f) {
				return false
			}
		}
		return true
	}, nil
}

type tokKind int

const (
	tWord tokKind = iota
	tString
	tOp
	tPunct
	tEOF
)

type token struct {
	kind tokKind
	text string
}

func lexQuery(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '\'':
			var b strings.Builder
			i++
			for {
				if i >= len(s) {
					return nil, errors.New("unterminated string")
				}
				if s[i] == '\\' {
					if i+1 >= len(s) {
						return nil, errors.New("dangling backslash")
					}
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '\'' {
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			toks = append(toks, token{tString, b.String()})
		case c == '=' || c == '<' || c == '>' || c == '!':
			j := i + 1
			if j < len(s) && s[j] == '=' {
				j++
			}
			toks = append(toks, token{tOp, s[i:j]})
			i = j
		case c == '{' || c == '}' || c == '(' || c == ')' || c == ',':
			toks = append(toks, token{tPunct, string(c)})
			i++
		case c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9':
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == '.' || 'a' <= s[j] && s[j] <= 'z' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
				j++
			}
			toks = append(toks, token{tWord, s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return toks, nil
}

type queryParser struct {
	toks []token
	i    int
	root string
}

func (p *queryParser) done() bool { return p.i >= len(p.toks) }

func (p *queryParser) next() token {
	if p.done() {
		return token{tEOF, "end of query"}
	}
	t := p.toks[p.i]
	p.i++
	return t
}

func (p *queryParser) expect(kind tokKind, text string) error {
	t := p.next()
	if t.kind != kind || (text != "" && t.text != text) {
		return fmt.Errorf("expected %q, got %q", text, t.text)
	}
	return nil
}

func (p *queryParser) str() (string, error) {
	t := p.next()
	if t.kind != tString {
		return "", fmt.Errorf("expected a quoted string, got %q", t.text)
	}
	return t.text, nil
}

func (p *queryParser) term() (func(*file) bool, error) {
	t := p.next()
	switch {
	case t.kind == tString:
		if err := p.expect(tWord, "in"); err != nil {
			return nil, err
		}
		if err := p.expect(tWord, "parents"); err != nil {
			return nil, fmt.Errorf("drivefake: query: only '<id>' in parents is implemented: %w", err)
		}
		id := t.text
		if id == "root" {
			id = p.root
		}
		return func(f *file) bool { return slices.Contains(f.parents, id) }, nil
	case t.kind == tWord && t.text == "trashed":
		if err := p.expect(tOp, "="); err != nil {
			return nil, err
		}
		v := p.next()
		if v.kind != tWord || (v.text != "true" && v.text != "false") {
			return nil, fmt.Errorf("trashed: expected true or false, got %q", v.text)
		}
		want := v.text == "true"
		return func(f *file) bool { return f.trashed == want }, nil
	case t.kind == tWord && (t.text == "name" || t.text == "mimeType"):
		op := p.next()
		if op.kind != tOp || (op.text != "=" && op.text != "!=") {
			return nil, fmt.Errorf("drivefake: query: %s supports only = and !=, got %q", t.text, op.text)
		}
		v, err := p.str()
		if err != nil {
			return nil, err
		}
		field, eq := t.text, op.text == "="
		return func(f *file) bool {
			got := f.name
			if field == "mimeType" {
				got = f.mimeType
			}
			return (got == v) == eq
		}, nil
	case t.kind == tWord && t.text == "appProperties":
		if err := p.expect(tWord, "has"); err != nil {
			return nil, err
		}
		if err := p.expect(tPunct, "{"); err != nil {
			return nil, err
		}
		if err := p.expect(tWord, "key"); err != nil {
			return nil, err
		}
		if err := p.expect(tOp, "="); err != nil {
			return nil, err
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		if err := p.expect(tWord, "and"); err != nil {
			return nil, err
		}
		if err := p.expect(tWord, "value"); err != nil {
			return nil, err
		}
		if err := p.expect(tOp, "="); err != nil {
			return nil, err
		}
		v, err := p.str()
		if err != nil {
			return nil, err
		}
		if err := p.expect(tPunct, "}"); err != nil {
			return nil, err
		}
		return func(f *file) bool {
			got, ok := f.appProps[k]
			return ok && got == v
		}, nil
	}
	return nil, fmt.Errorf("drivefake: query term not implemented at %q", t.text)
}

// --- uploads --------------------------------------------------------------

// handleUpload serves /upload/drive/v3/files: starting a resumable session
// (uploadType=resumable), a multipart or media upload, and, with
// upload_id, the session URI itself.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if id := q.Get("upload_id"); id != "" {
		s.sessionRequest(w, r, id)
		return
	}
	if r.Method != http.MethodPost {
		apiError(w, 405, "badRequest", "drivefake: "+r.Method+" without upload_id")
		return
	}
	if !checkParams(w, q, "uploadType", "keepRevisionForever", "ignoreDefaultVisibility", "useContentAsIndexableText", "enforceSingleParent") {
		return
	}
	op := map[string]string{"resumable": "upload.init", "multipart": "upload.multipart", "media": "upload.media"}[q.Get("uploadType")]
	if op == "" {
		badParam(w, "uploadType", "drivefake: uploadType "+q.Get("uploadType")+" not implemented")
		return
	}
	if code := s.intercepted(Request{Op: op, Method: r.Method, URL: r.URL}); code != 0 {
		apiError(w, code, "backendError", "drivefake: intercepted")
		return
	}
	sel, ok := fileSelector(w, q.Get("fields"))
	if !ok {
		return
	}
	switch op {
	case "upload.init":
		s.startSession(w, r)
	case "upload.multipart":
		s.multipart(w, r, sel)
	case "upload.media":
		content, err := io.ReadAll(r.Body)
		if err != nil {
			apiError(w, 400, "badRequest", err.Error())
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		f, code, reason, msg := s.newFile(fileMeta{}, r.Header.Get("Content-Type"))
		if code != 0 {
			apiError(w, code, reason, msg)
			return
		}
		s.stats.MediaUploads++
		s.store(f, content)
		writeJSON(w, 200, apply(s.resource(f), sel))
	}
}

func (s *Server) multipart(w http.ResponseWriter, r *http.Request, sel selector) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["boundary"] == "" {
		apiError(w, 400, "badContent", "drivefake: multipart upload needs Content-Type multipart/related with a boundary")
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	part, err := mr.NextPart()
	if err != nil {
		apiError(w, 400, "badContent", "drivefake: metadata part: "+err.Error())
		return
	}
	if ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); ct != "application/json" {
		apiError(w, 400, "badContent", "drivefake: first part must be application/json metadata")
		return
	}
	m, err := decodeMeta(part)
	if err != nil {
		apiError(w, 400, "badContent", err.Error())
		return
	}
	part, err = mr.NextPart()
	if err != nil {
		apiError(w, 400, "badContent", "drivefake: media part: "+err.Error())
		return
	}
	mediaType := part.Header.Get("Content-Type")
	content, err := io.ReadAll(part)
	if err != nil {
		apiError(w, 400, "badContent", err.Error())
		return
	}
	if _, err := mr.NextPart(); err != io.EOF {
		apiError(w, 400, "badContent", "drivefake: multipart upload must have exactly two parts")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, code, reason, msg := s.newFile(m, mediaType)
	if code != 0 {
		apiError(w, code, reason, msg)
		return
	}
	s.stats.MultipartUploads++
	s.store(f, content)
	writeJSON(w, 200, apply(s.resource(f), sel))
}

func (s *Server) startSession(w http.ResponseWriter, r *http.Request) {
	m, err := decodeMeta(r.Body)
	if err != nil {
		apiError(w, 400, "badRequest", err.Error())
		return
	}
	declared := int64(-1)
	if v := r.Header.Get("X-Upload-Content-Length"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			apiError(w, 400, "badRequest", "Invalid X-Upload-Content-Length")
			return
		}
		declared = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Validate the metadata now, as Drive does, rather than after the upload.
	if _, code, reason, msg := s.newFile(m, ""); code != 0 {
		apiError(w, code, reason, msg)
		return
	}
	se := &session{
		id:          randID(40),
		meta:        m,
		fields:      r.URL.Query().Get("fields"),
		contentType: r.Header.Get("X-Upload-Content-Type"),
		declared:    declared,
	}
	s.sessions[se.id] = se
	s.stats.UploadSessions++
	loc := s.URL + "/upload/drive/v3/files?" + url.Values{"uploadType": {"resumable"}, "upload_id": {se.id}}.Encode()
	w.Header().Set("Location", loc)
	w.Header().Set("X-GUploader-UploadID", se.id)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// contentRange parses "bytes a-b/total", "bytes a-b/*", "bytes */total"
// and "bytes */*"; a or total is -1 where absent.
func contentRange(v string) (first, last, total int64, err error) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	rng, tot, ok2 := strings.Cut(spec, "/")
	if !ok || !ok2 {
		return 0, 0, 0, fmt.Errorf("malformed Content-Range %q", v)
	}
	first, last, total = -1, -1, -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, fmt.Errorf("malformed Content-Range %q", v)
		}
	}
	if rng != "*" {
		a, b, ok := strings.Cut(rng, "-")
		var e1, e2 error
		first, e1 = strconv.ParseInt(a, 10, 64)
		last, e2 = strconv.ParseInt(b, 10, 64)
		if !ok || e1 != nil || e2 != nil || first < 0 || last < first {
			return 0, 0, 0, fmt.Errorf("malformed Content-Range %q", v)
		}
	}
	return first, last, total, nil
}

// sessionRequest serves a session URI: a chunk (PUT or POST, as the client
// library sends), a status query (empty body, "bytes */*" or
// "bytes */<total>"), or DELETE to cancel.
func (s *Server) sessionRequest(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	se, ok := s.sessions[id]
	if ok {
		s.stats.ChunkRequests++
		s.chunkCount[id]++
	}
	n := s.chunkCount[id]
	s.mu.Unlock()
	if !ok {
		apiError(w, 404, "notFound", "drivefake: no such upload session")
		return
	}
	op := "upload.chunk"
	if r.Method == http.MethodDelete {
		op = "upload.cancel"
	}
	if code := s.intercepted(Request{Op: op, Method: r.Method, URL: r.URL, UploadID: id,
		ContentRange: r.Header.Get("Content-Range"), Chunk: n}); code != 0 {
		io.Copy(io.Discard, r.Body)
		apiError(w, code, "backendError", "drivefake: intercepted")
		return
	}
	if r.Method == http.MethodDelete {
		s.mu.Lock()
		done := se.fileID != ""
		se.cancelled = se.cancelled || !done
		s.mu.Unlock()
		// Google answers a cancelled session with the non-standard 499.
		w.WriteHeader(499)
		return
	}
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		apiError(w, 400, "badRequest", "drivefake: chunk without Content-Range")
		return
	}
	first, last, total, err := contentRange(cr)
	if err != nil {
		apiError(w, 400, "badRequest", err.Error())
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		apiError(w, 400, "badRequest", err.Error())
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if se.cancelled {
		apiError(w, 404, "notFound", "drivefake: upload session was cancelled")
		return
	}
	if se.fileID != "" {
		// A completed session answers every request with the file again.
		f, ok := s.files[se.fileID]
		if !ok {
			notFound(w, se.fileID)
			return
		}
		s.finishResponse(w, se, f)
		return
	}
	have := int64(len(se.data))
	if first < 0 { // status query, or "bytes */total" closing the upload
		if len(body) != 0 {
			apiError(w, 400, "badRequest", "drivefake: body with a Content-Range without a range")
			return
		}
		if total < 0 {
			s.incomplete(w, r, se)
			return
		}
		if total != have {
			apiError(w, 400, "badRequest", fmt.Sprintf("drivefake: total %d differs from the %d bytes received", total, have))
			return
		}
		s.complete(w, se)
		return
	}
	if int64(len(body)) != last-first+1 {
		apiError(w, 400, "badRequest", fmt.Sprintf("drivefake: Content-Range %q but %d bytes of body", cr, len(body)))
		return
	}
	if first > have {
		apiError(w, 400, "badRequest", fmt.Sprintf("drivefake: chunk starts at %d but only %d bytes were received", first, have))
		return
	}
	final := total >= 0
	if final && total != last+1 {
		apiError(w, 400, "badRequest", fmt.Sprintf("drivefake: Content-Range %q: total must be last+1", cr))
		return
	}
	if !final && (last+1)%MinChunk != 0 {
		// Drive persists only whole 256 KiB units of a non-final chunk; the
		// client library would not notice, so refuse instead of losing bytes.
		apiError(w, 400, "badRequest", fmt.Sprintf("drivefake: non-final chunk must end on a multiple of %d bytes, got %q", MinChunk, cr))
		return
	}
	// Bytes already persisted (a retried chunk) are skipped.
	se.data = append(se.data, body[min(have-first, int64(len(body))):]...)
	if !final {
		s.incomplete(w, r, se)
		return
	}
	if se.declared >= 0 && se.declared != int64(len(se.data)) {
		apiError(w, 400, "badRequest", fmt.Sprintf("drivefake: uploaded %d bytes, X-Upload-Content-Length said %d", len(se.data), se.declared))
		return
	}
	s.complete(w, se)
}

// incomplete answers "resume incomplete": 308 with the persisted Range,
// or, when the client sent X-GUploader-No-308: yes, 200 with
// X-HTTP-Status-Code-Override: 308. The caller holds s.mu.
func (s *Server) incomplete(w http.ResponseWriter, r *http.Request, se *session) {
	if n := len(se.data); n > 0 {
		w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", n-1))
	}
	w.Header().Set("Content-Length", "0")
	if r.Header.Get("X-GUploader-No-308") == "yes" {
		w.Header().Set("X-HTTP-Status-Code-Override", "308")
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusPermanentRedirect)
}

// complete creates the file of se. The caller holds s.mu.
func (s *Server) complete(w http.ResponseWriter, se *session) {
	f, code, reason, msg := s.newFile(se.meta, se.contentType)
	if code != 0 {
		apiError(w, code, reason, msg)
		return
	}
	s.store(f, se.data)
	se.data = nil
	se.fileID = f.id
	s.finishResponse(w, se, f)
}

func (s *Server) finishResponse(w http.ResponseWriter, se *session, f *file) {
	fields := se.fields
	if fields == "" {
		fields = defaultFileFields
	}
	sel, err := parseFields(fields)
	if err == nil {
		err = checkFileSel(sel)
	}
	if err != nil {
		badParam(w, "fields", "Invalid field selection "+fields+": "+err.Error())
		return
	}
	writeJSON(w, 200, apply(s.resource(f), sel))
}
