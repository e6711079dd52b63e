// Package vault encrypts secrets at rest (database passwords, storage keys,
// backup identities) with envelope encryption under versioned master keys.
//
// Every secret gets a fresh random 256-bit data key. The data key encrypts
// the secret (AES-256-GCM); the current master key wraps the data key
// (AES-256-GCM). The caller binds each secret to where it lives (table,
// column, row id, see Binding) as additional data of both, so a ciphertext
// copied to another row or column does not decrypt. A ciphertext (format 2)
// is:
//
//	2 | master key version (uint32, big endian)
//	  | wrapped data key: 12-byte nonce | 32-byte key | 16-byte tag
//	  | 12-byte nonce | sealed data (secret | 16-byte tag)
//
// Rotating a master key rewraps only the 60-byte data-key part (Rewrap);
// the sealed data is kept byte for byte.
//
// Format 1, written before envelopes, is the secret sealed directly by the
// master key: 1 | key version | 12-byte nonce | sealed data. Open still reads
// it and Rewrap converts it to format 2.
package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

const (
	formatV1 = 1 // direct: the master key seals the secret
	formatV2 = 2 // envelope: a per-secret data key seals it, the master key wraps that

	headerSize  = 5  // format byte | uint32 key version
	nonceSize   = 12 // AES-GCM standard nonce
	tagSize     = 16 // AES-GCM tag
	wrappedSize = nonceSize + KeySize + tagSize
	v2DataStart = headerSize + wrappedSize
	v2MinSize   = v2DataStart + nonceSize + tagSize
)

// wrapDomain ends the additional data of a wrapped data key. Bindings never
// contain it (row ids are UUIDs), so a ciphertext the master key sealed
// directly (format 1, additional data = the binding) can never pass for a
// wrapped data key, nor the reverse.
const wrapDomain = "\x00rahatback/vault/data-key/v2"

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
// keys is empty, a version is 0 or a key is not KeySize bytes.
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
		aead, err := newGCM(k)
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

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Current is the version of the master key that Seal and Rewrap use.
func (v *Vault) Current() uint32 { return v.current }

// Versions lists the versions of the master keys held, ascending.
func (v *Vault) Versions() []uint32 {
	out := make([]uint32, 0, len(v.keys))
	for ver := range v.keys {
		out = append(out, ver)
	}
	slices.Sort(out)
	return out
}

// Binding names where a secret is stored; it is authenticated with the
// secret, never stored inside the ciphertext.
func Binding(table, column, rowID string) []byte {
	return []byte(table + "\x00" + column + "\x00" + rowID)
}

// wrapAD is the additional data of a wrapped data key: the binding, then
// wrapDomain. It never aliases ad.
func wrapAD(ad []byte) []byte {
	out := make([]byte, 0, len(ad)+len(wrapDomain))
	return append(append(out, ad...), wrapDomain...)
}

