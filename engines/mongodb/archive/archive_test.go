package archive_test

import (
	"bytes"
	"errors"
	"hash/crc64"
	"io"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/rahatback/rahatback/engines/mongodb/archive"
)

func doc(t *testing.T, d bson.D) []byte {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sample writes an archive with a collection of n documents, an empty
// collection and a view, and returns it with the documents.
func sample(t *testing.T, n int) ([]byte, [][]byte) {
	t.Helper()
	var buf bytes.Buffer
	w, err := archive.NewWriter(&buf, archive.Header{ConcurrentCollections: 1, ServerVersion: "7.0.42", ToolVersion: "test"},
		[]archive.Namespace{
			{DB: "shop", Collection: "orders", Metadata: `{"indexes":[],"collectionName":"orders"}`},
			{DB: "shop", Collection: "empty", Metadata: `{"indexes":[],"collectionName":"empty"}`},
			{DB: "shop", Collection: "v", Metadata: `{"options":{"viewOn":"orders","pipeline":[]},"indexes":[],"collectionName":"v","type":"view"}`, Type: "view"},
		})
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	if err := w.Begin("shop", "orders"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		d := doc(t, bson.D{{Key: "_id", Value: int32(i)}, {Key: "s", Value: string(bytes.Repeat([]byte{'x'}, i%300))}})
		docs = append(docs, d)
		if err := w.Doc(d); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"orders", "empty", "v"} {
		if c != "orders" {
			if err := w.Begin("shop", c); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.End(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), docs
}

func readAll(b []byte) ([]archive.Item, *archive.Reader, error) {
	r, err := archive.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	var items []archive.Item
	for {
		it, err := r.Next()
		if err == io.EOF {
			return items, r, nil
		}
		if err != nil {
			return items, r, err
		}
		it.Doc = bytes.Clone(it.Doc)
		items = append(items, it)
	}
}

func TestRoundTrip(t *testing.T) {
	b, docs := sample(t, 1000)
	if !bytes.HasPrefix(b, []byte{0x6d, 0xe2, 0x99, 0x81}) {
		t.Fatalf("magic % x", b[:4])
	}
	items, r, err := readAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.Version != "0.1" || h.ServerVersion != "7.0.42" || h.ConcurrentCollections != 1 {
		t.Fatalf("header %+v", h)
	}
	if ns := r.Namespaces(); len(ns) != 3 || ns[2].Type != "view" || ns[0].Metadata != `{"indexes":[],"collectionName":"orders"}` {
		t.Fatalf("prelude %+v", ns)
	}
	var got [][]byte
	var ends []string
	for _, it := range items {
		if it.EOF {
			ends = append(ends, it.Collection)
		} else {
			got = append(got, it.Doc)
		}
	}
	if len(got) != len(docs) || len(ends) != 3 {
		t.Fatalf("%d documents and ends %v", len(got), ends)
	}
	for i := range docs {
		if !bytes.Equal(got[i], docs[i]) {
			t.Fatalf("document %d differs", i)
		}
	}
}

// TestLayout pins the bytes mongo-tools reads: the CRC-64 is the ECMA
// table's ("CRC-64/XZ", check value 0x995DC9BBDF1939FA), and an empty
// namespace is header(EOF false, CRC 0), terminator, header(EOF true,
// CRC 0), terminator.
func TestLayout(t *testing.T) {
	if got := crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ECMA)); got != 0x995DC9BBDF1939FA {
		t.Fatalf("CRC-64 check value %x", got)
	}
	b, _ := sample(t, 0)
	term := []byte{0xff, 0xff, 0xff, 0xff}
	h := func(coll string, eof bool) []byte {
		return doc(t, bson.D{{Key: "db", Value: "shop"}, {Key: "collection", Value: coll}, {Key: "EOF", Value: eof}, {Key: "CRC", Value: int64(0)}})
	}
	var want []byte
	for _, c := range []string{"orders", "empty", "v"} {
		want = append(want, h(c, false)...)
		want = append(want, term...)
		want = append(want, h(c, true)...)
		want = append(want, term...)
	}
	if !bytes.HasSuffix(b, want) {
		t.Fatal("the body of empty namespaces is not what mongorestore expects")
	}
	// The header and the prelude, byte for byte: concurrent_collections
	// and size are int32, keys in mongodump's order, then a terminator.
	var pre []byte
	pre = append(pre, doc(t, bson.D{{Key: "concurrent_collections", Value: int32(1)}, {Key: "version", Value: "0.1"},
		{Key: "server_version", Value: "7.0.42"}, {Key: "tool_version", Value: "test"}})...)
	for _, ns := range []struct{ coll, meta, typ string }{
		{"orders", `{"indexes":[],"collectionName":"orders"}`, ""},
		{"empty", `{"indexes":[],"collectionName":"empty"}`, ""},
		{"v", `{"options":{"viewOn":"orders","pipeline":[]},"indexes":[],"collectionName":"v","type":"view"}`, "view"},
	} {
		pre = append(pre, doc(t, bson.D{{Key: "db", Value: "shop"}, {Key: "collection", Value: ns.coll}, {Key: "metadata", Value: ns.meta},
			{Key: "size", Value: int32(0)}, {Key: "type", Value: ns.typ}})...)
	}
	pre = append(pre, term...)
	if !bytes.Equal(b[4:4+len(pre)], pre) {
		t.Fatal("the header and prelude are not what mongorestore reads")
	}
	// A namespace's CRC is CRC-64/ECMA of its documents' bytes, in order.
	b, docs := sample(t, 3)
	crc := crc64.New(crc64.MakeTable(crc64.ECMA))
	for _, d := range docs {
		crc.Write(d)
	}
	end := doc(t, bson.D{{Key: "db", Value: "shop"}, {Key: "collection", Value: "orders"}, {Key: "EOF", Value: true}, {Key: "CRC", Value: int64(crc.Sum64())}})
	if !bytes.Contains(b, end) {
		t.Fatal("the end block of orders does not carry the CRC-64 of its documents")
	}
}

// TestCorruption: every damage is found, as a format error.
func TestCorruption(t *testing.T) {
	b, _ := sample(t, 200)
	// The offset of a byte inside a document's string value.
	i := bytes.Index(b, bytes.Repeat([]byte{'x'}, 150))
	if i < 0 {
		t.Fatal("no document found")
	}
	flipped := bytes.Clone(b)
	flipped[i+10] = 'y'
	cut := b[:len(b)-30]
	for name, bad := range map[string][]byte{
		"FlippedByte":   flipped,
		"Truncated":     cut,
		"TrailingBytes": append(bytes.Clone(b), "\ngarbage\n"...),
		"WrongMagic":    append([]byte{1, 2, 3, 4}, b[4:]...),
		"Empty":         nil,
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := readAll(bad)
			if !errors.Is(err, archive.ErrFormat) {
				t.Fatalf("err %v, want ErrFormat", err)
			}
			t.Log(err)
		})
	}
	t.Run("MissingEnd", func(t *testing.T) {
		var buf bytes.Buffer
		w, err := archive.NewWriter(&buf, archive.Header{ServerVersion: "7.0.0"}, []archive.Namespace{{DB: "d", Collection: "a"}, {DB: "d", Collection: "b"}})
		if err != nil {
			t.Fatal(err)
		}
		w.Begin("d", "a")
		w.End()
		if err := w.Close(); err == nil {
			t.Fatal("Close accepted an unwritten namespace")
		}
		// An archive whose last namespace never ends: cut the end block
		// of "v" (its header and terminator) off a whole archive.
		end := doc(t, bson.D{{Key: "db", Value: "shop"}, {Key: "collection", Value: "v"}, {Key: "EOF", Value: true}, {Key: "CRC", Value: int64(0)}})
		cut := b[:len(b)-len(end)-4]
		_, _, err = readAll(cut)
		if !errors.Is(err, archive.ErrFormat) || !strings.Contains(err.Error(), "ends before 1 namespaces were ended") {
			t.Fatalf("reader: %v", err)
		}
	})
	t.Run("CutInPrelude", func(t *testing.T) {
		for _, n := range []int{4, 6, 40} {
			if _, _, err := readAll(b[:n]); !errors.Is(err, archive.ErrFormat) {
				t.Errorf("cut at %d: %v, want ErrFormat", n, err)
			}
		}
	})
	t.Run("WrongCRC", func(t *testing.T) {
		// A checksum that does not match the documents: rewrite the
		// orders end header with another CRC.
		end := doc(t, bson.D{{Key: "db", Value: "shop"}, {Key: "collection", Value: "orders"}, {Key: "EOF", Value: true}})
		j := bytes.Index(b, end[4:len(end)-1])
		if j < 0 {
			t.Fatal("end header not found")
		}
		bad := bytes.Clone(b)
		crcAt := j + len(end) - 5 + len("\x12CRC\x00")
		bad[crcAt] ^= 0xff
		_, _, err := readAll(bad)
		if !errors.Is(err, archive.ErrFormat) || !bytes.Contains([]byte(err.Error()), []byte("checksum")) {
			t.Fatalf("err %v, want a checksum mismatch", err)
		}
	})
}
