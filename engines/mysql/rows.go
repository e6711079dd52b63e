package mysql

import (
	"bytes"

	"github.com/rahatback/rahatback/pipeline"
)

// rowCounter is an io.Writer that reads a mariadb-dump stream and counts
// the rows of every table: each "-- Dumping data for table `t`" comment
// names a table (with 0 rows until its INSERTs), and each row is a
// parenthesised tuple of an "INSERT INTO `t` VALUES (…),(…);" statement,
// which starts a line and may span several (MariaDB 10.11 puts each tuple
// on a line of its own). Inside the tuples it follows single-quoted
// strings with their backslash escapes, so parentheses in values do not
// count; binary columns are hex with --hex-blob. Lines between
// "DELIMITER ;;" and "DELIMITER ;" (routine and trigger bodies) are never
// counted. It keeps at most maxHead bytes of a line; Write never fails.
type rowCounter struct {
	mode      int
	head      []byte
	inRoutine bool
	// modeColumns
	pending  string // the table whose INSERT lists its columns
	colQuote bool   // inside a backquoted column name
	// modeValues
	inString, escape bool
	depth            int
	cur              int

	tupleFrom int // where the tuple being read started in this Write

	tables []pipeline.TableCount
	hashes []pipeline.RowHash // of tables
	index  map[string]int

	// Schema objects: from the comments naming tables and views, the
	// index and constraint lines of a CREATE TABLE, and the CREATE lines
	// of triggers, routines and events.
	createTable string // the table whose CREATE TABLE is being read
	objects     []pipeline.SchemaObject
	seen        map[pipeline.SchemaObject]bool
}

const (
	modeHead         = iota // reading the start of a line
	modeSkip                // the rest of the line does not matter
	modeValues              // inside an INSERT's VALUES
	modeColumns             // inside an INSERT's column list
	modeAfterColumns        // between the column list and VALUES
)

// maxHead bounds the start of a line kept: the longest table name
// (64 characters, 4 bytes each, every backquote doubled) fits.
const maxHead = 1024

var (
	insertPrefix  = []byte("INSERT INTO `")
	dumpingPrefix = []byte("-- Dumping data for table `")
	valuesWord    = []byte(" VALUES")
)

func newRowCounter() *rowCounter {
	return &rowCounter{index: map[string]int{}, seen: map[pipeline.SchemaObject]bool{}}
}

// Tables is the tables seen so far in order, with their rows and content
// hash (pipeline.RowHash over each tuple as the dump spells it).
func (c *rowCounter) Tables() []pipeline.TableCount {
	out := make([]pipeline.TableCount, len(c.tables))
	copy(out, c.tables)
	for i := range out {
		out[i].Hash = c.hashes[i].String()
	}
	return out
}

// Objects is the schema objects seen so far, each once, in dump order:
// TABLE, VIEW, INDEX and CONSTRAINT (named "table.name"), TRIGGER,
// PROCEDURE, FUNCTION, EVENT.
func (c *rowCounter) Objects() []pipeline.SchemaObject {
	return append([]pipeline.SchemaObject(nil), c.objects...)
}

func (c *rowCounter) addObject(typ, name string) {
	o := pipeline.SchemaObject{Type: typ, Name: name}
	if !c.seen[o] {
		c.seen[o] = true
		c.objects = append(c.objects, o)
	}
}

// Lines that name schema objects, outside and inside DELIMITER ;; blocks.
var (
	objectPrefixes = [][]byte{[]byte("-- Table structure for table `"), []byte("-- Temporary table structure for view `"),
		[]byte("-- Final view structure for view `"), []byte("CREATE TABLE `"), []byte("  PRIMARY KEY ("),
		[]byte("  UNIQUE KEY `"), []byte("  KEY `"), []byte("  FULLTEXT KEY `"), []byte("  SPATIAL KEY `"),
		[]byte("  CONSTRAINT `"), []byte(") ENGINE=")}
	routinePrefixes = [][]byte{[]byte("/*!50003 CREATE*/ "), []byte("/*!50106 CREATE*/ "), []byte("CREATE ")}
)

// keepLine reports whether head, the start of a line, may be one of
// prefixes (or is one, with the rest still to come).
func keepLine(head []byte, prefixes [][]byte) (is, may bool) {
	for _, p := range prefixes {
		if bytes.HasPrefix(head, p) {
			return true, true
		}
		if bytes.HasPrefix(p, head) {
			may = true
		}
	}
	return false, may
}

