package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/endpoints"
	"google.golang.org/api/drive/v3"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

const (
	// DriveFolderName is the folder in the root of My Drive that holds the
	// objects when DriveConfig.FolderID is empty.
	DriveFolderName = "RahatBack"
	// DefaultDriveChunkSize is the resumable-upload chunk, buffered in memory
	// once per Put.
	DefaultDriveChunkSize = 8 << 20

	driveFolderMime = "application/vnd.google-apps.folder"
	driveObjectMime = "application/octet-stream"
	// driveKeyProp marks a complete object; its value indexes the key.
	driveKeyProp = "rahatbackKey"
	// drivePartialProp marks an upload not yet made visible.
	drivePartialProp = "rahatbackPartial"
	// driveMaxProp is Drive's limit on key plus value of one appProperty.
	driveMaxProp = 124
	// driveObjectFields are the File fields every lookup asks for.
	driveObjectFields = "id,name,size,createdTime,modifiedTime,appProperties"
	// driveCleanupTimeout bounds the removal of a failed upload, which runs
	// even when the caller's ctx has ended.
	driveCleanupTimeout = 30 * time.Second
	driveRetries        = 4
)

// DriveConfig configures a Google Drive storage. Secrets are plaintext
// here: the config only lives in memory.
type DriveConfig struct {
	// ClientID and ClientSecret are the OAuth client's (required).
	ClientID, ClientSecret string
	// RefreshToken is the user's refresh token from the consent flow
	// (required).
	RefreshToken string
	// FolderID is the folder holding the objects; "" uses a folder named
	// "RahatBack" in the root of My Drive, created by the first Put. With
	// the drive.file scope only folders this app created are reachable.
	FolderID string
	// Endpoint overrides the Drive API base URL (default Google's,
	// "https://www.googleapis.com/drive/v3/"); uploads go to
	// /upload/drive/v3/ on the same host. For tests.
	Endpoint string
	// TokenURL overrides Google's OAuth 2 token endpoint. For tests.
	TokenURL string
	// HTTPClient is the client under the OAuth transport (default
	// http.DefaultClient); its Timeout, if any, bounds whole downloads.
	HTTPClient *http.Client
	// ChunkSize is the resumable-upload chunk in bytes, rounded up to a
	// multiple of 256 KiB; 0 means DefaultDriveChunkSize (8 MiB).
	ChunkSize int
}

// Drive stores objects as files in one Google Drive folder. An object is a
// file named by its whole key ("7/a.sql.zst", slashes included) carrying
// the appProperty rahatbackKey, by which it is found; files without it
// (uploads in progress, anything else in the folder) are not objects.
//
// Drive allows several files with one name: if a crash or a concurrent Put
// leaves two complete files under one key, the one created last is the
// object, and the next Put or Delete of the key removes the others.
type Drive struct {
	srv      *drive.Service
	chunk    int
	folderID string // configured

	mu     sync.Mutex // serializes finding or creating the default folder
	folder string     // resolved folder id
}

var _ Storage = (*Drive)(nil)

// OAuthConfig returns the OAuth 2 client of the Drive consent flow, with
// the drive.file scope (only files this app creates are reachable).
// authURL and tokenURL default to Google's. Ask for a refresh token with
// AuthCodeURL(state, oauth2.AccessTypeOffline, oauth2.ApprovalForce).
func OAuthConfig(clientID, secret, redirectURL, authURL, tokenURL string) *oauth2.Config {
	ep := endpoints.Google
	// Google wants the client credentials in the form; saying so spares
	// oauth2 its probe with Basic auth first.
	ep.AuthStyle = oauth2.AuthStyleInParams
	if authURL != "" {
		ep.AuthURL = authURL
	}
	if tokenURL != "" {
		ep.TokenURL = tokenURL
	}
	return &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		Endpoint:     ep,
		RedirectURL:  redirectURL,
		Scopes:       []string{drive.DriveFileScope},
	}
}

