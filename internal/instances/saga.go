package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

// ProvisionArgs is the provisioning saga's job: one per instance at a time.
type ProvisionArgs struct {
	InstanceID string `json:"instance_id" river:"unique"`
}

// Kind names the job.
func (ProvisionArgs) Kind() string { return "instance_provision" }

// provisionAttempts bounds the job's plain errors only (the database failing under it):
// a failing step snoozes the job on the step's own policy and spends none of these.
const provisionAttempts = 25

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
	stepLaunched     = "launched"
	stepCapsVerified = "caps_verified"
	stepHealthy      = "healthy"
	stepDNS          = "dns"
	stepOwner        = "owner"
	stepActive       = "active"
	stepEmailed      = "emailed"
)

// phase says whom a step serves. The host phase starts a ready n8n that belongs to nobody
// yet: a pool member stops after it and waits for a payment. The hand-over phase gives the
// n8n to its customer: their name in DNS, their owner account, their email.
type phase int

const (
	hostPhase phase = iota
	handOverPhase
)

// step is one stored step of the saga: its name in the step column, its phase, what the
// timeline calls it, and what it does. host is the instance's host (zero before placement).
type step struct {
	name  string
	phase phase
	title string
	run   func(s *Service, ctx context.Context, in *Instance, host Host) (outcome, error)
}

var saga = []step{
	{stepPlaced, hostPhase, "placement", (*Service).place},
	{stepLaunched, hostPhase, "launch", (*Service).launch},
	{stepCapsVerified, hostPhase, "resource caps", (*Service).verifyCaps},
	{stepHealthy, hostPhase, "readiness", (*Service).checkReady},
	{stepDNS, handOverPhase, "DNS", (*Service).upsertDNS},
	{stepOwner, handOverPhase, "owner setup", (*Service).setupOwner},
	{stepActive, handOverPhase, "activation", (*Service).activate},
	{stepEmailed, handOverPhase, "credentials email", (*Service).emailCredentials},
}

// Steps lists the provisioning steps in order, as the instance's step field reports them.
var Steps = func() []string {
	names := make([]string, len(saga))
	for i, st := range saga {
		names[i] = st.name
	}
	return names
}()

// outcome is what a step did: columns to store with the step and a timeline message.
type outcome struct {
	set     map[string]any
	message string
}

type provisionWorker struct {
	river.WorkerDefaults[ProvisionArgs]
	s *Service
}

// Timeout bounds a saga run. A step that waits longer snoozes and goes on in a new run.
func (w *provisionWorker) Timeout(*river.Job[ProvisionArgs]) time.Duration { return w.s.cfg.JobTimeout }

// NextRetry keeps the job's own errors (a database blip) on the short, capped backoff.
func (w *provisionWorker) NextRetry(job *river.Job[ProvisionArgs]) time.Time {
	return w.s.now().Add(queue.Backoff(job.Attempt))
}

func (w *provisionWorker) Work(ctx context.Context, job *river.Job[ProvisionArgs]) error {
	return w.s.runSaga(ctx, job.Args.InstanceID, handOverPhase)
}

// runSaga runs the instance's steps after its stored one, up to the last step of phase
// last: the hand-over phase for a customer's instance, the host phase for a pool member.
func (s *Service) runSaga(ctx context.Context, id string, last phase) error {
	in, err := s.jobInstance(ctx, id)
	if err != nil {
		return err
	}
	if in.Status == Failed && in.FailureReason == reasonCompromised {
		return s.ensureReplacement(ctx, &in) // a crash may have come between the two halves
	}
	if !sagaRuns(in, last) {
		return nil // done, failed, claimed, or taken over by the lifecycle jobs
	}
	for _, st := range stepsAfter(in.Step) {
		if st.phase > last {
			return s.memberReady(ctx, &in)
		}
		start := time.Now()
		out, err := s.attempt(ctx, st, &in)
		s.observeStep(ctx, st, time.Since(start), err)
		if errors.Is(err, errNoRoomForMember) {
			return s.retireMember(ctx, &in, "no host has room for it")
		}
		if err != nil {
			return s.stepFailed(ctx, &in, st, err)
		}
		if err := s.stepDone(ctx, &in, st, out); err != nil {
			return err
		}
		if s.cfg.AfterStep != nil {
			s.cfg.AfterStep(st.name)
		}
		if in, err = s.store.Get(ctx, in.ID); err != nil {
			return err
		}
	}
	return nil
}

// StepObserver is told how each saga step attempt went: how long it took, including the
// time it waited inside the step for something on its way, and its error (nil: the step is
// done). The metrics implement it.
type StepObserver interface {
	ObserveStep(step string, d time.Duration, err error)
}

