package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"

	"github.com/rahatback/rahatback/auth"
	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/storage"
)

// GoogleOpts configure Google Drive. Without ClientID the Drive routes
// answer 503. The URLs default to Google's own; tests point them at a fake.
type GoogleOpts struct {
	ClientID, ClientSecret string
	RedirectURL            string // default <PublicURL>/v1/cloud-storage/google/callback
	AuthURL, TokenURL      string
	DriveEndpoint          string // Drive API base URL override
}

type cloudStorageJSON struct {
	ID               uuid.UUID `json:"id"`
	Name             string    `json:"name"`
	StorageType      string    `json:"storageType"`
	IsDefault        bool      `json:"isDefault"`
	S3AccessKeyID    *string   `json:"s3AccessKeyId,omitempty"`
	HasS3Secret      bool      `json:"hasS3SecretAccessKey,omitempty"`
	S3Region         *string   `json:"s3Region,omitempty"`
	S3Bucket         *string   `json:"s3Bucket,omitempty"`
	S3Endpoint       *string   `json:"s3Endpoint,omitempty"`
	S3ForcePathStyle bool      `json:"s3ForcePathStyle,omitempty"`
	S3Prefix         *string   `json:"s3Prefix,omitempty"`
	GDFolderID       *string   `json:"gdFolderId,omitempty"`
	GDConnected      bool      `json:"gdConnected,omitempty"`
	CreatedAt        time.Time `json:"createdAt"`
	UpdatedAt        time.Time `json:"updatedAt"`
}

