package postgresql

import (
	"bytes"
	"strings"

	"github.com/rahatback/rahatback/pipeline"
)

// CopyCounter is an io.Writer that reads a pg_dump plain-format (-Fp) SQL
// stream and counts the data rows of every "COPY ... FROM stdin;" block: the
// lines after the statement up to the terminating "\." line, each line one
// row (text-format COPY escapes newlines inside values, so a table without
// columns has one empty line per row).
//
// Outside COPY data it follows the SQL lexical structure the way psql does
// (quoted strings and identifiers, dollar quotes, comments, backslash
// meta-commands such as \restrict), so a COPY statement quoted inside a
// function body or a comment does not count, and only a COPY that starts a
// statement does. Names are unquoted ("Weird ""Name""" gives Weird "Name")
// and unquoted ones lowercased as PostgreSQL does; an unqualified name has
// Schema "". Blocks loading the same table (pg_dump
// --load-via-partition-root) add up into one pipeline.TableCount.
//
// It keeps no lines, only a few bytes of state plus the table names, and
// scans COPY data with bytes.IndexByte and bytes.Count. Write never fails.
// A stream that ends inside a COPY block leaves that table with the rows
// seen so far. Not safe for concurrent use.
type CopyCounter struct {
	mode lexMode

	// modeNormal
	stmtStart      bool // no token since the last ';' or the beginning
	savedStmtStart bool // stmtStart before maybeComment
	maybeComment   byte // a '-' or '/' that may open a comment
	prev           byte // the previous byte of modeNormal
	identLen       int  // length, capped, of the identifier run ending at prev

	quoteEnd     bool   // modeSingle, modeSingleE, modeDouble: saw a quote that ends or doubles
	escape       bool   // modeSingleE: the previous byte was a backslash
	commentDepth int    // modeBlockComment
	commentPrev  byte   // modeBlockComment
	dollarTag    []byte // modeDollarTag: "$tag"; modeDollar: "$tag$"
	dollarMatch  int    // modeDollar: bytes of dollarTag matched

	// The COPY statement being read.
	hdr     hdrState
	kw      int      // bytes of "copy" matched
	parts   [][]byte // the parts of the qualified name
	tail    [tailSize]byte
	tailLen int // bytes ever added to tail

	// modeData
	line lineState
	cur  int // index in tables of the table being loaded

	tables []pipeline.TableCount
	hashes []pipeline.RowHash // of tables
	index  map[[2]string]int

	// Object headers: the "-- Name: …; Type: …; Schema: …; Owner: …"
	// comment pg_dump writes at the start of a line before every object.
	dashPrev byte   // prev before the '-' that may open a comment
	capture  bool   // modeLineComment: the comment starts a line
	comment  []byte // its text, capped at maxComment
	objects  []pipeline.SchemaObject
	seen     map[pipeline.SchemaObject]bool
}

type lexMode uint8

const (
	modeNormal       lexMode = iota
	modeLineComment          // -- to the end of the line
	modeBlockComment         // /* */, nested
	modeSingle               // '...' with standard_conforming_strings
	modeSingleE              // E'...' with backslash escapes
	modeDouble               // "..."
	modeDollarTag            // after a '$' that may open a dollar quote
	modeDollar               // $tag$...$tag$
	modeMeta                 // a psql backslash command, to the end of the line
	modeCopyEOL              // rest of the line of a COPY ... FROM stdin;
	modeData                 // COPY data
)

type hdrState uint8

const (
	hdrNone    hdrState = iota
	hdrKeyword          // matching "copy"
	hdrPreName          // spaces before the table name
	hdrName             // in the table name
	hdrRest             // after the name: columns, FROM stdin
)

// lineState is where modeData is in the current line.
type lineState uint8

const (
	lineStart   lineState = iota // nothing of the line yet
	lineBS                       // the line so far is `\`
	lineBSDot                    // `\.`
	lineBSDotCR                  // `\.` CR
	lineMid                      // a data row
)

const (
	tailSize        = 32   // > len(" from stdin") plus trailing spaces
	maxNamePart     = 1024 // PostgreSQL names are at most 63 bytes
	maxNameParts    = 4
	maxDollarTagLen = 1024
	maxIdentLen     = 1 << 20
	maxComment      = 4096
)

