package instances

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

var warmPlan = plans.Plan{ID: "starter", CPUs: 0.5, MemoryMB: 1024, N8nImage: plans.DefaultN8nImage, Warm: 2}

// fillPool runs the refill job, then every fill job it started, as River would.
func (st *sagaTest) fillPool() {
	st.t.Helper()
	if err := st.service().refill(st.ctx); err != nil {
		st.t.Fatal(err)
	}
	for _, args := range st.takeJobs() {
		fill, ok := args.(PoolFillArgs)
		if !ok {
			continue
		}
		job := &river.Job[PoolFillArgs]{JobRow: &rivertype.JobRow{ID: 1, Attempt: 1}, Args: fill}
		for {
			err := (&fillWorker{s: st.service()}).Work(st.ctx, job)
			var snooze *river.JobSnoozeError
			if errors.As(err, &snooze) {
				st.clock.Advance(snooze.Duration)
				continue
			}
			var cancel *river.JobCancelError
			if err != nil && !errors.As(err, &cancel) {
				st.t.Fatalf("fill %s: %v", fill.InstanceID, err)
			}
			break
		}
	}
}

// takeJobs returns the jobs inserted since the last call.
func (st *sagaTest) takeJobs() []river.JobArgs {
	st.world.mu.Lock()
	defer st.world.mu.Unlock()
	jobs := st.world.inserted
	st.world.inserted = nil
	return jobs
}

func (st *sagaTest) members() []Instance {
	st.t.Helper()
	list, err := st.cfg.Store.PoolMembers(st.ctx)
	if err != nil {
		st.t.Fatal(err)
	}
	return list
}

// pay reconciles a paid subscription of the starter plan for client, as billing does.
func (st *sagaTest) pay(sub, client string) Instance {
	st.t.Helper()
	if sub != "sub_1" {
		st.exec(`INSERT INTO subscriptions (id, provider, provider_subscription_id, plan_id, status, status_since,
			provider_updated_at, fetched_at, created_at, updated_at) VALUES (?, 'stripe', ?, 'starter', 'active',
			CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)`, sub, "p"+sub)
	}
	err := st.service().Reconcile(st.ctx, Subscription{ID: sub, ClientID: client, Email: client + "@example.com",
		Name: "Grace Hopper", Locale: "en", PlanID: "starter", Run: true})
	if err != nil {
		st.t.Fatal(err)
	}
	list, _ := st.cfg.Store.BySubscription(st.ctx, sub)
	st.id = list[len(list)-1].ID
	return list[len(list)-1]
}

func (st *sagaTest) exec(q string, args ...any) {
	st.t.Helper()
	if err := st.cfg.Store.db.Exec(q, args...).Error; err != nil {
		st.t.Fatal(err)
	}
}

// A pool member runs the host phase only: its container is started, capped and ready,
// with its own key and setup guard, but it has no client, no DNS name and no owner.
func TestPoolMembersStopAfterTheHostPhase(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{warmPlan})
	st.fillPool()
	members := st.members()
	if len(members) != 2 {
		t.Fatalf("members = %d, want the target 2", len(members))
	}
	keys := map[string]bool{}
	for _, m := range members {
		if m.Status != Warm || m.Step != stepHealthy || m.ClientID != "" || m.Host == nil {
			t.Errorf("member %s: %s at %q, client %q", m.ID, m.Status, m.Step, m.ClientID)
		}
		c := st.world.containers[m.Slug]
		if c["SETUP_AUTH_USERS"] == "" || c["N8N_ENCRYPTION_KEY"] == "" {
			t.Errorf("member %s launched without its setup guard or key: %v", m.ID, c)
		}
		keys[c["N8N_ENCRYPTION_KEY"]] = true
	}
	if len(keys) != 2 {
		t.Error("two members share an encryption key")
	}
	if len(st.world.records) != 0 || len(st.world.owners) != 0 || len(st.world.emails) != 0 {
		t.Errorf("a pool member got a customer's part: records %v, owners %d, emails %d", st.world.records, len(st.world.owners), len(st.world.emails))
	}
	st.fillPool() // at target: nothing more
	if n := len(st.members()); n != 2 {
		t.Errorf("a second refill at target made %d members", n)
	}
}