func toCloudStorageJSON(c db.CloudStorage) cloudStorageJSON {
	return cloudStorageJSON{ID: c.ID, Name: c.Name, StorageType: c.StorageType, IsDefault: c.IsDefault,
		S3AccessKeyID: c.S3AccessKeyID, HasS3Secret: c.S3SecretEnc != nil, S3Region: c.S3Region, S3Bucket: c.S3Bucket,
		S3Endpoint: c.S3Endpoint, S3ForcePathStyle: c.S3ForcePathStyle, S3Prefix: c.S3Prefix, GDFolderID: c.GdFolderID,
		GDConnected: c.GdRefreshTokenEnc != nil, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// cloudStorageInput is the body of create, update and test.
type cloudStorageInput struct {
	CloudStorageID    *uuid.UUID `json:"cloudStorageId"` // test only: a saved storage
	Name              *string    `json:"name"`
	StorageType       *string    `json:"storageType"`
	IsDefault         *bool      `json:"isDefault"`
	S3AccessKeyID     *string    `json:"s3AccessKeyId"`
	S3SecretAccessKey *string    `json:"s3SecretAccessKey"`
	S3Region          *string    `json:"s3Region"`
	S3Bucket          *string    `json:"s3Bucket"`
	S3Endpoint        *string    `json:"s3Endpoint"`
	S3ForcePathStyle  *bool      `json:"s3ForcePathStyle"`
	S3Prefix          *string    `json:"s3Prefix"`
	GDFolderID        *string    `json:"gdFolderId"`
}

func optional(dst **string, src *string) {
	if src != nil {
		v := strings.TrimSpace(*src)
		if v == "" {
			*dst = nil
		} else {
			*dst = &v
		}
	}
}

// merge applies in over cur and validates, naming every bad field; secret is
// the S3 secret to store (nil: keep the stored one).
func (in cloudStorageInput) merge(cur db.CloudStorage) (c db.CloudStorage, secret *string, err error) {
	c = cur
	if in.Name != nil {
		c.Name = strings.TrimSpace(*in.Name)
	}
	if in.StorageType != nil {
		c.StorageType = *in.StorageType
	}
	if in.IsDefault != nil {
		c.IsDefault = *in.IsDefault
	}
	optional(&c.S3AccessKeyID, in.S3AccessKeyID)
	optional(&c.S3Region, in.S3Region)
	optional(&c.S3Bucket, in.S3Bucket)
	optional(&c.S3Endpoint, in.S3Endpoint)
	optional(&c.S3Prefix, in.S3Prefix)
	optional(&c.GdFolderID, in.GDFolderID)
	if in.S3ForcePathStyle != nil {
		c.S3ForcePathStyle = *in.S3ForcePathStyle
	}
	f := fieldErrors{}
	switch {
	case c.Name == "":
		f.add("name", "is required")
	case len(c.Name) > 100:
		f.add("name", "must be at most 100 characters")
	}
	switch c.StorageType {
	case "s3":
		if c.S3AccessKeyID == nil {
			f.add("s3AccessKeyId", "is required")
		}
		if in.S3SecretAccessKey != nil && *in.S3SecretAccessKey != "" {
			secret = in.S3SecretAccessKey
			if msg := checkS3Secret(*secret, c.S3Endpoint == nil); msg != "" {
				f.add("s3SecretAccessKey", msg)
			}
		} else if cur.S3SecretEnc == nil {
			f.add("s3SecretAccessKey", "is required")
		} else if cur.S3Endpoint != nil && c.S3Endpoint == nil {
			// The stored secret was checked for another store's format.
			f.add("s3SecretAccessKey", "send it again: a storage that moves to AWS needs the 40-character secret access key AWS issued")
		}
		if c.S3AccessKeyID != nil {
			if msg := checkS3AccessKey(*c.S3AccessKeyID, c.S3Endpoint == nil); msg != "" {
				f.add("s3AccessKeyId", msg)
			}
		}
		if c.S3Bucket == nil {
			f.add("s3Bucket", "is required")
		}
		if c.S3Region == nil {
			r := "us-east-1"
			c.S3Region = &r
		} else if !s3Region.MatchString(*c.S3Region) {
			f.add("s3Region", "must be a region name such as eu-central-1")
		}
		if c.S3Endpoint != nil {
			u, perr := url.Parse(*c.S3Endpoint)
			if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
				(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
				f.add("s3Endpoint", "must be an http(s) URL such as https://s3.example.com, without a path or credentials")
			}
		}
		if c.S3Prefix != nil && (strings.HasPrefix(*c.S3Prefix, "/") || storage.CheckKey(strings.TrimSuffix(*c.S3Prefix, "/")) != nil) {
			f.add("s3Prefix", "must be a relative path such as backups/prod")
		}
	case "google_drive":
		if cur.ID == uuid.Nil {
			f.add("storageType", "google_drive storage is connected through GET /v1/cloud-storage/google/auth-url")
		}
	default:
		f.add("storageType", "must be one of s3, google_drive")
	}
	return c, secret, f.err()
}

// listCloudStorage answers {results: [storage]}.
func (a *API) listCloudStorage(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.q.ListCloudStorages(r.Context(), a.pool, userID(r.Context()))
	if err != nil {
		return err
	}
	out := make([]cloudStorageJSON, 0, len(rows))
	for _, c := range rows {
		out = append(out, toCloudStorageJSON(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out, "totalResults": len(out)})
	return nil
}

// saveCloudStorage inserts (cur.ID nil) or updates c, sealing secret, and
// keeps one default per type.
func (a *API) saveCloudStorage(ctx context.Context, c db.CloudStorage, secret *string, isNew bool) (db.CloudStorage, error) {
	if secret != nil {
		enc, err := a.secrets.SealS3Secret(c.ID, *secret)
		if err != nil {
			return c, err
		}
		c.S3SecretEnc = enc
	}
	err := db.WithTx(ctx, a.pool, func(tx pgx.Tx) error {
		if c.IsDefault {
			if err := a.q.ClearDefaultCloudStorage(ctx, tx, db.ClearDefaultCloudStorageParams{UserID: c.UserID, StorageType: c.StorageType, Keep: c.ID}); err != nil {
				return err
			}
		}
		var err error
		if isNew {
			c, err = a.q.CreateCloudStorage(ctx, tx, db.CreateCloudStorageParams{ID: c.ID, UserID: c.UserID, Name: c.Name,
				StorageType: c.StorageType, IsDefault: c.IsDefault, S3AccessKeyID: c.S3AccessKeyID, S3SecretEnc: c.S3SecretEnc,
				S3Region: c.S3Region, S3Bucket: c.S3Bucket, S3Endpoint: c.S3Endpoint, S3ForcePathStyle: c.S3ForcePathStyle,
				S3Prefix: c.S3Prefix, GdFolderID: c.GdFolderID, GdRefreshTokenEnc: c.GdRefreshTokenEnc})
		} else {
			c, err = a.q.UpdateCloudStorage(ctx, tx, db.UpdateCloudStorageParams{ID: c.ID, UserID: c.UserID, Name: c.Name,
				IsDefault: c.IsDefault, S3AccessKeyID: c.S3AccessKeyID, S3SecretEnc: c.S3SecretEnc, S3Region: c.S3Region,
				S3Bucket: c.S3Bucket, S3Endpoint: c.S3Endpoint, S3ForcePathStyle: c.S3ForcePathStyle, S3Prefix: c.S3Prefix,
				GdFolderID: c.GdFolderID, GdRefreshTokenEnc: c.GdRefreshTokenEnc})
		}
		return err
	})
	return c, db.MapErr(err)
}

// createCloudStorage answers 201 with an S3 storage (Drive storages are
// made by the OAuth callback). The secret is stored sealed and never
// returned. 400 names bad fields.
func (a *API) createCloudStorage(w http.ResponseWriter, r *http.Request) error {
	var in cloudStorageInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.CloudStorageID != nil {
		return fieldErrors{"cloudStorageId": "unknown field"}.err()
	}
	c, secret, err := in.merge(db.CloudStorage{})
	if err != nil {
		return err
	}
	if err := a.checkEndpoint(r.Context(), c); err != nil {
		return err
	}
	c.ID, c.UserID = uuid.New(), userID(r.Context())
	c, err = a.saveCloudStorage(r.Context(), c, secret, true)
	if err != nil {
		return err
	}
	auditObject(r.Context(), c.ID.String())
	writeJSON(w, http.StatusCreated, toCloudStorageJSON(c))
	return nil
}

func (a *API) loadCloudStorage(ctx context.Context, user, id uuid.UUID, field string) (db.CloudStorage, error) {
	c, err := a.q.GetCloudStorage(ctx, a.pool, db.GetCloudStorageParams{ID: id, UserID: user})
	return c, owned(err, "cloud storage", field)
}

// getCloudStorage answers one storage; 404 when not the user's.
func (a *API) getCloudStorage(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "cloud storage")
	if err != nil {
		return err
	}
	c, err := a.loadCloudStorage(r.Context(), userID(r.Context()), id, "")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toCloudStorageJSON(c))
	return nil
}

// updateCloudStorage changes the fields present (the type stays); 400 names
// bad fields; 404 when not the user's.
func (a *API) updateCloudStorage(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "cloud storage")
	if err != nil {
		return err
	}
	cur, err := a.loadCloudStorage(r.Context(), userID(r.Context()), id, "")
	if err != nil {
		return err
	}
	var in cloudStorageInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.StorageType != nil && *in.StorageType != cur.StorageType {
		return fieldErrors{"storageType": "cannot change; create another storage"}.err()
	}
	if in.CloudStorageID != nil {
		return fieldErrors{"cloudStorageId": "unknown field"}.err()
	}
	c, secret, err := in.merge(cur)
	if err != nil {
		return err
	}
	if in.S3Endpoint != nil {
		if err := a.checkEndpoint(r.Context(), c); err != nil {
			return err
		}
	}
	c, err = a.saveCloudStorage(r.Context(), c, secret, false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toCloudStorageJSON(c))
	return nil
}

