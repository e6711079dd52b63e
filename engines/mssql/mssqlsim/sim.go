// Package mssqlsim is a simulated SQL Server for the SQL Server engine's
// tests. No SQL Server runs on
// RahatBack's build machines, so the engine is driven against this: a
// database/sql driver that interprets exactly the Statements tsql.go
// builds, and does what SQL Server documents for them, over the real
// protocols it would use. BACKUP … TO URL uploads blocks with Microsoft's
// azblob Client, authenticated by the SAS of the credential the engine
// created, through the agent's HTTPS endpoint; RESTORE … FROM URL reads
// ranges with it; TO DISK and FROM DISK use files. What it cannot show is
// how a real server behaves: see the README.
package mssqlsim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql/driver"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mssql"
	"github.com/rahatback/rahatback/pipeline"
)

// DB is one database of the simulated server.
type DB struct {
	Tables  []pipeline.TableCount `json:"tables"`
	Payload int                   `json:"payload"` // bytes of page data a backup holds
	Seed    uint64                `json:"seed"`
	Moves   []mssql.Move          `json:"-"`
}

// simHeader heads a simulated backup, after the MTF magic.
type simHeader struct {
	Database   string  `json:"database"`
	DB         DB      `json:"db"`
	Compressed bool    `json:"compressed"`
	CopyOnly   bool    `json:"copyOnly"`
	Files      [][]any `json:"files"`
}

// Server is the simulated server's state. Its fields may be read and set
// while no statement runs; Put, Get, Names and Secrets may be called any
// time.
type Server struct {
	// Client is what the server reaches the agent's endpoint with.
	Client *http.Client
	// Password is the only one a login succeeds with.
	Password string

	mu sync.Mutex
	// Edition is SERVERPROPERTY('EngineEdition'): 3 Enterprise, 4 Express.
	Edition int
	// CanCreate is whether the login may create databases.
	CanCreate bool
	// DBs are the databases, by name.
	DBs map[string]*DB
	// Credentials are the server's credentials: name → secret (a SAS).
	Credentials map[string]string
	// Statements are every statement run, in order.
	Statements []string
	// FailCheckDB makes DBCC CHECKDB report corruption.
	FailCheckDB bool
	// FailRename makes renaming the database of that name fail, as when
	// another session takes the single-user slot first (error 5030).
	FailRename string
	// ParallelReads is how many ranges a restore reads at once.
	ParallelReads int
}

// New is a server (Enterprise, a login that may create databases) that
// trusts the endpoint certificates caPEM holds.
func New(caPEM []byte) *Server {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &Server{
		Client:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		Password: "Str0ng!Passw0rd", Edition: 3, CanCreate: true,
		DBs: map[string]*DB{}, Credentials: map[string]string{}, ParallelReads: 3,
	}
}

// BackupOf is the bytes a backup of name holds: the MTF magic, a
// length-prefixed JSON header, the page data and a SHA-256 of all before
// it (what RESTORE … WITH CHECKSUM checks, here).
func BackupOf(name string, d *DB, compressed bool) []byte {
	b, _ := io.ReadAll(backupStream(name, d, compressed))
	return b
}

// BackupStream is BackupOf as a stream, made as it is read (the page data
// is generated from d.Seed), so that large backups take no memory.
func BackupStream(name string, d *DB, compressed bool) io.Reader {
	return backupStream(name, d, compressed)
}