// NewDrive returns a Drive for cfg. It does no I/O: a bad refresh token or
// an unreachable Google shows in the first call (see Probe). ctx only
// carries values (such as an oauth2.HTTPClient); its cancellation does not
// reach the returned Drive. It returns an error for a missing client id,
// secret or refresh token, a negative ChunkSize or a malformed Endpoint.
func NewDrive(ctx context.Context, cfg DriveConfig) (*Drive, error) {
	switch {
	case cfg.ClientID == "":
		return nil, errors.New("storage: drive: client id missing")
	case cfg.ClientSecret == "":
		return nil, errors.New("storage: drive: client secret missing")
	case cfg.RefreshToken == "":
		return nil, errors.New("storage: drive: refresh token missing")
	case cfg.ChunkSize < 0:
		return nil, fmt.Errorf("storage: drive: negative chunk size %d", cfg.ChunkSize)
	}
	chunk := cfg.ChunkSize
	if chunk == 0 {
		chunk = DefaultDriveChunkSize
	}
	if r := chunk % googleapi.MinUploadChunkSize; r != 0 {
		chunk += googleapi.MinUploadChunkSize - r
	}

	base := cfg.HTTPClient
	if base == nil {
		base = http.DefaultClient
	}
	// The token source refreshes for the Drive's whole life, so it must not
	// die with the constructor's (often request-scoped) ctx.
	tctx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, base)
	ts := OAuthConfig(cfg.ClientID, cfg.ClientSecret, "", "", cfg.TokenURL).
		TokenSource(tctx, &oauth2.Token{RefreshToken: cfg.RefreshToken})
	client := *base
	client.Transport = &oauth2.Transport{Source: ts, Base: base.Transport}

	opts := []option.ClientOption{option.WithHTTPClient(&client)}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || !u.IsAbs() || u.Host == "" {
			return nil, fmt.Errorf("storage: drive: malformed endpoint %q", cfg.Endpoint)
		}
		ep := cfg.Endpoint
		if !strings.HasSuffix(ep, "/") {
			ep += "/"
		}
		opts = append(opts, option.WithEndpoint(ep))
	}
	srv, err := drive.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage: drive: %w", err)
	}
	srv.UserAgent = "rahatback"
	return &Drive{srv: srv, chunk: chunk, folderID: cfg.FolderID}, nil
}