// deleteCloudStorage answers 204; 409 while a job uses it; 404 when not
// the user's. Stored backups stay in the bucket or folder.
func (a *API) deleteCloudStorage(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "cloud storage")
	if err != nil {
		return err
	}
	if _, err := a.loadCloudStorage(r.Context(), userID(r.Context()), id, ""); err != nil {
		return err
	}
	inUse, err := a.q.CloudStorageInUse(r.Context(), a.pool, &id)
	if err != nil {
		return err
	}
	if inUse {
		return errorf(http.StatusConflict, "a backup job stores its backups here; move or delete the job first")
	}
	if _, err := a.q.DeleteCloudStorage(r.Context(), a.pool, db.DeleteCloudStorageParams{ID: id, UserID: userID(r.Context())}); err != nil {
		return db.MapErr(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (a *API) oauthConfig() *oauth2.Config {
	g := a.opts.Google
	return storage.OAuthConfig(g.ClientID, g.ClientSecret, g.RedirectURL, g.AuthURL, g.TokenURL)
}

// oauthOfflineOpts ask Google for a refresh token, every time.
func oauthOfflineOpts() []oauth2.AuthCodeOption {
	return []oauth2.AuthCodeOption{oauth2.AccessTypeOffline, oauth2.ApprovalForce}
}

// testCloudStorage writes, reads back and deletes a small probe object
// from the control plane and answers {success, message}: what failed (bad
// key, no such bucket, no permission, unreachable endpoint), never a secret.
// The body is a storage's fields, or {cloudStorageId} (with overrides).
func (a *API) testCloudStorage(w http.ResponseWriter, r *http.Request) error {
	var in cloudStorageInput
	if err := a.decodeJSON(w, r, &in); err != nil {
		return err
	}
	var cur db.CloudStorage
	if in.CloudStorageID != nil {
		c, err := a.loadCloudStorage(r.Context(), userID(r.Context()), *in.CloudStorageID, "cloudStorageId")
		if err != nil {
			return err
		}
		cur = c
	} else if in.Name == nil {
		n := "test"
		in.Name = &n
	}
	c, secret, err := in.merge(cur)
	if err != nil {
		return err
	}
	if err := a.checkEndpoint(r.Context(), c); err != nil {
		return err
	}
	cfg, err := a.runs.StorageConfig(c, secret)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := storage.Probe(ctx, cfg); err != nil {
		if rf, ok := egress.IsRefused(err); ok { // a redirect, or DNS answering differently since the check
			return fieldErrors{"s3Endpoint": rf.Error()}.err()
		}
		a.log.Info("storage test failed", "user", userID(r.Context()), "storage_type", c.StorageType, "detail", storage.Detail(err))
		writeJSON(w, http.StatusOK, map[string]any{"success": false, "message": probeMessage(err)})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "message": "wrote, read back and deleted a probe object"})
	return nil
}

// googleConfigured returns 503 unless Drive is configured.
func (a *API) googleConfigured() error {
	if a.opts.Google.ClientID == "" {
		return errorf(http.StatusServiceUnavailable, "Google Drive is not configured: start the control plane with --google-client-id and --google-client-secret")
	}
	return nil
}

// googleAuthURL answers {url}: the Google consent page to send the user
// to. ?name= and ?folderId= name the storage the callback creates.
func (a *API) googleAuthURL(w http.ResponseWriter, r *http.Request) error {
	if err := a.googleConfigured(); err != nil {
		return err
	}
	name := strings.TrimSpace(r.URL.Query().Get("name"))
	if name == "" {
		name = "Google Drive"
	}
	if len(name) > 100 {
		return fieldErrors{"name": "must be at most 100 characters"}.err()
	}
	var folder *string
	if v := strings.TrimSpace(r.URL.Query().Get("folderId")); v != "" {
		folder = &v
	}
	state, hash, err := auth.NewOpaqueToken()
	if err != nil {
		return err
	}
	if err := a.q.CreateOAuthState(r.Context(), a.pool, db.CreateOAuthStateParams{StateHash: hash, UserID: userID(r.Context()),
		Name: name, FolderID: folder, ExpiresAt: time.Now().Add(10 * time.Minute)}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"url": a.oauthConfig().AuthCodeURL(state, oauthOfflineOpts()...)})
	return nil
}

