package main

import (
	"strings"
	"testing"
	"time"
)

func TestUptimeConfiguration(t *testing.T) {
	t.Parallel()
	p, err := loadUptime(mapEnv(nil))
	if err != nil || p.Interval != time.Minute || p.Failures != 2 || p.Timeout != 10*time.Second || p.Public {
		t.Fatalf("defaults = %+v, %v", p, err)
	}
	p, err = loadUptime(mapEnv(map[string]string{"PROVISIONER_UPTIME_INTERVAL": "off", "PROVISIONER_UPTIME_PUBLIC": "true", "PROVISIONER_UPTIME_FAILURES": "3"}))
	if err != nil || p.Interval >= 0 || !p.Public || p.Failures != 3 {
		t.Fatalf("off, public, 3 = %+v, %v", p, err)
	}
	for name, bad := range map[string]string{
		"PROVISIONER_UPTIME_INTERVAL": "100ms", "PROVISIONER_UPTIME_FAILURES": "0",
		"PROVISIONER_UPTIME_TIMEOUT": "soon", "PROVISIONER_UPTIME_PUBLIC": "yes please",
	} {
		if _, err := loadUptime(mapEnv(map[string]string{name: bad})); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v, want an error naming the variable", name, bad, err)
		}
	}
}