// A payment takes a ready member: the hand-over (DNS, owner, email) is all that is left,
// the timeline says the warm path was taken, and the pool is refilled.
func TestPaymentTakesAReadyMember(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{warmPlan})
	st.fillPool()
	ready := st.members()
	in := st.pay("sub_1", "cus_1")
	if in.ID != ready[0].ID || in.Status != Provisioning || in.ClientID != "cus_1" || deref(in.SubscriptionID) != "sub_1" {
		t.Fatalf("claimed %s (%s, client %q), want the oldest member %s", in.ID, in.Status, in.ClientID, ready[0].ID)
	}
	jobs := st.takeJobs()
	if !hasJob(jobs, ProvisionArgs{InstanceID: in.ID}) || !hasJob(jobs, PoolRefillArgs{}) {
		t.Errorf("jobs after the claim = %v, want the hand-over and a refill", jobs)
	}
	if _, err := st.run(); err != nil {
		t.Fatal(err)
	}
	in = st.instance()
	if in.Status != Active || len(st.world.emails) != 1 || st.world.records[in.Slug+".n8n.example.com"] == "" {
		t.Fatalf("after the hand-over: %s, emails %d, records %v", in.Status, len(st.world.emails), st.world.records)
	}
	if st.world.calls["provision"] != 2 {
		t.Errorf("containers launched = %d, want the 2 members only: the customer's was started before they paid", st.world.calls["provision"])
	}
	if len(st.events("assigned")) != 1 || len(st.events("cold_start")) != 0 {
		t.Errorf("timeline: assigned %q, cold %q", st.events("assigned"), st.events("cold_start"))
	}
	st.fillPool()
	if n := len(st.members()); n != 2 {
		t.Errorf("after the refill the pool has %d members, want 2", n)
	}
}

// With the pool empty, a payment takes the cold path and says so.
func TestEmptyPoolFallsBackToTheColdPath(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{warmPlan})
	in := st.pay("sub_1", "cus_1")
	if in.Status != Pending || len(st.events("cold_start")) != 1 {
		t.Fatalf("instance %s, cold events %q", in.Status, st.events("cold_start"))
	}
	if _, err := st.run(); err != nil || st.instance().Status != Active {
		t.Fatalf("cold path: %v, %s", err, st.instance().Status)
	}
}

// Members that no longer fit their plan are recycled, never handed out: here the plan's
// n8n image changed.
func TestPlanChangeRecyclesMembers(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{warmPlan})
	st.fillPool()
	old := st.members()
	upgraded := warmPlan
	upgraded.N8nImage = "docker.n8n.io/n8nio/n8n:2.9.0"
	st.cfg.Plans = plans.Plans{upgraded}
	st.fillPool()
	for _, m := range old {
		got, _ := st.cfg.Store.Get(st.ctx, m.ID)
		if got.Status != Deleted || st.world.containers[m.Slug] != nil {
			t.Errorf("old member %s is %s, container kept: %t", m.ID, got.Status, st.world.containers[m.Slug] != nil)
		}
	}
	fresh := st.members()
	if len(fresh) != 2 || fresh[0].N8nImage != upgraded.N8nImage {
		t.Fatalf("after the change: %d members", len(fresh))
	}
	if in := st.pay("sub_1", "cus_1"); in.N8nImage != upgraded.N8nImage {
		t.Errorf("the customer got %s", in.N8nImage)
	}
}