// NewCopyCounter returns a CopyCounter at the beginning of a dump.
func NewCopyCounter() *CopyCounter {
	return &CopyCounter{stmtStart: true, index: make(map[[2]string]int), seen: map[pipeline.SchemaObject]bool{}}
}

// Tables returns the rows and content hash (pipeline.RowHash over each
// row's COPY text) of every table with a COPY block so far, in dump order.
// The slice is a copy.
func (c *CopyCounter) Tables() []pipeline.TableCount {
	out := make([]pipeline.TableCount, len(c.tables))
	copy(out, c.tables)
	for i := range out {
		out[i].Hash = c.hashes[i].String()
	}
	return out
}

// Objects returns the schema objects named by pg_dump's object headers so
// far ("-- Name: orders; Type: TABLE; Schema: public; Owner: -"), each
// once, in dump order: Type is pg_dump's (TABLE, VIEW, MATERIALIZED VIEW,
// FUNCTION, PROCEDURE, TRIGGER, INDEX, SEQUENCE, CONSTRAINT, DOMAIN…), Name
// as pg_dump spells it (a function with its argument types, a trigger or
// constraint after its table's name). The public schema and sequence
// values (SEQUENCE SET, data) are left out. The slice is a copy.
func (c *CopyCounter) Objects() []pipeline.SchemaObject {
	return append([]pipeline.SchemaObject(nil), c.objects...)
}

// objectHeader reads one object header comment (without its "--").
func (c *CopyCounter) objectHeader(line []byte) {
	s, ok := strings.CutPrefix(strings.TrimRight(string(line), "\r"), " Name: ")
	if !ok {
		return
	}
	cut := func(sep string) (string, bool) {
		i := strings.LastIndex(s, sep)
		if i < 0 {
			return "", false
		}
		v := s[i+len(sep):]
		s = s[:i]
		return v, true
	}
	if _, ok := cut("; Owner: "); !ok {
		return
	}
	schema, ok1 := cut("; Schema: ")
	typ, ok2 := cut("; Type: ")
	if !ok1 || !ok2 || s == "" {
		return
	}
	if schema == "-" {
		schema = ""
	}
	switch {
	case typ == "SCHEMA" && s == "public":
		// pg_dump lists the public schema only when its owner differs from
		// the default, and these dumps carry no owners: a restore of one
		// that lists it does not.
		return
	case typ == "SEQUENCE SET":
		return // a sequence's value: data, not a schema object
	}
	o := pipeline.SchemaObject{Type: typ, Schema: schema, Name: s}
	if !c.seen[o] {
		c.seen[o] = true
		c.objects = append(c.objects, o)
	}
}

// Write counts the rows in p and returns len(p), nil.
func (c *CopyCounter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		var k int
		switch c.mode {
		case modeData:
			k = c.data(p)
		case modeNormal:
			k = c.normal(p)
		case modeLineComment, modeMeta:
			k = bytes.IndexByte(p, '\n')
			end := k >= 0
			if !end {
				k = len(p)
			} else {
				// The newline stays for modeNormal: it ends the line.
				c.mode = modeNormal
			}
			if c.capture {
				c.comment = append(c.comment, p[:min(k, max(maxComment-len(c.comment), 0))]...)
				if end {
					c.capture = false
					c.objectHeader(c.comment)
				}
			}
		case modeBlockComment:
			k = c.blockComment(p)
		case modeSingle, modeDouble:
			k = c.quoted(p)
		case modeSingleE:
			k = c.escapeString(p)
		case modeDollarTag:
			k = c.dollarTagByte(p[0])
		case modeDollar:
			k = c.dollarQuoted(p)
		case modeCopyEOL:
			k = bytes.IndexByte(p, '\n')
			if k < 0 {
				k = len(p)
			} else {
				k++
				c.mode, c.line = modeData, lineStart
			}
		}
		p = p[k:]
	}
	return n, nil
}

