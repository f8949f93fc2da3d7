package instances

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

// Action is a lifecycle operation on a running (or suspended) instance.
type Action string

const (
	ActSuspend Action = "suspend" // Reason: billing or manual
	ActResume  Action = "resume"  // Reason: billing (a payment) or manual (the operator)
	ActRestart Action = "restart"
	ActResize  Action = "resize" // apply the instance's plan resources to its container
	ActUpgrade Action = "upgrade"
	ActDelete  Action = "delete" // final backup, then container, DNS record, status deleted
	ActBackup  Action = "backup"
	ActRestore Action = "restore" // BackupID: put a backup's data back, on the instance's host
)

// Suspension reasons.
const (
	ReasonBilling = "billing"
	ReasonManual  = "manual"
)

// ActionArgs is a lifecycle job. Identical pending jobs are not duplicated.
type ActionArgs struct {
	InstanceID string `json:"instance_id" river:"unique"`
	Action     Action `json:"action" river:"unique"`
	Reason     string `json:"reason,omitempty" river:"unique"`
	Image      string `json:"image,omitempty" river:"unique"`
	BackupID   string `json:"backup_id,omitempty" river:"unique"`
}

// Kind names the job.
func (ActionArgs) Kind() string { return "instance_action" }

// actionAttempts is only a backstop: an action is given up when it has been failing for
// longer than the step deadline, on the short, capped backoff (NextRetry).
const actionAttempts = 1000

func (s *Service) enqueue(ctx context.Context, args ActionArgs) error {
	_, err := s.cfg.Queue.Insert(ctx, args, &river.InsertOpts{MaxAttempts: actionAttempts, UniqueOpts: uniqueWhileQueued})
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "cannot enqueue %s of instance %s", args.Action, args.InstanceID)
	}
	return nil
}

// request checks that action may start on instance id now, enqueues it and returns the
// instance. allowed lists the statuses the action accepts.
func (s *Service) request(ctx context.Context, args ActionArgs, allowed ...Status) (Instance, error) {
	in, err := s.store.Get(ctx, args.InstanceID)
	if err != nil {
		return in, err
	}
	if !statusIn(in.Status, allowed) {
		return in, apperr.New(apperr.Conflict, "cannot %s an instance that is %s", args.Action, in.Status)
	}
	if err := s.enqueue(ctx, args); err != nil {
		return in, err
	}
	return in, s.store.Apply(ctx, in.ID, nil, "requested", string(args.Action)+" requested")
}

func statusIn(st Status, allowed []Status) bool {
	for _, a := range allowed {
		if st == a {
			return true
		}
	}
	return false
}

// Suspend stops an active instance for the operator (manual: a payment does not lift it).
func (s *Service) Suspend(ctx context.Context, id string) (Instance, error) {
	return s.request(ctx, ActionArgs{InstanceID: id, Action: ActSuspend, Reason: ReasonManual}, Active, Suspended)
}

// Resume lifts any suspension (the operator's decision).
func (s *Service) Resume(ctx context.Context, id string) (Instance, error) {
	return s.request(ctx, ActionArgs{InstanceID: id, Action: ActResume, Reason: ReasonManual}, Suspended)
}

// Restart restarts an active instance's container (portal and operator).
func (s *Service) Restart(ctx context.Context, id string) (Instance, error) {
	return s.request(ctx, ActionArgs{InstanceID: id, Action: ActRestart}, Active)
}

// Upgrade moves an active instance to another pinned n8n image: backup first, rolled back
// if the new one is not healthy.
func (s *Service) Upgrade(ctx context.Context, id, image string) (Instance, error) {
	if !plans.PinnedImage(image) {
		return Instance{}, apperr.New(apperr.Invalid, "image %q must be pinned to a version tag or digest, never latest", image)
	}
	return s.request(ctx, ActionArgs{InstanceID: id, Action: ActUpgrade, Image: image}, Active)
}

// Delete backs up and deletes an instance now (the operator's decision). A deletion that
// gave up (a host down for hours) can be asked for again: it resumes where it stopped,
// without a second final backup.
func (s *Service) Delete(ctx context.Context, id string) (Instance, error) {
	return s.request(ctx, ActionArgs{InstanceID: id, Action: ActDelete}, Active, Suspended, Failed, Deleting)
}

// Backup takes a backup of an instance's data now.
func (s *Service) Backup(ctx context.Context, id string) (Instance, error) {
	return s.request(ctx, ActionArgs{InstanceID: id, Action: ActBackup}, Active, Suspended)
}

