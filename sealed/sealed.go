// Package sealed encrypts secrets for one agent: the control plane seals a
// secret to the agent's age X25519 public key before it leaves in a message,
// so only that agent can read it.
package sealed

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
)

// maxSecret bounds what Open will decrypt; secrets are passwords and keys.
const maxSecret = 64 << 10

// NewIdentity generates an agent key pair. The identity's String() is the
// secret key to keep; Recipient().String() is the public key to register.
func NewIdentity() (*age.X25519Identity, error) {
	return age.GenerateX25519Identity()
}

// ParseRecipient validates an agent public key ("age1…").
func ParseRecipient(s string) (*age.X25519Recipient, error) {
	return age.ParseX25519Recipient(s)
}

// Seal encrypts secret to recipient and returns it base64-encoded. An empty
// secret seals to an empty string.
func Seal(recipient string, secret []byte) (string, error) {
	if len(secret) == 0 {
		return "", nil
	}
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return "", fmt.Errorf("sealed: bad agent public key: %w", err)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(secret); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// Open decrypts a value made by Seal. It returns an error when the value was
// sealed to another key or was tampered with.
func Open(id *age.X25519Identity, sealedValue string) ([]byte, error) {
	if sealedValue == "" {
		return nil, nil
	}
	raw, err := base64.StdEncoding.DecodeString(sealedValue)
	if err != nil {
		return nil, fmt.Errorf("sealed: not base64: %w", err)
	}
	r, err := age.Decrypt(bytes.NewReader(raw), id)
	if err != nil {
		return nil, fmt.Errorf("sealed: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(r, maxSecret+1))
	if err != nil {
		return nil, fmt.Errorf("sealed: %w", err)
	}
	if len(out) > maxSecret {
		return nil, errors.New("sealed: secret too large")
	}
	return out, nil
}
