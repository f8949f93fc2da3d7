package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

func TestPanicIsA500LoggedThroughSlog(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := New(Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	s.echo.GET("/boom", func(echo.Context) error { panic("nil map in a handler") })

	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/boom", nil))
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "nil map") {
		t.Fatalf("response %d %s, want a 500 that hides the panic", rec.Code, rec.Body)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("a log line is not JSON: %q", line)
		}
		if entry["msg"] == "handler panicked" {
			found = true
			stack, _ := entry["stack"].(string)
			if entry["level"] != "ERROR" || entry["route"] != "/boom" || entry["error"] != "nil map in a handler" ||
				entry["request_id"] == "" || !strings.Contains(stack, "goroutine") {
				t.Errorf("panic log = %v", entry)
			}
		}
	}
	if !found {
		t.Errorf("no panic in the log:\n%s", logs.String())
	}
}
