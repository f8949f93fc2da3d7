package billing

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	webhooks *prometheus.CounterVec
	events   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provisioner_billing_webhooks_total",
			Help: "Webhook deliveries by provider and result: stored, duplicate, or why they were refused (unsigned, bad_signature, stale, too_large, malformed, unconfigured, store_failed).",
		}, []string{"provider", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provisioner_billing_events_total",
			Help: "Processing attempts of inbox events by provider and outcome: processed, ignored, failed (needs the operator), retry.",
		}, []string{"provider", "outcome"}),
	}
	if reg == nil {
		return m
	}
	// Several services may share a registry (tests): reuse what is registered.
	for _, c := range []**prometheus.CounterVec{&m.webhooks, &m.events} {
		if err := reg.Register(*c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if !errors.As(err, &dup) {
				panic(err) // two different metrics with one name: a programming error
			}
			*c = dup.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return m
}

func (m *metrics) webhook(provider, result string) {
	m.webhooks.WithLabelValues(provider, result).Inc()
}

func (m *metrics) event(provider string, outcome EventStatus) {
	m.events.WithLabelValues(provider, string(outcome)).Inc()
}
