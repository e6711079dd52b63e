package vault_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/rahatback/rahatback/vault"
)

// Offsets of the parts of a format-2 ciphertext.
const (
	wrapStart = 5              // wrapped data key: nonce | key | tag
	dataStart = wrapStart + 60 // data nonce | sealed data | tag
)

// sealV1 writes a format-1 ciphertext the way Seal did before envelopes:
// the master key seals the secret directly.
func sealV1(t *testing.T, ver uint32, key, plaintext, ad []byte) []byte {
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
	binary.BigEndian.PutUint32(out[1:], ver)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, ad)
}

func describe(t *testing.T, c []byte) (int, uint32) {
	t.Helper()
	f, ver, err := vault.Describe(c)
	if err != nil {
		t.Fatalf("describe: %v", err)
	}
	return f, ver
}

func TestEnvelopeFormat(t *testing.T) {
	v := newVault(t, map[uint32][]byte{1: newKey(t), 3: newKey(t)})
	if v.Current() != 3 || !slicesEqual(v.Versions(), []uint32{1, 3}) {
		t.Fatalf("current %d, versions %v", v.Current(), v.Versions())
	}
	for _, pt := range [][]byte{nil, []byte("s3cr3t"), bytes.Repeat([]byte{0}, 1000)} {
		c := seal(t, v, pt, binding)
		if f, ver := describe(t, c); f != 2 || ver != 3 {
			t.Fatalf("sealed as format %d, key version %d; want 2, 3", f, ver)
		}
		if want := 5 + 60 + 12 + len(pt) + 16; len(c) != want {
			t.Fatalf("ciphertext of %d bytes is %d bytes, want %d", len(pt), len(c), want)
		}
	}
	// Every secret has its own data key: neither part repeats.
	a, b := seal(t, v, []byte("same"), binding), seal(t, v, []byte("same"), binding)
	if bytes.Equal(a[wrapStart:dataStart], b[wrapStart:dataStart]) || bytes.Equal(a[dataStart:], b[dataStart:]) {
		t.Fatal("two seals share a part")
	}
	for name, c := range map[string][]byte{
		"Empty": nil, "Header": {2, 0, 0, 0, 1}, "ShortV2": make([]byte, 92), "ShortV1": {1, 0, 0, 0, 1, 2, 3},
		"Format0": append([]byte{0}, a[1:]...), "Format3": append([]byte{3}, a[1:]...),
	} {
		if _, _, err := vault.Describe(c); !errors.Is(err, vault.ErrDecrypt) {
			t.Errorf("Describe(%s): %v, want ErrDecrypt", name, err)
		}
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEnvelopeTamperEachPart(t *testing.T) {
	v := newVault(t, map[uint32][]byte{1: newKey(t)})
	c := seal(t, v, []byte("hunter2"), binding)
	for name, at := range map[string]int{
		"Format":     0,
		"WrapNonce":  wrapStart,
		"WrappedKey": wrapStart + 12 + 5,
		"WrapTag":    dataStart - 1,
		"DataNonce":  dataStart,
		"SealedData": dataStart + 12 + 2,
		"DataTag":    len(c) - 1,
	} {
		t.Run(name, func(t *testing.T) {
			bad := bytes.Clone(c)
			bad[at] ^= 0x80
			if got, err := v.Open(bad, binding); !errors.Is(err, vault.ErrDecrypt) {
				t.Fatalf("opened %q, %v; want ErrDecrypt", got, err)
			}
		})
	}
	t.Run("KeyVersion", func(t *testing.T) {
		bad := bytes.Clone(c)
		bad[4] ^= 0x02
		if _, err := v.Open(bad, binding); err == nil || !strings.Contains(err.Error(), "version 3") {
			t.Fatalf("open: %v, want an error naming version 3", err)
		}
	})

	// Parts of two ciphertexts of the same row do not mix: the data key
	// of one does not open the data of the other.
	other := seal(t, v, []byte("hunter2"), binding)
	for name, mixed := range map[string][]byte{
		"KeyOfOther":  append(bytes.Clone(c[:dataStart]), other[dataStart:]...),
		"DataOfOther": append(bytes.Clone(other[:dataStart]), c[dataStart:]...),
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := v.Open(mixed, binding); !errors.Is(err, vault.ErrDecrypt) {
				t.Fatalf("opened %q, %v; want ErrDecrypt", got, err)
			}
		})
	}
}

// The wrapped data key is bound too: a row's wrapped key moved in front of
// another row's data (each valid in its own row) opens in neither.
func TestEnvelopeWrappedKeyBound(t *testing.T) {
	v := newVault(t, map[uint32][]byte{1: newKey(t)})
	other := vault.Binding("databases", "password", "7e0c1c9a-5c0e-4d5e-8f8e-8e6a4b0e1f22")
	a, b := seal(t, v, []byte("a"), binding), seal(t, v, []byte("b"), other)
	mixed := append(bytes.Clone(b[:dataStart]), a[dataStart:]...)
	for _, ad := range [][]byte{binding, other} {
		if got, err := v.Open(mixed, ad); !errors.Is(err, vault.ErrDecrypt) {
			t.Fatalf("opened %q, %v; want ErrDecrypt", got, err)
		}
	}
	if _, _, err := v.Rewrap(mixed, binding); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("Rewrap of another row's wrapped key: %v, want ErrDecrypt", err)
	}
	if _, _, err := v.Rewrap(a, other); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("Rewrap with another row's binding: %v, want ErrDecrypt", err)
	}
}