// driveQuote quotes s as a string of Drive's query language.
func driveQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// driveIndex is the rahatbackKey value of key: the key itself, or for a
// key too long for one appProperty, "sha256:" and its digest. The file
// name, always the whole key, decides; the index only finds candidates.
func driveIndex(key string) string {
	// The index is stored under both property names; the longer bounds it.
	if max(len(driveKeyProp), len(drivePartialProp))+len(key) <= driveMaxProp {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// driveIsObject reports whether f is the complete object of its name.
func driveIsObject(f *drive.File) bool {
	v, ok := f.AppProperties[driveKeyProp]
	return ok && CheckKey(f.Name) == nil && v == driveIndex(f.Name)
}

func driveStatus(err error) int {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}

// driveRetryable reports whether Google asks to retry: 429, 5xx, or a 403
// rate limit.
func driveRetryable(err error) bool {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return false
	}
	if ge.Code == http.StatusTooManyRequests || ge.Code >= 500 {
		return true
	}
	if ge.Code == http.StatusForbidden {
		for _, e := range ge.Errors {
			if e.Reason == "rateLimitExceeded" || e.Reason == "userRateLimitExceeded" {
				return true
			}
		}
	}
	return false
}

// driveRetry runs an idempotent call, retrying with backoff what Google asks to
// retry (uploads retry their chunks inside the client library).
func driveRetry[T any](ctx context.Context, call func() (T, error)) (T, error) {
	pause := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		v, err := call()
		if err == nil || attempt == driveRetries || !driveRetryable(err) {
			return v, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
		pause *= 2
	}
}

// ctxErr prefers ctx's error to err, which is then usually its symptom.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// dir returns the folder of the objects. When none is configured it finds
// the "RahatBack" folder in the root (the oldest, should there be several)
// and, if create, makes it; without create a missing folder gives "".
func (d *Drive) dir(ctx context.Context, create bool) (string, error) {
	if d.folderID != "" {
		return d.folderID, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.folder != "" {
		return d.folder, nil
	}
	q := "name = " + driveQuote(DriveFolderName) + " and mimeType = " + driveQuote(driveFolderMime) +
		" and 'root' in parents and trashed = false"
	var found []*drive.File
	err := d.srv.Files.List().Q(q).PageSize(100).Fields("nextPageToken,files(id,createdTime)").
		Pages(ctx, func(l *drive.FileList) error { found = append(found, l.Files...); return nil })
	if err != nil {
		return "", fmt.Errorf("find folder %q: %w", DriveFolderName, ctxErr(ctx, err))
	}
	if len(found) > 0 {
		slices.SortFunc(found, driveOlderFirst)
		d.folder = found[0].Id
		return d.folder, nil
	}
	if !create {
		return "", nil
	}
	f, err := d.srv.Files.Create(&drive.File{Name: DriveFolderName, MimeType: driveFolderMime, Parents: []string{"root"}}).
		Fields("id").Context(ctx).Do()
	if err != nil {
		return "", fmt.Errorf("create folder %q: %w", DriveFolderName, ctxErr(ctx, err))
	}
	d.folder = f.Id
	return d.folder, nil
}

func driveTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// driveOlderFirst orders files by creation, then id.
func driveOlderFirst(a, b *drive.File) int {
	if c := driveTime(a.CreatedTime).Compare(driveTime(b.CreatedTime)); c != 0 {
		return c
	}
	return strings.Compare(a.Id, b.Id)
}

// list returns the files in folder matching the extra query q ("" = all).
func (d *Drive) list(ctx context.Context, folder, q string) ([]*drive.File, error) {
	full := driveQuote(folder) + " in parents and trashed = false and mimeType != " + driveQuote(driveFolderMime)
	if q != "" {
		full = q + " and " + full
	}
	var files []*drive.File
	token := ""
	for {
		l, err := driveRetry(ctx, func() (*drive.FileList, error) {
			return d.srv.Files.List().Q(full).PageSize(1000).PageToken(token).
				Fields(googleapi.Field("nextPageToken,files(" + driveObjectFields + ")")).Context(ctx).Do()
		})
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		files = append(files, l.Files...)
		if l.NextPageToken == "" {
			return files, nil
		}
		token = l.NextPageToken
	}
}

// find returns the complete files under key, newest (the object) first.
func (d *Drive) find(ctx context.Context, key string) ([]*drive.File, error) {
	folder, err := d.dir(ctx, false)
	if err != nil || folder == "" {
		return nil, err
	}
	q := "appProperties has { key=" + driveQuote(driveKeyProp) + " and value=" + driveQuote(driveIndex(key)) + " }"
	files, err := d.list(ctx, folder, q)
	if err != nil {
		return nil, err
	}
	files = slices.DeleteFunc(files, func(f *drive.File) bool { return f.Name != key || !driveIsObject(f) })
	slices.SortFunc(files, func(a, b *drive.File) int { return driveOlderFirst(b, a) })
	return files, nil
}

// remove deletes file id, even after ctx has ended; a file already gone
// is no error.
func (d *Drive) remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), driveCleanupTimeout)
	defer cancel()
	_, err := driveRetry(ctx, func() (struct{}, error) {
		return struct{}{}, d.srv.Files.Delete(id).Context(ctx).Do()
	})
	if driveStatus(err) == http.StatusNotFound {
		return nil
	}
	return err
}

// driveReader counts and hashes what the upload reads and stops at ctx's
// end. err keeps the reader's own error, which the client library may wrap.
type driveReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
	md5 hash.Hash
	err error
}

func (dr *driveReader) Read(p []byte) (int, error) {
	if err := dr.ctx.Err(); err != nil {
		dr.err = err
		return 0, err
	}
	n, err := dr.r.Read(p)
	dr.n += int64(n)
	dr.md5.Write(p[:n])
	if err != nil && err != io.EOF {
		dr.err = err
	}
	return n, err
}

