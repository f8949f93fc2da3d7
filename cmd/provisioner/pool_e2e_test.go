package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

// warmPlans keeps n started, ready starter instances.
func warmPlans(n int) string {
	return strings.Replace(e2ePlans, "    n8n_image: docker.n8n.io/n8nio/n8n:2.8.4\n  - id: pro",
		fmt.Sprintf("    n8n_image: docker.n8n.io/n8nio/n8n:2.8.4\n    warm: %d\n  - id: pro", n), 1)
}

// pool returns the starter plan's pool as GET /v1/pool reports it.
func (e *e2e) pool() instances.PoolPlan {
	e.t.Helper()
	var body struct{ Plans []instances.PoolPlan }
	e.mustAPI("GET", "/v1/pool", e2eAdminKey, nil, 200, &body)
	for _, p := range body.Plans {
		if p.Plan == "starter" {
			return p
		}
	}
	e.t.Fatal("no starter plan in the pool report")
	return instances.PoolPlan{}
}

func (e *e2e) waitPoolReady(n int) {
	e.t.Helper()
	waitFor(e.t, 2*time.Minute, fmt.Sprintf("%d ready pool members", n), func() bool { return e.pool().Ready >= n })
}

// A burst of payments larger than the pool: the first ones take the ready members, the
// rest take the cold path, and every purchase ends with exactly one instance, one DNS
// record and one email. Then the pool is refilled. On both databases, since the claim's
// atomicity is each database's own (SKIP LOCKED, or SQLite's single writer).
func TestBurstLargerThanThePool(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			const warm, burst = 2, 5
			e := newE2E(t, e2eOptions{dialect: d, plans: warmPlans(warm)})
			e.start()
			e.addHost("nuc", 20)
			e.waitPoolReady(warm)
			members := e.world.Cloudflare.Records(e.world.CloudflareZoneID)
			if len(members) != 0 {
				t.Fatalf("ready pool members have DNS records: %+v", members)
			}

			var wg sync.WaitGroup
			for i := range burst {
				deliveries := e.checkout(fmt.Sprintf("cus_burst%d", i))
				wg.Add(1)
				go func() {
					defer wg.Done()
					e.deliver(deliveries...)
				}()
			}
			wg.Wait()
			paths := map[string]int{}
			for i := range burst {
				client := fmt.Sprintf("cus_burst%d", i)
				in := e.waitInstance(client, "active", 2*time.Minute)
				if list := e.instances(client); len(list) != 1 {
					t.Errorf("%s has %d instances", client, len(list))
				}
				if mails := e.emailsTo(client + "@example.com"); len(mails) != 1 {
					t.Errorf("%s got %d emails", client, len(mails))
				} else if err := e.login(in, client+"@example.com", passwordIn(t, mails[0])); err != nil {
					t.Errorf("%s: the emailed password does not log in: %v", client, err)
				}
				switch full := e.instance(in.ID); {
				case timelineHas(full, "assigned", "warm path"):
					paths["warm"]++
				case timelineHas(full, "cold_start", "cold path"):
					paths["cold"]++
				default:
					t.Errorf("%s: the timeline names no path: %+v", client, full.Timeline)
				}
			}
			if paths["warm"] != warm || paths["cold"] != burst-warm {
				t.Errorf("paths = %v, want %d warm and %d cold", paths, warm, burst-warm)
			}
			if records := e.world.Cloudflare.Records(e.world.CloudflareZoneID); len(records) != burst {
				t.Errorf("%d DNS records, want %d", len(records), burst)
			}
			e.waitPoolReady(warm)
			if cs, _ := e.world.Containers("nuc"); len(cs) != burst+warm {
				t.Errorf("%d containers, want %d customers' and %d pool members", len(cs), burst, warm)
			}
		})
	}
}

// Capacity counts pool members, and customers come first: a host full of members still
// sells (checkout counts a ready member as room), the customer of another plan takes a
// member's slot, and draining the host recycles the rest.
func TestPoolMembersHoldSlotsButCustomersComeFirst(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{plans: warmPlans(2), env: map[string]string{"PROVISIONER_POOL_INTERVAL": "1s"}})
	e.start()
	e.addHost("nuc", 2)
	e.waitPoolReady(2)
	var hostsList struct{ Hosts []struct{ Instances int } }
	e.mustAPI("GET", "/v1/hosts", e2eAdminKey, nil, 200, &hostsList)
	if hostsList.Hosts[0].Instances != 2 {
		t.Errorf("the host counts %d instances, want its 2 pool members", hostsList.Hosts[0].Instances)
	}

	e.purchase("cus_pro", "pro") // no pool for pro, no free slot
	e.waitInstance("cus_pro", "active", time.Minute)
	if p := e.pool(); p.Ready+p.Filling != 1 {
		t.Errorf("pool = %+v, want one member left after giving its slot up", p)
	}

	e.mustAPI("PATCH", "/v1/hosts/nuc", e2eAdminKey, map[string]any{"state": "draining"}, 200, nil)
	waitFor(t, 30*time.Second, "the drained host's members to be recycled", func() bool {
		cs, _ := e.world.Containers("nuc")
		return len(cs) == 1 // the customer's
	})
	if p := e.pool(); p.Ready != 0 || len(p.Hosts) != 0 {
		t.Errorf("pool after the drain = %+v", p)
	}
}