// data counts and hashes rows until the terminating `\.` line and returns
// the bytes consumed. Every newline before the terminator ends a row; a row
// is hashed as it is spelled, without its newline. Whole lines are found
// with bytes.IndexByte, so short rows cost little more than long ones.
func (c *CopyCounter) data(p []byte) int {
	h := &c.hashes[c.cur]
	start, i := 0, 0
	for i < len(p) {
		if c.line == lineMid {
			k := bytes.IndexByte(p[i:], '\n')
			if k < 0 {
				break
			}
			i += k
			h.Part(p[start:i])
			c.endRow(h)
			i++
			start = i
			continue
		}
		// The start of a line, which may be the terminator: byte by byte.
		b := p[i]
		switch {
		case b == '\n' && (c.line == lineBSDot || c.line == lineBSDotCR):
			h.Discard()
			c.endCopy()
			return i + 1
		case b == '\n':
			h.Part(p[start:i])
			c.endRow(h)
			start = i + 1
		case b == '\\' && c.line == lineStart:
			c.line = lineBS
		case b == '.' && c.line == lineBS:
			c.line = lineBSDot
		case b == '\r' && c.line == lineBSDot:
			c.line = lineBSDotCR
		default:
			// A line starting `\.` but longer is data (COPY escapes every
			// backslash of a value, so pg_dump never writes one).
			c.line = lineMid
		}
		i++
	}
	h.Part(p[start:])
	return len(p)
}

func (c *CopyCounter) endRow(h *pipeline.RowHash) {
	h.End()
	c.tables[c.cur].Rows++
	c.line = lineStart
}

func (c *CopyCounter) endCopy() {
	c.mode = modeNormal
	c.stmtStart, c.prev, c.identLen, c.maybeComment = true, '\n', 0, 0
}

// normal lexes SQL outside quotes and comments byte by byte (the schema part
// of a dump is small) until the mode changes; it returns the bytes consumed.
func (c *CopyCounter) normal(p []byte) int {
	for i, b := range p {
		if m := c.maybeComment; m != 0 {
			c.maybeComment = 0
			if m == '-' && b == '-' {
				c.mode, c.stmtStart = modeLineComment, c.savedStmtStart
				c.capture = c.dashPrev == '\n' || c.dashPrev == 0
				c.comment = c.comment[:0]
				return i + 1
			}
			if m == '/' && b == '*' {
				c.mode, c.stmtStart = modeBlockComment, c.savedStmtStart
				c.commentDepth, c.commentPrev = 1, 0
				return i + 1
			}
		}
		if c.hdr != hdrNone {
			c.header(b)
		}
		switch {
		case b == ';':
			if c.hdr == hdrRest && c.fromStdin() {
				c.beginCopy()
				c.mode = modeCopyEOL
				return i + 1
			}
			c.hdr = hdrNone
			c.stmtStart, c.identLen = true, 0
		case isSpace(b):
			c.identLen = 0
		case b == '\'':
			c.mode = modeSingle
			if c.identLen == 1 && (c.prev == 'E' || c.prev == 'e') {
				c.mode = modeSingleE
			}
			c.stmtStart, c.identLen, c.quoteEnd, c.escape = false, 0, false, false
			return i + 1
		case b == '"':
			c.mode, c.quoteEnd = modeDouble, false
			c.stmtStart, c.identLen = false, 0
			return i + 1
		case b == '$' && c.identLen == 0:
			c.mode = modeDollarTag
			c.dollarTag = append(c.dollarTag[:0], '$')
			c.stmtStart = false
			return i + 1
		case b == '\\':
			c.mode, c.identLen = modeMeta, 0
			return i + 1
		case b == '-' || b == '/':
			c.maybeComment, c.savedStmtStart, c.dashPrev = b, c.stmtStart, c.prev
			c.stmtStart, c.identLen = false, 0
		case isIdentChar(b):
			if c.stmtStart && c.identLen == 0 && b|0x20 == 'c' {
				c.hdr, c.kw, c.tailLen = hdrKeyword, 1, 0
			}
			c.stmtStart = false
			if c.identLen < maxIdentLen {
				c.identLen++
			}
		default:
			c.stmtStart, c.identLen = false, 0
		}
		c.prev = b
	}
	return len(p)
}

