// Package chunkstore keeps a job's incremental and differential backups as
// content-defined chunks in the job's storage (local, S3, Google Drive).
//
// The dump stream is cut by a Rabin-fingerprint chunker (restic/chunker)
// before compression and encryption, so an insert or an update moves only
// the boundaries near it. Each chunk is compressed and, for an encrypted
// job, sealed on its own (XChaCha20-Poly1305, its id as additional data),
// then appended to a pack object of about PackSize. A backup is an index
// object listing every chunk of its dump in order: those it stored in its
// own packs and those it found in its parent's. So every index is enough
// to read its backup; "incremental" and "differential" only say which
// earlier backup's chunks were looked for, and the backups whose packs an
// index uses are the ones it depends on.
//
// Layout under a job's directory <job>/ (the directory of the index key):
//
//	<job>/<time>-<run>.sql.chunks     the index of backup <run>
//	<job>/packs/<run>/<n>.pack        packs written by backup <run>
//
// Chunk ids are HMAC-SHA256 of the plaintext under a per-job key, never a
// plain content hash: for an encrypted job the key is derived from the
// job's age identity (nothing about it is stored), for a plain one it is
// random per chain and kept in its indexes (the content is stored in the
// clear there anyway). The chunker's polynomial is derived or stored the
// same way, so an encrypted job's boundaries do not reveal content either.
package chunkstore

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"

	"filippo.io/age"
	"github.com/restic/chunker"
	"golang.org/x/crypto/chacha20poly1305"
)

// ID is a chunk's id: HMAC-SHA256 of its plaintext under the chain's key.
type ID [32]byte

// Keys are what reads and writes one chain's chunks: the chunk-id key, the
// chunker's polynomial and, for an encrypted job, the sealing key.
type Keys struct {
	idKey []byte
	pol   chunker.Pol
	aead  cipher.AEAD // nil: chunks are stored unencrypted
}

// Encrypted reports whether chunks are sealed.
func (k *Keys) Encrypted() bool { return k.aead != nil }

// id is the chunk id of data.
func (k *Keys) id(h hash.Hash, data []byte) ID {
	h.Reset()
	h.Write(data)
	var id ID
	h.Sum(id[:0])
	return id
}

func (k *Keys) newMAC() hash.Hash { return hmac.New(sha256.New, k.idKey) }

// hkdfInfo separates the keys derived from one job identity.
const hkdfInfo = "rahatback chunkstore v1 "

// KeysFromIdentity derives an encrypted job's keys from its age identity
// ("AGE-SECRET-KEY-1…", as the job's key export holds it): the same
// identity always gives the same keys, so an exported key is all an
// offline restore needs. It returns an error for a string that is not an
// X25519 identity.
func KeysFromIdentity(identity string) (*Keys, error) {
	identity = strings.TrimSpace(identity)
	if _, err := age.ParseX25519Identity(identity); err != nil {
		return nil, fmt.Errorf("chunkstore: not an age identity: %w", err)
	}
	derive := func(what string, n int) []byte {
		b, err := hkdf.Key(sha256.New, []byte(identity), nil, hkdfInfo+what, n)
		if err != nil {
			panic(err) // only for lengths beyond 255 hashes
		}
		return b
	}
	aead, err := chacha20poly1305.NewX(derive("seal", chacha20poly1305.KeySize))
	if err != nil {
		return nil, err
	}
	pol, err := chunker.DerivePolynomial(&stream{seed: derive("polynomial", 32)})
	if err != nil {
		return nil, fmt.Errorf("chunkstore: deriving the chunker polynomial: %w", err)
	}
	return &Keys{idKey: derive("chunk id", 32), pol: pol, aead: aead}, nil
}

// newPlainKeys are fresh keys for a new chain of an unencrypted job.
func newPlainKeys() (*Keys, error) {
	k := &Keys{idKey: make([]byte, 32)}
	if _, err := rand.Read(k.idKey); err != nil {
		return nil, err
	}
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		return nil, err
	}
	k.pol = pol
	return k, nil
}

// plainKeys are the keys an unencrypted index records.
func plainKeys(idKey []byte, pol chunker.Pol) (*Keys, error) {
	if len(idKey) != 32 {
		return nil, errors.New("chunkstore: the index has no valid chunk-id key")
	}
	if !pol.Irreducible() {
		return nil, errors.New("chunkstore: the index has no valid chunker polynomial")
	}
	return &Keys{idKey: idKey, pol: pol}, nil
}

// stream is an endless deterministic byte stream: SHA-256(seed ‖ counter)
// blocks, the randomness DerivePolynomial draws from.
type stream struct {
	seed []byte
	n    uint64
	buf  []byte
}

func (s *stream) Read(p []byte) (int, error) {
	for len(s.buf) < len(p) {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], s.n)
		s.n++
		h := sha256.New()
		h.Write(s.seed)
		h.Write(c[:])
		s.buf = h.Sum(s.buf)
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// seal returns the blob of one compressed chunk: as is without
// encryption, else nonce ‖ XChaCha20-Poly1305(chunk) with the id as
// additional data, so a blob moved to another id fails to open.
func (k *Keys) seal(dst, compressed []byte, id ID) ([]byte, error) {
	if k.aead == nil {
		return append(dst, compressed...), nil
	}
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(compressed)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return append(dst, k.aead.Seal(nonce, nonce, compressed, id[:])...), nil
}

// open reverses seal.
func (k *Keys) open(blob []byte, id ID) ([]byte, error) {
	if k.aead == nil {
		return blob, nil
	}
	ns := k.aead.NonceSize()
	if len(blob) < ns+k.aead.Overhead() {
		return nil, errors.New("blob too short")
	}
	return k.aead.Open(nil, blob[:ns], blob[ns:], id[:])
}
