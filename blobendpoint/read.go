package blobendpoint

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxRangeMD5 is the largest range whose MD5 Get Blob computes
// (x-ms-range-get-content-md5), as in Azure.
const maxRangeMD5 = 4 << 20

// getBlob is Get Blob (GET) and Get Blob Properties (HEAD). A range comes
// from x-ms-range, else Range: "bytes=a-b" (b past the end is cut to the
// end) or "bytes=a-"; a start at or past the end is 416 InvalidRange.
func (s *Server) getBlob(w http.ResponseWriter, r *http.Request, name string) error {
	src, err := s.store.Open(r.Context(), name)
	if err != nil {
		return notFound(err)
	}
	info := infoOf(src)
	h := w.Header()
	var l lease
	if b := s.blob(name, false); b != nil {
		b.mu.Lock()
		b.lease.settle(s.now())
		l = b.lease
		b.mu.Unlock()
	}
	if err := l.checkRead(r.Header.Get("x-ms-lease-id")); err != nil {
		return err
	}
	if err := checkConditions(r, true, info.ETag, true); err != nil {
		return err
	}
	setVersionHeaders(h, info)
	l.headers(h)
	h.Set("x-ms-blob-type", "BlockBlob")
	h.Set("x-ms-creation-time", httpTime(info.ModTime))
	h.Set("x-ms-server-encrypted", "false")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", formatInt(info.Size))
		w.WriteHeader(http.StatusOK)
		return nil
	}

	offset, length, status := int64(0), info.Size, http.StatusOK
	spec := r.Header.Get("x-ms-range")
	if spec == "" {
		spec = r.Header.Get("Range")
	}
	if spec != "" {
		start, end, err := parseRange(spec)
		if err != nil {
			return err
		}
		if start >= info.Size {
			h.Set("Content-Range", "bytes */"+formatInt(info.Size))
			return &azError{http.StatusRequestedRangeNotSatisfiable, "InvalidRange",
				"The range specified is invalid for the current size of the resource."}
		}
		if end < 0 || end >= info.Size {
			end = info.Size - 1
		}
		offset, length, status = start, end-start+1, http.StatusPartialContent
		h.Set("Content-Range", "bytes "+formatInt(start)+"-"+formatInt(end)+"/"+formatInt(info.Size))
	}
	if length == 0 {
		h.Set("Content-Length", "0")
		w.WriteHeader(status)
		return nil
	}
	rc, err := src.ReadRange(r.Context(), offset, length)
	if err != nil {
		return notFound(err)
	}
	defer rc.Close()
	var body io.Reader = rc
	if strings.EqualFold(r.Header.Get("x-ms-range-get-content-md5"), "true") {
		if length > maxRangeMD5 {
			return &azError{http.StatusBadRequest, "OutOfRangeInput",
				"One of the request inputs is out of range. x-ms-range-get-content-md5 needs a range of at most 4 MiB."}
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(rc, data); err != nil {
			return err
		}
		sum := md5.Sum(data)
		h.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
		body = bytes.NewReader(data)
	}
	h.Set("Content-Length", formatInt(length))
	w.WriteHeader(status)
	if n, _ := io.Copy(w, io.LimitReader(body, length)); n != length {
		// The status is sent: only a cut connection tells the client.
		panic(http.ErrAbortHandler)
	}
	return nil
}

// parseRange parses "bytes=a-b" or "bytes=a-" (end -1).
func parseRange(spec string) (start, end int64, err error) {
	bad := errHeader(http.StatusBadRequest, "InvalidHeaderValue", "x-ms-range")
	a, b, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(spec), "bytes="), "-")
	if !ok || !strings.HasPrefix(strings.TrimSpace(spec), "bytes=") {
		return 0, 0, bad
	}
	start, err = strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, bad
	}
	if b == "" {
		return start, -1, nil
	}
	end, err = strconv.ParseInt(b, 10, 64)
	if err != nil || end < start {
		return 0, 0, bad
	}
	return start, end, nil
}

// checkConditions applies If-Match and If-None-Match to a blob that exists
// (or not) with etag: for a read a failed If-None-Match is 304, for a
// write If-None-Match: * on an existing blob is 409 BlobAlreadyExists;
// anything else failing is 412 ConditionNotMet.
func checkConditions(r *http.Request, exists bool, etag string, read bool) error {
	notMet := &azError{http.StatusPreconditionFailed, "ConditionNotMet",
		"The condition specified using HTTP conditional header(s) is not met."}
	if v := r.Header.Get("If-Match"); v != "" && (!exists || !etagListed(v, etag)) {
		return notMet
	}
	if v := r.Header.Get("If-None-Match"); v != "" && exists && etagListed(v, etag) {
		switch {
		case read:
			return &azError{http.StatusNotModified, "ConditionNotMet", notMet.message}
		case strings.TrimSpace(v) == "*":
			return &azError{http.StatusConflict, "BlobAlreadyExists", "The specified blob already exists."}
		}
		return notMet
	}
	return nil
}

// etagListed reports whether the header value ("*" or a list of ETags)
// covers etag.
func etagListed(v, etag string) bool {
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e == "*" || e == etag {
			return true
		}
	}
	return false
}

// checkWriteConditions applies If-Match and If-None-Match to a write or
// delete of name; the Store is only asked when they are present.
func (s *Server) checkWriteConditions(r *http.Request, name string) error {
	if r.Header.Get("If-Match") == "" && r.Header.Get("If-None-Match") == "" {
		return nil
	}
	src, err := s.store.Open(r.Context(), name)
	switch {
	case errors.Is(err, ErrNotFound):
		return checkConditions(r, false, "", false)
	case err != nil:
		return err
	}
	return checkConditions(r, true, infoOf(src).ETag, false)
}
