// Package transfer streams an object from an agent's local disk to the
// control plane over core NATS, with bounded memory on both sides, so the
// control plane's HTTP API can serve backups that only the agent holds.
//
// The protocol (subjects and payloads are spelled in package events):
//
//  1. The control plane (Open) subscribes to rahat.xfer.<agent>.<transfer>.data,
//     then requests rahat.rpc.<agent>.transfer with the key, the offset and
//     its initial credit (Window chunks).
//  2. The agent (Serve) opens the object, subscribes to
//     rahat.xfer.<agent>.<transfer>.ctl and replies with the object's size,
//     or with an error (not found, busy, bad offset).
//  3. The agent publishes chunks of at most ChunkSize bytes on the data
//     subject, numbered from 0, but only those below the credit the
//     receiver granted; the last one carries the end-of-stream marker, the
//     number of bytes sent and their SHA-256.
//  4. The receiver grants credit on the control subject as it consumes
//     chunks, repeats it every IdleTimeout/3 as a keepalive, and cancels
//     there when it stops early.
//
// Core NATS delivers at most once, in order: a lost or duplicated chunk is
// a gap in the sequence numbers and fails the Reader; nothing is stored in
// JetStream.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/events"
)

const (
	// ChunkSize is the largest chunk the agent publishes (well under NATS's
	// max_payload of 1 MB; lowered if the server allows less).
	ChunkSize = 256 << 10
	// Window is the most chunks in flight, sent but not yet consumed by the
	// Reader: each side holds at most Window×ChunkSize of a transfer.
	Window = 16
	// IdleTimeout aborts a transfer on the agent when the receiver has sent
	// nothing (credit or keepalive) for that long while the agent waits for
	// credit, and fails a Read that waits that long for a chunk.
	IdleTimeout = 30 * time.Second
	// MaxTransfers is how many transfers one agent serves at once; further
	// requests are refused with ErrBusy.
	MaxTransfers = 4
)

// Errors of Open and of Reader.Read. Test them with errors.Is.
var (
	// ErrNoAgent means no agent serves transfers for that id: it is not
	// connected. It wraps nats.ErrNoResponders.
	ErrNoAgent = fmt.Errorf("transfer: agent not connected: %w", nats.ErrNoResponders)
	// ErrNotFound means the agent has no object with that key. Serve
	// reports it for Opener errors matching ErrNotFound or fs.ErrNotExist.
	ErrNotFound = errors.New("transfer: object not found")
	// ErrBusy means the agent already runs MaxTransfers transfers.
	ErrBusy = errors.New("transfer: agent busy with other transfers")
	// ErrInvalidOffset means the offset is negative or beyond the object's end.
	ErrInvalidOffset = errors.New("transfer: offset outside the object")
	// ErrIntegrity means the stream is not the object: a chunk lost or
	// duplicated, more or fewer bytes than announced, or a SHA-256 mismatch.
	ErrIntegrity = errors.New("transfer: corrupt stream")
	// ErrTimeout means the agent did not answer or send data in time.
	ErrTimeout = errors.New("transfer: timed out")
	// ErrClosed is returned by Read after Close.
	ErrClosed = errors.New("transfer: reader closed")
	// ErrAborted means the agent stopped the transfer (read error, shutdown);
	// the error text carries its reason.
	ErrAborted = errors.New("transfer: aborted by the agent")
)

// Opener opens an object on the agent for reading from offset and returns its
// total size. It must keep key inside its own storage (no path traversal)
// and should return an error matching ErrNotFound or fs.ErrNotExist when
// there is no such object.
type Opener func(ctx context.Context, key string, offset int64) (r io.ReadCloser, size int64, err error)

// config holds the protocol's constants and test hooks; production code
// uses defaultConfig.
type config struct {
	chunkSize      int
	window         int64
	idle           time.Duration
	maxActive      int
	requestTimeout time.Duration

	// publish (agent) returns how many times to publish chunk seq: 1 by
	// default, 0 to drop it, 2 to duplicate it.
	publish func(seq int64, m *nats.Msg) int
	// done (agent) is called when a transfer's goroutine ends.
	done func(transferID string, err error)
	// consumed (reader) is called when chunk seq has been read out, before
	// its credit is granted.
	consumed func(seq int64)
}

func defaultConfig() config {
	return config{
		chunkSize:      ChunkSize,
		window:         Window,
		idle:           IdleTimeout,
		maxActive:      MaxTransfers,
		requestTimeout: events.DefaultRPCTimeout,
	}
}

var transferIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validTransferID reports whether id is one safe subject token.
func validTransferID(id string) bool { return transferIDRe.MatchString(id) }
