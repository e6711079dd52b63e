package postgresql

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/testsupport"
)

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

var sampleCounts = []pipeline.TableCount{
	{Schema: "public", Name: "users", Rows: 5},
	{Schema: "my.schema", Name: "t.x", Rows: 3},
	{Schema: "public", Name: `Weird "Name" x`, Rows: 3},
	{Schema: "public", Name: "empty", Rows: 0},
	{Schema: "public", Name: "line\nbreak", Rows: 1},
	{Schema: "public", Name: "nocols", Rows: 2},
	{Schema: "public", Name: "parted", Rows: 5},
}

// countIn feeds data to a new CopyCounter in pieces of the sizes next gives.
func countIn(data []byte, next func() int) []pipeline.TableCount {
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

func fmtTables(ts []pipeline.TableCount) string {
	var b strings.Builder
	for _, tc := range ts {
		fmt.Fprintf(&b, "%q.%q=%d ", tc.Schema, tc.Name, tc.Rows)
	}
	return b.String()
}

// checkCounts compares tables; a want without Hash accepts any hash.
func checkCounts(t *testing.T, how string, got, want []pipeline.TableCount) {
	t.Helper()
	if len(got) == len(want) {
		want = slices.Clone(want)
		for i := range want {
			if want[i].Hash == "" {
				want[i].Hash = got[i].Hash
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %s\n want %s", how, fmtTables(got), fmtTables(want))
	}
}

func TestCopyCounterSample(t *testing.T) {
	t.Parallel()
	data := []byte(sampleDump)
	whole := countIn(data, func() int { return len(data) })
	t.Run("Whole", func(t *testing.T) {
		checkCounts(t, "one write", whole, sampleCounts)
	})
	// However the stream is split, the hashes are those of one write.
	sampleCounts := whole
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
			checkCounts(t, fmt.Sprintf("split at %d", i), c.Tables(), []pipeline.TableCount{{Schema: "", Name: "t", Rows: 2}, {Schema: "", Name: "u", Rows: 0}})
		}
	})
	t.Run("NotCopyStatements", func(t *testing.T) {
		in := "SELECT 1; COPY t TO stdout;\ncopy (SELECT 1) TO stdout;\nCOPY t FROM '/tmp/x';\n" +
			"SELECT $1, a$b$c FROM copyx;\nCOPYRIGHT x FROM stdin;\n" +
			"SELECT 'x'; copy   Public.\"T\"\tFrom  STDIN ;\n1\n\\.\n"
		checkCounts(t, "in", countIn([]byte(in), func() int { return 3 }), []pipeline.TableCount{{Schema: "public", Name: "T", Rows: 1}})
	})
}

// TestCopyCounterRandomRows checks the data scanner on rows built to sit on
// its edges: empty rows and rows starting with "\", "\.", "\.\r" or "\\.".
func TestCopyCounterRandomRows(t *testing.T) {
	pieces := []string{"", "\\", ".", "\\.", "\r", "\t", "x", "\\N", "\\\\", "\\n", "é"}
	for seed := range uint64(50) {
		r := mrand.New(mrand.NewPCG(seed, 11))
		var b strings.Builder
		var want []pipeline.TableCount
		for tbl := range 1 + r.IntN(5) {
			name := fmt.Sprintf("t%d", tbl)
			fmt.Fprintf(&b, "COPY public.%s (a) FROM stdin;\n", name)
			rows := r.IntN(300)
			var h pipeline.RowHash
			for range rows {
				row := `\.`
				for row == `\.` || row == "\\.\r" { // the terminator, not a row
					row = ""
					for range r.IntN(6) { // 0: an empty row
						row += pieces[r.IntN(len(pieces))]
					}
				}
				b.WriteString(row + "\n")
				h.Add([]byte(row))
			}
			b.WriteString("\\.\n\n")
			want = append(want, pipeline.TableCount{Schema: "public", Name: name, Rows: int64(rows), Hash: h.String()})
		}
		data := []byte(b.String())
		limit := 1 + r.IntN(40)
		checkCounts(t, fmt.Sprintf("seed %d", seed), countIn(data, func() int { return 1 + r.IntN(limit) }), want)
		checkCounts(t, fmt.Sprintf("seed %d whole", seed), countIn(data, func() int { return len(data) }), want)
	}
}

// pgEnv is the environment of psql and pg_dump: the test binary's private
// cluster, as its superuser.
func pgEnv() []string {
	cfg, err := pgx.ParseConfig(testsupport.Cluster().URL("postgres"))
	if err != nil {
		panic(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(int(cfg.Port)), "PGUSER="+cfg.User,
		"PGPASSWORD="+cfg.Password, "PGCONNECT_TIMEOUT=10")
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
	want := []pipeline.TableCount{
		{Schema: "my.schema", Name: "t.x", Rows: 4},
		{Schema: "public", Name: `Weird "Name" x`, Rows: 12345},
		{Schema: "public", Name: "big", Rows: 200000},
		{Schema: "public", Name: "empty", Rows: 0},
		{Schema: "public", Name: "line\nbreak", Rows: 2},
		{Schema: "public", Name: "nocols", Rows: 3},
		{Schema: "public", Name: "Ünïcode Täble", Rows: 2},
	}
	// The expectations, as the server counts them.
	for i, tc := range want {
		q := fmt.Sprintf(`SELECT count(*) FROM %s.%s`, quoteIdent(tc.Schema), quoteIdent(tc.Name))
		if got := strings.TrimSpace(psql(t, db, q)); got != fmt.Sprint(tc.Rows) {
			t.Fatalf("%s: server has %s rows, test expects %d", q, got, tc.Rows)
		}
		// The content hash is over the rows as COPY spells them, in any
		// order: here in reverse.
		out := psql(t, db, fmt.Sprintf(`COPY (SELECT * FROM %s.%s ORDER BY ctid DESC) TO STDOUT`, quoteIdent(tc.Schema), quoteIdent(tc.Name)))
		var h pipeline.RowHash
		for _, row := range strings.SplitAfter(out, "\n") {
			if row != "" {
				h.Add([]byte(strings.TrimSuffix(row, "\n")))
			}
		}
		want[i].Hash = h.String()
	}

	// pg_dump → CopyCounter + raw digest, and → zstd → stored digest → buffer.
	var stored bytes.Buffer
	storedDigest := pipeline.NewDigestWriter(&stored)
	zw, err := pipeline.NewCompressor(storedDigest, pipeline.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	counter := NewCopyCounter()
	rawDigest := pipeline.NewDigestWriter(io.Discard)
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

	if storedDigest.Sum() != fmt.Sprintf("%x", sha256.Sum256(stored.Bytes())) || storedDigest.Size() != int64(stored.Len()) {
		t.Fatal("stored digest differs from the stored bytes")
	}
	check := pipeline.NewDigestReader(bytes.NewReader(stored.Bytes()))
	dec, err := pipeline.NewDecompressor(check, pipeline.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	restored := pipeline.NewDigestWriter(io.Discard)
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

func sameTables(got, want []pipeline.TableCount) bool {
	if len(got) != len(want) {
		return false
	}
	m := make(map[pipeline.TableCount]bool, len(want))
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

func BenchmarkCopyCounter(b *testing.B) {
	data := testsupport.SQLDump(32 << 20)
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
