package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/presence/presence/internal/presence"
)

// statusOf maps error codes to HTTP statuses. api/openapi.yaml documents
// each status per path, and TestOpenAPI_EveryDocumentedStatus fails on a
// status the spec leaves out, so a change here is a change of the spec.
// Token errors are 403, as README promises for a missing or bad post token;
// 401 is kept for the publish key.
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

// errorBody is the one error shape of the API, {"error":{"code","message"}},
// on every path and for refused WebSocket handshakes too.
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
	// The status is out already; a client that went away mid-body has
	// nothing left to be told.
	_ = json.NewEncoder(w).Encode(v)
}
