package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

var instanceCommands = []command{
	{"list", "list instances, filtered by status, host or client", (*cli).instancesList},
	{"show", "show one instance with its timeline and backups", (*cli).instancesShow},
	{"suspend", "stop an instance for the operator (a payment does not lift it)", actionCommand("suspend",
		"Suspends an active instance: its container is stopped and stays stopped across host reboots. The suspension is manual: a payment does not lift it, `instances resume` does.",
		(*instances.Service).Suspend)},
	{"resume", "lift any suspension, health-checked", actionCommand("resume",
		"Resumes a suspended instance (a billing or a manual suspension); it is active again once n8n answers its health check.",
		(*instances.Service).Resume)},
	{"restart", "restart an active instance's container", actionCommand("restart",
		"Restarts an active instance's container and waits for n8n to be healthy.",
		(*instances.Service).Restart)},
	{"upgrade", "move an instance, or the whole fleet, to another pinned n8n image", (*cli).instancesUpgrade},
	{"backup", "take a backup of an instance's data now", actionCommand("backup",
		"Takes a backup of an active or suspended instance's data on its host (n8nctl backup: a tar encrypted there with a key of its own, with a manifest and checksum), then uploads it to the bucket when one is configured.",
		(*instances.Service).Backup)},
	{"restore", "put one of an instance's backups back (--backup ID [--host H])", (*cli).instancesRestore},
	{"move", "move an instance to another host (--to HOST), same URL, login and key", (*cli).instancesMove},
	{"delete", "back up, then delete an instance", actionCommand("delete",
		"Deletes an instance now: a final backup first (kept for the retention period, with the instance's sealed encryption key), then its container and DNS record.",
		(*instances.Service).Delete)},
	{"retry", "provision a failed instance again", actionCommand("retry",
		"Starts a failed instance's provisioning again from the beginning, keeping its slug and secrets.",
		(*instances.Service).Retry)},
}

func hostOfInstance(in instances.Instance) string {
	if in.Host == nil {
		return ""
	}
	return *in.Host
}

// statusText is the status with why, for people.
func statusText(in instances.Instance) string {
	switch {
	case in.Status == instances.Suspended && in.SuspendReason != "":
		return string(in.Status) + " (" + in.SuspendReason + ")"
	case in.Status == instances.Failed && in.FailureReason != "":
		return string(in.Status) + " (" + in.FailureReason + ")"
	case in.DegradedSince != nil:
		// The health flag beside the status: degraded is not a status of its own.
		return string(in.Status) + " (degraded)"
	}
	return string(in.Status)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) instancesList(path string, args []string) error {
	f := newFlags(path, "[--status S] [--host H] [--client C] [--limit N] [--cursor ID] [--json]",
		"Lists instances, oldest first, one page at a time.")
	status := f.String("status", "", "only instances in this status: "+joinStatuses())
	host := f.String("host", "", "only instances on this host")
	client := f.String("client", "", "only this client's instances (the portal's client id)")
	limit := f.Int("limit", instances.DefaultPageSize, fmt.Sprintf("page size, 1 to %d", instances.MaxPageSize))
	cursor := f.String("cursor", "", "start after this instance id (the previous page's next cursor)")
	asJSON := f.Bool("json", false, "print JSON ({\"instances\": [...], \"next_cursor\": ...}) instead of a table")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	if *status != "" && !instances.Status(*status).Valid() {
		return fmt.Errorf("%s: --status %q is not one of %s", path, *status, joinStatuses())
	}
	if *limit < 1 || *limit > instances.MaxPageSize {
		return fmt.Errorf("%s: --limit must be between 1 and %d, got %d", path, instances.MaxPageSize, *limit)
	}
	if *cursor != "" && !instances.ValidID(*cursor) {
		return fmt.Errorf("%s: --cursor %q is not an instance id", path, *cursor)
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	list, next, err := o.instances.List(c.ctx, instances.Filter{Status: instances.Status(*status), Host: *host, ClientID: *client},
		instances.Page{Cursor: *cursor, Limit: *limit})
	if err != nil {
		return flagError(path, err)
	}
	if *asJSON {
		out := struct {
			Instances  []httpapi.InstanceJSON `json:"instances"`
			NextCursor *string                `json:"next_cursor"`
		}{Instances: make([]httpapi.InstanceJSON, 0, len(list))}
		for _, in := range list {
			out.Instances = append(out.Instances, httpapi.ViewInstance(in))
		}
		if next != "" {
			out.NextCursor = &next
		}
		return writeJSON(c.stdout, out)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "No instances match.")
		return nil
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "ID\tSLUG\tSTATUS\tHOST\tPLAN\tIMAGE\tCLIENT\tCREATED")
	for _, in := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Slug, statusText(in), orDash(hostOfInstance(in)),
			in.PlanID, in.N8nImage, in.ClientID, in.CreatedAt.UTC().Format(time.DateTime))
	}
	tw.Flush()
	if next != "" {
		fmt.Fprintf(c.stdout, "\nMore: add --cursor %s for the next page.\n", next)
	}
	return nil
}