// Restore puts the data of one of the instance's backups back (its workflows, credentials
// and executions as they were). On the instance's own host (host empty or the same), the
// archive is taken from that host, or downloaded from the bucket when the host does not
// hold it. On another host, the instance is moved there with that backup's data. It
// returns NotFound for a backup of another instance and Invalid for a pruned backup or one
// that no host or bucket holds.
func (s *Service) Restore(ctx context.Context, id, backupID, host string) (Instance, error) {
	b, err := s.store.Backup(ctx, backupID)
	if err != nil {
		return Instance{}, err
	}
	in, err := s.store.Get(ctx, id)
	if err != nil {
		return in, err
	}
	switch {
	case b.InstanceID != in.ID:
		return in, apperr.New(apperr.NotFound, "backup %s is not one of instance %s's", backupID, id)
	case b.Status == BackupPruned:
		return in, apperr.New(apperr.Invalid, "backup %s was pruned by retention", backupID)
	case b.ObjectKey == "" && (!b.OnHost || (host != "" && host != b.Host) || b.Host != deref(in.Host)):
		return in, apperr.New(apperr.Invalid, "backup %s is only on host %s and not in the bucket: it can be restored there only", backupID, b.Host)
	}
	if host != "" && host != deref(in.Host) {
		return s.startMove(ctx, id, host, backupID)
	}
	return s.request(ctx, ActionArgs{InstanceID: id, Action: ActRestore, BackupID: backupID}, Active, Suspended)
}

type actionWorker struct {
	river.WorkerDefaults[ActionArgs]
	s *Service
}

func (w *actionWorker) Timeout(*river.Job[ActionArgs]) time.Duration { return w.s.cfg.JobTimeout }

// NextRetry puts a failed action on the short, capped backoff: a customer who paid again
// waits seconds for the resume, not River's attempt⁴ minutes.
func (w *actionWorker) NextRetry(job *river.Job[ActionArgs]) time.Time {
	return w.s.now().Add(queue.Backoff(job.Attempt))
}

func (w *actionWorker) Work(ctx context.Context, job *river.Job[ActionArgs]) error {
	s := w.s
	in, err := s.jobInstance(ctx, job.Args.InstanceID)
	if err != nil {
		return err
	}
	if in.Status == Pending || in.Status == Provisioning || in.MovingTo != nil {
		return river.JobSnooze(roomPoll) // act once provisioning, or the move, is over
	}
	host, err := s.cfg.Placer.Host(ctx, deref(in.Host))
	if err != nil && in.Status != Deleted {
		return err
	}
	a := job.Args
	switch a.Action {
	case ActSuspend:
		err = s.suspend(ctx, &in, host, a.Reason, job.ID)
	case ActResume:
		err = s.resume(ctx, &in, host, a.Reason, job.ID)
	case ActRestart:
		err = s.restart(ctx, &in, host)
	case ActResize:
		err = s.resize(ctx, &in, host)
	case ActUpgrade:
		err = s.upgrade(ctx, &in, host, a.Image)
	case ActDelete:
		err = s.delete(ctx, &in, host)
	case ActBackup:
		_, err = s.backup(ctx, &in, host, "manual")
	case ActRestore:
		err = s.restore(ctx, &in, host, a.BackupID)
	default:
		err = apperr.New(apperr.Invalid, "unknown action %q", a.Action)
	}
	if err == nil {
		return nil
	}
	var snooze *river.JobSnoozeError
	if errors.As(err, &snooze) {
		return err
	}
	return s.actionFailed(ctx, job, &in, err)
}

// actionFailed retries a failed action on the capped backoff until the step deadline,
// counted from when the action was asked for, and then gives up and tells the operator.
func (s *Service) actionFailed(ctx context.Context, job *river.Job[ActionArgs], in *Instance, err error) error {
	a := job.Args
	failingFor := s.now().Sub(job.CreatedAt)
	if apperr.Is(err, apperr.Invalid) || failingFor >= s.cfg.StepDeadline || job.Attempt >= job.MaxAttempts {
		s.store.Apply(ctx, in.ID, nil, "action_failed", fmt.Sprintf("%s failed: %s", a.Action, apperr.Message(err)))
		s.alert(ctx, "Action failed: %s of instance %s (%s) gave up after %d attempts over %s: %s",
			a.Action, in.ID, in.Slug, job.Attempt, failingFor.Round(time.Second), err.Error())
		return river.JobCancel(err)
	}
	if failingFor >= s.cfg.AlertAfter {
		s.alertThrottled(ctx, fmt.Sprintf("action-%d", job.ID), "Action stuck: %s of instance %s (%s) has been failing for %s (attempt %d): %s",
			a.Action, in.ID, in.Slug, failingFor.Round(time.Second), job.Attempt, apperr.Message(err))
	}
	s.store.Apply(ctx, in.ID, nil, "retry", fmt.Sprintf("%s: %s; next try in ~%s (attempt %d)",
		a.Action, apperr.Message(err), roundDelay(queue.Backoff(job.Attempt)), job.Attempt))
	return err
}

