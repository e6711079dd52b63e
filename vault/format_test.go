package vault

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"
)

// These tests build ciphertexts by hand from the documented layout, so a
// change of the format (or of what is bound) fails here, not only in
// round trips through the same code.

func testKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func gcmSeal(t *testing.T, key, plaintext, ad []byte) []byte {
	t.Helper()
	aead, err := newGCM(key)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	return aead.Seal(nonce, nonce, plaintext, ad)
}

// handV2 builds a format-2 ciphertext: dk wrapped by master with wrapAD,
// plaintext sealed by dk with ad.
func handV2(t *testing.T, ver uint32, master, dk, wrapAD, plaintext, ad []byte) []byte {
	t.Helper()
	out := []byte{2, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], ver)
	out = append(out, gcmSeal(t, master, dk, wrapAD)...)
	return append(out, gcmSeal(t, dk, plaintext, ad)...)
}

// handV1 builds a format-1 ciphertext, what Seal wrote before envelopes.
func handV1(t *testing.T, ver uint32, master, plaintext, ad []byte) []byte {
	t.Helper()
	out := []byte{1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], ver)
	return append(out, gcmSeal(t, master, plaintext, ad)...)
}

var testBinding = Binding("databases", "password", "0b6c3f52-6d5e-4c39-9d0e-2f1b5d1e7a10")

func TestLayoutByHand(t *testing.T) {
	k := testKey(t)
	v, err := New(map[uint32][]byte{7: k})
	if err != nil {
		t.Fatal(err)
	}
	dk := testKey(t)
	c := handV2(t, 7, k, dk, append(bytes.Clone(testBinding), wrapDomain...), []byte("hunter2"), testBinding)
	if got, err := v.Open(c, testBinding); err != nil || string(got) != "hunter2" {
		t.Fatalf("hand-built format 2: %q, %v", got, err)
	}
	if got, err := v.Open(handV1(t, 7, k, []byte("old"), testBinding), testBinding); err != nil || string(got) != "old" {
		t.Fatalf("hand-built format 1: %q, %v", got, err)
	}

	// What Seal writes parses the same way: the wrapped part opens with
	// the master key and the binding plus the domain suffix, and the data
	// key it holds opens the rest with the binding alone.
	c = must(v.Seal([]byte("hunter2"), testBinding))
	if c[0] != 2 || binary.BigEndian.Uint32(c[1:5]) != 7 || len(c) != 5+60+12+len("hunter2")+16 {
		t.Fatalf("Seal wrote % x", c)
	}
	master, _ := newGCM(k)
	dk, err = master.Open(nil, c[5:17], c[17:65], append(bytes.Clone(testBinding), wrapDomain...))
	if err != nil {
		t.Fatalf("wrapped data key: %v", err)
	}
	data, _ := newGCM(dk)
	if pt, err := data.Open(nil, c[65:77], c[77:], testBinding); err != nil || string(pt) != "hunter2" {
		t.Fatalf("data part: %q, %v", pt, err)
	}
}

// A data key wrapped without the domain suffix must not open: otherwise a
// format-1 ciphertext of a chosen 32-byte secret (sealed by the master key
// with the bare binding) could be passed off as a wrapped data key.
func TestWrapDomainSeparation(t *testing.T) {
	k := testKey(t)
	v, err := New(map[uint32][]byte{1: k})
	if err != nil {
		t.Fatal(err)
	}
	dk := testKey(t)
	c := handV2(t, 1, k, dk, testBinding, []byte("hunter2"), testBinding)
	if got, err := v.Open(c, testBinding); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("data key wrapped with the bare binding opened: %q, %v", got, err)
	}
	if _, _, err := v.Rewrap(c, testBinding); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Rewrap accepted a data key wrapped with the bare binding: %v", err)
	}

	// The splice itself: a format-1 ciphertext of dk is exactly the size of
	// a wrapped data key.
	v1 := handV1(t, 1, k, dk, testBinding)
	spliced := append([]byte{2, 0, 0, 0, 1}, v1[5:]...)
	spliced = append(spliced, gcmSeal(t, dk, []byte("attacker's"), testBinding)...)
	if got, err := v.Open(spliced, testBinding); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("format-1 ciphertext accepted as a wrapped data key: %q, %v", got, err)
	}

	// And the reverse: a wrapped data key is not a format-1 secret.
	good := must(v.Seal([]byte("x"), testBinding))
	asV1 := append([]byte{1, 0, 0, 0, 1}, good[5:65]...)
	if got, err := v.Open(asV1, testBinding); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrapped data key opened as a format-1 secret: %q, %v", got, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
