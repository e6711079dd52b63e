package mssql

import (
	"errors"
	"strings"
	"testing"
)

// TestStatements pins down every statement the engine sends, byte for
// byte: no SQL Server runs here, so a change in what is sent must be a
// deliberate change of this expectation.
func TestStatements(t *testing.T) {
	const url = "https://agent.example:8443/rahatback/20261201T000000Z-run.bak"
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct{ got, want string }{
		{must(BackupToURL("Sales", url, BackupOptions{Compression: true})),
			`BACKUP DATABASE [Sales] TO URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak' WITH COPY_ONLY, CHECKSUM, FORMAT, INIT, COMPRESSION, MAXTRANSFERSIZE = 4194304, BLOCKSIZE = 65536, STATS = 5;`},
		{must(BackupToURL("Sales", url, BackupOptions{Kind: KindDifferential})),
			`BACKUP DATABASE [Sales] TO URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak' WITH DIFFERENTIAL, CHECKSUM, FORMAT, INIT, NO_COMPRESSION, MAXTRANSFERSIZE = 4194304, BLOCKSIZE = 65536, STATS = 5;`},
		{must(BackupToURL("Sales", url, BackupOptions{Kind: KindLog, Compression: true})),
			`BACKUP LOG [Sales] TO URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak' WITH CHECKSUM, FORMAT, INIT, COMPRESSION, MAXTRANSFERSIZE = 4194304, BLOCKSIZE = 65536, STATS = 5;`},
		{must(BackupToDisk("Sales", `D:\Backups\sales.bak`, BackupOptions{})),
			`BACKUP DATABASE [Sales] TO DISK = N'D:\Backups\sales.bak' WITH COPY_ONLY, CHECKSUM, FORMAT, INIT, NO_COMPRESSION, STATS = 5;`},
		{must(RestoreFromURL("Sales_copy", url, RestoreOptions{Moves: []Move{{"Sales", `/var/opt/mssql/data/Sales_copy.mdf`}, {"Sales_log", `/var/opt/mssql/data/Sales_copy_log.ldf`}}})),
			`RESTORE DATABASE [Sales_copy] FROM URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak' WITH CHECKSUM, MOVE N'Sales' TO N'/var/opt/mssql/data/Sales_copy.mdf', MOVE N'Sales_log' TO N'/var/opt/mssql/data/Sales_copy_log.ldf', RECOVERY, STATS = 5;`},
		{must(RestoreFromURL("Sales", url, RestoreOptions{Replace: true, NoRecovery: true})),
			`RESTORE DATABASE [Sales] FROM URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak' WITH CHECKSUM, REPLACE, NORECOVERY, STATS = 5;`},
		{must(RestoreCheck("VERIFYONLY", url)),
			`RESTORE VERIFYONLY FROM URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak' WITH CHECKSUM;`},
		{must(RestoreCheck("HEADERONLY", url)),
			`RESTORE HEADERONLY FROM URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak';`},
		{must(RestoreCheck("FILELISTONLY", url)),
			`RESTORE FILELISTONLY FROM URL = N'https://agent.example:8443/rahatback/20261201T000000Z-run.bak';`},
		{must(CreateCredential("https://agent.example:8443/rahatback", "?sv=2020-10-02&sr=c&sp=rwdl&sig=abc%2B")),
			`CREATE CREDENTIAL [https://agent.example:8443/rahatback] WITH IDENTITY = N'SHARED ACCESS SIGNATURE', SECRET = N'sv=2020-10-02&sr=c&sp=rwdl&sig=abc%2B';`},
		{must(DropCredential("https://agent.example:8443/rahatback")),
			`IF EXISTS (SELECT 1 FROM sys.credentials WHERE name = N'https://agent.example:8443/rahatback') DROP CREDENTIAL [https://agent.example:8443/rahatback];`},
		{must(CheckDB("rahatback_verify_0123")),
			`DBCC CHECKDB ([rahatback_verify_0123]) WITH NO_INFOMSGS, ALL_ERRORMSGS;`},
		{must(DropDatabase("rahatback_verify_0123")),
			`IF DB_ID(N'rahatback_verify_0123') IS NOT NULL BEGIN IF DATABASEPROPERTYEX(N'rahatback_verify_0123', 'Status') = 'ONLINE' ALTER DATABASE [rahatback_verify_0123] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE [rahatback_verify_0123]; END;`},
		{must(RestoreFrom("Sales_new", DeviceDisk, `/var/opt/mssql/rahatback/x.bak`, RestoreOptions{Moves: []Move{{"Sales", `/var/opt/mssql/data/Sales_new_Sales.mdf`}}})),
			`RESTORE DATABASE [Sales_new] FROM DISK = N'/var/opt/mssql/rahatback/x.bak' WITH CHECKSUM, MOVE N'Sales' TO N'/var/opt/mssql/data/Sales_new_Sales.mdf', RECOVERY, STATS = 5;`},
		{must(RestoreCheckFrom("VERIFYONLY", DeviceDisk, `/var/opt/mssql/rahatback/x.bak`)),
			`RESTORE VERIFYONLY FROM DISK = N'/var/opt/mssql/rahatback/x.bak' WITH CHECKSUM;`},
		{must(RenameDatabase("Sales", "Sales_old")),
			`BEGIN TRY ALTER DATABASE [Sales] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; ALTER DATABASE [Sales] MODIFY NAME = [Sales_old]; ALTER DATABASE [Sales_old] SET MULTI_USER; END TRY ` +
				`BEGIN CATCH IF DB_ID(N'Sales') IS NOT NULL ALTER DATABASE [Sales] SET MULTI_USER; THROW; END CATCH;`},
		{must(DatabaseSize("Sales")),
			`SELECT CAST(COALESCE(SUM(a.used_pages), 0) AS bigint) * 8192 FROM [Sales].sys.allocation_units AS a;`},
		{must(RowCounts("Sales")), "SELECT s.name AS schema_name, t.name AS table_name, SUM(p.rows) AS row_count\n" +
			"FROM [Sales].sys.tables AS t\n" +
			"JOIN [Sales].sys.schemas AS s ON s.schema_id = t.schema_id\n" +
			"JOIN [Sales].sys.partitions AS p ON p.object_id = t.object_id AND p.index_id IN (0, 1)\n" +
			"WHERE t.is_ms_shipped = 0\n" +
			"GROUP BY s.name, t.name\n" +
			"ORDER BY s.name, t.name;"},
	} {
		if c.got != c.want {
			t.Errorf("statement differs from its expectation:\n got %s\nwant %s", c.got, c.want)
		}
	}
}

