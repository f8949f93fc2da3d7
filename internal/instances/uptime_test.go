package instances

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// dyingN8n is the world with customer n8n that can die: a container that stops (it stays
// stopped until resumed) or an n8n that runs but does not answer; after a start, n8n
// needs bootPasses more probes before it answers.
type dyingN8n struct {
	*world
	mu        sync.Mutex
	stopped   map[string]bool
	hung      map[string]bool
	booting   map[string]int
	bootPass  int
	resumes   int
	readyAsks int
}

func newDyingN8n(w *world) *dyingN8n {
	return &dyingN8n{world: w, stopped: map[string]bool{}, hung: map[string]bool{}, booting: map[string]int{}}
}

func (d *dyingN8n) Ready(ctx context.Context, ingress, fqdn string) error {
	slug := strings.SplitN(fqdn, ".", 2)[0]
	d.mu.Lock()
	d.readyAsks++
	booting := d.booting[slug] > 0
	if booting {
		d.booting[slug]--
	}
	down := d.stopped[slug] || d.hung[slug] || booting
	d.mu.Unlock()
	if down {
		return unavailable("dial tcp 127.0.0.1:80: connection refused")
	}
	return d.world.Ready(ctx, ingress, fqdn)
}

func (d *dyingN8n) Run(ctx context.Context, node string, vmid int, verb, slug string, settings map[string]string) (json.RawMessage, error) {
	d.mu.Lock()
	stopped := d.stopped[slug]
	if verb == "resume" && stopped {
		delete(d.stopped, slug)
		d.booting[slug] = d.bootPass
		d.resumes++
	}
	d.mu.Unlock()
	raw, err := d.world.Run(ctx, node, vmid, verb, slug, settings)
	if err != nil || verb != "status" || !stopped {
		return raw, err
	}
	var st containerStatus
	json.Unmarshal(raw, &st)
	st.Running = false
	return json.Marshal(st)
}

// uptimeTest is an active instance on a dying-n8n world, probed with the production policy.
type uptimeTest struct {
	*sagaTest
	n8n     *dyingN8n
	metrics *lastProbes
}

type lastProbes struct {
	mu      sync.Mutex
	results []ProbeResult
}

func (l *lastProbes) Probed(r []ProbeResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.results = append([]ProbeResult(nil), r...)
}

func newUptimeTest(t *testing.T) *uptimeTest {
	t.Helper()
	st := newSagaTest(t)
	if _, err := st.run(); err != nil {
		t.Fatal(err)
	}
	ut := &uptimeTest{sagaTest: st, n8n: newDyingN8n(st.world), metrics: &lastProbes{}}
	st.cfg.Agent, st.cfg.App, st.cfg.UptimeMetrics = ut.n8n, ut.n8n, ut.metrics
	return ut
}

// pass runs one uptime job as River would, in a fresh process (so nothing is remembered
// in memory), one interval after the last.
func (ut *uptimeTest) pass() {
	ut.t.Helper()
	s := ut.service()
	ut.clock.Advance(s.cfg.Uptime.Interval)
	job := &river.Job[UptimeArgs]{JobRow: &rivertype.JobRow{ID: 1, Attempt: 1}}
	if err := (&uptimeWorker{s: s}).Work(ut.ctx, job); err != nil {
		ut.t.Fatal(err)
	}
}

func (ut *uptimeTest) slug() string { return ut.instance().Slug }