// googleCallback is where Google sends the user's browser back: the state
// must be one this API issued (once, within 10 minutes); the code is
// exchanged for a refresh token, stored sealed in a new google_drive
// storage: 201 with it. 400 for a missing, unknown or expired state.
func (a *API) googleCallback(w http.ResponseWriter, r *http.Request) error {
	if err := a.googleConfigured(); err != nil {
		return err
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return errorf(http.StatusBadRequest, "Google did not grant access: %s", e)
	}
	st, err := a.q.TakeOAuthState(r.Context(), a.pool, auth.HashToken(q.Get("state")))
	if errors.Is(db.MapErr(err), db.ErrNotFound) || q.Get("state") == "" {
		return fieldErrors{"state": "unknown or expired; start again from Connect Google Drive"}.err()
	} else if err != nil {
		return err
	}
	if q.Get("code") == "" {
		return fieldErrors{"code": "is required"}.err()
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	tok, err := a.oauthConfig().Exchange(ctx, q.Get("code"))
	if err != nil {
		return errorf(http.StatusBadGateway, "Google refused the authorization code; start again")
	}
	if tok.RefreshToken == "" {
		return errorf(http.StatusBadGateway, "Google sent no refresh token; remove RahatBack's access in your Google account and connect again")
	}
	c := db.CloudStorage{ID: uuid.New(), UserID: st.UserID, Name: st.Name, StorageType: "google_drive", GdFolderID: st.FolderID}
	enc, err := a.secrets.SealDriveToken(c.ID, tok.RefreshToken)
	if err != nil {
		return err
	}
	c.GdRefreshTokenEnc = enc
	c, err = a.saveCloudStorage(r.Context(), c, nil, true)
	if err != nil {
		return err
	}
	auditUser(r.Context(), st.UserID)
	auditObject(r.Context(), c.ID.String())
	writeJSON(w, http.StatusCreated, toCloudStorageJSON(c))
	return nil
}

// probeMessage says in one sentence what a storage test found: one of a
// few fixed classes, never text from the SDK or from the server, so the
// answer does not tell a closed port from a server that is not S3.
func probeMessage(err error) string {
	var re *oauth2.RetrieveError
	switch {
	case errors.Is(err, storage.ErrS3BadCredentials):
		return "the access key id or secret access key is wrong"
	case errors.Is(err, storage.ErrS3NoBucket):
		return "no such bucket (check s3Bucket and s3Region)"
	case errors.Is(err, storage.ErrS3Denied):
		return "access denied: the key may not write, read or delete objects in this bucket"
	case errors.As(err, &re):
		return "Google refused the stored authorization; connect Google Drive again"
	}
	return "the storage endpoint cannot be reached, or did not answer as the storage service does (check the endpoint, the region and the network)"
}

// s3Region is the shape of an S3 region name ("eu-central-1", "garage").
var s3Region = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)

