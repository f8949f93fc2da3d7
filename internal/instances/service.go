package instances

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

// Config is what the instance service needs. Every adapter is an interface of this package.
type Config struct {
	Store    *Store
	Keys     *secret.Keyring
	Placer   Placer
	DNS      DNS
	Agent    Agent
	App      App
	Notifier Notifier
	Queue    Enqueuer
	Plans    plans.Plans
	// BaseDomain: instances live at https://<slug>.<BaseDomain>.
	BaseDomain string
	// HealthTimeout bounds a lifecycle action's wait for n8n's readiness (default 3m).
	HealthTimeout time.Duration
	// JobTimeout bounds one run of a provisioning or lifecycle job (default HealthTimeout
	// plus 15m: an upgrade backs up, recreates and waits for health).
	JobTimeout time.Duration
	// StepDeadline is how long a saga step, or a lifecycle action, may stay blocked
	// (failing, or waiting for something on its way) before it is given up: the instance
	// compensated, the action abandoned (default 30m).
	StepDeadline time.Duration
	// AlertAfter is how long a step may stay blocked before the operator is told (default 3m).
	AlertAfter time.Duration
	// PollInterval is how often a step asks again for something on its way (default 250ms).
	PollInterval time.Duration
	// TimeZone is the instances' GENERIC_TIMEZONE/TZ (default UTC).
	TimeZone string
	// Retention is how long a deleted instance's final backup is kept (default 30 days).
	Retention time.Duration
	// SweepInterval is how often the clock-driven jobs look for due work (default 1m).
	SweepInterval time.Duration
	// DoctorInterval is how often the doctor looks for drift (default 1h).
	DoctorInterval time.Duration
	// PoolInterval is how often the warm pool is checked against its targets, besides
	// after every claim (default 30s).
	PoolInterval time.Duration
	// Bucket, when set, receives every archive, encrypted on its host; nil keeps them on
	// the hosts only.
	Bucket Bucket
	// Backups is the daily schedule and the retention of archives.
	Backups BackupPolicy
	// Billing tells whether billing events are processed; deletions wait while they are not.
	Billing BillingHealth
	// Now is the clock (default time.Now) and Sleep waits on it (default a timer), so that
	// the retry policy is tested without waiting.
	Now    func() time.Time
	Sleep  func(ctx context.Context, d time.Duration) error
	Logger *slog.Logger
	// AfterStep, when set, is called right after each saga step is stored.
	AfterStep func(step string)
	// Steps, when set, is told how every saga step attempt went (the metrics).
	Steps StepObserver
	// Uptime is how active instances are probed; UptimeMetrics, when set, is told the
	// result of every pass.
	Uptime        UptimePolicy
	UptimeMetrics UptimeMetrics
}

// Service runs the instances' lifecycle: it turns subscriptions into instances and runs
// the provisioning saga as durable jobs.
type Service struct {
	cfg   Config
	store *Store
	log   *slog.Logger
}

// NewService returns the service; Register its workers before starting the queue.
func NewService(cfg Config) *Service {
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = 3 * time.Minute
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = cfg.HealthTimeout + 15*time.Minute
	}
	if cfg.TimeZone == "" {
		cfg.TimeZone = "UTC"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Retention == 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Minute
	}
	if cfg.DoctorInterval == 0 {
		cfg.DoctorInterval = time.Hour
	}
	if cfg.PoolInterval == 0 {
		cfg.PoolInterval = 30 * time.Second
	}
	if cfg.StepDeadline == 0 {
		cfg.StepDeadline = 30 * time.Minute
	}
	if cfg.AlertAfter == 0 {
		cfg.AlertAfter = 3 * time.Minute
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	cfg.Backups = cfg.Backups.withDefaults()
	cfg.Uptime = cfg.Uptime.withDefaults()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	return &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger}
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Register adds the service's job workers.
func (s *Service) Register(workers *river.Workers) {
	river.AddWorker(workers, &provisionWorker{s: s})
	river.AddWorker(workers, &fillWorker{s: s})
	river.AddWorker(workers, &refillWorker{s: s})
	river.AddWorker(workers, &actionWorker{s: s})
	river.AddWorker(workers, &sweepWorker{s: s})
	river.AddWorker(workers, &doctorWorker{s: s})
	river.AddWorker(workers, &uploadWorker{s: s})
	river.AddWorker(workers, &moveWorker{s: s})
	river.AddWorker(workers, &scheduleWorker{s: s})
	river.AddWorker(workers, &hostBackupWorker{s: s})
	river.AddWorker(workers, &pruneWorker{s: s})
	river.AddWorker(workers, &uptimeWorker{s: s})
}

