package instances

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

// A move carries an instance to another host with its URL, owner login and encryption
// key: the container on the old host is stopped (so no write is lost), its data archived
// and uploaded (or, for a restore to another host, a chosen backup is used), the same
// container is provisioned on the new host from the bucket's copy, and once it is ready
// the DNS record is switched and the old container destroyed. Every step is idempotent,
// so a crash at any point resumes the move where it stopped.

// MoveArgs is the move's job. BackupID, when set, moves the data of that backup (a
// restore to another host) instead of a fresh one.
type MoveArgs struct {
	InstanceID string `json:"instance_id" river:"unique"`
	From       string `json:"from" river:"unique"`
	To         string `json:"to" river:"unique"`
	BackupID   string `json:"backup_id,omitempty" river:"unique"`
}

// Kind names the job.
func (MoveArgs) Kind() string { return "instance_move" }

// Move carries an active or suspended instance to host to. It returns Invalid when the
// host is the one it runs on, no bucket is configured, or the host is not active and
// free, and Conflict when the instance is being moved already.
func (s *Service) Move(ctx context.Context, id, to string) (Instance, error) {
	return s.startMove(ctx, id, to, "")
}

func (s *Service) startMove(ctx context.Context, id, to, backupID string) (Instance, error) {
	in, err := s.store.Get(ctx, id)
	if err != nil {
		return in, err
	}
	switch {
	case in.Status != Active && in.Status != Suspended:
		return in, apperr.New(apperr.Conflict, "cannot move an instance that is %s", in.Status)
	case in.MovingTo != nil:
		return in, apperr.New(apperr.Conflict, "instance %s is being moved to %s already", id, *in.MovingTo)
	case deref(in.Host) == to:
		return in, apperr.New(apperr.Invalid, "instance %s runs on %s already", id, to)
	case s.cfg.Bucket == nil:
		return in, apperr.New(apperr.Invalid, "moving an instance goes through the bucket: set PROVISIONER_BACKUP_S3_BUCKET")
	}
	if err := s.hasRoom(ctx, in, to); err != nil {
		return in, err
	}
	args := MoveArgs{InstanceID: id, From: deref(in.Host), To: to, BackupID: backupID}
	res, err := s.cfg.Queue.Insert(ctx, args, &river.InsertOpts{MaxAttempts: actionAttempts, UniqueOpts: uniqueWhileQueued})
	if err != nil {
		return in, apperr.Wrap(apperr.Unavailable, err, "cannot enqueue the move of instance %s", id)
	}
	if res.UniqueSkippedAsDuplicate {
		// The same move's job is finishing (its end is stored a moment after its last step).
		return in, apperr.New(apperr.Conflict, "the same move of instance %s is finishing; ask again in a second", id)
	}
	return in, s.store.Apply(ctx, id, map[string]any{"moving_to": to}, "move_requested", fmt.Sprintf("move from %s to %s requested", args.From, to))
}

// hasRoom refuses a target that is not an active host with room for in's plan.
func (s *Service) hasRoom(ctx context.Context, in Instance, host string) error {
	hosts, err := s.cfg.Placer.Capacity(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.Name == host {
			if h.Free <= 0 {
				return apperr.New(apperr.Invalid, "host %s has no free slot", host)
			}
			if !h.Fits(in.MemoryMB, in.DiskGB) {
				return apperr.New(apperr.Invalid, "instance %s does not fit on host %s: %s", in.ID, host, h.Short(in.MemoryMB, in.DiskGB))
			}
			return nil
		}
	}
	return apperr.New(apperr.Invalid, "host %s is not an active host", host)
}

type moveWorker struct {
	river.WorkerDefaults[MoveArgs]
	s *Service
}

func (w *moveWorker) Timeout(*river.Job[MoveArgs]) time.Duration { return w.s.cfg.JobTimeout }

func (w *moveWorker) NextRetry(job *river.Job[MoveArgs]) time.Time {
	return w.s.now().Add(queue.Backoff(job.Attempt))
}

