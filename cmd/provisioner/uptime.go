package main

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

// loadUptime reads the uptime probe's policy: PROVISIONER_UPTIME_INTERVAL (1m, or off),
// _FAILURES (2 in a row make an instance degraded), _TIMEOUT (10s a probe) and _PUBLIC
// (also probe the public URL).
func loadUptime(getenv func(string) string) (instances.UptimePolicy, error) {
	env := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var p instances.UptimePolicy
	var err error
	if v := env("PROVISIONER_UPTIME_INTERVAL", "1m"); v == "off" {
		p.Interval = -1
	} else if p.Interval, err = time.ParseDuration(v); err != nil || p.Interval < time.Second {
		return p, envError("PROVISIONER_UPTIME_INTERVAL", errors.New("must be a duration of at least 1s, such as 1m, or off"))
	}
	if p.Failures, err = strconv.Atoi(env("PROVISIONER_UPTIME_FAILURES", "2")); err != nil || p.Failures < 1 || p.Failures > 100 {
		return p, envError("PROVISIONER_UPTIME_FAILURES", errors.New("must be a whole number of probes, 1-100"))
	}
	if p.Timeout, err = time.ParseDuration(env("PROVISIONER_UPTIME_TIMEOUT", "10s")); err != nil || p.Timeout <= 0 {
		return p, envError("PROVISIONER_UPTIME_TIMEOUT", errors.New("must be a positive duration such as 10s"))
	}
	if p.Public, err = parseBool(env("PROVISIONER_UPTIME_PUBLIC", "false")); err != nil {
		return p, envError("PROVISIONER_UPTIME_PUBLIC", err)
	}
	return p, nil
}

// probeMetrics exposes the uptime passes: provisioner_instance_up, one series per active
// instance (labelled by slug and host; an instance leaves the set when it stops being
// active, so the series are bounded by the paying fleet), and the probes' latency as a
// histogram per host (bounded by the hosts).
type probeMetrics struct {
	latency *prometheus.HistogramVec
	upDesc  *prometheus.Desc

	mu   sync.Mutex
	last []instances.ProbeResult
}

func newProbeMetrics() *probeMetrics {
	return &probeMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "provisioner_probe_duration_seconds",
			Help:    "Latency of the uptime probes of n8n readiness through each host's ingress.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"host"}),
		upDesc: prometheus.NewDesc("provisioner_instance_up",
			"1 when the active instance's n8n answered its last uptime probe, 0 when it did not.", []string{"slug", "host"}, nil),
	}
}

// Probed keeps the pass's results for the next scrape and observes their latency.
func (m *probeMetrics) Probed(results []instances.ProbeResult) {
	for _, r := range results {
		if r.Latency > 0 {
			m.latency.WithLabelValues(r.Host).Observe(r.Latency.Seconds())
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = append([]instances.ProbeResult(nil), results...)
}

// Describe implements prometheus.Collector.
func (m *probeMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.upDesc
	m.latency.Describe(ch)
}

// Collect implements prometheus.Collector: the last pass, whole.
func (m *probeMetrics) Collect(ch chan<- prometheus.Metric) {
	m.latency.Collect(ch)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.last {
		up := 0.0
		if r.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(m.upDesc, prometheus.GaugeValue, up, r.Slug, r.Host)
	}
}
