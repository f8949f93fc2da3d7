// Package metrics holds the provisioner's own Prometheus metrics that belong to no single
// domain package: how long each provisioning saga step takes and how it ends, and the
// latency and errors of every call to an outside system (Proxmox, Cloudflare, the payment
// provider, SMTP).
//
// Label values are bounded by construction: steps come from the saga's fixed list, a
// dependency is one of a few names set where the adapters are wired, and an operation is
// an HTTP method with a route template (ids replaced by placeholders, see Routes), never a
// raw URL.
package metrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of an observed step or call.
const (
	OK    = "ok"
	Error = "error"
)

// Saga records the provisioning saga's step attempts; it satisfies instances.StepObserver.
type Saga struct {
	duration *prometheus.HistogramVec
}

// NewSaga registers provisioner_saga_step_duration_seconds on reg (nil: not exported).
func NewSaga(reg prometheus.Registerer) *Saga {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "provisioner_saga_step_duration_seconds",
		Help: "Provisioning saga step attempts by step and outcome (ok, error): how long each took, including the time spent waiting inside the step for something on its way (n8n starting).",
		// From a database write to n8n's first start on a slow host.
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200},
	}, []string{"step", "outcome"})
	return &Saga{duration: register(reg, h)}
}

// ObserveStep records one attempt of step that took d and ended with err (nil: done).
func (s *Saga) ObserveStep(step string, d time.Duration, err error) {
	s.duration.WithLabelValues(step, outcome(err)).Observe(d.Seconds())
}

// Dependencies records calls to outside systems.
type Dependencies struct {
	duration *prometheus.HistogramVec
}

// NewDependencies registers provisioner_dependency_request_duration_seconds on reg (nil:
// not exported).
func NewDependencies(reg prometheus.Registerer) *Dependencies {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "provisioner_dependency_request_duration_seconds",
		Help:    "Calls to outside systems by dependency (proxmox, cloudflare, stripe, mercadopago, smtp, alert_webhook), operation (HTTP method and route template, or the SMTP verb) and outcome (ok, error: a transport failure or a 5xx or 429 answer).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"dependency", "operation", "outcome"})
	return &Dependencies{duration: register(reg, h)}
}

// Observe records one call to dependency's operation that took d and ended with err.
func (m *Dependencies) Observe(dependency, operation string, d time.Duration, err error) {
	m.duration.WithLabelValues(dependency, operation, outcome(err)).Observe(d.Seconds())
}

func outcome(err error) string {
	if err != nil {
		return Error
	}
	return OK
}

// register adds c to reg, or returns the collector already registered under its name, so
// that several services (tests) may share one registry. nil reg leaves c unexported.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var dup prometheus.AlreadyRegisteredError
		if !errors.As(err, &dup) {
			panic(err) // two different metrics with one name: a programming error
		}
		return dup.ExistingCollector.(C)
	}
	return c
}
