package httpapi

import (
	_ "embed"
	"net/http"
	"regexp"

	"github.com/labstack/echo/v4"
)

// OpenAPI is the API's OpenAPI 3 document. Portal developers generate their client from it;
// a test fails when a registered route is missing from it or a response does not match it.
//
//go:embed openapi.yaml
var OpenAPI []byte

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", OpenAPI)
}

var echoParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// openAPIPath turns echo's "/v1/instances/:id" into OpenAPI's "/v1/instances/{id}".
func openAPIPath(p string) string { return echoParam.ReplaceAllString(p, "{$1}") }
