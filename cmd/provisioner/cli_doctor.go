package main

import (
	"fmt"
	"io"

	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

func (c *cli) doctor(path string, args []string) error {
	f := newFlags(path, "[--fix] [--json]", `
Compares what the database says with what is live: every active or suspended instance
with `+"`n8nctl list`"+` on its host (container exists, runs when it should, caps, image) and
with its DNS record; every host and the DNS zone for containers and records that no
instance owns (orphans). Prints the findings and exits non-zero when drift is left.

--fix repairs the safe cases (a missing or wrong DNS record, a stopped active container,
a running suspended one) and records each repair on the instance's timeline. Orphans are
only reported: a container no instance owns may hold a customer's only copy of data.

It runs here, not in the server: it needs the same Proxmox and Cloudflare settings
(PROVISIONER_PROXMOX_*, PROVISIONER_CLOUDFLARE_*) as `+"`provisioner serve`"+`.`)
	fix := f.Bool("fix", false, "repair the safe differences")
	asJSON := f.Bool("json", false, "print the report as JSON")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	svc, err := o.service(c.ctx)
	if err != nil {
		return err
	}
	report, err := svc.Doctor(c.ctx, *fix, func(done, total int) {
		fmt.Fprintf(c.stderr, "doctor: hosts checked %d/%d\n", done, total)
	})
	if err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	if *asJSON {
		if err := writeJSON(c.stdout, report); err != nil {
			return err
		}
	} else {
		printReport(c.stdout, report)
	}
	if left := unfixed(report); left > 0 {
		return fmt.Errorf("doctor: drift left: %d of %d finding(s) not fixed", left, len(report.Findings))
	}
	return nil
}

func unfixed(r instances.Report) int {
	n := 0
	for _, f := range r.Findings {
		if !f.Fixed {
			n++
		}
	}
	return n
}

func printReport(w io.Writer, r instances.Report) {
	if len(r.Findings) == 0 {
		fmt.Fprintf(w, "No drift: %d instance(s) on %d host(s) match the database and DNS.\n", r.Instances, r.Hosts)
		return
	}
	fixed := len(r.Findings) - unfixed(r)
	fmt.Fprintf(w, "Checked %d instance(s) on %d host(s): %d finding(s), %d fixed.\n\n", r.Instances, r.Hosts, len(r.Findings), fixed)
	tw := newTable(w)
	fmt.Fprintln(tw, "KIND\tHOST\tSLUG\tDETAIL\tFIXED")
	for _, f := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Kind, orDash(f.Host), orDash(f.Slug), f.Detail, fixedText(f))
	}
	tw.Flush()
	if !r.Drift() {
		return
	}
	for _, f := range r.Findings {
		if f.Fixable && !f.Fixed && f.FixError == "" {
			fmt.Fprintln(w, "\nRun `provisioner doctor --fix` to repair the fixable ones.")
			return
		}
	}
}

func fixedText(f instances.Finding) string {
	switch {
	case f.Fixed:
		return "yes"
	case f.FixError != "":
		return "no: " + f.FixError
	case f.Fixable:
		return "no (fixable with --fix)"
	}
	return "no (needs the operator)"
}
