package mssql

// A simulated SQL Server for the engine's tests. No SQL Server runs on
// RahatBack's build machines, so the engine is driven against this: a
// database/sql driver that interprets exactly the statements tsql.go
// builds, and does what SQL Server documents for them, over the real
// protocols it would use. BACKUP … TO URL uploads blocks with Microsoft's
// azblob client, authenticated by the SAS of the credential the engine
// created, through the agent's HTTPS endpoint; RESTORE … FROM URL reads
// ranges with it; TO DISK and FROM DISK use files. What it cannot show is
// how a real server behaves: see the README.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql/driver"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/pipeline"
)

// simDB is one database of the simulated server.
type simDB struct {
	Tables  []pipeline.TableCount `json:"tables"`
	Payload int                   `json:"payload"` // bytes of page data a backup holds
	Seed    uint64                `json:"seed"`
	Moves   []Move                `json:"-"`
}

// simHeader heads a simulated backup, after the MTF magic.
type simHeader struct {
	Database   string  `json:"database"`
	DB         simDB   `json:"db"`
	Compressed bool    `json:"compressed"`
	CopyOnly   bool    `json:"copyOnly"`
	Files      [][]any `json:"files"`
}

// simServer is the simulated server's state.
type simServer struct {
	client   *http.Client // trusts the agent's endpoint
	password string

	mu          sync.Mutex
	edition     int // SERVERPROPERTY('EngineEdition')
	canCreate   bool
	dbs         map[string]*simDB
	credentials map[string]string
	statements  []string
	// failCheckDB makes DBCC CHECKDB report corruption.
	failCheckDB bool
	// parallelReads is how many ranges a restore reads at once.
	parallelReads int
}

func newSimServer(caPEM []byte) *simServer {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &simServer{
		client:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		password: "Str0ng!Passw0rd", edition: 3, canCreate: true,
		dbs: map[string]*simDB{}, credentials: map[string]string{}, parallelReads: 3,
	}
}

// backupOf is the bytes a backup of name holds: the MTF magic, a
// length-prefixed JSON header, the page data and a SHA-256 of all before
// it (what RESTORE … WITH CHECKSUM checks, here).
func backupOf(name string, d *simDB, compressed bool) []byte {
	h, _ := json.Marshal(simHeader{Database: name, DB: *d, Compressed: compressed, CopyOnly: true,
		Files: [][]any{{name, `C:\data\` + name + ".mdf", "D", 1}, {name + "_log", `C:\data\` + name + "_log.ldf", "L", 2}}})
	var b bytes.Buffer
	b.WriteString("TAPE")
	binary.Write(&b, binary.BigEndian, uint32(len(h)))
	b.Write(h)
	page := make([]byte, d.Payload)
	r := rand.New(rand.NewPCG(d.Seed, 1))
	for i := range page {
		page[i] = byte(r.Uint32())
	}
	b.Write(page)
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

func parseBackup(b []byte) (simHeader, error) {
	var h simHeader
	if len(b) < 8 || string(b[:4]) != "TAPE" {
		return h, errors.New("The media family on device is incorrectly formed. SQL Server cannot process this media family.")
	}
	n := binary.BigEndian.Uint32(b[4:8])
	if int(n)+8 > len(b) {
		return h, errors.New("The media family on device is incorrectly formed.")
	}
	return h, json.Unmarshal(b[8:8+n], &h)
}

var (
	reBackup     = regexp.MustCompile(`^BACKUP DATABASE (\[(?:[^\]]|\]\])*\]) TO (URL|DISK) = N'((?:[^']|'')*)' WITH (.*);$`)
	reRestore    = regexp.MustCompile(`^RESTORE DATABASE (\[(?:[^\]]|\]\])*\]) FROM (URL|DISK) = N'((?:[^']|'')*)' WITH (.*);$`)
	reCheck      = regexp.MustCompile(`^RESTORE (VERIFYONLY|HEADERONLY|FILELISTONLY) FROM (URL|DISK) = N'((?:[^']|'')*)'( WITH CHECKSUM)?;$`)
	reMove       = regexp.MustCompile(`MOVE N'((?:[^']|'')*)' TO N'((?:[^']|'')*)'`)
	reCredential = regexp.MustCompile(`^CREATE CREDENTIAL (\[(?:[^\]]|\]\])*\]) WITH IDENTITY = N'SHARED ACCESS SIGNATURE', SECRET = N'((?:[^']|'')*)';$`)
	reDropCred   = regexp.MustCompile(`^IF EXISTS \(SELECT 1 FROM sys.credentials WHERE name = N'((?:[^']|'')*)'\) DROP CREDENTIAL (\[(?:[^\]]|\]\])*\]);$`)
	reCheckDB    = regexp.MustCompile(`^DBCC CHECKDB \((\[(?:[^\]]|\]\])*\])\) WITH NO_INFOMSGS, ALL_ERRORMSGS;$`)
	reDrop       = regexp.MustCompile(`^IF DB_ID\(N'((?:[^']|'')*)'\) IS NOT NULL BEGIN ALTER DATABASE (\[(?:[^\]]|\]\])*\]) SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE (\[(?:[^\]]|\]\])*\]); END;$`)
	reRename     = regexp.MustCompile(`^ALTER DATABASE (\[(?:[^\]]|\]\])*\]) SET SINGLE_USER WITH ROLLBACK IMMEDIATE; ALTER DATABASE (\[(?:[^\]]|\]\])*\]) MODIFY NAME = (\[(?:[^\]]|\]\])*\]); ALTER DATABASE (\[(?:[^\]]|\]\])*\]) SET MULTI_USER;$`)
	reRowCounts  = regexp.MustCompile(`(?s)^SELECT s.name AS schema_name, t.name AS table_name, SUM\(p.rows\) AS row_count\nFROM (\[(?:[^\]]|\]\])*\]).sys.tables`)
	reSize       = regexp.MustCompile(`^SELECT CAST\(COALESCE\(SUM\(a.used_pages\), 0\) AS bigint\) \* 8192 FROM (\[(?:[^\]]|\]\])*\]).sys.allocation_units AS a;$`)
)