// Subscription is what billing tells instances about a customer's subscription: who,
// which plan, and what its state asks of the instance.
type Subscription struct {
	ID       string // our subscription id
	ClientID string // the portal's client id
	Email    string
	Name     string
	Locale   string
	PlanID   string
	Status   string // the provider's status, for the timeline
	// Run: the client must have one running instance of the plan.
	Run bool
	// WarnPastDue: payment failed; warn the customer that the instance stops at SuspendAt.
	WarnPastDue bool
	// SuspendAt, when not zero, is when the instance must be suspended for billing.
	SuspendAt time.Time
	// DeleteAt, when not zero, is when the instance must be deleted after a final backup.
	DeleteAt time.Time
}

// Reconcile makes the client's instance match the subscription. It is idempotent: billing
// calls it after every applied event, in any order.
//
//   - Run: one instance of the plan runs (created, resumed from a billing suspension,
//     resized to a new plan; a pending deletion or suspension is cancelled);
//   - WarnPastDue: the customer is warned once and the instance is suspended at SuspendAt;
//   - otherwise SuspendAt (now or past) suspends it, and DeleteAt schedules its deletion
//     after a final backup.
func (s *Service) Reconcile(ctx context.Context, sub Subscription) error {
	plan, ok := s.cfg.Plans.Find(sub.PlanID)
	if !ok {
		return apperr.New(apperr.Invalid, "subscription %s has unknown plan %q", sub.ID, sub.PlanID)
	}
	if _, err := s.store.UpsertClient(ctx, Client{ID: sub.ClientID, Email: sub.Email, Name: sub.Name, Locale: sub.Locale}); err != nil {
		return err
	}
	list, err := s.store.BySubscription(ctx, sub.ID)
	if err != nil {
		return err
	}
	in := liveInstance(list)
	switch {
	case sub.Run && in == nil:
		_, err := s.start(ctx, sub, plan)
		if errors.Is(err, ErrSubscriptionHasInstance) {
			return s.Reconcile(ctx, sub) // another worker created it just now: act on that one
		}
		return err
	case in == nil || in.Status == Deleting:
		return nil
	case sub.Run && sub.WarnPastDue:
		return s.startGrace(ctx, in, sub.SuspendAt)
	case sub.Run:
		return s.keepRunning(ctx, in, plan)
	case !sub.SuspendAt.IsZero():
		return s.stopForBilling(ctx, in, sub.Status, sub.DeleteAt)
	}
	return nil // incomplete: the first payment is still being made
}

