package httpapi_test

import (
	"testing"
	"time"

	"github.com/presence/presence/internal/httpapi"
)

func httpapiConfig(pingInterval, pingTimeout time.Duration) httpapi.Config {
	return httpapi.Config{PingInterval: pingInterval, PingTimeout: pingTimeout}
}

// metricValue reads the value of a registered counter or gauge.
func metricValue(t *testing.T, a *app, name string) float64 {
	t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			if c := mf.Metric[0].GetCounter(); c != nil {
				return c.GetValue()
			}
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
