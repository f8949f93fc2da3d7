package httpapi

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// statusOf maps each domain error kind to its HTTP status: the one table of it.
var statusOf = map[apperr.Kind]int{
	apperr.Invalid:      http.StatusBadRequest,
	apperr.Unauthorized: http.StatusUnauthorized,
	apperr.Forbidden:    http.StatusForbidden,
	apperr.NotFound:     http.StatusNotFound,
	apperr.Conflict:     http.StatusConflict,
	apperr.TooLarge:     http.StatusRequestEntityTooLarge,
	apperr.Unavailable:  http.StatusServiceUnavailable,
	apperr.Internal:     http.StatusInternalServerError,
}

// echoErrors describes the errors echo's router raises itself.
var echoErrors = map[int]struct{ code, message string }{
	http.StatusNotFound:              {"not_found", "no such route"},
	http.StatusMethodNotAllowed:      {"method_not_allowed", "method not allowed on this route"},
	http.StatusRequestEntityTooLarge: {"too_large", "request body is too large"},
	http.StatusBadRequest:            {"invalid", "bad request"},
}

// describe returns the status, code and public message of err.
func describe(err error) (status int, code, message string) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		if pub, ok := echoErrors[he.Code]; ok {
			return he.Code, pub.code, pub.message
		}
		return http.StatusInternalServerError, string(apperr.Internal), apperr.Message(nil)
	}
	kind := apperr.KindOf(err)
	return statusOf[kind], string(kind), apperr.Message(err)
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// handleError writes every error as {"error":{"code","message"}}. Only the public message
// of a domain error reaches the client; the cause of a 5xx is logged with the request id.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var body errorBody
	status, code, message := describe(err)
	body.Error.Code, body.Error.Message = code, message
	if status >= 500 {
		s.log.ErrorContext(c.Request().Context(), "request failed",
			"request_id", requestID(c), "route", c.Path(), "error", err.Error())
	}
	if status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="n8n-provisioner"`)
	}
	if err := c.JSON(status, body); err != nil {
		s.log.Warn("writing error response", "request_id", requestID(c), "error", err.Error())
	}
}

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}
