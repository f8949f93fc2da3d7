package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

// The saga's policy, proved in milliseconds: the ports are in-memory fakes, the store is
// a real SQLite database, and the clock is fake (Sleep advances it), so the tests follow
// the production retry, wait and deadline rules without waiting for them.

// fakeClock is the service's clock; sleeping advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.Advance(d)
	return ctx.Err()
}

// faults hands out the errors a fake is told to return, in order, per operation.
type faults struct {
	mu   sync.Mutex
	next map[string][]error
	// always, when set for an operation, is returned once next is exhausted.
	always map[string]error
	calls  map[string]int
}

func (f *faults) fail(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.next == nil {
		f.next = map[string][]error{}
	}
	f.next[op] = append(f.next[op], errs...)
}

func (f *faults) failAlways(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.always == nil {
		f.always = map[string]error{}
	}
	f.always[op] = err
}

func (f *faults) take(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[op]++
	if errs := f.next[op]; len(errs) > 0 {
		f.next[op] = errs[1:]
		return errs[0]
	}
	return f.always[op]
}

func (f *faults) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// world is every port of the service as one in-memory fake.
type world struct {
	faults
	store      *Store
	host       Host
	containers map[string]map[string]string // slug → provision settings
	records    map[string]string
	owners     map[string]Owner
	alerts     []string
	emails     []Credentials
	inserted   []river.JobArgs
	// egressDrift, when set, is what n8nctl list says is wrong with the egress policy.
	egressDrift string
	// ignoreDisk makes the host drop disk quotas, as one without loop devices would.
	ignoreDisk bool
	// hostDisk is what n8nctl list reports of the host's disk; hostDiskGB what was recorded.
	hostDisk   [2]int64
	hostDiskGB int
	// room, when set, is the host's load and room as Room reports it.
	room *HostRoom
}

func newWorld() *world {
	return &world{
		host:       Host{Name: "nuc", Node: "pve", VMID: 101, PublicIP: "203.0.113.10", IngressURL: "http://127.0.0.1:1"},
		containers: map[string]map[string]string{}, records: map[string]string{}, owners: map[string]Owner{},
	}
}

// Assign records the host on the instance, as the hosts store does.
func (w *world) Assign(ctx context.Context, id string) (Host, error) {
	if err := w.take("assign"); err != nil {
		return Host{}, err
	}
	return w.host, w.store.Apply(ctx, id, map[string]any{"host": w.host.Name}, "", "")
}

// AssignTo places on the one host, as Assign does.
func (w *world) AssignTo(ctx context.Context, id, _ string) (Host, error) { return w.Assign(ctx, id) }

// Capacity reports the one host, with room.
func (w *world) Capacity(context.Context) ([]HostRoom, error) {
	return []HostRoom{{Name: w.host.Name, Free: 10}}, nil
}

// Room reports w.room, or room to spare.
func (w *world) Room(context.Context, string) (HostRoom, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.room != nil {
		return *w.room, nil
	}
	return HostRoom{Name: w.host.Name, Free: 10}, nil
}

func (w *world) RecordDisk(_ context.Context, _ string, gb int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hostDiskGB = gb
	return nil
}

func (w *world) Host(context.Context, string) (Host, error) { return w.host, nil }
func (w *world) Hosts(context.Context) ([]Host, error)      { return []Host{w.host}, nil }

func (w *world) UpsertA(_ context.Context, name, ip, _ string) (string, error) {
	if err := w.take("dns"); err != nil {
		return "", err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.records[name] = ip
	return "rec-" + name, nil
}

func (w *world) Delete(_ context.Context, name string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.records, name)
	return nil
}

func (w *world) Records(context.Context, string) (map[string]string, error) { return w.records, nil }

func (w *world) Run(_ context.Context, _ string, _ int, verb, slug string, settings map[string]string) (json.RawMessage, error) {
	if err := w.take(verb); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch verb {
	case "provision":
		w.containers[slug] = settings
	case "destroy":
		delete(w.containers, slug)
	case "list":
		var list hostList
		list.Host.Egress = "ok"
		if w.hostDisk[0] > 0 {
			list.Host.Disk = &struct {
				SizeBytes int64 `json:"size_bytes"`
				UsedBytes int64 `json:"used_bytes"`
			}{w.hostDisk[0], w.hostDisk[1]}
		}
		if w.egressDrift != "" {
			list.Host.Egress = w.egressDrift
		}
		for slug, c := range w.containers {
			list.Instances = append(list.Instances, w.statusOf(slug, c))
		}
		return json.Marshal(list)
	case "status":
		c, ok := w.containers[slug]
		st := w.statusOf(slug, c)
		st.Exists, st.Running = ok, ok
		return json.Marshal(st)
	}
	return json.RawMessage(`{"ok":true}`), nil
}