func (s *Service) suspend(ctx context.Context, in *Instance, host Host, reason string, jobID int64) error {
	if in.Status == Suspended && (in.SuspendReason == reason || in.SuspendReason == ReasonManual) {
		return nil // a manual suspension outranks a billing one; nothing to do
	}
	if in.Status != Active && in.Status != Suspended {
		return nil
	}
	if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "suspend", in.Slug, nil); err != nil {
		return err
	}
	if err := s.notify(ctx, in, Notice{Kind: NoticeSuspended, Reason: reason, Key: fmt.Sprintf("%s-suspended-%d", in.ID, jobID)}); err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, map[string]any{"status": Suspended, "suspend_reason": reason, "suspend_at": nil},
		"suspended", "suspended ("+reason+"); the container is stopped and stays stopped across host reboots")
}

func (s *Service) resume(ctx context.Context, in *Instance, host Host, by string, jobID int64) error {
	if in.Status != Suspended {
		return nil
	}
	if in.SuspendReason == ReasonManual && by == ReasonBilling {
		return s.store.Apply(ctx, in.ID, nil, "resume_refused", "payment received, but the suspension is manual: the operator must lift it")
	}
	if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "resume", in.Slug, nil); err != nil {
		return err
	}
	if err := s.waitHealthy(ctx, in, host); err != nil {
		return err
	}
	if err := s.notify(ctx, in, Notice{Kind: NoticeResumed, Key: fmt.Sprintf("%s-resumed-%d", in.ID, jobID)}); err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, map[string]any{"status": Active, "suspend_reason": "", "suspend_at": nil, "delete_after": nil},
		"resumed", "resumed and healthy")
}

func (s *Service) restart(ctx context.Context, in *Instance, host Host) error {
	if in.Status != Active {
		return nil
	}
	if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "restart", in.Slug, nil); err != nil {
		return err
	}
	if err := s.waitHealthy(ctx, in, host); err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, nil, "restarted", "restarted and healthy")
}

func (s *Service) resize(ctx context.Context, in *Instance, host Host) error {
	settings := map[string]string{"CPUS": formatCPUs(in.CPUs), "MEMORY_MB": fmt.Sprint(in.MemoryMB)}
	if in.DiskGB > 0 {
		settings["DISK_GB"] = fmt.Sprint(in.DiskGB)
	}
	if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "limits", in.Slug, settings); err != nil {
		return err
	}
	out, err := s.verifyCapsOf(ctx, in, host, false)
	if err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, nil, "resized", "plan "+in.PlanID+": "+out.message)
}

// verifyCapsOf reads the container's real limits and compares them with the plan's.
func (s *Service) verifyCapsOf(ctx context.Context, in *Instance, host Host, mustRun bool) (outcome, error) {
	st, err := s.status(ctx, in, host)
	if err != nil {
		return outcome{}, err
	}
	if !st.Exists || (mustRun && !st.Running) {
		return outcome{}, apperr.New(apperr.Unavailable, "the container is not running on %s", host.Name)
	}
	if math.Abs(st.CPUs-in.CPUs) > 0.001 || st.MemoryMB != in.MemoryMB {
		// A host whose kernel ignores the limits would let one customer starve the rest.
		return outcome{}, apperr.New(apperr.Invalid, "resource caps did not take effect on %s: want %s CPU and %d MiB, the container has %s CPU and %d MiB",
			host.Name, formatCPUs(in.CPUs), in.MemoryMB, formatCPUs(st.CPUs), st.MemoryMB)
	}
	if in.DiskGB > 0 && (st.DiskGB == nil || *st.DiskGB != in.DiskGB) {
		// Without its quota, one customer's executions could fill the host's disk.
		return outcome{}, apperr.New(apperr.Invalid, "the disk quota did not take effect on %s: want %d GiB, the instance has %s",
			host.Name, in.DiskGB, diskOf(st.DiskGB))
	}
	message := fmt.Sprintf("resource caps verified: %s CPU, %d MiB", formatCPUs(st.CPUs), st.MemoryMB)
	if in.DiskGB > 0 {
		message += fmt.Sprintf(", %d GiB disk", in.DiskGB)
	}
	return outcome{message: message}, nil
}

func diskOf(gb *int) string {
	if gb == nil {
		return "none"
	}
	return fmt.Sprintf("%d GiB", *gb)
}

