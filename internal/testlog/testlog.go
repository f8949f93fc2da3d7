// Package testlog gives tests a JSON slog logger whose output is kept for one last check:
// when PROVISIONER_TEST_LOG_DIR is set (scripts/test.sh sets it), every test's log lines
// are appended to a file there, and every secret a test declares is listed beside them, so
// that after the whole run the script can grep all the logs for all the secrets.
package testlog

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Buffer is a concurrency-safe log sink a test can read.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// New returns a debug-level JSON logger for t and the buffer it writes to. At cleanup the
// buffer is appended to the run's log file.
func New(t testing.TB) (*slog.Logger, *Buffer) {
	t.Helper()
	buf := &Buffer{}
	Keep(t, buf)
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// Keep appends what buf holds at t's cleanup to the run's log file (when enabled).
func Keep(t testing.TB, buf *Buffer) {
	t.Helper()
	t.Cleanup(func() { appendTo(t, "logs-"+sanitize(t.Name())+".jsonl", buf.String()) })
}

// Secret declares values that must never appear in any log of the run.
func Secret(t testing.TB, values ...string) {
	t.Helper()
	var lines []string
	for _, v := range values {
		if v != "" && !strings.Contains(v, "\n") {
			lines = append(lines, v)
		}
	}
	if len(lines) > 0 {
		appendTo(t, "secrets.txt", strings.Join(lines, "\n")+"\n")
	}
}

var mu sync.Mutex

func appendTo(t testing.TB, name, text string) {
	dir := os.Getenv("PROVISIONER_TEST_LOG_DIR")
	if dir == "" || text == "" {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Errorf("testlog: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Errorf("testlog: %v", err)
	}
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
}
