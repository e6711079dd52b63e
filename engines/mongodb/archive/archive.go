// Package archive writes and reads mongodump's archive format (the stream
// `mongodump --archive` writes and `mongorestore --archive` reads), version
// "0.1", the only one mongo-tools has ever written:
//
//	magic (0x8199e26d, little-endian)
//	header document, one metadata document per namespace, terminator
//	blocks: namespace header {db, collection, EOF: false, CRC: 0},
//	        documents, terminator
//	        namespace header {db, collection, EOF: true, CRC}, terminator
//
// The terminator is the four bytes FF FF FF FF. A namespace's CRC is the
// CRC-64 (ECMA table, as Go's hash/crc64 computes it) of the raw bytes of
// all its documents in order, stored bit for bit as an int64. Every
// namespace of the prelude (views and empty collections too) has exactly
// one end block.
package archive

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc64"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Magic starts every archive.
const Magic uint32 = 0x8199e26d

// Version is the archive version this package writes.
const Version = "0.1"

// MaxDocSize is the largest document the format (and MongoDB) allows.
const MaxDocSize = 16 << 20

var terminator = []byte{0xff, 0xff, 0xff, 0xff}

var crcTable = crc64.MakeTable(crc64.ECMA)

// Header is the archive's first document.
type Header struct {
	ConcurrentCollections int32  // how many namespaces a restore may interleave
	Version               string // the archive version
	ServerVersion         string // "X.Y.Z", which mongorestore requires
	ToolVersion           string
}

// Namespace is one collection or view of the prelude.
type Namespace struct {
	DB         string
	Collection string
	// Metadata is the canonical extended JSON mongodump writes:
	// {options, indexes, uuid, collectionName, type}.
	Metadata string
	// Type is "" for a collection, "view" or "timeseries".
	Type string
}

// ErrFormat is wrapped by every error about bytes that are not a valid
// archive (a wrong magic, a bad document, a checksum mismatch…).
var ErrFormat = errors.New("archive: not a valid mongodump archive")

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// Writer writes an archive: NewWriter writes the prelude, then each
// namespace of it is written with Begin, Doc… and End, one after another.
type Writer struct {
	w     *bufio.Writer
	open  map[string]bool // prelude namespaces not yet ended
	cur   string
	db    string
	coll  string
	crc   hash.Hash64
	inNS  bool
	count int64
}

func nsKey(db, coll string) string { return db + "\x00" + coll }

// NewWriter writes the magic number, h and the prelude of namespaces to w.
// Every namespace must then be written (Begin … End) before Close.
func NewWriter(w io.Writer, h Header, namespaces []Namespace) (*Writer, error) {
	aw := &Writer{w: bufio.NewWriterSize(w, 1<<20), open: map[string]bool{}, crc: crc64.New(crcTable)}
	if h.Version == "" {
		h.Version = Version
	}
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], Magic)
	aw.w.Write(magic[:])
	if err := aw.writeDoc(bson.D{{Key: "concurrent_collections", Value: h.ConcurrentCollections}, {Key: "version", Value: h.Version},
		{Key: "server_version", Value: h.ServerVersion}, {Key: "tool_version", Value: h.ToolVersion}}); err != nil {
		return nil, err
	}
	for _, ns := range namespaces {
		if ns.Collection == "" {
			return nil, errors.New("archive: a namespace without a collection name")
		}
		k := nsKey(ns.DB, ns.Collection)
		if aw.open[k] {
			return nil, fmt.Errorf("archive: namespace %s.%s listed twice", ns.DB, ns.Collection)
		}
		aw.open[k] = true
		if err := aw.writeDoc(bson.D{{Key: "db", Value: ns.DB}, {Key: "collection", Value: ns.Collection},
			{Key: "metadata", Value: ns.Metadata}, {Key: "size", Value: int32(0)}, {Key: "type", Value: ns.Type}}); err != nil {
			return nil, err
		}
	}
	if _, err := aw.w.Write(terminator); err != nil {
		return nil, err
	}
	return aw, nil
}

func (aw *Writer) writeDoc(d bson.D) error {
	b, err := bson.Marshal(d)
	if err != nil {
		return err
	}
	_, err = aw.w.Write(b)
	return err
}

func (aw *Writer) header(eof bool, crc uint64) error {
	return aw.writeDoc(bson.D{{Key: "db", Value: aw.db}, {Key: "collection", Value: aw.coll},
		{Key: "EOF", Value: eof}, {Key: "CRC", Value: int64(crc)}})
}

