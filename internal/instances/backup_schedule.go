package instances

import (
	"context"
	"fmt"
	"hash/fnv"
	"path"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/retention"
)

// BackupPolicy is when instances are backed up and how long archives are kept.
type BackupPolicy struct {
	// Off turns the daily backups off (the operator's own schedule calls the API).
	Off bool
	// WindowStart is when the daily window opens, after 00:00 UTC (default 2h), and
	// Window how long it lasts (default 4h). Each instance has its own slot in the window,
	// fixed by its id, so the backups are spread over it and an instance is backed up at
	// the same time every day.
	WindowStart, Window time.Duration
	// PerHost is how many instances of one host are backed up at once (default 1): each
	// is stopped for its archive, and the host's disk and uplink are shared.
	PerHost int
	// Keep is the retention of the dailies (and every other archive but the final one,
	// which is kept for Config.Retention).
	Keep retention.Policy
	// UploadDeadline is how long an upload is retried before its backup is marked failed
	// (default 6h).
	UploadDeadline time.Duration
}

func (p BackupPolicy) withDefaults() BackupPolicy {
	if p.Window == 0 {
		p.WindowStart, p.Window = 2*time.Hour, 4*time.Hour
	}
	if p.PerHost == 0 {
		p.PerHost = 1
	}
	if p.Keep == (retention.Policy{}) {
		p.Keep = retention.Default
	}
	if p.UploadDeadline == 0 {
		p.UploadDeadline = 6 * time.Hour
	}
	return p
}

// window returns the daily window that now falls in, or ok false outside it.
func (p BackupPolicy) window(now time.Time) (start time.Time, ok bool) {
	y, m, d := now.UTC().Date()
	start = time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Add(p.WindowStart)
	if now.Before(start) {
		start = start.Add(-24 * time.Hour) // a window that spans midnight
	}
	return start, now.Before(start.Add(p.Window))
}

// slot is when in the window starting at start the instance's daily backup is due.
func (p BackupPolicy) slot(start time.Time, instanceID string) time.Time {
	h := fnv.New64a()
	h.Write([]byte(instanceID))
	return start.Add(time.Duration(h.Sum64() % uint64(p.Window)))
}

func (p BackupPolicy) shard(instanceID string) int {
	h := fnv.New32a()
	h.Write([]byte(instanceID))
	return int(h.Sum32() % uint32(p.PerHost))
}

// BackupScheduleArgs is the periodic job that starts the day's backups that are due.
type BackupScheduleArgs struct{}

// Kind names the job.
func (BackupScheduleArgs) Kind() string { return "backup_schedule" }

// HostBackupArgs backs up, one after another, the due instances of one shard of a host:
// PerHost shards run at once on each host.
type HostBackupArgs struct {
	Host  string `json:"host" river:"unique"`
	Shard int    `json:"shard" river:"unique"`
}

// Kind names the job.
func (HostBackupArgs) Kind() string { return "host_backups" }

// BackupPruneArgs is the periodic job that applies retention.
type BackupPruneArgs struct{}

// Kind names the job.
func (BackupPruneArgs) Kind() string { return "backup_prune" }

type scheduleWorker struct {
	river.WorkerDefaults[BackupScheduleArgs]
	s *Service
}

func (w *scheduleWorker) Work(ctx context.Context, _ *river.Job[BackupScheduleArgs]) error {
	s := w.s
	hosts, err := s.cfg.Placer.Hosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		due, err := s.dueDaily(ctx, h.Name)
		if err != nil {
			return err
		}
		shards := map[int]bool{}
		for _, in := range due {
			shards[s.cfg.Backups.shard(in.ID)] = true
		}
		for shard := range shards {
			if _, err := s.cfg.Queue.Insert(ctx, HostBackupArgs{Host: h.Name, Shard: shard}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued}); err != nil {
				return err
			}
		}
	}
	return nil
}

// dueDaily returns the instances on host whose daily backup is due now: in the window,
// past their slot, not backed up since the window opened, and not failed in the last
// half hour (a failed one is tried again later in the window).
func (s *Service) dueDaily(ctx context.Context, host string) ([]Instance, error) {
	p := s.cfg.Backups
	now := s.now()
	start, open := p.window(now)
	if p.Off || !open {
		return nil, nil
	}
	list, err := s.store.OnHost(ctx, host, Active, Suspended)
	if err != nil {
		return nil, err
	}
	var due []Instance
	for _, in := range list {
		if in.MovingTo != nil || now.Before(p.slot(start, in.ID)) {
			continue
		}
		taken, err := s.store.ListBackups(ctx, BackupFilter{InstanceID: in.ID, Reason: "daily", Since: start, Limit: 5})
		if err != nil {
			return nil, err
		}
		if !dailyDone(taken, now) {
			due = append(due, in)
		}
	}
	return due, nil
}

func dailyDone(taken []Backup, now time.Time) bool {
	for _, b := range taken {
		if b.Status != BackupFailed || now.Sub(b.CreatedAt) < 30*time.Minute {
			return true
		}
	}
	return false
}

type hostBackupWorker struct {
	river.WorkerDefaults[HostBackupArgs]
	s *Service
}

func (w *hostBackupWorker) Timeout(*river.Job[HostBackupArgs]) time.Duration {
	return w.s.cfg.JobTimeout
}

// hostBackupBatch bounds one run, so that a run ends well within its timeout; the next
// schedule tick goes on with the rest.
const hostBackupBatch = 10

