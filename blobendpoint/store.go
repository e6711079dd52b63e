package blobendpoint

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is what a Store returns (wrapped or not) for a blob it does
// not hold; the server answers 404 BlobNotFound.
var ErrNotFound = errors.New("blobendpoint: blob not found")

// Reasons a Sink is aborted with (wrapped, with the blob's name).
var (
	// ErrIdle: no request touched an upload for Options.IdleTimeout, so its
	// block list is taken never to come.
	ErrIdle = errors.New("blobendpoint: upload idle without a block list")
	// ErrClosed: the server was closed with the upload still open.
	ErrClosed = errors.New("blobendpoint: server closed")
	// ErrBlockList: the blocks received cannot be streamed as the client
	// asked, either because its block list differs from the blocks in
	// stream order or because a block already streamed came again with
	// other bytes.
	ErrBlockList = errors.New("blobendpoint: block list does not match the blocks streamed")
	// ErrCanceled: the blob was deleted, or replaced by a Put Blob, while
	// its blocks were being uploaded.
	ErrCanceled = errors.New("blobendpoint: upload canceled by a delete or an overwrite")
	// ErrChecksum: a Put Blob's body did not match its Content-MD5.
	ErrChecksum = errors.New("blobendpoint: content does not match its MD5")
)

// Info describes a stored blob.
type Info struct {
	// Size is the blob's length in bytes.
	Size int64
	// ModTime is its last modification, sent as Last-Modified.
	ModTime time.Time
	// ETag is sent as the ETag header (quotes are added when missing); ""
	// makes the server derive one from Size and ModTime.
	ETag string
}

// Store is where the server writes blobs and reads them back. Names are
// blob names inside the one container, as the client spelled them (they
// may contain "/"). Implementations must be safe for concurrent use.
type Store interface {
	// Create starts writing the blob name and returns the Sink its bytes
	// go to. ctx lives as long as the Server, not as one request. A name
	// may be created again while an earlier Sink for it is still open (a
	// client restarting an upload, or a Put Blob racing blocks): the last
	// Commit wins. An error fails the request with 500 InternalError.
	Create(ctx context.Context, name string) (Sink, error)
	// Open returns the committed blob name for reading, or ErrNotFound. A
	// blob whose Sink has not been committed does not exist yet. The
	// server does not close the Source: the Store owns it.
	Open(ctx context.Context, name string) (Source, error)
	// Delete removes the committed blob name, or returns ErrNotFound.
	Delete(ctx context.Context, name string) error
}

// Sink receives one blob's bytes in order, as one stream. The server calls
// Write from one goroutine at a time, then exactly one of Commit or Abort.
// Writes may block: the client's request waits, which is how a slow
// storage slows SQL Server down.
type Sink interface {
	// Write takes the next bytes of the blob. An error fails the blob: the
	// server calls Abort with it and answers 500 InternalError.
	Write(p []byte) (int, error)
	// Commit ends the stream successfully; info is what the server tells
	// the client (Size is the number of bytes written). An error means the
	// blob is not stored (the client gets 500 InternalError); Abort is not
	// called after it.
	Commit(info Info) error
	// Abort ends the stream unsuccessfully: nothing written may be kept.
	// err says why; it wraps one of ErrIdle, ErrClosed, ErrBlockList,
	// ErrCanceled, ErrChecksum, a request body's read error, or the
	// Sink's own Write error.
	Abort(err error)
}

// Source gives range reads of one committed blob, for Get Blob and Get
// Blob Properties. It must be safe for concurrent use (a client reads
// ranges in parallel).
type Source interface {
	// Info describes the blob.
	Info() Info
	// ReadRange opens length bytes from offset; the server closes the
	// reader. offset and length always lie within Info().Size, and length
	// is above 0. A reader that ends before length bytes cuts the
	// response short (the client sees a broken connection, not a short
	// blob).
	ReadRange(ctx context.Context, offset, length int64) (io.ReadCloser, error)
}
