package instances

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
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
	Plans    billing.Plans
	// BaseDomain: instances live at https://<slug>.<BaseDomain>.
	BaseDomain string
	// HealthTimeout bounds one wait for n8n's readiness (default 3m).
	HealthTimeout time.Duration
	// TimeZone is the instances' GENERIC_TIMEZONE/TZ (default UTC).
	TimeZone string
	Logger   *slog.Logger
	// CrashAfterStep, when set, kills the process right after that saga step is stored:
	// the crash-safety tests use it to stop a real child process at each step in turn.
	CrashAfterStep string
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
	if cfg.TimeZone == "" {
		cfg.TimeZone = "UTC"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger}
}

// Register adds the service's job workers.
func (s *Service) Register(workers *river.Workers) {
	river.AddWorker(workers, &provisionWorker{s: s})
}

// Subscription is what billing tells instances about a customer's subscription.
type Subscription struct {
	ID       string // our subscription id
	ClientID string // the portal's client id
	Email    string
	Name     string
	Locale   string
	PlanID   string
	Status   string // active, trialing, past_due, unpaid, canceled, incomplete, incomplete_expired
}

// wantsRunning reports whether a subscription in status entitles the client to a running
// instance.
func wantsRunning(status string) bool { return status == "active" || status == "trialing" }

// Reconcile makes the client's instances match the subscription: an active or trialing
// subscription gets exactly one instance of its plan (created and provisioned if there is
// none). It is idempotent: billing calls it after every applied event.
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
	current := liveInstance(list)
	if !wantsRunning(sub.Status) {
		return nil // suspension and deletion are the lifecycle jobs' work
	}
	if current == nil {
		_, err := s.create(ctx, sub, plan)
		return err
	}
	if current.Status == Pending || current.Status == Provisioning {
		return s.enqueueProvision(ctx, current.ID) // unique: a no-op while one is queued
	}
	return nil
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
func (s *Service) create(ctx context.Context, sub Subscription, plan billing.Plan) (*Instance, error) {
	in := &Instance{
		ID: NewID(), ClientID: sub.ClientID, PlanID: plan.ID, CPUs: plan.CPUs, MemoryMB: plan.MemoryMB,
		N8nImage: plan.N8nImage, Status: Pending, OwnerEmail: sub.Email,
	}
	if sub.ID != "" {
		in.SubscriptionID = &sub.ID
	}
	if err := s.sealSecrets(in); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		slug, err := newSlug()
		if err != nil {
			return nil, err
		}
		in.Slug, in.URL = slug, "https://"+slug+"."+s.cfg.BaseDomain
		err = s.store.Create(ctx, in)
		if err == nil {
			break
		}
		if !apperr.Is(err, apperr.Conflict) || attempt == 5 {
			return nil, err
		}
	}
	s.log.Info("instance reserved", "instance", in.ID, "client", in.ClientID, "slug", in.Slug, "plan", in.PlanID)
	return in, s.enqueueProvision(ctx, in.ID)
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
	err = s.store.Apply(ctx, id, map[string]any{"status": Pending, "step": "", "failure_reason": "", "host": nil, "dns_record_id": ""},
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

func (s *Service) alert(ctx context.Context, subject string, args ...any) {
	body := fmt.Sprintf(subject, args...)
	if err := s.cfg.Notifier.AlertOperator(ctx, strings.SplitN(body, ":", 2)[0], body); err != nil {
		s.log.Error("alerting the operator failed", "error", err.Error(), "alert", body)
	}
}