func backupStream(name string, d *DB, compressed bool) io.Reader {
	h, _ := json.Marshal(simHeader{Database: name, DB: *d, Compressed: compressed, CopyOnly: true,
		Files: [][]any{{name, `C:\data\` + name + ".mdf", "D", 1}, {name + "_log", `C:\data\` + name + "_log.ldf", "L", 2}}})
	var head bytes.Buffer
	head.WriteString("TAPE")
	binary.Write(&head, binary.BigEndian, uint32(len(h)))
	head.Write(h)
	sum := sha256.New()
	body := io.TeeReader(io.MultiReader(&head, &pages{r: rand.New(rand.NewPCG(d.Seed, 1)), left: d.Payload}), sum)
	return io.MultiReader(body, &trailer{sum: sum})
}

// pages generates left bytes of page data.
type pages struct {
	r    *rand.Rand
	left int
}

func (p *pages) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := min(len(b), p.left)
	for i := range n {
		b[i] = byte(p.r.Uint32()) // byte by byte: the same bytes whatever the reads' sizes
	}
	p.left -= n
	return n, nil
}

// trailer is the SHA-256 of what came before it, read once that is done.
type trailer struct {
	sum  hash.Hash
	rest []byte
	done bool
}

func (t *trailer) Read(b []byte) (int, error) {
	if !t.done {
		t.rest, t.done = t.sum.Sum(nil), true
	}
	if len(t.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(b, t.rest)
	t.rest = t.rest[n:]
	return n, nil
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
	reDrop       = regexp.MustCompile(`^IF DB_ID\(N'((?:[^']|'')*)'\) IS NOT NULL BEGIN IF DATABASEPROPERTYEX\(N'(?:[^']|'')*', 'Status'\) = 'ONLINE' ALTER DATABASE (\[(?:[^\]]|\]\])*\]) SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE (\[(?:[^\]]|\]\])*\]); END;$`)
	reRename     = regexp.MustCompile(`^BEGIN TRY ALTER DATABASE (\[(?:[^\]]|\]\])*\]) SET SINGLE_USER WITH ROLLBACK IMMEDIATE; ALTER DATABASE (\[(?:[^\]]|\]\])*\]) MODIFY NAME = (\[(?:[^\]]|\]\])*\]); ALTER DATABASE (\[(?:[^\]]|\]\])*\]) SET MULTI_USER; END TRY BEGIN CATCH IF DB_ID\(N'(?:[^']|'')*'\) IS NOT NULL ALTER DATABASE (\[(?:[^\]]|\]\])*\]) SET MULTI_USER; THROW; END CATCH;$`)
	reRowCounts  = regexp.MustCompile(`(?s)^SELECT s.name AS schema_name, t.name AS table_name, SUM\(p.rows\) AS row_count\nFROM (\[(?:[^\]]|\]\])*\]).sys.tables`)
	reSize       = regexp.MustCompile(`^SELECT CAST\(COALESCE\(SUM\(a.used_pages\), 0\) AS bigint\) \* 8192 FROM (\[(?:[^\]]|\]\])*\]).sys.allocation_units AS a;$`)
)

func unbracket(q string) string { return strings.ReplaceAll(q[1:len(q)-1], "]]", "]") }
func unquote(s string) string   { return strings.ReplaceAll(s, "''", "'") }

// Connector is a connector for c to this server (mssql.Options.Connector).
func (s *Server) Connector(c engines.Conn) (driver.Connector, error) {
	return simConnector{s, c}, nil
}

type simConnector struct {
	s *Server
	c engines.Conn
}

func (k simConnector) Connect(context.Context) (driver.Conn, error) {
	if k.c.Password != k.s.Password {
		return nil, fmt.Errorf("mssql: login error: Login failed for user '%s'.", k.c.Username)
	}
	return &simConn{k.s, k.c}, nil
}
func (k simConnector) Driver() driver.Driver { return simDriver{} }

type simDriver struct{}

func (simDriver) Open(string) (driver.Conn, error) { return nil, errors.New("use the connector") }

