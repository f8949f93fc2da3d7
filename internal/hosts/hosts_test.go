package hosts_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

func host(name string, vmid, max int) hosts.Host {
	return hosts.Host{Name: name, Node: "pve1", VMID: vmid, PublicIP: "203.0.113.10",
		IngressURL: "https://10.0.0.5", MaxInstances: max}
}

type fixture struct {
	hosts     *hosts.Store
	instances *instances.Store
	ctx       context.Context
	n         int
}

func setup(t *testing.T, db *database.DB) *fixture {
	t.Helper()
	f := &fixture{hosts: hosts.NewStore(db.Gorm, nil), instances: instances.NewStore(db.Gorm, nil), ctx: context.Background()}
	if _, err := f.instances.UpsertClient(f.ctx, instances.Client{ID: "cus_1", Email: "c@example.com"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// newInstance stores an instance without a host, as the saga's reserve step does.
func (f *fixture) newInstance(t *testing.T) string { return f.newInstanceWithDisk(t, 0) }

func (f *fixture) newInstanceWithDisk(t *testing.T, diskGB int) string {
	t.Helper()
	f.n++
	in := &instances.Instance{ClientID: "cus_1", Slug: fmt.Sprintf("%s-%d", t.Name()[len(t.Name())-6:], f.n),
		URL: "https://x.example.com", PlanID: "starter", CPUs: 0.5, MemoryMB: 1024, DiskGB: diskGB,
		N8nImage: "n8nio/n8n:1.0.0", Status: instances.Pending, OwnerEmail: "c@example.com",
		OwnerPasswordSealed: "s", EncryptionKeySealed: "s"}
	if err := f.instances.Create(f.ctx, in); err != nil {
		t.Fatal(err)
	}
	return in.ID
}

func TestHostStore(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		f := setup(t, db)
		added, err := f.hosts.Add(f.ctx, host("nuc", 100, 5))
		if err != nil || added.State != hosts.Active {
			t.Fatalf("Add = %+v, %v", added, err)
		}
		if _, err := f.hosts.Add(f.ctx, host("nuc", 101, 5)); !apperr.Is(err, apperr.Conflict) {
			t.Fatalf("duplicate name: err = %v, want Conflict", err)
		}
		if _, err := f.hosts.Add(f.ctx, host("other", 100, 5)); !apperr.Is(err, apperr.Conflict) {
			t.Fatalf("duplicate node/vmid: err = %v, want Conflict", err)
		}
		draining := hosts.Draining
		zero := 0
		got, err := f.hosts.Update(f.ctx, "nuc", hosts.Patch{State: &draining, MaxInstances: &zero})
		if err != nil || got.State != hosts.Draining || got.MaxInstances != 0 {
			t.Fatalf("Update = %+v, %v", got, err)
		}
		bogus := hosts.State("gone")
		if _, err := f.hosts.Update(f.ctx, "nuc", hosts.Patch{State: &bogus}); !apperr.Is(err, apperr.Invalid) {
			t.Fatalf("bad state: err = %v, want Invalid", err)
		}
		if _, err := f.hosts.Update(f.ctx, "missing", hosts.Patch{State: &draining}); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("missing host: err = %v, want NotFound", err)
		}
		list, err := f.hosts.List(f.ctx)
		if err != nil || len(list) != 1 || list[0].State != hosts.Draining {
			t.Fatalf("List = %+v, %v", list, err)
		}
	})
}

func TestHostValidation(t *testing.T) {
	t.Parallel()
	mutate := map[string]func(*hosts.Host){
		"name with dots":      func(h *hosts.Host) { h.Name = "a.b" },
		"uppercase name":      func(h *hosts.Host) { h.Name = "NUC" },
		"empty node":          func(h *hosts.Host) { h.Node = "" },
		"vmid too small":      func(h *hosts.Host) { h.VMID = 99 },
		"ipv6 public ip":      func(h *hosts.Host) { h.PublicIP = "2001:db8::1" },
		"not an ip":           func(h *hosts.Host) { h.PublicIP = "example.com" },
		"ingress without sch": func(h *hosts.Host) { h.IngressURL = "10.0.0.5" },
		"ingress with path":   func(h *hosts.Host) { h.IngressURL = "https://10.0.0.5/x" },
		"ingress with creds":  func(h *hosts.Host) { h.IngressURL = "https://u:p@10.0.0.5" },
		"negative capacity":   func(h *hosts.Host) { h.MaxInstances = -1 },
		"unknown state":       func(h *hosts.Host) { h.State = "on" },
	}
	for name, m := range mutate {
		h := host("nuc", 100, 5)
		h.State = hosts.Active
		m(&h)
		if err := h.Validate(); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("%s: Validate = %v, want Invalid", name, err)
		}
	}
	ok := host("nuc", 100, 5)
	ok.State = hosts.Active
	if err := ok.Validate(); err != nil {
		t.Errorf("valid host: %v", err)
	}
}

