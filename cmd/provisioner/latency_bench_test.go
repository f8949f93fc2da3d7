package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
)

// BenchmarkWebhookToEmail measures what a paying customer waits: from the signed webhook
// to the credentials email, on the production retry, wait and takeover policy (no test
// setting at all), with the sandbox's n8n at real n8n's shape: ready 2 s after its
// container starts, REST routes mounted 1.5 s later. Target: median ≤ 2 + 1.5 + 1 s.
//
//	go test -run - -bench WebhookToEmail -benchtime 1x ./cmd/provisioner/
//
// Variants: each database with no fault (20 purchases one after the other); Cloudflare
// answering 500 three times per purchase; and a SIGKILL of the provisioner while
// `n8nctl provision` runs, measured from the restart.
func BenchmarkWebhookToEmail(b *testing.B) {
	for _, d := range []database.Dialect{database.SQLite, database.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			for range b.N {
				e := latencyWorld(b, d)
				e.start()
				e.addHost("nuc", 100)
				reportLatencies(b, latencies(e, 20, nil))
			}
		})
		b.Run(string(d)+"/cloudflare_500x3", func(b *testing.B) {
			for range b.N {
				e := latencyWorld(b, d)
				e.start()
				e.addHost("nuc", 100)
				reportLatencies(b, latencies(e, 5, func() { e.world.Cloudflare.FailNext(3, 500) }))
			}
		})
		b.Run(string(d)+"/crash_during_launch", func(b *testing.B) {
			for range b.N {
				reportLatencies(b, crashLatencies(b, d, 3))
			}
		})
	}
}

// BenchmarkWarmPool measures the warm pool against the cold path in one run, with the
// sandbox's n8n at real n8n's figures (ready 6 s after its container starts, REST routes
// 3 s later): 20 purchases of a plan with a warm pool of 2, each as soon as a member is
// ready, and 20 of a plan without one between them. Target for the warm path: ≤ 2 s.
//
//	go test -run - -bench WarmPool -benchtime 1x ./cmd/provisioner/
func BenchmarkWarmPool(b *testing.B) {
	for _, d := range []database.Dialect{database.SQLite, database.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			for range b.N {
				e := newE2E(b, e2eOptions{dialect: d, plans: warmPlans(2), sandbox: sandbox.Config{
					N8nReadyAfter: 6 * time.Second,
					ConfigureN8n:  func(_, _ string, srv *n8ntest.Server) { srv.RESTLag = 3 * time.Second },
				}})
				e.start()
				e.addHost("nuc", 100)
				var warm, cold []time.Duration
				for i := range 20 {
					e.waitPoolReady(1)
					warm = append(warm, buyLatency(e, fmt.Sprintf("cus_warm%02d", i), "starter"))
					cold = append(cold, buyLatency(e, fmt.Sprintf("cus_cold%02d", i), "pro"))
				}
				b.Log("warm path:")
				reportLatencies(b, warm)
				b.Log("cold path:")
				reportPath(b, "cold", cold)
			}
		})
	}
}

// buyLatency buys one instance of plan for client and returns its webhook-to-email time.
func buyLatency(e *e2e, client, plan string) time.Duration {
	_, events := e.checkoutPlan(client, plan)
	start := time.Now()
	e.deliver(events...)
	return e.waitEmail(client) - time.Duration(start.UnixNano())
}

func latencyWorld(b *testing.B, d database.Dialect) *e2e {
	return newE2E(b, e2eOptions{dialect: d, sandbox: sandbox.Config{
		N8nReadyAfter: 2 * time.Second,
		ConfigureN8n:  func(_, _ string, srv *n8ntest.Server) { srv.RESTLag = 1500 * time.Millisecond },
	}})
}

// latencies buys n instances one after the other, calling before ahead of each, and
// returns each one's webhook-to-email time.
func latencies(e *e2e, n int, before func()) []time.Duration {
	var out []time.Duration
	for i := range n {
		client := fmt.Sprintf("cus_lat%02d", i)
		events := e.checkout(client)
		if before != nil {
			before()
		}
		start := time.Now()
		e.deliver(events...)
		out = append(out, e.waitEmail(client)-time.Duration(start.UnixNano()))
	}
	return out
}

// crashLatencies kills the provisioner during each launch and returns the time from its
// restart to the email.
func crashLatencies(b *testing.B, d database.Dialect, n int) []time.Duration {
	e := latencyWorld(b, d)
	running := e.startChild()
	h := e.addHost("nuc", 100)
	var out []time.Duration
	for i := range n {
		client := fmt.Sprintf("cus_crash%02d", i)
		e.hangLaunch(h, client)
		running.kill(b)
		start := time.Now()
		running = e.startChild()
		out = append(out, e.waitEmail(client)-time.Duration(start.UnixNano()))
	}
	return out
}

// waitEmail waits for client's credentials email and returns when it was seen (unix ns).
func (e *e2e) waitEmail(client string) time.Duration {
	var at time.Time
	waitFor(e.t, 5*time.Minute, client+"'s credentials email", func() bool {
		at = time.Now()
		return len(e.emailsTo(client+"@example.com")) > 0
	})
	return time.Duration(at.UnixNano())
}

func reportLatencies(b *testing.B, ds []time.Duration) {
	reportPath(b, "", ds)
	b.ReportMetric(0, "ns/op")
}

// reportPath reports the median and maximum of ds as metrics named after path.
func reportPath(b *testing.B, path string, ds []time.Duration) {
	slices.Sort(ds)
	median := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		median = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	if path != "" {
		path += "_"
	}
	b.ReportMetric(median.Seconds(), path+"median_s")
	b.ReportMetric(ds[len(ds)-1].Seconds(), path+"max_s")
	b.Logf("webhook → email over %d purchases: median %.2fs, max %.2fs, min %.2fs", len(ds), median.Seconds(), ds[len(ds)-1].Seconds(), ds[0].Seconds())
}
