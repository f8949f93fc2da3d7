// Package alert posts the operator's alerts to a chat or push webhook, besides the email
// that package mail sends. One JSON payload serves Slack incoming webhooks (which read
// "text"), Discord webhooks ("content") and ntfy's JSON publishing ("topic", "title",
// "message"); each ignores the others' fields.
//
// The webhook URL is a credential (a Slack or Discord webhook URL is all it takes to post
// to the channel, an ntfy topic is its own password), so it never appears in an error,
// a log line or a metric label: errors name the host only.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// Config says where alerts go.
type Config struct {
	// URL is the webhook: a Slack incoming webhook, a Discord webhook, or an ntfy server's
	// root URL with the topic as a query parameter (https://ntfy.sh/?topic=my-alerts),
	// since ntfy reads JSON only at its root and wants the topic inside it.
	URL string
	// HTTPClient carries the posts; nil gets a client of its own with a 10 s timeout.
	HTTPClient *http.Client
	// Retries is how many times a transient failure (no answer, 5xx, 429) is tried again
	// (default 2); Backoff is the first wait, doubled each time (default 1 s), unless the
	// answer says Retry-After (capped at MaxBackoff).
	Retries int
	Backoff time.Duration
	// Sleep waits between tries (default a timer); tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// MaxBackoff caps one wait between tries, whatever Retry-After asks.
const MaxBackoff = 30 * time.Second

// maxText bounds the text of one alert: Discord refuses content over 2,000 characters.
const maxText = 1900

// Webhook posts alerts to one URL.
type Webhook struct {
	url   string
	host  string
	topic string
	hc    *http.Client
	cfg   Config
}

// New returns the webhook for cfg.URL. It returns an apperr.Invalid error naming
// PROVISIONER_ALERT_WEBHOOK_URL when the URL is not an absolute http(s) URL; the error
// never contains the URL.
func New(cfg Config) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, apperr.New(apperr.Invalid, "PROVISIONER_ALERT_WEBHOOK_URL: must be an absolute http(s) URL, e.g. https://hooks.slack.com/services/…")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	return &Webhook{url: cfg.URL, host: u.Host, topic: u.Query().Get("topic"), hc: cfg.HTTPClient, cfg: cfg}, nil
}

// String names the webhook by its host only, for logs.
func (w *Webhook) String() string { return "alert webhook at " + w.host }

// payload is what Slack, Discord and ntfy each read a part of.
type payload struct {
	Text    string `json:"text"`            // Slack
	Content string `json:"content"`         // Discord
	Topic   string `json:"topic,omitempty"` // ntfy: required there, from the URL's query
	Title   string `json:"title"`           // ntfy
	Message string `json:"message"`         // ntfy
}

// Send posts one alert. It tries a transient failure again Retries times, and returns an
// apperr.Unavailable error when every try failed, or apperr.Invalid when the webhook
// refused the alert (4xx: a revoked or mistyped URL), which no retry mends.
func (w *Webhook) Send(ctx context.Context, subject, body string) error {
	text := truncate(subject + "\n" + body)
	raw, err := json.Marshal(payload{Text: text, Content: text, Topic: w.topic, Title: truncate(subject), Message: truncate(body)})
	if err != nil {
		return err
	}
	wait := w.cfg.Backoff
	for try := 0; ; try++ {
		retryAfter, err := w.post(ctx, raw)
		var permanent *refused
		if err == nil || errors.As(err, &permanent) || try == w.cfg.Retries || ctx.Err() != nil {
			return err
		}
		if retryAfter > 0 {
			wait = retryAfter
		}
		if err := w.cfg.Sleep(ctx, min(wait, MaxBackoff)); err != nil {
			return apperr.Wrap(apperr.Unavailable, err, "%s: gave up", w)
		}
		wait *= 2
	}
}

// refused is a 4xx answer: the webhook will not take this alert, however often we try.
type refused struct{ status int }

func (r *refused) Error() string { return "HTTP " + strconv.Itoa(r.status) }

// post makes one try. It returns how long the server asked us to wait (429, 503).
func (w *Webhook) post(ctx context.Context, raw []byte) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(raw))
	if err != nil {
		return 0, apperr.New(apperr.Invalid, "%s: cannot build the request", w)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.hc.Do(req)
	if err != nil {
		// *url.Error quotes the URL: keep only the cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, apperr.Wrap(apperr.Unavailable, errors.New(redact(err.Error(), w.url)), "%s: no answer", w)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode < 300:
		return 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return retryAfter(resp.Header.Get("Retry-After")), apperr.Wrap(apperr.Unavailable,
			fmt.Errorf("HTTP %d", resp.StatusCode), "%s: answered %d", w, resp.StatusCode)
	default:
		return 0, apperr.Wrap(apperr.Invalid, &refused{resp.StatusCode},
			"%s refused the alert with %d: check PROVISIONER_ALERT_WEBHOOK_URL", w, resp.StatusCode)
	}
}

// retryAfter reads a Retry-After in seconds (the form Slack, Discord and ntfy send).
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// redact removes the URL from a transport error's text, should a dialer quote it.
func redact(msg, rawURL string) string {
	return strings.ReplaceAll(msg, rawURL, "[webhook URL]")
}

func truncate(s string) string {
	if utf8.RuneCountInString(s) <= maxText {
		return s
	}
	r := []rune(s)
	return string(r[:maxText-1]) + "…"
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
