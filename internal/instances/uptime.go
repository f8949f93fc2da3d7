package instances

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// UptimePolicy is how active instances are watched. Each pass asks every active instance's
// n8n for readiness through its host's ingress (with its Host header) and, when Public is
// set, at its public URL too. Failures in a row make the instance degraded: a health flag
// shown to the operator and on the customer's timeline, never a status (billing does not
// read it). While an instance fails, a container found stopped is started again.
type UptimePolicy struct {
	// Interval is the time between passes (default 1m; negative turns probing off).
	Interval time.Duration
	// Failures is how many failed probes in a row make an instance degraded (default 2:
	// one lost probe, or an upgrade's seconds without n8n, is not an outage).
	Failures int
	// Timeout bounds one probe (default 10s).
	Timeout time.Duration
	// Public also probes https://<slug>.<base domain>, through DNS, the certificate and
	// whatever is in front of the hosts.
	Public bool
	// Parallel is how many instances are probed at once (default 8).
	Parallel int
}

func (p UptimePolicy) withDefaults() UptimePolicy {
	if p.Interval == 0 {
		p.Interval = time.Minute
	}
	if p.Failures <= 0 {
		p.Failures = 2
	}
	if p.Timeout <= 0 {
		p.Timeout = 10 * time.Second
	}
	if p.Parallel <= 0 {
		p.Parallel = 8
	}
	return p
}

// ProbeResult is one instance's probe in a pass.
type ProbeResult struct {
	Slug, Host string
	Up         bool
	Latency    time.Duration // of the ingress probe
	Why        string        // why it is down
}

// UptimeMetrics is told every pass's results: every active instance, once. An instance
// that is not in a pass is no longer watched (deleted, suspended, moved away).
type UptimeMetrics interface {
	Probed(results []ProbeResult)
}

// UptimeArgs is the periodic probe of every active instance.
type UptimeArgs struct{}

// Kind names the job.
func (UptimeArgs) Kind() string { return "uptime" }

type uptimeWorker struct {
	river.WorkerDefaults[UptimeArgs]
	s *Service
}

// Timeout lets a pass over a large fleet finish: probes run Parallel at a time.
func (w *uptimeWorker) Timeout(*river.Job[UptimeArgs]) time.Duration { return 10 * time.Minute }

func (w *uptimeWorker) Work(ctx context.Context, _ *river.Job[UptimeArgs]) error {
	_, err := w.s.ProbeAll(ctx)
	return err
}

// ProbeAll probes every active instance once and records what changed: degraded after
// Failures in a row, recovered on the first success after that.
func (s *Service) ProbeAll(ctx context.Context) ([]ProbeResult, error) {
	watched, err := s.watched(ctx)
	if err != nil {
		return nil, err
	}
	hosts, err := s.hostsByName(ctx)
	if err != nil {
		return nil, err
	}
	results := make([]ProbeResult, len(watched))
	sem := make(chan struct{}, s.cfg.Uptime.Parallel)
	var wg sync.WaitGroup
	for i := range watched {
		in, host := &watched[i], hosts[deref(watched[i].Host)]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = s.probe(ctx, in, host)
			s.record(ctx, in, host, results[i])
		}()
	}
	wg.Wait()
	if s.cfg.UptimeMetrics != nil {
		s.cfg.UptimeMetrics.Probed(results)
	}
	return results, ctx.Err()
}

// watched returns the active instances on a host, leaving out those being moved (their
// container and DNS record change under the move).
func (s *Service) watched(ctx context.Context) ([]Instance, error) {
	live, err := s.store.Live(ctx)
	if err != nil {
		return nil, err
	}
	out := live[:0]
	for _, in := range live {
		if in.Status == Active && in.Host != nil && in.MovingTo == nil {
			out = append(out, in)
		}
	}
	return out, nil
}

func (s *Service) hostsByName(ctx context.Context) (map[string]Host, error) {
	list, err := s.cfg.Placer.Hosts(ctx)
	out := make(map[string]Host, len(list))
	for _, h := range list {
		out[h.Name] = h
	}
	return out, err
}