func header(format byte, ver uint32, capacity int) []byte {
	out := make([]byte, headerSize, capacity)
	out[0] = format
	binary.BigEndian.PutUint32(out[1:headerSize], ver)
	return out
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Seal encrypts plaintext under a fresh data key wrapped by the current
// master key, both bound to ad. The result is a format-2 ciphertext.
func (v *Vault) Seal(plaintext, ad []byte) ([]byte, error) {
	dk, err := randomBytes(KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	out := header(formatV2, v.current, v2MinSize+len(plaintext))
	out, err = v.appendWrapped(out, dk, ad)
	if err != nil {
		return nil, err
	}
	data, err := newGCM(dk)
	if err != nil {
		return nil, err
	}
	nonce, err := randomBytes(nonceSize)
	if err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return data.Seal(out, nonce, plaintext, ad), nil
}

// appendWrapped appends dk wrapped by the current master key (nonce | key |
// tag) to out.
func (v *Vault) appendWrapped(out, dk, ad []byte) ([]byte, error) {
	nonce, err := randomBytes(nonceSize)
	if err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return v.keys[v.current].Seal(out, nonce, dk, wrapAD(ad)), nil
}

// master returns the master key a ciphertext names, or an error naming the
// version when it is not loaded.
func (v *Vault) master(ciphertext []byte) (uint32, cipher.AEAD, error) {
	ver := binary.BigEndian.Uint32(ciphertext[1:headerSize])
	aead, ok := v.keys[ver]
	if !ok {
		return ver, nil, fmt.Errorf("vault: master key version %d is not loaded", ver)
	}
	return ver, aead, nil
}

// unwrap returns the data key of a format-2 ciphertext and the master key
// version that wraps it.
func (v *Vault) unwrap(ciphertext, ad []byte) ([]byte, uint32, error) {
	ver, aead, err := v.master(ciphertext)
	if err != nil {
		return nil, ver, err
	}
	if len(ciphertext) < v2MinSize {
		return nil, ver, ErrDecrypt
	}
	w := ciphertext[headerSize:v2DataStart]
	dk, err := aead.Open(nil, w[:nonceSize], w[nonceSize:], wrapAD(ad))
	if err != nil {
		return nil, ver, ErrDecrypt
	}
	return dk, ver, nil
}

// Open decrypts a ciphertext made by Seal (or a format-1 one) with the same
// ad. It returns ErrDecrypt for anything it cannot authenticate and an error
// naming the version when that master key is missing.
func (v *Vault) Open(ciphertext, ad []byte) ([]byte, error) {
	if len(ciphertext) < headerSize {
		return nil, ErrDecrypt
	}
	switch ciphertext[0] {
	case formatV1:
		return v.openV1(ciphertext, ad)
	case formatV2:
		dk, _, err := v.unwrap(ciphertext, ad)
		if err != nil {
			return nil, err
		}
		defer clear(dk)
		data, err := newGCM(dk)
		if err != nil {
			return nil, err
		}
		rest := ciphertext[v2DataStart:]
		pt, err := data.Open(nil, rest[:nonceSize], rest[nonceSize:], ad)
		if err != nil {
			return nil, ErrDecrypt
		}
		return pt, nil
	}
	return nil, ErrDecrypt
}

func (v *Vault) openV1(ciphertext, ad []byte) ([]byte, error) {
	_, aead, err := v.master(ciphertext)
	if err != nil {
		return nil, err
	}
	rest := ciphertext[headerSize:]
	if len(rest) < nonceSize+tagSize {
		return nil, ErrDecrypt
	}
	pt, err := aead.Open(nil, rest[:nonceSize], rest[nonceSize:], ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// Rewrap returns ciphertext with its data key wrapped by the current master
// key, and whether that changed anything. A format-2 ciphertext keeps its
// sealed data byte for byte: only the key version and the wrapped data key
// change. A format-1 ciphertext is opened and sealed again as format 2. A
// ciphertext already under the current key is returned as is (false) once
// its data key unwraps. Errors are those of Open: ErrDecrypt when the data
// key (or, for format 1, the secret) does not authenticate with ad, an
// error naming the version when that master key is not loaded. For format
// 2 the sealed data itself is not checked; Open checks it.
func (v *Vault) Rewrap(ciphertext, ad []byte) ([]byte, bool, error) {
	if len(ciphertext) < headerSize {
		return nil, false, ErrDecrypt
	}
	switch ciphertext[0] {
	case formatV1:
		pt, err := v.openV1(ciphertext, ad)
		if err != nil {
			return nil, false, err
		}
		defer clear(pt)
		out, err := v.Seal(pt, ad)
		if err != nil {
			return nil, false, err
		}
		return out, true, nil
	case formatV2:
		dk, ver, err := v.unwrap(ciphertext, ad)
		if err != nil {
			return nil, false, err
		}
		defer clear(dk)
		if ver == v.current {
			return ciphertext, false, nil
		}
		out := header(formatV2, v.current, len(ciphertext))
		out, err = v.appendWrapped(out, dk, ad)
		if err != nil {
			return nil, false, err
		}
		return append(out, ciphertext[v2DataStart:]...), true, nil
	}
	return nil, false, ErrDecrypt
}

// Describe reports, without any key, the format of a ciphertext (1: sealed
// directly by the master key; 2: envelope) and the master key version it
// needs. It returns ErrDecrypt when ciphertext is not a vault ciphertext.
func Describe(ciphertext []byte) (format int, version uint32, err error) {
	if len(ciphertext) < headerSize {
		return 0, 0, ErrDecrypt
	}
	version = binary.BigEndian.Uint32(ciphertext[1:headerSize])
	switch f := ciphertext[0]; {
	case f == formatV1 && len(ciphertext) >= headerSize+nonceSize+tagSize,
		f == formatV2 && len(ciphertext) >= v2MinSize:
		return int(f), version, nil
	}
	return 0, 0, ErrDecrypt
}