// TestHostileNames: a database name or path that tries to end the
// identifier or the literal stays one identifier or one literal.
func TestHostileNames(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"a]b", "[a]]b]"},
		{"]]", "[]]]]]"},
		{"x]; DROP DATABASE [master]; --", "[x]]; DROP DATABASE [master]]; --]"},
		{"it's", "[it's]"},
		{"Ünïcödé 数据库", "[Ünïcödé 数据库]"},
		{"[already]", "[[already]]]"},
	} {
		got, err := QuoteName(c.name)
		if err != nil || got != c.want {
			t.Errorf("QuoteName(%q) = %q, %v; want %q", c.name, got, err, c.want)
		}
		// Inside: every "]" is doubled, so the only single "]" is the last.
		inner := strings.ReplaceAll(got[1:len(got)-1], "]]", "")
		if strings.Contains(inner, "]") {
			t.Errorf("QuoteName(%q) = %q ends the identifier early", c.name, got)
		}
	}
	for _, c := range []struct{ s, want string }{
		{"O'Brien", "N'O''Brien'"},
		{"'; SHUTDOWN WITH NOWAIT; --", "N'''; SHUTDOWN WITH NOWAIT; --'"},
		{`C:\a'b\c.bak`, `N'C:\a''b\c.bak'`},
	} {
		got, err := QuoteString(c.s)
		if err != nil || got != c.want {
			t.Errorf("QuoteString(%q) = %q, %v; want %q", c.s, got, err, c.want)
		}
	}
	stmt, err := BackupToURL("x]; DROP DATABASE [master]; --", "https://h/c/it's.bak", BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := `BACKUP DATABASE [x]]; DROP DATABASE [master]]; --] TO URL = N'https://h/c/it''s.bak' WITH COPY_ONLY, CHECKSUM, FORMAT, INIT, NO_COMPRESSION, MAXTRANSFERSIZE = 4194304, BLOCKSIZE = 65536, STATS = 5;`
	if stmt != want {
		t.Errorf("hostile backup statement:\n got %s\nwant %s", stmt, want)
	}
	for _, bad := range []string{"", "a\x00b", strings.Repeat("x", 129), "\xff"} {
		if _, err := QuoteName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("QuoteName(%q) accepted", bad)
		}
	}
	if _, err := QuoteName(strings.Repeat("é", 128)); err != nil {
		t.Errorf("a 128-character name was refused: %v", err)
	}
	if _, err := QuoteString("a\x00b"); err == nil {
		t.Error("a literal with NUL was accepted")
	}
	if _, err := BackupToURL("db", "u", BackupOptions{Kind: "incremental"}); err == nil {
		t.Error("an unknown backup kind was accepted")
	}
	if _, err := RestoreCheck("DATABASE", "u"); err == nil {
		t.Error("an unknown RESTORE check was accepted")
	}
	if !CompressionAllowed(3, "Enterprise Edition (64-bit)") || !CompressionAllowed(2, "Standard Edition (64-bit)") ||
		CompressionAllowed(4, "Express Edition (64-bit)") || CompressionAllowed(2, "Web Edition (64-bit)") {
		t.Error("compression: Express (4) and Web (2, Web Edition) cannot, Enterprise (3) and Standard (2) can")
	}
}
