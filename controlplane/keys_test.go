package controlplane_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/controlplane"
	"github.com/rahatback/rahatback/testsupport"
	"github.com/rahatback/rahatback/vault"
)

// keysFile returns the master keys of a key file by version, checking that
// only its owner can read it.
func keysFile(t *testing.T, path string) map[string][]byte {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for ver, k := range kf.Keys {
		if out[ver], err = base64.StdEncoding.DecodeString(k); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sealFormat1 writes a secret the way the vault stored it before envelopes:
// AES-256-GCM under the master key itself.
func sealFormat1(t *testing.T, key, plaintext, ad []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	out := []byte{1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], 1)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, ad)
}

// secretRow is a row holding a secret, as the test stored it.
type secretRow struct {
	table, column, bind string
	id                  uuid.UUID
	plaintext           string // "" for a NULL column
}

// key names the row's column (a row may hold several secrets).
func (r secretRow) key() string { return r.table + "." + r.column + ":" + r.id.String() }

func (r secretRow) binding() []byte { return vault.Binding(r.table, r.bind, r.id.String()) }

func (r secretRow) load(t *testing.T, pool *pgxpool.Pool) []byte {
	t.Helper()
	var c []byte
	if err := pool.QueryRow(context.Background(), "SELECT "+r.column+" FROM "+r.table+" WHERE id = $1", r.id).Scan(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// seedSecrets stores a user, three databases (password sealed by v, a
// format-1 password, none), two jobs (identity sealed by v, none) and a
// webhook channel (URL and signing secret sealed by v).
func seedSecrets(t *testing.T, pool *pgxpool.Pool, v *vault.Vault, key1 []byte) []secretRow {
	t.Helper()
	ctx := context.Background()
	user := uuid.New()
	if _, err := pool.Exec(ctx, `INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')`, user, user.String()+"@example.com"); err != nil {
		t.Fatal(err)
	}
	channel := uuid.New()
	rows := []secretRow{
		{"databases", "password_enc", "password", uuid.New(), "envelope pw"},
		{"databases", "password_enc", "password", uuid.New(), "format-1 pw"},
		{"databases", "password_enc", "password", uuid.New(), ""},
		{"backup_jobs", "age_identity_enc", "age_identity", uuid.New(), "AGE-SECRET-KEY-1TEST"},
		{"backup_jobs", "age_identity_enc", "age_identity", uuid.New(), ""},
		{"notification_channels", "url_enc", "url", channel, "https://hooks.slack.com/services/T0/B0/secret"},
		{"notification_channels", "secret_enc", "secret", channel, "webhook signing secret"},
	}
	for i, r := range rows {
		var enc []byte
		switch {
		case r.plaintext == "":
		case i == 1:
			enc = sealFormat1(t, key1, []byte(r.plaintext), r.binding())
		default:
			var err error
			if enc, err = v.Seal([]byte(r.plaintext), r.binding()); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		switch {
		case r.table == "notification_channels" && r.column == "url_enc":
			_, err = pool.Exec(ctx, `INSERT INTO notification_channels (id, user_id, name, type, url_enc, secret_enc)
				VALUES ($1, $2, 'hook', 'webhook', $3, '\x00')`, r.id, user, enc)
		case r.table == "notification_channels":
			_, err = pool.Exec(ctx, `UPDATE notification_channels SET secret_enc = $2 WHERE id = $1`, r.id, enc)
		case r.table == "databases":
			_, err = pool.Exec(ctx, `INSERT INTO databases (id, user_id, name, type, host, port, username, password_enc, database_name)
				VALUES ($1, $2, $3, 'postgresql', '127.0.0.1', 5432, 'u', $4, 'd')`, r.id, user, "db "+r.id.String(), enc)
		default:
			_, err = pool.Exec(ctx, `INSERT INTO backup_jobs (id, user_id, database_id, name, schedule_type, age_identity_enc)
				VALUES ($1, $2, $3, 'job', 'manual', $4)`, r.id, user, rows[0].id, enc)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return rows
}

// runKeys runs `rahatback keys <args>` in process with env as the whole
// environment.
func runKeys(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := controlplane.Run(context.Background(), append([]string{"keys"}, args...), func(k string) string { return env[k] }, &stdout, &stderr)
	if len(args) > 0 {
		// Only the subcommand: the other arguments hold the database URL.
		t.Logf("keys %s: %v\nstdout:\n%sstderr:\n%s", args[0], err, stdout.String(), stderr.String())
	}
	return stdout.String(), err
}

func TestKeysRotate(t *testing.T) {
	dbURL, pool := testsupport.NewDatabase(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "master.keys")
	v1, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatal(err)
	}
	k1 := keysFile(t, path)["1"]
	rows := seedSecrets(t, pool, v1, k1)
	before := map[string][]byte{}
	for _, r := range rows {
		before[r.key()] = r.load(t, pool)
	}
	flags := []string{"--data-dir", dir, "--database-url", dbURL}
	b64 := base64.StdEncoding.EncodeToString

	out, err := runKeys(t, nil, append([]string{"status"}, flags...)...)
	if err != nil {
		t.Fatalf("keys status: %v", err)
	}
	for _, want := range []string{
		"master keys: " + path + ", versions 1 (current 1)",
		"key version 1: 5 secrets (1 sealed directly by the master key",
		"secrets: 5 (databases.password_enc: 2, backup_jobs.age_identity_enc: 1, cloud_storages.s3_secret_enc: 0, cloud_storages.gd_refresh_token_enc: 0, notification_channels.url_enc: 1, notification_channels.secret_enc: 1)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("keys status before rotation lacks %q:\n%s", want, out)
		}
	}

	out, err = runKeys(t, nil, append([]string{"rotate"}, flags...)...)
	if err != nil {
		t.Fatalf("keys rotate: %v", err)
	}
	for _, want := range []string{
		"added master key version 2 to " + path,
		"re-wrapped 5 secrets under key version 2 (databases.password_enc: 2, backup_jobs.age_identity_enc: 1, cloud_storages.s3_secret_enc: 0, cloud_storages.gd_refresh_token_enc: 0, notification_channels.url_enc: 1, notification_channels.secret_enc: 1)",
		"key versions 1 stay in " + path,
		"restart running control planes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("keys rotate output lacks %q:\n%s", want, out)
		}
	}

	keys := keysFile(t, path)
	if len(keys) != 2 || !bytes.Equal(keys["1"], k1) || len(keys["2"]) != vault.KeySize || bytes.Equal(keys["2"], k1) {
		t.Fatalf("key file after rotate holds %d keys; want version 1 unchanged and a new version 2", len(keys))
	}
	only2, err := vault.New(map[uint32][]byte{2: keys["2"]})
	if err != nil {
		t.Fatal(err)
	}
	checkAllUnder := func(v *vault.Vault, ver uint32) {
		t.Helper()
		for _, r := range rows {
			c := r.load(t, pool)
			if r.plaintext == "" {
				if c != nil {
					t.Errorf("%s %s: an empty secret became %d bytes", r.table, r.id, len(c))
				}
				continue
			}
			if f, got, err := vault.Describe(c); err != nil || f != 2 || got != ver {
				t.Errorf("%s %s: format %d, key version %d, %v; want 2, %d", r.table, r.id, f, got, err, ver)
			}
			if pt, err := v.Open(c, r.binding()); err != nil || string(pt) != r.plaintext {
				t.Errorf("%s %s: a vault holding only key %d opens %q, %v; want %q", r.table, r.id, ver, pt, err, r.plaintext)
			}
		}
	}
	checkAllUnder(only2, 2)
	// An envelope keeps its sealed data: only the wrapped key changed.
	if after := rows[0].load(t, pool); !bytes.Equal(after[65:], before[rows[0].key()][65:]) {
		t.Error("rotation re-encrypted the data of an envelope instead of re-wrapping its key")
	}
	// Old copies (a dump taken before) still open with the file's keys.
	all, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.plaintext == "" {
			continue
		}
		if pt, err := all.Open(before[r.key()], r.binding()); err != nil || string(pt) != r.plaintext {
			t.Errorf("%s %s: the pre-rotation ciphertext no longer opens: %q, %v", r.table, r.id, pt, err)
		}
	}

	out, err = runKeys(t, nil, append([]string{"status"}, flags...)...)
	if err != nil {
		t.Fatalf("keys status: %v", err)
	}
	for _, want := range []string{
		"master keys: " + path + ", versions 1, 2 (current 2)",
		"key version 1: 0 secrets\n",
		"key version 2: 5 secrets\n",
		"secrets: 5 (databases.password_enc: 2, backup_jobs.age_identity_enc: 1, cloud_storages.s3_secret_enc: 0, cloud_storages.gd_refresh_token_enc: 0, notification_channels.url_enc: 1, notification_channels.secret_enc: 1)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("keys status after rotation lacks %q:\n%s", want, out)
		}
	}
	for ver, k := range keys {
		if strings.Contains(out, b64(k)) || strings.Contains(out, b64(k)[:16]) {
			t.Fatalf("keys status prints key %s:\n%s", ver, out)
		}
	}

	// Keys from the environment: rotate refuses, naming the way to do it.
	fileBefore, _ := os.ReadFile(path)
	for name, env := range map[string]map[string]string{
		"MasterKey":  {"RAHATBACK_MASTER_KEY": b64(k1)},
		"MasterKeys": {"RAHATBACK_MASTER_KEYS": "1:" + b64(k1) + ",2:" + b64(keys["2"])},
	} {
		t.Run("EnvRefused"+name, func(t *testing.T) {
			_, err := runKeys(t, env, append([]string{"rotate"}, flags...)...)
			if err == nil {
				t.Fatal("keys rotate ran with env-held master keys")
			}
			for _, want := range []string{"RAHATBACK_MASTER_KEYS", "keys rewrap"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the refusal does not say %q: %v", want, err)
				}
			}
			for _, k := range keys {
				if strings.Contains(err.Error(), b64(k)) {
					t.Fatalf("the refusal quotes a key: %v", err)
				}
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, fileBefore) {
				t.Fatal("the refused rotation changed the key file")
			}
		})
	}
	checkAllUnder(only2, 2)

	// ... and rewrap moves the secrets to a key added there.
	k3 := make([]byte, vault.KeySize)
	_, _ = rand.Read(k3)
	env := map[string]string{"RAHATBACK_MASTER_KEYS": "1:" + b64(k1) + ",2:" + b64(keys["2"]) + ",3:" + b64(k3)}
	out, err = runKeys(t, env, append([]string{"rewrap"}, flags...)...)
	if err != nil {
		t.Fatalf("keys rewrap with RAHATBACK_MASTER_KEYS: %v", err)
	}
	if want := "re-wrapped 5 secrets under key version 3"; !strings.Contains(out, want) {
		t.Errorf("keys rewrap output lacks %q:\n%s", want, out)
	}
	checkAllUnder(must(vault.New(map[uint32][]byte{3: k3})), 3)
	if after, _ := os.ReadFile(path); !bytes.Equal(after, fileBefore) {
		t.Fatal("rewrap with env keys changed the key file")
	}
	out, err = runKeys(t, env, append([]string{"status"}, flags...)...)
	if err != nil || !strings.Contains(out, "master keys: RAHATBACK_MASTER_KEYS, versions 1, 2, 3 (current 3)") || !strings.Contains(out, "key version 3: 5 secrets\n") {
		t.Errorf("keys status with env keys: %v\n%s", err, out)
	}
}

