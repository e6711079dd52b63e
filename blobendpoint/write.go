package blobendpoint

import (
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// putBlob is Put Blob (PUT, x-ms-blob-type: BlockBlob): the body streams
// straight into a new Sink, committed when it has all arrived. It cancels
// an upload of blocks in progress for the same blob (ErrCanceled).
func (s *Server) putBlob(w http.ResponseWriter, r *http.Request, name string) error {
	switch t := r.Header.Get("x-ms-blob-type"); {
	case t == "":
		return errHeader(http.StatusBadRequest, "MissingRequiredHeader", "x-ms-blob-type")
	case !strings.EqualFold(t, "BlockBlob"):
		return &azError{http.StatusBadRequest, "InvalidHeaderValue",
			"The value for one of the HTTP headers is not in the correct format. Only block blobs are served. Header: x-ms-blob-type"}
	}
	if r.ContentLength < 0 {
		return &azError{http.StatusLengthRequired, "MissingContentLengthHeader",
			"The Content-Length header was not specified."}
	}
	if err := s.cancelUpload(r, name); err != nil {
		return err
	}
	b := s.blob(name, true)

	sink, err := s.store.Create(s.ctx, name)
	if err != nil {
		return fmt.Errorf("blobendpoint: creating blob %q: %w", name, err)
	}
	hash := md5.New()
	body := &readErr{r: io.TeeReader(r.Body, hash)}
	n, err := io.Copy(sink, body)
	switch {
	case body.err != nil:
		sink.Abort(fmt.Errorf("blobendpoint: blob %q: reading the request: %w", name, body.err))
		return &azError{http.StatusBadRequest, "InvalidInput", "The request body could not be read."}
	case err != nil:
		err = fmt.Errorf("blobendpoint: writing blob %q: %w", name, err)
		sink.Abort(err)
		return err
	}
	var sum [md5.Size]byte
	hash.Sum(sum[:0])
	if err := checkMD5(r, func() [md5.Size]byte { return sum }); err != nil {
		sink.Abort(fmt.Errorf("blob %q: %w", name, ErrChecksum))
		return err
	}
	info := s.newInfo(n)
	if err := sink.Commit(info); err != nil {
		return fmt.Errorf("blobendpoint: committing blob %q: %w", name, err)
	}
	b.mu.Lock()
	b.blocks = nil
	b.mu.Unlock()
	h := w.Header()
	setVersionHeaders(h, info)
	h.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
	h.Set("x-ms-request-server-encrypted", "false")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// readErr remembers its reader's error, to tell the client's failures from
// the Sink's in io.Copy.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// checkMD5 compares a Content-MD5 header, when there is one, with the
// body's MD5 (computed only then).
func checkMD5(r *http.Request, sum func() [md5.Size]byte) error {
	v := r.Header.Get("Content-MD5")
	if v == "" {
		return nil
	}
	got, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(got) != md5.Size {
		return errHeader(http.StatusBadRequest, "InvalidHeaderValue", "Content-MD5")
	}
	if [md5.Size]byte(got) != sum() {
		return &azError{http.StatusBadRequest, "Md5Mismatch",
			"The MD5 value specified in the request did not match with the MD5 value calculated by the server."}
	}
	return nil
}

// deleteBlob is Delete Blob. It also aborts an upload of blocks in
// progress (ErrCanceled); a blob that has no committed version is not
// found, as in Azure.
func (s *Server) deleteBlob(w http.ResponseWriter, r *http.Request, name string) error {
	if err := s.cancelUpload(r, name); err != nil {
		return err
	}
	b := s.blob(name, true)
	if err := s.store.Delete(r.Context(), name); err != nil {
		return notFound(err)
	}
	b.mu.Lock()
	b.lease, b.blocks = lease{}, nil
	b.mu.Unlock()
	w.Header().Set("x-ms-delete-type-permanent", "true")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
