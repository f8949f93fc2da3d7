package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// ProvisionArgs is the provisioning saga's job: one per instance at a time.
type ProvisionArgs struct {
	InstanceID string `json:"instance_id" river:"unique"`
}

// Kind names the job.
func (ProvisionArgs) Kind() string { return "instance_provision" }

// provisionAttempts bounds the retries of one saga run; River's backoff (attempt⁴ seconds)
// spreads ten attempts over about three hours before the instance is compensated.
const provisionAttempts = 10

// uniqueWhileQueued makes a job unique among the jobs not yet finished, so enqueuing the
// same work twice is a no-op while it is pending, but possible again once it has ended.
var uniqueWhileQueued = river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}}

func (s *Service) enqueueProvision(ctx context.Context, id string) error {
	_, err := s.cfg.Queue.Insert(ctx, ProvisionArgs{InstanceID: id},
		&river.InsertOpts{MaxAttempts: provisionAttempts, UniqueOpts: uniqueWhileQueued})
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "cannot enqueue the provisioning of instance %s", id)
	}
	return nil
}

// The saga's steps, in order. An instance's step column names the last one done; a run
// resumes at the next. Each step is idempotent, so a crash between doing a step and
// storing it only repeats that step.
const (
	stepPlaced       = "placed"
	stepDNS          = "dns"
	stepLaunched     = "launched"
	stepCapsVerified = "caps_verified"
	stepHealthy      = "healthy"
	stepOwner        = "owner"
	stepActive       = "active"
	stepEmailed      = "emailed"
)

// Steps lists the provisioning steps in order, as the instance's step field reports them.
var Steps = []string{stepPlaced, stepDNS, stepLaunched, stepCapsVerified, stepHealthy, stepOwner, stepActive, stepEmailed}

// outcome is what a step did: columns to store with the step and a timeline message.
type outcome struct {
	set     map[string]any
	message string
}

type provisionWorker struct {
	river.WorkerDefaults[ProvisionArgs]
	s *Service
}

// Timeout bounds a saga run; River rescues a run left behind by a crash after it.
func (w *provisionWorker) Timeout(*river.Job[ProvisionArgs]) time.Duration { return w.s.cfg.JobTimeout }

func (w *provisionWorker) Work(ctx context.Context, job *river.Job[ProvisionArgs]) error {
	s := w.s
	in, err := s.jobInstance(ctx, job.Args.InstanceID)
	if err != nil {
		return err
	}
	if in.Status == Failed && in.FailureReason == reasonCompromised {
		return s.ensureReplacement(ctx, &in) // a crash may have come between the two halves
	}
	if in.Status != Pending && in.Status != Provisioning && !(in.Status == Active && in.EmailedAt == nil) {
		return nil // done, failed, or taken over by the lifecycle jobs
	}
	for _, name := range stepsAfter(in.Step) {
		out, err := s.runStep(ctx, name, &in)
		if err != nil {
			return s.stepFailed(ctx, job, &in, name, err)
		}
		if out.set == nil {
			out.set = map[string]any{}
		}
		out.set["step"] = name
		if err := s.store.Apply(ctx, in.ID, out.set, "step", out.message); err != nil {
			return err
		}
		s.log.Info("provisioning step done", "instance", in.ID, "step", name, "attempt", job.Attempt)
		s.crashHook(name)
		if in, err = s.store.Get(ctx, in.ID); err != nil {
			return err
		}
	}
	return nil
}

// jobInstance loads a job's instance; a job whose instance is gone is cancelled, since no
// retry can bring it back.
func (s *Service) jobInstance(ctx context.Context, id string) (Instance, error) {
	in, err := s.store.Get(ctx, id)
	if apperr.Is(err, apperr.NotFound) {
		return in, river.JobCancel(err)
	}
	return in, err
}

func stepsAfter(done string) []string {
	for i, name := range Steps {
		if name == done {
			return Steps[i+1:]
		}
	}
	return Steps
}