func (s *Service) upgrade(ctx context.Context, in *Instance, host Host, image string) error {
	if in.Status != Active || in.N8nImage == image {
		return nil
	}
	b := Backup{ID: NewID(), InstanceID: in.ID, Host: host.Name, N8nImage: in.N8nImage,
		EncryptionKeySealed: in.EncryptionKeySealed, Reason: "pre-upgrade", Status: BackupLocal, OnHost: true}
	key, identity, err := s.newDataKeyPair(b.ID)
	if err != nil {
		return err
	}
	settings := map[string]string{"IMAGE": image, "HEALTH_TIMEOUT": fmt.Sprint(int(s.cfg.HealthTimeout.Seconds())),
		"RECIPIENT": key.recipient, "IDENTITY": identity}
	raw, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "upgrade", in.Slug, settings)
	if err == nil {
		if err := s.recordUpgradeBackup(ctx, in, b, key, raw); err != nil {
			return err
		}
		return s.store.Apply(ctx, in.ID, map[string]any{"n8n_image": image}, "upgraded", "upgraded to "+image+" (a backup was taken first)")
	}
	// n8nctl rolls an unhealthy upgrade back itself; the container tells which image runs.
	st, serr := s.status(ctx, in, host)
	if serr != nil || st.Image != in.N8nImage || !st.Running {
		return err
	}
	s.store.Apply(ctx, in.ID, nil, "upgrade_rolled_back", fmt.Sprintf("upgrade to %s was not healthy: rolled back to %s with its data", image, in.N8nImage))
	s.alert(ctx, "Upgrade rolled back: instance %s (%s) did not become healthy on %s; it runs %s again: %s", in.ID, in.Slug, image, in.N8nImage, apperr.Message(err))
	return nil
}

func (s *Service) restore(ctx context.Context, in *Instance, host Host, backupID string) error {
	b, err := s.store.Backup(ctx, backupID)
	if err != nil {
		return err
	}
	if err := s.restoreOn(ctx, in, host, b); err != nil {
		return err
	}
	if in.Status == Active {
		if err := s.waitHealthy(ctx, in, host); err != nil {
			return err
		}
	}
	return s.store.Apply(ctx, in.ID, nil, "restored", fmt.Sprintf("data restored from the %s backup of %s (%s)", b.Reason, b.CreatedAt.UTC().Format(time.RFC3339), b.Name))
}

func (s *Service) delete(ctx context.Context, in *Instance, host Host) error {
	if in.Status == Deleted {
		return nil
	}
	if in.Status != Deleting {
		if err := s.store.Apply(ctx, in.ID, map[string]any{"status": Deleting}, "deleting", "deleting: final backup first"); err != nil {
			return err
		}
	}
	// Never delete without a backup: peer panels lose customers' data that way.
	// A failed instance's container was removed when it failed; there is nothing to keep.
	onHost := in.Host != nil && in.Status != Failed && in.FailureReason == ""
	final, err := s.store.FinalBackup(ctx, in.ID)
	if err != nil {
		return err
	}
	if final == nil && onHost {
		b, err := s.backup(ctx, in, host, "final")
		if err != nil {
			return err
		}
		final = &b
	}
	if onHost {
		if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "destroy", in.Slug, map[string]string{"PURGE": "1"}); err != nil {
			return err
		}
	}
	if err := s.cfg.DNS.Delete(ctx, s.fqdn(in)); err != nil {
		return err
	}
	kept := s.now().Add(s.cfg.Retention)
	if final != nil && final.ExpiresAt != nil {
		kept = *final.ExpiresAt
	}
	if err := s.notify(ctx, in, Notice{Kind: NoticeDeleted, Until: kept, Key: in.ID + "-deleted"}); err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, map[string]any{"status": Deleted, "delete_after": nil}, "deleted",
		fmt.Sprintf("deleted; the final backup is kept until %s", kept.Format(time.DateOnly)))
}

// waitHealthy waits up to the health timeout for n8n's readiness after a lifecycle action
// (resume, restart, restore) started it again.
func (s *Service) waitHealthy(ctx context.Context, in *Instance, host Host) error {
	until := s.now().Add(s.cfg.HealthTimeout)
	for {
		err := s.cfg.App.Ready(ctx, host.IngressURL, s.fqdn(in))
		switch {
		case !errors.Is(err, ErrNotYet):
			return err
		case !s.now().Before(until):
			return apperr.Wrap(apperr.Unavailable, err, "n8n did not become ready within %s", s.cfg.HealthTimeout)
		}
		if err := s.cfg.Sleep(ctx, s.cfg.PollInterval); err != nil {
			return err
		}
	}
}

// notify sends a lifecycle email to the instance's client.
func (s *Service) notify(ctx context.Context, in *Instance, n Notice) error {
	client, err := s.store.GetClient(ctx, in.ClientID)
	if err != nil {
		return err
	}
	n.To, n.Name, n.Locale, n.URL = client.Email, client.Name, client.Locale, in.URL
	return s.cfg.Notifier.Notify(ctx, n)
}
