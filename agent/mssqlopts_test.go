package agent

import (
	"strings"
	"testing"
)

// TestMSSQLOpts: a blob endpoint needs all four settings and an https URL
// SQL Server can write to; the variables fill them.
func TestMSSQLOpts(t *testing.T) {
	env := map[string]string{"RAHATBACK_MSSQL_ENDPOINT": "https://agent.example.com:8443", "RAHATBACK_MSSQL_LISTEN": ":8443",
		"RAHATBACK_MSSQL_CERT": "/etc/rb/cert.pem", "RAHATBACK_MSSQL_KEY": "/etc/rb/key.pem", "RAHATBACK_MSSQL_DISK_DIR": "/srv/shared"}
	o := MSSQLOptsFromEnv(func(k string) string { return env[k] })
	if o != (MSSQLOpts{Endpoint: "https://agent.example.com:8443", Listen: ":8443", CertFile: "/etc/rb/cert.pem", KeyFile: "/etc/rb/key.pem", DiskDir: "/srv/shared"}) {
		t.Fatalf("from the environment: %+v", o)
	}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if err := (MSSQLOpts{DiskDir: "/srv/shared"}).validate(); err != nil {
		t.Fatalf("TO DISK alone: %v", err)
	}
	for _, c := range []struct {
		o    MSSQLOpts
		want string
	}{
		{MSSQLOpts{Endpoint: o.Endpoint}, "needs --mssql-endpoint, --mssql-listen, --mssql-cert and --mssql-key"},
		{MSSQLOpts{Listen: ":8443", CertFile: "c", KeyFile: "k"}, "needs --mssql-endpoint"},
		{MSSQLOpts{Endpoint: "http://agent:8443", Listen: ":8443", CertFile: "c", KeyFile: "k"}, "not an https://host[:port] URL"},
		{MSSQLOpts{Endpoint: "https://agent:8443/path", Listen: ":8443", CertFile: "c", KeyFile: "k"}, "not an https://host[:port] URL"},
	} {
		if err := c.o.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
}
