package hosts_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

// sized adds a host without an instance cap whose VM has memoryMB and diskGB.
func (f *fixture) sized(t *testing.T, store *hosts.Store, name string, vmid, memoryMB, diskGB int) {
	t.Helper()
	h := host(name, vmid, 0)
	h.MemoryMB, h.CPUs, h.DiskGB = memoryMB, 4, diskGB
	if _, err := store.Add(f.ctx, h); err != nil {
		t.Fatal(err)
	}
}

// newPlanInstance stores an unplaced instance of memoryMB and diskGB, as the saga's
// reserve step does for a plan of that size.
func (f *fixture) newPlanInstance(t *testing.T, memoryMB, diskGB int) string {
	t.Helper()
	f.n++
	in := &instances.Instance{ClientID: "cus_1", Slug: fmt.Sprintf("m%d-%d", memoryMB, f.n), URL: "https://x.example.com",
		PlanID: fmt.Sprintf("p%d", memoryMB), CPUs: 1, MemoryMB: memoryMB, DiskGB: diskGB, N8nImage: "n8nio/n8n:1.0.0",
		Status: instances.Pending, OwnerEmail: "c@example.com", OwnerPasswordSealed: "s", EncryptionKeySealed: "s"}
	if err := f.instances.Create(f.ctx, in); err != nil {
		t.Fatal(err)
	}
	return in.ID
}

func TestPlacementByMemoryWithMixedPlans(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		t.Run("plans fill the memory, whatever their count", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect))
			f.sized(t, f.hosts, "small", 500, 4096, 1000)
			f.sized(t, f.hosts, "large", 501, 8192, 1000)
			place := func(memoryMB int) string {
				t.Helper()
				h, err := f.hosts.Assign(f.ctx, f.newPlanInstance(t, memoryMB, 10))
				if errors.Is(err, hosts.ErrNoRoom) {
					return "none"
				}
				if err != nil {
					t.Fatal(err)
				}
				return h.Name
			}
			// Fewest instances first, ties by name, among the hosts the plan fits on.
			var got []string
			for _, mb := range []int{4096, 2048, 1024, 4096, 1024, 2048, 1024, 1024, 1024} {
				got = append(got, place(mb))
			}
			// 4096 → large (a tie: by name); 2048 → small (fewer); 1024 → large (a tie);
			// 4096 fits on neither (2048 and 3072 MiB free); 1024 → small; 2048 → large
			// (a tie); 1024 → small (now full); 1024 → large (now full); 1024 nowhere.
			if want := "[large small large none small large small large none]"; fmt.Sprint(got) != want {
				t.Fatalf("placements = %v, want %s", got, want)
			}
			list, _ := f.hosts.List(f.ctx)
			for _, h := range list {
				if h.MemoryCommittedMB != h.MemoryMB {
					t.Errorf("%s commits %d of %d MiB, want it full", h.Name, h.MemoryCommittedMB, h.MemoryMB)
				}
			}
		})
		t.Run("overcommit lets plans exceed the memory by its factor", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect))
			store := f.hosts.WithOvercommit(hosts.Overcommit{Memory: 1.5, Disk: 1})
			f.sized(t, store, "nuc", 600, 4096, 1000)
			placed := 0
			for range 8 {
				if _, err := store.Assign(f.ctx, f.newPlanInstance(t, 1024, 10)); err == nil {
					placed++
				} else if !errors.Is(err, hosts.ErrNoRoom) {
					t.Fatal(err)
				}
			}
			if placed != 6 {
				t.Fatalf("placed %d 1 GiB instances on 4 GiB × 1.5, want 6", placed)
			}
			if err := store.HasRoom(f.ctx, hosts.Need{MemoryMB: 1024}); !errors.Is(err, hosts.ErrNoRoom) {
				t.Fatalf("HasRoom on a full host = %v, want ErrNoRoom", err)
			}
		})
		t.Run("disk limits as memory does", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect))
			f.sized(t, f.hosts, "nuc", 700, 65536, 50)
			if _, err := f.hosts.Assign(f.ctx, f.newPlanInstance(t, 1024, 40)); err != nil {
				t.Fatal(err)
			}
			if _, err := f.hosts.Assign(f.ctx, f.newPlanInstance(t, 1024, 20)); !errors.Is(err, hosts.ErrNoRoom) {
				t.Fatalf("a quota past the disk: err = %v, want ErrNoRoom", err)
			}
		})
		t.Run("max_instances still caps; unknown memory and no cap takes none", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect))
			capped := host("capped", 800, 1)
			capped.MemoryMB = 65536
			if _, err := f.hosts.Add(f.ctx, capped); err != nil {
				t.Fatal(err)
			}
			if _, err := f.hosts.Add(f.ctx, host("legacy", 801, 0)); err != nil { // registered before memory was read
				t.Fatal(err)
			}
			if h, err := f.hosts.Assign(f.ctx, f.newPlanInstance(t, 1024, 10)); err != nil || h.Name != "capped" {
				t.Fatalf("Assign = %s, %v; want capped", h.Name, err)
			}
			if _, err := f.hosts.Assign(f.ctx, f.newPlanInstance(t, 1024, 10)); !errors.Is(err, hosts.ErrNoRoom) {
				t.Fatalf("err = %v, want ErrNoRoom", err)
			}
			if _, err := f.hosts.AssignTo(f.ctx, f.newPlanInstance(t, 1024, 10), "legacy"); !errors.Is(err, hosts.ErrNoRoom) {
				t.Fatalf("AssignTo legacy = %v, want ErrNoRoom", err)
			}
		})
	})
}