// statusOf is what n8nctl status reports of a running container started with settings c.
func (w *world) statusOf(slug string, c map[string]string) containerStatus {
	var cpus float64
	var mem int
	fmt.Sscan(c["CPUS"], &cpus)
	fmt.Sscan(c["MEMORY_MB"], &mem)
	st := containerStatus{Slug: slug, Exists: true, Running: true, Image: c["IMAGE"], CPUs: cpus, MemoryMB: mem}
	var disk int
	if _, err := fmt.Sscan(c["DISK_GB"], &disk); err == nil && !w.ignoreDisk {
		st.DiskGB = &disk
	}
	return st
}

func (w *world) Ready(context.Context, string, string) error { return w.take("ready") }

func (w *world) SetupOwner(_ context.Context, _, fqdn string, o Owner, _, _ string) error {
	if err := w.take("setup"); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.owners[fqdn]; ok {
		return ErrOwnerAlreadySetup
	}
	w.owners[fqdn] = o
	return nil
}

func (w *world) Unclaimed(_ context.Context, _, fqdn string) error {
	if err := w.take("unclaimed"); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.owners[fqdn]; ok {
		return ErrOwnerAlreadySetup
	}
	return nil
}

func (w *world) Login(_ context.Context, _, fqdn, _, password string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.owners[fqdn].Password != password {
		return apperr.New(apperr.Unauthorized, "wrong password")
	}
	return nil
}

func (w *world) GeneratePassword() (string, error)                   { return "Passw0rd-" + NewID()[:8], nil }
func (w *world) GenerateEncryptionKey() (string, error)              { return "key-" + NewID(), nil }
func (w *world) GuardHTPasswd(user, password string) (string, error) { return user + ":hash", nil }

func (w *world) SendCredentials(_ context.Context, c Credentials) error {
	if err := w.take("email"); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.emails = append(w.emails, c)
	return nil
}

func (w *world) Notify(context.Context, Notice) error { return nil }

func (w *world) AlertOperator(_ context.Context, subject, _ string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.alerts = append(w.alerts, subject)
	return nil
}

func (w *world) alertsWith(prefix string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.alerts {
		if strings.HasPrefix(a, prefix) {
			n++
		}
	}
	return n
}

func (w *world) Insert(_ context.Context, args river.JobArgs, _ *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.inserted = append(w.inserted, args)
	return &rivertype.JobInsertResult{Job: &rivertype.JobRow{ID: int64(len(w.inserted))}}, nil
}

type sagaTest struct {
	t     *testing.T
	ctx   context.Context
	world *world
	clock *fakeClock
	cfg   Config
	id    string
}

// newSagaTest reserves one paid instance on a fresh database.
func newSagaTest(t *testing.T) *sagaTest {
	t.Helper()
	st := newSagaWorld(t, plans.Plans{{ID: "starter", CPUs: 0.5, MemoryMB: 1024, N8nImage: plans.DefaultN8nImage}})
	err := st.service().Reconcile(st.ctx, Subscription{ID: "sub_1", ClientID: "cus_1", Email: "ada@example.com",
		Name: "Ada Lovelace", Locale: "en", PlanID: "starter", Run: true})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := st.cfg.Store.BySubscription(st.ctx, "sub_1")
	st.id = list[0].ID
	return st
}