func (s *Service) keepRunning(ctx context.Context, in *Instance, plan plans.Plan) error {
	set := map[string]any{}
	if in.SuspendAt != nil || in.DeleteAfter != nil {
		set["suspend_at"], set["delete_after"] = nil, nil
	}
	disk := max(in.DiskGB, plan.DiskGB) // a disk grows with the plan, never shrinks
	if in.DiskGB == 0 {
		disk = 0 // made before quotas: its data is on the host's disk
	}
	tooBig, err := s.planDoesNotFit(ctx, in, plan, disk)
	if err != nil {
		return err
	}
	resize := tooBig == nil && in.PlanID != plan.ID && (in.CPUs != plan.CPUs || in.MemoryMB != plan.MemoryMB || disk != in.DiskGB)
	if in.PlanID != plan.ID && tooBig == nil {
		set["plan_id"], set["cpus"], set["memory_mb"], set["disk_gb"] = plan.ID, plan.CPUs, plan.MemoryMB, disk
	}
	if len(set) > 0 {
		if err := s.store.Apply(ctx, in.ID, set, "billing", "subscription is active: plan "+plan.ID); err != nil {
			return err
		}
	}
	switch {
	case in.Status == Pending || in.Status == Provisioning:
		return errors.Join(s.enqueueProvision(ctx, in.ID), tooBig) // unique: a no-op while one is queued
	case in.Status == Suspended && in.SuspendReason == ReasonBilling:
		if err := s.enqueue(ctx, ActionArgs{InstanceID: in.ID, Action: ActResume, Reason: ReasonBilling}); err != nil {
			return err
		}
	case in.Status == Suspended && in.SuspendReason == ReasonManual:
		s.store.Apply(ctx, in.ID, nil, "resume_refused", "payment received, but the suspension is manual: the operator must lift it")
	}
	if resize && (in.Status == Active || in.Status == Suspended) {
		return s.enqueue(ctx, ActionArgs{InstanceID: in.ID, Action: ActResize, Reason: plan.ID})
	}
	return tooBig
}

// startGrace warns a past-due customer once and schedules the suspension at until.
func (s *Service) startGrace(ctx context.Context, in *Instance, until time.Time) error {
	if in.Status != Active || in.SuspendAt != nil {
		return nil
	}
	if err := s.notify(ctx, in, Notice{Kind: NoticePastDue, Until: until, Key: in.ID + "-past-due-" + until.Format("20060102")}); err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, map[string]any{"suspend_at": until.UTC()}, "past_due",
		"payment failed: the instance is suspended on "+until.UTC().Format(time.RFC3339)+" unless it is paid")
}

// stopForBilling suspends now and, when deleteAt is set (a cancellation), schedules the
// deletion.
func (s *Service) stopForBilling(ctx context.Context, in *Instance, status string, deleteAt time.Time) error {
	if !deleteAt.IsZero() && in.DeleteAfter == nil {
		if err := s.store.Apply(ctx, in.ID, map[string]any{"delete_after": deleteAt.UTC()}, "canceled",
			"subscription "+status+": the instance is deleted on "+deleteAt.UTC().Format(time.RFC3339)+", after a final backup"); err != nil {
			return err
		}
	}
	if in.Status == Suspended || in.Status == Failed {
		return nil
	}
	return s.enqueue(ctx, ActionArgs{InstanceID: in.ID, Action: ActSuspend, Reason: ReasonBilling})
}

// liveInstance returns the subscription's instance that is not gone, if any.
func liveInstance(list []Instance) *Instance {
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Status != Deleted && !(list[i].Status == Failed && list[i].FailureReason == reasonCompromised) {
			return &list[i]
		}
	}
	return nil
}

// create reserves a new instance: slug, owner password, encryption key and the setup
// guard's credential are generated and stored sealed before anything is created outside.
func (s *Service) create(ctx context.Context, sub Subscription, plan plans.Plan) (*Instance, error) {
	in := &Instance{
		ID: NewID(), ClientID: sub.ClientID, PlanID: plan.ID, CPUs: plan.CPUs, MemoryMB: plan.MemoryMB,
		DiskGB: plan.DiskGB, N8nImage: plan.N8nImage, Status: Pending, OwnerEmail: sub.Email,
	}
	if sub.ID != "" {
		in.SubscriptionID = &sub.ID
	}
	if err := s.sealSecrets(in); err != nil {
		return nil, err
	}
	if err := s.reserve(ctx, in); err != nil {
		return nil, err
	}
	s.log.Info("instance reserved", "instance", in.ID, "client", in.ClientID, "slug", in.Slug, "plan", in.PlanID)
	return in, s.enqueueProvision(ctx, in.ID)
}