func TestRoomOf(t *testing.T) {
	t.Parallel()
	store := hosts.NewStore(nil, nil).WithOvercommit(hosts.Overcommit{Memory: 1.5, Disk: 0.9})
	tests := []struct {
		name string
		h    hosts.Host
		want hosts.Room
	}{
		{"capped", hosts.Host{MaxInstances: 5, Instances: 2}, hosts.Room{Slots: 3, MemoryMB: hosts.NoLimit, DiskGB: hosts.NoLimit}},
		{"over its cap", hosts.Host{MaxInstances: 2, Instances: 3, MemoryMB: 1024}, hosts.Room{Slots: 0, MemoryMB: 1536, DiskGB: hosts.NoLimit}},
		{"sized", hosts.Host{MemoryMB: 4096, MemoryCommittedMB: 1024, DiskGB: 100, DiskCommittedGB: 20}, hosts.Room{Slots: hosts.NoLimit, MemoryMB: 5120, DiskGB: 70}},
		{"legacy without cap", hosts.Host{}, hosts.Room{Slots: 0, MemoryMB: hosts.NoLimit, DiskGB: hosts.NoLimit}},
	}
	for _, tt := range tests {
		if got := store.RoomOf(tt.h); got != tt.want {
			t.Errorf("%s: RoomOf = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestFleetCollector(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		f := setup(t, db)
		f.sized(t, f.hosts, "nuc", 900, 8192, 100)
		if _, err := f.hosts.Add(f.ctx, host("legacy", 901, 3)); err != nil {
			t.Fatal(err)
		}
		for _, mb := range []int{1024, 2048} {
			if _, err := f.hosts.AssignTo(f.ctx, f.newPlanInstance(t, mb, 10), "nuc"); err != nil {
				t.Fatal(err)
			}
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(hosts.NewCollector(f.hosts.WithOvercommit(hosts.Overcommit{Memory: 1.5, Disk: 1})))
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, fam := range families {
			for _, m := range fam.GetMetric() {
				got[fam.GetName()+"{"+m.GetLabel()[0].GetValue()+"}"] = m.GetGauge().GetValue()
			}
		}
		want := map[string]float64{
			"provisioner_host_instances{legacy}": 0, "provisioner_host_instances{nuc}": 2,
			"provisioner_host_memory_committed_bytes{legacy}": 0, "provisioner_host_memory_committed_bytes{nuc}": 3 << 30,
			"provisioner_host_memory_total_bytes{nuc}":      8 << 30, // legacy's is not known: no series
			"provisioner_host_memory_capacity_bytes{nuc}":   12 << 30,
			"provisioner_host_disk_capacity_bytes{nuc}":     100 << 30,
			"provisioner_host_disk_committed_bytes{legacy}": 0, "provisioner_host_disk_committed_bytes{nuc}": 20 << 30,
			"provisioner_host_disk_total_bytes{nuc}": 100 << 30,
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("gauges = %v\nwant     %v", got, want)
		}
	})
}
