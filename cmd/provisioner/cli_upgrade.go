package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

func (c *cli) instancesUpgrade(path string, args []string) error {
	f := newFlags(path, "ID --image IMG [--wait] [--json]\n       provisioner instances upgrade --all --image IMG [--host H] [--concurrency N] [--json]", `
Moves an active instance to another pinned n8n image: n8nctl backs it up, recreates the
container with the same volume and environment, and rolls back to the previous image and
data if the new one is not healthy.

With --all it upgrades every active instance (on --host only, if given) that does not run
IMG yet, N at a time: it queues N upgrades, follows each job to its end, prints a line per
instance as it finishes, and stops at the first failure (an upgrade rolled back, or a job
cancelled or given up), reporting what was upgraded and what was not started. Upgrades
already running when it stops are followed to their end.

The jobs run in the workers of `+"`provisioner serve`"+`: when none picks a job up within
--start-timeout, the command says so and stops (the queued job runs once a server starts).`)
	image := f.String("image", "", "the n8n image to run, pinned to a version tag or digest (required)")
	all := f.Bool("all", false, "upgrade every active instance instead of one")
	host := f.String("host", "", "with --all: only the instances on this host")
	concurrency := f.Int("concurrency", 2, "with --all: how many upgrades run at once (1 to 20)")
	wait := f.Bool("wait", false, "without --all: follow the job until it ends")
	asJSON := f.Bool("json", false, "print the result as JSON")
	watch := followFlags(f)
	pos, help, err := c.parse(f, args, 0, 1, "instance id")
	if help || err != nil {
		return err
	}
	switch {
	case *all && len(pos) > 0:
		return fmt.Errorf("%s: give an instance id or --all, not both", path)
	case !*all && len(pos) == 0:
		return fmt.Errorf("%s: give an instance id, or --all for the fleet (see provisioner %s --help)", path, path)
	case *image == "":
		return fmt.Errorf("%s: --image is required: the pinned n8n image to move to", path)
	case !plans.PinnedImage(*image):
		return fmt.Errorf("%s: --image %q must be pinned to a version tag or digest, never latest", path, *image)
	case !*all && (f.provided("host") || f.provided("concurrency")):
		return fmt.Errorf("%s: --host and --concurrency go with --all", path)
	case *all && *wait:
		return fmt.Errorf("%s: --wait goes with one instance; --all always follows its upgrades", path)
	case *concurrency < 1 || *concurrency > 20:
		return fmt.Errorf("%s: --concurrency must be between 1 and 20, got %d", path, *concurrency)
	}
	if err := watch.check(path); err != nil {
		return err
	}
	if !*all {
		return c.runAction(path, "upgrade", pos[0], *wait, *asJSON, watch, *image, func(s *instances.Service, id string) (instances.Instance, error) {
			return s.Upgrade(c.ctx, id, *image)
		})
	}
	return c.upgradeFleet(path, *image, *host, *concurrency, *asJSON, watch)
}

// Outcomes of one instance's upgrade.
const (
	outcomeUpgraded    = "upgraded"
	outcomeRolledBack  = "rolled_back"  // n8nctl found the new image unhealthy and went back
	outcomeNotUpgraded = "not_upgraded" // the job ended, but the instance does not run the image
	outcomeFailed      = "failed"       // the upgrade could not even be requested
	outcomeNoWorker    = "no_worker"    // nobody runs the queue
	outcomeInterrupted = "interrupted"  // the CLI was stopped while following the job
	// a job's terminal state (cancelled, discarded) is an outcome of its own
)

// upgradeOutcome judges an upgrade whose job has ended, from the job's state, the
// timeline events written since it was requested, and the image the instance runs now.
func (o *ops) upgradeOutcome(ctx context.Context, id, image string, row *rivertype.JobRow, events []instances.Event) (outcome, detail string) {
	if row.State != rivertype.JobStateCompleted {
		detail = lastJobError(row)
		for _, e := range events {
			if e.Kind == "action_failed" {
				detail = e.Message
			}
		}
		return string(row.State), orDash(detail)
	}
	for _, e := range events {
		if e.Kind == "upgrade_rolled_back" {
			return outcomeRolledBack, e.Message
		}
	}
	in, err := o.instances.Get(ctx, id)
	if err != nil {
		return outcomeNotUpgraded, "the job completed, but the instance cannot be read: " + err.Error()
	}
	if in.N8nImage != image {
		return outcomeNotUpgraded, fmt.Sprintf("the job completed, but the instance is %s and runs %s", in.Status, in.N8nImage)
	}
	for _, e := range events {
		if e.Kind == "upgraded" {
			return outcomeUpgraded, e.Message
		}
	}
	return outcomeUpgraded, "runs " + image
}

