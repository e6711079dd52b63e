package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/vault"
)

// secretColumns lists every column that holds a vault ciphertext. A new
// secret column is one line here plus its list and update queries in
// queries/secrets.sql.
var secretColumns = []secretColumn{
	column("databases", "password_enc", "password", (*db.Queries).ListSecretDatabasePasswords, (*db.Queries).RewrapDatabasePassword),
	column("backup_jobs", "age_identity_enc", "age_identity", (*db.Queries).ListSecretJobAgeIdentities, (*db.Queries).RewrapJobAgeIdentity),
	column("cloud_storages", "s3_secret_enc", "s3_secret", (*db.Queries).ListSecretS3Secrets, (*db.Queries).RewrapS3Secret),
	column("cloud_storages", "gd_refresh_token_enc", "gd_refresh_token", (*db.Queries).ListSecretDriveTokens, (*db.Queries).RewrapDriveToken),
	column("notification_channels", "url_enc", "url", (*db.Queries).ListSecretChannelURLs, (*db.Queries).RewrapChannelURL),
	column("notification_channels", "secret_enc", "secret", (*db.Queries).ListSecretChannelSecrets, (*db.Queries).RewrapChannelSecret),
}

// secretColumn is where ciphertexts live and how the vault binds them:
// vault.Binding(table, bind, row id).
type secretColumn struct {
	table, column string
	bind          string
	list          func(context.Context, db.DBTX) ([]storedSecret, error)
	update        func(context.Context, db.DBTX, storedSecret) error
}

func (c secretColumn) String() string { return c.table + "." + c.column }

func (c secretColumn) binding(id uuid.UUID) []byte {
	return vault.Binding(c.table, c.bind, id.String())
}

// storedSecret is one row's ciphertext; sqlc's row and parameter types of
// the queries in secrets.sql have its fields.
type storedSecret struct {
	ID         uuid.UUID
	Ciphertext []byte
}

// column adapts a column's generated queries to secretColumn.
func column[R ~struct {
	ID         uuid.UUID
	Ciphertext []byte
}, P ~struct {
	Ciphertext []byte
	ID         uuid.UUID
}](table, col, bind string,
	list func(*db.Queries, context.Context, db.DBTX) ([]R, error),
	update func(*db.Queries, context.Context, db.DBTX, P) error,
) secretColumn {
	q := db.New()
	return secretColumn{table: table, column: col, bind: bind,
		list: func(ctx context.Context, tx db.DBTX) ([]storedSecret, error) {
			rows, err := list(q, ctx, tx)
			if err != nil {
				return nil, err
			}
			out := make([]storedSecret, len(rows))
			for i, r := range rows {
				out[i] = storedSecret(r)
			}
			return out, nil
		},
		update: func(ctx context.Context, tx db.DBTX, s storedSecret) error {
			return update(q, ctx, tx, P{Ciphertext: s.Ciphertext, ID: s.ID})
		},
	}
}

// found is a stored secret and its column.
type found struct {
	col *secretColumn
	storedSecret
}

func (f found) String() string { return fmt.Sprintf("%s of row %s", f.col, f.ID) }

// listSecrets returns every stored secret, locking the rows when tx is a
// transaction.
func listSecrets(ctx context.Context, tx db.DBTX) ([]found, error) {
	var out []found
	for i := range secretColumns {
		c := &secretColumns[i]
		rows, err := c.list(ctx, tx)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", c, err)
		}
		for _, r := range rows {
			out = append(out, found{c, r})
		}
	}
	return out, nil
}

func masterKeysPath(dataDir string) string { return filepath.Join(dataDir, "master.keys") }

// envKeys reads the master keys given in the environment; the control plane
// (newAPI) and `rahatback keys` read them alike.
func envKeys(getenv func(string) string) vault.EnvKeys {
	return vault.EnvKeys{Key: getenv("RAHATBACK_MASTER_KEY"), Keys: getenv("RAHATBACK_MASTER_KEYS")}
}

const keysUsage = `usage: rahatback keys <rotate|rewrap|status> [flags]

  rotate  add a new master key to <data-dir>/master.keys and re-wrap every
          secret stored in the database under it; older keys stay in the file
  rewrap  re-wrap every secret under the current master key, without adding
          one (after adding a key to RAHATBACK_MASTER_KEYS)
  status  print the master key versions and how many secrets each one wraps

The flags are those of migrate (--data-dir, --database-url, …); the database
is opened the same way. Restart running control planes after a rotation so
that they load the new key.
`

