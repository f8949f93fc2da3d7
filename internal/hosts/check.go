package hosts

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// checkTimeout bounds all of a host's checks together.
const checkTimeout = 45 * time.Second

// CheckProbeLabel is the host name label the ingress check asks Traefik for, under the
// base domain: no instance can have it (slugs are random), so Traefik must answer 404.
const CheckProbeLabel = "n8n-provisioner-check"

// proxmoxAPI is what the checks ask Proxmox; *Proxmox satisfies it.
type proxmoxAPI interface {
	Nodes(ctx context.Context) ([]ProxmoxNode, error)
	VMStatus(ctx context.Context, node string, vmid int) (ProxmoxVMStatus, error)
	Ping(ctx context.Context, node string, vmid int) error
}

// agentRunner runs n8nctl on a host VM; *Agent satisfies it.
type agentRunner interface {
	Run(ctx context.Context, node string, vmid int, verb, slug string, settings map[string]string) (json.RawMessage, error)
	Path() string
}

// CheckerConfig configures a Checker.
type CheckerConfig struct {
	Proxmox *Proxmox // required
	Agent   *Agent   // required
	// Version is the n8nctl version this provisioner ships (scripts.N8nctlVersion); the
	// host's must be the same.
	Version string
	// BaseDomain is the domain instances live under: the ingress check asks for a name in
	// it, so that Traefik's wildcard certificate is the one verified over https.
	BaseDomain string
	// HTTPClient, when set, carries the ingress check (tests); nil means a client of the
	// Checker's own that verifies the certificate against the probe's name.
	HTTPClient *http.Client
}

// Checker verifies a host VM before it is stored: its node, its VM, the guest agent,
// n8nctl's version and Traefik, and reads what the VM has.
type Checker struct {
	pve     proxmoxAPI
	agent   agentRunner
	version string
	probe   string // the probe's host name
	http    *http.Client
}

