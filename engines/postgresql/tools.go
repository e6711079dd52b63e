package postgresql

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/rahatback/rahatback/engines"
)

// toolPath finds a PostgreSQL client tool: the newest
// /usr/lib/postgresql/<major>/bin/<name> (pg_dump must be at least as new as
// the server), else $PATH.
//
// RAHATBACK_PG_BINDIR, when set, is the only place looked at.
func toolPath(name string) (string, error) {
	if dir := os.Getenv("RAHATBACK_PG_BINDIR"); dir != "" {
		return filepath.Join(dir, name), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	sort.Slice(matches, func(i, j int) bool { return majorOf(matches[i]) > majorOf(matches[j]) })
	if len(matches) > 0 {
		return matches[0], nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: install the PostgreSQL client tools (Debian: apt-get install postgresql-client)", name)
	}
	return p, nil
}

func majorOf(path string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return n
}

// toolEnv is the environment of a client tool: connection settings as
// libpq variables (never parsed as a connection string, so names with
// spaces, quotes, '=' or a leading '-' reach exactly that database), the
// password in a 0600 passfile, and no inherited PG* variables. The returned
// cleanup removes the passfile.
func (e Engine) toolEnv(c engines.Conn) ([]string, func(), error) {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"PGHOST="+c.Host,
		"PGPORT="+strconv.Itoa(c.Port),
		"PGUSER="+c.Username,
		"PGDATABASE="+c.Database,
		"PGAPPNAME=rahatback-agent",
		"PGCONNECT_TIMEOUT=15",
		"PGSSLMODE=prefer",
	)
	f, err := os.CreateTemp(e.PassDir, "rahatback-pgpass-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.Remove(f.Name()) }
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		cleanup()
		return nil, nil, err
	}
	if _, err := fmt.Fprintf(f, "*:*:*:*:%s\n", passfileEscape(c.Password)); err != nil {
		f.Close()
		cleanup()
		return nil, nil, err
	}
	if err := f.Close(); err != nil {
		cleanup()
		return nil, nil, err
	}
	return append(env, "PGPASSFILE="+f.Name()), cleanup, nil
}

// passfileEscape escapes ':' and '\' as the .pgpass format requires.
func passfileEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return strings.ReplaceAll(s, ":", `\:`)
}

// toolVersion returns the first line of `<tool> --version`.
func toolVersion(ctx context.Context, path string) (string, error) {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), nil
}
