package sandbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkInstance measures what one instance costs in the sandbox: provision with the
// real n8nctl and fake docker, wait for readiness through the ingress, set up the owner
// with the guard credential, log in. AgentLatency and N8nReadyAfter are zero, so this is
// the sandbox's own overhead, the floor under any end-to-end test.
func BenchmarkInstance(b *testing.B) {
	e := setup(b, nil)
	h := e.addHost("nuc1")
	guard, _ := guardCredential()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		in := e.provision(h, fmt.Sprintf("bench%d", i))
		waitReady(b, in.client)
		if err := in.client.SetupOwner(ctx, in.owner, guard); err != nil {
			b.Fatal(err)
		}
		if err := in.client.Login(ctx, in.owner.Email, in.owner.Password); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConcurrent30 runs the same for 30 instances at once over 3 hosts and reports the
// wall time until all are set up.
func BenchmarkConcurrent30(b *testing.B) {
	e := setup(b, nil)
	hs := []Host{e.addHost("h1"), e.addHost("h2"), e.addHost("h3")}
	guard, _ := guardCredential()
	ctx := context.Background()
	round := 0
	var total time.Duration
	for b.Loop() {
		round++
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Go(func() {
				in, err := e.tryProvision(hs[i%3], fmt.Sprintf("r%dn%d", round, i))
				if err == nil {
					err = in.client.WaitReady(ctx, 5*time.Millisecond)
				}
				if err == nil {
					err = in.client.SetupOwner(ctx, in.owner, guard)
				}
				if err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(round), "ms/30-instances")
}
