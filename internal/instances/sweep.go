package instances

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
)

// SweepArgs is the clock-driven job: it suspends past-due instances whose grace is over
// and deletes canceled ones whose retention is over. River runs periodic jobs on the
// elected leader only, so several replicas sweep once.
type SweepArgs struct{}

// Kind names the job.
func (SweepArgs) Kind() string { return "instance_sweep" }

// PeriodicJobs returns the service's clock-driven jobs.
func (s *Service) PeriodicJobs() []*river.PeriodicJob {
	jobs := []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(s.cfg.SweepInterval), func() (river.JobArgs, *river.InsertOpts) {
			return SweepArgs{}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued}
		}, &river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(s.cfg.DoctorInterval), func() (river.JobArgs, *river.InsertOpts) {
			return DoctorArgs{}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued}
		}, nil),
		river.NewPeriodicJob(river.PeriodicInterval(s.cfg.PoolInterval), func() (river.JobArgs, *river.InsertOpts) {
			return PoolRefillArgs{}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued}
		}, &river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(s.cfg.SweepInterval), func() (river.JobArgs, *river.InsertOpts) {
			return BackupScheduleArgs{}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued}
		}, &river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(s.cfg.DoctorInterval), func() (river.JobArgs, *river.InsertOpts) {
			return BackupPruneArgs{}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued}
		}, nil),
	}
	if s.cfg.Uptime.Interval > 0 {
		jobs = append(jobs, river.NewPeriodicJob(river.PeriodicInterval(s.cfg.Uptime.Interval), func() (river.JobArgs, *river.InsertOpts) {
			return UptimeArgs{}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued}
		}, &river.PeriodicJobOpts{RunOnStart: true}))
	}
	return jobs
}

type sweepWorker struct {
	river.WorkerDefaults[SweepArgs]
	s *Service
}

func (w *sweepWorker) Work(ctx context.Context, _ *river.Job[SweepArgs]) error {
	s := w.s
	now := s.now()
	due, err := s.store.Due(ctx, Active, "suspend_at", now)
	if err != nil {
		return err
	}
	for _, in := range due {
		if err := s.enqueue(ctx, ActionArgs{InstanceID: in.ID, Action: ActSuspend, Reason: ReasonBilling}); err != nil {
			return err
		}
	}
	for _, st := range []Status{Suspended, Failed} {
		expired, err := s.store.Due(ctx, st, "delete_after", now)
		if err != nil {
			return err
		}
		if len(expired) == 0 {
			continue
		}
		if reason := s.billingStalled(ctx); reason != "" {
			s.alertThrottled(ctx, "deletions-held", "Deletions held: %d instance(s) are due for deletion, but %s; nothing is deleted until billing catches up", len(expired), reason)
			return nil
		}
		for _, in := range expired {
			if err := s.enqueue(ctx, ActionArgs{InstanceID: in.ID, Action: ActDelete}); err != nil {
				return err
			}
		}
	}
	return nil
}

// billingStalled returns why deletions must wait, or "".
func (s *Service) billingStalled(ctx context.Context) string {
	if s.cfg.Billing == nil {
		return ""
	}
	reason, err := s.cfg.Billing.Stalled(ctx)
	if err != nil {
		return "the billing state cannot be read (" + err.Error() + ")"
	}
	return reason
}

// alertThrottled alerts at most once a day per key, so a condition that lasts does not
// flood the operator's inbox every sweep. The store remembers, so a restart does not
// repeat the alert.
func (s *Service) alertThrottled(ctx context.Context, key, format string, args ...any) {
	now := s.now()
	last, err := s.store.AlertedAt(ctx, "throttled|"+key)
	if err == nil && !last.IsZero() && now.Sub(last) < 24*time.Hour {
		return
	}
	if err := s.store.MarkAlerted(ctx, "throttled|"+key, fmt.Sprintf(format, args...), now); err != nil {
		s.log.Warn("remembering an alert failed", "error", err.Error())
	}
	s.alert(ctx, format, args...)
}