// Begin starts the documents of namespace db.coll, which the prelude
// must list and which must not have been written yet.
func (aw *Writer) Begin(db, coll string) error {
	if aw.inNS {
		return fmt.Errorf("archive: Begin(%s.%s) inside %s.%s", db, coll, aw.db, aw.coll)
	}
	k := nsKey(db, coll)
	if !aw.open[k] {
		return fmt.Errorf("archive: %s.%s is not in the prelude, or already written", db, coll)
	}
	aw.db, aw.coll, aw.cur, aw.inNS, aw.count = db, coll, k, true, 0
	aw.crc.Reset()
	return aw.header(false, 0)
}

// Doc writes one raw BSON document of the current namespace.
func (aw *Writer) Doc(raw []byte) error {
	if !aw.inNS {
		return errors.New("archive: Doc outside a namespace")
	}
	if err := checkDoc(raw); err != nil {
		return err
	}
	aw.crc.Write(raw)
	aw.count++
	_, err := aw.w.Write(raw)
	return err
}

// End ends the current namespace with its checksum.
func (aw *Writer) End() error {
	if !aw.inNS {
		return errors.New("archive: End outside a namespace")
	}
	if _, err := aw.w.Write(terminator); err != nil {
		return err
	}
	if err := aw.header(true, aw.crc.Sum64()); err != nil {
		return err
	}
	if _, err := aw.w.Write(terminator); err != nil {
		return err
	}
	delete(aw.open, aw.cur)
	aw.inNS = false
	return nil
}

// Close flushes the archive; it fails if a namespace of the prelude was
// not written.
func (aw *Writer) Close() error {
	if aw.inNS {
		return fmt.Errorf("archive: %s.%s not ended", aw.db, aw.coll)
	}
	if len(aw.open) > 0 {
		return fmt.Errorf("archive: %d namespaces of the prelude not written", len(aw.open))
	}
	return aw.w.Flush()
}

func checkDoc(raw []byte) error {
	if len(raw) < 5 || len(raw) > MaxDocSize || int(binary.LittleEndian.Uint32(raw)) != len(raw) || raw[len(raw)-1] != 0 {
		return formatErr("a malformed BSON document (%d bytes)", len(raw))
	}
	return nil
}

// Item is what Reader.Next returns: one document of a namespace, or the
// end of a namespace (EOF true), whose checksum was verified.
type Item struct {
	DB, Collection string
	// Doc is the raw document, valid until the next call of Next.
	Doc bson.Raw
	EOF bool
}

// Reader reads an archive and checks it as mongorestore does, and more:
// the magic, every document's framing, that the body's namespaces are
// the prelude's, each ended once with the right CRC-64, nothing written
// to a namespace after its end, and nothing after the last block.
type Reader struct {
	r       *bufio.Reader
	header  Header
	ns      []Namespace
	pending map[string]bool // prelude namespaces not yet ended
	ended   map[string]bool
	crcs    map[string]hash.Hash64
	inBlock bool
	db      string
	coll    string
	buf     []byte
	done    bool
}

// NewReader reads the magic, the header and the prelude of r.
func NewReader(r io.Reader) (*Reader, error) {
	ar := &Reader{r: bufio.NewReaderSize(r, 1<<20), pending: map[string]bool{}, ended: map[string]bool{}, crcs: map[string]hash.Hash64{}}
	var magic [4]byte
	if _, err := io.ReadFull(ar.r, magic[:]); err != nil {
		return nil, ar.readErr(err)
	}
	if binary.LittleEndian.Uint32(magic[:]) != Magic {
		return nil, formatErr("wrong magic number %x", magic)
	}
	doc, term, err := ar.readDocOrTerm()
	if err != nil {
		return nil, ar.readErr(err)
	}
	if term {
		return nil, formatErr("no header")
	}
	var h struct {
		ConcurrentCollections int32  `bson:"concurrent_collections"`
		Version               string `bson:"version"`
		ServerVersion         string `bson:"server_version"`
		ToolVersion           string `bson:"tool_version"`
	}
	if err := bson.Unmarshal(doc, &h); err != nil {
		return nil, formatErr("header: %v", err)
	}
	ar.header = Header(h)
	for {
		doc, term, err := ar.readDocOrTerm()
		if err != nil {
			return nil, ar.readErr(err)
		}
		if term {
			break
		}
		var ns struct {
			DB         string `bson:"db"`
			Collection string `bson:"collection"`
			Metadata   string `bson:"metadata"`
			Type       string `bson:"type"`
		}
		if err := bson.Unmarshal(doc, &ns); err != nil {
			return nil, formatErr("prelude: %v", err)
		}
		if ns.Collection == "" {
			return nil, formatErr("prelude: a namespace without a collection")
		}
		k := nsKey(ns.DB, ns.Collection)
		if ar.pending[k] {
			return nil, formatErr("prelude: %s.%s listed twice", ns.DB, ns.Collection)
		}
		ar.pending[k] = true
		ar.ns = append(ar.ns, Namespace(ns))
	}
	return ar, nil
}