func (w *hostBackupWorker) Work(ctx context.Context, job *river.Job[HostBackupArgs]) error {
	s := w.s
	host, err := s.cfg.Placer.Host(ctx, job.Args.Host)
	if err != nil {
		return river.JobCancel(err)
	}
	due, err := s.dueDaily(ctx, host.Name)
	if err != nil {
		return err
	}
	done := 0
	for _, in := range due {
		if s.cfg.Backups.shard(in.ID) != job.Args.Shard || done == hostBackupBatch {
			continue
		}
		done++
		if _, err := s.backup(ctx, &in, host, "daily"); err != nil {
			s.dailyFailed(ctx, &in, host, err)
		}
	}
	return nil
}

// dailyFailed records a daily backup that could not be taken, so that it is listed with
// the failures and tried again later in the window, and tells the operator.
func (s *Service) dailyFailed(ctx context.Context, in *Instance, host Host, cause error) {
	b := Backup{ID: NewID(), InstanceID: in.ID, Host: host.Name, N8nImage: in.N8nImage, EncryptionKeySealed: in.EncryptionKeySealed,
		Reason: "daily", Status: BackupFailed, Error: apperr.Message(cause), CreatedAt: s.now()}
	if err := s.store.AddBackup(ctx, b); err != nil {
		s.log.Error("recording a failed backup", "instance", in.ID, "error", err.Error())
	}
	s.store.Apply(ctx, in.ID, nil, "backup_failed", "daily backup failed: "+apperr.Message(cause))
	s.alertThrottled(ctx, "daily-"+in.ID, "Backup failed: the daily backup of instance %s (%s) on %s failed: %s", in.ID, in.Slug, host.Name, cause.Error())
}

type pruneWorker struct {
	river.WorkerDefaults[BackupPruneArgs]
	s *Service
}

func (w *pruneWorker) Timeout(*river.Job[BackupPruneArgs]) time.Duration { return w.s.cfg.JobTimeout }

func (w *pruneWorker) Work(ctx context.Context, _ *river.Job[BackupPruneArgs]) error {
	by, err := w.s.store.KeptBackups(ctx)
	if err != nil {
		return err
	}
	var failed []string
	for id, list := range by {
		if err := w.s.pruneInstance(ctx, id, list); err != nil {
			failed = append(failed, id+": "+apperr.Message(err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("pruning the backups of %d instance(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// pruneInstance applies retention to one instance's archives (newest first). The bucket
// keeps the policy's dailies and weeklies; a host keeps only the newest archive the bucket
// holds, for a fast restore, and every archive the bucket does not hold: an archive whose
// upload failed is never deleted where it is the only copy. Without a bucket, the hosts
// keep the policy's archives.
func (s *Service) pruneInstance(ctx context.Context, instanceID string, list []Backup) error {
	now := s.now()
	var series []Backup
	var times []time.Time
	for _, b := range list {
		switch {
		case b.Reason == "final":
			if b.ExpiresAt != nil && now.After(*b.ExpiresAt) {
				if err := s.prune(ctx, b, true); err != nil {
					return err
				}
			}
		case b.Status == BackupFailed && !b.OnHost:
		default:
			series = append(series, b)
			times = append(times, b.CreatedAt)
		}
	}
	keep := s.cfg.Backups.Keep.Keep(times, now)
	newestUploaded := ""
	for i, b := range series {
		if b.Status == BackupUploaded && newestUploaded == "" {
			newestUploaded = b.ID
		}
		everywhere := !keep[i]
		if everywhere && s.cfg.Bucket != nil && b.Status != BackupUploaded && newestUploaded == "" {
			continue // the only copy of the newest data: never pruned
		}
		local := b.OnHost && s.cfg.Bucket != nil && b.Status == BackupUploaded && b.ID != newestUploaded
		if everywhere || local {
			if err := s.prune(ctx, b, everywhere); err != nil {
				return err
			}
		}
	}
	return nil
}

// prune removes b's archive from its host, and, when everywhere, from the bucket too.
func (s *Service) prune(ctx context.Context, b Backup, everywhere bool) error {
	if b.OnHost {
		if err := s.pruneOnHost(ctx, b); err != nil {
			return err
		}
	}
	set := map[string]any{"on_host": false}
	message := fmt.Sprintf("backup %s removed from %s by retention; the bucket keeps it", b.Name, b.Host)
	if everywhere {
		if b.ObjectKey != "" && s.cfg.Bucket != nil {
			if err := s.cfg.Bucket.Delete(ctx, b.ObjectKey); err != nil {
				return apperr.Wrap(apperr.Unavailable, err, "deleting %s from the bucket", b.Name)
			}
		}
		set["status"], set["pruned_at"] = BackupPruned, s.now()
		message = fmt.Sprintf("backup %s of %s pruned by retention", b.Name, b.CreatedAt.UTC().Format(time.DateOnly))
	}
	if err := s.store.UpdateBackup(ctx, b.ID, set); err != nil {
		return err
	}
	return s.store.Apply(ctx, b.InstanceID, nil, "backup_pruned", message)
}

func (s *Service) pruneOnHost(ctx context.Context, b Backup) error {
	if b.Path == "" {
		return nil // nothing was written (a failed backup)
	}
	name := b.Name
	if name == "" {
		name = path.Base(b.Path) // an archive recorded before names were
	}
	host, err := s.cfg.Placer.Host(ctx, b.Host)
	if apperr.Is(err, apperr.NotFound) {
		return nil // the host left the inventory with its disk
	}
	if err != nil {
		return err
	}
	in, err := s.store.Get(ctx, b.InstanceID)
	if err != nil {
		return err
	}
	_, err = s.cfg.Agent.Run(ctx, host.Node, host.VMID, "prune", in.Slug, map[string]string{"ARCHIVES": name})
	return err
}
