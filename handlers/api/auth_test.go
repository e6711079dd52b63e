package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rahatback/rahatback/auth"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/testsupport"
)

func TestAuthFlow(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	reg := s.register(t, "Ada@Example.com")
	if reg.User.Email != "Ada@Example.com" || reg.Tokens.Access.Token == "" || reg.Tokens.Refresh.Token == "" {
		t.Fatalf("register response %+v", reg)
	}
	r := s.do(t, "GET", "/v1/auth/me", reg.Tokens.Access.Token, nil)
	wantCode(t, r, http.StatusOK)
	if strings.Contains(string(r.Body), "password") {
		t.Fatalf("user response mentions a password: %s", r.Body)
	}

	t.Run("LoginWrongPassword", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/auth/login", "", map[string]string{"email": "ada@example.com", "password": "wrong-horse-1"})
		wantCode(t, r, http.StatusUnauthorized)
		r2 := s.do(t, "POST", "/v1/auth/login", "", map[string]string{"email": "nobody@example.com", "password": "wrong-horse-1"})
		wantCode(t, r2, http.StatusUnauthorized)
		if string(r.Body) != string(r2.Body) {
			t.Fatalf("unknown email and wrong password answer differently: %s vs %s", r.Body, r2.Body)
		}
	})

	var login authResp
	t.Run("LoginCaseInsensitiveEmail", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/auth/login", "", map[string]string{"email": "ADA@example.COM", "password": "correct-horse-1"})
		wantCode(t, r, http.StatusOK)
		r.JSON(t, &login)
		if login.User.ID != reg.User.ID {
			t.Fatalf("logged in as %s, want %s", login.User.ID, reg.User.ID)
		}
	})

	t.Run("RefreshRotatesAndReuseRevokesFamily", func(t *testing.T) {
		first := login.Tokens.Refresh.Token
		r := s.do(t, "POST", "/v1/auth/refresh-tokens", "", map[string]string{"refreshToken": first})
		wantCode(t, r, http.StatusOK)
		var rotated authResp
		r.JSON(t, &rotated)
		second := rotated.Tokens.Refresh.Token
		if second == "" || second == first {
			t.Fatalf("refresh token not rotated: %q", second)
		}
		wantCode(t, s.do(t, "GET", "/v1/auth/me", rotated.Tokens.Access.Token, nil), http.StatusOK)

		// Replaying the first token: refused, and the family (second) dies with it.
		wantCode(t, s.do(t, "POST", "/v1/auth/refresh-tokens", "", map[string]string{"refreshToken": first}), http.StatusUnauthorized)
		wantCode(t, s.do(t, "POST", "/v1/auth/refresh-tokens", "", map[string]string{"refreshToken": second}), http.StatusUnauthorized)

		// Another session (the registration's family) is untouched.
		wantCode(t, s.do(t, "POST", "/v1/auth/refresh-tokens", "", map[string]string{"refreshToken": reg.Tokens.Refresh.Token}), http.StatusOK)
	})

	t.Run("Logout", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/auth/login", "", map[string]string{"email": "ada@example.com", "password": "correct-horse-1"})
		var l authResp
		r.JSON(t, &l)
		wantCode(t, s.do(t, "POST", "/v1/auth/logout", "", map[string]string{"refreshToken": l.Tokens.Refresh.Token}), http.StatusNoContent)
		wantCode(t, s.do(t, "POST", "/v1/auth/refresh-tokens", "", map[string]string{"refreshToken": l.Tokens.Refresh.Token}), http.StatusUnauthorized)
	})

	t.Run("BadBearer", func(t *testing.T) {
		wantCode(t, s.do(t, "GET", "/v1/databases", "", nil), http.StatusUnauthorized)
		wantCode(t, s.do(t, "GET", "/v1/databases", "not-a-jwt", nil), http.StatusUnauthorized)
		// A refresh token is not an access token.
		wantCode(t, s.do(t, "GET", "/v1/databases", reg.Tokens.Refresh.Token, nil), http.StatusUnauthorized)
		// Signed with another key.
		other := newServer(t)
		o := other.register(t, "eve@example.com")
		wantCode(t, s.do(t, "GET", "/v1/databases", o.Tokens.Access.Token, nil), http.StatusUnauthorized)
	})
}

func TestAccessTokenExpires(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(o *api.Opts) {
		iss, err := auth.NewIssuer([]byte(testsupport.RandomString(32)), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		o.Issuer = iss
	})
	u := s.register(t, "ttl@example.com")
	wantCode(t, s.do(t, "GET", "/v1/auth/me", u.Tokens.Access.Token, nil), http.StatusOK)
	time.Sleep(2100 * time.Millisecond)
	wantCode(t, s.do(t, "GET", "/v1/auth/me", u.Tokens.Access.Token, nil), http.StatusUnauthorized)
	// The refresh token still gets a fresh access token.
	r := s.do(t, "POST", "/v1/auth/refresh-tokens", "", map[string]string{"refreshToken": u.Tokens.Refresh.Token})
	wantCode(t, r, http.StatusOK)
	var fresh authResp
	r.JSON(t, &fresh)
	wantCode(t, s.do(t, "GET", "/v1/auth/me", fresh.Tokens.Access.Token, nil), http.StatusOK)
}

func TestRegisterValidation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.register(t, "taken@example.com")
	cases := []struct {
		name  string
		body  map[string]string
		code  int
		field string
	}{
		{"MissingEmail", map[string]string{"password": "abcdefg1"}, 400, "email"},
		{"BadEmail", map[string]string{"email": "not-an-email", "password": "abcdefg1"}, 400, "email"},
		{"ShortPassword", map[string]string{"email": "x@example.com", "password": "ab1"}, 400, "password"},
		{"PasswordWithoutDigit", map[string]string{"email": "x@example.com", "password": "abcdefgh"}, 400, "password"},
		{"EmailTaken", map[string]string{"email": "TAKEN@example.com", "password": "abcdefg1"}, 409, "email"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.do(t, "POST", "/v1/auth/register", "", c.body)
			wantCode(t, r, c.code)
			if _, ok := r.Fields(t)[c.field]; !ok {
				t.Fatalf("error does not name %q: %s", c.field, r.Body)
			}
		})
	}
}

func TestAuthRateLimit(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(o *api.Opts) { o.AuthRate = rate.Every(time.Hour); o.AuthBurst = 3 })
	body := map[string]string{"email": "x@example.com", "password": "wrong-pass-1"}
	for i := 0; i < 3; i++ {
		wantCode(t, s.do(t, "POST", "/v1/auth/login", "", body), http.StatusUnauthorized)
	}
	r := s.do(t, "POST", "/v1/auth/login", "", body)
	wantCode(t, r, http.StatusTooManyRequests)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// Register shares the per-IP budget.
	wantCode(t, s.do(t, "POST", "/v1/auth/register", "", map[string]string{"email": "y@example.com", "password": "abcdefg1"}), http.StatusTooManyRequests)
	// Other endpoints are not limited.
	wantCode(t, s.do(t, "GET", "/healthz", "", nil), http.StatusOK)
}
