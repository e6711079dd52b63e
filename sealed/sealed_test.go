package sealed_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/rahatback/rahatback/sealed"
)

func newIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := sealed.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustSeal(t *testing.T, recipient string, secret []byte) string {
	t.Helper()
	s, err := sealed.Seal(recipient, secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	id := newIdentity(t)
	for _, secret := range [][]byte{[]byte("correct horse battery staple"), {0}, bytes.Repeat([]byte("k"), 64<<10)} {
		s := mustSeal(t, id.Recipient().String(), secret)
		if strings.Contains(s, string(secret)) {
			t.Fatal("sealed value shows the secret")
		}
		got, err := sealed.Open(id, s)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("opened %d bytes, want %d", len(got), len(secret))
		}
	}
}

func TestReadableWithAge(t *testing.T) {
	// A sealed value is a standard age file, base64-encoded.
	id := newIdentity(t)
	s := mustSeal(t, id.Recipient().String(), []byte("pw"))
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.Decrypt(bytes.NewReader(raw), id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "pw" {
		t.Fatalf("age decrypts %q, %v", got, err)
	}
}

func TestOtherIdentity(t *testing.T) {
	agentA, agentB := newIdentity(t), newIdentity(t)
	s := mustSeal(t, agentA.Recipient().String(), []byte("for A only"))
	if got, err := sealed.Open(agentB, s); err == nil {
		t.Fatalf("agent B opened A's secret: %q", got)
	}
	// Each seal is fresh: the same secret sealed twice gives different values.
	if s == mustSeal(t, agentA.Recipient().String(), []byte("for A only")) {
		t.Fatal("two seals of the same secret are identical")
	}
}

func TestTampered(t *testing.T) {
	id := newIdentity(t)
	s := mustSeal(t, id.Recipient().String(), []byte("hunter2"))
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte in the header's wrapped key, in the header MAC region and
	// in the payload (nonce and ciphertext).
	for _, i := range []int{len("age-encryption.org/v1\n-> X25519 ") + 2, bytes.Index(raw, []byte("--- ")) + 6, len(raw) - 20, len(raw) - 1} {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x01
		if got, err := sealed.Open(id, base64.StdEncoding.EncodeToString(bad)); err == nil {
			t.Fatalf("byte %d of %d flipped: opened %q", i, len(raw), got)
		}
	}
	if got, err := sealed.Open(id, base64.StdEncoding.EncodeToString(raw[:len(raw)-1])); err == nil {
		t.Fatalf("truncated: opened %q", got)
	}
	if _, err := sealed.Open(id, "not base64!"); err == nil {
		t.Fatal("non-base64 value opened")
	}
	if _, err := sealed.Open(id, base64.StdEncoding.EncodeToString([]byte("hunter2"))); err == nil {
		t.Fatal("a plaintext value opened")
	}
}

func TestEmpty(t *testing.T) {
	id := newIdentity(t)
	for _, secret := range [][]byte{nil, {}} {
		s := mustSeal(t, id.Recipient().String(), secret)
		got, err := sealed.Open(id, s)
		if err != nil {
			t.Fatalf("open sealed empty secret: %v", err)
		}
		if len(got) != 0 {
			t.Fatalf("empty secret opened as %q", got)
		}
	}
}

func TestBadRecipient(t *testing.T) {
	id := newIdentity(t)
	for _, r := range []string{"", "age1notakey", id.String()} {
		if s, err := sealed.Seal(r, []byte("pw")); err == nil {
			t.Fatalf("sealed to %q: %q", r, s)
		}
	}
	if _, err := sealed.ParseRecipient("age1notakey"); err == nil {
		t.Fatal("ParseRecipient accepted a bad key")
	}
	if r, err := sealed.ParseRecipient(id.Recipient().String()); err != nil || r.String() != id.Recipient().String() {
		t.Fatalf("ParseRecipient(%s) = %v, %v", id.Recipient(), r, err)
	}
}

func TestTooLarge(t *testing.T) {
	id := newIdentity(t)
	s := mustSeal(t, id.Recipient().String(), make([]byte, 64<<10+1))
	if _, err := sealed.Open(id, s); err == nil {
		t.Fatal("opened a secret over 64 KiB")
	}
}
