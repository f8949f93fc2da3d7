package main

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// alertHook is an ntfy server's root as the provisioner posts alerts to it: it takes the
// JSON publishing form (a topic is required) and keeps what it received.
type alertHook struct {
	mu    sync.Mutex
	posts []map[string]string
}

func (h *alertHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	if r.Method != http.MethodPost || r.URL.Path != "/" || json.NewDecoder(r.Body).Decode(&body) != nil || body["topic"] == "" {
		http.Error(w, `{"code":40009,"error":"invalid request"}`, http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.posts = append(h.posts, body)
	h.mu.Unlock()
	w.Write([]byte(`{"id":"x","event":"message"}`))
}

func (h *alertHook) received(title string) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, p := range h.posts {
		if strings.HasPrefix(p["title"], title) {
			out = append(out, p)
		}
	}
	return out
}

// scrape reads /metrics with the admin key, parsed.
func (e *e2e) scrape() map[string]*dto.MetricFamily {
	e.t.Helper()
	code, body := e.api("GET", "/metrics", e2eAdminKey, nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /metrics = %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		e.t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// series is one sample of a scrape: its labels and its value (a histogram's count).
type series struct {
	labels map[string]string
	value  float64
}

func seriesOf(f *dto.MetricFamily) []series {
	var out []series
	for _, m := range f.GetMetric() {
		s := series{labels: map[string]string{}}
		for _, l := range m.GetLabel() {
			s.labels[l.GetName()] = l.GetValue()
		}
		switch {
		case m.Histogram != nil:
			s.value = float64(m.GetHistogram().GetSampleCount())
		case m.Gauge != nil:
			s.value = m.GetGauge().GetValue()
		case m.Counter != nil:
			s.value = m.GetCounter().GetValue()
		}
		out = append(out, s)
	}
	return out
}

// sum adds the values of name's series whose labels include want.
func sum(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	total := 0.0
	for _, s := range seriesOf(families[name]) {
		match := true
		for k, v := range want {
			match = match && s.labels[k] == v
		}
		if match {
			total += s.value
		}
	}
	return total
}

// TestMetricsOfARealPurchase buys an instance while Cloudflare fails three times, then
// reads /metrics as Prometheus would: the saga's steps, the job queue, the webhook inbox
// and every outside system the flow called are there, with route templates for labels,
// and the stuck-step alert went to the webhook as well as to the operator's mailbox.
func TestMetricsOfARealPurchase(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			metricsOfARealPurchase(t, d)
		})
	}
}

