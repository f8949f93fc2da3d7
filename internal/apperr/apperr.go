// Package apperr holds the few error kinds the whole service speaks: adapters translate
// wire statuses into them, the domain returns them, and the HTTP layer maps each kind to a
// status in one table. A public message travels beside the wrapped cause so that clients
// never see internal error text.
package apperr

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it.
type Kind string

const (
	Internal     Kind = "internal"     // a bug or an unexpected failure; retry may help
	Invalid      Kind = "invalid"      // the input is wrong; retrying the same input never helps
	NotFound     Kind = "not_found"    // the thing asked for does not exist
	Conflict     Kind = "conflict"     // the request clashes with the current state
	Unavailable  Kind = "unavailable"  // a dependency is down or busy; retry later
	Unauthorized Kind = "unauthorized" // no or bad credentials
	Forbidden    Kind = "forbidden"    // credentials valid, but not for this
	TooLarge     Kind = "too_large"    // the request body is over its limit
)

// Error is a domain error: a kind, a message safe to show a client, and the cause.
type Error struct {
	Kind    Kind
	Message string // public: shown to API clients and operators
	Err     error  // private: logged, never sent to a client
}

func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Message
	case e.Message == "":
		return e.Err.Error()
	default:
		return e.Message + ": " + e.Err.Error()
	}
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of kind k whose public message is fmt.Sprintf(format, args...).
func New(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error of kind k with a public message and a private cause.
func Wrap(k Kind, err error, format string, args ...any) error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// Message returns the public message of err, or a generic one for internal errors so
// that no internal text leaks.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Message != "" && e.Kind != Internal {
		return e.Message
	}
	return "internal error"
}
