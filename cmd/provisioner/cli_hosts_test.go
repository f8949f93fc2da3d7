package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
	"github.com/n8n-provisioner/n8n-provisioner/scripts"
)

// hostsAddArgs is `hosts add` for sandbox host h.
func hostsAddArgs(h sandbox.Host, extra ...string) []string {
	return append([]string{"hosts", "add", "--name", h.Name, "--node", h.Node, "--vmid", fmt.Sprint(h.VMID),
		"--public-ip", h.PublicIP, "--ingress-url", h.IngressURL}, extra...)
}

func TestCLIHostsRoundTrip(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cw := newCLIWorld(t, d, true)
			if out := cw.must("hosts", "list"); !strings.Contains(out, "No hosts yet") {
				t.Errorf("empty list printed %q", out)
			}
			nuc1, err := cw.w.AddHost("nuc1")
			if err != nil {
				t.Fatal(err)
			}
			out := cw.must(hostsAddArgs(nuc1, "--max-instances", "10")...)
			if !strings.Contains(out, "Added host nuc1") || !strings.Contains(out, "256 GiB of memory, 32 CPUs, 4096 GiB of disk, up to 10 instances") {
				t.Errorf("add printed %q", out)
			}
			box, err := cw.w.AddHost("ovh-box-2")
			if err != nil {
				t.Fatal(err)
			}
			cw.w.Proxmox.UpdateVM(box.Node, box.VMID, func(vm *proxmoxtest.VM) { vm.MemoryBytes, vm.CPUs = 6<<30, 4 })
			var added httpapi.HostJSON
			cw.mustJSON(&added, hostsAddArgs(box)...) // no --max-instances: memory and disk decide
			if want := (httpapi.HostJSON{Name: "ovh-box-2", Node: box.Node, VMID: box.VMID, PublicIP: box.PublicIP, IngressURL: box.IngressURL,
				State: "active", MemoryMB: 6144, CPUs: 4, DiskGB: 4096}); added != want {
				t.Errorf("add --json = %+v, want %+v", added, want)
			}
			cw.addInstance("nuc1", cliImageOld, instances.Active)

			// The human table: a header and one aligned row per host, committed/total.
			lines := strings.Split(strings.TrimRight(cw.must("hosts", "list"), "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("list printed %d lines:\n%s", len(lines), strings.Join(lines, "\n"))
			}
			for i, cols := range [][]string{
				{"NAME", "NODE/VMID", "PUBLIC", "IP", "STATE", "INSTANCES", "MEMORY", "GiB", "DISK", "GiB", "CPUS", "INGRESS"},
				{"nuc1", "pve/" + fmt.Sprint(nuc1.VMID), nuc1.PublicIP, "active", "1/10", "1/256", "0/4096", "32", nuc1.IngressURL},
				{"ovh-box-2", "pve/" + fmt.Sprint(box.VMID), box.PublicIP, "active", "0/-", "0/6", "0/4096", "4", box.IngressURL},
			} {
				if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(cols, " ") {
					t.Errorf("line %d = %q, want the fields %q", i, lines[i], cols)
				}
			}
			if col := strings.Index(lines[0], "STATE"); strings.Index(lines[1], "active") != col || strings.Index(lines[2], "active") != col {
				t.Errorf("the STATE column is not aligned:\n%s", strings.Join(lines, "\n"))
			}

			state := func(name string) httpapi.HostJSON {
				var list struct{ Hosts []httpapi.HostJSON }
				cw.mustJSON(&list, "hosts", "list")
				for _, h := range list.Hosts {
					if h.Name == name {
						return h
					}
				}
				t.Fatalf("host %s not in the list: %+v", name, list)
				return httpapi.HostJSON{}
			}
			if h := state("nuc1"); h.MemoryCommittedMB != 1024 || h.MemoryMB != 262144 || h.Instances != 1 {
				t.Errorf("nuc1 = %+v, want 1024 of 262144 MiB committed", h)
			}
			if out := cw.must("hosts", "drain", "nuc1"); !strings.Contains(out, "draining") || !strings.Contains(out, "keeps its 1 instance") {
				t.Errorf("drain printed %q", out)
			}
			var h httpapi.HostJSON
			cw.mustJSON(&h, "hosts", "disable", "nuc1")
			if h.State != "disabled" {
				t.Errorf("disable --json = %+v", h)
			}
			cw.must("hosts", "enable", "nuc1")
			cw.must("hosts", "set", "nuc1", "--max-instances", "3")
			cw.mustJSON(&h, "hosts", "set", "--max-instances", "4", "ovh-box-2") // flags before the name too
			if a, b := state("nuc1"), state("ovh-box-2"); a.MaxInstances != 3 || b.MaxInstances != 4 || a.State != "active" {
				t.Errorf("after set: %+v %+v", a, b)
			}
			if out := cw.must("hosts", "set", "nuc1", "--max-instances", "0"); !strings.Contains(out, "no instance cap") {
				t.Errorf("set 0 printed %q", out)
			}

			// The VM grows in Proxmox: refresh reads it.
			cw.w.Proxmox.UpdateVM(box.Node, box.VMID, func(vm *proxmoxtest.VM) { vm.MemoryBytes = 12 << 30 })
			if out := cw.must("hosts", "refresh", "ovh-box-2"); !strings.Contains(out, "12 GiB of memory") {
				t.Errorf("refresh printed %q", out)
			}
			if h := state("ovh-box-2"); h.MemoryMB != 12288 {
				t.Errorf("after refresh: %+v", h)
			}
		})
	}
}