// Put implements Storage. It streams r with Drive's resumable upload in
// chunks of the configured size (one chunk buffered in memory; a failed
// chunk is retried by the client library), as a file named
// ".<base>.partial-<random>" marked rahatbackPartial, so no lookup sees it.
// Once the upload is complete and its size and MD5 match what was read,
// one metadata update renames it to key and marks it rahatbackKey; then
// the files the key named before are deleted. On failure the partial file,
// if Drive created one, is deleted (even after ctx has ended). Errors wrap
// ErrBadKey, the reader's error, ctx.Err() or Google's *googleapi.Error.
func (d *Drive) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := CheckKey(key); err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) {
		return 0, fmt.Errorf("storage: put %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	folder, err := d.dir(ctx, true)
	if err != nil {
		return fail(err)
	}
	dirName, base := path.Split(key)
	tmp, err := tempName(base)
	if err != nil {
		return fail(err)
	}
	tmp = dirName + tmp
	idx := driveIndex(key)

	dr := &driveReader{ctx: ctx, r: r, md5: md5.New()}
	meta := &drive.File{
		Name:          tmp,
		MimeType:      driveObjectMime,
		Parents:       []string{folder},
		AppProperties: map[string]string{drivePartialProp: idx},
	}
	f, err := d.srv.Files.Create(meta).
		Media(dr, googleapi.ChunkSize(d.chunk), googleapi.ContentType(driveObjectMime)).
		Fields("id,size,md5Checksum").Context(ctx).Do()
	if err != nil {
		// The upload may have completed on Drive's side with the answer
		// lost: remove whatever carries the temporary name.
		d.removeByName(ctx, folder, tmp)
		switch {
		case dr.err != nil && !errors.Is(err, dr.err):
			return fail(fmt.Errorf("%w (%v)", dr.err, err))
		case dr.err != nil:
			return fail(err)
		}
		return fail(ctxErr(ctx, err))
	}
	discard := func(err error) (int64, error) {
		if rerr := d.remove(ctx, f.Id); rerr != nil {
			err = fmt.Errorf("%w; and removing the partial file %s: %v", err, f.Id, rerr)
		}
		return fail(err)
	}
	if f.Size != dr.n {
		return discard(fmt.Errorf("drive stored %d bytes, %d were read", f.Size, dr.n))
	}
	if sum := hex.EncodeToString(dr.md5.Sum(nil)); f.Md5Checksum != "" && f.Md5Checksum != sum {
		return discard(fmt.Errorf("drive stored md5 %s, the data read has %s", f.Md5Checksum, sum))
	}
	// The last chance to honour a cancellation: after the update the
	// object is visible.
	if err := ctx.Err(); err != nil {
		return discard(err)
	}
	_, err = d.srv.Files.Update(f.Id, &drive.File{
		Name:          key,
		AppProperties: map[string]string{driveKeyProp: idx},
		NullFields:    []string{"AppProperties." + drivePartialProp},
	}).Fields("id").Context(ctx).Do()
	if err != nil {
		return discard(ctxErr(ctx, err))
	}
	d.prune(ctx, key)
	return dr.n, nil
}

// prune deletes every complete file under key but the newest, which is the
// object now. It runs after a successful Put, which it cannot fail: a file
// it misses stays hidden behind the newer one until the next Put or Delete.
func (d *Drive) prune(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), driveCleanupTimeout)
	defer cancel()
	files, err := d.find(ctx, key)
	if err != nil {
		return
	}
	for _, f := range files[min(1, len(files)):] {
		d.remove(ctx, f.Id)
	}
}

// removeByName deletes the files in folder named name, best effort.
func (d *Drive) removeByName(ctx context.Context, folder, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), driveCleanupTimeout)
	defer cancel()
	files, err := d.list(ctx, folder, "name = "+driveQuote(name))
	if err != nil {
		return
	}
	for _, f := range files {
		d.remove(ctx, f.Id)
	}
}

// object returns the object under key, or an error wrapping ErrNotFound.
func (d *Drive) object(ctx context.Context, op, key string) (*drive.File, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: %s %q: %w", op, key, err)
	}
	files, err := d.find(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("storage: %s %q: %w", op, key, err)
	}
	if len(files) == 0 {
		return nil, notFound(op, key, nil)
	}
	return files[0], nil
}

