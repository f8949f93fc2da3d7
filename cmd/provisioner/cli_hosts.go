package main

import (
	"fmt"
	"io"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
)

var hostCommands = []command{
	{"list", "list the hosts with their state and instance counts", (*cli).hostsList},
	{"add", "register a host VM", (*cli).hostsAdd},
	{"drain", "keep a host's instances but place no new ones on it", hostStateCommand(hosts.Draining)},
	{"enable", "let a host take new instances again", hostStateCommand(hosts.Active)},
	{"disable", "take a host out of service: no new instances, operator attention", hostStateCommand(hosts.Disabled)},
	{"set", "change a host's capacity (--max-instances)", (*cli).hostsSet},
	{"evacuate", "drain a host and move its instances to the others, N at a time", (*cli).hostsEvacuate},
}

func (c *cli) hostsList(path string, args []string) error {
	f := newFlags(path, "[--json]", "Lists every host by name: its Proxmox node and VM id, public IP, state, and how many instances it runs out of its maximum.")
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

func printHosts(w io.Writer, list []hosts.Host) {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tNODE/VMID\tPUBLIC IP\tSTATE\tINSTANCES\tDISK GB\tINGRESS")
	for _, h := range list {
		disk := "?" // not reported by the doctor yet
		if h.DiskGB > 0 {
			disk = fmt.Sprint(h.DiskGB)
		}
		fmt.Fprintf(tw, "%s\t%s/%d\t%s\t%s\t%d/%d\t%d/%s\t%s\n", h.Name, h.Node, h.VMID, h.PublicIP, h.State,
			h.Instances, h.MaxInstances, h.DiskCommittedGB, disk, h.IngressURL)
	}
	tw.Flush()
}

func (c *cli) hostsAdd(path string, args []string) error {
	f := newFlags(path, "--name NAME --node NODE --vmid ID --public-ip IP --ingress-url URL --max-instances N [--json]", `
Registers a host VM that runs customer containers. It takes new instances at once
(state active); n8nctl must be installed on it and its QEMU guest agent running.`)
	var h hosts.Host
	f.StringVar(&h.Name, "name", "", "the host's name, a lowercase DNS label (e.g. nuc1)")
	f.StringVar(&h.Node, "node", "", "the Proxmox node the VM runs on (e.g. pve)")
	f.IntVar(&h.VMID, "vmid", 0, "the Proxmox VM id of the host VM")
	f.StringVar(&h.PublicIP, "public-ip", "", "the IPv4 address customers' DNS records point at")
	f.StringVar(&h.IngressURL, "ingress-url", "", "where the provisioner reaches the VM's Traefik, e.g. https://10.0.0.5")
	f.IntVar(&h.MaxInstances, "max-instances", 0, "how many instances the host may run")
	asJSON := f.Bool("json", false, "print the host as JSON")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	for _, name := range []string{"name", "node", "vmid", "public-ip", "ingress-url", "max-instances"} {
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
	added, err := o.hosts.Add(c.ctx, h)
	if err != nil {
		return flagError(path, err)
	}
	if *asJSON {
		return writeJSON(c.stdout, httpapi.ViewHost(added))
	}
	fmt.Fprintf(c.stdout, "Added host %s (%s/%d, %s, up to %d instances); it takes new instances now.\n",
		added.Name, added.Node, added.VMID, added.PublicIP, added.MaxInstances)
	return nil
}

// hostStateCommand returns the command that moves a host to state.
func hostStateCommand(state hosts.State) func(*cli, string, []string) error {
	about := map[hosts.State]string{
		hosts.Draining: "Drains a host: its instances keep running, and no new instance is placed on it.",
		hosts.Active:   "Enables a host: it takes new instances again, up to its maximum.",
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
Changes a host's capacity. Lowering it below the instances the host runs is allowed: the
host simply takes no new ones until it has room.`)
	maxInstances := f.Int("max-instances", 0, "how many instances the host may run")
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
	case p.MaxInstances != nil:
		fmt.Fprintf(c.stdout, "Host %s may now run %d instances (it runs %d).\n", h.Name, h.MaxInstances, h.Instances)
	case h.State == hosts.Draining:
		fmt.Fprintf(c.stdout, "Host %s is draining: it keeps its %d instance(s) and takes no new ones.\n", h.Name, h.Instances)
	case h.State == hosts.Disabled:
		fmt.Fprintf(c.stdout, "Host %s is disabled: it takes no new instances; its %d instance(s) are not moved.\n", h.Name, h.Instances)
	default:
		fmt.Fprintf(c.stdout, "Host %s is active: it takes new instances (%d/%d).\n", h.Name, h.Instances, h.MaxInstances)
	}
	return nil
}