// header follows a statement starting with COPY, one modeNormal byte at a
// time; modeDouble adds quoted name parts.
func (c *CopyCounter) header(b byte) {
	switch c.hdr {
	case hdrKeyword:
		switch {
		case c.kw < 4 && b|0x20 == "copy"[c.kw]:
			c.kw++
		case c.kw == 4 && isSpace(b):
			c.hdr = hdrPreName
			c.parts = c.parts[:0]
		default:
			c.hdr = hdrNone
		}
	case hdrPreName:
		switch {
		case isSpace(b):
		case b == '"':
			c.hdr = hdrName
			c.newPart()
		case isIdentStart(b):
			c.hdr = hdrName
			c.newPart()
			c.addName(lower(b))
		default:
			c.hdr = hdrNone
		}
	case hdrName:
		switch {
		case b == '.':
			c.newPart()
		case b == '"':
		case isIdentChar(b):
			c.addName(lower(b))
		default:
			c.hdr = hdrRest
			c.addTail(b)
		}
	case hdrRest:
		if b != ';' {
			c.addTail(b)
		}
	}
}

func (c *CopyCounter) newPart() {
	if len(c.parts) == maxNameParts {
		first := c.parts[0][:0]
		copy(c.parts, c.parts[1:])
		c.parts[len(c.parts)-1] = first
		return
	}
	if len(c.parts) < cap(c.parts) {
		c.parts = c.parts[:len(c.parts)+1]
		c.parts[len(c.parts)-1] = c.parts[len(c.parts)-1][:0]
		return
	}
	c.parts = append(c.parts, nil)
}

func (c *CopyCounter) addName(s ...byte) {
	last := &c.parts[len(c.parts)-1]
	if room := maxNamePart - len(*last); room < len(s) {
		s = s[:max(room, 0)]
	}
	*last = append(*last, s...)
}

func (c *CopyCounter) addTail(b byte) {
	c.tail[c.tailLen%tailSize] = lower(b)
	c.tailLen++
}

// fromStdin reports whether the statement read so far ends in FROM stdin,
// in any case, before optional spaces.
func (c *CopyCounter) fromStdin() bool {
	var buf [tailSize]byte
	n := min(c.tailLen, tailSize)
	for j := range n {
		buf[j] = c.tail[(c.tailLen-n+j)%tailSize]
	}
	s := bytes.TrimRightFunc(buf[:n], func(r rune) bool { return r < 0x80 && isSpace(byte(r)) })
	s, ok := bytes.CutSuffix(s, []byte("stdin"))
	if !ok {
		return false
	}
	t := bytes.TrimRightFunc(s, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) })
	if len(t) == len(s) {
		return false
	}
	t, ok = bytes.CutSuffix(t, []byte("from"))
	return ok && (len(t) == 0 || !isIdentChar(t[len(t)-1]))
}

func (c *CopyCounter) beginCopy() {
	var key [2]string
	switch n := len(c.parts); n {
	case 0:
	case 1:
		key[1] = string(c.parts[0])
	default:
		key[0], key[1] = string(c.parts[n-2]), string(c.parts[n-1])
	}
	i, ok := c.index[key]
	if !ok {
		i = len(c.tables)
		c.tables = append(c.tables, pipeline.TableCount{Schema: key[0], Name: key[1]})
		c.hashes = append(c.hashes, pipeline.RowHash{})
		c.index[key] = i
	}
	c.cur = i
	c.hdr = hdrNone
}

func (c *CopyCounter) blockComment(p []byte) int {
	for i, b := range p {
		switch {
		case c.commentPrev == '/' && b == '*':
			c.commentDepth++
			c.commentPrev = 0
		case c.commentPrev == '*' && b == '/':
			c.commentDepth--
			c.commentPrev = 0
			if c.commentDepth == 0 {
				c.mode = modeNormal
				c.prev, c.identLen = ' ', 0
				return i + 1
			}
		default:
			c.commentPrev = b
		}
	}
	return len(p)
}