// `hosts add` refuses each misconfiguration of section 2 of the issue with what to fix,
// and stores nothing.
func TestCLIHostsAddRefusesMisconfiguredHosts(t *testing.T) {
	t.Parallel()
	cw := newCLIWorld(t, dbtest.Dialects[0], true)
	otherN8nctl := filepath.Join(t.TempDir(), "n8nctl")
	if err := os.WriteFile(otherN8nctl, []byte(scripts.N8nctl+"# the next release\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldN8nctl := filepath.Join(t.TempDir(), "n8nctl")
	if err := os.WriteFile(oldN8nctl, []byte(strings.Replace(scripts.N8nctl, "| prune | version) ;;", "| prune) ;;", 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	nginx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Welcome to nginx!") }))
	t.Cleanup(nginx.Close)

	tests := []struct {
		name  string
		setup func(h *sandbox.Host) (env map[string]string)
		want  string
	}{
		{"unknown node", func(h *sandbox.Host) map[string]string { h.Node = "pve9"; return nil }, `Proxmox has no node "pve9" (its nodes: pve)`},
		{"unknown VM", func(h *sandbox.Host) map[string]string { h.VMID = 9999; return nil }, "node pve has no VM 9999"},
		{"VM stopped", func(h *sandbox.Host) map[string]string {
			cw.w.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.Running = false })
			return nil
		}, "is stopped: start it"},
		{"guest agent not enabled", func(h *sandbox.Host) map[string]string {
			cw.w.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentEnabled = false })
			return nil
		}, "does not enable the QEMU guest agent"},
		{"guest agent down", func(h *sandbox.Host) map[string]string {
			cw.w.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentRunning = false })
			return nil
		}, "QEMU guest agent is not running"},
		{"n8nctl not installed", func(*sandbox.Host) map[string]string {
			return map[string]string{"PROVISIONER_HOST_AGENT_PATH": "/opt/elsewhere/n8nctl"}
		}, "n8nctl is not installed at /opt/elsewhere/n8nctl"},
		{"n8nctl of another release", func(*sandbox.Host) map[string]string {
			return map[string]string{"PROVISIONER_HOST_AGENT_PATH": otherN8nctl}
		}, "this provisioner ships " + scripts.N8nctlVersion},
		{"n8nctl older than the version verb", func(*sandbox.Host) map[string]string {
			return map[string]string{"PROVISIONER_HOST_AGENT_PATH": oldN8nctl}
		}, "has no version verb"},
		{"nothing at the ingress URL", func(h *sandbox.Host) map[string]string { h.IngressURL = closedURL; return nil }, "Traefik does not answer at " + closedURL},
		{"not Traefik at the ingress URL", func(h *sandbox.Host) map[string]string { h.IngressURL = nginx.URL; return nil }, "answered HTTP 200"},
	}
	for i, tt := range tests {
		h, err := cw.w.AddHost(fmt.Sprintf("bad-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		env := tt.setup(&h)
		saved := map[string]string{}
		for k, v := range env {
			saved[k] = cw.env[k]
			cw.env[k] = v
		}
		out, _, err := cw.run(hostsAddArgs(h)...)
		for k, v := range saved {
			cw.env[k] = v
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: hosts add = %v (stdout %q), want an error with %q", tt.name, err, out, tt.want)
		}
	}
	var list struct{ Hosts []httpapi.HostJSON }
	cw.mustJSON(&list, "hosts", "list")
	if len(list.Hosts) != 0 {
		t.Fatalf("refused hosts were stored: %+v", list.Hosts)
	}
	// The same VM, fixed, is accepted.
	h, _ := cw.w.AddHost("good")
	cw.must(hostsAddArgs(h)...)
}

// Through the REST API and a running provisioner: a host that fails its checks is not
// stored, and purchases of mixed plans fill the hosts by memory, checkout refusing what
// fits nowhere.
func TestRESTHostsPlaceByMemory(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{})
	e.start()
	register := func(name string, memory uint64, want int) sandbox.Host {
		t.Helper()
		h, err := e.world.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.MemoryBytes = memory })
		code, body := e.api("POST", "/v1/hosts", e2eAdminKey, map[string]any{"name": h.Name, "node": h.Node, "vmid": h.VMID,
			"public_ip": h.PublicIP, "ingress_url": h.IngressURL})
		if code != want {
			t.Fatalf("POST /v1/hosts %s = %d %s, want %d", name, code, body, want)
		}
		return h
	}
	stopped, _ := e.world.AddHost("stopped")
	e.world.Proxmox.UpdateVM(stopped.Node, stopped.VMID, func(vm *proxmoxtest.VM) { vm.Running = false })
	code, body := e.api("POST", "/v1/hosts", e2eAdminKey, map[string]any{"name": "stopped", "node": stopped.Node, "vmid": stopped.VMID,
		"public_ip": stopped.PublicIP, "ingress_url": stopped.IngressURL})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "is stopped: start it") {
		t.Fatalf("POST /v1/hosts for a stopped VM = %d %s, want 400 saying so", code, body)
	}

	register("three-gib", 3<<30, http.StatusCreated)
	e.purchase("cus_pro1", "pro")
	e.waitInstance("cus_pro1", "active", time.Minute)
	e.purchase("cus_starter1", "starter")
	e.waitInstance("cus_starter1", "active", time.Minute)
	// 3 GiB are committed: not even the smallest plan fits, so checkout refuses to sell.
	code, body = e.api("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": "cus_late",
		"email": "late@example.com", "name": "Late", "plan": "starter"})
	if code != http.StatusConflict {
		t.Fatalf("checkout on a full fleet = %d %s, want 409", code, body)
	}

	register("two-gib", 2<<30, http.StatusCreated)
	e.purchase("cus_pro2", "pro")
	if in := e.waitInstance("cus_pro2", "active", time.Minute); in.Host == nil || *in.Host != "two-gib" {
		t.Fatalf("the second pro instance is on %v, want two-gib", in.Host)
	}
	var list struct{ Hosts []httpapi.HostJSON }
	e.mustAPI("GET", "/v1/hosts", e2eAdminKey, nil, http.StatusOK, &list)
	got := map[string]string{}
	for _, h := range list.Hosts {
		got[h.Name] = fmt.Sprintf("%d instances, %d/%d MiB", h.Instances, h.MemoryCommittedMB, h.MemoryMB)
	}
	if want := map[string]string{"three-gib": "2 instances, 3072/3072 MiB", "two-gib": "1 instances, 2048/2048 MiB"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("GET /v1/hosts = %v, want %v", got, want)
	}
	// Checkout asks for room for the plan it sells: with 1 GiB free, starter is sold, pro not.
	one := register("one-gib", 1<<30, http.StatusCreated)
	for plan, want := range map[string]int{"pro": http.StatusConflict, "starter": http.StatusCreated} {
		code, body := e.api("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": "cus_" + plan + "_late",
			"email": plan + "-late@example.com", "name": "Late", "plan": plan})
		if code != want {
			t.Errorf("checkout of %s with 1 GiB free = %d %s, want %d", plan, code, body, want)
		}
	}
	// The VM grows in Proxmox; a refresh records it, and placement commits against it.
	e.world.Proxmox.UpdateVM(one.Node, one.VMID, func(vm *proxmoxtest.VM) { vm.MemoryBytes = 4 << 30 })
	var refreshed httpapi.HostJSON
	e.mustAPI("POST", "/v1/hosts/one-gib/refresh", e2eAdminKey, nil, http.StatusOK, &refreshed)
	if refreshed.MemoryMB != 4096 {
		t.Errorf("after the refresh, memory_mb = %d, want 4096", refreshed.MemoryMB)
	}
	if code, _ := e.api("POST", "/v1/hosts/no-such-host/refresh", e2eAdminKey, nil); code != http.StatusNotFound {
		t.Errorf("refreshing an unknown host = %d, want 404", code)
	}
	code, body = e.api("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": "cus_pro_later",
		"email": "pro-later@example.com", "name": "Later", "plan": "pro"})
	if code != http.StatusCreated {
		t.Errorf("checkout of pro after the VM grew = %d %s, want 201", code, body)
	}
}

