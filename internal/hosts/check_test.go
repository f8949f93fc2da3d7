package hosts_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
	"github.com/n8n-provisioner/n8n-provisioner/scripts"
)

// checkWorld is one VM on the fake PVE whose guest runs the real scripts/n8nctl (only its
// version and list verbs run here), behind a fake Traefik.
type checkWorld struct {
	pve     *proxmoxtest.Server
	target  proxmoxTarget
	ingress string
	n8nctl  string // the script the guest runs as hosts.AgentDefaultPath
}

func newCheckWorld(t *testing.T) *checkWorld {
	t.Helper()
	dir := t.TempDir()
	cw := &checkWorld{n8nctl: filepath.Join(dir, "n8nctl")}
	if err := os.WriteFile(cw.n8nctl, []byte(scripts.N8nctl), 0o755); err != nil {
		t.Fatal(err)
	}
	dataRoot := filepath.Join(dir, "data")
	if err := os.Mkdir(dataRoot, 0o700); err != nil {
		t.Fatal(err)
	}
	cw.pve, cw.target = proxmoxFake(t, func(s *proxmoxtest.Server) {
		s.Runner = proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{
			Paths: map[string]string{hosts.AgentDefaultPath: cw.n8nctl},
			Env:   []string{"N8N_DATA_ROOT=" + dataRoot, "N8N_BACKUP_DIR=" + filepath.Join(dir, "backups"), "N8N_EGRESS=/nonexistent"},
		})
	})
	srv := httptest.NewServer(&traefiktest.Ingress{})
	t.Cleanup(srv.Close)
	cw.ingress = srv.URL
	return cw
}

func (cw *checkWorld) host() hosts.Host {
	return hosts.Host{Name: "nuc", Node: cw.target.node, VMID: cw.target.vmid, PublicIP: "203.0.113.10", IngressURL: cw.ingress}
}

