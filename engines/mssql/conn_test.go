package mssql

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/microsoft/go-mssqldb/msdsn"

	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/pipeline"
)

// TestConfig: the connection fields reach the driver as meant, and odd
// characters in a password or database stay themselves.
func TestConfig(t *testing.T) {
	for _, c := range []struct {
		conn engines.Conn
		enc  msdsn.Encryption
	}{
		{engines.Conn{Host: "db.example", Port: 1433, Username: "sa", Password: "p@ss:/?#&=w'rd", Database: "Sales & Co"}, msdsn.EncryptionRequired},
		{engines.Conn{Host: "db.example", Instance: "SQLEXPRESS", Username: "u", Database: "d", Encrypt: EncryptStrict}, msdsn.EncryptionStrict},
		{engines.Conn{Host: "10.0.0.5", Port: 14330, Username: "u", Database: "d", Encrypt: EncryptOptional}, msdsn.EncryptionOff},
	} {
		cfg, err := config(c.conn)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Host != c.conn.Host || int(cfg.Port) != c.conn.Port && c.conn.Port != 0 || cfg.Instance != c.conn.Instance ||
			cfg.Database != c.conn.Database || cfg.User != c.conn.Username || cfg.Password != c.conn.Password || cfg.Encryption != c.enc {
			t.Errorf("config(%+v) = host %q port %d instance %q database %q user %q encryption %v", c.conn, cfg.Host, cfg.Port,
				cfg.Instance, cfg.Database, cfg.User, cfg.Encryption)
		}
		if cfg.TLSConfig != nil && cfg.TLSConfig.InsecureSkipVerify {
			t.Errorf("%+v: the server's certificate is not checked", c.conn)
		}
	}
	// A named instance with the default port is looked up through the
	// Browser; with another port, that port is dialled.
	for _, c := range []struct {
		port int
		want uint64
	}{{1433, 0}, {0, 0}, {14330, 14330}} {
		cfg, err := config(engines.Conn{Host: "h", Port: c.port, Instance: "SQLEXPRESS"})
		if err != nil || cfg.Port != c.want || cfg.Instance != "SQLEXPRESS" {
			t.Errorf("instance with port %d: dialled port %d (want %d), instance %q, %v", c.port, cfg.Port, c.want, cfg.Instance, err)
		}
	}
	if cfg, err := config(engines.Conn{Host: "::1", Port: 1433}); err != nil || cfg.Host != "::1" || cfg.Port != 1433 {
		t.Errorf("an IPv6 host: host %q port %d, %v", cfg.Host, cfg.Port, err)
	}
	if _, err := config(engines.Conn{Host: "h", Encrypt: "sometimes"}); err == nil {
		t.Error("an unknown encryption setting was accepted")
	}
}

// TestTestRefusesNonServer: Test against a port that speaks no TDS fails
// with an error and without the password in it.
func TestTestRefusesNonServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const secret = "s3cr3t-Passw0rd"
	_, err = (&Engine{}).Test(ctx, engines.Conn{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Username: "sa", Password: secret, Database: "d"})
	if err == nil {
		t.Fatal("Test succeeded against a server that is not SQL Server")
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("the error holds the password: %v", err)
	}
}

// TestSteady: a table whose rows changed during the backup is left out of
// the manifest, by name.
func TestSteady(t *testing.T) {
	before := []pipeline.TableCount{{Schema: "dbo", Name: "a", Rows: 1}, {Schema: "dbo", Name: "b", Rows: 2}, {Schema: "dbo", Name: "c", Rows: 3}}
	after := []pipeline.TableCount{{Schema: "dbo", Name: "a", Rows: 1}, {Schema: "dbo", Name: "b", Rows: 5}, {Schema: "dbo", Name: "d", Rows: 0}}
	keep, changed := steady(before, after)
	if len(keep) != 1 || keep[0].Name != "a" || strings.Join(changed, ",") != "dbo.b,dbo.d" {
		t.Fatalf("steady = %v, %v", keep, changed)
	}
}
