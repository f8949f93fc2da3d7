package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/scripts"
)

var hostCommands = []command{
	{"list", "list the hosts with their state, instances and committed memory and disk", (*cli).hostsList},
	{"add", "check a host VM (Proxmox, guest agent, n8nctl, Traefik) and register it", (*cli).hostsAdd},
	{"refresh", "check a host again and record its VM's memory, CPUs and disk now", (*cli).hostsRefresh},
	{"drain", "keep a host's instances but place no new ones on it", hostStateCommand(hosts.Draining)},
	{"enable", "let a host take new instances again", hostStateCommand(hosts.Active)},
	{"disable", "take a host out of service: no new instances, operator attention", hostStateCommand(hosts.Disabled)},
	{"set", "change a host's instance cap (--max-instances, 0 for none)", (*cli).hostsSet},
	{"evacuate", "drain a host and move its instances to the others, N at a time", (*cli).hostsEvacuate},
}

// loadOvercommit reads how far placement may commit the hosts' memory and disk.
func loadOvercommit(getenv func(string) string) (hosts.Overcommit, error) {
	o := hosts.NoOvercommit
	for _, v := range []struct {
		name string
		dst  *float64
	}{{"PROVISIONER_MEMORY_OVERCOMMIT", &o.Memory}, {"PROVISIONER_DISK_OVERCOMMIT", &o.Disk}} {
		raw := strings.TrimSpace(getenv(v.name))
		if raw == "" {
			continue
		}
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil || !(f >= 0.1 && f <= 10) { // NaN fails both comparisons
			return o, envError(v.name, errors.New("must be a factor between 0.1 and 10, e.g. 1.0 (commit what the hosts have) or 1.5"))
		}
		*v.dst = f
	}
	return o, nil
}

// newInventory returns the host inventory whose additions are checked against Proxmox,
// the guest agent, n8nctl and Traefik; without Proxmox it refuses them, saying why.
func newInventory(cfg config, store *hosts.Store) (*hosts.Inventory, error) {
	p := cfg.Providers
	if p.ProxmoxURL == "" {
		return hosts.NewInventory(store, nil, "Proxmox is not configured: set PROVISIONER_PROXMOX_URL, PROVISIONER_PROXMOX_TOKEN_ID and PROVISIONER_PROXMOX_TOKEN_SECRET"), nil
	}
	hc, err := hosts.ProxmoxHTTPClient(p.ProxmoxCAFile, p.ProxmoxInsecureTLS)
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_PROXMOX_CA_FILE: %w", err)
	}
	// The checks run n8nctl's quick verbs only: a short exec timeout makes a hung agent a
	// prompt error rather than a long wait at the operator's prompt.
	pve, err := hosts.NewProxmox(hosts.ProxmoxConfig{BaseURL: p.ProxmoxURL, TokenID: p.ProxmoxTokenID,
		TokenSecret: p.ProxmoxTokenSecret, HTTPClient: hc, PollInterval: p.ProxmoxPoll, ExecTimeout: min(p.ProxmoxExec, checkExecTimeout)})
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_PROXMOX_*: %w", err)
	}
	agent, err := hosts.NewAgent(hosts.AgentConfig{Exec: pve, Path: p.AgentPath})
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_HOST_AGENT_PATH: %w", err)
	}
	checker, err := hosts.NewChecker(hosts.CheckerConfig{Proxmox: pve, Agent: agent, Version: scripts.N8nctlVersion, BaseDomain: cfg.BaseDomain})
	if err != nil {
		return nil, err
	}
	return hosts.NewInventory(store, checker, ""), nil
}

const checkExecTimeout = 30 * time.Second

func (c *cli) hostsList(path string, args []string) error {
	f := newFlags(path, "[--json]", "Lists every host by name: its Proxmox node and VM id, public IP, state, its instances (of its cap, if any), and the memory and disk its instances' plans commit against what its VM has.")
	asJSON := f.Bool("json", false, "print JSON ({\"hosts\": [...]}) instead of a table")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	list, err := o.hosts.List(c.ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if *asJSON {
		out := struct {
			Hosts []httpapi.HostJSON `json:"hosts"`
		}{Hosts: make([]httpapi.HostJSON, 0, len(list))}
		for _, h := range list {
			out.Hosts = append(out.Hosts, httpapi.ViewHost(h))
		}
		return writeJSON(c.stdout, out)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "No hosts yet: register one with `provisioner hosts add` (see --help).")
		return nil
	}
	printHosts(c.stdout, list)
	return nil
}