func (s *Service) runStep(ctx context.Context, name string, in *Instance) (outcome, error) {
	if name == stepPlaced {
		return s.place(ctx, in)
	}
	host, err := s.cfg.Placer.Host(ctx, deref(in.Host))
	if err != nil {
		return outcome{}, err
	}
	switch name {
	case stepDNS:
		return s.upsertDNS(ctx, in, host)
	case stepLaunched:
		return s.launch(ctx, in, host)
	case stepCapsVerified:
		return s.verifyCaps(ctx, in, host)
	case stepHealthy:
		return s.waitHealthy(ctx, in, host)
	case stepOwner:
		return s.setupOwner(ctx, in, host)
	case stepActive:
		return outcome{set: map[string]any{"status": Active}, message: "your n8n is ready at " + in.URL}, nil
	case stepEmailed:
		return s.emailCredentials(ctx, in)
	}
	return outcome{}, fmt.Errorf("unknown saga step %q", name)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// roomPoll is how often a pending instance looks for a host with room again. Snoozing is
// not a failed attempt, so an instance can wait for room as long as it takes; the check is
// one indexed query, so a short poll costs little and a customer waits seconds, not
// minutes, once the operator adds or frees a host.
const roomPoll = 5 * time.Second

func (s *Service) place(ctx context.Context, in *Instance) (outcome, error) {
	host, err := s.cfg.Placer.Assign(ctx, in.ID)
	if errors.Is(err, ErrNoRoom) {
		waiting, herr := s.store.HasEvent(ctx, in.ID, "waiting_for_host")
		if herr == nil && !waiting {
			s.store.Apply(ctx, in.ID, nil, "waiting_for_host", "waiting for a host with room; the operator has been told")
			s.alert(ctx, "No host has room: instance %s of client %s (plan %s) waits in pending until a host is added or freed", in.ID, in.ClientID, in.PlanID)
		}
		return outcome{}, river.JobSnooze(roomPoll)
	}
	if err != nil {
		return outcome{}, err
	}
	return outcome{set: map[string]any{"status": Provisioning}, message: "placed on host " + host.Name}, nil
}

func (s *Service) upsertDNS(ctx context.Context, in *Instance, host Host) (outcome, error) {
	id, err := s.cfg.DNS.UpsertA(ctx, s.fqdn(in), host.PublicIP, "n8n-provisioner instance "+in.ID)
	if err != nil {
		return outcome{}, err
	}
	return outcome{set: map[string]any{"dns_record_id": id}, message: "DNS record " + s.fqdn(in) + " → " + host.PublicIP}, nil
}

func (s *Service) launch(ctx context.Context, in *Instance, host Host) (outcome, error) {
	key, err := s.open(in, "encryption_key", in.EncryptionKeySealed)
	if err != nil {
		return outcome{}, err
	}
	guard, err := s.open(in, "setup_guard", in.SetupGuardSealed)
	if err != nil {
		return outcome{}, err
	}
	htpasswd, err := s.cfg.App.GuardHTPasswd(guardUser, guard)
	if err != nil {
		return outcome{}, err
	}
	settings := map[string]string{
		"IMAGE":              in.N8nImage,
		"CPUS":               formatCPUs(in.CPUs),
		"MEMORY_MB":          fmt.Sprint(in.MemoryMB),
		"FQDN":               s.fqdn(in),
		"N8N_ENCRYPTION_KEY": key,
		"TZ":                 s.cfg.TimeZone,
		"SETUP_AUTH_USERS":   htpasswd,
	}
	if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "provision", in.Slug, settings); err != nil {
		return outcome{}, err
	}
	return outcome{message: fmt.Sprintf("container started on %s (%s)", host.Name, in.N8nImage)}, nil
}

// guardUser is the user name of the owner-setup guard's credential.
const guardUser = "provisioner"

func formatCPUs(c float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", c), "0"), ".")
}

// containerStatus is the part of `n8nctl status` the saga reads.
type containerStatus struct {
	Slug     string  `json:"slug"`
	Exists   bool    `json:"exists"`
	Running  bool    `json:"running"`
	Image    string  `json:"image"`
	CPUs     float64 `json:"cpus"`
	MemoryMB int     `json:"memory_mb"`
}

func (s *Service) status(ctx context.Context, in *Instance, host Host) (containerStatus, error) {
	var st containerStatus
	raw, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "status", in.Slug, nil)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("reading n8nctl status: %w", err)
	}
	return st, nil
}

