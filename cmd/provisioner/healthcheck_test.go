package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthzURL(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080/healthz",
		"0.0.0.0:9000":   "http://127.0.0.1:9000/healthz",
		"[::]:8080":      "http://[::1]:8080/healthz",
		"10.0.0.2:8080":  "http://10.0.0.2:8080/healthz",
		"localhost:1234": "http://localhost:1234/healthz",
	} {
		if got, err := healthzURL(addr); err != nil || got != want {
			t.Errorf("healthzURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	for _, bad := range []string{"8080", "host:", "a:b:c"} {
		if _, err := healthzURL(bad); err == nil {
			t.Errorf("healthzURL(%q) accepted", bad)
		}
	}
}

// TestHealthcheckCommand runs the compose file's healthcheck against a real service, then
// against a listener that answers 503 and against nothing at all.
func TestHealthcheckCommand(t *testing.T) {
	t.Parallel()
	s := start(t, map[string]string{"PROVISIONER_DATA_DIR": t.TempDir()})
	check := func(url string) error {
		addr := strings.TrimPrefix(url, "http://")
		return run(context.Background(), []string{"provisioner", "healthcheck"},
			mapEnv(map[string]string{"PROVISIONER_ADDR": addr}), io.Discard, io.Discard)
	}
	if err := check(s.URL); err != nil {
		t.Fatalf("a healthy service: %v", err)
	}
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	if err := check(sick.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("a service answering 503: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()
	if err := check("http://" + gone); err == nil {
		t.Error("nothing listening, and the check passed")
	}
	err := run(context.Background(), []string{"provisioner", "healthcheck"},
		mapEnv(map[string]string{"PROVISIONER_ADDR": "8080"}), io.Discard, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "PROVISIONER_ADDR") {
		t.Errorf("a bad address: %v", err)
	}
	var help strings.Builder
	if err := run(context.Background(), []string{"provisioner", "healthcheck", "--help"}, mapEnv(nil), &help, io.Discard); err != nil ||
		!strings.HasPrefix(help.String(), "usage: provisioner healthcheck") {
		t.Errorf("--help: %v %q", err, help.String())
	}
	if err := run(context.Background(), []string{"provisioner", "healthcheck", "now"}, mapEnv(nil), io.Discard, io.Discard); err == nil {
		t.Error("an argument was accepted")
	}
}