// runKeys is `rahatback keys`.
func runKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return errors.New("keys: no subcommand given")
	}
	sub := args[0]
	switch sub {
	case "rotate", "rewrap", "status":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	default:
		fmt.Fprint(stderr, keysUsage)
		return fmt.Errorf("keys: unknown subcommand %q", sub)
	}
	cfg, err := parse("keys "+sub, args[1:], getenv, stderr)
	if err != nil {
		return err
	}
	log, err := cfg.logger(stderr)
	if err != nil {
		return err
	}
	env := envKeys(getenv)
	path := masterKeysPath(cfg.DataDir)
	if sub == "rotate" && env.Set() {
		return errEnvRotate(env)
	}
	if cfg.DatabaseURL == "" {
		// The private cluster lives in the data dir: never start a new,
		// empty one to look for secrets.
		if _, err := os.Stat(cfg.DataDir); err != nil {
			return fmt.Errorf("keys: data dir: %w (wrong --data-dir?)", err)
		}
	}
	s := &system{cfg: cfg, log: log, getenv: getenv}
	defer s.close()
	if err := s.openDatabase(ctx); err != nil {
		return err
	}
	switch sub {
	case "rotate":
		return rotateKeys(ctx, s.pool, path, stdout)
	case "rewrap":
		return rewrapKeys(ctx, s.pool, path, env, stdout)
	default:
		return keysStatus(ctx, s.pool, path, env, stdout)
	}
}

func errEnvRotate(env vault.EnvKeys) error {
	from, how := "RAHATBACK_MASTER_KEYS", "add it to RAHATBACK_MASTER_KEYS as the next version, keeping the old ones"
	if strings.TrimSpace(env.Key) != "" {
		from = "RAHATBACK_MASTER_KEY"
		how = `replace RAHATBACK_MASTER_KEY by RAHATBACK_MASTER_KEYS="1:<current key>,2:<new key>", keeping the old key as version 1`
	}
	return fmt.Errorf("keys rotate: the master keys come from %s, not from a key file, so rotate cannot add one. "+
		"Instead put the new key (openssl rand -base64 32) in RAHATBACK_MASTER_KEYS: %s; "+
		"restart every control plane with it, then run `rahatback keys rewrap`", from, how)
}

// rewrapCounts are the outcome of re-wrapping, per column.
type rewrapCounts struct {
	changed   map[*secretColumn]int
	unchanged int
}

func (r rewrapCounts) total() int {
	n := 0
	for _, c := range r.changed {
		n += c
	}
	return n
}

func (r rewrapCounts) String() string {
	parts := make([]string, 0, len(secretColumns))
	for i := range secretColumns {
		c := &secretColumns[i]
		parts = append(parts, fmt.Sprintf("%s: %d", c, r.changed[c]))
	}
	return strings.Join(parts, ", ")
}

// rewrapAll re-wraps secrets under v's current key and stores those that
// changed.
func rewrapAll(ctx context.Context, tx db.DBTX, v *vault.Vault, secrets []found) (rewrapCounts, error) {
	res := rewrapCounts{changed: map[*secretColumn]int{}}
	for _, s := range secrets {
		out, changed, err := v.Rewrap(s.Ciphertext, s.col.binding(s.ID))
		if err != nil {
			return res, fmt.Errorf("re-wrapping %s: %w", s, err)
		}
		if !changed {
			res.unchanged++
			continue
		}
		if err := s.col.update(ctx, tx, storedSecret{ID: s.ID, Ciphertext: out}); err != nil {
			return res, fmt.Errorf("storing %s: %w", s, err)
		}
		res.changed[s.col]++
	}
	return res, nil
}

// rotateKeys adds a master key to the key file and re-wraps every secret
// under it, in one transaction. Every secret must open with the keys held
// before a key is added; otherwise nothing changes.
func rotateKeys(ctx context.Context, pool *pgxpool.Pool, path string, stdout io.Writer) error {
	var (
		added   uint32
		before  []uint32
		counts  rewrapCounts
		secrets []found
	)
	err := db.WithTx(ctx, pool, func(tx pgx.Tx) error {
		if err := db.New().LockSecrets(ctx, tx); err != nil {
			return err
		}
		// Read under the lock: a rotation that ran meanwhile added a key.
		cur, err := vault.Load(path, vault.EnvKeys{})
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("keys rotate: no master key file at %s: nothing to rotate (the control plane creates it at first start; wrong --data-dir?)", path)
		}
		if err != nil {
			return err
		}
		before = cur.Versions()
		if secrets, err = listSecrets(ctx, tx); err != nil {
			return err
		}
		for _, s := range secrets {
			pt, err := cur.Open(s.Ciphertext, s.col.binding(s.ID))
			if err != nil {
				return fmt.Errorf("keys rotate: %s does not open (%w); no key added, nothing changed", s, err)
			}
			clear(pt)
		}
		v, ver, err := vault.AddKey(path)
		if err != nil {
			return err
		}
		added = ver
		counts, err = rewrapAll(ctx, tx, v, secrets)
		return err
	})
	if err != nil {
		if added != 0 {
			return fmt.Errorf("%w; master key version %d stays in %s unused and no secret was re-wrapped (run rotate again once fixed)", err, added, path)
		}
		return err
	}
	fmt.Fprintf(stdout, "added master key version %d to %s\n", added, path)
	fmt.Fprintf(stdout, "re-wrapped %s under key version %d (%s)\n", plural(counts.total(), "secret"), added, counts)
	fmt.Fprintf(stdout, "key versions %s stay in %s: ciphertexts made with them (in database dumps, or written by a control plane still running with the old keys) still open, and backups still restore (their age identities are unchanged, only re-wrapped)\n",
		joinVersions(before), path)
	fmt.Fprintf(stdout, "restart running control planes so that they load key version %d\n", added)
	return nil
}

