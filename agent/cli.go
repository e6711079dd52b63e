package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/rahatback/rahatback/version"
)

const usage = `usage: rahatback-agent <command> [flags]

commands:
  enroll   --server URL --token TOKEN   join an account (token from Agents → Connect)
  run                                   connect and serve the control plane
           [--mssql-endpoint https://HOST --mssql-listen :443
            --mssql-cert FILE --mssql-key FILE | --mssql-disk-dir DIR]
                                        how SQL Server's backups reach the agent
                                        (run -h, and the README's SQL Server section)
  restore  --from DIR|s3://… --backup ID [--key FILE]
                                        rebuild a backup without the control plane
                                        and write its dump to stdout (restore -h)
  version                               print the version

Flags common to enroll and run: --state-dir (env RAHATBACK_AGENT_STATE_DIR),
default /var/lib/rahatback-agent as root, else ~/.local/state/rahatback-agent.
`

func defaultStateDir(getenv func(string) string) string {
	if v := getenv("RAHATBACK_AGENT_STATE_DIR"); v != "" {
		return v
	}
	if os.Geteuid() == 0 {
		return "/var/lib/rahatback-agent"
	}
	if v := getenv("XDG_STATE_HOME"); v != "" {
		return filepath.Join(v, "rahatback-agent")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "rahatback-agent")
	}
	return "rahatback-agent-state"
}

// Main is the rahatback-agent command line.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	fs := flag.NewFlagSet("rahatback-agent "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir(getenv), "directory holding the agent's identity and credentials")
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, version.String())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "restore":
		return offlineRestore(ctx, args[1:], getenv, stdout, stderr)
	case "enroll":
		server := fs.String("server", getenv("RAHATBACK_SERVER"), "control plane URL, e.g. http://127.0.0.1:8080")
		token := fs.String("token", "", "enrollment token (or env RAHATBACK_ENROLL_TOKEN)")
		name := fs.String("name", "", "agent name shown in the dashboard (default: host name)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *token == "" {
			*token = getenv("RAHATBACK_ENROLL_TOKEN")
		}
		st, err := Enroll(ctx, EnrollOpts{Server: *server, Token: *token, StateDir: *stateDir, Name: *name})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "enrolled as agent %s; state in %s\nnext: rahatback-agent run --state-dir %s\n", st.AgentID, *stateDir, *stateDir)
		return nil
	case "run":
		localDir := fs.String("local-storage-dir", "", "directory for backups of jobs with local storage (default <state-dir>/backups)")
		heartbeat := fs.Duration("heartbeat", DefaultHeartbeat, "how often to report being alive (keep well under the control plane's --agent-offline-after)")
		ms := MSSQLOptsFromEnv(getenv)
		fs.StringVar(&ms.Endpoint, "mssql-endpoint", ms.Endpoint, "https URL at which SQL Server reaches this agent's blob endpoint, e.g. https://rahatback-agent.corp.example (a host name, port 443; backups TO URL; env RAHATBACK_MSSQL_ENDPOINT)")
		fs.StringVar(&ms.Listen, "mssql-listen", ms.Listen, "address the SQL Server blob endpoint listens on, e.g. :443 (env RAHATBACK_MSSQL_LISTEN)")
		fs.StringVar(&ms.CertFile, "mssql-cert", ms.CertFile, "PEM certificate chain of the blob endpoint, trusted by SQL Server's host (env RAHATBACK_MSSQL_CERT)")
		fs.StringVar(&ms.KeyFile, "mssql-key", ms.KeyFile, "PEM private key of the blob endpoint (env RAHATBACK_MSSQL_KEY)")
		fs.StringVar(&ms.DiskDir, "mssql-disk-dir", ms.DiskDir, "directory SQL Server and this agent both read and write: backups TO DISK, when no endpoint is set (env RAHATBACK_MSSQL_DISK_DIR)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *localDir == "" {
			*localDir = filepath.Join(*stateDir, "backups")
		}
		st, err := LoadState(*stateDir)
		if err != nil {
			return err
		}
		return Run(ctx, RunOpts{State: st, Logger: log, LocalStorageDir: *localDir, Heartbeat: *heartbeat, StateDir: *stateDir, MSSQL: ms})
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