// object reads a line (or its first maxHead bytes) that names a schema
// object.
func (c *rowCounter) object(line []byte) {
	name := func(prefix string) (string, bool) {
		rest, ok := bytes.CutPrefix(line, []byte(prefix))
		if !ok {
			return "", false
		}
		n, _, ok := quotedName(append(bytes.Clone(rest), '\n'))
		return n, ok
	}
	if c.inRoutine {
		// Triggers and events: /*!50003 CREATE*/ /*!50017 DEFINER=…*/
		// /*!50003 TRIGGER `t` …; routines: CREATE DEFINER=… PROCEDURE `p`(…
		if i := bytes.Index(line, []byte("DEFINER=`")); i >= 0 {
			// Past the definer's user and host, which may hold anything.
			rest := append(bytes.Clone(line[i+len("DEFINER=`"):]), '\n')
			if _, n, ok := quotedName(rest); ok && bytes.HasPrefix(rest[n:], []byte("@`")) {
				if _, m, ok := quotedName(rest[n+2:]); ok {
					line = line[i+len("DEFINER=`")+n+2+m:]
				}
			}
		}
		best, kind := -1, ""
		for _, kw := range []string{"TRIGGER", "EVENT", "PROCEDURE", "FUNCTION"} {
			if i := bytes.Index(line, []byte(kw+" `")); i >= 0 && (best < 0 || i < best) {
				best, kind = i, kw
			}
		}
		if best >= 0 {
			rest := line[best+len(kind)+2:]
			if n, _, ok := quotedName(append(bytes.Clone(rest), '\n')); ok {
				c.addObject(kind, n)
			}
		}
		return
	}
	if n, ok := name("-- Table structure for table `"); ok {
		c.addObject("TABLE", n)
	} else if n, ok := name("-- Temporary table structure for view `"); ok {
		c.addObject("VIEW", n)
	} else if n, ok := name("-- Final view structure for view `"); ok {
		c.addObject("VIEW", n)
	} else if n, ok := name("CREATE TABLE `"); ok {
		c.createTable = n
	} else if bytes.HasPrefix(line, []byte(") ENGINE=")) {
		c.createTable = ""
	} else if c.createTable == "" {
		return
	} else if bytes.HasPrefix(line, []byte("  PRIMARY KEY (")) {
		c.addObject("INDEX", c.createTable+".PRIMARY")
	} else if n, ok := name("  CONSTRAINT `"); ok {
		c.addObject("CONSTRAINT", c.createTable+"."+n)
	} else {
		for _, p := range []string{"  UNIQUE KEY `", "  KEY `", "  FULLTEXT KEY `", "  SPATIAL KEY `"} {
			if n, ok := name(p); ok {
				c.addObject("INDEX", c.createTable+"."+n)
			}
		}
	}
}

func (c *rowCounter) table(name string) int {
	i, ok := c.index[name]
	if !ok {
		i = len(c.tables)
		c.index[name] = i
		c.tables = append(c.tables, pipeline.TableCount{Name: name})
		c.hashes = append(c.hashes, pipeline.RowHash{})
	}
	return i
}

func (c *rowCounter) Write(p []byte) (int, error) {
	for i := 0; i < len(p); {
		switch c.mode {
		case modeSkip:
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				return len(p), nil
			}
			i += j + 1
			c.mode, c.head = modeHead, c.head[:0]
		case modeValues:
			i = c.values(p, i)
		case modeColumns:
			i = c.columns(p, i)
		case modeAfterColumns:
			b := p[i]
			i++
			c.head = append(c.head, b)
			c.afterColumns()
		case modeHead:
			b := p[i]
			i++
			if b == '\n' {
				c.lineEnd()
				c.head = c.head[:0]
				continue
			}
			c.head = append(c.head, b)
			c.decide()
		}
	}
	return len(p), nil
}

// lineEnd handles a whole line kept in head: a DELIMITER line, the
// comment naming a table, or an INSERT whose tuples start on the next
// line.
func (c *rowCounter) lineEnd() {
	line := bytes.TrimRight(c.head, "\r ")
	switch {
	case bytes.Equal(line, []byte("DELIMITER ;;")):
		c.inRoutine = true
	case bytes.Equal(line, []byte("DELIMITER ;")):
		c.inRoutine = false
	case c.inRoutine:
		c.object(line)
	case bytes.HasPrefix(line, dumpingPrefix):
		if name, n, ok := quotedName(append(line[len(dumpingPrefix):], '\n')); ok && n == len(line)-len(dumpingPrefix) {
			c.table(name)
		}
	case bytes.HasPrefix(line, insertPrefix):
		name, n, ok := quotedName(append(line[len(insertPrefix):], '\n'))
		if ok && bytes.Equal(line[len(insertPrefix)+n:], valuesWord) {
			c.startValues(name)
		}
	default:
		c.object(line)
	}
}

// startValues counts the tuples that follow as rows of table name.
func (c *rowCounter) startValues(name string) {
	c.cur = c.table(name)
	c.mode, c.inString, c.escape, c.depth = modeValues, false, false, 0
}

