package billing

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"
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

// InboxCollector exports the webhook inbox by provider, event type and outcome, read from
// billing_events at scrape time: the table is the one every replica writes, so each
// reports all deliveries, and a restart loses no count. The type label is bounded by the
// event types the provider is set to send (its deliveries are signed, so no one else can
// add one); the outcome is pending, processed, ignored or failed.
type InboxCollector struct {
	db     *gorm.DB
	events *prometheus.Desc
}

// NewInboxCollector returns the inbox's collector on db.
func NewInboxCollector(db *gorm.DB) *InboxCollector {
	return &InboxCollector{db: db, events: prometheus.NewDesc("provisioner_webhook_events",
		"Webhook events stored in the inbox, by provider, type and outcome (pending: not processed yet or retrying; processed; ignored: a type billing does not act on; failed: needs the operator).",
		[]string{"provider", "type", "outcome"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *InboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.events }

// Collect implements prometheus.Collector. A failed query reports nothing rather than
// wrong counts; the scrape itself still succeeds.
func (c *InboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rows []struct {
		Provider, Type, Outcome string
		N                       int
	}
	err := c.db.WithContext(ctx).Table("billing_events").
		Select("provider, type, outcome, COUNT(*) AS n").Group("provider, type, outcome").Scan(&rows).Error
	if err != nil {
		return
	}
	counts := map[[3]string]int{} // an empty outcome is a pending event too
	for _, r := range rows {
		outcome := r.Outcome
		if outcome == "" {
			outcome = string(EventPending)
		}
		counts[[3]string{r.Provider, r.Type, outcome}] += r.N
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.events, prometheus.GaugeValue, float64(n), k[0], k[1], k[2])
	}
}
