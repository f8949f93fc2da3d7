package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRouteTemplate(t *testing.T) {
	t.Parallel()
	proxmox := Routes{Prefix: "/api2/json", IDsAfter: []string{"nodes", "qemu"}}
	cloudflare := Routes{Prefix: "/client/v4", IDsAfter: []string{"zones", "dns_records"}}
	stripe := Routes{IDsAfter: []string{"customers", "subscriptions", "events"}}
	for _, tc := range []struct {
		routes      Routes
		method, url string
		want        string
	}{
		{proxmox, "POST", "https://pve:8006/api2/json/nodes/pve/qemu/101/agent/exec", "POST /nodes/{id}/qemu/{id}/agent/exec"},
		{proxmox, "GET", "https://pve:8006/api2/json/nodes/nuc-two/qemu/9001/agent/exec-status?pid=42", "GET /nodes/{id}/qemu/{id}/agent/exec-status"},
		{proxmox, "GET", "https://pve:8006/api2/json/version", "GET /version"},
		{cloudflare, "PATCH", "https://api.cloudflare.com/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/dns_records/372e67954025e0ba6aaa6d586b9e0b59", "PATCH /zones/{id}/dns_records/{id}"},
		{cloudflare, "GET", "https://api.cloudflare.com/client/v4/zones/abc/dns_records?name=x.example.com", "GET /zones/{id}/dns_records"},
		{stripe, "GET", "https://api.stripe.com/v1/subscriptions/sub_1MowQVLkdIwHu7ixeRlqHVzs", "GET /v1/subscriptions/{id}"},
		{stripe, "POST", "https://api.stripe.com/v1/billing_portal/sessions", "POST /v1/billing_portal/sessions"},
		// A path no list knows still yields no id: it is not a plain word.
		{stripe, "GET", "https://api.stripe.com/v1/prices/price_ABC123", "GET /v1/prices/{id}"},
		{stripe, "GET", "https://api.stripe.com/v1/a/b/c/d/e/f/g/h/i/j", "GET /v1/a/b/c/d/e/f/g/..."},
		{stripe, "GET", "https://api.stripe.com/", "GET /"},
		{Routes{Opaque: true}, "POST", "https://ntfy.sh/mysecrettopic", "POST"},
	} {
		r := httptest.NewRequest(tc.method, tc.url, nil)
		if got := tc.routes.Template(r); got != tc.want {
			t.Errorf("Template(%s %s) = %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}

func TestTransportRecordsOutcomes(t *testing.T) {
	t.Parallel()
	var status = map[string]int{"/ok/1": 200, "/missing/2": 404, "/busy/3": 429, "/down/4": 503}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status[r.URL.Path])
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	deps := NewDependencies(reg)
	hc := &http.Client{Transport: deps.Transport("cloudflare", Routes{}, nil), Timeout: 10 * time.Second}
	for path := range status {
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	if _, err := hc.Get(closed.URL + "/gone/5"); err == nil {
		t.Fatal("a closed server answered")
	}

	counts := map[string]uint64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			counts[strings.Join(labels, " ")] = m.GetHistogram().GetSampleCount()
		}
	}
	for key, n := range map[string]uint64{
		"cloudflare GET /ok/{id} ok":      1,
		"cloudflare GET /missing/{id} ok": 1, // the dependency answered: the adapter decides
		"cloudflare GET /busy/{id} error": 1,
		"cloudflare GET /down/{id} error": 1,
		"cloudflare GET /gone/{id} error": 1,
	} {
		if counts[key] != n {
			t.Errorf("%s: %d observations, want %d (all: %v)", key, counts[key], n, counts)
		}
	}
	if len(counts) != 5 {
		t.Errorf("series: %v", counts)
	}
}

func TestSagaAndSharedRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, b := NewSaga(reg), NewSaga(reg) // two services on one registry (tests) share the metric
	a.ObserveStep("dns", time.Second, nil)
	b.ObserveStep("dns", time.Second, errors.New("cloudflare down"))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || len(families[0].GetMetric()) != 2 {
		t.Errorf("gathered %v, want dns/ok and dns/error", families)
	}
}
