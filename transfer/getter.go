package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/storage"
)

// Getter reads an agent's local objects from the control plane, one
// transfer per Get, so that readers written for a storage.Storage (the
// chunk store's) can read what only the agent holds.
type Getter struct {
	nc      *nats.Conn
	agentID string
	sem     chan struct{}
}

// NewGetter reads agentID's objects with at most n transfers at once
// (below MaxTransfers, so one reader leaves the agent room for others).
func NewGetter(nc *nats.Conn, agentID string, n int) *Getter {
	return &Getter{nc: nc, agentID: agentID, sem: make(chan struct{}, max(1, min(n, MaxTransfers)))}
}

// Get opens key from offset; Close of the reader ends the transfer. A
// missing key gives an error wrapping storage.ErrNotFound, an offset
// beyond the end one wrapping storage.ErrBadOffset; the other errors are
// Open's.
func (g *Getter) Get(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r, err := Open(ctx, g.nc, g.agentID, key, offset)
	switch {
	case errors.Is(err, ErrNotFound):
		err = fmt.Errorf("%w: %w", storage.ErrNotFound, err)
	case errors.Is(err, ErrInvalidOffset):
		err = fmt.Errorf("%w: %w", storage.ErrBadOffset, err)
	}
	if err != nil {
		<-g.sem
		return nil, err
	}
	return &released{Reader: r, release: func() { <-g.sem }}, nil
}

type released struct {
	*Reader
	release func()
	done    bool
}

func (r *released) Close() error {
	err := r.Reader.Close()
	if !r.done {
		r.done = true
		r.release()
	}
	return err
}
