package api

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/outbox"
)

// auditRecord is what a handler adds to its request's audit entry: the
// user, when the route is not authenticated (register, login, logout,
// enroll), the object it created, and the message of an error answered.
type auditRecord struct {
	user     uuid.UUID
	objectID string
	detail   string
	failed   bool // the action failed though the request was answered 2xx
}

type auditKey struct{}

func auditFrom(ctx context.Context) *auditRecord {
	rec, _ := ctx.Value(auditKey{}).(*auditRecord)
	return rec
}

// auditUser names the user of an unauthenticated request's entry.
func auditUser(ctx context.Context, id uuid.UUID) {
	if rec := auditFrom(ctx); rec != nil {
		rec.user = id
	}
}

// auditObject names the object a request created (or acted on, when the
// path has no {id}).
func auditObject(ctx context.Context, id string) {
	if rec := auditFrom(ctx); rec != nil {
		rec.objectID = id
	}
}

// auditFailed records that the request's action failed (a channel test
// that could not send), with why.
func auditFailed(ctx context.Context, detail string) {
	if rec := auditFrom(ctx); rec != nil {
		rec.failed, rec.detail = true, detail
	}
}

// audited records the request as action on an object of objectType once it
// is answered: an events.AuditEvent written to the outbox, which the
// audit consumer projects into audit_log. The entry has the user, the
// time, the client's IP, the object ({id} of the path unless the handler
// named one), the status and, on failure, the message answered; never a
// request body. A request whose user is unknown (a login with an unknown
// email) is not recorded.
func (a *API) audited(action, objectType string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := &auditRecord{user: userID(r.Context())}
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			start := time.Now()
			next.ServeHTTP(ww, r.WithContext(context.WithValue(r.Context(), auditKey{}, rec)))
			if rec.user == uuid.Nil {
				return
			}
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			object := rec.objectID
			if object == "" {
				object = chi.URLParam(r, "id")
			}
			ev := events.AuditEvent{V: events.Version, ID: uuid.NewString(), UserID: rec.user.String(), At: start.UTC(),
				Action: action, ObjectType: objectType, ObjectID: object, IP: clientIP(r),
				UserAgent: truncate(r.UserAgent(), 200), Outcome: "success", StatusCode: status,
				RequestID: middleware.GetReqID(r.Context())}
			if status >= 400 || rec.failed {
				ev.Outcome, ev.Detail = "failure", truncate(rec.detail, 500)
			}
			a.recordAudit(context.WithoutCancel(r.Context()), ev)
		})
	}
}

// recordAudit writes ev to the outbox; a failure is logged, as the
// request was already answered.
func (a *API) recordAudit(ctx context.Context, ev events.AuditEvent) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := outbox.JSON(events.AuditSubject(ev.UserID, ev.Action), ev.ID, ev)
	if err == nil {
		err = outbox.Add(ctx, a.pool, m)
	}
	if err != nil {
		a.log.Error("recording an audit entry failed", "action", ev.Action, "userId", ev.UserID, "requestId", ev.RequestID, "err", err)
		return
	}
	if a.opts.Outbox != nil {
		a.opts.Outbox.Kick()
	}
}

// clientIP is the address the request came from (no proxy header is
// trusted).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

type auditEntryJSON struct {
	ID         uuid.UUID `json:"id"`
	At         time.Time `json:"at"`
	Action     string    `json:"action"`
	ObjectType string    `json:"objectType"`
	ObjectID   string    `json:"objectId"`
	IP         string    `json:"ip"`
	UserAgent  string    `json:"userAgent"`
	Outcome    string    `json:"outcome"`
	StatusCode int       `json:"statusCode"`
	Detail     string    `json:"detail,omitempty"`
	RequestID  string    `json:"requestId"`
}

// listAudit answers the user's own audit entries, newest first:
// ?action= (exact, or a prefix ending in "." such as "database."),
// outcome=success|failure, objectId=, from=, to= (RFC 3339 or
// YYYY-MM-DD), page= (default 1) and limit= (default 10, at most 100). 400
// names a bad filter.
func (a *API) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := fieldErrors{}
	p := db.ListAuditEntriesParams{UserID: userID(r.Context())}
	str := func(name string) *string {
		if v := strings.TrimSpace(q.Get(name)); v != "" {
			return &v
		}
		return nil
	}
	p.Action, p.ObjectID = str("action"), str("objectId")
	if o := str("outcome"); o != nil {
		if *o != "success" && *o != "failure" {
			f.add("outcome", "must be success or failure")
		}
		p.Outcome = o
	}
	p.FromAt, p.ToAt = timeParam(r, "from", f), timeParam(r, "to", f)
	page, limit := pageParams(r, f)
	if err := f.err(); err != nil {
		return err
	}
	p.Lim, p.Off = int32(limit), int32((page-1)*limit)
	rows, err := a.q.ListAuditEntries(r.Context(), a.pool, p)
	if err != nil {
		return err
	}
	total, err := a.q.CountAuditEntries(r.Context(), a.pool, db.CountAuditEntriesParams{UserID: p.UserID,
		Action: p.Action, Outcome: p.Outcome, ObjectID: p.ObjectID, FromAt: p.FromAt, ToAt: p.ToAt})
	if err != nil {
		return err
	}
	out := make([]auditEntryJSON, 0, len(rows))
	for _, e := range rows {
		out = append(out, auditEntryJSON{ID: e.ID, At: e.At, Action: e.Action, ObjectType: e.ObjectType, ObjectID: e.ObjectID,
			IP: e.Ip, UserAgent: e.UserAgent, Outcome: e.Outcome, StatusCode: int(e.StatusCode), Detail: e.Detail, RequestID: e.RequestID})
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out, "page": page, "limit": limit,
		"totalPages": (int(total) + limit - 1) / limit, "totalResults": total})
	return nil
}
