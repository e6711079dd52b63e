package vault_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rahatback/rahatback/vault"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, vault.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newVault(t *testing.T, keys map[uint32][]byte) *vault.Vault {
	t.Helper()
	v, err := vault.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func seal(t *testing.T, v *vault.Vault, plaintext, ad []byte) []byte {
	t.Helper()
	c, err := v.Seal(plaintext, ad)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var binding = vault.Binding("databases", "password", "0b6c3f52-6d5e-4c39-9d0e-2f1b5d1e7a10")

func TestSealOpen(t *testing.T) {
	v := newVault(t, map[uint32][]byte{1: newKey(t)})
	for _, pt := range [][]byte{[]byte("s3cr3t-p@ss"), {}, bytes.Repeat([]byte{0xff}, 4096)} {
		c := seal(t, v, pt, binding)
		if len(pt) > 0 && bytes.Contains(c, pt) {
			t.Fatalf("ciphertext contains the plaintext")
		}
		got, err := v.Open(c, binding)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("opened %q, want %q", got, pt)
		}
	}
	// A fresh nonce every time: equal secrets do not give equal ciphertexts.
	if bytes.Equal(seal(t, v, []byte("same"), binding), seal(t, v, []byte("same"), binding)) {
		t.Fatal("two seals of the same secret are identical")
	}
}

func TestWrongBinding(t *testing.T) {
	v := newVault(t, map[uint32][]byte{1: newKey(t)})
	c := seal(t, v, []byte("hunter2"), binding)
	for name, ad := range map[string][]byte{
		"OtherRow":    vault.Binding("databases", "password", "7e0c1c9a-5c0e-4d5e-8f8e-8e6a4b0e1f22"),
		"OtherColumn": vault.Binding("databases", "username", "0b6c3f52-6d5e-4c39-9d0e-2f1b5d1e7a10"),
		"OtherTable":  vault.Binding("cloud_storages", "password", "0b6c3f52-6d5e-4c39-9d0e-2f1b5d1e7a10"),
		"None":        nil,
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := v.Open(c, ad); !errors.Is(err, vault.ErrDecrypt) {
				t.Fatalf("open with %s: %q, %v; want ErrDecrypt", name, got, err)
			}
		})
	}
}

func TestTampered(t *testing.T) {
	v := newVault(t, map[uint32][]byte{1: newKey(t)})
	c := seal(t, v, []byte("hunter2"), binding)
	for i := range c {
		bad := bytes.Clone(c)
		bad[i] ^= 0x01
		got, err := v.Open(bad, binding)
		if err == nil {
			t.Fatalf("byte %d flipped: opened %q", i, got)
		}
		// Bytes 1-4 are the key version: flipping one names a missing key.
		if (i == 0 || i >= 5) && !errors.Is(err, vault.ErrDecrypt) {
			t.Fatalf("byte %d flipped: %v, want ErrDecrypt", i, err)
		}
	}
	for n := range c {
		if _, err := v.Open(c[:n], binding); !errors.Is(err, vault.ErrDecrypt) {
			t.Fatalf("truncated to %d bytes: %v, want ErrDecrypt", n, err)
		}
	}
	if _, err := v.Open(append(bytes.Clone(c), 0), binding); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("extra byte: %v, want ErrDecrypt", err)
	}
}

func TestWrongKey(t *testing.T) {
	c := seal(t, newVault(t, map[uint32][]byte{1: newKey(t)}), []byte("hunter2"), binding)
	other := newVault(t, map[uint32][]byte{1: newKey(t)})
	if _, err := other.Open(c, binding); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("open with another key of the same version: %v, want ErrDecrypt", err)
	}
}

func TestKeyVersions(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	v1 := newVault(t, map[uint32][]byte{1: k1})
	v12 := newVault(t, map[uint32][]byte{1: k1, 2: k2})
	v2 := newVault(t, map[uint32][]byte{2: k2})

	old := seal(t, v1, []byte("old secret"), binding)
	if got, err := v12.Open(old, binding); err != nil || string(got) != "old secret" {
		t.Fatalf("rotated vault opens a version-1 ciphertext: %q, %v", got, err)
	}

	cur := seal(t, v12, []byte("new secret"), binding)
	// Encrypted with key 2: the vault holding only key 2 opens it ...
	if got, err := v2.Open(cur, binding); err != nil || string(got) != "new secret" {
		t.Fatalf("key-2 vault opens the rotated vault's ciphertext: %q, %v", got, err)
	}
	// ... and the one holding only key 1 says which key it lacks.
	_, err := v1.Open(cur, binding)
	if err == nil || errors.Is(err, vault.ErrDecrypt) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("vault without key 2: %v, want an error naming version 2", err)
	}
	if _, err := v2.Open(old, binding); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("vault without key 1: %v, want an error naming version 1", err)
	}
}