func TestRewrap(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	v1 := newVault(t, map[uint32][]byte{1: k1})
	v12 := newVault(t, map[uint32][]byte{1: k1, 2: k2})
	v2 := newVault(t, map[uint32][]byte{2: k2})

	c := seal(t, v1, []byte("hunter2"), binding)
	r, changed, err := v12.Rewrap(c, binding)
	if err != nil || !changed {
		t.Fatalf("rewrap: changed %v, %v", changed, err)
	}
	if f, ver := describe(t, r); f != 2 || ver != 2 {
		t.Fatalf("rewrapped to format %d, key version %d; want 2, 2", f, ver)
	}
	if len(r) != len(c) || !bytes.Equal(r[dataStart:], c[dataStart:]) {
		t.Fatal("rewrap changed the sealed data")
	}
	if bytes.Equal(r[wrapStart:dataStart], c[wrapStart:dataStart]) {
		t.Fatal("rewrap kept the wrapped data key")
	}
	for name, vv := range map[string]*vault.Vault{"KeyTwoOnly": v2, "BothKeys": v12} {
		if got, err := vv.Open(r, binding); err != nil || string(got) != "hunter2" {
			t.Fatalf("%s opens the rewrapped ciphertext: %q, %v", name, got, err)
		}
	}
	// The original still opens with key 1 (a copy in an old dump).
	if got, err := v12.Open(c, binding); err != nil || string(got) != "hunter2" {
		t.Fatalf("original after rewrap: %q, %v", got, err)
	}

	// Already under the current key: unchanged, same bytes.
	again, changed, err := v12.Rewrap(r, binding)
	if err != nil || changed || !bytes.Equal(again, r) {
		t.Fatalf("second rewrap: changed %v, equal %v, %v", changed, bytes.Equal(again, r), err)
	}

	// What Rewrap refuses.
	if _, _, err := v12.Rewrap(c, vault.Binding("databases", "password", "other")); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("wrong binding: %v, want ErrDecrypt", err)
	}
	if _, _, err := v12.Rewrap(r, vault.Binding("databases", "password", "other")); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("wrong binding, current key: %v, want ErrDecrypt", err)
	}
	if _, _, err := v2.Rewrap(c, binding); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("missing old key: %v, want an error naming version 1", err)
	}
	for i := wrapStart; i < dataStart; i++ {
		bad := bytes.Clone(c)
		bad[i] ^= 0x01
		if _, _, err := v12.Rewrap(bad, binding); !errors.Is(err, vault.ErrDecrypt) {
			t.Fatalf("wrapped key byte %d flipped: %v, want ErrDecrypt", i, err)
		}
	}
	for n := range dataStart + 28 {
		if _, _, err := v12.Rewrap(c[:n], binding); err == nil {
			t.Fatalf("truncated to %d bytes: rewrapped", n)
		}
	}
	// A tampered data part is not Rewrap's to see; it stays tampered.
	bad := bytes.Clone(c)
	bad[len(bad)-1] ^= 0x01
	if r, _, err := v12.Rewrap(bad, binding); err != nil {
		t.Fatalf("rewrap of a ciphertext with tampered data: %v", err)
	} else if _, err := v12.Open(r, binding); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("tampered data opens after rewrap: %v", err)
	}
}

func TestFormat1(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	v1 := newVault(t, map[uint32][]byte{1: k1})
	v12 := newVault(t, map[uint32][]byte{1: k1, 2: k2})
	v2 := newVault(t, map[uint32][]byte{2: k2})
	old := sealV1(t, 1, k1, []byte("stored today"), binding)
	if f, ver := describe(t, old); f != 1 || ver != 1 {
		t.Fatalf("format %d, version %d; want 1, 1", f, ver)
	}

	for name, vv := range map[string]*vault.Vault{"KeyOne": v1, "BothKeys": v12} {
		if got, err := vv.Open(old, binding); err != nil || string(got) != "stored today" {
			t.Fatalf("%s opens format 1: %q, %v", name, got, err)
		}
	}
	if _, err := v1.Open(old, vault.Binding("databases", "password", "other")); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("format 1, wrong binding: %v, want ErrDecrypt", err)
	}
	for i := range old {
		bad := bytes.Clone(old)
		bad[i] ^= 0x01
		if _, err := v1.Open(bad, binding); err == nil {
			t.Fatalf("format 1, byte %d flipped: opened", i)
		}
	}

	// Rewrap converts format 1 to an envelope, under the current key ...
	r, changed, err := v12.Rewrap(old, binding)
	if err != nil || !changed {
		t.Fatalf("rewrap format 1: changed %v, %v", changed, err)
	}
	if f, ver := describe(t, r); f != 2 || ver != 2 {
		t.Fatalf("format 1 rewrapped to format %d, version %d; want 2, 2", f, ver)
	}
	if got, err := v2.Open(r, binding); err != nil || string(got) != "stored today" {
		t.Fatalf("key-2 vault opens the converted ciphertext: %q, %v", got, err)
	}
	// ... even when that key is the one that sealed it.
	r, changed, err = v1.Rewrap(old, binding)
	if err != nil || !changed {
		t.Fatalf("rewrap format 1 under the same key: changed %v, %v", changed, err)
	}
	if f, ver := describe(t, r); f != 2 || ver != 1 {
		t.Fatalf("format %d, version %d; want 2, 1", f, ver)
	}
	if _, _, err := v12.Rewrap(old, vault.Binding("databases", "password", "other")); !errors.Is(err, vault.ErrDecrypt) {
		t.Fatalf("rewrap format 1, wrong binding: %v, want ErrDecrypt", err)
	}
	if _, _, err := v2.Rewrap(old, binding); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("rewrap format 1 without key 1: %v, want an error naming version 1", err)
	}
}
