// Package vault encrypts secrets at rest (database passwords, storage keys)
// with AES-256-GCM under a versioned master key.
//
// A ciphertext is: format byte 1 | key version (uint32, big endian) | 12-byte
// nonce | sealed data. The caller binds each secret to where it lives (table,
// column, row id) as additional data, so a ciphertext copied to another row or
// column does not decrypt.
package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/rahatback/rahatback/securefile"
)

const formatV1 = 1

// KeySize is the length of a master key in bytes (AES-256).
const KeySize = 32

// ErrDecrypt is returned when a ciphertext cannot be opened: wrong key, wrong
// binding (additional data) or tampered bytes.
var ErrDecrypt = errors.New("vault: cannot decrypt secret")

// Vault holds the master keys. The highest version encrypts; every version it
// holds decrypts.
type Vault struct {
	keys    map[uint32]cipher.AEAD
	current uint32
}

// New builds a Vault from master keys by version. It returns an error when
// keys is empty or a key is not KeySize bytes.
func New(keys map[uint32][]byte) (*Vault, error) {
	if len(keys) == 0 {
		return nil, errors.New("vault: no master key")
	}
	v := &Vault{keys: make(map[uint32]cipher.AEAD, len(keys))}
	for ver, k := range keys {
		if ver == 0 {
			return nil, errors.New("vault: master key versions start at 1")
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("vault: master key version %d is %d bytes, want %d", ver, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		v.keys[ver] = aead
		if ver > v.current {
			v.current = ver
		}
	}
	return v, nil
}

// Binding names where a secret is stored; it is authenticated with the
// secret, never stored inside the ciphertext.
func Binding(table, column, rowID string) []byte {
	return []byte(table + "\x00" + column + "\x00" + rowID)
}

// Seal encrypts plaintext under the current master key, bound to ad.
func (v *Vault) Seal(plaintext, ad []byte) ([]byte, error) {
	aead := v.keys[v.current]
	out := make([]byte, 5, 5+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out[0] = formatV1
	binary.BigEndian.PutUint32(out[1:5], v.current)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, ad), nil
}

// Open decrypts a ciphertext made by Seal with the same ad. It returns
// ErrDecrypt for anything it cannot authenticate and an error naming the
// version when that master key is missing.
func (v *Vault) Open(ciphertext, ad []byte) ([]byte, error) {
	if len(ciphertext) < 5 || ciphertext[0] != formatV1 {
		return nil, ErrDecrypt
	}
	ver := binary.BigEndian.Uint32(ciphertext[1:5])
	aead, ok := v.keys[ver]
	if !ok {
		return nil, fmt.Errorf("vault: master key version %d is not loaded", ver)
	}
	rest := ciphertext[5:]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
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
	if envKey != "" {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(envKey))
		if err != nil {
			return nil, fmt.Errorf("vault: RAHATBACK_MASTER_KEY is not base64: %w", err)
		}
		return New(map[uint32][]byte{1: k})
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k := make([]byte, KeySize)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		kf := keyFile{Keys: map[string]string{"1": base64.StdEncoding.EncodeToString(k)}}
		data, _ = json.MarshalIndent(kf, "", "  ")
		if err := securefile.Write(path, data); err != nil {
			return nil, err
		}
		return New(map[uint32][]byte{1: k})
	}
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("vault: %s is accessible by other users (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("vault: %s: %w", path, err)
	}
	keys := make(map[uint32][]byte, len(kf.Keys))
	vers := make([]string, 0, len(kf.Keys))
	for ver := range kf.Keys {
		vers = append(vers, ver)
	}
	sort.Strings(vers)
	for _, ver := range vers {
		n64, err := strconv.ParseUint(ver, 10, 32)
		if err != nil || n64 == 0 || strconv.FormatUint(n64, 10) != ver {
			return nil, fmt.Errorf("vault: %s: bad key version %q (want 1, 2, …)", path, ver)
		}
		n := uint32(n64)
		k, err := base64.StdEncoding.DecodeString(kf.Keys[ver])
		if err != nil {
			return nil, fmt.Errorf("vault: %s: key version %s: %w", path, ver, err)
		}
		keys[n] = k
	}
	return New(keys)
}