func TestNewRejectsBadKeys(t *testing.T) {
	for name, keys := range map[string]map[uint32][]byte{
		"None":     nil,
		"Empty":    {},
		"Short":    {1: make([]byte, 16)},
		"Long":     {1: make([]byte, 33)},
		"OneShort": {1: make([]byte, vault.KeySize), 2: make([]byte, 31)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := vault.New(keys); err == nil {
				t.Fatal("New accepted bad keys")
			}
		})
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conf", "master.key")
	v, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	c := seal(t, v, []byte("hunter2"), binding)

	again, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got, err := again.Open(c, binding); err != nil || string(got) != "hunter2" {
		t.Fatalf("reloaded vault opens the first one's ciphertext: %q, %v", got, err)
	}

	// Another file is another key.
	other, err := vault.LoadOrCreate(filepath.Join(t.TempDir(), "master.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(c, binding); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("vault of another key file: %v, want ErrDecrypt", err)
	}
}

func TestLoadOrCreateRefusesReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if _, err := vault.LoadOrCreate(path, ""); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := vault.LoadOrCreate(path, ""); err == nil {
			t.Fatalf("key file with mode %v accepted", mode)
		}
	}
}

func TestLoadOrCreateMalformedFile(t *testing.T) {
	for name, content := range map[string]string{
		"NotJSON":      "not json",
		"BadBase64":    `{"keys":{"1":"***"}}`,
		"ShortKey":     `{"keys":{"1":"` + base64.StdEncoding.EncodeToString(make([]byte, 16)) + `"}}`,
		"NoKeys":       `{"keys":{}}`,
		"VersionZero":  `{"keys":{"0":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}}`,
		"VersionWords": `{"keys":{"one":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := vault.LoadOrCreate(path, ""); err == nil {
				t.Fatalf("malformed key file accepted: %s", content)
			}
		})
	}
}

func TestLoadOrCreateRotatedFile(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	path := filepath.Join(t.TempDir(), "master.key")
	content := `{"keys":{"1":"` + base64.StdEncoding.EncodeToString(k1) + `","2":"` + base64.StdEncoding.EncodeToString(k2) + `"}}`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatal(err)
	}
	c := seal(t, v, []byte("hunter2"), binding)
	if _, err := newVault(t, map[uint32][]byte{2: k2}).Open(c, binding); err != nil {
		t.Fatalf("the file's newest key does not open what the vault sealed: %v", err)
	}
	old := seal(t, newVault(t, map[uint32][]byte{1: k1}), []byte("old"), binding)
	if got, err := v.Open(old, binding); err != nil || string(got) != "old" {
		t.Fatalf("file vault opens a version-1 ciphertext: %q, %v", got, err)
	}
}

func TestLoadOrCreateEnvKey(t *testing.T) {
	k := newKey(t)
	path := filepath.Join(t.TempDir(), "master.key")
	v, err := vault.LoadOrCreate(path, base64.StdEncoding.EncodeToString(k)+"\n")
	if err != nil {
		t.Fatalf("env key: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key file was written although the key came from the environment: %v", err)
	}
	c := seal(t, v, []byte("hunter2"), binding)
	if got, err := newVault(t, map[uint32][]byte{1: k}).Open(c, binding); err != nil || string(got) != "hunter2" {
		t.Fatalf("the env key does not open what the vault sealed: %q, %v", got, err)
	}

	// The env key wins over an existing key file.
	if _, err := vault.LoadOrCreate(path, ""); err != nil {
		t.Fatal(err)
	}
	v, err = vault.LoadOrCreate(path, base64.StdEncoding.EncodeToString(k))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Open(c, binding); err != nil {
		t.Fatalf("env key ignored when a key file exists: %v", err)
	}
}

func TestLoadOrCreateBadEnvKey(t *testing.T) {
	for name, env := range map[string]string{
		"NotBase64": "not base64!",
		"Short":     base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"Long":      base64.StdEncoding.EncodeToString(make([]byte, 64)),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			if _, err := vault.LoadOrCreate(path, env); err == nil {
				t.Fatal("bad env key accepted")
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a key file was written after a bad env key: %v", err)
			}
		})
	}
}
