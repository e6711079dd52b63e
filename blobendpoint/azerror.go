package blobendpoint

import (
	"bytes"
	"encoding/xml"
	"errors"
	"net/http"
	"strconv"
)

// azError is an answer in the Blob service's error format: the status, the
// x-ms-error-code header and an <Error><Code/><Message/></Error> body.
// Handlers return it; any other error becomes 500 InternalError.
type azError struct {
	status  int
	code    string
	message string
}

func (e *azError) Error() string { return e.code + ": " + e.message }

func errBlobNotFound() *azError {
	return &azError{http.StatusNotFound, "BlobNotFound", "The specified blob does not exist."}
}

func errInvalidBlockList(detail string) *azError {
	return &azError{http.StatusBadRequest, "InvalidBlockList", "The specified block list is invalid. " + detail}
}

func errHeader(status int, code, header string) *azError {
	msg := "The value for one of the HTTP headers is not in the correct format."
	if code == "MissingRequiredHeader" {
		msg = "An HTTP header that's mandatory for this request is not specified."
	}
	return &azError{status, code, msg + " Header: " + header}
}

func errServerBusy(detail string) *azError {
	return &azError{http.StatusServiceUnavailable, "ServerBusy", "The server is currently unable to receive requests. Please retry your request. " + detail}
}

var errInternal = &azError{http.StatusInternalServerError, "InternalError",
	"The server encountered an internal error. Please retry the request."}

// writeError answers err. Errors other than *azError are the server's own
// or its Store's: their text stays here (logged with the request id when
// Options.Logger is set) and the client gets a generic InternalError.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, reqID string, err error) {
	var ae *azError
	if !errors.As(err, &ae) {
		if s.log != nil {
			s.log.Error("blobendpoint: request failed", "request_id", reqID,
				"method", r.Method, "path", r.URL.Path, "comp", r.URL.Query().Get("comp"), "err", err)
		}
		ae = errInternal
	}
	h := w.Header()
	h.Set("x-ms-error-code", ae.code)
	if r.Method == http.MethodHead || ae.status == http.StatusNotModified {
		w.WriteHeader(ae.status)
		return
	}
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><Error><Code>`)
	_ = xml.EscapeText(&b, []byte(ae.code))
	b.WriteString(`</Code><Message>`)
	_ = xml.EscapeText(&b, []byte(ae.message+"\nRequestId:"+reqID+"\nTime:"+s.now().UTC().Format("2006-01-02T15:04:05.0000000Z")))
	b.WriteString(`</Message></Error>`)
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(ae.status)
	_, _ = w.Write(b.Bytes())
}
