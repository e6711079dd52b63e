package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/runs"
)

// Error is an error the client may see: its code is the HTTP status, its
// message and fields are written as the body. A *runs.Error is answered
// with its failure's status (runStatus); a row not found (db.ErrNotFound,
// pgx.ErrNoRows) that a handler returns is a 404; any other error is logged
// and answered with a generic 500.
type Error struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

func errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// fieldErrors collects validation failures, one message per field.
type fieldErrors map[string]string

func (f fieldErrors) add(field, msg string) {
	if _, ok := f[field]; !ok {
		f[field] = msg
	}
}

// err returns a 400 naming every field, or nil when there is none.
func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(f))
	return &Error{Code: http.StatusBadRequest, Message: "invalid fields: " + strings.Join(names, ", "), Fields: f}
}

func notFound(what string) *Error { return errorf(http.StatusNotFound, "%s not found", what) }

// owned is err of loading a row the user owns: a row that is not there
// (or not the user's) is notFound(what), naming field when it is not "".
func owned(err error, what, field string) error {
	if !errors.Is(db.MapErr(err), db.ErrNotFound) {
		return err
	}
	e := notFound(what)
	if field != "" {
		e.Fields = map[string]string{field: "no such " + what}
	}
	return e
}

// runStatus is the HTTP status of each runs.Failure.
var runStatus = map[runs.Failure]int{
	runs.NotFound:    http.StatusNotFound,
	runs.Conflict:    http.StatusConflict,
	runs.Unavailable: http.StatusServiceUnavailable,
	runs.Timeout:     http.StatusGatewayTimeout,
	runs.Refused:     http.StatusBadGateway,
	runs.Busy:        http.StatusTooManyRequests,
	runs.Invalid:     http.StatusBadRequest,
}

// fromRun is the *Error of a run's failure.
func fromRun(e *runs.Error) *Error {
	out := &Error{Code: runStatus[e.Failure], Message: e.Msg}
	if out.Code == 0 {
		out.Code = http.StatusInternalServerError
	}
	switch {
	case e.Failure == runs.Invalid && e.Field != "":
		out.Message, out.Fields = "invalid fields: "+e.Field, map[string]string{e.Field: e.Msg}
	case e.Field != "":
		out.Fields = map[string]string{e.Field: e.Msg}
	}
	return out
}

// handlerFunc is an HTTP handler that returns its error instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts h, writing any error it returns in the one format of SPEC §3.
func (a *API) handle(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var apiErr *Error
		var runErr *runs.Error
		switch {
		case errors.As(err, &apiErr):
		case errors.As(err, &runErr):
			apiErr = fromRun(runErr)
		case errors.Is(err, db.ErrNotFound), errors.Is(err, pgx.ErrNoRows):
			// A row the request loaded went away before it was done
			// (deleted by another request meanwhile). Logged: a 404 that
			// is a bug would otherwise go unseen.
			a.log.Warn("a row went away while answering", "requestId", middleware.GetReqID(r.Context()),
				"method", r.Method, "path", r.URL.Path, "err", err)
			apiErr = &Error{Code: http.StatusNotFound, Message: "not found"}
		default:
			a.log.Error("request failed", "requestId", middleware.GetReqID(r.Context()),
				"method", r.Method, "path", r.URL.Path, "err", err)
			apiErr = &Error{Code: http.StatusInternalServerError, Message: "internal error; request id " + middleware.GetReqID(r.Context())}
		}
		if rec := auditFrom(r.Context()); rec != nil {
			rec.detail = apiErr.Message
			if len(apiErr.Fields) > 0 {
				parts := make([]string, 0, len(apiErr.Fields))
				for _, k := range slices.Sorted(maps.Keys(apiErr.Fields)) {
					parts = append(parts, k+": "+apiErr.Fields[k])
				}
				rec.detail += " (" + strings.Join(parts, "; ") + ")"
			}
		}
		writeJSON(w, apiErr.Code, apiErr)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("writing response", "err", err)
	}
}

// decodeJSON reads one JSON object of at most a.maxBody bytes into v,
// rejecting unknown fields. Errors are *Error: 413 for an oversized body, 400
// naming the field for a wrong type or an unknown field, 400 otherwise.
func (a *API) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, a.maxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		var syntaxErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &maxErr):
			return errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", maxErr.Limit)
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "request body must be a JSON object")
		case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
			return errorf(http.StatusBadRequest, "malformed JSON")
		case errors.As(err, &typeErr):
			field := typeErr.Field
			if field == "" {
				return errorf(http.StatusBadRequest, "request body must be a JSON object")
			}
			return &Error{Code: http.StatusBadRequest, Message: "invalid fields: " + field,
				Fields: map[string]string{field: "must be a " + jsonType(typeErr.Type.Kind().String())}}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &Error{Code: http.StatusBadRequest, Message: "invalid fields: " + field,
				Fields: map[string]string{field: "unknown field"}}
		default:
			return errorf(http.StatusBadRequest, "malformed JSON")
		}
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "request body must hold a single JSON object")
	}
	return nil
}

func jsonType(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "number"
	case kind == "bool":
		return "boolean"
	case kind == "string":
		return "string"
	case kind == "slice", kind == "array":
		return "list"
	default:
		return "object"
	}
}