// checkS3Secret returns why secret cannot be an S3 secret key, or "". AWS
// secret keys are 40 characters of base64; S3-compatible stores use other
// lengths, but none fewer than 8 (MinIO's minimum).
func checkS3Secret(secret string, aws bool) string {
	if aws {
		if len(secret) != 40 || strings.Trim(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") != "" {
			return "must be the 40-character secret access key AWS issued with the access key"
		}
		return ""
	}
	if len(secret) < 8 || len(secret) > 128 || !printableASCII(secret) {
		return "must be 8 to 128 printable characters without spaces"
	}
	return ""
}

// checkS3AccessKey returns why id cannot be an S3 access key id, or "". AWS
// access key ids are 16 to 128 upper-case letters and digits.
func checkS3AccessKey(id string, aws bool) string {
	if aws {
		if len(id) < 16 || len(id) > 128 || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			return "must be an AWS access key id (16 or more upper-case letters and digits, such as AKIA…)"
		}
		return ""
	}
	if len(id) > 128 || !printableASCII(id) {
		return "must be at most 128 printable characters without spaces"
	}
	return ""
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// checkEndpoint answers 400 on s3Endpoint when the control plane may not
// connect to c's endpoint, before any connection is made.
func (a *API) checkEndpoint(ctx context.Context, c db.CloudStorage) error {
	if c.StorageType != "s3" || c.S3Endpoint == nil {
		return nil
	}
	if err := a.runs.CheckEndpoint(ctx, *c.S3Endpoint); err != nil {
		if r, ok := egress.IsRefused(err); ok {
			return fieldErrors{"s3Endpoint": r.Error()}.err()
		}
		return err
	}
	return nil
}