// fleetItem is one instance of a fleet upgrade.
type fleetItem struct {
	ID      string `json:"id"`
	Slug    string `json:"slug"`
	Host    string `json:"host"`
	Job     int64  `json:"job,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// fleetJSON is what `instances upgrade --all --json` prints.
type fleetJSON struct {
	Image       string `json:"image"`
	Host        string `json:"host,omitempty"`
	Concurrency int    `json:"concurrency"`
	// Total counts the instances that were to be upgraded (not those already on Image).
	Total int `json:"total"`
	// Stopped is true when a failure stopped the upgrade before every instance was done.
	Stopped    bool        `json:"stopped"`
	Upgraded   []fleetItem `json:"upgraded"`
	Failed     []fleetItem `json:"failed"`
	NotStarted []fleetItem `json:"not_started"`
	Already    []fleetItem `json:"already_on_image"`
}

func itemOf(in instances.Instance) fleetItem {
	return fleetItem{ID: in.ID, Slug: in.Slug, Host: hostOfInstance(in)}
}

func (c *cli) upgradeFleet(path, image, host string, concurrency int, asJSON bool, watch *jobWatch) error {
	o, err := c.open()
	if err != nil {
		return err
	}
	defer o.close()
	if host != "" {
		if _, err := o.hosts.Get(c.ctx, host); err != nil {
			return fmt.Errorf("%s: --host: %w", path, err)
		}
	}
	q, err := o.queue(c.ctx)
	if err != nil {
		return err
	}
	watch.q = q
	report := fleetJSON{Image: image, Host: host, Concurrency: concurrency,
		Upgraded: []fleetItem{}, Failed: []fleetItem{}, NotStarted: []fleetItem{}, Already: []fleetItem{}}
	var todo []instances.Instance
	for page := (instances.Page{Limit: instances.MaxPageSize}); ; {
		list, next, err := o.instances.List(c.ctx, instances.Filter{Status: instances.Active, Host: host}, page)
		if err != nil {
			return err
		}
		for _, in := range list {
			if in.N8nImage == image {
				report.Already = append(report.Already, itemOf(in))
			} else {
				todo = append(todo, in)
			}
		}
		if next == "" {
			break
		}
		page.Cursor = next
	}
	report.Total = len(todo)
	out := c.stdout // the progress; with --json stdout carries only the report
	if asJSON {
		out = c.stderr
	}
	where := ""
	if host != "" {
		where = " on " + host
	}
	fmt.Fprintf(out, "Upgrading %d active instance(s)%s to %s, %d at a time (%d already on it).\n", len(todo), where, image, concurrency, len(report.Already))

	var (
		mu      sync.Mutex
		next    int
		stopped bool
		wg      sync.WaitGroup
		results = make(chan fleetItem)
	)
	for range min(concurrency, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if stopped || next == len(todo) || c.ctx.Err() != nil {
					mu.Unlock()
					return
				}
				in := todo[next]
				next++
				mu.Unlock()
				item := c.upgradeOne(o, watch, in, image, out)
				if item.Outcome != outcomeUpgraded {
					mu.Lock()
					stopped = true
					mu.Unlock()
				}
				results <- item
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()
	done := 0
	for item := range results {
		done++
		if item.Outcome == outcomeUpgraded {
			report.Upgraded = append(report.Upgraded, item)
			fmt.Fprintf(out, "[%d/%d] %s on %s: upgraded (job %d)\n", done, len(todo), item.Slug, item.Host, item.Job)
			continue
		}
		report.Failed = append(report.Failed, item)
		fmt.Fprintf(out, "[%d/%d] %s on %s: FAILED (%s): %s\n", done, len(todo), item.Slug, item.Host, item.Outcome, item.Detail)
	}
	for _, in := range todo[next:] {
		report.NotStarted = append(report.NotStarted, itemOf(in))
	}
	report.Stopped = len(report.NotStarted) > 0 || len(report.Failed) > 0

	if asJSON {
		if err := writeJSON(c.stdout, report); err != nil {
			return err
		}
	} else {
		printFleetSummary(c.stdout, report)
	}
	if len(report.Failed) > 0 {
		// Several upgrades may fail at once; the error names the first to finish, and the
		// report lists them all.
		f := report.Failed[0]
		return fmt.Errorf("fleet upgrade stopped: %s (%s) on %s: %s: %s; %d of %d upgraded, %d not started",
			f.Slug, f.ID, f.Host, f.Outcome, f.Detail, len(report.Upgraded), report.Total, len(report.NotStarted))
	}
	if err := c.ctx.Err(); err != nil {
		return fmt.Errorf("fleet upgrade interrupted: %d of %d upgraded, %d not started", len(report.Upgraded), report.Total, len(report.NotStarted))
	}
	return nil
}

func printFleetSummary(w io.Writer, r fleetJSON) {
	if !r.Stopped {
		fmt.Fprintf(w, "Done: %d upgraded; every active instance runs %s.\n", len(r.Upgraded), r.Image)
		return
	}
	fmt.Fprintf(w, "Stopped: %d of %d upgraded, %d failed, %d not started.\n", len(r.Upgraded), r.Total, len(r.Failed), len(r.NotStarted))
	if len(r.NotStarted) > 0 {
		fmt.Fprintln(w, "Not started:")
		tw := newTable(w)
		for _, it := range r.NotStarted {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", it.Slug, it.ID, it.Host)
		}
		tw.Flush()
	}
}

// upgradeOne requests the upgrade of in and follows its job to the end.
func (c *cli) upgradeOne(o *ops, watch *jobWatch, in instances.Instance, image string, progress io.Writer) fleetItem {
	ctx := c.ctx
	item := itemOf(in)
	baseline, err := lastEventID(ctx, o, in.ID)
	if err != nil {
		item.Outcome, item.Detail = outcomeFailed, err.Error()
		return item
	}
	_, res, err := o.request(ctx, func(s *instances.Service) (instances.Instance, error) { return s.Upgrade(ctx, in.ID, image) })
	if err == nil && (res == nil || res.Job == nil) {
		err = fmt.Errorf("the request queued no job")
	}
	if err != nil {
		item.Outcome, item.Detail = outcomeFailed, "the upgrade could not be requested: "+err.Error()
		return item
	}
	item.Job = res.Job.ID
	row, err := watch.wait(ctx, res.Job.ID, retryPrinter(progress, in.Slug))
	switch {
	case err != nil && ctx.Err() != nil:
		item.Outcome, item.Detail = outcomeInterrupted, fmt.Sprintf("stopped following job %d; it goes on in the server", res.Job.ID)
		return item
	case err != nil:
		item.Outcome, item.Detail = outcomeNoWorker, err.Error()
		if _, ok := err.(*noWorkerError); !ok {
			item.Outcome = outcomeFailed
		}
		return item
	}
	events, err := eventsAfter(ctx, o, in.ID, baseline)
	if err != nil {
		item.Outcome, item.Detail = outcomeFailed, err.Error()
		return item
	}
	item.Outcome, item.Detail = o.upgradeOutcome(ctx, in.ID, image, row, events)
	return item
}

// jobWatch follows a job the CLI queued until it ends. The job runs in another process
// (a server's worker), so its row is read every poll interval.
type jobWatch struct {
	q interface {
		Job(ctx context.Context, id int64) (*rivertype.JobRow, error)
	}
	poll         time.Duration
	startTimeout time.Duration
}

// noWorkerError says that no worker picked a job up: no server runs on this database.
type noWorkerError struct {
	job    int64
	waited time.Duration
}

func (e *noWorkerError) Error() string {
	return fmt.Sprintf("no worker has picked up job %d after %s: is `provisioner serve` running on this database (PROVISIONER_DATABASE_URL)? The job stays queued and runs when a server starts", e.job, e.waited)
}

// wait returns the job's row once it is completed, cancelled or discarded. onRetry is told
// of each failed attempt that River will retry. It returns a *noWorkerError when no worker
// has started the job within the start timeout, and ctx's error when ctx ends.
func (w *jobWatch) wait(ctx context.Context, id int64, onRetry func(rivertype.AttemptError)) (*rivertype.JobRow, error) {
	ticker := time.NewTicker(w.poll)
	defer ticker.Stop()
	startTimer := time.NewTimer(w.startTimeout)
	defer startTimer.Stop()
	startTimeout := startTimer.C
	timedOut := false
	reported := 0
	for {
		row, err := w.q.Job(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("reading job %d: %w", id, err)
		}
		switch row.State {
		case rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded:
			return row, nil
		}
		for ; reported < len(row.Errors); reported++ {
			if onRetry != nil {
				onRetry(row.Errors[reported])
			}
		}
		if row.Attempt > 0 {
			startTimeout = nil // a worker has it
		} else if timedOut {
			return row, &noWorkerError{job: id, waited: w.startTimeout}
		}
		select {
		case <-ctx.Done():
			return row, ctx.Err()
		case <-startTimeout:
			timedOut, startTimeout = true, nil
		case <-ticker.C:
		}
	}
}
