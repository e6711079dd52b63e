package vault

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/rahatback/rahatback/securefile"
)

// EnvKeys are master keys given in the environment instead of a key file.
// At most one of the two may be set.
type EnvKeys struct {
	// Key is RAHATBACK_MASTER_KEY: one base64 key of KeySize bytes, version 1.
	Key string
	// Keys is RAHATBACK_MASTER_KEYS: comma-separated version:base64 pairs
	// ("1:<base64>,2:<base64>"); the highest version is current. It is how
	// env-held keys rotate: keep the old versions, add a higher one.
	Keys string
}

// Set reports whether the environment gives any master key.
func (e EnvKeys) Set() bool {
	return strings.TrimSpace(e.Key) != "" || strings.TrimSpace(e.Keys) != ""
}

// keys decodes the environment's master keys. Errors never quote a key.
func (e EnvKeys) keys() (map[uint32][]byte, error) {
	key, list := strings.TrimSpace(e.Key), strings.TrimSpace(e.Keys)
	if key != "" && list != "" {
		return nil, errors.New("vault: both RAHATBACK_MASTER_KEY and RAHATBACK_MASTER_KEYS are set; " +
			`keep only RAHATBACK_MASTER_KEYS, with the old key as version 1 ("1:<old key>,2:<new key>")`)
	}
	if key != "" {
		k, err := base64.StdEncoding.DecodeString(key)
		if err != nil {
			return nil, fmt.Errorf("vault: RAHATBACK_MASTER_KEY is not base64: %w", err)
		}
		return map[uint32][]byte{1: k}, nil
	}
	keys := map[uint32][]byte{}
	for i, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		verText, b64, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("vault: RAHATBACK_MASTER_KEYS entry %d is not version:base64", i+1)
		}
		ver, err := parseVersion(strings.TrimSpace(verText))
		if err != nil {
			return nil, fmt.Errorf("vault: RAHATBACK_MASTER_KEYS entry %d: %w", i+1, err)
		}
		if _, dup := keys[ver]; dup {
			return nil, fmt.Errorf("vault: RAHATBACK_MASTER_KEYS: version %d given twice", ver)
		}
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return nil, fmt.Errorf("vault: RAHATBACK_MASTER_KEYS version %d is not base64: %w", ver, err)
		}
		keys[ver] = k
	}
	if len(keys) == 0 {
		return nil, errors.New("vault: RAHATBACK_MASTER_KEYS holds no key")
	}
	return keys, nil
}

func parseVersion(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("bad key version %q (want 1, 2, …)", s)
	}
	return uint32(n), nil
}

// keyFile is the on-disk form of the master keys: version → base64 key.
type keyFile struct {
	Keys map[string]string `json:"keys"`
}

// LoadOrCreate returns the vault for a control plane. When envKey (base64 of
// 32 bytes, the value of RAHATBACK_MASTER_KEY) is set it is the only key,
// version 1. Otherwise the keys are read from path, a 0600 JSON file that is
// created with one fresh key when missing. It returns an error when the file
// is unreadable, malformed or readable by others.
func LoadOrCreate(path, envKey string) (*Vault, error) {
	return LoadOrCreateKeys(path, EnvKeys{Key: envKey})
}

// LoadOrCreateKeys is LoadOrCreate with every environment form of the
// keys: when env is set its keys are the vault's and path is not touched;
// otherwise the key file at path is read, or created with one fresh key
// (version 1) when missing. It returns an error when env is malformed or
// sets both variables, or the file is unreadable, malformed or accessible
// by others.
func LoadOrCreateKeys(path string, env EnvKeys) (*Vault, error) {
	v, err := Load(path, env)
	if !errors.Is(err, os.ErrNotExist) {
		return v, err
	}
	k, err := randomBytes(KeySize)
	if err != nil {
		return nil, err
	}
	keys := map[uint32][]byte{1: k}
	if err := writeKeyFile(path, keys); err != nil {
		return nil, err
	}
	return New(keys)
}

// Load is LoadOrCreateKeys without the creating: a missing key file (when
// env is not set) is an error wrapping os.ErrNotExist.
func Load(path string, env EnvKeys) (*Vault, error) {
	if env.Set() {
		keys, err := env.keys()
		if err != nil {
			return nil, err
		}
		return New(keys)
	}
	keys, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return New(keys)
}

// AddKey adds a fresh master key to the key file at path as the version
// after its highest, rewriting the file atomically (0600), and returns the
// vault holding every key of the file, the new one current, and the new
// version. Older keys stay in the file so that ciphertexts made with them
// (in database dumps, or not yet rewrapped) still open. It returns an error
// wrapping os.ErrNotExist when the file is missing, and the errors of Load
// for a malformed or exposed file.
func AddKey(path string) (*Vault, uint32, error) {
	keys, err := readKeyFile(path)
	if err != nil {
		return nil, 0, err
	}
	if _, err := New(keys); err != nil {
		return nil, 0, err
	}
	last := slices.Max(slices.Collect(maps.Keys(keys)))
	if last == ^uint32(0) {
		return nil, 0, fmt.Errorf("vault: %s: no key version left after %d", path, last)
	}
	k, err := randomBytes(KeySize)
	if err != nil {
		return nil, 0, err
	}
	keys[last+1] = k
	v, err := New(keys)
	if err != nil {
		return nil, 0, err
	}
	if err := writeKeyFile(path, keys); err != nil {
		return nil, 0, err
	}
	return v, last + 1, nil
}

func readKeyFile(path string) (map[uint32][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("vault: master key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("vault: %s is accessible by other users (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("vault: %s: %w", path, err)
	}
	keys := make(map[uint32][]byte, len(kf.Keys))
	for _, verText := range slices.Sorted(maps.Keys(kf.Keys)) {
		ver, err := parseVersion(verText)
		if err != nil {
			return nil, fmt.Errorf("vault: %s: %w", path, err)
		}
		k, err := base64.StdEncoding.DecodeString(kf.Keys[verText])
		if err != nil {
			return nil, fmt.Errorf("vault: %s: key version %d: %w", path, ver, err)
		}
		keys[ver] = k
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("vault: %s holds no key", path)
	}
	return keys, nil
}

func writeKeyFile(path string, keys map[uint32][]byte) error {
	kf := keyFile{Keys: make(map[string]string, len(keys))}
	for ver, k := range keys {
		kf.Keys[strconv.FormatUint(uint64(ver), 10)] = base64.StdEncoding.EncodeToString(k)
	}
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return err
	}
	return securefile.Write(path, append(data, '\n'))
}
