package api

import (
	"context"
	"errors"
	"net/http"
	"net/mail"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rahatback/rahatback/auth"
	"github.com/rahatback/rahatback/db"
)

type userJSON struct {
	ID        uuid.UUID `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

func toUserJSON(u db.User) userJSON {
	return userJSON{ID: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt}
}

type tokenJSON struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

type tokensJSON struct {
	Access  tokenJSON `json:"access"`
	Refresh tokenJSON `json:"refresh"`
}

type authResponse struct {
	User   userJSON   `json:"user"`
	Tokens tokensJSON `json:"tokens"`
}

type registerRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

func validateCredentials(email, password string) fieldErrors {
	f := fieldErrors{}
	if email == "" {
		f.add("email", "is required")
	} else if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email || len(email) > 254 {
		f.add("email", "must be a valid email address")
	}
	switch {
	case len(password) < 8:
		f.add("password", "must be at least 8 characters")
	case len(password) > 72:
		f.add("password", "must be at most 72 bytes")
	case !strings.ContainsFunc(password, unicode.IsLetter) || !strings.ContainsFunc(password, unicode.IsDigit):
		f.add("password", "must contain at least one letter and one number")
	}
	return f
}

// register creates a user and signs them in: 201 {user, tokens}; 400 naming
// email, password or name; 409 when the email is taken.
func (a *API) register(w http.ResponseWriter, r *http.Request) error {
	var req registerRequest
	if err := a.decodeJSON(w, r, &req); err != nil {
		return err
	}
	req.Email = strings.TrimSpace(req.Email)
	req.Name = strings.TrimSpace(req.Name)
	f := validateCredentials(req.Email, req.Password)
	if len(req.Name) > 100 {
		f.add("name", "must be at most 100 characters")
	}
	if err := f.err(); err != nil {
		return err
	}
	hash, err := a.pw.Hash(req.Password)
	if err != nil {
		return err
	}
	var resp authResponse
	err = db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		u, err := a.q.CreateUser(r.Context(), tx, db.CreateUserParams{
			ID: uuid.New(), Email: req.Email, Name: req.Name, PasswordHash: hash,
		})
		if err != nil {
			return err
		}
		resp.User = toUserJSON(u)
		// The seed mails each user's own address: a new user starts
		// with an email channel to it.
		if _, err := a.q.CreateNotificationChannel(r.Context(), tx, db.CreateNotificationChannelParams{
			ID: uuid.New(), UserID: u.ID, Name: "My email", Type: "email", Enabled: true, Address: &u.Email,
		}); err != nil {
			return err
		}
		resp.Tokens, err = a.issueTokens(r.Context(), tx, u.ID, uuid.New())
		return err
	})
	if err == nil {
		auditUser(r.Context(), resp.User.ID)
	}
	if errors.Is(db.MapErr(err), db.ErrConflict) {
		return &Error{Code: http.StatusConflict, Message: "email already registered",
			Fields: map[string]string{"email": "is already registered"}}
	}
	if err != nil {
		return err
	}
	if a.opts.UserRegistered != nil {
		a.opts.UserRegistered(context.WithoutCancel(r.Context()), resp.User.ID)
	}
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// login answers 200 {user, tokens}, or 401 for a wrong email or password
// (the same answer for both).
func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := a.decodeJSON(w, r, &req); err != nil {
		return err
	}
	f := fieldErrors{}
	if req.Email == "" {
		f.add("email", "is required")
	}
	if req.Password == "" {
		f.add("password", "is required")
	}
	if err := f.err(); err != nil {
		return err
	}
	u, err := a.q.GetUserByEmail(r.Context(), a.pool, strings.TrimSpace(req.Email))
	if err = db.MapErr(err); err != nil && !errors.Is(err, db.ErrNotFound) {
		return err
	}
	// A failed login into a known account is recorded in its audit log.
	auditUser(r.Context(), u.ID)
	if !a.pw.Check(u.PasswordHash, req.Password) {
		return errorf(http.StatusUnauthorized, "incorrect email or password")
	}
	var resp authResponse
	resp.User = toUserJSON(u)
	err = db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		resp.Tokens, err = a.issueTokens(r.Context(), tx, u.ID, uuid.New())
		return err
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

type refreshRequest struct {
	RefreshToken string `json:"refreshToken"`
}

var errBadRefresh = errorf(http.StatusUnauthorized, "refresh token invalid, expired or revoked; sign in again")

// refreshTokens rotates a refresh token: 200 {user, tokens} with a new pair.
// A token presented a second time revokes its whole family (it was stolen or
// replayed) and answers 401, as do expired and revoked tokens.
func (a *API) refreshTokens(w http.ResponseWriter, r *http.Request) error {
	var req refreshRequest
	if err := a.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return fieldErrors{"refreshToken": "is required"}.err()
	}
	var resp authResponse
	reused := false
	err := db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		rt, err := a.q.GetRefreshTokenForUpdate(r.Context(), tx, auth.HashToken(req.RefreshToken))
		if err := db.MapErr(err); errors.Is(err, db.ErrNotFound) {
			return errBadRefresh
		} else if err != nil {
			return err
		}
		if rt.RevokedAt != nil || time.Now().After(rt.ExpiresAt) {
			return errBadRefresh
		}
		if rt.UsedAt != nil {
			reused = true
			return a.q.RevokeRefreshFamily(r.Context(), tx, rt.FamilyID)
		}
		if err := a.q.MarkRefreshTokenUsed(r.Context(), tx, rt.ID); err != nil {
			return err
		}
		u, err := a.q.GetUser(r.Context(), tx, rt.UserID)
		if err != nil {
			return err
		}
		resp.User = toUserJSON(u)
		resp.Tokens, err = a.issueTokens(r.Context(), tx, u.ID, rt.FamilyID)
		return err
	})
	if err != nil {
		return err
	}
	if reused {
		a.log.Warn("refresh token reused; token family revoked")
		return errBadRefresh
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// logout revokes the refresh token's family: 204, also for an unknown token.
func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	var req refreshRequest
	if err := a.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return fieldErrors{"refreshToken": "is required"}.err()
	}
	err := db.WithTx(r.Context(), a.pool, func(tx pgx.Tx) error {
		rt, err := a.q.GetRefreshTokenForUpdate(r.Context(), tx, auth.HashToken(req.RefreshToken))
		if err := db.MapErr(err); errors.Is(err, db.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		auditUser(r.Context(), rt.UserID)
		return a.q.RevokeRefreshFamily(r.Context(), tx, rt.FamilyID)
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// me answers the signed-in user.
func (a *API) me(w http.ResponseWriter, r *http.Request) error {
	u, err := a.q.GetUser(r.Context(), a.pool, userID(r.Context()))
	if err != nil {
		return db.MapErr(err)
	}
	writeJSON(w, http.StatusOK, toUserJSON(u))
	return nil
}

func (a *API) issueTokens(ctx context.Context, tx pgx.Tx, userID, family uuid.UUID) (tokensJSON, error) {
	access, accessExp, err := a.opts.Issuer.IssueAccess(userID)
	if err != nil {
		return tokensJSON{}, err
	}
	refresh, hash, err := auth.NewOpaqueToken()
	if err != nil {
		return tokensJSON{}, err
	}
	refreshExp := time.Now().Add(a.opts.RefreshTTL)
	err = a.q.CreateRefreshToken(ctx, tx, db.CreateRefreshTokenParams{
		ID: uuid.New(), UserID: userID, FamilyID: family, TokenHash: hash, ExpiresAt: refreshExp,
	})
	if err != nil {
		return tokensJSON{}, err
	}
	return tokensJSON{
		Access:  tokenJSON{Token: access, Expires: accessExp},
		Refresh: tokenJSON{Token: refresh, Expires: refreshExp},
	}, nil
}

type ctxKey int

const userIDKey ctxKey = iota

func userID(ctx context.Context) uuid.UUID {
	id, _ := ctx.Value(userIDKey).(uuid.UUID)
	return id
}

// authenticated requires a valid bearer access token and puts its user id in
// the request context; 401 otherwise.
func (a *API) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rahatback"`)
			writeJSON(w, http.StatusUnauthorized, errorf(http.StatusUnauthorized, "please authenticate: bearer access token required"))
			return
		}
		id, err := a.opts.Issuer.ParseAccess(token)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rahatback", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, errorf(http.StatusUnauthorized, "%s", err.Error()))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userIDKey, id)))
	})
}