func TestOvercommitConfiguration(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env  map[string]string
		want hosts.Overcommit
		err  string
	}{
		{nil, hosts.Overcommit{Memory: 1, Disk: 1}, ""},
		{map[string]string{"PROVISIONER_MEMORY_OVERCOMMIT": "1.5", "PROVISIONER_DISK_OVERCOMMIT": " 0.9 "}, hosts.Overcommit{Memory: 1.5, Disk: 0.9}, ""},
		{map[string]string{"PROVISIONER_MEMORY_OVERCOMMIT": "lots"}, hosts.Overcommit{}, "PROVISIONER_MEMORY_OVERCOMMIT must be a factor"},
		{map[string]string{"PROVISIONER_DISK_OVERCOMMIT": "0"}, hosts.Overcommit{}, "PROVISIONER_DISK_OVERCOMMIT must be a factor"},
		{map[string]string{"PROVISIONER_MEMORY_OVERCOMMIT": "NaN"}, hosts.Overcommit{}, "PROVISIONER_MEMORY_OVERCOMMIT must be a factor"},
	} {
		got, err := loadOvercommit(func(k string) string { return tt.env[k] })
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%v: err = %v, want %q", tt.env, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%v: = %+v, %v; want %+v", tt.env, got, err, tt.want)
		}
	}
	cw := newCLIWorld(t, dbtest.Dialects[0], false)
	cw.env["PROVISIONER_MEMORY_OVERCOMMIT"] = "-1"
	if _, _, err := cw.run("hosts", "list"); err == nil || !strings.Contains(err.Error(), "PROVISIONER_MEMORY_OVERCOMMIT") {
		t.Fatalf("a bad overcommit: err = %v, want one naming the variable", err)
	}
}
