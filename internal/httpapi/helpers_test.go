package httpapi_test

import (
	"time"

	"github.com/presence/presence/internal/httpapi"
)

func httpapiConfig(pingInterval, pingTimeout time.Duration) httpapi.Config {
	return httpapi.Config{PingInterval: pingInterval, PingTimeout: pingTimeout}
}
