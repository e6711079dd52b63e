// Package auth issues and checks the credentials of RahatBack users: JWT
// access tokens (HS256) and opaque tokens (refresh, enrollment) stored only as
// SHA-256 hashes.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"

	"github.com/rahatback/rahatback/securefile"
)

// DefaultAccessTTL is the lifetime of an access token.
const DefaultAccessTTL = 15 * time.Minute

// BcryptCost is the cost of user password hashes.
const BcryptCost = 12

// ErrInvalidToken is returned for an access token that is malformed, expired,
// of the wrong type or signed with another key.
var ErrInvalidToken = errors.New("invalid or expired access token")

const issuer = "rahatback"

// Issuer signs and verifies access tokens.
type Issuer struct {
	key       []byte
	accessTTL time.Duration
}

// NewIssuer returns an Issuer signing with key (at least 32 bytes). A zero
// accessTTL means DefaultAccessTTL.
func NewIssuer(key []byte, accessTTL time.Duration) (*Issuer, error) {
	if len(key) < 32 {
		return nil, errors.New("auth: signing key must be at least 32 bytes")
	}
	if accessTTL == 0 {
		accessTTL = DefaultAccessTTL
	}
	return &Issuer{key: key, accessTTL: accessTTL}, nil
}

type claims struct {
	Type string `json:"type"`
	jwt.RegisteredClaims
}

// IssueAccess returns a signed access token for userID and its expiry.
func (i *Issuer) IssueAccess(userID uuid.UUID) (string, time.Time, error) {
	now := time.Now()
	exp := now.Add(i.accessTTL)
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		Type: "access",
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   userID.String(),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        uuid.NewString(),
		},
	})
	s, err := tok.SignedString(i.key)
	return s, exp, err
}

// ParseAccess verifies an access token and returns its user id, or
// ErrInvalidToken.
func (i *Issuer) ParseAccess(token string) (uuid.UUID, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return i.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
	)
	if err != nil || c.Type != "access" {
		return uuid.Nil, ErrInvalidToken
	}
	id, err := uuid.Parse(c.Subject)
	if err != nil {
		return uuid.Nil, ErrInvalidToken
	}
	return id, nil
}

// LoadOrCreateKey returns the JWT signing key: envKey (RAHATBACK_JWT_SECRET,
// at least 32 characters) when set, otherwise the hex key in path, created
// with 32 random bytes (mode 0600) when missing.
func LoadOrCreateKey(path, envKey string) ([]byte, error) {
	if envKey != "" {
		if len(envKey) < 32 {
			return nil, errors.New("auth: RAHATBACK_JWT_SECRET must be at least 32 characters")
		}
		return []byte(envKey), nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := securefile.Write(path, []byte(hex.EncodeToString(k)+"\n")); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(k) < 32 {
		return nil, fmt.Errorf("auth: %s does not hold a hex key of at least 32 bytes", path)
	}
	return k, nil
}

// NewOpaqueToken returns a random token (32 bytes, base64url) and the hash
// under which it is stored.
func NewOpaqueToken() (string, []byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	t := base64.RawURLEncoding.EncodeToString(b)
	return t, HashToken(t), nil
}

// HashToken is the stored form of an opaque token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Passwords hashes and checks user passwords with bcrypt.
type Passwords struct {
	cost  int
	dummy func() []byte
}

// NewPasswords returns a Passwords hashing at cost; 0 means BcryptCost. Costs
// below 10 are refused.
func NewPasswords(cost int) (*Passwords, error) {
	if cost == 0 {
		cost = BcryptCost
	}
	if cost < 10 || cost > bcrypt.MaxCost {
		return nil, fmt.Errorf("auth: bcrypt cost %d out of range 10-%d", cost, bcrypt.MaxCost)
	}
	return &Passwords{cost: cost, dummy: sync.OnceValue(func() []byte {
		h, _ := bcrypt.GenerateFromPassword([]byte("rahatback-dummy-password"), cost)
		return h
	})}, nil
}

// Hash returns the bcrypt hash of a user password.
func (p *Passwords) Hash(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), p.cost)
	return string(h), err
}

// Check reports whether password matches hash. With an empty hash (unknown
// user) it still spends the time of one comparison, so the response time does
// not tell which emails exist, and returns false.
func (p *Passwords) Check(hash, password string) bool {
	if hash == "" {
		_ = bcrypt.CompareHashAndPassword(p.dummy(), []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}