// observeStep reports an attempt that ended the step or failed it. An attempt that
// snoozes (still waiting for room, or for n8n, in the next run), a pool member with no
// room and a run cut short by shutdown have no outcome yet, so they are not reported.
func (s *Service) observeStep(ctx context.Context, st step, d time.Duration, err error) {
	var snooze *river.JobSnoozeError
	if s.cfg.Steps == nil || errors.As(err, &snooze) || errors.Is(err, errNoRoomForMember) || ctx.Err() != nil {
		return
	}
	s.cfg.Steps.ObserveStep(st.name, d, err)
}

// sagaRuns reports whether a saga run up to phase last has work on in. A pool member's
// run (host phase) stops once a payment claims it: the claim starts the customer's own
// job, a separate kind, so the two never run the same step.
func sagaRuns(in Instance, last phase) bool {
	if last == hostPhase {
		return in.Status == Warm
	}
	return in.Status == Pending || in.Status == Provisioning || in.Status == Active && in.EmailedAt == nil
}

// stepDone stores the step with its outcome and clears its retry state.
func (s *Service) stepDone(ctx context.Context, in *Instance, st step, out outcome) error {
	if out.set == nil {
		out.set = map[string]any{}
	}
	out.set["step"] = st.name
	out.set["step_attempts"], out.set["step_blocked_since"], out.set["step_alerted"] = 0, nil, false
	if err := s.store.Apply(ctx, in.ID, out.set, "step", out.message); err != nil {
		return err
	}
	s.log.Info("provisioning step done", "instance", in.ID, "step", st.name, "attempts", in.StepAttempts+1)
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

func stepsAfter(done string) []step {
	for i, st := range saga {
		if st.name == done {
			return saga[i+1:]
		}
	}
	return saga
}

// runMargin is what a run keeps of its timeout to store its state before it ends.
const runMargin = 5 * time.Second

// attempt runs one attempt of st. While the step reports that what it needs is on its
// way (ErrNotYet: n8n starting, its REST routes mounting, a guest agent coming back), it
// asks again every poll interval, spending no attempt, until the step's deadline; a run
// about to time out snoozes and the next run waits on.
func (s *Service) attempt(ctx context.Context, st step, in *Instance) (outcome, error) {
	var waitingFor string
	for {
		host, err := s.hostOf(ctx, in)
		if err != nil {
			return outcome{}, err
		}
		out, err := st.run(s, ctx, in, host)
		if !errors.Is(err, ErrNotYet) {
			return out, err
		}
		since, berr := s.blocked(ctx, in, st, err)
		switch {
		case berr != nil:
			return outcome{}, berr
		case s.now().Sub(since) >= s.cfg.StepDeadline:
			return outcome{}, err // stepFailed gives up
		case runEndsWithin(ctx, s.cfg.PollInterval+runMargin):
			return outcome{}, river.JobSnooze(0)
		}
		if why := apperr.Message(err); why != waitingFor {
			waitingFor = why
			s.store.Apply(ctx, in.ID, nil, "waiting", st.title+": "+why+"; waiting")
		}
		if err := s.cfg.Sleep(ctx, s.cfg.PollInterval); err != nil {
			return outcome{}, err
		}
	}
}

func runEndsWithin(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && time.Until(deadline) < d
}

// describe names an instance for the operator: whose it is, or that it is a pool member.
func describe(in *Instance) string {
	if in.ClientID == "" {
		return fmt.Sprintf("pool member %s (%s, plan %s)", in.ID, in.Slug, in.PlanID)
	}
	return fmt.Sprintf("instance %s (%s) of client %s", in.ID, in.Slug, in.ClientID)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// hostOf returns the instance's host, or the zero Host before placement.
func (s *Service) hostOf(ctx context.Context, in *Instance) (Host, error) {
	if in.Host == nil {
		return Host{}, nil
	}
	return s.cfg.Placer.Host(ctx, *in.Host)
}

// blocked records that in's step is blocked (failing or waiting) and returns since when;
// past the alert threshold it tells the operator, once per step.
func (s *Service) blocked(ctx context.Context, in *Instance, st step, cause error) (time.Time, error) {
	now := s.now()
	set := map[string]any{}
	if in.StepBlockedSince == nil {
		in.StepBlockedSince = &now
		set["step_blocked_since"] = now
	}
	since := *in.StepBlockedSince
	if !in.StepAlerted && now.Sub(since) >= s.cfg.AlertAfter {
		in.StepAlerted, set["step_alerted"] = true, true
		s.alert(ctx, "Provisioning stuck: %s has been blocked at step %s for %s (%d failed attempts): %s; it is compensated if still blocked at %s",
			describe(in), st.title, now.Sub(since).Round(time.Second), in.StepAttempts, apperr.Message(cause),
			since.Add(s.cfg.StepDeadline).Format(time.RFC3339))
	}
	if len(set) == 0 {
		return since, nil
	}
	return since, s.store.Apply(ctx, in.ID, set, "", "")
}

// stepFailed decides what a failed attempt means: try again after a short backoff while
// the step's deadline allows, or give up and clean up.
func (s *Service) stepFailed(ctx context.Context, in *Instance, st step, err error) error {
	var snooze *river.JobSnoozeError
	if errors.As(err, &snooze) {
		return err
	}
	if errors.Is(err, errCompromised) {
		return s.replaceCompromised(ctx, in)
	}
	since, berr := s.blocked(ctx, in, st, err)
	if berr != nil {
		return berr
	}
	attempts := in.StepAttempts + 1
	left := since.Add(s.cfg.StepDeadline).Sub(s.now())
	if apperr.Is(err, apperr.Invalid) || left <= 0 {
		reason := fmt.Sprintf("step %s failed: %s", st.name, apperr.Message(err))
		s.compensate(ctx, in, reason, true)
		s.alert(ctx, "Provisioning failed: %s gave up at step %s after %d attempts over %s: %s",
			describe(in), st.name, attempts, s.now().Sub(since).Round(time.Second), err.Error())
		return river.JobCancel(err)
	}
	delay := min(queue.Backoff(attempts), left)
	s.store.Apply(ctx, in.ID, map[string]any{"step_attempts": attempts}, "retry",
		fmt.Sprintf("%s: %s; next try in %s (attempt %d)", st.title, apperr.Message(err), roundDelay(delay), attempts))
	s.log.Warn("provisioning step failed; will retry", "instance", in.ID, "step", st.name, "attempt", attempts,
		"next_try_in", delay.String(), "error", err.Error())
	return river.JobSnooze(delay)
}

// roundDelay rounds a backoff for people: "4s", "0.6s".
func roundDelay(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// roomPoll is how often a pending instance looks for a host with room again. Snoozing is
// not a failed attempt, so an instance can wait for room as long as it takes; the check is
// one indexed query, so a short poll costs little and a customer waits seconds, not
// minutes, once the operator adds or frees a host.
const roomPoll = 5 * time.Second

func (s *Service) place(ctx context.Context, in *Instance, _ Host) (outcome, error) {
	host, err := s.cfg.Placer.Assign(ctx, in.ID)
	if errors.Is(err, ErrNoRoom) && in.Status == Warm {
		return outcome{}, errNoRoomForMember // the pool never waits for room: customers do
	}
	if errors.Is(err, ErrNoRoom) && s.evictMember(ctx) {
		host, err = s.cfg.Placer.Assign(ctx, in.ID) // a pool member gave its slot up
	}
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
	set := map[string]any{}
	if in.Status == Pending {
		set["status"] = Provisioning
	}
	return outcome{set: set, message: "placed on host " + host.Name}, nil
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
	if in.DiskGB > 0 {
		settings["DISK_GB"] = fmt.Sprint(in.DiskGB)
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
	// DiskGB is the data's quota (nil: none); DiskUsedBytes what the data uses.
	DiskGB        *int  `json:"disk_gb"`
	DiskUsedBytes int64 `json:"disk_used_bytes"`
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

// checkReady asks n8n's readiness; while n8n starts, the attempt loop asks again. A pool
// member waits on until its REST routes answer too, so that its hand-over takes one owner
// setup request; one whose owner someone else set up is never handed out.
func (s *Service) checkReady(ctx context.Context, in *Instance, host Host) (outcome, error) {
	if err := s.cfg.App.Ready(ctx, host.IngressURL, s.fqdn(in)); err != nil {
		return outcome{}, err
	}
	if in.Status != Warm {
		return outcome{message: "n8n is up and ready"}, nil
	}
	err := s.cfg.App.Unclaimed(ctx, host.IngressURL, s.fqdn(in))
	if errors.Is(err, ErrOwnerAlreadySetup) {
		return outcome{}, apperr.Wrap(apperr.Invalid, err, "security: someone set up the owner of this pool member")
	}
	if err != nil {
		return outcome{}, err
	}
	return outcome{message: "n8n is up, ready and has no owner yet: waiting in the pool"}, nil
}

func (s *Service) activate(_ context.Context, in *Instance, _ Host) (outcome, error) {
	return outcome{set: map[string]any{"status": Active}, message: "your n8n is ready at " + in.URL}, nil
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

func (s *Service) emailCredentials(ctx context.Context, in *Instance, _ Host) (outcome, error) {
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
	return outcome{set: map[string]any{"emailed_at": s.now()}, message: "login details emailed to " + client.Email}, nil
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
