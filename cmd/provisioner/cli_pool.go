package main

import (
	"fmt"
	"io"

	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

// pool prints each plan's warm pool: ready and filling members against the targets.
func (c *cli) pool(path string, args []string) error {
	f := newFlags(path, "[--json]", `
Shows the warm pool: per plan, the n8n instances started and ready before anyone pays
(ready), the ones starting (filling) and the target, in total and per active host. A
payment takes a ready member and gets its login in about a second; with none ready it
takes the cold path (a new container, about ten seconds more).

Targets are the plans file's `+"`warm`"+` (across the fleet) and `+"`warm_per_host`"+` (on each
active host). `+"`provisioner serve`"+` refills the pool after every claim and every
PROVISIONER_POOL_INTERVAL, and recycles members whose plan or image changed or whose
host was drained.`)
	asJSON := f.Bool("json", false, "print the pool as JSON (the REST API's GET /v1/pool)")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	svc := instances.NewService(instances.Config{Store: o.instances, Plans: o.cfg.Plans, Placer: placer{o.hosts}, Logger: o.log})
	plans, err := svc.Pool(c.ctx)
	if err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	if *asJSON {
		return writeJSON(c.stdout, map[string]any{"plans": plans})
	}
	printPool(c.stdout, plans)
	return nil
}

func printPool(w io.Writer, plans []instances.PoolPlan) {
	t := newTable(w)
	fmt.Fprintln(t, "PLAN\tHOST\tREADY\tFILLING\tTARGET")
	for _, p := range plans {
		fmt.Fprintf(t, "%s\t(all)\t%d\t%d\t%d\n", p.Plan, p.Ready, p.Filling, p.Target)
		for _, h := range p.Hosts {
			fmt.Fprintf(t, "%s\t%s\t%d\t%d\t%d\n", p.Plan, h.Host, h.Ready, h.Filling, h.Target)
		}
	}
	t.Flush()
}
