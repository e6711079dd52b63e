package db

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// RegisterTypes teaches conn's type map to send and read
// github.com/google/uuid values as binary UUIDs, arrays included. Without
// it pgx goes through uuid's driver.Valuer and sql.Scanner for every UUID:
// a string, a failed binary encoding (an error built each time), a parse.
// Use it as pgxpool.Config.AfterConnect.
func RegisterTypes(_ context.Context, conn *pgx.Conn) error {
	m := conn.TypeMap()
	elem := &pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: uuidCodec{}}
	m.RegisterType(elem)
	m.RegisterType(&pgtype.Type{Name: "_uuid", OID: pgtype.UUIDArrayOID, Codec: &pgtype.ArrayCodec{ElementType: elem}})
	return nil
}

// uuidCodec is pgx's UUIDCodec that also encodes uuid.UUID and scans
// into *uuid.UUID directly.
type uuidCodec struct{ pgtype.UUIDCodec }

func (c uuidCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(uuid.UUID); ok {
		if format == pgtype.BinaryFormatCode {
			return uuidBinaryEncode{}
		}
		return uuidTextEncode{}
	}
	return c.UUIDCodec.PlanEncode(m, oid, format, value)
}

func (c uuidCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if _, ok := target.(*uuid.UUID); ok {
		if format == pgtype.BinaryFormatCode {
			return uuidBinaryScan{}
		}
		return uuidTextScan{}
	}
	return c.UUIDCodec.PlanScan(m, oid, format, target)
}

type uuidBinaryEncode struct{}

func (uuidBinaryEncode) Encode(value any, buf []byte) ([]byte, error) {
	u := value.(uuid.UUID)
	return append(buf, u[:]...), nil
}

type uuidTextEncode struct{}

func (uuidTextEncode) Encode(value any, buf []byte) ([]byte, error) {
	return append(buf, value.(uuid.UUID).String()...), nil
}

type uuidBinaryScan struct{}

func (uuidBinaryScan) Scan(src []byte, target any) error {
	if src == nil {
		return fmt.Errorf("cannot scan NULL into %T", target)
	}
	if len(src) != 16 {
		return fmt.Errorf("invalid length for uuid: %d", len(src))
	}
	copy(target.(*uuid.UUID)[:], src)
	return nil
}

type uuidTextScan struct{}

func (uuidTextScan) Scan(src []byte, target any) error {
	if src == nil {
		return fmt.Errorf("cannot scan NULL into %T", target)
	}
	u, err := uuid.ParseBytes(src)
	if err != nil {
		return err
	}
	*target.(*uuid.UUID) = u
	return nil
}