// A failed pool member alerts the operator as a pool member (no client to name) and is
// not retried by hand: the next refill starts another.
func TestFailedMemberIsReplacedByTheRefill(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{{ID: "starter", CPUs: 0.5, MemoryMB: 1024, N8nImage: plans.DefaultN8nImage, Warm: 1}})
	st.world.fail("provision", apperr.New(apperr.Invalid, "manifest unknown: no such image")) // permanent
	st.fillPool()
	failed := st.members()
	if len(failed) != 0 {
		t.Fatalf("a failed member is still counted: %v", failed)
	}
	if st.world.alertsWith("Provisioning failed") != 1 {
		t.Errorf("alerts = %q", st.world.alerts)
	}
	st.fillPool()
	if m := st.members(); len(m) != 1 || m[0].Step != stepHealthy {
		t.Fatalf("the refill did not replace the failed member: %v", m)
	}
}

func hasJob(jobs []river.JobArgs, want river.JobArgs) bool {
	for _, j := range jobs {
		if j == want {
			return true
		}
	}
	return false
}

// Concurrent claims never get the same member, on both databases: each member goes to
// exactly one subscription, and the claims beyond the pool find it empty.
func TestClaimMemberIsAtomic(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		s := NewStore(db.Gorm, nil)
		exec := func(q string, args ...any) {
			if err := db.Gorm.Exec(q, args...).Error; err != nil {
				t.Fatal(err)
			}
		}
		exec(`INSERT INTO hosts (name, node, vmid, public_ip, ingress_url, max_instances, created_at, updated_at)
			VALUES ('nuc', 'pve', 101, '203.0.113.10', 'http://127.0.0.1:1', 50, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)`)
		spec := specOf(warmPlan)
		const members, claims = 4, 10
		for i := range members {
			in := &Instance{ID: NewID(), Slug: fmt.Sprintf("m%d", i), URL: "https://x", PlanID: spec.PlanID, CPUs: spec.CPUs,
				MemoryMB: spec.MemoryMB, N8nImage: spec.Image, Status: Warm, Step: stepHealthy, OwnerPasswordSealed: "s", EncryptionKeySealed: "s"}
			if err := s.Create(ctx, in); err != nil {
				t.Fatal(err)
			}
			exec(`UPDATE instances SET host = 'nuc' WHERE id = ?`, in.ID)
		}
		var mu sync.Mutex
		got, empty := map[string]string{}, 0
		var wg sync.WaitGroup
		for i := range claims {
			client, sub := fmt.Sprintf("cus_%d", i), fmt.Sprintf("sub_%d", i)
			if _, err := s.UpsertClient(ctx, Client{ID: client, Email: client + "@example.com"}); err != nil {
				t.Fatal(err)
			}
			exec(`INSERT INTO subscriptions (id, provider, provider_subscription_id, plan_id, status, status_since,
				provider_updated_at, fetched_at, created_at, updated_at) VALUES (?, 'stripe', ?, 'starter', 'active',
				CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)`, sub, "p"+sub)
			wg.Add(1)
			go func() {
				defer wg.Done()
				in, err := s.ClaimMember(ctx, spec, "nuc", Claim{ClientID: client, SubscriptionID: sub, Email: client + "@example.com"}, "claimed")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, ErrPoolEmpty):
					empty++
				case err != nil:
					t.Errorf("claim %d: %v", i, err)
				case got[in.ID] != "":
					t.Errorf("member %s claimed by %s and %s", in.ID, got[in.ID], client)
				default:
					got[in.ID] = client
				}
			}()
		}
		wg.Wait()
		if len(got) != members || empty != claims-members {
			t.Errorf("claimed %d members, %d claims found the pool empty; want %d and %d", len(got), empty, members, claims-members)
		}
		for id, client := range got {
			in, err := s.Get(ctx, id)
			if err != nil || in.ClientID != client || in.Status != Provisioning {
				t.Errorf("member %s: %v, client %q, %s", id, err, in.ClientID, in.Status)
			}
		}
	})
}