func (s *Service) verifyCaps(ctx context.Context, in *Instance, host Host) (outcome, error) {
	return s.verifyCapsOf(ctx, in, host, true)
}

func (s *Service) waitHealthy(ctx context.Context, in *Instance, host Host) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HealthTimeout)
	defer cancel()
	if err := s.cfg.App.WaitReady(ctx, host.IngressURL, s.fqdn(in)); err != nil {
		return outcome{}, apperr.Wrap(apperr.Unavailable, err, "n8n did not become ready within %s", s.cfg.HealthTimeout)
	}
	return outcome{message: "n8n is up and ready"}, nil
}

// errCompromised means someone else created the owner of a fresh instance.
var errCompromised = errors.New("the n8n owner was set up by someone else")

const reasonCompromised = "compromised: the n8n owner was set up by someone else"

func (s *Service) setupOwner(ctx context.Context, in *Instance, host Host) (outcome, error) {
	password, err := s.open(in, "owner_password", in.OwnerPasswordSealed)
	if err != nil {
		return outcome{}, err
	}
	guard, err := s.open(in, "setup_guard", in.SetupGuardSealed)
	if err != nil {
		return outcome{}, err
	}
	client, err := s.store.GetClient(ctx, in.ClientID)
	if err != nil {
		return outcome{}, err
	}
	first, last := ownerNames(client.Name)
	owner := Owner{Email: in.OwnerEmail, FirstName: first, LastName: last, Password: password}
	err = s.cfg.App.SetupOwner(ctx, host.IngressURL, s.fqdn(in), owner, guardUser, guard)
	switch {
	case err == nil:
		return outcome{message: "owner account created for " + in.OwnerEmail}, nil
	case !errors.Is(err, ErrOwnerAlreadySetup):
		return outcome{}, err
	}
	// Already set up: by an earlier attempt of ours (then our password works) or by someone else.
	switch lerr := s.cfg.App.Login(ctx, host.IngressURL, s.fqdn(in), in.OwnerEmail, password); {
	case lerr == nil:
		return outcome{message: "owner account was already created by an earlier attempt"}, nil
	case apperr.Is(lerr, apperr.Unauthorized):
		return outcome{}, errCompromised
	default:
		return outcome{}, lerr
	}
}

func ownerNames(name string) (first, last string) {
	parts := strings.Fields(name)
	switch len(parts) {
	case 0:
		return "n8n", "Owner"
	case 1:
		return parts[0], "-"
	}
	return parts[0], strings.Join(parts[1:], " ")
}

func (s *Service) emailCredentials(ctx context.Context, in *Instance) (outcome, error) {
	if in.EmailedAt != nil {
		return outcome{message: "credentials were emailed already"}, nil
	}
	client, err := s.store.GetClient(ctx, in.ClientID)
	if err != nil {
		return outcome{}, err
	}
	password, err := s.open(in, "owner_password", in.OwnerPasswordSealed)
	if err != nil {
		return outcome{}, err
	}
	err = s.cfg.Notifier.SendCredentials(ctx, Credentials{To: client.Email, Name: client.Name, Locale: client.Locale,
		URL: in.URL, LoginEmail: in.OwnerEmail, Password: password, Key: in.ID})
	if err != nil {
		return outcome{}, err
	}
	return outcome{set: map[string]any{"emailed_at": time.Now().UTC()}, message: "login details emailed to " + client.Email}, nil
}

// stepFailed decides what a failed step means: wait and retry, or give up and clean up.
func (s *Service) stepFailed(ctx context.Context, job *river.Job[ProvisionArgs], in *Instance, step string, err error) error {
	var snooze *river.JobSnoozeError
	if errors.As(err, &snooze) {
		return err
	}
	if errors.Is(err, errCompromised) {
		return s.replaceCompromised(ctx, in)
	}
	permanent := apperr.Is(err, apperr.Invalid)
	if !permanent && job.Attempt < job.MaxAttempts {
		s.store.Apply(ctx, in.ID, nil, "retry", fmt.Sprintf("step %s failed (attempt %d of %d): %s; retrying",
			step, job.Attempt, job.MaxAttempts, apperr.Message(err)))
		s.log.Warn("provisioning step failed; will retry", "instance", in.ID, "step", step, "attempt", job.Attempt, "error", err.Error())
		return err
	}
	s.compensate(ctx, in, fmt.Sprintf("step %s failed: %s", step, apperr.Message(err)), true)
	s.alert(ctx, "Provisioning failed: instance %s (%s) of client %s gave up at step %s: %s", in.ID, in.Slug, in.ClientID, step, err.Error())
	return river.JobCancel(err)
}