// NewChecker returns a Checker, or Invalid when cfg lacks a part.
func NewChecker(cfg CheckerConfig) (*Checker, error) {
	if cfg.Proxmox == nil || cfg.Agent == nil || cfg.Version == "" || cfg.BaseDomain == "" {
		return nil, apperr.New(apperr.Invalid, "host checker: Proxmox, Agent, Version and BaseDomain are required")
	}
	c := &Checker{pve: cfg.Proxmox, agent: cfg.Agent, version: cfg.Version,
		probe: CheckProbeLabel + "." + cfg.BaseDomain, http: cfg.HTTPClient}
	if c.http == nil {
		c.http = &http.Client{
			Timeout: 15 * time.Second,
			Transport: &http.Transport{
				Proxy:               nil, // the ingress is on the provisioner's own network
				DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
				TLSHandshakeTimeout: 10 * time.Second,
				TLSClientConfig:     &tls.Config{ServerName: c.probe, MinVersion: tls.VersionTLS12},
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return c, nil
}

// Check runs every check on h in order and returns the VM's resources. Each failure is
// apperr.Invalid with what is wrong and how to fix it; Unavailable when Proxmox itself
// cannot be asked (down, or our token refused).
func (c *Checker) Check(ctx context.Context, h Host) (Resources, error) {
	// The checks run inside an operator's request (POST /v1/hosts): bound them well within
	// the API's write timeout.
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := c.checkNode(ctx, h.Node); err != nil {
		return Resources{}, err
	}
	vm, err := c.checkVM(ctx, h)
	if err != nil {
		return Resources{}, err
	}
	if err := c.checkAgent(ctx, h); err != nil {
		return Resources{}, err
	}
	diskGB, err := c.checkN8nctl(ctx, h)
	if err != nil {
		return Resources{}, err
	}
	if err := c.checkIngress(ctx, h.IngressURL); err != nil {
		return Resources{}, err
	}
	r := Resources{MemoryMB: int(vm.MemoryBytes >> 20), CPUs: vm.CPUs, DiskGB: diskGB}
	if r.DiskGB == 0 {
		r.DiskGB = int(vm.DiskBytes >> 30) // no data root yet: the VM's disk holds it
	}
	if r.MemoryMB == 0 {
		return Resources{}, apperr.New(apperr.Invalid, "Proxmox reports no memory for VM %d on %s: cannot place instances by memory", h.VMID, h.Node)
	}
	return r, nil
}

// unreachable wraps a Proxmox error that is not about the host (PVE down, token refused)
// as Unavailable, so that the caller sees "try again" rather than "your host is wrong".
func unreachable(err error, what string) error {
	return apperr.Wrap(apperr.Unavailable, err, "cannot check %s: %s", what, apperr.Message(err))
}

func (c *Checker) checkNode(ctx context.Context, node string) error {
	nodes, err := c.pve.Nodes(ctx)
	if err != nil {
		return unreachable(err, "the Proxmox node")
	}
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if n.Node == node {
			if n.Status != "online" {
				return apperr.New(apperr.Invalid, "Proxmox node %s is %s: bring it online first", node, n.Status)
			}
			return nil
		}
		names = append(names, n.Node)
	}
	slices.Sort(names)
	return apperr.New(apperr.Invalid, "Proxmox has no node %q (its nodes: %s)", node, strings.Join(names, ", "))
}

func (c *Checker) checkVM(ctx context.Context, h Host) (ProxmoxVMStatus, error) {
	vm, err := c.pve.VMStatus(ctx, h.Node, h.VMID)
	switch {
	case apperr.Is(err, apperr.NotFound):
		return vm, apperr.New(apperr.Invalid, "node %s has no VM %d (`qm list` on the node shows its VMs)", h.Node, h.VMID)
	case err != nil:
		return vm, unreachable(err, fmt.Sprintf("VM %d on %s", h.VMID, h.Node))
	case !vm.Running:
		return vm, apperr.New(apperr.Invalid, "VM %d on %s is %s: start it (qm start %d) and add the host again", h.VMID, h.Node, vm.Status, h.VMID)
	case !vm.AgentEnabled:
		return vm, apperr.New(apperr.Invalid, "VM %d on %s does not enable the QEMU guest agent: `qm set %d --agent enabled=1`, then restart the VM", h.VMID, h.Node, h.VMID)
	}
	return vm, nil
}

func (c *Checker) checkAgent(ctx context.Context, h Host) error {
	err := c.pve.Ping(ctx, h.Node, h.VMID)
	apiErr, fromPVE := proxmox.AsAPIError(err)
	switch {
	case err == nil:
		return nil
	case fromPVE && apiErr.StatusCode == http.StatusInternalServerError:
		// PVE's own verdict on the VM ("QEMU guest agent is not running", "VM 101 is not
		// running"); a 595/596 or a transport error is about Proxmox, not the VM.
		return apperr.Wrap(apperr.Invalid, err, "the guest agent of VM %d on %s does not answer (%s): install and start qemu-guest-agent in the VM (bootstrap-host.sh does)",
			h.VMID, h.Node, apperr.Message(err))
	default:
		return unreachable(err, fmt.Sprintf("the guest agent of VM %d", h.VMID))
	}
}

// checkN8nctl runs `n8nctl version all` and `n8nctl list all`, and returns the data disk's
// size in GiB as n8nctl reports it (0 before its data root exists).
func (c *Checker) checkN8nctl(ctx context.Context, h Host) (int, error) {
	path := c.agent.Path()
	out, err := c.agent.Run(ctx, h.Node, h.VMID, "version", "all", nil)
	if err != nil {
		msg := apperr.Message(err)
		switch {
		case strings.Contains(msg, "exit status 127") || strings.Contains(msg, "No such file or directory") || strings.Contains(msg, "Failed to execute"):
			return 0, apperr.Wrap(apperr.Invalid, err, "n8nctl is not installed at %s on VM %d: copy scripts/ to the VM and run bootstrap-host.sh (or set PROVISIONER_HOST_AGENT_PATH)", path, h.VMID)
		case apperr.Is(err, apperr.Invalid):
			return 0, apperr.Wrap(apperr.Invalid, err, "n8nctl at %s on VM %d has no version verb: it is older than this provisioner; install this release's scripts/n8nctl there", path, h.VMID)
		default:
			return 0, apperr.Wrap(apperr.Invalid, err, "n8nctl at %s on VM %d does not run: %s", path, h.VMID, msg)
		}
	}
	var v struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(out, &v) != nil || v.Version == "" {
		return 0, apperr.New(apperr.Invalid, "n8nctl at %s on VM %d printed no version: install this release's scripts/n8nctl there", path, h.VMID)
	}
	if v.Version != c.version {
		return 0, apperr.New(apperr.Invalid, "n8nctl at %s on VM %d is version %s, this provisioner ships %s: install this release's scripts/n8nctl there (bootstrap-host.sh does)",
			path, h.VMID, v.Version, c.version)
	}
	out, err = c.agent.Run(ctx, h.Node, h.VMID, "list", "all", nil)
	if err != nil {
		return 0, apperr.Wrap(apperr.Invalid, err, "n8nctl list on VM %d fails: %s", h.VMID, apperr.Message(err))
	}
	var list struct {
		Host struct {
			Disk *struct {
				SizeBytes int64 `json:"size_bytes"`
			} `json:"disk"`
		} `json:"host"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return 0, apperr.Wrap(apperr.Internal, err, "n8nctl list on VM %d: unexpected output", h.VMID)
	}
	if list.Host.Disk == nil {
		return 0, nil
	}
	return int(list.Host.Disk.SizeBytes >> 30), nil
}

// checkIngress asks the ingress for a name no router serves: Traefik answers 404 "404 page
// not found". Over https, the certificate must be valid for that name (the wildcard).
func (c *Checker) checkIngress(ctx context.Context, ingressURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(ingressURL, "/")+"/", nil)
	if err != nil {
		return apperr.Wrap(apperr.Invalid, err, "ingress URL %s", ingressURL)
	}
	req.Host = c.probe
	resp, err := c.http.Do(req)
	if err != nil {
		return apperr.Wrap(apperr.Invalid, err, "Traefik does not answer at %s: %s (is bootstrap-host.sh's Traefik running, and is the URL reachable from here?)",
			ingressURL, scrubURL(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusNotFound {
		return apperr.New(apperr.Invalid, "%s answered HTTP %d for %s, a name no router serves, where Traefik answers 404: is it Traefik's https entry point?",
			ingressURL, resp.StatusCode, c.probe)
	}
	if !strings.Contains(string(body), "404 page not found") {
		return apperr.New(apperr.Invalid, "%s answered 404 for %s, but not as Traefik does (%q): is it Traefik's entry point?", ingressURL, c.probe, proxmoxExcerpt(body, 80))
	}
	return nil
}

// scrubURL returns a transport error's text without the *url.Error prefix that repeats the
// URL we name ourselves.
func scrubURL(err error) string {
	var u interface{ Unwrap() error }
	if errors.As(err, &u) && u.Unwrap() != nil {
		return u.Unwrap().Error()
	}
	return err.Error()
}