func joinStatuses() string {
	s := make([]string, 0, len(instances.Statuses))
	for _, st := range instances.Statuses {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

func (c *cli) instancesShow(path string, args []string) error {
	f := newFlags(path, "ID [--json]", "Shows an instance: where it runs, its plan and image, its timeline and its backups.")
	asJSON := f.Bool("json", false, "print the instance with its timeline as JSON")
	pos, help, err := c.parse(f, args, 1, 1, "instance id")
	if help || err != nil {
		return err
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	in, err := o.instances.Get(c.ctx, pos[0])
	if err != nil {
		return fmt.Errorf("%s %s: %w", path, pos[0], err)
	}
	events, err := o.instances.Timeline(c.ctx, in.ID)
	if err != nil {
		return err
	}
	if *asJSON {
		v := httpapi.ViewInstance(in)
		v.Timeline = httpapi.ViewTimeline(events)
		return writeJSON(c.stdout, v)
	}
	backups, err := o.instances.Backups(c.ctx, in.ID)
	if err != nil {
		return err
	}
	tw := newTable(c.stdout)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("ID", in.ID)
	row("Slug", in.Slug)
	row("URL", in.URL)
	row("Status", statusText(in))
	if in.DegradedSince != nil {
		row("Degraded since", in.DegradedSince.UTC().Format(time.RFC3339))
	}
	row("Step", in.Step)
	row("Host", hostOfInstance(in))
	disk := "no quota"
	if in.DiskGB > 0 {
		disk = fmt.Sprintf("%d GiB disk", in.DiskGB)
	}
	row("Plan", fmt.Sprintf("%s (%s CPU, %d MiB, %s)", in.PlanID, formatFloat(in.CPUs), in.MemoryMB, disk))
	row("Image", in.N8nImage)
	row("Client", in.ClientID)
	if in.SubscriptionID != nil {
		row("Subscription", *in.SubscriptionID)
	}
	if in.SuspendAt != nil {
		row("Suspends at", in.SuspendAt.UTC().Format(time.RFC3339))
	}
	if in.DeleteAfter != nil {
		row("Deleted after", in.DeleteAfter.UTC().Format(time.RFC3339))
	}
	row("Created", in.CreatedAt.UTC().Format(time.RFC3339))
	row("Updated", in.UpdatedAt.UTC().Format(time.RFC3339))
	tw.Flush()

	fmt.Fprintln(c.stdout, "\nTimeline:")
	printEvents(c.stdout, events)
	if len(backups) > 0 {
		fmt.Fprintln(c.stdout, "\nBackups:")
		printBackups(c.stdout, backups, false)
	}
	return nil
}

func printEvents(w io.Writer, events []instances.Event) {
	tw := newTable(w)
	fmt.Fprintln(tw, "AT\tKIND\tMESSAGE")
	for _, e := range events {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.At.UTC().Format(time.DateTime), e.Kind, e.Message)
	}
	tw.Flush()
}

func formatFloat(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", f), "0"), ".")
}

// followFlags adds the flags that control how the CLI follows a job it queued.
func followFlags(f *flags) *jobWatch {
	w := &jobWatch{}
	f.DurationVar(&w.poll, "poll-interval", 500*time.Millisecond, "how often the job's state is read while following it")
	f.DurationVar(&w.startTimeout, "start-timeout", time.Minute, "give up when no worker (provisioner serve) has picked the job up after this long")
	return w
}

func (w *jobWatch) check(path string) error {
	switch {
	case w.poll <= 0:
		return fmt.Errorf("%s: --poll-interval must be a positive duration such as 500ms", path)
	case w.startTimeout <= 0:
		return fmt.Errorf("%s: --start-timeout must be a positive duration such as 1m", path)
	}
	return nil
}

// actionJSON is what an action command prints with --json.
type actionJSON struct {
	Action   string               `json:"action"`
	Instance httpapi.InstanceJSON `json:"instance"`
	// Job is the job that carries the action; Duplicate says that an identical request
	// was already queued and this one was folded into it.
	Job *jobJSON `json:"job"`
	// Outcome is set with --wait: how the job ended and what it wrote on the timeline.
	Outcome *outcomeJSON `json:"outcome,omitempty"`
}

type jobJSON struct {
	ID        int64  `json:"id"`
	State     string `json:"state"`
	Duplicate bool   `json:"duplicate"`
}

type outcomeJSON struct {
	State  string              `json:"state"`
	Error  string              `json:"error,omitempty"`
	Events []httpapi.EventJSON `json:"events"`
}

// actionCommand returns the command for one of the service's requests on an instance.
func (c *cli) instancesRestore(path string, args []string) error {
	f := newFlags(path, "ID --backup BACKUP_ID [--host HOST] [--wait] [--json]", `Puts the data of one of the instance's backups back (see `+"`instances show ID`"+` for
its backups). On the instance's host (no --host) the archive is taken from that host, or
downloaded from the bucket when the host does not hold it. With --host naming another host,
the instance is moved there with that backup's data (see `+"`instances move`"+`). n8nctl
checks the archive's SHA-256 and decrypts it before it touches anything; an active instance
is health-checked after.`)
	backup := f.String("backup", "", "the id of the backup to restore (required)")
	host := f.String("host", "", "restore on this host (default: the instance's)")
	asJSON := f.Bool("json", false, "print the instance and the job as JSON")
	wait := f.Bool("wait", false, "follow the job until it ends and print what it did")
	watch := followFlags(f)
	pos, help, err := c.parse(f, args, 1, 1, "instance id")
	if help || err != nil {
		return err
	}
	if *backup == "" {
		return fmt.Errorf("%s: --backup is required", path)
	}
	if err := watch.check(path); err != nil {
		return err
	}
	return c.runAction(path, "restore", pos[0], *wait, *asJSON, watch, "", func(s *instances.Service, id string) (instances.Instance, error) {
		return s.Restore(c.ctx, id, *backup, *host)
	})
}

func actionCommand(name, about string, act func(*instances.Service, context.Context, string) (instances.Instance, error)) func(*cli, string, []string) error {
	return func(c *cli, path string, args []string) error {
		f := newFlags(path, "ID [--wait] [--json]", about+`

The action is queued as a job that the workers of a running `+"`provisioner serve`"+` execute;
an identical request while one is queued adds nothing. With --wait the command follows the
job to its end and fails when the action does.`)
		asJSON := f.Bool("json", false, "print the instance and the job as JSON")
		wait := f.Bool("wait", false, "follow the job until it ends and print what it did")
		watch := followFlags(f)
		pos, help, err := c.parse(f, args, 1, 1, "instance id")
		if help || err != nil {
			return err
		}
		if err := watch.check(path); err != nil {
			return err
		}
		return c.runAction(path, name, pos[0], *wait, *asJSON, watch, "", func(s *instances.Service, id string) (instances.Instance, error) {
			return act(s, c.ctx, id)
		})
	}
}

// runAction requests an action on instance id, reports the job and, with wait, follows it.
// image is the target of an upgrade (its outcome is judged by the image that runs).
func (c *cli) runAction(path, action, id string, wait, asJSON bool, watch *jobWatch, image string,
	act func(*instances.Service, string) (instances.Instance, error)) error {
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	baseline, err := lastEventID(c.ctx, o, id)
	if err != nil {
		return err
	}
	in, res, err := o.request(c.ctx, func(s *instances.Service) (instances.Instance, error) { return act(s, id) })
	if err != nil {
		return flagError(path+" "+id, err)
	}
	if res == nil || res.Job == nil {
		return fmt.Errorf("%s %s: the request queued no job", path, id)
	}
	out := actionJSON{Action: action, Instance: httpapi.ViewInstance(in),
		Job: &jobJSON{ID: res.Job.ID, State: string(res.Job.State), Duplicate: res.UniqueSkippedAsDuplicate}}
	progress := c.stdout
	if asJSON {
		progress = c.stderr
	}
	if res.UniqueSkippedAsDuplicate {
		fmt.Fprintf(progress, "%s of %s (%s) is already queued as job %d; nothing added.\n", capitalize(action), in.Slug, in.ID, res.Job.ID)
	} else {
		fmt.Fprintf(progress, "%s of %s (%s) requested: job %d is queued for the workers of `provisioner serve`.\n", capitalize(action), in.Slug, in.ID, res.Job.ID)
	}
	if !wait {
		if !asJSON {
			fmt.Fprintf(progress, "Follow it with: provisioner instances show %s\n", in.ID)
		}
		if asJSON {
			return writeJSON(c.stdout, out)
		}
		return nil
	}
	q, err := o.queue(c.ctx)
	if err != nil {
		return err
	}
	watch.q = q
	row, err := watch.wait(c.ctx, res.Job.ID, retryPrinter(progress, in.Slug))
	if err != nil {
		return fmt.Errorf("%s %s: %w", path, id, err)
	}
	events, err := eventsAfter(c.ctx, o, id, baseline)
	if err != nil {
		return err
	}
	out.Outcome = &outcomeJSON{State: string(row.State), Error: lastJobError(row), Events: httpapi.ViewTimeline(events)}
	failure := ""
	switch {
	case row.State != rivertype.JobStateCompleted:
		failure = fmt.Sprintf("job %d was %s: %s", row.ID, row.State, orDash(lastJobError(row)))
	case image != "":
		if outcome, detail := o.upgradeOutcome(c.ctx, id, image, row, events); outcome != outcomeUpgraded {
			failure = outcome + ": " + detail
		}
	}
	if asJSON {
		if err := writeJSON(c.stdout, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(progress, "Job %d %s.\n", row.ID, row.State)
		if len(events) > 0 {
			printEvents(progress, events)
		}
	}
	if failure != "" {
		return fmt.Errorf("%s of %s (%s) failed: %s", action, in.Slug, in.ID, failure)
	}
	return nil
}

// retryPrinter reports a failed attempt that River will retry.
func retryPrinter(w io.Writer, slug string) func(rivertype.AttemptError) {
	return func(e rivertype.AttemptError) {
		fmt.Fprintf(w, "  %s: attempt %d failed, retrying: %s\n", slug, e.Attempt, e.Error)
	}
}

func lastJobError(row *rivertype.JobRow) string {
	if row == nil || len(row.Errors) == 0 {
		return ""
	}
	return row.Errors[len(row.Errors)-1].Error
}

// lastEventID returns the id of the newest timeline event of instance id (0 for none or
// an unknown instance), so that what a job writes afterwards can be told apart.
func lastEventID(ctx context.Context, o *ops, id string) (int64, error) {
	if !instances.ValidID(id) {
		return 0, nil // the request reports the instance as not found
	}
	events, err := o.instances.Timeline(ctx, id)
	if err != nil || len(events) == 0 {
		return 0, err
	}
	return events[len(events)-1].ID, nil
}

// eventsAfter returns instance id's timeline events newer than baseline, without the
// CLI's own "requested" entry.
func eventsAfter(ctx context.Context, o *ops, id string, baseline int64) ([]instances.Event, error) {
	events, err := o.instances.Timeline(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []instances.Event
	for _, e := range events {
		if e.ID > baseline && e.Kind != "requested" {
			out = append(out, e)
		}
	}
	return out, nil
}