// quoted reads a '...' string (standard_conforming_strings, which pg_dump
// sets) or a "..." identifier; a doubled quote stands for itself. The
// content of a quoted part of a COPY table name is kept.
func (c *CopyCounter) quoted(p []byte) int {
	q := byte('\'')
	if c.mode == modeDouble {
		q = '"'
	}
	keep := c.mode == modeDouble && c.hdr == hdrName
	i := 0
	for i < len(p) {
		if c.quoteEnd {
			c.quoteEnd = false
			if p[i] != q {
				c.mode = modeNormal
				c.prev, c.identLen = q, 0
				return i
			}
			if keep {
				c.addName(q)
			}
			i++
			continue
		}
		j := bytes.IndexByte(p[i:], q)
		if j < 0 {
			if keep {
				c.addName(p[i:]...)
			}
			return len(p)
		}
		if keep {
			c.addName(p[i : i+j]...)
		}
		i += j + 1
		c.quoteEnd = true
	}
	return len(p)
}

// escapeString reads an E'...' string, where a backslash escapes the next
// byte.
func (c *CopyCounter) escapeString(p []byte) int {
	for i, b := range p {
		switch {
		case c.quoteEnd:
			c.quoteEnd = false
			if b != '\'' {
				c.mode = modeNormal
				c.prev, c.identLen = '\'', 0
				return i
			}
		case c.escape:
			c.escape = false
		case b == '\\':
			c.escape = true
		case b == '\'':
			c.quoteEnd = true
		}
	}
	return len(p)
}

// dollarTagByte reads the tag after a '$': "$tag$" opens a dollar quote;
// anything else ($1, a lone $) was not one and goes back to modeNormal
// unconsumed.
func (c *CopyCounter) dollarTagByte(b byte) int {
	switch {
	case b == '$':
		c.dollarTag = append(c.dollarTag, '$')
		c.mode, c.dollarMatch = modeDollar, 0
		return 1
	case len(c.dollarTag) < maxDollarTagLen &&
		(isIdentStart(b) || len(c.dollarTag) > 1 && isIdentChar(b)):
		c.dollarTag = append(c.dollarTag, b)
		return 1
	}
	c.mode = modeNormal
	c.prev, c.identLen = '$', 0
	return 0
}

// dollarQuoted skips to the closing $tag$. The tag holds no '$' but at its
// ends, so after a mismatch the match restarts at a '$' or from nothing.
func (c *CopyCounter) dollarQuoted(p []byte) int {
	tag := c.dollarTag
	for i := 0; i < len(p); {
		if c.dollarMatch == 0 {
			j := bytes.IndexByte(p[i:], '$')
			if j < 0 {
				return len(p)
			}
			i += j
		}
		b := p[i]
		i++
		switch {
		case b == tag[c.dollarMatch]:
			c.dollarMatch++
			if c.dollarMatch == len(tag) {
				c.mode = modeNormal
				c.prev, c.identLen = '$', 0
				return i
			}
		case b == '$':
			c.dollarMatch = 1
		default:
			c.dollarMatch = 0
		}
	}
	return len(p)
}

// Byte classes of the SQL lexer, looked up rather than compared because
// modeNormal tests every byte of the schema part of a dump.
const (
	clsSpace = 1 << iota
	clsIdentStart
	clsIdentChar
)

var byteClass = func() (t [256]uint8) {
	for _, b := range []byte(" \n\t\r\f\v") {
		t[b] = clsSpace
	}
	for b := range 256 {
		// PostgreSQL's ident_start: letters, '_' and any non-ASCII byte;
		// ident_cont adds digits and '$'.
		if b|0x20 >= 'a' && b|0x20 <= 'z' || b == '_' || b >= 0x80 {
			t[b] = clsIdentStart | clsIdentChar
		}
		if b >= '0' && b <= '9' || b == '$' {
			t[b] = clsIdentChar
		}
	}
	return t
}()

func isSpace(b byte) bool      { return byteClass[b]&clsSpace != 0 }
func isIdentStart(b byte) bool { return byteClass[b]&clsIdentStart != 0 }
func isIdentChar(b byte) bool  { return byteClass[b]&clsIdentChar != 0 }

func lower(b byte) byte {
	if b >= 'A' && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}
