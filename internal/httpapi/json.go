package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// maxBodyBytes caps every request body: nothing this API takes comes near it.
const maxBodyBytes = 1 << 20

// limitBody refuses bodies over max before reading them when the length is declared,
// and stops reading at max when it is not.
func limitBody(max int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if r.ContentLength > max {
				return apperr.New(apperr.TooLarge, "request body is over %d bytes", max)
			}
			r.Body = http.MaxBytesReader(c.Response(), r.Body, max)
			return next(c)
		}
	}
}

// decode reads one JSON object into v, refusing unknown fields, trailing data and
// oversized bodies, with an error that tells the client what to fix.
func decode(c echo.Context, v any) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct != "" && !strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
		return apperr.New(apperr.Invalid, "Content-Type must be application/json")
	}
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data")
	}
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return apperr.New(apperr.TooLarge, "request body is over %d bytes", tooBig.Limit)
	case errors.Is(err, io.EOF):
		return apperr.New(apperr.Invalid, "request body is empty: a JSON object is required")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return apperr.New(apperr.Invalid, "request body is not valid JSON")
	case errors.As(err, &typ):
		return apperr.New(apperr.Invalid, "field %q must be of type %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return apperr.New(apperr.Invalid, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return apperr.New(apperr.Invalid, "request body is not a valid JSON object")
}
