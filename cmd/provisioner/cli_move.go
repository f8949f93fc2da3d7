package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

func (c *cli) instancesMove(path string, args []string) error {
	f := newFlags(path, "ID --to HOST [--wait] [--json]", `Moves an active or suspended instance to another host with its URL, owner login and
encryption key. The container is stopped, archived and uploaded to the bucket, provisioned
on HOST from that archive and health-checked; then the DNS record is switched and the old
container destroyed. Each step resumes after a crash. With --wait the command follows the
move and prints the customer's downtime. Needs PROVISIONER_BACKUP_S3_BUCKET.`)
	to := f.String("to", "", "the host to move the instance to (required)")
	asJSON := f.Bool("json", false, "print the instance and the job as JSON")
	wait := f.Bool("wait", false, "follow the move until it ends and print what it did")
	watch := followFlags(f)
	pos, help, err := c.parse(f, args, 1, 1, "instance id")
	if help || err != nil {
		return err
	}
	if *to == "" {
		return fmt.Errorf("%s: --to is required: the host to move the instance to", path)
	}
	if err := watch.check(path); err != nil {
		return err
	}
	return c.runAction(path, "move", pos[0], *wait, *asJSON, watch, "", func(s *instances.Service, id string) (instances.Instance, error) {
		return s.Move(c.ctx, id, *to)
	})
}

// evacuation is what `hosts evacuate --json` prints.
type evacuation struct {
	Host   string      `json:"host"`
	Total  int         `json:"total"`
	Moved  []fleetItem `json:"moved"`
	Failed []fleetItem `json:"failed"`
}

func (c *cli) hostsEvacuate(path string, args []string) error {
	f := newFlags(path, "NAME [--concurrency N] [--json]", `Empties a host: drains it (no new instance is placed on it), then moves each of its active
and suspended instances to the active host with the most room, N at a time, printing a line
per instance with its downtime as it finishes. A failed move leaves that instance running
where it was; the others go on. Run it again to retry what is left.`)
	concurrency := f.Int("concurrency", 2, "how many moves run at once (1 to 10)")
	asJSON := f.Bool("json", false, "print the result as JSON")
	watch := followFlags(f)
	pos, help, err := c.parse(f, args, 1, 1, "host name")
	if help || err != nil {
		return err
	}
	if *concurrency < 1 || *concurrency > 10 {
		return fmt.Errorf("%s: --concurrency must be between 1 and 10, got %d", path, *concurrency)
	}
	if err := watch.check(path); err != nil {
		return err
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	name := pos[0]
	draining := hosts.Draining
	if _, err := o.hosts.Update(c.ctx, name, hosts.Patch{State: &draining}); err != nil {
		return fmt.Errorf("%s %s: %w", path, name, err)
	}
	todo, err := o.instances.OnHost(c.ctx, name, instances.Active, instances.Suspended)
	if err != nil {
		return err
	}
	targets, err := spreadOver(c.ctx, o, todo)
	if err != nil {
		return fmt.Errorf("%s %s: %w", path, name, err)
	}
	q, err := o.queue(c.ctx)
	if err != nil {
		return err
	}
	watch.q = q
	out := c.stdout
	if *asJSON {
		out = c.stderr
	}
	fmt.Fprintf(out, "Evacuating %s: %d instance(s), %d at a time; %s is draining.\n", name, len(todo), *concurrency, name)
	report := evacuation{Host: name, Total: len(todo), Moved: []fleetItem{}, Failed: []fleetItem{}}
	done := 0
	var mu sync.Mutex
	limited(*concurrency, len(todo), func(i int) {
		item := c.moveOne(o, watch, todo[i], targets[i])
		mu.Lock()
		defer mu.Unlock()
		done++
		if item.Outcome == "moved" {
			report.Moved = append(report.Moved, item)
		} else {
			report.Failed = append(report.Failed, item)
		}
		fmt.Fprintf(out, "[%d/%d] %s: %s\n", done, len(todo), item.Slug, item.Detail)
	})
	if *asJSON {
		if err := writeJSON(c.stdout, report); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "Done: %d moved, %d failed.\n", len(report.Moved), len(report.Failed))
	}
	if len(report.Failed) > 0 {
		return fmt.Errorf("evacuating %s: %d of %d moves failed (first: %s: %s)", name, len(report.Failed), report.Total, report.Failed[0].Slug, report.Failed[0].Detail)
	}
	return nil
}