func unbracket(q string) string { return strings.ReplaceAll(q[1:len(q)-1], "]]", "]") }
func unquote(s string) string   { return strings.ReplaceAll(s, "''", "'") }

// Connector is the engine's connector for c on this server.
func (s *simServer) connector(c engines.Conn) (driver.Connector, error) {
	return simConnector{s, c}, nil
}

type simConnector struct {
	s *simServer
	c engines.Conn
}

func (k simConnector) Connect(context.Context) (driver.Conn, error) {
	if k.c.Password != k.s.password {
		return nil, fmt.Errorf("mssql: login error: Login failed for user '%s'.", k.c.Username)
	}
	return &simConn{k.s, k.c}, nil
}
func (k simConnector) Driver() driver.Driver { return simDriver{} }

type simDriver struct{}

func (simDriver) Open(string) (driver.Conn, error) { return nil, errors.New("use the connector") }

type simConn struct {
	s *simServer
	c engines.Conn
}

func (c *simConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("not supported") }
func (c *simConn) Close() error                        { return nil }
func (c *simConn) Begin() (driver.Tx, error)           { return nil, errors.New("not supported") }

func (c *simConn) ExecContext(ctx context.Context, q string, _ []driver.NamedValue) (driver.Result, error) {
	_, err := c.s.run(ctx, q, nil)
	return driver.RowsAffected(0), err
}

func (c *simConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	return c.s.run(ctx, q, args)
}

type simRows struct {
	cols []string
	rows [][]driver.Value
}

func (r *simRows) Columns() []string { return r.cols }
func (r *simRows) Close() error      { return nil }
func (r *simRows) Next(dest []driver.Value) error {
	if len(r.rows) == 0 {
		return io.EOF
	}
	copy(dest, r.rows[0])
	r.rows = r.rows[1:]
	return nil
}

func one(cols []string, vals ...driver.Value) *simRows {
	return &simRows{cols: cols, rows: [][]driver.Value{vals}}
}

