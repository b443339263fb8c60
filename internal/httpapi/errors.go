package httpapi

import (
	"net/http"

	"github.com/presence/presence/internal/health"
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
	health.WriteJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}