func metricsOfARealPurchase(t *testing.T, dialect database.Dialect) {
	hook := &alertHook{}
	hookURL := serveHTTP(t, hook) + "/?topic=ops-alerts"
	testlog.Secret(t, hookURL) // the suite's leak check greps every log for it
	e := newE2E(t, e2eOptions{dialect: dialect, env: map[string]string{
		"PROVISIONER_ALERT_WEBHOOK_URL": hookURL,
		// The second failed DNS attempt alerts, so the flow sends one alert.
		"PROVISIONER_STEP_ALERT_AFTER": "1ms",
	}})
	e.start()
	e.addHost("nuc", 10)
	e.world.Cloudflare.FailNext(3, 500)
	e.purchase("cus_metrics", "starter")
	in := e.waitInstance("cus_metrics", "active", 60*time.Second)

	var m map[string]*dto.MetricFamily
	// River records a job's completion a moment after the job returns.
	waitFor(t, 30*time.Second, "the inbox processed and the job completed", func() bool {
		m = e.scrape()
		return sum(m, "provisioner_webhook_events", map[string]string{"outcome": "pending"}) == 0 &&
			sum(m, "provisioner_webhook_events", map[string]string{"provider": "stripe"}) > 0 &&
			sum(m, "provisioner_jobs", map[string]string{"kind": "instance_provision", "state": "completed"}) > 0
	})

	// The saga: every step once, DNS after three failed attempts.
	for _, step := range []string{"placed", "launched", "caps_verified", "healthy", "dns", "owner", "active", "emailed"} {
		if n := sum(m, "provisioner_saga_step_duration_seconds", map[string]string{"step": step, "outcome": "ok"}); n != 1 {
			t.Errorf("step %s: %v ok attempts, want 1", step, n)
		}
	}
	if n := sum(m, "provisioner_saga_step_duration_seconds", map[string]string{"step": "dns", "outcome": "error"}); n != 3 {
		t.Errorf("dns: %v failed attempts, want 3", n)
	}
	if n := sum(m, "provisioner_saga_step_duration_seconds", map[string]string{"outcome": "error"}); n != 3 {
		t.Errorf("%v failed attempts in all, want the 3 of dns", n)
	}

	// The queue: the provisioning job is done, nothing of its kind waits.
	if n := sum(m, "provisioner_jobs", map[string]string{"kind": "instance_provision", "state": "completed"}); n != 1 {
		t.Errorf("%v completed provisioning jobs, want 1", n)
	}
	if m["provisioner_job_oldest_age_seconds"] == nil || sum(m, "provisioner_job_oldest_age_seconds", map[string]string{"kind": "instance_provision"}) != 0 {
		t.Errorf("oldest waiting provisioning job: %v", seriesOf(m["provisioner_job_oldest_age_seconds"]))
	}

	// Webhooks: every delivery stored, every event processed (or ignored), by type.
	if n := sum(m, "provisioner_billing_webhooks_total", map[string]string{"provider": "stripe", "result": "stored"}); n == 0 {
		t.Error("no stored webhook delivery counted")
	}
	for _, s := range seriesOf(m["provisioner_webhook_events"]) {
		if s.labels["type"] == "" || (s.labels["outcome"] != "processed" && s.labels["outcome"] != "ignored") {
			_, failed := e.api("GET", "/v1/billing-events?status=failed", e2eAdminKey, nil)
			t.Errorf("inbox series %v; failed events: %s", s.labels, failed)
		}
	}

	// Outside systems: each one the flow used, with bounded operations.
	h, _ := e.world.Host("nuc")
	for dep, want := range map[string]string{
		"proxmox":       "/agent/exec",
		"cloudflare":    "/zones/{id}/dns_records",
		"stripe":        "/v1/",
		"smtp":          "send",
		"alert_webhook": "POST",
	} {
		if n := sum(m, "provisioner_dependency_request_duration_seconds", map[string]string{"dependency": dep, "outcome": "ok"}); n == 0 {
			t.Errorf("no successful call to %s recorded", dep)
		}
		found := false
		for _, s := range seriesOf(m["provisioner_dependency_request_duration_seconds"]) {
			if s.labels["dependency"] == dep && strings.Contains(s.labels["operation"], want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s operation like %q", dep, want)
		}
	}
	if n := sum(m, "provisioner_dependency_request_duration_seconds", map[string]string{"dependency": "cloudflare", "outcome": "error"}); n != 3 {
		t.Errorf("%v failed Cloudflare calls, want 3", n)
	}
	ids := regexp.MustCompile(`/(` + regexp.QuoteMeta(h.Node) + `|` + strconv.Itoa(h.VMID) + `|` +
		regexp.QuoteMeta(e.world.CloudflareZoneID) + `|sub_|cus_|evt_|ops-alerts)`)
	for _, s := range seriesOf(m["provisioner_dependency_request_duration_seconds"]) {
		if op := s.labels["operation"]; ids.MatchString(op) || strings.Contains(op, in.Slug) || strings.Contains(op, "?") {
			t.Errorf("operation %q carries an id", op)
		}
	}

	// The alert reached the webhook, by the topic the URL names, and the mailbox.
	alerts := hook.received("Provisioning stuck")
	if len(alerts) != 1 || alerts[0]["topic"] != "ops-alerts" || !strings.Contains(alerts[0]["message"], in.Slug) ||
		alerts[0]["text"] == "" || alerts[0]["content"] == "" {
		t.Errorf("webhook alerts = %v, want one stuck-step alert naming %s", alerts, in.Slug)
	}
	emails := 0
	for _, msg := range e.emailsTo(e2eOperator) {
		if strings.Contains(msg.Subject, "Provisioning stuck") && strings.Contains(msg.Text, in.Slug) {
			emails++
		}
	}
	if emails != 1 {
		t.Errorf("%d stuck-step emails, want 1", emails)
	}
	if strings.Contains(e.logs.String(), hookURL) || strings.Contains(e.logs.String(), "ops-alerts") {
		t.Error("the alert webhook's URL was logged")
	}
}