// run interprets one statement.
func (s *simServer) run(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	s.mu.Lock()
	s.statements = append(s.statements, q)
	s.mu.Unlock()
	switch {
	case q == ServerInfo:
		s.mu.Lock()
		defer s.mu.Unlock()
		return one([]string{"", "", ""}, "Microsoft SQL Server 2022 (RTM-CU15) - 16.0.4150.1 (X64)\n\tSep 2024", "Simulated Edition (64-bit)", int64(s.edition)), nil
	case q == DatabaseExists:
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.dbs[args[0].Value.(string)]
		return one([]string{""}, map[bool]int64{true: 1, false: 0}[ok]), nil
	case q == CanCreateDatabase:
		s.mu.Lock()
		defer s.mu.Unlock()
		return one([]string{""}, map[bool]int64{true: 1, false: 0}[s.canCreate]), nil
	case q == DataPaths:
		return one([]string{"", ""}, "/var/opt/mssql/data/", "/var/opt/mssql/log/"), nil
	}
	if m := reCredential.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.credentials[unbracket(m[1])] = unquote(m[2])
		return &simRows{}, nil
	}
	if m := reDropCred.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.credentials, unbracket(m[2]))
		return &simRows{}, nil
	}
	if m := reBackup.FindStringSubmatch(q); m != nil {
		return &simRows{}, s.backup(ctx, unbracket(m[1]), m[2], unquote(m[3]), m[4])
	}
	if m := reCheck.FindStringSubmatch(q); m != nil {
		return s.check(ctx, m[1], m[2], unquote(m[3]))
	}
	if m := reRestore.FindStringSubmatch(q); m != nil {
		return &simRows{}, s.restore(ctx, unbracket(m[1]), m[2], unquote(m[3]), m[4])
	}
	if m := reCheckDB.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.dbs[unbracket(m[1])]; !ok {
			return nil, fmt.Errorf("Database '%s' does not exist.", unbracket(m[1]))
		}
		if s.failCheckDB {
			return nil, errors.New("mssql: Table error: Object ID 581577110, index ID 1: page (1:153) failed its checksum")
		}
		return &simRows{}, nil
	}
	if m := reDrop.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.dbs, unquote(m[1]))
		return &simRows{}, nil
	}
	if m := reRename.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		from, to := unbracket(m[1]), unbracket(m[3])
		if s.dbs[from] == nil {
			return nil, fmt.Errorf("Database '%s' does not exist.", from)
		}
		if s.dbs[to] != nil {
			return nil, fmt.Errorf("The database '%s' already exists.", to)
		}
		s.dbs[to] = s.dbs[from]
		delete(s.dbs, from)
		return &simRows{}, nil
	}
	if m := reRowCounts.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		d := s.dbs[unbracket(m[1])]
		if d == nil {
			return nil, fmt.Errorf("Database '%s' does not exist.", unbracket(m[1]))
		}
		out := &simRows{cols: []string{"schema_name", "table_name", "row_count"}}
		for _, t := range d.Tables {
			out.rows = append(out.rows, []driver.Value{t.Schema, t.Name, t.Rows})
		}
		return out, nil
	}
	if m := reSize.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		d := s.dbs[unbracket(m[1])]
		if d == nil {
			return nil, fmt.Errorf("Database '%s' does not exist.", unbracket(m[1]))
		}
		return one([]string{""}, int64(d.Payload)), nil
	}
	return nil, fmt.Errorf("simulated server: unexpected statement %q", q)
}

// blobClient is the azblob client SQL Server would use for url: the SAS
// of the credential whose name is the longest prefix of url.
func (s *simServer) blobClient(url string) (*blockblob.Client, error) {
	s.mu.Lock()
	best := ""
	for name := range s.credentials {
		if strings.HasPrefix(url, name+"/") && len(name) > len(best) {
			best = name
		}
	}
	secret := s.credentials[best]
	s.mu.Unlock()
	if best == "" {
		return nil, fmt.Errorf("Cannot open backup device '%s'. Operating system error 86(The specified network password is not correct.).", url)
	}
	return blockblob.NewClientWithNoCredential(url+"?"+secret, &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: s.client, Retry: policy.RetryOptions{MaxRetries: -1}}})
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

// backup writes a backup of name as SQL Server does TO URL: 4 MiB blocks
// (MAXTRANSFERSIZE) staged one after the other, then the block list.
func (s *simServer) backup(ctx context.Context, name, device, target, with string) error {
	s.mu.Lock()
	d := s.dbs[name]
	s.mu.Unlock()
	if d == nil {
		return fmt.Errorf("Database '%s' does not exist. Make sure that the name is entered correctly.", name)
	}
	if !strings.Contains(with, "COPY_ONLY") || !strings.Contains(with, "CHECKSUM") {
		return fmt.Errorf("simulated server: the test expects COPY_ONLY, CHECKSUM: %s", with)
	}
	b := backupOf(name, d, strings.Contains(with, " COMPRESSION"))
	if device == DeviceDisk {
		return os.WriteFile(target, b, 0o640)
	}
	c, err := s.blobClient(target)
	if err != nil {
		return err
	}
	var ids []string
	for i := 0; len(b) > 0; i++ {
		n := min(len(b), URLTransferSize)
		id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%08d-sqlserver-block", i))
		if _, err := c.StageBlock(ctx, id, nopSeekCloser{bytes.NewReader(b[:n])}, nil); err != nil {
			return fmt.Errorf("Write on \"%s\" failed: %v. BACKUP DATABASE is terminating abnormally.", target, err)
		}
		ids = append(ids, id)
		b = b[n:]
	}
	if _, err := c.CommitBlockList(ctx, ids, nil); err != nil {
		return fmt.Errorf("Write on \"%s\" failed: %v. BACKUP DATABASE is terminating abnormally.", target, err)
	}
	return nil
}

