package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rahatback/rahatback/engines"
)

// timeNow is time.Now; tests move the clock.
var timeNow = time.Now

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string
	CSRF    string
	Email   string
	Message string            // an error or notice for the whole page or form
	Errors  map[string]string // per field, from the API
	Form    map[string]string // values to show again in a form
	Data    any
}

func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" || name == "partials" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes page name with the layout.
func (wb *Web) render(w http.ResponseWriter, _ *http.Request, code int, name string, s *session, v view) {
	t := wb.pages[name]
	if t == nil {
		wb.log.Error("dashboard: no template", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v.CSRF, v.Email = s.CSRF, s.Email
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		wb.log.Error("dashboard: rendering", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprint(w, buf.String())
}

var funcs = template.FuncMap{
	// when shows t in UTC; the browser rewrites it in its own time zone.
	"when": func(t any) template.HTML {
		var tt time.Time
		switch v := t.(type) {
		case time.Time:
			tt = v
		case *time.Time:
			if v == nil {
				return "—"
			}
			tt = *v
		default:
			return "—"
		}
		if tt.IsZero() {
			return "—"
		}
		return template.HTML(fmt.Sprintf(`<time datetime="%s">%s</time>`,
			tt.UTC().Format(time.RFC3339), tt.UTC().Format("2006-01-02 15:04 UTC")))
	},
	// whenSec is when, to the second (the audit log's entries).
	"whenSec": func(t time.Time) template.HTML {
		if t.IsZero() {
			return "—"
		}
		return template.HTML(fmt.Sprintf(`<time datetime="%s" data-seconds>%s</time>`,
			t.UTC().Format(time.RFC3339), t.UTC().Format("2006-01-02 15:04:05 UTC")))
	},
	// bytes is a size (an int64, or an *int64 that may be nil).
	"bytes": func(n any) string {
		switch v := n.(type) {
		case *int64:
			if v != nil {
				return formatBytes(*v)
			}
		case int64:
			return formatBytes(v)
		case int:
			return formatBytes(int64(v))
		}
		return "—"
	},
	"backupType": backupTypeLabel,
	// ratio is a dedup ratio as "×81.3".
	"ratio": func(r *float64) string {
		if r == nil {
			return "—"
		}
		return fmt.Sprintf("×%.1f", *r)
	},
	"shortID": shortID,
	"secs": func(d *float64) string {
		if d == nil {
			return "—"
		}
		return formatSeconds(*d)
	},
	"str": func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	},
	"active": func(status string) bool { return status == "queued" || status == "running" },
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	// eq2 compares an id with an optional id.
	"eq2":          func(a string, b *string) bool { return b != nil && a == *b },
	"add":          func(a, b int) int { return a + b },
	"rulesSummary": rulesSummary,
	"channelType": func(t string) string {
		for _, c := range channelTypes {
			if c.Value == t {
				return c.Label
			}
		}
		return t
	},
	// objectURL is the dashboard page of an audit entry's object, or ""
	// for objects without one.
	"objectURL": func(objectType, id string) string {
		if id == "" {
			return ""
		}
		switch objectType {
		case "backup":
			return "/history/" + url.PathEscape(id)
		case "job":
			return "/jobs/" + url.PathEscape(id)
		case "database":
			return "/databases/" + url.PathEscape(id) + "/edit"
		case "channel":
			return "/channels/" + url.PathEscape(id) + "/edit"
		}
		return ""
	},
	"pageURL": func(q url.Values, page int) string {
		c := url.Values{}
		for k, v := range q {
			c[k] = v
		}
		c.Set("page", strconv.Itoa(page))
		return "?" + c.Encode()
	},
}

// backupTypeLabel names a backup's type (the API's backupType: full,
// incremental or differential); a single-object backup is a Full.
func backupTypeLabel(t string) string {
	switch t {
	case "incremental":
		return "Incremental"
	case "differential":
		return "Differential"
	}
	return "Full"
}

// shortID is the first 8 characters of an id, enough to tell backups of
// a job apart.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// chainReason is how retention says a backup is kept for another's chain
// (retention.Plan).
const chainReason = "needed by the chain of "

// chainOf is the id of the backup whose chain a retention reason keeps a
// backup for, or "" for another reason.
func chainOf(reason string) string {
	id, ok := strings.CutPrefix(reason, chainReason)
	if !ok {
		return ""
	}
	return strings.TrimSpace(id)
}

// formatBytes is n in B, KB, MB, GB or TB (powers of 1024).
func formatBytes(n int64) string {
	v := float64(n)
	units := []string{"B", "KB", "MB", "GB", "TB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// formatSeconds is s as "4.2 s", "3m 05s" or "2h 07m".
func formatSeconds(s float64) string {
	switch {
	case s < 60:
		return fmt.Sprintf("%.1f s", s)
	case s < 3600:
		return fmt.Sprintf("%dm %02ds", int(s)/60, int(s)%60)
	default:
		return fmt.Sprintf("%dh %02dm", int(s)/3600, int(s)%3600/60)
	}
}

// API shapes, as the REST API answers them (SPEC §3).
type (
	agentJSON struct {
		ID         string     `json:"id"`
		Name       string     `json:"name"`
		Status     string     `json:"status"`
		Hostname   string     `json:"hostname"`
		OS         string     `json:"os"`
		Version    string     `json:"version"`
		LastSeenAt *time.Time `json:"lastSeenAt"`
		IsLocal    bool       `json:"isLocal"`
	}
	databaseJSON struct {
		ID          string  `json:"id"`
		Name        string  `json:"name"`
		Type        string  `json:"type"`
		Host        string  `json:"host"`
		Port        int     `json:"port"`
		Username    string  `json:"username"`
		Database    string  `json:"database"`
		AgentID     *string `json:"agentId"`
		HasPassword bool    `json:"hasPassword"`
		AuthSource  *string `json:"authSource"`
		ReplicaSet  *string `json:"replicaSet"`
		TLS         bool    `json:"tls"`
		Instance    string  `json:"instance"`
		Encrypt     string  `json:"encrypt"`
	}
	storageJSON struct {
		ID               string  `json:"id"`
		Name             string  `json:"name"`
		StorageType      string  `json:"storageType"`
		IsDefault        bool    `json:"isDefault"`
		S3AccessKeyID    *string `json:"s3AccessKeyId"`
		S3Region         *string `json:"s3Region"`
		S3Bucket         *string `json:"s3Bucket"`
		S3Endpoint       *string `json:"s3Endpoint"`
		S3ForcePathStyle bool    `json:"s3ForcePathStyle"`
		S3Prefix         *string `json:"s3Prefix"`
		GDFolderID       *string `json:"gdFolderId"`
		GDConnected      bool    `json:"gdConnected"`
	}
	jobJSON struct {
		ID                     string          `json:"id"`
		DatabaseID             string          `json:"databaseId"`
		Name                   string          `json:"name"`
		ScheduleType           string          `json:"scheduleType"`
		CronExpression         *string         `json:"cronExpression"`
		AdvancedScheduleConfig json.RawMessage `json:"advancedScheduleConfig"`
		Timezone               string          `json:"timezone"`
		BackupType             string          `json:"backupType"`
		Compression            string          `json:"compression"`
		IsEncrypted            bool            `json:"isEncrypted"`
		EncryptionRecipients   []string        `json:"encryptionRecipients"`
		AutoVerifyAfterBackup  bool            `json:"autoVerifyAfterBackup"`
		VerificationLevel      string          `json:"verificationLevel"`
		VerificationDatabaseID *string         `json:"verificationDatabaseId"`
		VerifySchedule         *string         `json:"verifySchedule"`
		StorageType            string          `json:"storageType"`
		CloudStorageID         *string         `json:"cloudStorageId"`
		RetentionDays          int             `json:"retentionDays"`
		KeepLast               *int            `json:"keepLast"`
		KeepDaily              *int            `json:"keepDaily"`
		KeepWeekly             *int            `json:"keepWeekly"`
		KeepMonthly            *int            `json:"keepMonthly"`
		IsActive               bool            `json:"isActive"`
		NextRunAt              *time.Time      `json:"nextRunAt"`
		NotificationRules      *rulesJSON      `json:"notificationRules"`
	}
	checkJSON struct {
		Check   string `json:"check"`
		Passed  bool   `json:"passed"`
		Message string `json:"message"`
	}
	runJSON struct {
		ID            string     `json:"id"`
		BackupJobID   string     `json:"backupJobId"`
		DatabaseID    string     `json:"databaseId"`
		AgentID       *string    `json:"agentId"`
		Status        string     `json:"status"`
		QueuedAt      time.Time  `json:"queuedAt"`
		StartedAt     *time.Time `json:"startedAt"`
		CompletedAt   *time.Time `json:"completedAt"`
		Duration      *float64   `json:"duration"`
		FileName      *string    `json:"fileName"`
		FileSize      *int64     `json:"fileSize"`
		StorageType   string     `json:"storageType"`
		ChecksumValue *string    `json:"checksumValue"`
		IsEncrypted   bool       `json:"isEncrypted"`
		ErrorMessage  *string    `json:"errorMessage"`
		ScheduledFor  *time.Time `json:"scheduledFor"`
		ExpireReason  *string    `json:"expireReason"`
		ExpireError   *string    `json:"expireError"`
		RawSize       *int64     `json:"rawSize"` // the dump's logical size
		// Chains: backupType is full, incremental or differential; a
		// chunked backup (an incremental or differential job's) has its
		// parent, its chain's full (base), the earlier backups it needs,
		// the dump bytes it stored that were not there before (newBytes)
		// and rawSize over newBytes (dedupRatio, null when nothing new).
		BackupType string   `json:"backupType"`
		Chunked    bool     `json:"chunked"`
		ParentID   *string  `json:"parentId"`
		BaseID     *string  `json:"baseId"`
		DependsOn  []string `json:"dependsOn"`
		NewBytes   *int64   `json:"newBytes"`
		DedupRatio *float64 `json:"dedupRatio"`
		// Only GET /v1/backups/history/{id} is read for these.
		// AffectedBackups: what a failed verification showed unreadable.
		AffectedBackups   []string        `json:"affectedBackups"`
		ChecksumAlgorithm *string         `json:"checksumAlgorithm"`
		Compression       string          `json:"compression"`
		ExpiredAt         *time.Time      `json:"expiredAt"`
		PurgedAt          *time.Time      `json:"purgedAt"`
		Manifest          json.RawMessage `json:"manifest"`
		Progress          *struct {
			Step    string `json:"step"`
			Bytes   int64  `json:"bytes"`
			Percent int    `json:"percent"`
		} `json:"progress"`
		VerificationStatus string `json:"verificationStatus"`
		VerificationResult *struct {
			OverallStatus      string      `json:"overallStatus"`
			VerificationMethod string      `json:"verificationMethod"`
			Checks             []checkJSON `json:"checks"`
		} `json:"verificationResult"`
		LastRestoreStatus *string `json:"lastRestoreStatus"`
	}
	restoreJSON struct {
		ID               string     `json:"id"`
		BackupHistoryID  string     `json:"backupHistoryId"`
		TargetDatabaseID string     `json:"targetDatabaseId"`
		Status           string     `json:"status"`
		QueuedAt         time.Time  `json:"queuedAt"`
		StartedAt        *time.Time `json:"startedAt"`
		CompletedAt      *time.Time `json:"completedAt"`
		Duration         *float64   `json:"duration"`
		ErrorMessage     *string    `json:"errorMessage"`
		Progress         *struct {
			Step    string `json:"step"`
			Percent int    `json:"percent"`
		} `json:"progress"`
	}
	// rulesJSON is GET /v1/notification-rules, and a job's
	// notificationRules (without agentOfflineMinutes).
	rulesJSON struct {
		BackupFailed        bool `json:"backupFailed"`
		BackupSkipped       bool `json:"backupSkipped"`
		BackupSucceeded     bool `json:"backupSucceeded"`
		VerificationFailed  bool `json:"verificationFailed"`
		RestoreFinished     bool `json:"restoreFinished"`
		AgentOfflineMinutes *int `json:"agentOfflineMinutes,omitempty"`
		RPOHours            *int `json:"rpoHours,omitempty"`
	}
	channelJSON struct {
		ID            string     `json:"id"`
		Name          string     `json:"name"`
		Type          string     `json:"type"`
		Enabled       bool       `json:"enabled"`
		Address       *string    `json:"address"`
		URL           *string    `json:"url"` // scheme and host only
		HasSecret     bool       `json:"hasSecret"`
		LastSuccessAt *time.Time `json:"lastSuccessAt"`
		LastError     *string    `json:"lastError"`
		LastErrorAt   *time.Time `json:"lastErrorAt"`
		CreatedAt     time.Time  `json:"createdAt"`
	}
	auditJSON struct {
		ID         string    `json:"id"`
		At         time.Time `json:"at"`
		Action     string    `json:"action"`
		ObjectType string    `json:"objectType"`
		ObjectID   string    `json:"objectId"`
		IP         string    `json:"ip"`
		UserAgent  string    `json:"userAgent"`
		Outcome    string    `json:"outcome"`
		StatusCode int       `json:"statusCode"`
		Detail     string    `json:"detail"`
		RequestID  string    `json:"requestId"`
	}
	// manifestJSON is what the run page shows of a backup's manifest.
	manifestJSON struct {
		Engine        string `json:"engine"`
		ServerVersion string `json:"serverVersion"`
		ToolVersion   string `json:"toolVersion"`
		Database      string `json:"database"`
		Format        string `json:"format"`
		Consistency   string `json:"consistency"`
		Tables        []struct {
			Schema string `json:"schema"`
			Name   string `json:"name"`
			Rows   int64  `json:"rows"`
		} `json:"tables"`
		Chain *chainJSON `json:"chain"`
	}
	// chainJSON is a chunked backup's manifest chain: what it stored and
	// what it needs; fallback says why a full was stored when an
	// incremental or differential was asked for.
	chainJSON struct {
		Type        string   `json:"type"`
		Parent      string   `json:"parent"`
		Base        string   `json:"base"`
		DependsOn   []string `json:"dependsOn"`
		Chunks      int      `json:"chunks"`
		NewChunks   int      `json:"newChunks"`
		NewRawBytes int64    `json:"newRawBytes"`
		Packs       int      `json:"packs"`
		PackBytes   int64    `json:"packBytes"`
		IndexSize   int64    `json:"indexSize"`
		DumpSHA256  string   `json:"dumpSha256"`
		Fallback    string   `json:"fallback"`
	}
	list[T any] struct {
		Results      []T   `json:"results"`
		Page         int   `json:"page"`
		TotalPages   int   `json:"totalPages"`
		TotalResults int64 `json:"totalResults"`
	}
)

// --- sign-in, registration, sign-out

// safeNext is where to go after signing in: a path on this site, else
// /agents. Control characters and backslashes are refused outright:
// browsers drop tabs and newlines from URLs and read \ as /, which would
// turn "/<TAB>/evil.example" into another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return "/agents"
	}
	for i := 0; i < len(next); i++ {
		if c := next[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return "/agents"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return "/agents"
	}
	return next
}

func (wb *Web) loginPage(w http.ResponseWriter, r *http.Request, s *session) error {
	if s.signedIn() {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return nil
	}
	wb.render(w, r, http.StatusOK, "login", s, view{Title: "Sign in", Form: map[string]string{"next": r.URL.Query().Get("next")}})
	return nil
}

func (wb *Web) registerPage(w http.ResponseWriter, r *http.Request, s *session) error {
	wb.render(w, r, http.StatusOK, "register", s, view{Title: "Create your account", Form: map[string]string{}})
	return nil
}

func (wb *Web) login(w http.ResponseWriter, r *http.Request, s *session) error {
	return wb.signIn(w, r, s, "login", "/v1/auth/login", map[string]string{
		"email": r.PostFormValue("email"), "password": r.PostFormValue("password")})
}

func (wb *Web) register(w http.ResponseWriter, r *http.Request, s *session) error {
	return wb.signIn(w, r, s, "register", "/v1/auth/register", map[string]string{
		"email": r.PostFormValue("email"), "password": r.PostFormValue("password"), "name": r.PostFormValue("name")})
}

// signIn posts the credentials to the API; on success the session gets the
// tokens and a new CSRF token, and the browser goes on. An API error is
// shown on the form, next to its field.
func (wb *Web) signIn(w http.ResponseWriter, r *http.Request, s *session, page, apiPath string, body map[string]string) error {
	var t tokens
	err := wb.call(r.Context(), r, "", "POST", apiPath, body, &t)
	var ae *apiError
	if errors.As(err, &ae) && ae.Code < 500 {
		form := map[string]string{"email": body["email"], "name": body["name"], "next": r.PostFormValue("next")}
		title := "Sign in"
		if page == "register" {
			title = "Create your account"
		}
		wb.render(w, r, ae.Code, page, s, view{Title: title, Message: ae.Message, Errors: ae.Fields, Form: form})
		return nil
	}
	if err != nil {
		return err
	}
	s.setTokens(t)
	s.CSRF = newCSRF()
	if err := wb.saveSession(w, s); err != nil {
		return err
	}
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
	return nil
}

// logout revokes the session's refresh token family and forgets the session.
func (wb *Web) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	if s.signedIn() {
		if err := wb.call(r.Context(), r, "", "POST", "/v1/auth/logout", map[string]string{"refreshToken": s.Refresh}, nil); err != nil {
			wb.log.Warn("dashboard sign-out: revoking the refresh token", "err", err)
		}
	}
	*s = session{CSRF: newCSRF()}
	if err := wb.saveSession(w, s); err != nil {
		return err
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

// --- agents

func (wb *Web) agentsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var agents list[agentJSON]
	if err := wb.get(w, r, s, "/v1/agents", &agents); err != nil {
		return err
	}
	wb.render(w, r, http.StatusOK, "agents", s, view{Title: "Agents", Nav: "agents", Data: agents.Results})
	return nil
}

// --- databases

func (wb *Web) databasesPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var dbs list[databaseJSON]
	var agents list[agentJSON]
	if err := wb.get(w, r, s, "/v1/databases", &dbs); err != nil {
		return err
	}
	if err := wb.get(w, r, s, "/v1/agents", &agents); err != nil {
		return err
	}
	names := map[string]string{}
	for _, a := range agents.Results {
		names[a.ID] = a.Name
	}
	wb.render(w, r, http.StatusOK, "databases", s, view{Title: "Databases", Nav: "databases",
		Data: map[string]any{"Databases": dbs.Results, "AgentNames": names}})
	return nil
}

func (wb *Web) databaseForm(w http.ResponseWriter, r *http.Request, s *session) error {
	var d databaseJSON
	title := "Add a database"
	if id := chi.URLParam(r, "id"); id != "" {
		if err := wb.get(w, r, s, "/v1/databases/"+url.PathEscape(id), &d); err != nil {
			return err
		}
		title = "Edit " + d.Name
	} else {
		first := engines.Specs()[0]
		d.Type, d.Port, d.Host = first.Type, first.DefaultPort, "127.0.0.1"
	}
	var agents list[agentJSON]
	if err := wb.get(w, r, s, "/v1/agents", &agents); err != nil {
		return err
	}
	wb.render(w, r, http.StatusOK, "database_form", s, view{Title: title, Nav: "databases",
		Data: map[string]any{"DB": d, "Agents": agents.Results, "Engines": engines.Specs()}})
	return nil
}

// --- cloud storage

func (wb *Web) storagePage(w http.ResponseWriter, r *http.Request, s *session) error {
	var st list[storageJSON]
	if err := wb.get(w, r, s, "/v1/cloud-storage", &st); err != nil {
		return err
	}
	wb.render(w, r, http.StatusOK, "storage", s, view{Title: "Cloud storage", Nav: "storage",
		Data: map[string]any{"Storages": st.Results, "Connected": r.URL.Query().Get("connected")}})
	return nil
}

// googleCallback completes the Drive consent in the API (the state in the
// URL names the user) and shows the storage list, or the API's error.
func (wb *Web) googleCallback(w http.ResponseWriter, r *http.Request, _ *session) error {
	var c storageJSON
	if err := wb.call(r.Context(), r, "", "GET", GoogleCallbackPath+"?"+r.URL.RawQuery, nil, &c); err != nil {
		return err
	}
	http.Redirect(w, r, "/storage?connected="+url.QueryEscape(c.Name), http.StatusSeeOther)
	return nil
}

func (wb *Web) storageForm(w http.ResponseWriter, r *http.Request, s *session) error {
	var c storageJSON
	title := "Add S3 storage"
	if id := chi.URLParam(r, "id"); id != "" {
		if err := wb.get(w, r, s, "/v1/cloud-storage/"+url.PathEscape(id), &c); err != nil {
			return err
		}
		title = "Edit " + c.Name
	} else {
		c.StorageType = "s3"
	}
	wb.render(w, r, http.StatusOK, "storage_form", s, view{Title: title, Nav: "storage", Data: c})
	return nil
}

// --- jobs

// jobRow is a job with what the list shows beside it.
type jobRow struct {
	Job      jobJSON
	Database string
	LastRun  *runJSON
}

func (wb *Web) jobsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var jobs list[jobJSON]
	if err := wb.get(w, r, s, "/v1/backups/jobs", &jobs); err != nil {
		return err
	}
	names, err := wb.databaseNames(w, r, s)
	if err != nil {
		return err
	}
	rows := make([]jobRow, 0, len(jobs.Results))
	for _, j := range jobs.Results {
		row := jobRow{Job: j, Database: names[j.DatabaseID]}
		var last list[runJSON]
		if err := wb.get(w, r, s, "/v1/backups/history?limit=1&backupJobId="+url.QueryEscape(j.ID), &last); err != nil {
			return err
		}
		if len(last.Results) == 1 {
			row.LastRun = &last.Results[0]
		}
		rows = append(rows, row)
	}
	wb.render(w, r, http.StatusOK, "jobs", s, view{Title: "Backup jobs", Nav: "jobs", Data: rows})
	return nil
}

func (wb *Web) databaseNames(w http.ResponseWriter, r *http.Request, s *session) (map[string]string, error) {
	var dbs list[databaseJSON]
	if err := wb.get(w, r, s, "/v1/databases", &dbs); err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, d := range dbs.Results {
		names[d.ID] = d.Name
	}
	return names, nil
}

func (wb *Web) jobForm(w http.ResponseWriter, r *http.Request, s *session) error {
	j := jobJSON{ScheduleType: "manual", BackupType: "full", Compression: "zstd", VerificationLevel: "BASIC",
		StorageType: "local", RetentionDays: 30, IsActive: true, AutoVerifyAfterBackup: true}
	title := "New backup job"
	if id := chi.URLParam(r, "id"); id != "" {
		if err := wb.get(w, r, s, "/v1/backups/jobs/"+url.PathEscape(id), &j); err != nil {
			return err
		}
		title = "Edit " + j.Name
	}
	var dbs list[databaseJSON]
	var st list[storageJSON]
	if err := wb.get(w, r, s, "/v1/databases", &dbs); err != nil {
		return err
	}
	if err := wb.get(w, r, s, "/v1/cloud-storage", &st); err != nil {
		return err
	}
	if j.DatabaseID == "" {
		if id := r.URL.Query().Get("databaseId"); id != "" {
			j.DatabaseID = id
		} else if len(dbs.Results) > 0 {
			j.DatabaseID = dbs.Results[0].ID
		}
	}
	// A job on the user's defaults starts its own rules from them.
	var defaults rulesJSON
	if err := wb.get(w, r, s, "/v1/notification-rules", &defaults); err != nil {
		return err
	}
	own := defaults
	own.AgentOfflineMinutes = nil
	if j.NotificationRules != nil {
		own = *j.NotificationRules
	}
	wb.render(w, r, http.StatusOK, "job_form", s, view{Title: title, Nav: "jobs",
		Data: map[string]any{"Job": j, "Databases": dbs.Results, "Storages": st.Results, "Advanced": string(j.AdvancedScheduleConfig),
			"Defaults": &defaults, "Rules": own}})
	return nil
}

// jobStats is what the job page says about a job's recent runs.
type jobStats struct {
	Runs         []runJSON
	Finished     int
	Succeeded    int
	SuccessRate  string
	LastGood     *runJSON
	LastGoodAge  string
	Chart        template.HTML
	NextRuns     []time.Time
	DatabaseName string
	Retention    retentionJSON
	ChainKept    int // kept backups that a chain keeps
}

func (wb *Web) jobPage(w http.ResponseWriter, r *http.Request, s *session) error {
	id := url.PathEscape(chi.URLParam(r, "id"))
	var j jobJSON
	if err := wb.get(w, r, s, "/v1/backups/jobs/"+id, &j); err != nil {
		return err
	}
	var runs list[runJSON]
	if err := wb.get(w, r, s, "/v1/backups/history?limit=50&backupJobId="+id, &runs); err != nil {
		return err
	}
	var next struct {
		Runs []time.Time `json:"runs"`
	}
	if err := wb.get(w, r, s, "/v1/backups/jobs/"+id+"/next-runs", &next); err != nil {
		return err
	}
	var retention retentionJSON
	if err := wb.get(w, r, s, "/v1/backups/jobs/"+id+"/retention-preview", &retention); err != nil {
		return err
	}
	names, err := wb.databaseNames(w, r, s)
	if err != nil {
		return err
	}
	st := jobStats{Runs: runs.Results, NextRuns: next.Runs, DatabaseName: names[j.DatabaseID], Retention: retention}
	for _, k := range retention.Keep {
		if k.ForChain() {
			st.ChainKept++
		}
	}
	for i, run := range runs.Results {
		switch run.Status {
		case "success":
			st.Finished++
			st.Succeeded++
			if st.LastGood == nil {
				st.LastGood = &runs.Results[i]
			}
		case "failed", "cancelled", "skipped":
			st.Finished++
		}
	}
	if st.Finished > 0 {
		st.SuccessRate = fmt.Sprintf("%.0f%%", 100*float64(st.Succeeded)/float64(st.Finished))
	}
	if st.LastGood != nil {
		at := st.LastGood.QueuedAt
		if st.LastGood.CompletedAt != nil {
			at = *st.LastGood.CompletedAt
		}
		st.LastGoodAge = formatAge(timeNow().Sub(at))
	}
	st.Chart = chart(runs.Results)
	wb.render(w, r, http.StatusOK, "job", s, view{Title: j.Name, Nav: "jobs", Data: map[string]any{"Job": j, "Stats": st}})
	return nil
}

// retentionJSON is GET /v1/backups/jobs/{id}/retention-preview.
type retentionJSON struct {
	Expire []retentionItem `json:"expire"`
	Keep   []retentionItem `json:"keep"`
}

// An item's needs are the earlier backups of its chain it needs, neededBy
// the kept ones whose chain keeps it (a reason then says so too).
type retentionItem struct {
	HistoryID   string    `json:"historyId"`
	CompletedAt time.Time `json:"completedAt"`
	FileName    *string   `json:"fileName"`
	FileSize    *int64    `json:"fileSize"`
	BackupType  string    `json:"backupType"`
	Reasons     []string  `json:"reasons"`
	Reason      string    `json:"reason"`
	Needs       []string  `json:"needs"`
	NeededBy    []string  `json:"neededBy"`
}

// ForChain reports whether the item is kept for a chain: another kept
// backup, or one being made, needs it.
func (it retentionItem) ForChain() bool {
	for _, r := range it.Reasons {
		if strings.HasPrefix(r, "needed by ") {
			return true
		}
	}
	return len(it.NeededBy) > 0
}

// ChainBy are the backups whose chain keeps the item, as its reasons name
// them (newest first).
func (it retentionItem) ChainBy() []string {
	var ids []string
	for _, r := range it.Reasons {
		if id := chainOf(r); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// OtherReasons are the item's reasons but those ChainBy names.
func (it retentionItem) OtherReasons() []string {
	var out []string
	for _, r := range it.Reasons {
		if chainOf(r) == "" {
			out = append(out, r)
		}
	}
	return out
}

func formatAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "less than a minute"
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1f hours", d.Hours())
	default:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
}

// chart draws the size (bars) and duration (line) of the successful runs,
// oldest on the left, as an SVG with its own scales; empty without runs.
func chart(runs []runJSON) template.HTML {
	var pts []runJSON
	for i := len(runs) - 1; i >= 0; i-- {
		if runs[i].Status == "success" && runs[i].FileSize != nil && runs[i].Duration != nil {
			pts = append(pts, runs[i])
		}
	}
	if len(pts) == 0 {
		return ""
	}
	const W, H, left, right, top, bottom = 640.0, 220.0, 60.0, 60.0, 16.0, 28.0
	maxSize, maxDur := 1.0, 0.001
	for _, p := range pts {
		maxSize = math.Max(maxSize, float64(*p.FileSize))
		maxDur = math.Max(maxDur, *p.Duration)
	}
	plotW, plotH := W-left-right, H-top-bottom
	step := plotW / float64(len(pts))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="Backup size and duration of the last %d successful runs" xmlns="http://www.w3.org/2000/svg">`, W, H, len(pts))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" class="axis"/>`, left, H-bottom, W-right, H-bottom)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="lbl size" text-anchor="end">%s</text>`, left-6, top+8, template.HTMLEscapeString(formatBytes(int64(maxSize))))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="lbl size" text-anchor="end">0</text>`, left-6, H-bottom)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="lbl dur">%s</text>`, W-right+6, top+8, template.HTMLEscapeString(formatSeconds(maxDur)))
	barW := math.Min(step*0.7, 48)
	var line, dots []string
	for i, p := range pts {
		h := float64(*p.FileSize) / maxSize * plotH
		cx := left + float64(i)*step + step/2
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s · %s · %s</title></rect>`,
			cx-barW/2, H-bottom-h, barW, math.Max(h, 1), p.QueuedAt.UTC().Format(time.RFC3339),
			template.HTMLEscapeString(formatBytes(*p.FileSize)), formatSeconds(*p.Duration))
		y := H - bottom - *p.Duration/maxDur*plotH
		line = append(line, fmt.Sprintf("%.1f,%.1f", cx, y))
		dots = append(dots, fmt.Sprintf(`<circle class="dur-dot" cx="%.1f" cy="%.1f" r="3"/>`, cx, y))
	}
	fmt.Fprintf(&b, `<polyline class="dur-line" points="%s"/>%s`, strings.Join(line, " "), strings.Join(dots, ""))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="lbl">size (bars) · duration (line)</text></svg>`, left, H-6)
	return template.HTML(b.String())
}

// --- history and restores

func (wb *Web) historyPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := url.Values{}
	in := r.URL.Query()
	for _, k := range []string{"status", "databaseId", "backupJobId", "from", "to", "page"} {
		if v := in.Get(k); v != "" {
			q.Set(k, v)
		}
	}
	// Without JavaScript the date inputs arrive as they are (UTC days).
	if q.Get("from") == "" && in.Get("fromDate") != "" {
		q.Set("from", in.Get("fromDate"))
	}
	if q.Get("to") == "" && in.Get("toDate") != "" {
		if d, err := time.Parse("2006-01-02", in.Get("toDate")); err == nil {
			q.Set("to", d.AddDate(0, 0, 1).Format("2006-01-02"))
		}
	}
	q.Set("limit", "20")
	var runs list[runJSON]
	err := wb.get(w, r, s, "/v1/backups/history?"+q.Encode(), &runs)
	var ae *apiError
	msg := ""
	if errors.As(err, &ae) && ae.Code == http.StatusBadRequest {
		msg = ae.Message
		for f, m := range ae.Fields {
			msg += "; " + f + " " + m
		}
	} else if err != nil {
		return err
	}
	var dbs list[databaseJSON]
	var jobs list[jobJSON]
	if err := wb.get(w, r, s, "/v1/databases", &dbs); err != nil {
		return err
	}
	if err := wb.get(w, r, s, "/v1/backups/jobs", &jobs); err != nil {
		return err
	}
	dbNames, jobNames := map[string]string{}, map[string]string{}
	for _, d := range dbs.Results {
		dbNames[d.ID] = d.Name
	}
	for _, j := range jobs.Results {
		jobNames[j.ID] = j.Name
	}
	filter := url.Values{}
	for k, v := range in {
		if k != "page" {
			filter[k] = v
		}
	}
	wb.render(w, r, http.StatusOK, "history", s, view{Title: "History", Nav: "history", Message: msg, Data: map[string]any{
		"Runs": runs.Results, "Page": max(runs.Page, 1), "TotalPages": runs.TotalPages, "Total": runs.TotalResults,
		"Databases": dbs.Results, "DBNames": dbNames, "JobNames": jobNames, "Filter": filter,
		"Status": in.Get("status"), "DatabaseID": in.Get("databaseId"), "FromDate": in.Get("fromDate"), "ToDate": in.Get("toDate"),
		"Statuses": []string{"queued", "running", "success", "failed", "cancelled", "skipped", "expired"},
	}})
	return nil
}

func (wb *Web) restoresPage(w http.ResponseWriter, r *http.Request, s *session) error {
	page := r.URL.Query().Get("page")
	if n, err := strconv.Atoi(page); err != nil || n < 1 {
		page = "1"
	}
	var rs list[restoreJSON]
	if err := wb.get(w, r, s, "/v1/restores?limit=20&page="+page, &rs); err != nil {
		return err
	}
	names, err := wb.databaseNames(w, r, s)
	if err != nil {
		return err
	}
	// Each restore names its backup by file; a deleted backup has none.
	files := map[string]string{}
	for _, x := range rs.Results {
		if _, ok := files[x.BackupHistoryID]; ok {
			continue
		}
		var b runJSON
		err := wb.get(w, r, s, "/v1/backups/history/"+url.PathEscape(x.BackupHistoryID), &b)
		var ae *apiError
		switch {
		case errors.As(err, &ae) && ae.Code == http.StatusNotFound:
			files[x.BackupHistoryID] = ""
		case err != nil:
			return err
		case b.FileName != nil:
			files[x.BackupHistoryID] = *b.FileName
		}
	}
	wb.render(w, r, http.StatusOK, "restores", s, view{Title: "Restores", Nav: "restores", Data: map[string]any{
		"Restores": rs.Results, "DBNames": names, "Files": files, "Page": max(rs.Page, 1), "TotalPages": rs.TotalPages, "Filter": url.Values{}}})
	return nil
}

// --- notifications

// channelType is one type of notification channel the form offers.
type channelType struct{ Value, Label string }

// channelTypes are the API's channel types (notify.Types), as the
// dashboard names them.
var channelTypes = []channelType{
	{"email", "Email"},
	{"webhook", "Webhook (signed JSON)"},
	{"slack", "Slack"},
	{"discord", "Discord"},
}

// rulesSummary says in a few words which events rules notify; nil rules
// are "your default rules".
func rulesSummary(r *rulesJSON) string {
	if r == nil {
		return "your default rules"
	}
	var on []string
	for _, x := range []struct {
		on   bool
		name string
	}{{r.BackupFailed, "failed backups"}, {r.BackupSkipped, "skipped backups"}, {r.BackupSucceeded, "successful backups"},
		{r.VerificationFailed, "failed verifications"}, {r.RestoreFinished, "finished restores"}} {
		if x.on {
			on = append(on, x.name)
		}
	}
	if m := r.AgentOfflineMinutes; m != nil && *m > 0 {
		on = append(on, fmt.Sprintf("an agent offline for more than %d min", *m))
	}
	if h := r.RPOHours; h != nil && *h > 0 {
		on = append(on, fmt.Sprintf("no good backup for %d h", *h))
	}
	if len(on) == 0 {
		return "nothing"
	}
	return strings.Join(on, ", ")
}

// savedNotices are the notices /channels?saved= shows after a form saved.
var savedNotices = map[string]string{"rules": "Default rules saved."}

// channelsPage lists the user's notification channels with a form to add
// one (or, at /channels/{id}/edit, to edit that one), and the user's
// default rules. 404 for another user's channel.
func (wb *Web) channelsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var channels []channelJSON
	if err := wb.get(w, r, s, "/v1/notification-channels", &channels); err != nil {
		return err
	}
	var rules rulesJSON
	if err := wb.get(w, r, s, "/v1/notification-rules", &rules); err != nil {
		return err
	}
	edit := channelJSON{Type: channelTypes[0].Value, Enabled: true}
	title := "Notifications"
	if id := chi.URLParam(r, "id"); id != "" {
		if err := wb.get(w, r, s, "/v1/notification-channels/"+url.PathEscape(id), &edit); err != nil {
			return err
		}
		title = "Edit " + edit.Name
	}
	wb.render(w, r, http.StatusOK, "channels", s, view{Title: title, Nav: "channels", Data: map[string]any{
		"Channels": channels, "Rules": rules, "Edit": edit, "Types": channelTypes,
		"Saved": savedNotices[r.URL.Query().Get("saved")]}})
	return nil
}

// --- audit log

// auditActions are what the action filter suggests: every prefix, then
// the exact actions the API records.
var auditActions = []string{"auth.", "agent.", "database.", "storage.", "job.", "backup.", "channel.", "rules.",
	"auth.login", "auth.register", "auth.logout", "agent.enroll", "agent.enrollment_token", "agent.revoke",
	"database.create", "database.update", "database.delete", "storage.create", "storage.update", "storage.delete",
	"job.create", "job.update", "job.delete", "job.key_export", "backup.run", "backup.download", "backup.restore",
	"backup.verify", "backup.delete", "channel.create", "channel.update", "channel.delete", "channel.test", "rules.update"}

// auditPage lists the user's audit log, newest first, filtered by action
// (exact or a prefix ending in "."), outcome, object and days, 25 a page.
// A filter the API refuses is shown above the (empty) list.
func (wb *Web) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	in := r.URL.Query()
	q := url.Values{}
	for _, k := range []string{"action", "outcome", "objectId", "from", "to", "page"} {
		if v := strings.TrimSpace(in.Get(k)); v != "" {
			q.Set(k, v)
		}
	}
	// Without JavaScript the date inputs arrive as they are (UTC days).
	if q.Get("from") == "" {
		if d, err := time.Parse("2006-01-02", in.Get("fromDate")); err == nil {
			q.Set("from", d.Format(time.RFC3339))
		}
	}
	if q.Get("to") == "" {
		if d, err := time.Parse("2006-01-02", in.Get("toDate")); err == nil {
			q.Set("to", d.AddDate(0, 0, 1).Format(time.RFC3339))
		}
	}
	q.Set("limit", "25")
	var entries list[auditJSON]
	msg, err := badFilter(wb.get(w, r, s, "/v1/audit?"+q.Encode(), &entries))
	if err != nil {
		return err
	}
	filter := url.Values{}
	for k, v := range in {
		if k != "page" {
			filter[k] = v
		}
	}
	wb.render(w, r, http.StatusOK, "audit", s, view{Title: "Audit log", Nav: "audit", Message: msg, Data: map[string]any{
		"Entries": entries.Results, "Page": max(entries.Page, 1), "TotalPages": entries.TotalPages, "Total": entries.TotalResults,
		"Filter": filter, "Action": in.Get("action"), "Outcome": in.Get("outcome"), "ObjectID": in.Get("objectId"),
		"FromDate": in.Get("fromDate"), "ToDate": in.Get("toDate"), "Actions": auditActions,
	}})
	return nil
}

// badFilter turns the API's 400 for a list's filters into a message for
// the page; any other error is returned.
func badFilter(err error) (string, error) {
	var ae *apiError
	if !errors.As(err, &ae) || ae.Code != http.StatusBadRequest {
		return "", err
	}
	msg := ae.Message
	keys := make([]string, 0, len(ae.Fields))
	for f := range ae.Fields {
		keys = append(keys, f)
	}
	slices.Sort(keys)
	for _, f := range keys {
		msg += "; " + f + " " + ae.Fields[f]
	}
	return msg, nil
}

// --- one backup run

// runPage shows one backup run: its facts, error, verification checks,
// the tables of its manifest, and the actions the history offers. The
// links of notifications lead here. 404 for another user's run.
func (wb *Web) runPage(w http.ResponseWriter, r *http.Request, s *session) error {
	var run runJSON
	if err := wb.get(w, r, s, "/v1/backups/history/"+url.PathEscape(chi.URLParam(r, "id")), &run); err != nil {
		return err
	}
	var job jobJSON
	err := wb.get(w, r, s, "/v1/backups/jobs/"+url.PathEscape(run.BackupJobID), &job)
	var ae *apiError
	if err != nil && !(errors.As(err, &ae) && ae.Code == http.StatusNotFound) {
		return err
	}
	var dbs list[databaseJSON]
	if err := wb.get(w, r, s, "/v1/databases", &dbs); err != nil {
		return err
	}
	dbName := ""
	for _, d := range dbs.Results {
		if d.ID == run.DatabaseID {
			dbName = d.Name
		}
	}
	agentName := ""
	if run.AgentID != nil {
		var agents list[agentJSON]
		if err := wb.get(w, r, s, "/v1/agents", &agents); err != nil {
			return err
		}
		for _, a := range agents.Results {
			if a.ID == *run.AgentID {
				agentName = a.Name
			}
		}
	}
	var manifest *manifestJSON
	if len(run.Manifest) > 0 && string(run.Manifest) != "null" {
		manifest = &manifestJSON{}
		if err := json.Unmarshal(run.Manifest, manifest); err != nil {
			wb.log.Warn("dashboard: a backup's manifest does not parse", "run", run.ID, "err", err)
			manifest = nil
		}
	}
	title := "Backup run"
	if job.Name != "" {
		title = "Backup of " + job.Name
	}
	wb.render(w, r, http.StatusOK, "run", s, view{Title: title, Nav: "history", Data: map[string]any{
		"Run": run, "JobName": job.Name, "DBName": dbName, "AgentName": agentName, "Databases": dbs.Results, "Manifest": manifest}})
	return nil
}
