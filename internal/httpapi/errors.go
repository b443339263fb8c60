package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/presence/presence/internal/presence"
)

// statusOf maps error codes to HTTP statuses.
var statusOf = map[string]int{
	presence.CodeBadRequest:   http.StatusBadRequest,
	presence.CodeInvalidPost:  http.StatusBadRequest,
	presence.CodeTooMany:      http.StatusBadRequest,
	presence.CodeNotFound:     http.StatusNotFound,
	presence.CodeUnauthorized: http.StatusUnauthorized,
	presence.CodeForbidden:    http.StatusForbidden,
	presence.CodeTooLarge:     http.StatusRequestEntityTooLarge,
	presence.CodeUnsupported:  http.StatusUnsupportedMediaType,
	presence.CodeUnavailable:  http.StatusServiceUnavailable,
	presence.CodeInternal:     http.StatusInternalServerError,
	presence.CodeInvalidToken: http.StatusForbidden,
	presence.CodeTokenExpired: http.StatusForbidden,
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers with err's code and message as JSON; errors that are
// not a presence.Error become a generic internal or unavailable error.
func writeError(w http.ResponseWriter, err error) {
	code := presence.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	writeErrorStatus(w, status, code, presence.ErrorMessage(err))
}

func writeErrorStatus(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