// 00006 lets an instance have no client while it is a pool member, keeps clients a real
// foreign key, and migrates down (dropping the members) and up again.
func TestMigration00006(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		s := NewStore(db.Gorm, nil)
		member := &Instance{Slug: "warm1", URL: "https://x", PlanID: "starter", CPUs: 0.5, MemoryMB: 1024, N8nImage: "img:1",
			Status: Warm, OwnerPasswordSealed: "s", EncryptionKeySealed: "s"}
		if err := s.Create(ctx, member); err != nil {
			t.Fatalf("a pool member without a client: %v", err)
		}
		got, err := s.Get(ctx, member.ID)
		if err != nil || got.ClientID != "" || got.Status != Warm {
			t.Fatalf("read back: %v, client %q, %s", err, got.ClientID, got.Status)
		}
		stray := &Instance{ClientID: "no-such-client", Slug: "stray", URL: "https://x", PlanID: "starter", CPUs: 0.5, MemoryMB: 1024,
			N8nImage: "img:1", Status: Pending, OwnerPasswordSealed: "s", EncryptionKeySealed: "s"}
		if err := s.Create(ctx, stray); err == nil {
			t.Error("an instance of a client that does not exist was stored")
		}
		if err := s.AppendEvent(ctx, NewID(), "x", "y"); err == nil {
			t.Error("an event of an instance that does not exist was stored: instance_events lost its foreign key")
		}
		if err := db.Gorm.Exec(`UPDATE instances SET status = 'lukewarm' WHERE id = ?`, member.ID).Error; err == nil {
			t.Error("an unknown status was accepted")
		}
		p, err := db.Provider()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 5); err != nil {
			t.Fatalf("down: %v", err)
		}
		if _, err := s.Get(ctx, member.ID); err == nil {
			t.Error("the pool member survived the down migration, which has no room for it")
		}
		if _, err := p.Up(ctx); err != nil {
			t.Fatalf("up again: %v", err)
		}
	})
}

// A member whose owner someone else set up before any payment is never handed out: it is
// failed, the operator is told, and the pool starts another.
func TestClaimedByAStrangerIsNeverHandedOut(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{{ID: "starter", CPUs: 0.5, MemoryMB: 1024, N8nImage: plans.DefaultN8nImage, Warm: 1}})
	st.world.fail("unclaimed", ErrOwnerAlreadySetup)
	st.fillPool()
	if m := st.members(); len(m) != 0 {
		t.Fatalf("the stranger's member is in the pool: %+v", m)
	}
	if st.world.alertsWith("Provisioning failed") != 1 {
		t.Errorf("alerts = %q", st.world.alerts)
	}
	st.fillPool()
	if in := st.pay("sub_1", "cus_1"); len(st.events("assigned")) != 1 {
		t.Errorf("the payment did not get the fresh member: %s, %q", in.Status, st.events("cold_start"))
	}
}

// The doctor knows pool members: their containers are no orphans, and a ready member
// whose container vanished is drift.
func TestDoctorKnowsPoolMembers(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{warmPlan})
	st.fillPool()
	report, err := st.service().Doctor(st.ctx, false, nil)
	if err != nil || report.Drift() {
		t.Fatalf("doctor on a full pool: %v, %+v", err, report.Findings)
	}
	gone := st.members()[0]
	st.world.mu.Lock()
	delete(st.world.containers, gone.Slug)
	st.world.mu.Unlock()
	report, _ = st.service().Doctor(st.ctx, false, nil)
	if len(report.Findings) != 1 || report.Findings[0].Kind != DriftMissingContainer || report.Findings[0].Instance != gone.ID {
		t.Errorf("findings = %+v, want the member's missing container", report.Findings)
	}
}

