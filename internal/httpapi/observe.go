package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provisioner_http_requests_total",
			Help: "HTTP requests served, by method, route template and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "provisioner_http_request_duration_seconds",
			Help:    "HTTP request latency, by method, route template and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route", "status"}),
	}
	// A registry may be shared with other packages: register what is not there yet.
	for _, c := range []prometheus.Collector{m.requests, m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if !errors.As(err, &dup) {
				panic(err) // a programming error: two different metrics with one name
			}
		}
	}
	return m
}

func (s *Server) metricsHandler() echo.HandlerFunc { return echo.WrapHandler(s.Metrics()) }

// Metrics serves the Prometheus metrics without authentication, for a listener of its
// own on an address only the operator's network reaches (PROVISIONER_METRICS_ADDR).
func (s *Server) Metrics() http.Handler {
	return promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
}

// observe logs each request and counts it in the metrics. The route label is the route
// template ("/v1/instances/:id"), never the raw path, so hostile paths cannot grow the
// metric set. Bodies and headers are never logged: they carry keys and secrets.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err) // write the error response now, so its status is the one recorded
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		elapsed := time.Since(start)
		labels := prometheus.Labels{"method": c.Request().Method, "route": route, "status": strconv.Itoa(status)}
		s.metrics.requests.With(labels).Inc()
		s.metrics.latency.With(labels).Observe(elapsed.Seconds())
		s.log.InfoContext(c.Request().Context(), "request",
			"request_id", requestID(c), "method", c.Request().Method, "route", route,
			"status", status, "duration_ms", float64(elapsed.Microseconds())/1000)
		return nil
	}
}