// probe asks n8n for readiness through the ingress and, when the policy says so, at the
// public URL.
func (s *Service) probe(ctx context.Context, in *Instance, host Host) ProbeResult {
	res := ProbeResult{Slug: in.Slug, Host: deref(in.Host)}
	if host.IngressURL == "" {
		res.Why = "its host " + res.Host + " is not in the inventory"
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Uptime.Timeout)
	defer cancel()
	start := time.Now()
	err := s.cfg.App.Ready(ctx, host.IngressURL, s.fqdn(in))
	res.Latency = time.Since(start)
	if err != nil {
		res.Why = "through the ingress of " + host.Name + ": " + apperr.Message(err)
		return res
	}
	if s.cfg.Uptime.Public {
		if err := s.cfg.App.Ready(ctx, in.URL, s.fqdn(in)); err != nil {
			res.Why = "at " + in.URL + ": " + apperr.Message(err)
			return res
		}
	}
	res.Up = true
	return res
}

// record stores a probe's result and acts on the changes: the alert and the timeline
// entry when the instance becomes degraded, a restart when its container stopped, the
// recovery notice when it answers again. The state is in the store, so a restarted
// process neither repeats an alert nor forgets an outage.
func (s *Service) record(ctx context.Context, in *Instance, host Host, res ProbeResult) {
	now := s.now()
	var err error
	switch {
	case res.Up && in.DegradedSince != nil:
		down := now.Sub(*coalesce(in.DownSince, in.DegradedSince)).Round(time.Second)
		err = s.store.Apply(ctx, in.ID, map[string]any{"probe_failures": 0, "down_since": nil, "degraded_since": nil},
			"health", fmt.Sprintf("Your n8n is answering again, after %s.", down))
		s.alert(ctx, "Recovered: n8n %s (%s) on %s answers again after %s down", in.Slug, in.ID, res.Host, down)
	case res.Up && in.ProbeFailures > 0:
		err = s.store.Apply(ctx, in.ID, map[string]any{"probe_failures": 0, "down_since": nil}, "", "")
	case !res.Up:
		err = s.recordDown(ctx, in, host, res, now)
	}
	if err != nil {
		s.log.Warn("recording an uptime probe failed", "instance", in.ID, "error", err.Error())
	}
}

func (s *Service) recordDown(ctx context.Context, in *Instance, host Host, res ProbeResult, now time.Time) error {
	set := map[string]any{"probe_failures": in.ProbeFailures + 1}
	since := now
	if in.DownSince != nil {
		since = *in.DownSince
	} else {
		set["down_since"] = now
	}
	degrading := in.DegradedSince == nil && in.ProbeFailures+1 >= s.cfg.Uptime.Failures
	if !degrading {
		err := s.store.Apply(ctx, in.ID, set, "", "")
		if in.DegradedSince != nil {
			s.restartIfStopped(ctx, in, host)
		}
		return err
	}
	set["degraded_since"] = now
	err := s.store.Apply(ctx, in.ID, set, "health", "Your n8n is not answering. We have been alerted and are looking into it.")
	container := s.restartIfStopped(ctx, in, host)
	s.alert(ctx, "Degraded: n8n %s (%s) on %s has not answered %d probes in a row, since %s: %s; %s",
		in.Slug, in.ID, res.Host, in.ProbeFailures+1, since.Format(time.RFC3339), res.Why, container)
	return err
}

// restartIfStopped starts the container of an active instance that is found stopped (the
// doctor's safe fix) and says what it found, for the alert.
func (s *Service) restartIfStopped(ctx context.Context, in *Instance, host Host) string {
	if host.IngressURL == "" {
		return "its host is unknown"
	}
	st, err := s.status(ctx, in, host)
	switch {
	case err != nil:
		return "its host did not say how the container is: " + apperr.Message(err)
	case !st.Exists:
		return "its container does not exist (run `provisioner doctor`)"
	case st.Running:
		return "its container is running"
	}
	// A suspension may have stopped it a moment ago: only an instance still active is
	// started again.
	if cur, err := s.store.Get(ctx, in.ID); err != nil || cur.Status != Active {
		return "its container is stopped, and the instance is no longer active"
	}
	if _, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "resume", in.Slug, nil); err != nil {
		return "its container is stopped and starting it failed: " + apperr.Message(err)
	}
	s.store.AppendEvent(ctx, in.ID, "health", "Your n8n had stopped; it was started again automatically.")
	return "its container was stopped: it was started again"
}

func coalesce(ts ...*time.Time) *time.Time {
	for _, t := range ts {
		if t != nil {
			return t
		}
	}
	return nil
}