func (w *moveWorker) Work(ctx context.Context, job *river.Job[MoveArgs]) error {
	s := w.s
	in, err := s.store.Get(ctx, job.Args.InstanceID)
	if err != nil {
		return err
	}
	if err := s.move(ctx, &in, job); err != nil {
		return s.moveFailed(ctx, job, &in, err)
	}
	return nil
}

// moveFailed retries on the capped backoff until the step deadline, then gives up with
// the instance where it is: on the old host, whose container is started again, unless
// the switch happened, after which only the old container's removal is left.
func (s *Service) moveFailed(ctx context.Context, job *river.Job[MoveArgs], in *Instance, err error) error {
	a := job.Args
	failingFor := s.now().Sub(job.CreatedAt)
	if !apperr.Is(err, apperr.Invalid) && failingFor < s.cfg.StepDeadline {
		if failingFor >= s.cfg.AlertAfter {
			s.alertThrottled(ctx, fmt.Sprintf("move-%d", job.ID), "Move stuck: instance %s (%s) from %s to %s has been failing for %s: %s",
				in.ID, in.Slug, a.From, a.To, failingFor.Round(time.Second), apperr.Message(err))
		}
		s.store.Apply(ctx, in.ID, nil, "retry", fmt.Sprintf("move: %s; next try in ~%s (attempt %d)", apperr.Message(err), roundDelay(queue.Backoff(job.Attempt)), job.Attempt))
		return err
	}
	if deref(in.Host) == a.From {
		// Back to where it was: the target's half-made copy goes, the old container runs.
		if to, herr := s.cfg.Placer.Host(ctx, a.To); herr == nil {
			s.cfg.Agent.Run(ctx, to.Node, to.VMID, "destroy", in.Slug, map[string]string{"PURGE": "1"})
		}
		if from, herr := s.cfg.Placer.Host(ctx, a.From); herr == nil && in.Status == Active {
			s.cfg.Agent.Run(ctx, from.Node, from.VMID, "resume", in.Slug, nil)
		}
	}
	s.store.Apply(ctx, in.ID, map[string]any{"moving_to": nil}, "move_failed", fmt.Sprintf("move to %s failed; the instance stays on %s: %s", a.To, deref(in.Host), apperr.Message(err)))
	s.alert(ctx, "Move failed: instance %s (%s) from %s to %s gave up after %s: %s", in.ID, in.Slug, a.From, a.To, failingFor.Round(time.Second), err.Error())
	return river.JobCancel(err)
}

func (s *Service) move(ctx context.Context, in *Instance, job *river.Job[MoveArgs]) error {
	a := job.Args
	from, err := s.cfg.Placer.Host(ctx, a.From)
	if err != nil {
		return err
	}
	to, err := s.cfg.Placer.Host(ctx, a.To)
	if err != nil {
		return err
	}
	if deref(in.Host) == a.From {
		if err := s.switchOver(ctx, in, job, from, to); err != nil {
			return err
		}
	}
	if _, err := s.cfg.Agent.Run(ctx, from.Node, from.VMID, "destroy", in.Slug, map[string]string{"PURGE": "1"}); err != nil {
		if a.BackupID == "" {
			return err
		}
		// A restore elsewhere is how an instance comes back from a dead host: it must not
		// wait for that host. The doctor reports the container if the host comes back.
		s.alert(ctx, "Old container left: instance %s (%s) was restored on %s, but its container on %s could not be removed: %s; remove it when the host is back (provisioner doctor lists it)",
			in.ID, in.Slug, a.To, a.From, apperr.Message(err))
		return s.store.Apply(ctx, in.ID, map[string]any{"moving_to": nil}, "move_done", "the old container on "+a.From+" could not be removed: "+apperr.Message(err))
	}
	return s.store.Apply(ctx, in.ID, map[string]any{"moving_to": nil}, "move_done", "the old container on "+a.From+" is removed")
}