// printHosts prints the inventory as a table: committed/total for memory (GiB) and disk
// (GiB), "?" for a total not read yet, "-" for no instance cap.
func printHosts(w io.Writer, list []hosts.Host) {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tNODE/VMID\tPUBLIC IP\tSTATE\tINSTANCES\tMEMORY GiB\tDISK GiB\tCPUS\tINGRESS")
	for _, h := range list {
		limit := "-"
		if h.MaxInstances > 0 {
			limit = fmt.Sprint(h.MaxInstances)
		}
		fmt.Fprintf(tw, "%s\t%s/%d\t%s\t%s\t%d/%s\t%s/%s\t%d/%s\t%s\t%s\n", h.Name, h.Node, h.VMID, h.PublicIP, h.State,
			h.Instances, limit, gib(h.MemoryCommittedMB), known(gib(h.MemoryMB), h.MemoryMB),
			h.DiskCommittedGB, known(fmt.Sprint(h.DiskGB), h.DiskGB), known(fmt.Sprint(h.CPUs), h.CPUs), h.IngressURL)
	}
	tw.Flush()
}

// gib renders MiB as GiB with at most one decimal: 1536 → 1.5, 4096 → 4.
func gib(mb int) string {
	return strings.TrimSuffix(strconv.FormatFloat(float64(mb)/1024, 'f', 1, 64), ".0")
}

func known(s string, v int) string {
	if v <= 0 {
		return "?"
	}
	return s
}

