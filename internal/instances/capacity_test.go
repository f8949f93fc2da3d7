package instances

import (
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// A plan upgrade that does not fit on the instance's host is refused, not overcommitted:
// the instance keeps its plan and caps, the customer's timeline and the operator say so
// (once, however often billing retries), and the change goes through once there is room.
func TestPlanUpgradeThatDoesNotFitWaitsForRoom(t *testing.T) {
	starter := plans.Plan{ID: "starter", CPUs: 0.5, MemoryMB: 1024, DiskGB: 10, N8nImage: plans.DefaultN8nImage}
	pro := plans.Plan{ID: "pro", CPUs: 2, MemoryMB: 4096, DiskGB: 40, N8nImage: plans.DefaultN8nImage}
	st := newSagaWorld(t, plans.Plans{starter, pro})
	sub := Subscription{ID: "sub_1", ClientID: "cus_1", Email: "ada@example.com", Name: "Ada", PlanID: "starter", Run: true}
	if err := st.service().Reconcile(st.ctx, sub); err != nil {
		t.Fatal(err)
	}
	list, _ := st.cfg.Store.BySubscription(st.ctx, "sub_1")
	st.id = list[0].ID
	if _, err := st.run(); err != nil || st.instance().Status != Active {
		t.Fatalf("provisioning: %v, %s", err, st.instance().Status)
	}
	// The host has 8 GiB to commit and 6 GiB committed: 3 GiB more do not fit.
	st.world.mu.Lock()
	st.world.room = &HostRoom{Name: "nuc", Instances: 4, Free: 10, MemoryMB: 8192, MemoryCommittedMB: 6144, DiskGB: 500, DiskCommittedGB: 40}
	inserted := len(st.world.inserted)
	st.world.mu.Unlock()

	sub.PlanID = "pro"
	for range 3 { // billing retries the event
		err := st.service().Reconcile(st.ctx, sub)
		if !apperr.Is(err, apperr.Unavailable) {
			t.Fatalf("Reconcile = %v, want Unavailable so that billing retries", err)
		}
	}
	if in := st.instance(); in.PlanID != "starter" || in.MemoryMB != 1024 || in.DiskGB != 10 {
		t.Fatalf("instance = plan %s, %d MiB, %d GiB; want starter kept", in.PlanID, in.MemoryMB, in.DiskGB)
	}
	if got := st.events(eventPlanRefused); len(got) != 1 || got[0] != "plan pro (4096 MiB, 40 GiB) does not fit on this instance's server yet "+
		"(3072 MiB more memory are needed and 2048 MiB are free): it keeps running on plan starter until there is room; our team has been told" {
		t.Fatalf("timeline = %q", got)
	}
	if n := st.world.alertsWith("plan change does not fit"); n != 1 {
		t.Fatalf("operator alerts = %d, want 1", n)
	}
	st.world.mu.Lock()
	resized := len(st.world.inserted) > inserted && isResize(st.world.inserted[len(st.world.inserted)-1])
	st.world.mu.Unlock()
	if resized {
		t.Fatal("a resize was queued for a plan that does not fit")
	}

	// Another instance left the host: now it fits.
	st.world.mu.Lock()
	st.world.room.MemoryCommittedMB = 2048
	st.world.mu.Unlock()
	if err := st.service().Reconcile(st.ctx, sub); err != nil {
		t.Fatal(err)
	}
	if in := st.instance(); in.PlanID != "pro" || in.MemoryMB != 4096 || in.DiskGB != 40 {
		t.Fatalf("instance = plan %s, %d MiB, %d GiB; want pro", in.PlanID, in.MemoryMB, in.DiskGB)
	}
	st.world.mu.Lock()
	last := st.world.inserted[len(st.world.inserted)-1]
	st.world.mu.Unlock()
	if !isResize(last) {
		t.Fatalf("last job = %#v, want the resize", last)
	}
}

// A downgrade needs no room, so it goes through on a full host.
func TestPlanDowngradeFitsOnAFullHost(t *testing.T) {
	small := plans.Plan{ID: "small", CPUs: 0.5, MemoryMB: 1024, DiskGB: 10, N8nImage: plans.DefaultN8nImage}
	big := plans.Plan{ID: "big", CPUs: 1, MemoryMB: 2048, DiskGB: 10, N8nImage: plans.DefaultN8nImage}
	st := newSagaWorld(t, plans.Plans{small, big})
	sub := Subscription{ID: "sub_1", ClientID: "cus_1", Email: "ada@example.com", Name: "Ada", PlanID: "big", Run: true}
	if err := st.service().Reconcile(st.ctx, sub); err != nil {
		t.Fatal(err)
	}
	list, _ := st.cfg.Store.BySubscription(st.ctx, "sub_1")
	st.id = list[0].ID
	if _, err := st.run(); err != nil {
		t.Fatal(err)
	}
	st.world.mu.Lock()
	st.world.room = &HostRoom{Name: "nuc", Instances: 4, Free: 0, MemoryMB: 4096, MemoryCommittedMB: 4096}
	st.world.mu.Unlock()
	sub.PlanID = "small"
	if err := st.service().Reconcile(st.ctx, sub); err != nil {
		t.Fatal(err)
	}
	if in := st.instance(); in.PlanID != "small" || in.MemoryMB != 1024 {
		t.Fatalf("instance = plan %s, %d MiB; want small", in.PlanID, in.MemoryMB)
	}
}

func isResize(args any) bool {
	a, ok := args.(ActionArgs)
	return ok && a.Action == ActResize
}

func TestHostRoomFits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		room      HostRoom
		mem, disk int
		fits      bool
	}{
		{"unknown size fits", HostRoom{Free: 1}, 4096, 100, true},
		{"no slot", HostRoom{Free: 0}, 1, 1, false},
		{"memory exactly", HostRoom{Free: 1, MemoryMB: 4096, MemoryCommittedMB: 3072}, 1024, 0, true},
		{"memory short", HostRoom{Free: 1, MemoryMB: 4096, MemoryCommittedMB: 3073}, 1024, 0, false},
		{"disk short", HostRoom{Free: 1, MemoryMB: 4096, DiskGB: 100, DiskCommittedGB: 95}, 1024, 10, false},
	}
	for _, tt := range tests {
		if got := tt.room.Fits(tt.mem, tt.disk); got != tt.fits {
			t.Errorf("%s: Fits = %v, want %v", tt.name, got, tt.fits)
		}
	}
}
