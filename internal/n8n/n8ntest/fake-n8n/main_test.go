package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServesAndWritesPortFile(t *testing.T) {
	t.Parallel()
	portFile := filepath.Join(t.TempDir(), "acme.addr")
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	var stderr bytes.Buffer
	go func() {
		errc <- serve(ctx, []string{"--port-file", portFile, "--ready-after", "1h"}, &stderr, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-errc:
		t.Fatalf("serve: %v", err)
	}

	b, err := os.ReadFile(portFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != addr || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("port file %q, listening on %q", got, addr)
	}
	entries, _ := os.ReadDir(filepath.Dir(portFile))
	if len(entries) != 1 {
		t.Errorf("temporary files left beside the port file: %v", entries)
	}

	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/healthz"); got != 200 {
		t.Errorf("/healthz → %d", got)
	}
	if got := get("/healthz/readiness"); got != 503 {
		t.Errorf("/healthz/readiness with --ready-after 1h → %d, want 503", got)
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
}

func TestRejectsBadArguments(t *testing.T) {
	t.Parallel()
	tests := [][]string{
		{"--ready-after", "soon"},
		{"extra"},
		{"--addr", "not-an-address"},
		{"--port-file", filepath.Join(t.TempDir(), "missing-dir", "addr")},
	}
	for _, args := range tests {
		if err := run(t.Context(), args, io.Discard); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