// Header is the archive's header.
func (ar *Reader) Header() Header { return ar.header }

// Namespaces is the prelude, in the archive's order.
func (ar *Reader) Namespaces() []Namespace { return ar.ns }

func (ar *Reader) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return formatErr("the archive ends in the middle")
	}
	return err
}

// readDocOrTerm reads a terminator (term true) or one document into buf.
func (ar *Reader) readDocOrTerm() (doc []byte, term bool, err error) {
	var l [4]byte
	if _, err := io.ReadFull(ar.r, l[:]); err != nil {
		return nil, false, err
	}
	n := binary.LittleEndian.Uint32(l[:])
	if n == 0xffffffff {
		return nil, true, nil
	}
	if n < 5 || n > MaxDocSize {
		return nil, false, formatErr("a document of %d bytes", n)
	}
	if cap(ar.buf) < int(n) {
		ar.buf = make([]byte, n)
	}
	ar.buf = ar.buf[:n]
	copy(ar.buf, l[:])
	if _, err := io.ReadFull(ar.r, ar.buf[4:]); err != nil {
		return nil, false, ar.readErr(err)
	}
	if ar.buf[n-1] != 0 {
		return nil, false, formatErr("a document that does not end in a zero byte")
	}
	return ar.buf, false, nil
}

// Next returns the next document or namespace end. At the end of the
// archive it returns io.EOF, once it has checked that every namespace of
// the prelude was ended. Any other error wraps ErrFormat for bad bytes,
// or is r's own.
func (ar *Reader) Next() (Item, error) {
	if ar.done {
		return Item{}, io.EOF
	}
	for {
		if !ar.inBlock {
			doc, term, err := ar.readDocOrTerm()
			if errors.Is(err, io.EOF) {
				if len(ar.pending) > 0 {
					return Item{}, formatErr("the archive ends before %d namespaces were ended", len(ar.pending))
				}
				ar.done = true
				return Item{}, io.EOF
			}
			if err != nil {
				return Item{}, ar.readErr(err)
			}
			if term {
				return Item{}, formatErr("two terminators in a row")
			}
			h, err := parseNSHeader(doc)
			if err != nil {
				return Item{}, err
			}
			k := nsKey(h.db, h.coll)
			if ar.ended[k] {
				return Item{}, formatErr("%s.%s continues after its end", h.db, h.coll)
			}
			if !ar.pending[k] {
				return Item{}, formatErr("%s.%s is not in the prelude", h.db, h.coll)
			}
			crc := ar.crcs[k]
			if crc == nil {
				crc = crc64.New(crcTable)
				ar.crcs[k] = crc
			}
			if h.eof {
				// The end block holds no documents.
				if _, term, err := ar.readDocOrTerm(); err != nil {
					return Item{}, ar.readErr(err)
				} else if !term {
					return Item{}, formatErr("documents after the end of %s.%s", h.db, h.coll)
				}
				if got := crc.Sum64(); got != h.crc {
					return Item{}, formatErr("checksum mismatch in %s.%s: the documents hash to %016x, the archive says %016x", h.db, h.coll, got, h.crc)
				}
				delete(ar.pending, k)
				delete(ar.crcs, k)
				ar.ended[k] = true
				return Item{DB: h.db, Collection: h.coll, EOF: true}, nil
			}
			ar.inBlock, ar.db, ar.coll = true, h.db, h.coll
			continue
		}
		doc, term, err := ar.readDocOrTerm()
		if err != nil {
			return Item{}, ar.readErr(err)
		}
		if term {
			ar.inBlock = false
			continue
		}
		ar.crcs[nsKey(ar.db, ar.coll)].Write(doc)
		return Item{DB: ar.db, Collection: ar.coll, Doc: doc}, nil
	}
}

type nsHeader struct {
	db, coll string
	eof      bool
	crc      uint64
}

// parseNSHeader reads a namespace header strictly: only db, collection,
// EOF and CRC, with their types.
func parseNSHeader(doc []byte) (nsHeader, error) {
	var h nsHeader
	elems, err := bson.Raw(doc).Elements()
	if err != nil {
		return h, formatErr("a namespace header: %v", err)
	}
	for _, e := range elems {
		v := e.Value()
		var ok bool
		switch e.Key() {
		case "db":
			h.db, ok = v.StringValueOK()
		case "collection":
			h.coll, ok = v.StringValueOK()
		case "EOF":
			h.eof, ok = v.BooleanOK()
		case "CRC":
			var c int64
			c, ok = v.Int64OK()
			h.crc = uint64(c)
		}
		if !ok {
			return h, formatErr("a namespace header with field %q of type %s", e.Key(), v.Type)
		}
	}
	if h.coll == "" {
		return h, formatErr("a namespace header without a collection")
	}
	return h, nil
}