// read reads a backup's first n bytes (all when n < 0), as SQL Server
// reads one FROM URL: ranges of 4 MiB, several in flight.
func (s *simServer) read(ctx context.Context, device, target string, n int64) ([]byte, error) {
	if device == DeviceDisk {
		b, err := os.ReadFile(target)
		if err == nil && n >= 0 && int64(len(b)) > n {
			b = b[:n]
		}
		return b, err
	}
	c, err := s.blobClient(target)
	if err != nil {
		return nil, err
	}
	props, err := c.GetProperties(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("Cannot open backup device '%s': %v", target, err)
	}
	size := *props.ContentLength
	if n >= 0 && n < size {
		size = n
	}
	out := make([]byte, size)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, s.parallelReads)
	for off := int64(0); off < size; off += URLTransferSize {
		cnt := min(URLTransferSize, size-off)
		sem <- struct{}{}
		wg.Add(1)
		go func(off, cnt int64) {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := c.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: cnt}})
			if err == nil {
				_, err = io.ReadFull(resp.Body, out[off:off+cnt])
				resp.Body.Close()
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("Read on \"%s\" failed: %v", target, err)
				}
				mu.Unlock()
			}
		}(off, cnt)
	}
	wg.Wait()
	return out, first
}

// whole reads a whole backup and checks its checksum.
func (s *simServer) whole(ctx context.Context, device, target string) (simHeader, error) {
	b, err := s.read(ctx, device, target, -1)
	if err != nil {
		return simHeader{}, err
	}
	if len(b) < sha256.Size {
		return simHeader{}, errors.New("The media family on device is incorrectly formed.")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return simHeader{}, errors.New("The backup set holds a backup of a database with a damaged page (checksum). RESTORE is terminating abnormally.")
	}
	return parseBackup(b)
}

func (s *simServer) check(ctx context.Context, what, device, target string) (driver.Rows, error) {
	if what == "VERIFYONLY" {
		_, err := s.whole(ctx, device, target)
		return &simRows{}, err
	}
	head, err := s.read(ctx, device, target, 64<<10)
	if err != nil {
		return nil, err
	}
	h, err := parseBackup(head)
	if err != nil {
		return nil, err
	}
	if what == "HEADERONLY" {
		return one([]string{"BackupName", "BackupType", "DatabaseName", "ServerName", "BackupSize", "IsCopyOnly", "HasBackupChecksums", "BackupFinishDate", "Compressed"},
			nil, int64(1), h.Database, "SIMULATED", int64(h.DB.Payload), h.CopyOnly, true, time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), h.Compressed), nil
	}
	out := &simRows{cols: []string{"LogicalName", "PhysicalName", "Type", "FileGroupName", "Size", "FileId"}}
	for _, f := range h.Files {
		out.rows = append(out.rows, []driver.Value{f[0], f[1], f[2], "PRIMARY", int64(8 << 20), int64(f[3].(float64))})
	}
	return out, nil
}

func (s *simServer) restore(ctx context.Context, name, device, target, with string) error {
	s.mu.Lock()
	exists := s.dbs[name] != nil
	s.mu.Unlock()
	if exists && !strings.Contains(with, "REPLACE") {
		return fmt.Errorf("The database '%s' already exists. Use WITH REPLACE.", name)
	}
	h, err := s.whole(ctx, device, target)
	if err != nil {
		return err
	}
	moves := map[string]string{}
	for _, m := range reMove.FindAllStringSubmatch(with, -1) {
		moves[unquote(m[1])] = unquote(m[2])
	}
	seen := map[string]bool{}
	var placed []Move
	for _, f := range h.Files {
		p, ok := moves[f[0].(string)]
		if !ok {
			return fmt.Errorf("File '%s' cannot be restored to '%s'. Use WITH MOVE to identify a valid location for the file.", f[0], f[1])
		}
		if seen[p] {
			return fmt.Errorf("The file '%s' cannot be overwritten. It is being used by another file.", p)
		}
		seen[p] = true
		placed = append(placed, Move{f[0].(string), p})
	}
	sort.Slice(placed, func(i, j int) bool { return placed[i].Logical < placed[j].Logical })
	d := h.DB
	d.Moves = placed
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dbs[name] = &d
	return nil
}

// names lists the server's databases, sorted.
func (s *simServer) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.dbs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
