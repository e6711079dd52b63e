package mysql

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rahatback/rahatback/engines"
)

// tool finds a client tool: the MariaDB name, else the MySQL one
// (mariadb-dump or mysqldump, mariadb or mysql).
func (e Engine) tool(names ...string) (string, error) {
	for _, n := range names {
		if e.BinDir != "" {
			p := filepath.Join(e.BinDir, n)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			continue
		}
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install the MariaDB client tools (Debian: apt-get install mariadb-client)", names[0])
}

// optionFile writes the connection of c (and database, when not "") as a
// 0600 option file for the client tools, read with --defaults-file (so no
// other option file is read, and the password is in no argument and no
// environment). The returned cleanup removes it.
func (e Engine) optionFile(c engines.Conn, database string) (string, func(), error) {
	f, err := os.CreateTemp(e.OptionDir, "rahatback-my-*.cnf")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.Remove(f.Name()) }
	for _, v := range []string{c.Username, c.Password, c.Host, database} {
		// The tools read option files in lines of about 4 KiB: a longer
		// value would spill into an option of its own.
		if len(v) > maxOptionValue || strings.ContainsRune(v, 0) {
			f.Close()
			cleanup()
			return "", nil, fmt.Errorf("a connection setting is longer than %d bytes or holds a NUL byte", maxOptionValue)
		}
	}
	var b strings.Builder
	b.WriteString("[client]\n")
	fmt.Fprintf(&b, "user=%s\n", optionValue(c.Username))
	fmt.Fprintf(&b, "password=%s\n", optionValue(c.Password))
	if strings.HasPrefix(c.Host, "/") {
		fmt.Fprintf(&b, "socket=%s\nprotocol=SOCKET\n", optionValue(c.Host))
	} else {
		fmt.Fprintf(&b, "host=%s\nport=%s\nprotocol=TCP\n", optionValue(c.Host), strconv.Itoa(c.Port))
	}
	b.WriteString("default-character-set=utf8mb4\n")
	if database != "" {
		fmt.Fprintf(&b, "[mysql]\ndatabase=%s\n[mariadb-client]\ndatabase=%s\n", optionValue(database), optionValue(database))
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		cleanup()
		return "", nil, err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		cleanup()
		return "", nil, err
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, err
	}
	return f.Name(), cleanup, nil
}

// maxOptionValue bounds every value written to an option file.
const maxOptionValue = 1024

// optionValue quotes v for an option file: in double quotes, with
// backslash, quote and line breaks escaped as the option file format
// reads them.
func optionValue(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(v) + `"`
}

// toolVersion returns the first line of `<tool> --version`.
func toolVersion(ctx context.Context, path string) (string, error) {
	out, err := exec.CommandContext(ctx, path, "--no-defaults", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), nil
}

// quoteIdent is name as a MySQL identifier: in backquotes, backquotes
// doubled.
func quoteIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }
