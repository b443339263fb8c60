package presence

import (
	"errors"
	"fmt"
)

// Error codes sent to clients in error frames and HTTP error bodies.
const (
	CodeBadRequest   = "bad_request"   // malformed JSON, missing fields, unknown type
	CodeInvalidPost  = "invalid_post"  // a post id outside the allowed charset or length
	CodeTooMany      = "too_many"      // a list over its limit
	CodeNotFound     = "not_found"     // no such route or resource
	CodeUnavailable  = "unavailable"   // the store cannot be reached
	CodeInternal     = "internal"      // anything else; details are logged, not sent
	CodeUnauthorized = "unauthorized"  // no or malformed credentials
	CodeForbidden    = "forbidden"     // credentials present but not accepted
	CodeTooLarge     = "too_large"     // a body over its limit
	CodeUnsupported  = "unsupported"   // a content type the endpoint does not take
	CodeInvalidToken = "invalid_token" // a post token missing, malformed or not signed by the site
	CodeTokenExpired = "token_expired" // a post token past its expiry
)

// ErrorCodes lists every code above, for metrics that show each one from
// the start.
var ErrorCodes = []string{
	CodeBadRequest, CodeInvalidPost, CodeTooMany, CodeNotFound, CodeUnavailable, CodeInternal,
	CodeUnauthorized, CodeForbidden, CodeTooLarge, CodeUnsupported, CodeInvalidToken, CodeTokenExpired,
}

// Error is an error meant for the client: its Code is stable and its Message
// says what was wrong in words a developer can act on.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrUnavailable marks errors of a store that cannot be reached right now.
var ErrUnavailable = errors.New("store unavailable")

// ErrorCode returns the client-facing code of err: the Code of an *Error in its
// chain, unavailable for ErrUnavailable, internal for anything else.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, ErrUnavailable) {
		return CodeUnavailable
	}
	return CodeInternal
}

// ErrorMessage returns the client-facing message of err; errors that are not
// an *Error get a generic message so internals never leak to clients.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	if errors.Is(err, ErrUnavailable) {
		return "the presence store is unavailable, try again shortly"
	}
	return "internal error"
}
