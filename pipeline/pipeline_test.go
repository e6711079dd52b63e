package pipeline

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// mixedData returns n bytes of deterministic data mixing incompressible
// random runs, SQL-like repetitive lines and zeros, so that compressors use
// both their compressed and stored block kinds.
func mixedData(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, 0, n+4096)
	for i := 0; len(out) < n; i++ {
		switch i % 3 {
		case 0:
			chunk := make([]byte, 16<<10+r.IntN(64<<10))
			for j := range chunk {
				chunk[j] = byte(r.Uint32())
			}
			out = append(out, chunk...)
		case 1:
			for range 200 + r.IntN(800) {
				out = fmt.Appendf(out, "%d\tuser_%d\tuser%d@example.com\t2024-0%d-1%d 10:%02d:00+00\t\\N\n",
					r.IntN(1e6), r.IntN(1e4), r.IntN(1e4), 1+r.IntN(9), r.IntN(10), r.IntN(60))
			}
		case 2:
			out = append(out, make([]byte, r.IntN(32<<10))...)
		}
	}
	return out[:n]
}

// compress compresses data with c, writing it in pieces of an awkward size.
func compress(t testing.TB, c string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewCompressor(&buf, c)
	if err != nil {
		t.Fatalf("NewCompressor(%q): %v", c, err)
	}
	for p := data; len(p) > 0; {
		n := min(len(p), 7919)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// decompress returns what NewDecompressor's reader gives for data, and the
// first error of NewDecompressor, Read or Close.
func decompress(c string, data []byte) ([]byte, error) {
	return decompressWith(c, data, io.ReadAll)
}

// decompressCopy is decompress through io.Copy, which uses WriteTo.
func decompressCopy(c string, data []byte) ([]byte, error) {
	return decompressWith(c, data, func(r io.Reader) ([]byte, error) {
		var buf bytes.Buffer
		_, err := io.Copy(&buf, r)
		return buf.Bytes(), err
	})
}

func decompressWith(c string, data []byte, read func(io.Reader) ([]byte, error)) ([]byte, error) {
	r, err := NewDecompressor(bytes.NewReader(data), c)
	if err != nil {
		return nil, err
	}
	out, err := read(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return out, err
}

// closeRecorder is a real in-memory writer that remembers being closed.
type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestCompressionRoundTrip(t *testing.T) {
	t.Parallel()
	data := mixedData(5<<20, 1)
	for _, c := range []string{Zstd, Gzip, None} {
		t.Run(c, func(t *testing.T) {
			stored := compress(t, c, data)
			for name, dec := range map[string]func(string, []byte) ([]byte, error){"Read": decompress, "WriteTo": decompressCopy} {
				got, err := dec(c, stored)
				if err != nil {
					t.Fatalf("decompress with %s: %v", name, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("round trip with %s changed the data: got %d bytes, want %d", name, len(got), len(data))
				}
			}
			t.Logf("%s: %d -> %d bytes (%.1f%%)", c, len(data), len(stored), 100*float64(len(stored))/float64(len(data)))
			if c != None && len(stored) >= len(data) {
				t.Errorf("%s did not compress: %d >= %d", c, len(stored), len(data))
			}

			// Small and odd reads, checked by the standard reader tests.
			r, err := NewDecompressor(iotest.HalfReader(bytes.NewReader(stored)), c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := iotest.TestReader(r, data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCompressionEmptyAndClose(t *testing.T) {
	for _, c := range []string{Zstd, Gzip, None} {
		t.Run(c, func(t *testing.T) {
			var w closeRecorder
			cw, err := NewCompressor(&w, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := cw.Close(); err != nil {
				t.Fatal(err)
			}
			if w.closed {
				t.Error("Close closed the underlying writer")
			}
			if c != None && w.Len() == 0 {
				t.Error("empty input gave no stream at all")
			}
			got, err := decompress(c, w.Bytes())
			if err != nil || len(got) != 0 {
				t.Fatalf("decompress(empty stream) = %q, %v; want empty, nil", got, err)
			}
		})
	}
}

func TestDecompressCorrupt(t *testing.T) {
	t.Parallel()
	// Random data puts flipped bytes in stored blocks, SQL text in
	// entropy-coded ones.
	for _, tc := range []struct {
		c, data string
	}{{Zstd, "mixed"}, {Zstd, "sql"}, {Gzip, "mixed"}, {Gzip, "sql"}} {
		c := tc.c
		data := mixedData(1<<20, 2)
		if tc.data == "sql" {
			data = sqlDump(1 << 20)
		}
		stored := compress(t, c, data)
		n := len(stored)
		cases := map[string][]byte{
			"Empty":     {},
			"Truncated": stored[:n/2],
			"NoTrailer": stored[:n-4],
			"OneByte":   stored[:1],
			"WrongKind": compress(t, map[string]string{Zstd: Gzip, Gzip: Zstd}[c], data[:1000]),
		}
		for _, pos := range []int{n / 4, n / 2, 3 * n / 4, n - 1} {
			bad := bytes.Clone(stored)
			bad[pos] ^= 0xff
			cases[fmt.Sprintf("FlipAt%d", pos)] = bad
		}
		for name, in := range cases {
			t.Run(c+"/"+tc.data+"/"+name, func(t *testing.T) {
				for how, dec := range map[string]func(string, []byte) ([]byte, error){"Read": decompress, "WriteTo": decompressCopy} {
					got, err := dec(c, in)
					if err == nil {
						same := bytes.Equal(got, data)
						t.Fatalf("%s: no error for corrupt input (output equal to the original: %v, %d bytes)", how, same, len(got))
					}
					t.Logf("%s: %v", how, err)
				}
			})
		}
	}
}

// TestDecompressWriteToError checks that a failing destination's error is
// passed on as is, not blamed on the stream.
func TestDecompressWriteToError(t *testing.T) {
	data := mixedData(1<<20, 4)
	for _, c := range []string{Zstd, Gzip} {
		t.Run(c, func(t *testing.T) {
			r, err := NewDecompressor(bytes.NewReader(compress(t, c, data)), c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			_, err = io.Copy(&failAfter{limit: 1000}, r)
			if !errors.Is(err, errFull) || strings.Contains(err.Error(), "decompressing") {
				t.Fatalf("io.Copy error = %v; want %v unlabelled", err, errFull)
			}
		})
	}
}

func TestCompressionNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		valid bool
		ext   string
	}{
		{Zstd, true, ".zst"},
		{Gzip, true, ".gz"},
		{None, true, ""},
		{"", false, ""},
		{"ZSTD", false, ""},
		{"lz4", false, ""},
	} {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			if got := ValidCompression(tc.name); got != tc.valid {
				t.Errorf("ValidCompression = %v, want %v", got, tc.valid)
			}
			if got := Extension(tc.name); got != tc.ext {
				t.Errorf("Extension = %q, want %q", got, tc.ext)
			}
			_, errC := NewCompressor(io.Discard, tc.name)
			_, errD := NewDecompressor(strings.NewReader("x"), tc.name)
			if tc.valid && errC != nil {
				t.Errorf("NewCompressor: %v", errC)
			}
			if !tc.valid && (errC == nil || errD == nil) {
				t.Errorf("unknown compression accepted: NewCompressor %v, NewDecompressor %v", errC, errD)
			}
		})
	}
}

// failAfter accepts limit bytes, then fails.
type failAfter struct {
	buf   bytes.Buffer
	limit int
}

var errFull = errors.New("full")

func (f *failAfter) Write(p []byte) (int, error) {
	room := f.limit - f.buf.Len()
	if len(p) <= room {
		return f.buf.Write(p)
	}
	f.buf.Write(p[:room])
	return room, errFull
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestDigest(t *testing.T) {
	data := mixedData(3<<20+17, 3)
	want := sha256Hex(data)

	t.Run("Writer", func(t *testing.T) {
		var buf bytes.Buffer
		d := NewDigestWriter(&buf)
		if d.Sum() != sha256Hex(nil) || d.Size() != 0 {
			t.Fatalf("fresh DigestWriter: %s, %d", d.Sum(), d.Size())
		}
		r := mrand.New(mrand.NewPCG(3, 3))
		for p := data; len(p) > 0; {
			n := min(len(p), 1+r.IntN(100000))
			if _, err := d.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if d.Sum() != want || d.Size() != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("got %s, %d bytes; want %s, %d", d.Sum(), d.Size(), want, len(data))
		}
	})
	t.Run("WriterFailure", func(t *testing.T) {
		f := &failAfter{limit: 1000}
		d := NewDigestWriter(f)
		n, err := d.Write(data[:1500])
		if n != 1000 || !errors.Is(err, errFull) {
			t.Fatalf("Write = %d, %v; want 1000, %v", n, err, errFull)
		}
		if d.Size() != 1000 || d.Sum() != sha256Hex(data[:1000]) {
			t.Fatalf("after a short write: %d bytes, %s; want what was accepted", d.Size(), d.Sum())
		}
	})
	t.Run("Reader", func(t *testing.T) {
		d := NewDigestReader(iotest.HalfReader(bytes.NewReader(data)))
		got, err := io.ReadAll(d)
		if err != nil {
			t.Fatal(err)
		}
		if d.Sum() != want || d.Size() != int64(len(data)) || !bytes.Equal(got, data) {
			t.Fatalf("got %s, %d bytes; want %s, %d", d.Sum(), d.Size(), want, len(data))
		}
	})
}

// sampleDump mirrors the output of pg_dump 15 -Fp --clean --if-exists
// --no-owner --no-privileges, with the traps a line-based scanner falls
// into: COPY lines inside a function body, a comment and string literals,
// a \. line inside a dollar quote, quoted and qualified names, a name with
// a newline, a table without columns, and a table loaded twice
// (--load-via-partition-root).
const sampleDump = `--
-- PostgreSQL database dump
--

\restrict 4kQx0bZlY1mVxk8A9fpsSxv2WnCqJ2z1ZcVqF9fZbWq3rT7yHd2YjPwU1aLmN0e

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

DROP TABLE IF EXISTS public."Weird ""Name"" x";
DROP TABLE IF EXISTS "my.schema"."t.x";
DROP FUNCTION IF EXISTS public.loader();
DROP SCHEMA IF EXISTS "my.schema";
--
-- Name: my.schema; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA "my.schema";


--
-- Name: loader(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.loader() RETURNS text
    LANGUAGE plpgsql
    AS $_$
BEGIN
RETURN $$
COPY public.fake_in_function (a) FROM stdin;
1
\.
$$ || E'it''s \' COPY public.fake_e (a) FROM stdin;\n';
END $_$;


/* a block comment /* nested
COPY public.fake_block (a) FROM stdin;
*/ still comment */
SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    id integer NOT NULL,
    name text,
    email text,
    bio text
);


--
-- Name: TABLE users; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.users IS 'people
COPY public.fake_comment (a) FROM stdin;
\.
with ''quotes''';


CREATE TABLE "my.schema"."t.x" (
    id integer,
    "col ""q""" text
);


CREATE TABLE public."Weird ""Name"" x" (
    id integer
);


CREATE TABLE public."line
break" (
    a integer
);


CREATE TABLE public.nocols (
);


CREATE TABLE public.empty (
    a integer
);


--
-- Data for Name: users; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.users (id, name, email, bio) FROM stdin;
1	Alice	alice@example.com	line one\nline two
2	Bob	\N	tab\there
3	\N	\N	\N
4	Ünïcode	u@example.com	back\\slash \\. and \\.
5	Eve	eve@example.com	ends with backslash \\
\.


--
-- Data for Name: t.x; Type: TABLE DATA; Schema: my.schema; Owner: -
--

COPY "my.schema"."t.x" (id, "col ""q""") FROM stdin;
1	a\tb\nc\\d
2	\N
3	\n\\.\n
\.


--
-- Data for Name: Weird "Name" x; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public."Weird ""Name"" x" (id) FROM stdin;
1
2
3
\.


--
-- Data for Name: empty; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.empty (a) FROM stdin;
\.


--
-- Data for Name: line break; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public."line
break" (a) FROM stdin;
1
\.


--
-- Data for Name: nocols; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.nocols  FROM stdin;


\.


--
-- Data for Name: parted_1; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.parted (a) FROM stdin;
0
1
\.


--
-- Data for Name: parted_2; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.parted (a) FROM stdin;
10
11
12
\.


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- PostgreSQL database dump complete
--

\unrestrict 4kQx0bZlY1mVxk8A9fpsSxv2WnCqJ2z1ZcVqF9fZbWq3rT7yHd2YjPwU1aLmN0e

`

var sampleCounts = []TableCount{
	{"public", "users", 5},
	{"my.schema", "t.x", 3},
	{"public", `Weird "Name" x`, 3},
	{"public", "empty", 0},
	{"public", "line\nbreak", 1},
	{"public", "nocols", 2},
	{"public", "parted", 5},
}

// countIn feeds data to a new CopyCounter in pieces of the sizes next gives.
func countIn(data []byte, next func() int) []TableCount {
	c := NewCopyCounter()
	for len(data) > 0 {
		n := min(len(data), max(next(), 1))
		if k, err := c.Write(data[:n]); k != n || err != nil {
			panic(fmt.Sprintf("Write = %d, %v", k, err))
		}
		data = data[n:]
	}
	return c.Tables()
}

func fmtTables(ts []TableCount) string {
	var b strings.Builder
	for _, tc := range ts {
		fmt.Fprintf(&b, "%q.%q=%d ", tc.Schema, tc.Name, tc.Rows)
	}
	return b.String()
}

func checkCounts(t *testing.T, how string, got, want []TableCount) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %s\n want %s", how, fmtTables(got), fmtTables(want))
	}
}

func TestCopyCounterSample(t *testing.T) {
	t.Parallel()
	data := []byte(sampleDump)
	t.Run("Whole", func(t *testing.T) {
		checkCounts(t, "one write", countIn(data, func() int { return len(data) }), sampleCounts)
	})
	t.Run("OneByteWrites", func(t *testing.T) {
		checkCounts(t, "1-byte writes", countIn(data, func() int { return 1 }), sampleCounts)
	})
	t.Run("EverySplit", func(t *testing.T) {
		for i := range len(data) + 1 {
			c := NewCopyCounter()
			c.Write(data[:i])
			c.Write(data[i:])
			checkCounts(t, fmt.Sprintf("split at %d", i), c.Tables(), sampleCounts)
		}
	})
	t.Run("RandomChunks", func(t *testing.T) {
		for seed := range uint64(200) {
			r := mrand.New(mrand.NewPCG(seed, 7))
			limit := 1 + r.IntN(64)
			checkCounts(t, fmt.Sprintf("seed %d", seed), countIn(data, func() int { return 1 + r.IntN(limit) }), sampleCounts)
		}
	})
	t.Run("CRLFTerminator", func(t *testing.T) {
		in := "COPY t (a) FROM stdin;\r\n1\r\n2\r\n\\.\r\nCOPY u FROM stdin;\n\\.\n"
		for i := range len(in) + 1 {
			c := NewCopyCounter()
			c.Write([]byte(in[:i]))
			c.Write([]byte(in[i:]))
			checkCounts(t, fmt.Sprintf("split at %d", i), c.Tables(), []TableCount{{"", "t", 2}, {"", "u", 0}})
		}
	})
	t.Run("NotCopyStatements", func(t *testing.T) {
		in := "SELECT 1; COPY t TO stdout;\ncopy (SELECT 1) TO stdout;\nCOPY t FROM '/tmp/x';\n" +
			"SELECT $1, a$b$c FROM copyx;\nCOPYRIGHT x FROM stdin;\n" +
			"SELECT 'x'; copy   Public.\"T\"\tFrom  STDIN ;\n1\n\\.\n"
		checkCounts(t, "in", countIn([]byte(in), func() int { return 3 }), []TableCount{{"public", "T", 1}})
	})
}

// TestCopyCounterRandomRows checks the data scanner on rows built to sit on
// its edges: empty rows and rows starting with "\", "\.", "\.\r" or "\\.".
func TestCopyCounterRandomRows(t *testing.T) {
	pieces := []string{"", "\\", ".", "\\.", "\r", "\t", "x", "\\N", "\\\\", "\\n", "é"}
	for seed := range uint64(50) {
		r := mrand.New(mrand.NewPCG(seed, 11))
		var b strings.Builder
		var want []TableCount
		for tbl := range 1 + r.IntN(5) {
			name := fmt.Sprintf("t%d", tbl)
			fmt.Fprintf(&b, "COPY public.%s (a) FROM stdin;\n", name)
			rows := r.IntN(300)
			for range rows {
				row := `\.`
				for row == `\.` || row == "\\.\r" { // the terminator, not a row
					row = ""
					for range r.IntN(6) { // 0: an empty row
						row += pieces[r.IntN(len(pieces))]
					}
				}
				b.WriteString(row + "\n")
			}
			b.WriteString("\\.\n\n")
			want = append(want, TableCount{"public", name, int64(rows)})
		}
		data := []byte(b.String())
		limit := 1 + r.IntN(40)
		checkCounts(t, fmt.Sprintf("seed %d", seed), countIn(data, func() int { return 1 + r.IntN(limit) }), want)
		checkCounts(t, fmt.Sprintf("seed %d whole", seed), countIn(data, func() int { return len(data) }), want)
	}
}

// pgEnv is the environment of psql and pg_dump: the libpq variables of the
// test's environment, defaulting to the loopback server as postgres.
func pgEnv() []string {
	env := os.Environ()
	for _, kv := range [][2]string{{"PGHOST", "127.0.0.1"}, {"PGPORT", "5432"}, {"PGUSER", "postgres"}} {
		if os.Getenv(kv[0]) == "" {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return append(env, "PGCONNECT_TIMEOUT=10")
}

func psql(t *testing.T, db, sql string) string {
	t.Helper()
	cmd := exec.Command("psql", "--no-psqlrc", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db)
	cmd.Env = pgEnv()
	cmd.Stdin = strings.NewReader(sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	return string(out)
}

// TestCopyCounterPgDump dumps a scratch database with the real pg_dump
// through the whole pipeline (count, compress, digest) and checks the
// counts against the server and the stored bytes against their digests.
func TestCopyCounterPgDump(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("pg_dump"); err != nil {
		t.Fatal("pg_dump is not installed (scripts/test installs PostgreSQL):", err)
	}
	suffix := make([]byte, 8)
	rand.Read(suffix)
	db := "rahatback_pipeline_" + hex.EncodeToString(suffix)
	psql(t, "postgres", "CREATE DATABASE "+db)
	t.Cleanup(func() { psql(t, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)") })

	psql(t, db, `
CREATE SCHEMA "my.schema";
CREATE TABLE "my.schema"."t.x" (id int, "col ""q""" text);
INSERT INTO "my.schema"."t.x" VALUES (1, E'a\tb\nc\\d'), (2, NULL), (3, E'\n\\.\n'), (4, E'\\.');
CREATE TABLE public."Weird ""Name"" x" (id int, note text);
INSERT INTO public."Weird ""Name"" x" SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE repeat(E'x\ty\n', i % 7) END
  FROM generate_series(1, 12345) i;
CREATE TABLE "line
break" (a int);
INSERT INTO "line
break" VALUES (1), (2);
CREATE TABLE nocols ();
INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES;
CREATE TABLE empty (a int);
CREATE TABLE "Ünïcode Täble" (a int);
INSERT INTO "Ünïcode Täble" VALUES (1), (2);
CREATE TABLE big (id bigint, payload text, amount numeric, at timestamptz);
INSERT INTO big SELECT i, md5(i::text) || E'\\' || i, i * 1.5, '2024-01-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 200000) i;
CREATE FUNCTION fake() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
RETURN '
COPY public.fake (a) FROM stdin;
\.
';
END $$;
COMMENT ON TABLE empty IS 'multi
COPY public.fake2 (a) FROM stdin;
line';
`)
	want := []TableCount{
		{"my.schema", "t.x", 4},
		{"public", `Weird "Name" x`, 12345},
		{"public", "big", 200000},
		{"public", "empty", 0},
		{"public", "line\nbreak", 2},
		{"public", "nocols", 3},
		{"public", "Ünïcode Täble", 2},
	}
	// The expectations, as the server counts them.
	for _, tc := range want {
		q := fmt.Sprintf(`SELECT count(*) FROM %s.%s`, quoteIdent(tc.Schema), quoteIdent(tc.Name))
		if got := strings.TrimSpace(psql(t, db, q)); got != fmt.Sprint(tc.Rows) {
			t.Fatalf("%s: server has %s rows, test expects %d", q, got, tc.Rows)
		}
	}

	// pg_dump → CopyCounter + raw digest, and → zstd → stored digest → buffer.
	var stored bytes.Buffer
	storedDigest := NewDigestWriter(&stored)
	zw, err := NewCompressor(storedDigest, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	counter := NewCopyCounter()
	rawDigest := NewDigestWriter(io.Discard)
	var raw bytes.Buffer
	cmd := exec.Command("pg_dump", "--format=plain", "--clean", "--if-exists", "--no-owner",
		"--no-privileges", "--no-password", "--encoding=UTF8", "-d", db)
	cmd.Env = pgEnv()
	cmd.Stdout = io.MultiWriter(counter, rawDigest, zw, &raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, stderr.Bytes())
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	// pg_dump orders table data by name; compare as sets.
	got := counter.Tables()
	if !sameTables(got, want) {
		t.Fatalf("counts from pg_dump:\n got  %s\n want %s", fmtTables(got), fmtTables(want))
	}
	t.Logf("dump: %d bytes raw, %d stored", rawDigest.Size(), storedDigest.Size())

	if storedDigest.Sum() != sha256Hex(stored.Bytes()) || storedDigest.Size() != int64(stored.Len()) {
		t.Fatal("stored digest differs from the stored bytes")
	}
	check := NewDigestReader(bytes.NewReader(stored.Bytes()))
	dec, err := NewDecompressor(check, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	restored := NewDigestWriter(io.Discard)
	if _, err := io.Copy(restored, dec); err != nil {
		t.Fatal(err)
	}
	dec.Close()
	if restored.Sum() != rawDigest.Sum() || restored.Size() != rawDigest.Size() {
		t.Fatalf("decompressed dump %s (%d bytes) differs from pg_dump's %s (%d bytes)",
			restored.Sum(), restored.Size(), rawDigest.Sum(), rawDigest.Size())
	}
	if check.Sum() != storedDigest.Sum() {
		t.Fatalf("reading back: %s, stored: %s", check.Sum(), storedDigest.Sum())
	}

	// The real dump, cut everywhere.
	r := mrand.New(mrand.NewPCG(42, 42))
	for _, limit := range []int{61, 4096, 1 << 20} {
		if got := countIn(raw.Bytes(), func() int { return 1 + r.IntN(limit) }); !sameTables(got, want) {
			t.Fatalf("random chunks up to %d:\n got  %s\n want %s", limit, fmtTables(got), fmtTables(want))
		}
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func sameTables(got, want []TableCount) bool {
	if len(got) != len(want) {
		return false
	}
	m := make(map[TableCount]bool, len(want))
	for _, tc := range want {
		m[tc] = true
	}
	for _, tc := range got {
		if !m[tc] {
			return false
		}
	}
	return true
}

func validManifest() *Manifest {
	start := time.Date(2025, 3, 4, 5, 6, 7, 890000000, time.UTC)
	return &Manifest{
		Version:           ManifestVersion,
		BackupID:          "0195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		JobID:             "7",
		Engine:            "postgresql",
		ServerVersion:     "15.20",
		ToolVersion:       "pg_dump (PostgreSQL) 15.20",
		Database:          "shop",
		Format:            "plain",
		RawSize:           123456789,
		StoredSize:        12345678,
		Checksum:          sha256Hex([]byte("stored")),
		ChecksumAlgorithm: "sha256",
		Compression:       Zstd,
		Encryption:        "none",
		StartedAt:         start,
		CompletedAt:       start.Add(90 * time.Second),
		Tables:            []TableCount{{"public", "users", 5}, {"public", `Weird "Name" x`, 0}},
	}
}

func TestManifest(t *testing.T) {
	t.Run("RoundTrip", func(t *testing.T) {
		m := validManifest()
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("\n  \"backupId\": ")) {
			t.Errorf("not indented JSON:\n%s", b)
		}
		got, err := ParseManifest(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got  %+v\n want %+v", got, m)
		}
	})
	t.Run("NilTables", func(t *testing.T) {
		m := validManifest()
		m.Tables = nil
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"tables": []`)) {
			t.Errorf("nil tables not written as []:\n%s", b)
		}
	})
	t.Run("UnknownFieldIgnored", func(t *testing.T) {
		b, _ := validManifest().Marshal()
		b = bytes.Replace(b, []byte("{"), []byte(`{"addedLater": {"x": 1},`), 1)
		if _, err := ParseManifest(b); err != nil {
			t.Fatal(err)
		}
	})

	reject := []struct {
		name   string
		edit   func(map[string]any)
		errHas string
	}{
		{"Version2", func(m map[string]any) { m["version"] = 2 }, "newer than the supported version 1"},
		{"Version0", func(m map[string]any) { m["version"] = 0 }, "invalid manifest version 0"},
		{"NoVersion", func(m map[string]any) { delete(m, "version") }, "no version"},
		{"MissingFields", func(m map[string]any) { delete(m, "backupId"); m["checksum"] = ""; delete(m, "startedAt") },
			"missing required fields: backupId, checksum, startedAt"},
		{"BadAlgorithm", func(m map[string]any) { m["checksumAlgorithm"] = "md5" }, `unsupported checksumAlgorithm "md5"`},
		{"BadChecksum", func(m map[string]any) { m["checksum"] = strings.Repeat("A", 64) }, "not 64 lowercase hex"},
		{"BadCompression", func(m map[string]any) { m["compression"] = "lz4" }, `unknown compression "lz4"`},
		{"NegativeSize", func(m map[string]any) { m["storedSize"] = -1 }, "negative storedSize"},
		{"TimeOrder", func(m map[string]any) { m["completedAt"] = "2025-03-04T05:00:00Z" }, "is before startedAt"},
		{"TableWithoutName", func(m map[string]any) { m["tables"] = []any{map[string]any{"schema": "public", "rows": 1}} }, "tables[0] has no name"},
	}
	for _, tc := range reject {
		t.Run("Reject"+tc.name, func(t *testing.T) {
			b, _ := validManifest().Marshal()
			var raw map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			tc.edit(raw)
			b, err := json.Marshal(raw)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseManifest(b)
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("ParseManifest error = %v; want one containing %q", err, tc.errHas)
			}
		})
	}
	for _, in := range []string{"", "null", "[]", "{", `{"version": "1"}`} {
		t.Run(fmt.Sprintf("RejectJSON%q", in), func(t *testing.T) {
			if _, err := ParseManifest([]byte(in)); err == nil {
				t.Fatal("no error")
			}
		})
	}
	t.Run("MarshalRefusesInvalid", func(t *testing.T) {
		m := validManifest()
		m.Version = 0
		if b, err := m.Marshal(); err == nil {
			t.Fatalf("Marshal of version 0 gave %s", b)
		}
	})
}

// sqlDump returns about n bytes shaped like pg_dump's COPY data: a few
// tables of rows with tabs, NULLs, escapes and timestamps.
func sqlDump(n int) []byte {
	r := mrand.New(mrand.NewPCG(5, 5))
	var b []byte
	for t := 0; len(b) < n; t++ {
		b = fmt.Appendf(b, "\n--\n-- Data for Name: t%d; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n", t)
		b = fmt.Appendf(b, "COPY public.t%d (id, name, email, created_at, amount, notes) FROM stdin;\n", t)
		for range 20000 {
			notes := `\N`
			if r.IntN(3) > 0 {
				notes = strings.Repeat("lorem ipsum ", r.IntN(6)) + `\nsecond line`
			}
			b = fmt.Appendf(b, "%d\tuser_%d\tuser%d@example.com\t2024-%02d-%02d %02d:%02d:%02d.%06d+00\t%d.%02d\t%s\n",
				r.IntN(1e9), r.IntN(1e6), r.IntN(1e6), 1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60),
				r.IntN(1e6), r.IntN(1e5), r.IntN(100), notes)
		}
		b = append(b, "\\.\n\n"...)
	}
	return b
}

func BenchmarkCopyCounter(b *testing.B) {
	data := sqlDump(32 << 20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c := NewCopyCounter()
		for p := data; len(p) > 0; {
			n := min(len(p), 32<<10) // io.Copy's buffer size
			c.Write(p[:n])
			p = p[n:]
		}
	}
}

func BenchmarkZstdCompress(b *testing.B) {
	benchmarkCompress(b, Zstd)
}

func BenchmarkGzipCompress(b *testing.B) {
	benchmarkCompress(b, Gzip)
}

func benchmarkCompress(b *testing.B, c string) {
	data := sqlDump(32 << 20)
	b.SetBytes(int64(len(data)))
	var stored int64
	for b.Loop() {
		d := NewDigestWriter(io.Discard)
		w, _ := NewCompressor(d, c)
		for p := data; len(p) > 0; {
			n := min(len(p), 32<<10)
			w.Write(p[:n])
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		stored = d.Size()
	}
	b.ReportMetric(100*float64(stored)/float64(len(data)), "%size")
}