// rewrapKeys re-wraps every secret under the current master key, in one
// transaction.
func rewrapKeys(ctx context.Context, pool *pgxpool.Pool, path string, env vault.EnvKeys, stdout io.Writer) error {
	var (
		v      *vault.Vault
		counts rewrapCounts
	)
	err := db.WithTx(ctx, pool, func(tx pgx.Tx) error {
		if err := db.New().LockSecrets(ctx, tx); err != nil {
			return err
		}
		var err error
		if v, err = vault.Load(path, env); err != nil {
			return err
		}
		secrets, err := listSecrets(ctx, tx)
		if err != nil {
			return err
		}
		counts, err = rewrapAll(ctx, tx, v, secrets)
		return err
	})
	if err != nil {
		return fmt.Errorf("keys rewrap: %w; nothing changed", err)
	}
	fmt.Fprintf(stdout, "re-wrapped %s under key version %d (%s); %d already were\n",
		plural(counts.total(), "secret"), v.Current(), counts, counts.unchanged)
	return nil
}

// keysStatus prints the master keys held and, per key version, how many
// stored secrets it wraps. It never prints a key.
func keysStatus(ctx context.Context, pool *pgxpool.Pool, path string, env vault.EnvKeys, stdout io.Writer) error {
	var loaded []uint32
	v, err := vault.Load(path, env)
	switch {
	case err == nil:
		loaded = v.Versions()
		from := path
		switch {
		case strings.TrimSpace(env.Key) != "":
			from = "RAHATBACK_MASTER_KEY"
		case env.Set():
			from = "RAHATBACK_MASTER_KEYS"
		}
		fmt.Fprintf(stdout, "master keys: %s, versions %s (current %d)\n", from, joinVersions(loaded), v.Current())
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(stdout, "master keys: none yet (%s is created at first start)\n", path)
	default:
		return err
	}

	secrets, err := listSecrets(ctx, pool)
	if err != nil {
		return err
	}
	type tally struct{ all, direct int }
	byVersion := map[uint32]*tally{}
	for _, ver := range loaded {
		byVersion[ver] = &tally{}
	}
	perColumn := map[*secretColumn]int{}
	unreadable := 0
	for _, s := range secrets {
		perColumn[s.col]++
		format, ver, err := vault.Describe(s.Ciphertext)
		if err != nil {
			unreadable++
			continue
		}
		t := byVersion[ver]
		if t == nil {
			t = &tally{}
			byVersion[ver] = t
		}
		t.all++
		if format == 1 {
			t.direct++
		}
	}
	vers := make([]uint32, 0, len(byVersion))
	for ver := range byVersion {
		vers = append(vers, ver)
	}
	slices.Sort(vers)
	for _, ver := range vers {
		t := byVersion[ver]
		line := fmt.Sprintf("key version %d: %s", ver, plural(t.all, "secret"))
		if t.direct > 0 {
			line += fmt.Sprintf(" (%d sealed directly by the master key, from before envelopes; `rahatback keys rewrap` converts them)", t.direct)
		}
		if !slices.Contains(loaded, ver) {
			line += " — this key is NOT loaded: these secrets cannot be opened"
		}
		fmt.Fprintln(stdout, line)
	}
	if unreadable > 0 {
		fmt.Fprintf(stdout, "not vault ciphertexts: %s\n", plural(unreadable, "secret"))
	}
	parts := make([]string, 0, len(secretColumns))
	for i := range secretColumns {
		c := &secretColumns[i]
		parts = append(parts, fmt.Sprintf("%s: %d", c, perColumn[c]))
	}
	fmt.Fprintf(stdout, "secrets: %d (%s)\n", len(secrets), strings.Join(parts, ", "))
	return nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func joinVersions(vers []uint32) string {
	s := make([]string, len(vers))
	for i, v := range vers {
		s[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(s, ", ")
}