// Customers come before the pool: a payment that finds no free slot takes a ready
// member's, and that member is recycled.
func TestCustomerTakesAMembersSlot(t *testing.T) {
	pro := plans.Plan{ID: "pro", CPUs: 1, MemoryMB: 2048, N8nImage: plans.DefaultN8nImage}
	st := newSagaWorld(t, plans.Plans{warmPlan, pro})
	st.fillPool()
	st.exec(`UPDATE subscriptions SET plan_id = 'pro' WHERE id = 'sub_1'`)
	err := st.service().Reconcile(st.ctx, Subscription{ID: "sub_1", ClientID: "cus_1", Email: "ada@example.com",
		Name: "Ada", PlanID: "pro", Run: true})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := st.cfg.Store.BySubscription(st.ctx, "sub_1")
	st.id = list[0].ID
	st.world.fail("assign", fmt.Errorf("%w: full", ErrNoRoom)) // the hosts are full of members
	if _, err := st.run(); err != nil || st.instance().Status != Active {
		t.Fatalf("the customer was not served: %v, %s", err, st.instance().Status)
	}
	if n := len(st.members()); n != 1 {
		t.Errorf("members = %d, want one recycled for the customer", n)
	}
	if len(st.events("waiting_for_host")) != 0 {
		t.Error("the customer waited for room while a pool member held it")
	}
}

// The doctor reports a host whose egress policy is missing or changed.
func TestDoctorReportsEgressDrift(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{warmPlan})
	st.world.egressDrift = "IPv4 chain N8N-EGRESS differs from the policy"
	report, err := st.service().Doctor(st.ctx, true, nil)
	if err != nil || len(report.Findings) != 1 {
		t.Fatalf("findings = %+v (%v)", report.Findings, err)
	}
	f := report.Findings[0]
	if f.Kind != DriftEgress || f.Host != "nuc" || !strings.Contains(f.Detail, "N8N-EGRESS differs") || f.Fixable || f.Fixed {
		t.Errorf("finding = %+v", f)
	}
}

// A plan's disk quota reaches the host and is verified with the other caps: a host that
// drops it fails the instance rather than let one customer fill its disk.
func TestDiskQuotaIsVerifiedLikeTheOtherCaps(t *testing.T) {
	plan := plans.Plan{ID: "starter", CPUs: 0.5, MemoryMB: 1024, DiskGB: 10, N8nImage: plans.DefaultN8nImage}
	st := newSagaWorld(t, plans.Plans{plan})
	st.pay("sub_1", "cus_1")
	if _, err := st.run(); err != nil || st.instance().Status != Active {
		t.Fatalf("run = %v, %s", err, st.instance().Status)
	}
	if got := st.world.containers[st.instance().Slug]["DISK_GB"]; got != "10" {
		t.Errorf("launched with DISK_GB %q", got)
	}
	if caps := st.events("step"); !strings.Contains(strings.Join(caps, "|"), "resource caps verified: 0.5 CPU, 1024 MiB, 10 GiB disk") {
		t.Errorf("timeline = %q", caps)
	}
}

func TestHostThatDropsTheDiskQuotaFailsTheInstance(t *testing.T) {
	plan := plans.Plan{ID: "starter", CPUs: 0.5, MemoryMB: 1024, DiskGB: 10, N8nImage: plans.DefaultN8nImage}
	dropped := newSagaWorld(t, plans.Plans{plan})
	dropped.world.ignoreDisk = true
	dropped.pay("sub_1", "cus_1")
	dropped.run()
	if in := dropped.instance(); in.Status != Failed || !strings.Contains(in.FailureReason, "the disk quota did not take effect") {
		t.Errorf("a host without the quota: %s, %q", in.Status, in.FailureReason)
	}
}

// The doctor records each host's disk for placement, and reports one 80 % full.
func TestDoctorWatchesTheHostDisk(t *testing.T) {
	st := newSagaWorld(t, plans.Plans{warmPlan})
	st.world.hostDisk = [2]int64{100 << 30, 79 << 30}
	if report, _ := st.service().Doctor(st.ctx, false, nil); report.Drift() || st.world.hostDiskGB != 100 {
		t.Fatalf("at 79 %%: findings %+v, recorded %d GiB", report.Findings, st.world.hostDiskGB)
	}
	st.world.hostDisk = [2]int64{100 << 30, 85 << 30}
	report, _ := st.service().Doctor(st.ctx, false, nil)
	if len(report.Findings) != 1 || report.Findings[0].Kind != DriftHostDisk || !strings.Contains(report.Findings[0].Detail, "85 % full") {
		t.Errorf("at 85 %%: findings %+v", report.Findings)
	}
}