func (cw *checkWorld) checker(t *testing.T) *hosts.Checker {
	t.Helper()
	p := proxmoxClient(t, cw.target.cfg)
	agent, err := hosts.NewAgent(hosts.AgentConfig{Exec: p})
	if err != nil {
		t.Fatal(err)
	}
	c, err := hosts.NewChecker(hosts.CheckerConfig{Proxmox: p, Agent: agent, Version: scripts.N8nctlVersion, BaseDomain: "n8n.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckerReadsAHealthyHost(t *testing.T) {
	t.Parallel()
	cw := newCheckWorld(t)
	cw.pve.UpdateVM(cw.target.node, cw.target.vmid, func(vm *proxmoxtest.VM) { vm.MemoryBytes, vm.CPUs = 16<<30, 8 })
	r, err := cw.checker(t).Check(t.Context(), cw.host())
	if err != nil {
		t.Fatal(err)
	}
	if r.MemoryMB != 16384 || r.CPUs != 8 || r.DiskGB <= 0 {
		t.Fatalf("resources = %+v, want 16 GiB, 8 CPUs and the data disk's size", r)
	}
}

// Each misconfiguration the operator can make is refused with what to fix, and an
// Inventory stores nothing.
func TestCheckerRefusesEachMisconfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		break_ func(t *testing.T, cw *checkWorld, h *hosts.Host)
		want   string
	}{
		{"unknown node", func(_ *testing.T, _ *checkWorld, h *hosts.Host) { h.Node = "pve2" }, `Proxmox has no node "pve2" (its nodes: pve)`},
		{"unknown VM", func(_ *testing.T, _ *checkWorld, h *hosts.Host) { h.VMID = 4242 }, "node pve has no VM 4242"},
		{"VM stopped", func(_ *testing.T, cw *checkWorld, h *hosts.Host) {
			cw.pve.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.Running = false })
		}, "VM 100 on pve is stopped: start it (qm start 100)"},
		{"agent not enabled", func(_ *testing.T, cw *checkWorld, h *hosts.Host) {
			cw.pve.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentEnabled = false })
		}, "does not enable the QEMU guest agent"},
		{"agent not running", func(_ *testing.T, cw *checkWorld, h *hosts.Host) {
			cw.pve.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentRunning = false })
		}, "the guest agent of VM 100 on pve does not answer (proxmox POST nodes/pve/qemu/100/agent/ping: HTTP 500: QEMU guest agent is not running)"},
		{"n8nctl missing", func(_ *testing.T, cw *checkWorld, _ *hosts.Host) {
			os.Remove(cw.n8nctl)
		}, "n8nctl is not installed at /opt/n8n-provisioner/bin/n8nctl on VM 100"},
		{"n8nctl of another release", func(t *testing.T, cw *checkWorld, _ *hosts.Host) {
			if err := os.WriteFile(cw.n8nctl, []byte(scripts.N8nctl+"# another release\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "this provisioner ships " + scripts.N8nctlVersion},
		{"n8nctl without a version verb", func(t *testing.T, cw *checkWorld, _ *hosts.Host) {
			old := strings.Replace(scripts.N8nctl, "| prune | version) ;;", "| prune) ;;", 1)
			if old == scripts.N8nctl {
				t.Fatal("could not make an n8nctl without its version verb")
			}
			if err := os.WriteFile(cw.n8nctl, []byte(old), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "has no version verb: it is older than this provisioner"},
		{"nothing at the ingress", func(t *testing.T, _ *checkWorld, h *hosts.Host) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			h.IngressURL = "http://" + ln.Addr().String()
			ln.Close()
		}, "Traefik does not answer at http://127.0.0.1:"},
		{"not Traefik at the ingress", func(t *testing.T, _ *checkWorld, h *hosts.Host) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("welcome to nginx")) }))
			t.Cleanup(srv.Close)
			h.IngressURL = srv.URL
		}, "answered HTTP 200 for n8n-provisioner-check.n8n.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cw := newCheckWorld(t)
			h := cw.host()
			tt.break_(t, cw, &h)
			_, err := cw.checker(t).Check(t.Context(), h)
			if !apperr.Is(err, apperr.Invalid) || !strings.Contains(apperr.Message(err), tt.want) {
				t.Fatalf("Check = %v (kind %s), want Invalid with %q", err, apperr.KindOf(err), tt.want)
			}
		})
	}

	t.Run("the inventory stores nothing", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *database.DB) {
			cw := newCheckWorld(t)
			cw.pve.UpdateVM(cw.target.node, cw.target.vmid, func(vm *proxmoxtest.VM) { vm.Running = false })
			inv := hosts.NewInventory(hosts.NewStore(db.Gorm, nil), cw.checker(t), "")
			if _, err := inv.Add(t.Context(), cw.host()); !apperr.Is(err, apperr.Invalid) {
				t.Fatalf("Add = %v, want Invalid", err)
			}
			if list, _ := inv.List(t.Context()); len(list) != 0 {
				t.Fatalf("stored %+v", list)
			}
			cw.pve.UpdateVM(cw.target.node, cw.target.vmid, func(vm *proxmoxtest.VM) { vm.Running = true })
			added, err := inv.Add(t.Context(), cw.host())
			if err != nil || added.MemoryMB != proxmoxtest.DefaultMemoryBytes>>20 || added.CPUs != proxmoxtest.DefaultCPUs || added.DiskGB == 0 {
				t.Fatalf("Add = %+v, %v", added, err)
			}
			if _, err := hosts.NewInventory(hosts.NewStore(db.Gorm, nil), nil, "Proxmox is not configured").Add(t.Context(), host("other", 300, 0)); !apperr.Is(err, apperr.Unavailable) ||
				!strings.Contains(err.Error(), "Proxmox is not configured") {
				t.Fatalf("Add without a checker = %v", err)
			}
		})
	})
}

// Proxmox refusing our token is not the host's fault: it is Unavailable, "try again".
func TestCheckerProxmoxTrouble(t *testing.T) {
	t.Parallel()
	cw := newCheckWorld(t)
	cw.pve.FailNext(1, proxmoxtest.Failure{PathSuffix: "/nodes", Status: http.StatusUnauthorized})
	_, err := cw.checker(t).Check(t.Context(), cw.host())
	if !apperr.Is(err, apperr.Unavailable) || !strings.Contains(apperr.Message(err), "proxmox rejected API token") {
		t.Fatalf("Check = %v, want Unavailable naming the token", err)
	}
	// pveproxy cannot reach the VM's node while pinging its agent: not the VM's fault either.
	cw.pve.FailNext(1, proxmoxtest.Failure{PathSuffix: "/agent/ping", Status: 596, Message: "Connection timed out"})
	_, err = cw.checker(t).Check(t.Context(), cw.host())
	if !apperr.Is(err, apperr.Unavailable) || !strings.Contains(apperr.Message(err), "Connection timed out") {
		t.Fatalf("Check = %v, want Unavailable with PVE's text", err)
	}
}