type simConn struct {
	s *Server
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
func (s *Server) run(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	s.mu.Lock()
	s.Statements = append(s.Statements, q)
	s.mu.Unlock()
	switch {
	case q == mssql.ServerInfo:
		s.mu.Lock()
		defer s.mu.Unlock()
		return one([]string{"", "", ""}, "Microsoft SQL Server 2022 (RTM-CU15) - 16.0.4150.1 (X64)\n\tSep 2024", "Simulated Edition (64-bit)", int64(s.Edition)), nil
	case q == mssql.DatabaseExists:
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.DBs[args[0].Value.(string)]
		return one([]string{""}, map[bool]int64{true: 1, false: 0}[ok]), nil
	case q == mssql.CanCreateDatabase:
		s.mu.Lock()
		defer s.mu.Unlock()
		return one([]string{""}, map[bool]int64{true: 1, false: 0}[s.CanCreate]), nil
	case q == mssql.TargetFiles:
		s.mu.Lock()
		defer s.mu.Unlock()
		name := args[0].Value.(string)
		d := s.DBs[name]
		out := &simRows{cols: []string{"type", "physical_name"}}
		if d == nil {
			return out, nil
		}
		data, log := "/srv/sqldata/"+name+".mdf", "/srv/sqllog/"+name+"_log.ldf"
		for _, m := range d.Moves {
			if strings.HasSuffix(m.Physical, ".ldf") {
				log = m.Physical
			} else if strings.HasSuffix(m.Physical, ".mdf") {
				data = m.Physical
			}
		}
		out.rows = [][]driver.Value{{int64(0), data}, {int64(1), log}}
		return out, nil
	case q == mssql.Credentials:
		s.mu.Lock()
		defer s.mu.Unlock()
		prefix := args[0].Value.(string)
		out := &simRows{cols: []string{"name"}}
		for name := range s.Credentials {
			if strings.HasPrefix(name, prefix) {
				out.rows = append(out.rows, []driver.Value{name})
			}
		}
		return out, nil
	case q == mssql.DataPaths:
		return one([]string{"", ""}, "/var/opt/mssql/data/", "/var/opt/mssql/log/"), nil
	}
	if m := reCredential.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.Credentials[unbracket(m[1])] = unquote(m[2])
		return &simRows{}, nil
	}
	if m := reDropCred.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.Credentials, unbracket(m[2]))
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
		if _, ok := s.DBs[unbracket(m[1])]; !ok {
			return nil, fmt.Errorf("Database '%s' does not exist.", unbracket(m[1]))
		}
		if s.FailCheckDB {
			return nil, errors.New("mssql: Table error: Object ID 581577110, index ID 1: page (1:153) failed its checksum")
		}
		return &simRows{}, nil
	}
	if m := reDrop.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.DBs, unquote(m[1]))
		return &simRows{}, nil
	}
	if m := reRename.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		from, to := unbracket(m[1]), unbracket(m[3])
		if from == s.FailRename {
			return nil, fmt.Errorf("The database could not be exclusively locked to perform the operation. (5030)")
		}
		if s.DBs[from] == nil {
			return nil, fmt.Errorf("Database '%s' does not exist.", from)
		}
		if s.DBs[to] != nil {
			return nil, fmt.Errorf("The database '%s' already exists.", to)
		}
		s.DBs[to] = s.DBs[from]
		delete(s.DBs, from)
		return &simRows{}, nil
	}
	if m := reRowCounts.FindStringSubmatch(q); m != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		d := s.DBs[unbracket(m[1])]
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
		d := s.DBs[unbracket(m[1])]
		if d == nil {
			return nil, fmt.Errorf("Database '%s' does not exist.", unbracket(m[1]))
		}
		return one([]string{""}, int64(d.Payload)), nil
	}
	return nil, fmt.Errorf("simulated server: unexpected statement %q", q)
}

// blobClient is the azblob Client SQL Server would use for url: the SAS
// of the credential whose name is the longest prefix of url.
func (s *Server) blobClient(url string) (*blockblob.Client, error) {
	s.mu.Lock()
	best := ""
	for name := range s.Credentials {
		if strings.HasPrefix(url, name+"/") && len(name) > len(best) {
			best = name
		}
	}
	secret := s.Credentials[best]
	s.mu.Unlock()
	if best == "" {
		return nil, fmt.Errorf("Cannot open backup device '%s'. Operating system error 86(The specified network Password is not correct.).", url)
	}
	return blockblob.NewClientWithNoCredential(url+"?"+secret, &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: s.Client, Retry: policy.RetryOptions{MaxRetries: -1}}})
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

// leaseID is the lease SQL Server is documented to take on a backup blob.
const leaseID = "bac2bac2-bac2-bac2-bac2-bac2bac2bac2"

// takeLease is what SQL Server does first with a backup blob: its
// properties, and an infinite lease (a blob that does not exist yet is
// created empty first when writing). It returns what releases the lease.
func (s *Server) takeLease(ctx context.Context, c *blockblob.Client, target string, writing bool) (func(), error) {
	if _, err := c.GetProperties(ctx, nil); err != nil {
		var re *azcore.ResponseError
		if !writing || !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
			return nil, fmt.Errorf("Cannot open backup device '%s': %v", target, err)
		}
		if _, err := c.Upload(ctx, nopSeekCloser{bytes.NewReader(nil)}, nil); err != nil {
			return nil, fmt.Errorf("Cannot open backup device '%s': %v", target, err)
		}
	}
	l, err := lease.NewBlobClient(c, &lease.BlobClientOptions{LeaseID: to(leaseID)})
	if err != nil {
		return nil, err
	}
	if _, err := l.AcquireLease(ctx, -1, nil); err != nil {
		return nil, fmt.Errorf("Cannot open backup device '%s': lease: %v", target, err)
	}
	return func() { _, _ = l.ReleaseLease(context.WithoutCancel(ctx), nil) }, nil
}