// Get implements Storage. It downloads with files.get alt=media, from
// offset with a Range header. ctx governs the whole download: the reader
// fails once ctx ends.
func (d *Drive) Get(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	if offset < 0 {
		if err := CheckKey(key); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("storage: get %q: %w: %d", key, ErrBadOffset, offset)
	}
	f, err := d.object(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	if offset > f.Size {
		return nil, fmt.Errorf("storage: get %q: %w: %d > size %d", key, ErrBadOffset, offset, f.Size)
	}
	if offset == f.Size {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	call := d.srv.Files.Get(f.Id).Context(ctx)
	if offset > 0 {
		call.Header().Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	res, err := driveRetry(ctx, func() (*http.Response, error) { return call.Download() })
	switch driveStatus(err) {
	case 0:
	case http.StatusNotFound: // deleted since the lookup
		return nil, notFound("get", key, err)
	case http.StatusRequestedRangeNotSatisfiable: // replaced by a shorter one
		return nil, fmt.Errorf("storage: get %q: %w: %w", key, ErrBadOffset, err)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get %q: %w", key, ctxErr(ctx, err))
	}
	if offset > 0 {
		switch res.StatusCode {
		case http.StatusPartialContent:
			if cr := res.Header.Get("Content-Range"); !strings.HasPrefix(cr, "bytes "+strconv.FormatInt(offset, 10)+"-") {
				res.Body.Close()
				return nil, fmt.Errorf("storage: get %q: drive answered range %q for offset %d", key, cr, offset)
			}
		default: // the whole file despite the Range header
			if _, err := io.CopyN(io.Discard, res.Body, offset); err != nil {
				res.Body.Close()
				return nil, fmt.Errorf("storage: get %q: skip to offset: %w", key, err)
			}
		}
	}
	return res.Body, nil
}

// Stat implements Storage. ModTime is Drive's modifiedTime.
func (d *Drive) Stat(ctx context.Context, key string) (Object, error) {
	f, err := d.object(ctx, "stat", key)
	if err != nil {
		return Object{}, err
	}
	return Object{Key: key, Size: f.Size, ModTime: driveTime(f.ModifiedTime)}, nil
}

// Delete implements Storage. It deletes (not trashes) every complete file
// under key.
func (d *Drive) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	files, err := d.find(ctx, key)
	if err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	gone := 0
	for _, f := range files {
		_, err := driveRetry(ctx, func() (struct{}, error) {
			return struct{}{}, d.srv.Files.Delete(f.Id).Context(ctx).Do()
		})
		switch {
		case driveStatus(err) == http.StatusNotFound:
			gone++
		case err != nil:
			return fmt.Errorf("storage: delete %q: %w", key, ctxErr(ctx, err))
		}
	}
	if gone == len(files) {
		return notFound("delete", key, nil)
	}
	return nil
}

// List implements Storage. Drive cannot search by prefix, so it lists the
// whole folder (1000 files a page) and filters here.
func (d *Drive) List(ctx context.Context, prefix string) ([]Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	folder, err := d.dir(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	objs := []Object{}
	if folder == "" {
		return objs, nil
	}
	files, err := d.list(ctx, folder, "")
	if err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	newest := map[string]*drive.File{}
	for _, f := range files {
		if !strings.HasPrefix(f.Name, prefix) || !driveIsObject(f) {
			continue
		}
		if cur, ok := newest[f.Name]; !ok || driveOlderFirst(cur, f) < 0 {
			newest[f.Name] = f
		}
	}
	for key, f := range newest {
		objs = append(objs, Object{Key: key, Size: f.Size, ModTime: driveTime(f.ModifiedTime)})
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// CleanPartials deletes the partial files of Puts that died between the
// end of their upload and making it visible (a crash in that window; a
// failed Put removes its own), once they are older than olderThan: another
// agent may share the folder. It returns how many files it deleted; on
// error, the count so far.
func (d *Drive) CleanPartials(ctx context.Context, olderThan time.Duration) (int, error) {
	folder, err := d.dir(ctx, false)
	if err != nil || folder == "" {
		return 0, err
	}
	files, err := d.list(ctx, folder, "")
	if err != nil {
		return 0, fmt.Errorf("storage: clean partials: %w", err)
	}
	removed := 0
	cutoff := time.Now().Add(-olderThan)
	for _, f := range files {
		if _, partial := f.AppProperties[drivePartialProp]; !partial || driveTime(f.CreatedTime).After(cutoff) {
			continue
		}
		if err := d.remove(ctx, f.Id); err != nil {
			return removed, fmt.Errorf("storage: clean partials: %w", err)
		}
		removed++
	}
	return removed, nil
}

// Probe writes a small object under "rahatback-probe/", reads it back,
// compares and deletes it. The error says which step failed.
func (d *Drive) Probe(ctx context.Context) error {
	var rnd [8]byte
	data := make([]byte, 1024)
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	rand.Read(data)
	key := "rahatback-probe/" + hex.EncodeToString(rnd[:])
	if _, err := d.Put(ctx, key, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("storage: drive probe: write: %w", err)
	}
	deleted := false
	defer func() {
		if !deleted {
			d.Delete(context.WithoutCancel(ctx), key)
		}
	}()
	rc, err := d.Get(ctx, key, 0)
	if err != nil {
		return fmt.Errorf("storage: drive probe: read: %w", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return fmt.Errorf("storage: drive probe: read: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("storage: drive probe: read back different bytes")
	}
	deleted = true
	if err := d.Delete(ctx, key); err != nil {
		return fmt.Errorf("storage: drive probe: delete: %w", err)
	}
	return nil
}
