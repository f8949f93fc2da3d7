package alert_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/n8n-provisioner/n8n-provisioner/internal/alert"
	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// hooks is a fake of the three services' webhook endpoints, each checking a post the way
// the real one does: Slack's incoming webhook (/services/T…/B…/secret) needs "text",
// Discord's (/api/webhooks/id/token) needs "content" of at most 2,000 characters, and
// ntfy's root (/) needs a JSON body with a valid "topic". It keeps what each received and
// answers the next queued failures first.
type hooks struct {
	mu       sync.Mutex
	failures []failure
	tries    int
	received map[string][]map[string]any // by service
}

type failure struct {
	status     int
	retryAfter string
}

var ntfyTopic = regexp.MustCompile(`^[-_A-Za-z0-9]{1,64}$`)

func (h *hooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tries++
	if len(h.failures) > 0 {
		f := h.failures[0]
		h.failures = h.failures[1:]
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		http.Error(w, "fault", f.status)
		return
	}
	var body map[string]any
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&body) != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	str := func(k string) string { s, _ := body[k].(string); return s }
	var service string
	switch {
	case strings.HasPrefix(r.URL.Path, "/services/"):
		service = "slack"
		if str("text") == "" {
			http.Error(w, "no_text", http.StatusBadRequest)
			return
		}
	case strings.HasPrefix(r.URL.Path, "/api/webhooks/"):
		service = "discord"
		if c := str("content"); c == "" || utf8.RuneCountInString(c) > 2000 {
			http.Error(w, `{"content": ["Must be 2000 or fewer in length."]}`, http.StatusBadRequest)
			return
		}
	case r.URL.Path == "/":
		service = "ntfy"
		if !ntfyTopic.MatchString(str("topic")) {
			http.Error(w, `{"code":40009,"error":"invalid topic"}`, http.StatusBadRequest)
			return
		}
	default:
		http.NotFound(w, r)
		return
	}
	if h.received == nil {
		h.received = map[string][]map[string]any{}
	}
	h.received[service] = append(h.received[service], body)
	w.Write([]byte("ok"))
}

func (h *hooks) fail(f ...failure) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures = append(h.failures, f...)
}

func (h *hooks) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tries
}

func (h *hooks) got(service string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.received[service]
}

func setup(t *testing.T) (*hooks, *httptest.Server, *[]time.Duration) {
	t.Helper()
	t.Parallel()
	h := &hooks{}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv, &[]time.Duration{}
}

func webhook(t *testing.T, rawURL string, waits *[]time.Duration) *alert.Webhook {
	t.Helper()
	w, err := alert.New(alert.Config{URL: rawURL, Sleep: func(_ context.Context, d time.Duration) error {
		*waits = append(*waits, d)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestOnePayloadServesSlackDiscordAndNtfy(t *testing.T) {
	h, srv, waits := setup(t)
	long := strings.Repeat("é", 3000) // over Discord's limit
	for _, path := range []string{"/services/T000/B000/XXXXsecret", "/api/webhooks/123/tokensecret", "/?topic=ops-alerts"} {
		if err := webhook(t, srv.URL+path, waits).Send(context.Background(), "Provisioning failed", "instance x at step dns\n"+long); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	slack, discord, ntfy := h.got("slack"), h.got("discord"), h.got("ntfy")
	if len(slack) != 1 || len(discord) != 1 || len(ntfy) != 1 {
		t.Fatalf("received slack %d, discord %d, ntfy %d", len(slack), len(discord), len(ntfy))
	}
	if text := slack[0]["text"].(string); !strings.HasPrefix(text, "Provisioning failed\ninstance x at step dns") {
		t.Errorf("slack text = %.60q", text)
	}
	if ntfy[0]["topic"] != "ops-alerts" || ntfy[0]["title"] != "Provisioning failed" ||
		!strings.HasPrefix(ntfy[0]["message"].(string), "instance x") {
		t.Errorf("ntfy got topic %v, title %v", ntfy[0]["topic"], ntfy[0]["title"])
	}
	if len(*waits) != 0 {
		t.Errorf("waited %v with no failure", *waits)
	}
}

func TestTransientFailuresAreRetried(t *testing.T) {
	h, srv, waits := setup(t)
	h.fail(failure{status: 503}, failure{status: 429, retryAfter: "7"})
	if err := webhook(t, srv.URL+"/services/T/B/secret", waits).Send(context.Background(), "s", "b"); err != nil {
		t.Fatal(err)
	}
	if len(h.got("slack")) != 1 || h.count() != 3 {
		t.Errorf("delivered %d after %d tries, want 1 after 3", len(h.got("slack")), h.count())
	}
	// The first wait is the backoff, the second what Retry-After asked.
	if len(*waits) != 2 || (*waits)[0] != time.Second || (*waits)[1] != 7*time.Second {
		t.Errorf("waits = %v, want [1s 7s]", *waits)
	}
}

func TestGivesUpWithoutLeakingTheURL(t *testing.T) {
	h, srv, waits := setup(t)
	secretURL := srv.URL + "/services/T/B/very-secret-token"
	h.fail(failure{status: 502}, failure{status: 502}, failure{status: 502})
	err := webhook(t, secretURL, waits).Send(context.Background(), "s", "b")
	if apperr.KindOf(err) != apperr.Unavailable || h.count() != 3 {
		t.Fatalf("err = %v after %d tries, want unavailable after 3 (two retries)", err, h.count())
	}
	h.fail(failure{status: 404}) // a revoked hook: no retry mends it
	err = webhook(t, secretURL, waits).Send(context.Background(), "s", "b")
	if apperr.KindOf(err) != apperr.Invalid || h.count() != 4 {
		t.Fatalf("err = %v after %d tries, want invalid at once", err, h.count())
	}
	srv.Close()
	err = webhook(t, secretURL, waits).Send(context.Background(), "s", "b")
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("a closed server: %v", err)
	}
	if strings.Contains(err.Error(), "very-secret-token") || strings.Contains(err.Error(), "/services/") {
		t.Errorf("the error shows the URL: %v", err)
	}
}

func TestBadURLIsRefused(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"", "hooks.slack.com/services/T/B/secret-x", "ftp://example.com/secret-x", "https:///secret-x"} {
		_, err := alert.New(alert.Config{URL: raw})
		if apperr.KindOf(err) != apperr.Invalid || !strings.Contains(err.Error(), "PROVISIONER_ALERT_WEBHOOK_URL") || strings.Contains(err.Error(), "secret-x") {
			t.Errorf("New(%q) = %v", raw, err)
		}
	}
}

func TestHangingWebhookTimesOut(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	w, err := alert.New(alert.Config{URL: srv.URL + "/services/T/B/s", Retries: 1,
		HTTPClient: &http.Client{Timeout: 200 * time.Millisecond},
		Sleep:      func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(context.Background(), "s", "b"); apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("a hanging webhook: %v", err)
	}
}
