package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

type scope int

const (
	scopeNone scope = iota
	scopePortal
	scopeAdmin // the operator: everything the portal may do, and more
)

// keyring holds SHA-256 digests of the API keys, so comparison is constant-time whatever
// the lengths, and the keys themselves are not kept in the server.
type keyring struct {
	admin, portal [sha256.Size]byte
	hasAdmin      bool
	hasPortal     bool
}

func newKeyring(admin, portal string) keyring {
	return keyring{
		admin: sha256.Sum256([]byte(admin)), hasAdmin: admin != "",
		portal: sha256.Sum256([]byte(portal)), hasPortal: portal != "",
	}
}

// scopeOf returns the scope a presented key grants. Both comparisons always run.
func (k keyring) scopeOf(key string) scope {
	sum := sha256.Sum256([]byte(key))
	isAdmin := subtle.ConstantTimeCompare(sum[:], k.admin[:]) == 1 && k.hasAdmin
	isPortal := subtle.ConstantTimeCompare(sum[:], k.portal[:]) == 1 && k.hasPortal
	switch {
	case isAdmin:
		return scopeAdmin
	case isPortal:
		return scopePortal
	}
	return scopeNone
}

// require returns a middleware admitting requests whose bearer key grants at least want:
// 401 without a valid key, 403 with a valid key of a narrower scope.
func (s *Server) require(want scope) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			key, ok := bearer(c.Request().Header.Get(echo.HeaderAuthorization))
			if !ok {
				return apperr.New(apperr.Unauthorized, "an API key is required: Authorization: Bearer <key>")
			}
			got := s.keys.scopeOf(key)
			switch {
			case got == scopeNone:
				return apperr.New(apperr.Unauthorized, "the API key is not valid")
			case got < want:
				return apperr.New(apperr.Forbidden, "this API key may not use this route")
			}
			return next(c)
		}
	}
}

func bearer(header string) (string, bool) {
	scheme, key, ok := strings.Cut(header, " ")
	key = strings.TrimSpace(key)
	return key, ok && strings.EqualFold(scheme, "Bearer") && key != ""
}
