package agent

import (
	"strings"
	"testing"
)

// TestMSSQLOpts: a blob endpoint needs all four settings and an https URL
// SQL Server can write to; the variables fill them.
func TestMSSQLOpts(t *testing.T) {
	env := map[string]string{"RAHATBACK_MSSQL_ENDPOINT": "https://rahatback-agent.corp.example", "RAHATBACK_MSSQL_LISTEN": ":443",
		"RAHATBACK_MSSQL_CERT": "/etc/rb/cert.pem", "RAHATBACK_MSSQL_KEY": "/etc/rb/key.pem", "RAHATBACK_MSSQL_DISK_DIR": "/srv/shared"}
	o := MSSQLOptsFromEnv(func(k string) string { return env[k] })
	if o != (MSSQLOpts{Endpoint: "https://rahatback-agent.corp.example", Listen: ":443", CertFile: "/etc/rb/cert.pem", KeyFile: "/etc/rb/key.pem", DiskDir: "/srv/shared"}) {
		t.Fatalf("from the environment: %+v", o)
	}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if w := o.warnings(); len(w) != 0 {
		t.Fatalf("warnings for port 443: %v", w)
	}
	if w := (MSSQLOpts{Endpoint: "https://agent.example:8443"}).warnings(); len(w) != 1 || !strings.Contains(w[0], "443 only") {
		t.Fatalf("warnings for port 8443: %v", w)
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
		{MSSQLOpts{Endpoint: "https://10.0.0.7", Listen: ":443", CertFile: "c", KeyFile: "k"}, "names an IP address"},
		{MSSQLOpts{Endpoint: "https://[::1]:443", Listen: ":443", CertFile: "c", KeyFile: "k"}, "names an IP address"},
	} {
		if err := c.o.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
}