// spreadOver picks a target for each instance of todo: among the active hosts its plan
// fits on, the one with the most memory left (then the most free slots), counting what the
// earlier moves take, so the evacuation never asks a host for room it does not have.
func spreadOver(ctx context.Context, o *ops, todo []instances.Instance) ([]string, error) {
	rooms, err := placer{o.hosts}.Capacity(ctx)
	if err != nil {
		return nil, err
	}
	targets := make([]string, 0, len(todo))
	for _, in := range todo {
		best := -1
		for i, r := range rooms {
			if r.Fits(in.MemoryMB, in.DiskGB) && (best < 0 || roomier(r, rooms[best])) {
				best = i
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("the other active hosts have room for %d of the %d instances (%s does not fit): add a host, raise --max-instances or refresh a resized host",
				len(targets), len(todo), in.Slug)
		}
		rooms[best].Take(in.MemoryMB, in.DiskGB)
		targets = append(targets, rooms[best].Name)
	}
	return targets, nil
}

// roomier reports whether a has more room than b: more memory left to commit (a host
// whose memory is not known counts as having none to spare), then more free slots.
func roomier(a, b instances.HostRoom) bool {
	left := func(r instances.HostRoom) int {
		if r.MemoryMB == 0 {
			return 0
		}
		return r.MemoryMB - r.MemoryCommittedMB
	}
	if left(a) != left(b) {
		return left(a) > left(b)
	}
	return a.Free > b.Free
}

// limited runs fn(0..n-1), at most k at a time, and returns when all have returned.
func limited(k, n int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(k, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// moveOne requests the move of in to target and follows it to the end.
func (c *cli) moveOne(o *ops, watch *jobWatch, in instances.Instance, target string) fleetItem {
	ctx := c.ctx
	item := itemOf(in)
	baseline, err := lastEventID(ctx, o, in.ID)
	if err == nil {
		var res *rivertype.JobInsertResult
		_, res, err = o.request(ctx, func(s *instances.Service) (instances.Instance, error) { return s.Move(ctx, in.ID, target) })
		if err == nil {
			item.Job = res.Job.ID
			var row *rivertype.JobRow
			if row, err = watch.wait(ctx, res.Job.ID, retryPrinter(c.stderr, in.Slug)); err == nil && row.State != rivertype.JobStateCompleted {
				err = fmt.Errorf("job %d was %s: %s", row.ID, row.State, orDash(lastJobError(row)))
			}
		}
	}
	if err != nil {
		item.Outcome, item.Detail = outcomeFailed, "FAILED: "+err.Error()
		return item
	}
	item.Outcome, item.Detail = "moved", "moved to "+target
	if events, err := eventsAfter(ctx, o, in.ID, baseline); err == nil {
		for _, e := range events {
			if e.Kind == "moved" {
				item.Detail = e.Message
			}
		}
	}
	return item
}

func (c *cli) backupsList(path string, args []string) error {
	f := newFlags(path, "[--status S] [--limit N] [--json]", `Lists the backups of every instance, newest first: --status failed lists the backups that
could not be taken or uploaded (also at GET /v1/backups?status=failed).`)
	status := f.String("status", "", "only backups in this status: local, uploaded, failed or pruned")
	limit := f.Int("limit", 100, "how many, 1 to 1000")
	asJSON := f.Bool("json", false, "print JSON ({\"backups\": [...]}) instead of a table")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	switch instances.BackupStatus(*status) {
	case "", instances.BackupLocal, instances.BackupUploaded, instances.BackupFailed, instances.BackupPruned:
	default:
		return fmt.Errorf("%s: --status %q is not one of local, uploaded, failed, pruned", path, *status)
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("%s: --limit must be between 1 and 1000", path)
	}
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	list, err := o.instances.ListBackups(c.ctx, instances.BackupFilter{Status: instances.BackupStatus(*status), Limit: *limit})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(c.stdout, map[string]any{"backups": httpapi.ViewBackups(list)})
	}
	printBackups(c.stdout, list, true)
	return nil
}

// printBackups prints a table of backups; withInstance adds the instance column.
func printBackups(w interface{ Write([]byte) (int, error) }, list []instances.Backup, withInstance bool) {
	tw := newTable(w)
	head := "ID\tCREATED\tREASON\tSTATUS\tHOST\tBYTES\tKEPT UNTIL\tERROR"
	if withInstance {
		head = "INSTANCE\t" + head
	}
	fmt.Fprintln(tw, head)
	for _, b := range list {
		kept := "-"
		if b.ExpiresAt != nil {
			kept = b.ExpiresAt.UTC().Format(time.DateOnly)
		}
		where := b.Host
		if !b.OnHost {
			where = "-"
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s", b.ID, b.CreatedAt.UTC().Format(time.DateTime), b.Reason, b.Status, where, b.Bytes, kept, orDash(strings.ReplaceAll(b.Error, "\n", " ")))
		if withInstance {
			row = b.InstanceID + "\t" + row
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
}

var backupCommands = []command{
	{"list", "list the backups of every instance, newest first (--status failed)", (*cli).backupsList},
}
