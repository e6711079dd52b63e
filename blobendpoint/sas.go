package blobendpoint

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SASVersion is the signed version (sv) NewSAS writes.
const SASVersion = "2022-11-02"

// sasTime is how a SAS spells its expiry (se): ISO 8601 in UTC, seconds.
const sasTime = "2006-01-02T15:04:05Z"

// minSignature is the shortest signature New accepts.
const minSignature = 32

// SAS is the container Shared Access Signature a Server accepts. Unlike
// Azure's, the signature is not an HMAC of the other fields: it is a
// random secret, and a request must carry every field exactly as issued,
// so none of them can be edited (a later expiry, more permissions).
type SAS struct {
	// Version is the signed version (sv).
	Version string
	// Permissions (sp) are letters from "racwdl"; the server enforces r
	// (Get Blob, Get Blob Properties, Get Block List, the container's
	// properties), w (Put Blob, Put Block, Put Block List, Lease Blob) and
	// d (Delete Blob).
	Permissions string
	// Expiry (se) ends the signature's validity; requests at or after it
	// fail with 403 AuthenticationFailed. Kept to the second, in UTC.
	Expiry time.Time
	// Signature (sig) is the secret: 32 random bytes in URL-safe base64
	// from NewSAS, so it needs no escaping in a URL.
	Signature string
}

// NewSAS returns a fresh SAS with a random signature, for one backup or
// restore: permissions as in SAS.Permissions (a backup needs "rwdl", a
// restore "rl"), valid until expiry. It returns an error for an empty
// permission string or one with other letters, a zero expiry, or when the
// system's random source fails.
func NewSAS(permissions string, expiry time.Time) (SAS, error) {
	if err := checkPermissions(permissions); err != nil {
		return SAS{}, err
	}
	if expiry.IsZero() {
		return SAS{}, errors.New("blobendpoint: SAS expiry is zero")
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return SAS{}, fmt.Errorf("blobendpoint: SAS signature: %w", err)
	}
	return SAS{
		Version:     SASVersion,
		Permissions: permissions,
		Expiry:      expiry.UTC().Truncate(time.Second),
		Signature:   base64.RawURLEncoding.EncodeToString(b[:]),
	}, nil
}

// Encode is the SAS as a query string without the leading "?": the SECRET
// of SQL Server's CREATE CREDENTIAL … WITH IDENTITY = 'SHARED ACCESS
// SIGNATURE', and what a client appends to a blob's URL.
func (s SAS) Encode() string {
	return "sv=" + url.QueryEscape(s.Version) +
		"&sr=c&sp=" + url.QueryEscape(s.Permissions) +
		"&se=" + url.QueryEscape(s.Expiry.UTC().Format(sasTime)) +
		"&sig=" + url.QueryEscape(s.Signature)
}

// check reports whether s can be a server's SAS.
func (s SAS) check() error {
	switch {
	case s.Version == "":
		return errors.New("blobendpoint: SAS has no version")
	case len(s.Signature) < minSignature:
		return fmt.Errorf("blobendpoint: SAS signature shorter than %d characters", minSignature)
	case s.Expiry.IsZero():
		return errors.New("blobendpoint: SAS expiry is zero")
	}
	return checkPermissions(s.Permissions)
}

func checkPermissions(p string) error {
	if p == "" {
		return errors.New("blobendpoint: SAS has no permissions")
	}
	for _, c := range p {
		if !strings.ContainsRune("racwdl", c) {
			return fmt.Errorf("blobendpoint: SAS permission %q unknown (want letters from \"racwdl\")", c)
		}
	}
	return nil
}

// authenticate checks the request's SAS against the server's: the
// signature in constant time, the other fields for equality, then the
// expiry.
func (s *Server) authenticate(q url.Values) error {
	sig := q.Get("sig")
	if sig == "" {
		return authFailed("The request carries no shared access signature.")
	}
	want := sha256.Sum256([]byte(s.sas.Signature))
	got := sha256.Sum256([]byte(sig))
	if subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
		return authFailed("Signature did not match.")
	}
	se, err := time.Parse(sasTime, q.Get("se"))
	if q.Get("sv") != s.sas.Version || q.Get("sr") != "c" || q.Get("sp") != s.sas.Permissions ||
		err != nil || !se.Equal(s.sas.Expiry.UTC().Truncate(time.Second)) {
		return authFailed("Signature fields not well formed or not as issued.")
	}
	if !s.now().Before(se) {
		return authFailed("Signature not valid in the specified time frame.")
	}
	return nil
}

// authorize checks that the SAS grants permission (one of "r", "w", "d").
func (s *Server) authorize(permission byte) error {
	if strings.IndexByte(s.sas.Permissions, permission) < 0 {
		return &azError{http.StatusForbidden, "AuthorizationPermissionMismatch",
			"This request is not authorized to perform this operation using this permission."}
	}
	return nil
}

func authFailed(detail string) *azError {
	return &azError{http.StatusForbidden, "AuthenticationFailed",
		"Server failed to authenticate the request. " + detail}
}