// compensate removes what provisioning created (container, DNS record, host slot) and
// marks the instance failed with reason. purge also deletes the container's data.
func (s *Service) compensate(ctx context.Context, in *Instance, reason string, purge bool) {
	var leftovers []string
	if in.Host != nil {
		if host, err := s.cfg.Placer.Host(ctx, *in.Host); err == nil {
			settings := map[string]string{}
			if purge {
				settings["PURGE"] = "1"
			}
			if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "destroy", in.Slug, settings); err != nil {
				leftovers = append(leftovers, "container ("+apperr.Message(err)+")")
			}
		}
	}
	if err := s.cfg.DNS.Delete(ctx, s.fqdn(in)); err != nil {
		leftovers = append(leftovers, "DNS record ("+apperr.Message(err)+")")
	}
	message := reason
	if len(leftovers) > 0 {
		message += "; could not remove: " + strings.Join(leftovers, ", ") + " (the doctor reports them)"
	}
	// Failed instances hold no host slot: placement only counts live statuses.
	if err := s.store.Apply(ctx, in.ID, map[string]any{"status": Failed, "failure_reason": reason}, "failed", message); err != nil {
		s.log.Error("marking instance failed", "instance", in.ID, "error", err.Error())
	}
}

// replaceCompromised handles an instance whose owner someone else claimed: its login
// details would not work, so they are never sent. The container is destroyed (its data is
// kept for inspection), the operator is alerted, and a fresh instance with a new slug and
// key is provisioned for the same subscription.
func (s *Service) replaceCompromised(ctx context.Context, in *Instance) error {
	s.compensate(ctx, in, reasonCompromised, false)
	s.alert(ctx, "Security: instance %s (%s) of client %s was claimed by someone else before the provisioner set up its owner; destroyed (data kept on host %s for inspection), a fresh instance is being provisioned",
		in.ID, in.Slug, in.ClientID, deref(in.Host))
	return s.ensureReplacement(ctx, in)
}

// ensureReplacement provisions a fresh instance for a compromised one's subscription,
// unless the subscription already has a live instance (a replacement made before a crash).
func (s *Service) ensureReplacement(ctx context.Context, in *Instance) error {
	if in.SubscriptionID == nil {
		return nil
	}
	siblings, err := s.store.BySubscription(ctx, *in.SubscriptionID)
	if err != nil {
		return err
	}
	if live := liveInstance(siblings); live != nil {
		if live.Status == Pending || live.Status == Provisioning {
			return s.enqueueProvision(ctx, live.ID)
		}
		return nil
	}
	client, err := s.store.GetClient(ctx, in.ClientID)
	if err != nil {
		return err
	}
	plan, ok := s.cfg.Plans.Find(in.PlanID)
	if !ok {
		return river.JobCancel(fmt.Errorf("plan %q of compromised instance %s is gone", in.PlanID, in.ID))
	}
	fresh, err := s.create(ctx, Subscription{ID: *in.SubscriptionID, ClientID: client.ID, Email: in.OwnerEmail,
		Name: client.Name, Locale: client.Locale, PlanID: plan.ID, Run: true}, plan)
	if err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, nil, "replaced", "replaced by instance "+fresh.ID)
}

// crashHook kills the process after step when the crash-safety tests ask for it.
func (s *Service) crashHook(step string) {
	if s.cfg.CrashAfterStep != "" && s.cfg.CrashAfterStep == step {
		s.log.Warn("crash hook: killing the process after step", "step", step)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal arrives asynchronously; never go on to the next step
	}
}