// A secret that does not open (here: copied from another row) stops the
// rotation before a key is added.
func TestKeysRotateRefusesUnopenableSecret(t *testing.T) {
	dbURL, pool := testsupport.NewDatabase(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "master.keys")
	v1, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatal(err)
	}
	rows := seedSecrets(t, pool, v1, keysFile(t, path)["1"])
	copied := rows[0].load(t, pool)
	if _, err := pool.Exec(context.Background(), `UPDATE databases SET password_enc = $1 WHERE id = $2`, copied, rows[1].id); err != nil {
		t.Fatal(err)
	}
	before := map[string][]byte{}
	for _, r := range rows {
		before[r.key()] = r.load(t, pool)
	}
	fileBefore, _ := os.ReadFile(path)

	_, err = runKeys(t, nil, "rotate", "--data-dir", dir, "--database-url", dbURL)
	if err == nil {
		t.Fatal("rotate re-wrapped a secret copied to another row")
	}
	if !strings.Contains(err.Error(), rows[1].id.String()) || !strings.Contains(err.Error(), "no key added") {
		t.Errorf("the error does not name the row or say that nothing changed: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, fileBefore) {
		t.Error("the failed rotation changed the key file")
	}
	for _, r := range rows {
		if !bytes.Equal(r.load(t, pool), before[r.key()]) {
			t.Errorf("%s %s changed", r.table, r.id)
		}
	}
}

func TestKeysUsage(t *testing.T) {
	if _, err := runKeys(t, nil); err == nil {
		t.Error("keys without a subcommand succeeded")
	}
	if _, err := runKeys(t, nil, "spin"); err == nil || !strings.Contains(err.Error(), "spin") {
		t.Errorf("unknown subcommand: %v", err)
	}
	if out, err := runKeys(t, nil, "--help"); err != nil || !strings.Contains(out, "rotate") {
		t.Errorf("keys --help: %v\n%s", err, out)
	}
	// No private cluster is started in a data dir that does not exist.
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := runKeys(t, nil, "status", "--data-dir", missing); err == nil {
		t.Error("keys status with a missing data dir succeeded")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("keys status created the data dir: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