// switchOver runs the move's steps up to the DNS switch. A move with a fresh archive stops
// the old container first, so that no write is lost; a restore elsewhere fetches and
// checks its archive on the target first, so that a bad archive never stops the instance.
func (s *Service) switchOver(ctx context.Context, in *Instance, job *river.Job[MoveArgs], from, to Host) error {
	var b Backup
	var err error
	if job.Args.BackupID != "" {
		if b, err = s.moveBackup(ctx, in, job, from); err != nil {
			return err
		}
		if _, err := s.archiveOn(ctx, in, to, b); err != nil {
			return err
		}
		if _, err := s.cfg.Agent.Run(ctx, from.Node, from.VMID, "suspend", in.Slug, nil); err != nil {
			s.store.Apply(ctx, in.ID, nil, "move_old_host", fmt.Sprintf("%s does not answer (%s): restoring on %s without stopping it", from.Name, apperr.Message(err), to.Name))
		}
	} else {
		if _, err := s.cfg.Agent.Run(ctx, from.Node, from.VMID, "suspend", in.Slug, nil); err != nil {
			return err
		}
		if b, err = s.moveBackup(ctx, in, job, from); err != nil {
			return err
		}
	}
	if _, err := s.launch(ctx, in, to); err != nil {
		return err
	}
	if err := s.restoreOn(ctx, in, to, b); err != nil {
		return err
	}
	if in.Status == Active {
		if err := s.waitHealthy(ctx, in, to); err != nil {
			return err
		}
	} else if _, err := s.cfg.Agent.Run(ctx, to.Node, to.VMID, "suspend", in.Slug, nil); err != nil {
		return err
	}
	recordID, err := s.cfg.DNS.UpsertA(ctx, s.fqdn(in), to.PublicIP, "n8n-provisioner instance "+in.ID)
	if err != nil {
		return err
	}
	down := s.now().Sub(s.moveStartedAt(ctx, in, job)).Round(100 * time.Millisecond)
	in.Host = &to.Name
	return s.store.Apply(ctx, in.ID, map[string]any{"host": to.Name, "dns_record_id": recordID}, "moved",
		fmt.Sprintf("moved from %s to %s with the data of backup %s; the customer's n8n was unavailable for %s", from.Name, to.Name, b.Name, down))
}

// moveStartedAt is when the move was asked for, a moment before it stopped the old
// container: the start of the customer's downtime.
func (s *Service) moveStartedAt(ctx context.Context, in *Instance, job *river.Job[MoveArgs]) time.Time {
	at, err := s.store.FirstEventSince(ctx, in.ID, "move_requested", job.CreatedAt.Add(-time.Minute))
	if err != nil || at.IsZero() {
		return job.CreatedAt
	}
	return at
}

// moveBackup returns the backup the move carries, uploaded: the one asked for, or a
// fresh one of the stopped container (found again when the move resumes after a crash).
func (s *Service) moveBackup(ctx context.Context, in *Instance, job *river.Job[MoveArgs], from Host) (Backup, error) {
	if job.Args.BackupID != "" {
		b, err := s.store.Backup(ctx, job.Args.BackupID)
		if err == nil && b.InstanceID != in.ID {
			err = apperr.New(apperr.Invalid, "backup %s is not one of instance %s's", b.ID, in.ID)
		}
		return b, err
	}
	taken, err := s.store.ListBackups(ctx, BackupFilter{InstanceID: in.ID, Reason: "move", Since: job.CreatedAt, Limit: 1})
	if err != nil {
		return Backup{}, err
	}
	var b Backup
	if len(taken) > 0 && taken[0].Status != BackupFailed {
		b = taken[0]
	} else if b, err = s.backup(ctx, in, from, "move"); err != nil {
		return Backup{}, err
	}
	if b.Status == BackupLocal {
		if err := s.upload(ctx, &b, in.Slug, from); err != nil {
			return Backup{}, err
		}
	}
	return b, nil
}