// An n8n whose container stops: after the policy's failures in a row it is degraded, the
// operator is alerted once, the container is started again, and when n8n answers the
// instance recovers with a notice. Each pass is a new process: nothing is repeated.
func TestUptimeRestartsAStoppedInstanceAndReportsTheOutageOnce(t *testing.T) {
	ut := newUptimeTest(t)
	ut.n8n.bootPass = 1 // n8n needs a probe's interval to start after the restart
	slug := ut.slug()
	ut.n8n.mu.Lock()
	ut.n8n.stopped[slug] = true
	ut.n8n.mu.Unlock()

	ut.pass() // the first failed probe: maybe a blip
	if in := ut.instance(); in.ProbeFailures != 1 || in.DegradedSince != nil || ut.world.alertsWith("Degraded") != 0 || ut.n8n.resumes != 0 {
		t.Fatalf("after one failed probe: failures %d, degraded %v, alerts %v, resumes %d", in.ProbeFailures, in.DegradedSince, ut.world.alerts, ut.n8n.resumes)
	}
	ut.pass() // the second: degraded, alerted, restarted
	in := ut.instance()
	if in.DegradedSince == nil || in.Status != Active {
		t.Fatalf("after %d failed probes: degraded %v, status %s", in.ProbeFailures, in.DegradedSince, in.Status)
	}
	if ut.world.alertsWith("Degraded") != 1 || ut.n8n.resumes != 1 {
		t.Fatalf("alerts %v, resumes %d; want one Degraded alert and one restart", ut.world.alerts, ut.n8n.resumes)
	}
	ut.pass() // n8n is still starting: no second alert, no second restart
	if ut.world.alertsWith("Degraded") != 1 || ut.n8n.resumes != 1 || ut.instance().ProbeFailures != 3 {
		t.Fatalf("while starting: alerts %v, resumes %d, failures %d", ut.world.alerts, ut.n8n.resumes, ut.instance().ProbeFailures)
	}
	ut.pass() // it answers
	in = ut.instance()
	if in.DegradedSince != nil || in.DownSince != nil || in.ProbeFailures != 0 || ut.world.alertsWith("Recovered") != 1 {
		t.Fatalf("after recovery: degraded %v, down since %v, failures %d, alerts %v", in.DegradedSince, in.DownSince, in.ProbeFailures, ut.world.alerts)
	}
	health := ut.events("health")
	want := []string{"not answering", "started again automatically", "answering again, after 3m0s"}
	if len(health) != len(want) {
		t.Fatalf("timeline health = %q, want %d entries like %q", health, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(health[i], w) {
			t.Errorf("timeline health[%d] = %q, want it to say %q", i, health[i], w)
		}
	}
	ut.pass()
	if ut.world.alertsWith("Degraded")+ut.world.alertsWith("Recovered") != 2 || len(ut.events("health")) != 3 {
		t.Errorf("a healthy pass alerted or wrote: %v, %q", ut.world.alerts, ut.events("health"))
	}
	if r := ut.metrics.results; len(r) != 1 || !r[0].Up || r[0].Slug != slug || r[0].Host != "nuc" {
		t.Errorf("metrics told %+v", r)
	}
}

// One lost probe is not an outage: nothing is alerted or restarted, the count starts over.
func TestUptimeOneFailedProbeIsNotAnOutage(t *testing.T) {
	ut := newUptimeTest(t)
	statusAsked := ut.world.count("status")
	ut.world.fail("ready", unavailable("connection reset by peer"))
	ut.pass()
	if r := ut.metrics.results; len(r) != 1 || r[0].Up || !strings.Contains(r[0].Why, "connection reset") {
		t.Fatalf("metrics told %+v", r)
	}
	ut.pass()
	in := ut.instance()
	if in.ProbeFailures != 0 || in.DownSince != nil || in.DegradedSince != nil || len(ut.world.alerts) != 0 || ut.world.count("status") != statusAsked {
		t.Errorf("after a blip: failures %d, down since %v, degraded %v, alerts %v, status asked %d times",
			in.ProbeFailures, in.DownSince, in.DegradedSince, ut.world.alerts, ut.world.count("status")-statusAsked)
	}
}

// An n8n that runs but does not answer is degraded and alerted, never restarted (only a
// stopped container is), and the doctor reports it.
func TestUptimeHungN8nIsDegradedNotRestarted(t *testing.T) {
	ut := newUptimeTest(t)
	ut.n8n.mu.Lock()
	ut.n8n.hung[ut.slug()] = true
	ut.n8n.mu.Unlock()
	for range 5 {
		ut.pass()
	}
	if ut.instance().DegradedSince == nil || ut.world.alertsWith("Degraded") != 1 || ut.n8n.resumes != 0 {
		t.Fatalf("degraded %v, alerts %v, resumes %d", ut.instance().DegradedSince, ut.world.alerts, ut.n8n.resumes)
	}
	report, err := ut.service().Doctor(ut.ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Findings) != 1 || report.Findings[0].Kind != DriftNotAnswering || report.Findings[0].Fixable {
		t.Errorf("doctor findings = %+v", report.Findings)
	}
}

// Only active instances are probed: a suspended one is not degraded for being stopped.
func TestUptimeSkipsSuspendedInstances(t *testing.T) {
	ut := newUptimeTest(t)
	if err := ut.cfg.Store.Apply(ut.ctx, ut.id, map[string]any{"status": Suspended}, "", ""); err != nil {
		t.Fatal(err)
	}
	ut.n8n.mu.Lock()
	ut.n8n.stopped[ut.slug()] = true
	ut.n8n.mu.Unlock()
	for range 3 {
		ut.pass()
	}
	if ut.n8n.readyAsks != 0 || ut.n8n.resumes != 0 || len(ut.metrics.results) != 0 {
		t.Errorf("a suspended instance was probed %d times, resumed %d times, reported %+v", ut.n8n.readyAsks, ut.n8n.resumes, ut.metrics.results)
	}
}

// The doctor's alerts are remembered in the store: a restarted process does not repeat
// them, and a difference that went away and came back is alerted again.
func TestDoctorAlertsSurviveRestarts(t *testing.T) {
	ut := newUptimeTest(t)
	doctor := func() {
		t.Helper()
		job := &river.Job[DoctorArgs]{JobRow: &rivertype.JobRow{ID: 1, Attempt: 1}}
		if err := (&doctorWorker{s: ut.service()}).Work(ut.ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	ut.world.mu.Lock()
	ut.world.egressDrift = "missing: no DOCKER-USER rules"
	ut.world.mu.Unlock()
	doctor()
	doctor()
	if n := ut.world.alertsWith("Drift"); n != 1 {
		t.Fatalf("two doctor runs in two processes sent %d drift alerts, want 1", n)
	}
	ut.world.mu.Lock()
	ut.world.egressDrift = ""
	ut.world.mu.Unlock()
	doctor()
	ut.world.mu.Lock()
	ut.world.egressDrift = "changed: rules differ"
	ut.world.mu.Unlock()
	doctor()
	if n := ut.world.alertsWith("Drift"); n != 2 {
		t.Errorf("drift that ended and came back: %d alerts, want 2", n)
	}
}

// A throttled alert is sent once a day per key, across restarts.
func TestThrottledAlertsSurviveRestarts(t *testing.T) {
	ut := newUptimeTest(t)
	for range 3 {
		ut.service().alertThrottled(ut.ctx, "k", "Stuck: %s", "something")
		ut.clock.Advance(time.Hour)
	}
	if n := ut.world.alertsWith("Stuck"); n != 1 {
		t.Fatalf("3 throttled alerts within 3 h in 3 processes: %d sent, want 1", n)
	}
	ut.clock.Advance(24 * time.Hour)
	ut.service().alertThrottled(ut.ctx, "k", "Stuck: %s", "something")
	if n := ut.world.alertsWith("Stuck"); n != 2 {
		t.Errorf("a day later: %d sent, want 2", n)
	}
}