func to[T any](v T) *T { return &v }

// backup writes a backup of name as SQL Server does TO URL: the empty
// blob and its lease, then 4 MiB blocks (MAXTRANSFERSIZE) staged one after
// the other under the lease, then the block list.
func (s *Server) backup(ctx context.Context, name, device, target, with string) error {
	s.mu.Lock()
	d := s.DBs[name]
	s.mu.Unlock()
	if d == nil {
		return fmt.Errorf("Database '%s' does not exist. Make sure that the name is entered correctly.", name)
	}
	if !strings.Contains(with, "COPY_ONLY") || !strings.Contains(with, "CHECKSUM") {
		return fmt.Errorf("simulated server: the test expects COPY_ONLY, CHECKSUM: %s", with)
	}
	b := backupStream(name, d, strings.Contains(with, " COMPRESSION"))
	if device == mssql.DeviceDisk {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		if err != nil {
			return fmt.Errorf("Cannot open backup device '%s'. Operating system error: %v", target, err)
		}
		_, err = io.Copy(f, b)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	c, err := s.blobClient(target)
	if err != nil {
		return err
	}
	release, err := s.takeLease(ctx, c, target, true)
	if err != nil {
		return err
	}
	defer release()
	leased := &blob.LeaseAccessConditions{LeaseID: to(leaseID)}
	var ids []string
	buf := make([]byte, mssql.URLTransferSize)
	for i := 0; ; i++ {
		n, err := io.ReadFull(b, buf)
		if n == 0 {
			break
		}
		id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%08d-sqlserver-block", i))
		if _, err := c.StageBlock(ctx, id, nopSeekCloser{bytes.NewReader(buf[:n])}, &blockblob.StageBlockOptions{LeaseAccessConditions: leased}); err != nil {
			return fmt.Errorf("Write on \"%s\" failed: %v. BACKUP DATABASE is terminating abnormally.", target, err)
		}
		ids = append(ids, id)
		if err != nil {
			break // the last, short block
		}
	}
	if _, err := c.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		AccessConditions: &blob.AccessConditions{LeaseAccessConditions: leased}}); err != nil {
		return fmt.Errorf("Write on \"%s\" failed: %v. BACKUP DATABASE is terminating abnormally.", target, err)
	}
	return nil
}

