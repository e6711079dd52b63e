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
// Every chain (a full and the backups after it) has its own random keys:
// a chunk-id key (ids are HMAC-SHA256 of the plaintext under it, never a
// plain content hash), the chunker's polynomial (so boundaries do not
// reveal content either) and, for an encrypted job, a sealing key. They
// are kept in each index of the chain; an encrypted job's indexes are
// encrypted with age to the job's recipients, so the job's exported key
// (or any extra recipient's identity) opens them, as it opens a
// single-object backup.
package chunkstore

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"

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

// newKeys are fresh random keys for a new chain.
func newKeys(encrypted bool) (*Keys, []byte, error) {
	k := &Keys{idKey: make([]byte, 32)}
	if _, err := rand.Read(k.idKey); err != nil {
		return nil, nil, err
	}
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		return nil, nil, err
	}
	k.pol = pol
	if !encrypted {
		return k, nil, nil
	}
	seal := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(seal); err != nil {
		return nil, nil, err
	}
	if k.aead, err = chacha20poly1305.NewX(seal); err != nil {
		return nil, nil, err
	}
	return k, seal, nil
}

// keysOf are the keys an index records.
func keysOf(idKey []byte, pol chunker.Pol, seal []byte) (*Keys, error) {
	if len(idKey) != 32 {
		return nil, errors.New("chunkstore: the index has no valid chunk-id key")
	}
	if !pol.Irreducible() {
		return nil, errors.New("chunkstore: the index has no valid chunker polynomial")
	}
	k := &Keys{idKey: idKey, pol: pol}
	if seal != nil {
		aead, err := chacha20poly1305.NewX(seal)
		if err != nil {
			return nil, fmt.Errorf("chunkstore: the index has no valid sealing key: %w", err)
		}
		k.aead = aead
	}
	return k, nil
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