// decide looks at the start of the line read so far: an INSERT of table
// data starts counting its tuples, a "Dumping data" comment names a table,
// anything else is skipped to the end of the line.
func (c *rowCounter) decide() {
	h := c.head
	if c.inRoutine {
		is, may := keepLine(h, routinePrefixes)
		switch {
		case bytes.HasPrefix([]byte("DELIMITER ;"), h):
		case is && len(h) >= maxHead:
			c.object(h)
			c.mode = modeSkip
		case !may:
			c.mode = modeSkip
		}
		return
	}
	if is, may := keepLine(h, objectPrefixes); may {
		if is && len(h) >= maxHead {
			c.object(h)
			c.mode = modeSkip
		}
		return
	}
	switch {
	case bytes.HasPrefix(h, insertPrefix):
		name, n, ok := quotedName(h[len(insertPrefix):])
		switch {
		case !ok && len(h) < maxHead:
			return // the name goes on
		case !ok:
			c.mode = modeSkip
			return
		}
		rest := h[len(insertPrefix)+n:]
		if len(rest) >= 2 && rest[0] == ' ' && rest[1] == '(' {
			// A column list (a table with invisible columns).
			c.pending, c.colQuote, c.mode = name, false, modeColumns
			c.columns(rest[2:], 0)
			return
		}
		if len(rest) <= len(valuesWord) {
			if !bytes.HasPrefix(valuesWord, rest) {
				c.mode = modeSkip // INSERT with a column list: not mariadb-dump's data
			}
			return // "… VALUES" may end the line: lineEnd decides
		}
		if !bytes.HasPrefix(rest, valuesWord) || rest[len(valuesWord)] != ' ' {
			c.mode = modeSkip
			return
		}
		c.startValues(name)
		c.values(rest[len(valuesWord):], 0)
	case bytes.HasPrefix(h, dumpingPrefix):
		if len(h) >= maxHead {
			c.mode = modeSkip
		}
		// lineEnd reads the name once the line is whole.
	case bytes.HasPrefix(insertPrefix, h), bytes.HasPrefix(dumpingPrefix, h), bytes.HasPrefix([]byte("DELIMITER ;;"), h):
		// still a possible start
	default:
		c.mode = modeSkip
	}
}

// columns skips an INSERT's column list of backquoted names up to its
// closing parenthesis, and returns where it stopped.
func (c *rowCounter) columns(p []byte, i int) int {
	for ; i < len(p); i++ {
		switch b := p[i]; {
		case b == '`':
			c.colQuote = !c.colQuote // a doubled backquote closes and reopens
		case c.colQuote:
		case b == ')':
			c.mode, c.head = modeAfterColumns, c.head[:0]
			return i + 1
		case b == '\n':
			c.mode, c.head = modeHead, c.head[:0]
			return i + 1
		}
	}
	return i
}

// afterColumns reads " VALUES" after a column list, then counts the
// tuples that follow as rows of the pending table.
func (c *rowCounter) afterColumns() {
	h := c.head
	if len(h) <= len(valuesWord) {
		if !bytes.HasPrefix(valuesWord, h) {
			c.mode = modeSkip
			if h[len(h)-1] == '\n' {
				c.mode, c.head = modeHead, c.head[:0]
			}
		}
		return
	}
	if next := h[len(valuesWord)]; next == ' ' || next == '\n' {
		c.startValues(c.pending)
		return
	}
	c.mode = modeSkip
}

// quotedName reads a backquoted name whose opening quote is already read:
// the name, the bytes it took with its closing quote, and ok once the
// closing quote is certain (it is followed by a byte that is not another
// backquote).
func quotedName(b []byte) (name string, n int, ok bool) {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] != '`' {
			out = append(out, b[i])
			continue
		}
		if i+1 >= len(b) {
			return "", 0, false
		}
		if b[i+1] == '`' {
			out = append(out, '`')
			i++
			continue
		}
		return string(out), i + 1, true
	}
	return "", 0, false
}

// backslashRun is the number of backslashes that end b.
func backslashRun(b []byte) int {
	n := 0
	for n < len(b) && b[len(b)-1-n] == '\\' {
		n++
	}
	return n
}

// values counts the tuples in p from i, up to the ';' that ends the
// statement, and returns where it stopped. It jumps from one byte that
// matters to the next with bytes.IndexAny.
func (c *rowCounter) values(p []byte, i int) int {
	c.tupleFrom = i
	end := c.scanValues(p, i)
	if c.depth > 0 {
		c.hashes[c.cur].Part(p[c.tupleFrom:end])
	}
	return end
}

// scanValues is values without the hash of a tuple that goes on past p.
func (c *rowCounter) scanValues(p []byte, i int) int {
	for i < len(p) {
		if c.inString {
			if c.escape {
				c.escape = false
				i++
				continue
			}
			// The next quote ends the string unless an odd run of
			// backslashes escapes it.
			j := bytes.IndexByte(p[i:], '\'')
			if j < 0 {
				c.escape = backslashRun(p[i:])%2 == 1
				return len(p)
			}
			if backslashRun(p[i:i+j])%2 == 0 {
				c.inString = false
			}
			i += j + 1
			continue
		}
		j := bytes.IndexAny(p[i:], "'();")
		if j < 0 {
			return len(p)
		}
		i += j
		switch p[i] {
		case '\'':
			c.inString = true
		case '(':
			if c.depth == 0 {
				c.tables[c.cur].Rows++
				c.tupleFrom = i
			}
			c.depth++
		case ')':
			c.depth--
			if c.depth == 0 {
				h := &c.hashes[c.cur]
				h.Part(p[c.tupleFrom : i+1])
				h.End()
			}
		case ';':
			if c.depth == 0 {
				c.mode = modeSkip // the rest of the line
				return i + 1
			}
		}
		i++
	}
	return i
}
