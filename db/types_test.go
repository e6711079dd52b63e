package db_test

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/testsupport"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

// TestUUIDRoundTrip: UUIDs, arrays of them, NULLs and nullable ones go
// through the registered plans intact.
func TestUUIDRoundTrip(t *testing.T) {
	ctx := context.Background()
	url, _ := testsupport.NewDatabase(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AfterConnect = db.RegisterTypes
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	a, b := uuid.New(), uuid.New()
	var got uuid.UUID
	var text string
	if err := pool.QueryRow(ctx, `SELECT $1::uuid, $1::uuid::text`, a).Scan(&got, &text); err != nil {
		t.Fatal(err)
	}
	if got != a || text != a.String() {
		t.Fatalf("scalar: %s %s, want %s", got, text, a)
	}
	var arr []uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT $1::uuid[]`, []uuid.UUID{a, b}).Scan(&arr); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(arr, []uuid.UUID{a, b}) {
		t.Fatalf("array: %v", arr)
	}
	var null *uuid.UUID = &a
	var some *uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT NULL::uuid, $1::uuid`, &b).Scan(&null, &some); err != nil {
		t.Fatal(err)
	}
	if null != nil || some == nil || *some != b {
		t.Fatalf("nullable: %v %v", null, some)
	}
}

// TestUUIDNullIntoValue: a NULL into a non-pointer UUID is an error, not a
// silent zero.
func TestUUIDNullIntoValue(t *testing.T) {
	ctx := context.Background()
	url, _ := testsupport.NewDatabase(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AfterConnect = db.RegisterTypes
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var got uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT NULL::uuid`).Scan(&got); err == nil {
		t.Fatal("NULL scanned into uuid.UUID without an error")
	}
}