// newSagaWorld is a fresh database with one host and the subscription sub_1, selling plans.
func newSagaWorld(t *testing.T, plans plans.Plans) *sagaTest {
	t.Helper()
	t.Parallel()
	db := dbtest.Open(t, database.SQLite)
	key, _ := secret.NewKey()
	raw, _ := secret.ParseKey(key)
	keys, err := secret.NewKeyring(raw)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld()
	clock := &fakeClock{now: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	st := &sagaTest{t: t, ctx: context.Background(), world: w, clock: clock}
	// The rows that billing and the host inventory own.
	for _, q := range []string{
		`INSERT INTO hosts (name, node, vmid, public_ip, ingress_url, max_instances, created_at, updated_at)
			VALUES ('nuc', 'pve', 101, '203.0.113.10', 'http://127.0.0.1:1', 10, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)`,
		`INSERT INTO subscriptions (id, provider, provider_subscription_id, plan_id, status, status_since,
			provider_updated_at, fetched_at, created_at, updated_at) VALUES ('sub_1', 'stripe', 'sub_x', 'starter', 'active',
			CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)`,
	} {
		if err := db.Gorm.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	w.store = NewStore(db.Gorm, clock.Now)
	st.cfg = Config{
		Store: w.store, Keys: keys, Placer: w, DNS: w, Agent: w, App: w, Notifier: w, Queue: w,
		Plans: plans, BaseDomain: "n8n.example.com", Now: clock.Now, Sleep: clock.Sleep,
	}
	return st
}

// service is a fresh Service on the same store and world, as a restarted process has.
func (st *sagaTest) service() *Service { return NewService(st.cfg) }

// run works the provisioning job as River would, a fresh process each run, until it ends;
// a snooze advances the clock by its duration. It returns the snoozes and the final error.
func (st *sagaTest) run() (snoozes []time.Duration, err error) {
	st.t.Helper()
	for range 10000 {
		job := &river.Job[ProvisionArgs]{JobRow: &rivertype.JobRow{ID: 1, Attempt: 1, MaxAttempts: provisionAttempts},
			Args: ProvisionArgs{InstanceID: st.id}}
		err = (&provisionWorker{s: st.service()}).Work(st.ctx, job)
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) {
			return snoozes, err
		}
		snoozes = append(snoozes, snooze.Duration)
		st.clock.Advance(snooze.Duration)
	}
	st.t.Fatal("the job never ended")
	return nil, nil
}

func (st *sagaTest) instance() Instance {
	st.t.Helper()
	in, err := st.cfg.Store.Get(st.ctx, st.id)
	if err != nil {
		st.t.Fatal(err)
	}
	return in
}

// events returns the timeline's messages of kind.
func (st *sagaTest) events(kind string) []string {
	st.t.Helper()
	list, err := st.cfg.Store.Timeline(st.ctx, st.id)
	if err != nil {
		st.t.Fatal(err)
	}
	var out []string
	for _, ev := range list {
		if ev.Kind == kind {
			out = append(out, ev.Message)
		}
	}
	return out
}

func unavailable(msg string) error { return apperr.New(apperr.Unavailable, "%s", msg) }

func notYet(msg string) error { return fmt.Errorf("%w: %w", ErrNotYet, unavailable(msg)) }

func TestSagaCompletesInOneRun(t *testing.T) {
	st := newSagaTest(t)
	snoozes, err := st.run()
	if err != nil || len(snoozes) != 0 {
		t.Fatalf("run = %v after snoozes %v, want done in one run", err, snoozes)
	}
	in := st.instance()
	if in.Status != Active || in.Step != stepEmailed || in.EmailedAt == nil || len(st.world.emails) != 1 {
		t.Errorf("instance = %s at %s, emails %d", in.Status, in.Step, len(st.world.emails))
	}
	if steps := st.events("step"); len(steps) != len(saga) {
		t.Errorf("timeline steps = %q", steps)
	}
}

// Cloudflare answers 500 three times: three short, growing, jittered snoozes, a timeline
// that says what failed and when the next try comes, then the instance completes with
// its retry state cleared.
func TestFailingStepBacksOffShortlyThenCompletes(t *testing.T) {
	st := newSagaTest(t)
	st.world.fail("dns", unavailable("cloudflare: HTTP 500"), unavailable("cloudflare: HTTP 500"), unavailable("cloudflare: HTTP 500"))
	snoozes, err := st.run()
	if err != nil {
		t.Fatal(err)
	}
	nominal := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	if len(snoozes) != len(nominal) {
		t.Fatalf("snoozes = %v, want three", snoozes)
	}
	for i, d := range snoozes {
		if lo, hi := nominal[i]*7/10, nominal[i]*13/10; d < lo || d > hi {
			t.Errorf("snooze %d = %s, want about %s", i+1, d, nominal[i])
		}
	}
	retries := st.events("retry")
	if len(retries) != 3 || !strings.HasPrefix(retries[0], "DNS: cloudflare: HTTP 500; next try in ") || !strings.HasSuffix(retries[2], "(attempt 3)") {
		t.Errorf("retry timeline = %q", retries)
	}
	in := st.instance()
	if in.Status != Active || in.StepAttempts != 0 || in.StepBlockedSince != nil || in.StepAlerted {
		t.Errorf("instance = %s, attempts %d, blocked since %v, alerted %v", in.Status, in.StepAttempts, in.StepBlockedSince, in.StepAlerted)
	}
	if n := st.world.alertsWith("Provisioning"); n != 0 {
		t.Errorf("%d operator alerts for a fault of a few seconds", n)
	}
}

// A step that keeps failing: backoff capped at 30 s, the operator told once after
// AlertAfter, and the instance compensated once the deadline has passed — counted from
// the first failure across runs of fresh processes, since it is stored.
func TestFailingStepIsCompensatedAtItsDeadline(t *testing.T) {
	st := newSagaTest(t)
	st.world.failAlways("provision", unavailable("n8nctl provision: exit status 1: docker: no space left on device"))
	start := st.clock.Now()
	snoozes, err := st.run()
	var cancel *river.JobCancelError
	if !errors.As(err, &cancel) {
		t.Fatalf("run = %v, want the job cancelled", err)
	}
	for _, d := range snoozes {
		if d > 30*time.Second || d <= 0 {
			t.Fatalf("snooze %s outside (0, 30s]", d)
		}
	}
	elapsed := st.clock.Now().Sub(start)
	if deadline := 30 * time.Minute; elapsed < deadline || elapsed > deadline+time.Minute {
		t.Errorf("gave up after %s, want the 30m deadline", elapsed)
	}
	in := st.instance()
	if in.Status != Failed || !strings.Contains(in.FailureReason, "no space left") {
		t.Errorf("instance = %s %q", in.Status, in.FailureReason)
	}
	if len(st.world.containers) != 0 || len(st.world.records) != 0 || len(st.world.emails) != 0 {
		t.Errorf("left behind: containers %v, records %v, emails %d", st.world.containers, st.world.records, len(st.world.emails))
	}
	if stuck, failed := st.world.alertsWith("Provisioning stuck"), st.world.alertsWith("Provisioning failed"); stuck != 1 || failed != 1 {
		t.Errorf("alerts: %d stuck, %d failed, want one of each: %q", stuck, failed, st.world.alerts)
	}
}

// What is on its way is waited for inside the step: n8n not ready for a while, then its
// REST routes answering 404 for a while. No attempt is spent, the timeline says what the
// instance waits for, and one run finishes the saga.
func TestWaitingIsNotFailing(t *testing.T) {
	st := newSagaTest(t)
	for range 8 {
		st.world.fail("ready", notYet("readiness answered HTTP 503"))
	}
	for range 12 {
		st.world.fail("setup", notYet("REST routes not mounted yet (404)"))
	}
	snoozes, err := st.run()
	if err != nil || len(snoozes) != 0 {
		t.Fatalf("run = %v, snoozes %v: want one run", err, snoozes)
	}
	if retries := st.events("retry"); len(retries) != 0 {
		t.Errorf("failed attempts on the timeline: %q", retries)
	}
	waits := st.events("waiting")
	if len(waits) != 2 || !strings.HasPrefix(waits[0], "readiness: ") || !strings.HasPrefix(waits[1], "owner setup: REST routes") {
		t.Errorf("waiting timeline = %q, want one entry per thing waited for", waits)
	}
	if in := st.instance(); in.Status != Active || len(st.world.emails) != 1 {
		t.Errorf("instance = %s, emails %d", in.Status, len(st.world.emails))
	}
	if got := st.world.count("setup"); got != 13 {
		t.Errorf("owner setup asked %d times, want 13", got)
	}
}

// An n8n that never becomes ready is waited for up to the deadline, the operator told
// along the way, then compensated.
func TestNeverReadyIsCompensatedAtTheDeadline(t *testing.T) {
	st := newSagaTest(t)
	st.cfg.StepDeadline, st.cfg.AlertAfter = 10*time.Minute, 2*time.Minute
	st.world.failAlways("ready", notYet("readiness answered HTTP 503"))
	start := st.clock.Now()
	_, err := st.run()
	var cancel *river.JobCancelError
	if !errors.As(err, &cancel) {
		t.Fatalf("run = %v, want the job cancelled", err)
	}
	if elapsed := st.clock.Now().Sub(start); elapsed < 10*time.Minute || elapsed > 11*time.Minute {
		t.Errorf("gave up after %s, want the 10m deadline", elapsed)
	}
	if in := st.instance(); in.Status != Failed || !strings.Contains(in.FailureReason, "step healthy failed") {
		t.Errorf("instance = %s %q", in.Status, in.FailureReason)
	}
	if st.world.alertsWith("Provisioning stuck") != 1 || len(st.events("waiting")) != 1 {
		t.Errorf("alerts %q, waiting events %q", st.world.alerts, st.events("waiting"))
	}
}

// A permanent failure (the host's caps did not apply) is not retried.
func TestPermanentFailureCompensatesAtOnce(t *testing.T) {
	st := newSagaTest(t)
	st.world.fail("status", apperr.New(apperr.Invalid, "resource caps did not take effect"))
	snoozes, err := st.run()
	var cancel *river.JobCancelError
	if !errors.As(err, &cancel) || len(snoozes) != 0 {
		t.Fatalf("run = %v after %v, want cancelled at once", err, snoozes)
	}
	if in := st.instance(); in.Status != Failed || st.world.count("provision") != 1 {
		t.Errorf("instance = %s, provision calls %d", in.Status, st.world.count("provision"))
	}
}

func TestAfterStepSeesEveryStep(t *testing.T) {
	st := newSagaTest(t)
	var seen []string
	st.cfg.AfterStep = func(step string) { seen = append(seen, step) }
	if _, err := st.run(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != strings.Join(Steps, ",") {
		t.Errorf("AfterStep saw %v, want %v", seen, Steps)
	}
}