func TestPlacement(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		t.Run("round robin over three hosts", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect)) // a database of its own: placement counts every host
			for i, name := range []string{"c-host", "a-host", "b-host"} {
				if _, err := f.hosts.Add(f.ctx, host(name, 200+i, 10)); err != nil {
					t.Fatal(err)
				}
			}
			var order []string
			for range 30 {
				h, err := f.hosts.Assign(f.ctx, f.newInstance(t))
				if err != nil {
					t.Fatal(err)
				}
				order = append(order, h.Name)
			}
			if got := fmt.Sprint(order[:4]); got != "[a-host b-host c-host a-host]" {
				t.Errorf("first placements = %s, want name-ordered round robin", got)
			}
			list, _ := f.hosts.List(f.ctx)
			for _, h := range list {
				if h.Instances != 10 {
					t.Errorf("host %s has %d instances, want 10", h.Name, h.Instances)
				}
			}
			if _, err := f.hosts.Assign(f.ctx, f.newInstance(t)); !errors.Is(err, hosts.ErrNoRoom) {
				t.Fatalf("all full: err = %v, want ErrNoRoom", err)
			}
		})
		t.Run("a host whose disk cannot hold the quota gets none", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect))
			for i, name := range []string{"small", "big"} {
				if _, err := f.hosts.Add(f.ctx, host(name, 400+i, 10)); err != nil {
					t.Fatal(err)
				}
			}
			f.hosts.SetDisk(f.ctx, "small", 25)
			f.hosts.SetDisk(f.ctx, "big", 40)
			var got []string
			for range 3 {
				h, err := f.hosts.Assign(f.ctx, f.newInstanceWithDisk(t, 20))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, h.Name)
			}
			// big holds two 20 GiB quotas, small one; a fourth fits nowhere.
			if fmt.Sprint(got) != "[big small big]" {
				t.Errorf("placements = %v", got)
			}
			if _, err := f.hosts.Assign(f.ctx, f.newInstanceWithDisk(t, 20)); !errors.Is(err, hosts.ErrNoRoom) {
				t.Errorf("no disk left: err = %v, want ErrNoRoom", err)
			}
			list, _ := f.hosts.List(f.ctx)
			for _, h := range list {
				if want := map[string]int{"big": 40, "small": 20}[h.Name]; h.DiskCommittedGB != want {
					t.Errorf("%s commits %d GiB, want %d", h.Name, h.DiskCommittedGB, want)
				}
			}
		})
		t.Run("draining and full hosts get none; assign is idempotent", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect)) // a database of its own: placement counts every host
			for _, h := range []hosts.Host{host("drain", 300, 10), host("full", 301, 0), host("open", 302, 10)} {
				if _, err := f.hosts.Add(f.ctx, h); err != nil {
					t.Fatal(err)
				}
			}
			draining := hosts.Draining
			if _, err := f.hosts.Update(f.ctx, "drain", hosts.Patch{State: &draining}); err != nil {
				t.Fatal(err)
			}
			id := f.newInstance(t)
			for range 3 {
				h, err := f.hosts.Assign(f.ctx, id)
				if err != nil || h.Name != "open" {
					t.Fatalf("Assign = %s, %v; want open", h.Name, err)
				}
			}
			if h, _ := f.hosts.Get(f.ctx, "open"); h.Instances != 1 {
				t.Fatalf("repeated Assign counted %d instances, want 1", h.Instances)
			}
		})
		t.Run("concurrent placements never overfill", func(t *testing.T) {
			f := setup(t, dbtest.Open(t, db.Dialect)) // a database of its own: placement counts every host
			for i := range 2 {
				if _, err := f.hosts.Add(f.ctx, host(fmt.Sprintf("conc-%d", i), 400+i, 5)); err != nil {
					t.Fatal(err)
				}
			}
			ids := make([]string, 16)
			for i := range ids {
				ids[i] = f.newInstance(t)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			placed, full := 0, 0
			for _, id := range ids {
				wg.Go(func() {
					_, err := f.hosts.Assign(f.ctx, id)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						placed++
					case errors.Is(err, hosts.ErrNoRoom):
						full++
					default:
						t.Errorf("Assign: %v", err)
					}
				})
			}
			wg.Wait()
			if placed != 10 || full != 6 {
				t.Fatalf("placed %d, refused %d; want 10 and 6", placed, full)
			}
		})
	})
}
