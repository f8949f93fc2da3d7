package main

import (
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
)

// BenchmarkProvisioning200 buys 200 instances at once over 3 sandbox hosts and waits for
// all of them to be active and emailed. The provisioner runs as a child process, so its
// own CPU time (user + system, read from the kernel when it exits) is the control plane's
// cost, apart from the fakes and the host script, which run in this process.
//
//	go test -run - -bench Provisioning200 -benchtime 1x ./cmd/provisioner/
//
// Reported: seconds until all are active, and the control plane's CPU ms per instance.
func BenchmarkProvisioning200(b *testing.B) {
	for _, latency := range []time.Duration{2 * time.Second, 0} {
		b.Run(fmt.Sprintf("agent-latency-%s", latency), func(b *testing.B) {
			for b.Loop() {
				benchmarkPurchases(b, 200, latency)
			}
		})
	}
}

func benchmarkPurchases(b *testing.B, n int, latency time.Duration) {
	e := newE2E(b, e2eOptions{sandbox: sandbox.Config{AgentLatency: latency},
		// The production poll intervals: the tests' 5 ms exec-status polling would make
		// a 2 s agent call cost 400 requests.
		env: map[string]string{"PROVISIONER_HEALTH_TIMEOUT": "1m", "PROVISIONER_JOB_TIMEOUT": "10m",
			"PROVISIONER_PROXMOX_POLL_INTERVAL": "500ms", "PROVISIONER_HEALTH_POLL_INTERVAL": "1s"}})
	c := e.startChild()
	for _, name := range []string{"bench-a", "bench-b", "bench-c"} {
		e.addHost(name, n)
	}
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20) // the portal's own concurrency
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			e.purchase(fmt.Sprintf("cus_b%03d", i), "starter")
		})
	}
	wg.Wait()
	waitFor(e.t, 30*time.Minute, "every instance active", func() bool {
		var list struct{ Instances []instanceView }
		e.mustAPI("GET", fmt.Sprintf("/v1/instances?status=active&limit=%d", 200), e2eAdminKey, nil, http.StatusOK, &list)
		done := 0
		for _, in := range list.Instances {
			if in.Step == "emailed" {
				done++
			}
		}
		return done == n
	})
	wall := time.Since(start)
	c.cmd.Process.Signal(syscall.SIGTERM)
	<-c.done
	c.done <- nil
	st := c.cmd.ProcessState
	cpu := st.UserTime() + st.SystemTime()
	b.ReportMetric(wall.Seconds(), "s-until-all-active")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(n), "cpu-ms/instance")
}
