package vault_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rahatback/rahatback/vault"
)

// readKeys returns the keys of a key file by version, checking its mode.
func readKeys(t *testing.T, path string) map[string][]byte {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(data, &kf); err != nil {
		t.Fatalf("key file: %v", err)
	}
	out := map[string][]byte{}
	for ver, b64 := range kf.Keys {
		k, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(k) != vault.KeySize {
			t.Fatalf("key %s: %d bytes, %v", ver, len(k), err)
		}
		out[ver] = k
	}
	return out
}

func TestAddKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.keys")
	v1, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatal(err)
	}
	before := readKeys(t, path)
	old := seal(t, v1, []byte("sealed before"), binding)

	v, ver, err := vault.AddKey(path)
	if err != nil {
		t.Fatalf("AddKey: %v", err)
	}
	if ver != 2 || v.Current() != 2 || !slicesEqual(v.Versions(), []uint32{1, 2}) {
		t.Fatalf("AddKey: version %d, current %d, versions %v; want 2, 2, [1 2]", ver, v.Current(), v.Versions())
	}
	after := readKeys(t, path)
	if len(after) != 2 || !bytes.Equal(after["1"], before["1"]) || after["2"] == nil || bytes.Equal(after["2"], after["1"]) {
		t.Fatalf("key file after AddKey has versions %v; want 1 unchanged and a new 2", keysOf(after))
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("AddKey left %d files beside the key file", len(entries)-1)
	}

	// The returned vault seals with the new key, which is the file's.
	c := seal(t, v, []byte("sealed after"), binding)
	if got, err := newVault(t, map[uint32][]byte{2: after["2"]}).Open(c, binding); err != nil || string(got) != "sealed after" {
		t.Fatalf("the file's key 2 opens what AddKey's vault sealed: %q, %v", got, err)
	}
	reloaded, err := vault.LoadOrCreate(path, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, vv := range []*vault.Vault{v, reloaded} {
		if got, err := vv.Open(old, binding); err != nil || string(got) != "sealed before" {
			t.Fatalf("key 1 kept: %q, %v", got, err)
		}
		if got, err := vv.Open(c, binding); err != nil || string(got) != "sealed after" {
			t.Fatalf("key 2: %q, %v", got, err)
		}
	}

	if _, ver, err := vault.AddKey(path); err != nil || ver != 3 {
		t.Fatalf("second AddKey: version %d, %v; want 3", ver, err)
	}
	if got := readKeys(t, path); len(got) != 3 || !bytes.Equal(got["2"], after["2"]) {
		t.Fatalf("after a second AddKey the file has %v", keysOf(got))
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestAddKeyRefuses(t *testing.T) {
	t.Run("MissingFile", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "master.keys")
		if _, _, err := vault.AddKey(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("AddKey on a missing file: %v, want ErrNotExist", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("AddKey created a key file: %v", err)
		}
	})
	t.Run("ReadableFile", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "master.keys")
		if _, err := vault.LoadOrCreate(path, ""); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(path)
		if _, _, err := vault.AddKey(path); err == nil {
			t.Fatal("AddKey accepted a key file readable by others")
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Fatal("AddKey changed a key file it refused")
		}
	})
	t.Run("Malformed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "master.keys")
		if err := os.WriteFile(path, []byte(`{"keys":{"1":"`+base64.StdEncoding.EncodeToString(make([]byte, 16))+`"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := vault.AddKey(path); err == nil {
			t.Fatal("AddKey accepted a file with a short key")
		}
	})
}

func TestLoadDoesNotCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.keys")
	if _, err := vault.Load(path, vault.EnvKeys{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load created a key file: %v", err)
	}
}

func TestEnvKeys(t *testing.T) {
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	b64 := base64.StdEncoding.EncodeToString
	path := filepath.Join(t.TempDir(), "master.keys")
	v, err := vault.LoadOrCreateKeys(path, vault.EnvKeys{Keys: " 1:" + b64(k1) + ", 3:" + b64(k3) + " ,2:" + b64(k2) + "\n"})
	if err != nil {
		t.Fatalf("RAHATBACK_MASTER_KEYS: %v", err)
	}
	if v.Current() != 3 || !slicesEqual(v.Versions(), []uint32{1, 2, 3}) {
		t.Fatalf("current %d, versions %v; want 3, [1 2 3]", v.Current(), v.Versions())
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key file was written although the keys came from the environment: %v", err)
	}
	c := seal(t, v, []byte("hunter2"), binding)
	if _, err := newVault(t, map[uint32][]byte{3: k3}).Open(c, binding); err != nil {
		t.Fatalf("key 3 opens what the env vault sealed: %v", err)
	}
	old := seal(t, newVault(t, map[uint32][]byte{1: k1}), []byte("old"), binding)
	if got, err := v.Open(old, binding); err != nil || string(got) != "old" {
		t.Fatalf("env vault opens a version-1 ciphertext: %q, %v", got, err)
	}
	// RAHATBACK_MASTER_KEY stays version 1, and Load reads it too.
	v, err = vault.Load(path, vault.EnvKeys{Key: b64(k1)})
	if err != nil || v.Current() != 1 {
		t.Fatalf("RAHATBACK_MASTER_KEY: %v", err)
	}
	if _, err := v.Open(old, binding); err != nil {
		t.Fatal(err)
	}
	if !(vault.EnvKeys{Keys: "1:x"}).Set() || (vault.EnvKeys{Key: " \n"}).Set() {
		t.Fatal("EnvKeys.Set")
	}
}

func TestBadEnvKeys(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	k := b64(newKey(t))
	for name, env := range map[string]vault.EnvKeys{
		"Both":          {Key: k, Keys: "1:" + k},
		"NoColon":       {Keys: k},
		"VersionZero":   {Keys: "0:" + k},
		"VersionWords":  {Keys: "one:" + k},
		"VersionPadded": {Keys: "01:" + k},
		"Twice":         {Keys: "1:" + k + ",1:" + k},
		"NotBase64":     {Keys: "1:" + k + "!"},
		"Short":         {Keys: "1:" + b64(make([]byte, 16))},
		"OnlyCommas":    {Keys: ",,"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.keys")
			_, err := vault.LoadOrCreateKeys(path, env)
			if err == nil {
				t.Fatal("bad env keys accepted")
			}
			if strings.Contains(err.Error(), k) || strings.Contains(err.Error(), k[:12]) {
				t.Fatalf("the error quotes the key: %v", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a key file was written after bad env keys: %v", err)
			}
		})
	}
}
