package db

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotFound is returned (wrapped by MapErr) when a query finds no row.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned by MapErr for a unique-constraint violation.
var ErrConflict = errors.New("conflict")

// MapErr turns pgx's "no rows" into ErrNotFound and unique violations into
// ErrConflict; any other error is returned unchanged.
func MapErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return ErrConflict
	}
	return err
}

// WithTx runs fn in a transaction on pool, committing when fn returns nil and
// rolling back otherwise. It returns fn's error or the commit error.
func WithTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, fn)
}