// each hands a backup's first n bytes (all when n < 0) to fn in order, in
// pieces, as SQL Server reads one FROM URL: ranges of 4 MiB, several in
// flight, so that at most ParallelReads+1 ranges are held at once.
func (s *Server) each(ctx context.Context, device, target string, n int64, fn func(p []byte) error) error {
	if device == mssql.DeviceDisk {
		f, err := os.Open(target)
		if err != nil {
			return fmt.Errorf("Cannot open backup device '%s'. Operating system error: %v", target, err)
		}
		defer f.Close()
		var r io.Reader = f
		if n >= 0 {
			r = io.LimitReader(f, n)
		}
		buf := make([]byte, mssql.URLTransferSize)
		for {
			k, err := io.ReadFull(r, buf)
			if k > 0 {
				if ferr := fn(buf[:k]); ferr != nil {
					return ferr
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	c, err := s.blobClient(target)
	if err != nil {
		return err
	}
	release, err := s.takeLease(ctx, c, target, false)
	if err != nil {
		return err
	}
	defer release()
	props, err := c.GetProperties(ctx, nil)
	if err != nil {
		return fmt.Errorf("Cannot open backup device '%s': %v", target, err)
	}
	size := *props.ContentLength
	if n >= 0 && n < size {
		size = n
	}
	type piece struct {
		b   []byte
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	count := int((size + mssql.URLTransferSize - 1) / mssql.URLTransferSize)
	results := make([]chan piece, count)
	for i := range results {
		results[i] = make(chan piece, 1)
	}
	sem := make(chan struct{}, s.ParallelReads)
	go func() {
		for i := range count {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			off := int64(i) * mssql.URLTransferSize
			cnt := min(mssql.URLTransferSize, size-off)
			go func() {
				resp, err := c.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: cnt}})
				b := make([]byte, cnt)
				if err == nil {
					_, err = io.ReadFull(resp.Body, b)
					resp.Body.Close()
				}
				results[i] <- piece{b, err}
			}()
		}
	}()
	for i := range count {
		var p piece
		select {
		case p = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-sem
		if p.err != nil {
			return fmt.Errorf("Read on \"%s\" failed: %v", target, p.err)
		}
		if err := fn(p.b); err != nil {
			return err
		}
	}
	return nil
}

// head is a backup's first n bytes.
func (s *Server) head(ctx context.Context, device, target string, n int64) ([]byte, error) {
	var out []byte
	err := s.each(ctx, device, target, n, func(p []byte) error {
		out = append(out, p...)
		return nil
	})
	return out, err
}

// whole reads a whole backup and checks its checksum.
func (s *Server) whole(ctx context.Context, device, target string) (simHeader, error) {
	var head, tail []byte
	sum := sha256.New()
	err := s.each(ctx, device, target, -1, func(p []byte) error {
		if len(head) < 64<<10 {
			head = append(head, p[:min(len(p), 64<<10-len(head))]...)
		}
		// Everything but the last 32 bytes is hashed.
		data := append(tail, p...)
		cut := max(0, len(data)-sha256.Size)
		sum.Write(data[:cut])
		tail = append([]byte(nil), data[cut:]...)
		return nil
	})
	if err != nil {
		return simHeader{}, err
	}
	if len(tail) < sha256.Size || !bytes.Equal(sum.Sum(nil), tail) {
		return simHeader{}, errors.New("The backup set holds a backup of a database with a damaged page (checksum). RESTORE is terminating abnormally.")
	}
	return parseBackup(head)
}

func (s *Server) check(ctx context.Context, what, device, target string) (driver.Rows, error) {
	if what == "VERIFYONLY" {
		_, err := s.whole(ctx, device, target)
		return &simRows{}, err
	}
	head, err := s.head(ctx, device, target, 64<<10)
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

func (s *Server) restore(ctx context.Context, name, device, target, with string) error {
	s.mu.Lock()
	exists := s.DBs[name] != nil
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
	var placed []mssql.Move
	for _, f := range h.Files {
		p, ok := moves[f[0].(string)]
		if !ok {
			return fmt.Errorf("File '%s' cannot be restored to '%s'. Use WITH MOVE to identify a valid location for the file.", f[0], f[1])
		}
		if seen[p] {
			return fmt.Errorf("The file '%s' cannot be overwritten. It is being used by another file.", p)
		}
		seen[p] = true
		placed = append(placed, mssql.Move{Logical: f[0].(string), Physical: p})
	}
	sort.Slice(placed, func(i, j int) bool { return placed[i].Logical < placed[j].Logical })
	d := h.DB
	d.Moves = placed
	s.mu.Lock()
	defer s.mu.Unlock()
	s.DBs[name] = &d
	return nil
}

// Put creates or replaces the database name.
func (s *Server) Put(name string, d *DB) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.DBs[name] = d
}

// Get is the database name, or nil.
func (s *Server) Get(name string) *DB {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.DBs[name]
}

// Secrets are the secrets of every credential ever created, and how many
// credentials are left.
func (s *Server) Secrets() (secrets []string, left int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.Statements {
		if m := reCredential.FindStringSubmatch(q); m != nil {
			secrets = append(secrets, unquote(m[2]))
		}
	}
	return secrets, len(s.Credentials)
}

// Names lists the server's databases, sorted.
func (s *Server) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.DBs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Cert writes a self-signed certificate for 127.0.0.1 and localhost, valid
// for a day, into dir (cert.pem, key.pem) and returns its PEM and the
// files' paths: an endpoint certificate the Server is told to trust.
func Cert(dir string) (certPEM []byte, certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rahatback-agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, "", "", err
	}
	return certPEM, certFile, keyFile, nil
}