func (c *cli) hostsAdd(path string, args []string) error {
	f := newFlags(path, "--name NAME --node NODE --vmid ID --public-ip IP --ingress-url URL [--max-instances N] [--json]", `
Checks a host VM and registers it: the Proxmox node exists, the VM exists and runs, its
QEMU guest agent answers, n8nctl is installed at PROVISIONER_HOST_AGENT_PATH in this
release's version, and Traefik answers at the ingress URL. Each failure is reported with
what to fix, and nothing is stored. The VM's memory, CPUs and disk are read and placement
commits the plans' memory and disk against them; --max-instances caps the count as well.
The host takes new instances at once (state active).`)
	var h hosts.Host
	f.StringVar(&h.Name, "name", "", "the host's name, a lowercase DNS label (e.g. nuc1)")
	f.StringVar(&h.Node, "node", "", "the Proxmox node the VM runs on (e.g. pve)")
	f.IntVar(&h.VMID, "vmid", 0, "the Proxmox VM id of the host VM")
	f.StringVar(&h.PublicIP, "public-ip", "", "the IPv4 address customers' DNS records point at")
	f.StringVar(&h.IngressURL, "ingress-url", "", "where the provisioner reaches the VM's Traefik, e.g. https://10.0.0.5")
	f.IntVar(&h.MaxInstances, "max-instances", 0, "at most this many instances (0 or unset: memory and disk alone decide)")
	asJSON := f.Bool("json", false, "print the host as JSON")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	for _, name := range []string{"name", "node", "vmid", "public-ip", "ingress-url"} {
		if !f.provided(name) {
			return fmt.Errorf("%s: --%s is required (see provisioner %s --help)", path, name, path)
		}
	}
	h.State = hosts.Active
	if err := h.Validate(); err != nil { // before the database: a typo needs no connection
		return flagError(path, err)
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	inv, err := newInventory(o.cfg, o.hosts)
	if err != nil {
		return err
	}
	added, err := inv.Add(c.ctx, h)
	if err != nil {
		return flagError(path, err)
	}
	if *asJSON {
		return writeJSON(c.stdout, httpapi.ViewHost(added))
	}
	fmt.Fprintf(c.stdout, "Added host %s (%s/%d, %s): %s; it takes new instances now.\n",
		added.Name, added.Node, added.VMID, added.PublicIP, describeSize(added))
	return nil
}

// describeSize says what the host VM has and caps, for the operator.
func describeSize(h hosts.Host) string {
	s := fmt.Sprintf("%s GiB of memory, %d CPUs, %s GiB of disk", gib(h.MemoryMB), h.CPUs, known(fmt.Sprint(h.DiskGB), h.DiskGB))
	if h.MaxInstances > 0 {
		s += fmt.Sprintf(", up to %d instances", h.MaxInstances)
	}
	return s
}

func (c *cli) hostsRefresh(path string, args []string) error {
	f := newFlags(path, "NAME [--json]", `
Runs the checks of hosts add on a registered host again and records what its VM has now:
after you resize the VM in Proxmox, or for a host registered before its resources were
read (such a host is limited by its --max-instances alone until it is refreshed).`)
	asJSON := f.Bool("json", false, "print the host as JSON")
	pos, help, err := c.parse(f, args, 1, 1, "host name")
	if help || err != nil {
		return err
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	inv, err := newInventory(o.cfg, o.hosts)
	if err != nil {
		return err
	}
	h, err := inv.Refresh(c.ctx, pos[0])
	if err != nil {
		return flagError(path, err)
	}
	if *asJSON {
		return writeJSON(c.stdout, httpapi.ViewHost(h))
	}
	fmt.Fprintf(c.stdout, "Host %s passes its checks: %s.\n", h.Name, describeSize(h))
	return nil
}

// hostStateCommand returns the command that moves a host to state.
func hostStateCommand(state hosts.State) func(*cli, string, []string) error {
	about := map[hosts.State]string{
		hosts.Draining: "Drains a host: its instances keep running, and no new instance is placed on it.",
		hosts.Active:   "Enables a host: it takes new instances again, as far as its memory, disk and cap allow.",
		hosts.Disabled: "Disables a host: it is out of service and takes no new instances. Its instances are not moved or stopped.",
	}[state]
	return func(c *cli, path string, args []string) error {
		f := newFlags(path, "NAME [--json]", about)
		asJSON := f.Bool("json", false, "print the host as JSON")
		pos, help, err := c.parse(f, args, 1, 1, "host name")
		if help || err != nil {
			return err
		}
		return c.updateHost(path, pos[0], hosts.Patch{State: &state}, *asJSON)
	}
}

func (c *cli) hostsSet(path string, args []string) error {
	f := newFlags(path, "NAME --max-instances N [--json]", `
Changes a host's instance cap; 0 removes it, so that memory and disk alone decide.
Lowering it below the instances the host runs is allowed: the host simply takes no new
ones until it has room.`)
	maxInstances := f.Int("max-instances", 0, "at most this many instances (0: no cap)")
	asJSON := f.Bool("json", false, "print the host as JSON")
	pos, help, err := c.parse(f, args, 1, 1, "host name")
	if help || err != nil {
		return err
	}
	if !f.provided("max-instances") {
		return fmt.Errorf("%s: --max-instances is required: it is the only setting to change", path)
	}
	return c.updateHost(path, pos[0], hosts.Patch{MaxInstances: maxInstances}, *asJSON)
}

func (c *cli) updateHost(path, name string, p hosts.Patch, asJSON bool) error {
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	h, err := o.hosts.Update(c.ctx, name, p)
	if err != nil {
		return flagError(path, err)
	}
	if asJSON {
		return writeJSON(c.stdout, httpapi.ViewHost(h))
	}
	switch {
	case p.MaxInstances != nil && h.MaxInstances == 0:
		fmt.Fprintf(c.stdout, "Host %s has no instance cap now: memory and disk decide (it runs %d).\n", h.Name, h.Instances)
	case p.MaxInstances != nil:
		fmt.Fprintf(c.stdout, "Host %s may now run %d instances (it runs %d).\n", h.Name, h.MaxInstances, h.Instances)
	case h.State == hosts.Draining:
		fmt.Fprintf(c.stdout, "Host %s is draining: it keeps its %d instance(s) and takes no new ones.\n", h.Name, h.Instances)
	case h.State == hosts.Disabled:
		fmt.Fprintf(c.stdout, "Host %s is disabled: it takes no new instances; its %d instance(s) are not moved.\n", h.Name, h.Instances)
	default:
		fmt.Fprintf(c.stdout, "Host %s is active: it takes new instances (%d running).\n", h.Name, h.Instances)
	}
	return nil
}