// reserve stores in under a fresh random slug, drawing again when one is taken.
func (s *Service) reserve(ctx context.Context, in *Instance) error {
	for attempt := 0; ; attempt++ {
		slug, err := newSlug()
		if err != nil {
			return err
		}
		in.Slug, in.URL = slug, "https://"+slug+"."+s.cfg.BaseDomain
		err = s.store.Create(ctx, in)
		if err == nil || !apperr.Is(err, apperr.Conflict) || errors.Is(err, ErrSubscriptionHasInstance) || attempt == 5 {
			return err
		}
	}
}

func (s *Service) sealSecrets(in *Instance) error {
	password, err := s.cfg.App.GeneratePassword()
	if err != nil {
		return err
	}
	key, err := s.cfg.App.GenerateEncryptionKey()
	if err != nil {
		return err
	}
	guard := rand.Text() // 26 base32 characters, 130 bits
	for _, f := range []struct {
		dst   *string
		value string
		field string
	}{
		{&in.OwnerPasswordSealed, password, "owner_password"},
		{&in.EncryptionKeySealed, key, "encryption_key"},
		{&in.SetupGuardSealed, guard, "setup_guard"},
	} {
		sealed, err := s.cfg.Keys.Seal(f.value, sealContext(in.ID, f.field))
		if err != nil {
			return err
		}
		*f.dst = sealed
	}
	return nil
}

func sealContext(instanceID, field string) string { return "instance/" + instanceID + "/" + field }

func (s *Service) open(in *Instance, field, sealed string) (string, error) {
	v, err := s.cfg.Keys.Open(sealed, sealContext(in.ID, field))
	if err != nil {
		return "", apperr.Wrap(apperr.Invalid, err, "cannot open the %s of instance %s", field, in.ID)
	}
	return v, nil
}

const slugAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newSlug returns a random DNS label: a letter and 9 letters or digits (about 46 bits),
// so the URL reveals nothing about the client and cannot be guessed from its id.
func newSlug() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.WriteByte(slugAlphabet[int(b[0])%26])
	for _, c := range b[1:] {
		sb.WriteByte(slugAlphabet[int(c)%len(slugAlphabet)])
	}
	return sb.String(), nil
}

// Retry starts a failed instance's provisioning again from the beginning, keeping its
// slug and secrets. It returns Conflict for an instance that has not failed.
func (s *Service) Retry(ctx context.Context, id string) (Instance, error) {
	in, err := s.store.Get(ctx, id)
	if err != nil {
		return in, err
	}
	if in.Status != Failed || in.FailureReason == reasonCompromised {
		return in, apperr.New(apperr.Conflict, "only a failed instance can be retried (this one is %s)", in.Status)
	}
	if in.ClientID == "" {
		return in, apperr.New(apperr.Conflict, "a failed pool member is not retried: the pool starts a new one by itself")
	}
	err = s.store.Apply(ctx, id, map[string]any{"status": Pending, "step": "", "failure_reason": "", "host": nil, "dns_record_id": "",
		"step_attempts": 0, "step_blocked_since": nil, "step_alerted": false},
		"retry", "provisioning restarted by the operator")
	if err != nil {
		return in, err
	}
	if err := s.enqueueProvision(ctx, id); err != nil {
		return in, err
	}
	return s.store.Get(ctx, id)
}

func (s *Service) fqdn(in *Instance) string { return in.Slug + "." + s.cfg.BaseDomain }

// Alert tells the operator, as the service's own alerts do: the subject is the text up to
// the first colon.
func (s *Service) Alert(ctx context.Context, format string, args ...any) {
	s.alert(ctx, format, args...)
}

func (s *Service) alert(ctx context.Context, subject string, args ...any) {
	body := fmt.Sprintf(subject, args...)
	if err := s.cfg.Notifier.AlertOperator(ctx, strings.SplitN(body, ":", 2)[0], body); err != nil {
		s.log.Error("alerting the operator failed", "error", err.Error(), "alert", body)
	}
}
