package instances

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

// The warm pool: per plan, n8n instances that are started and ready before anyone pays,
// so a payment hands one over (DNS, owner, email) in about a second instead of waiting
// for n8n's start. A member is an instance in status warm with no client; it runs the
// saga's host phase under its own job (PoolFillArgs), and a claim makes it a customer's
// provisioning instance whose ProvisionArgs job runs the hand-over phase. The refill job
// keeps each plan at its target and recycles the members that no longer fit.

// PoolFillArgs starts one pool member: the saga's host phase, nothing of a customer's.
type PoolFillArgs struct {
	InstanceID string `json:"instance_id" river:"unique"`
}

// Kind names the job.
func (PoolFillArgs) Kind() string { return "pool_fill" }

type fillWorker struct {
	river.WorkerDefaults[PoolFillArgs]
	s *Service
}

func (w *fillWorker) Timeout(*river.Job[PoolFillArgs]) time.Duration { return w.s.cfg.JobTimeout }

func (w *fillWorker) NextRetry(job *river.Job[PoolFillArgs]) time.Time {
	return w.s.now().Add(queue.Backoff(job.Attempt))
}

func (w *fillWorker) Work(ctx context.Context, job *river.Job[PoolFillArgs]) error {
	return w.s.runSaga(ctx, job.Args.InstanceID, hostPhase)
}

// PoolRefillArgs brings every plan's pool to its target. It runs periodically, at start,
// and after each claim; unique, so one runs at a time.
type PoolRefillArgs struct{}

// Kind names the job.
func (PoolRefillArgs) Kind() string { return "pool_refill" }

type refillWorker struct {
	river.WorkerDefaults[PoolRefillArgs]
	s *Service
}

func (w *refillWorker) Work(ctx context.Context, _ *river.Job[PoolRefillArgs]) error {
	return w.s.refill(ctx)
}

func (s *Service) enqueueRefill(ctx context.Context) error {
	_, err := s.cfg.Queue.Insert(ctx, PoolRefillArgs{}, &river.InsertOpts{UniqueOpts: uniqueWhileQueued})
	return err
}

func (s *Service) enqueueFill(ctx context.Context, id string) error {
	_, err := s.cfg.Queue.Insert(ctx, PoolFillArgs{InstanceID: id},
		&river.InsertOpts{MaxAttempts: provisionAttempts, UniqueOpts: uniqueWhileQueued})
	return err
}

func specOf(p plans.Plan) Spec {
	return Spec{PlanID: p.ID, CPUs: p.CPUs, MemoryMB: p.MemoryMB, DiskGB: p.DiskGB, Image: p.N8nImage}
}

func (in *Instance) spec() Spec {
	return Spec{PlanID: in.PlanID, CPUs: in.CPUs, MemoryMB: in.MemoryMB, DiskGB: in.DiskGB, Image: in.N8nImage}
}

// start gives a paid subscription its instance: a ready pool member on the first host in
// placement order that has one (the warm path), or a new instance (the cold path).
func (s *Service) start(ctx context.Context, sub Subscription, plan plans.Plan) (*Instance, error) {
	in, err := s.claim(ctx, sub, plan)
	if !errors.Is(err, ErrPoolEmpty) {
		return in, err
	}
	in, err = s.create(ctx, sub, plan)
	if err == nil && (plan.Warm > 0 || plan.WarmPerHost > 0) {
		s.store.AppendEvent(ctx, in.ID, "cold_start", "no warm n8n of plan "+plan.ID+" was ready: starting a new one (cold path)")
	}
	return in, err
}

func (s *Service) claim(ctx context.Context, sub Subscription, plan plans.Plan) (*Instance, error) {
	hosts, err := s.cfg.Placer.Capacity(ctx)
	if err != nil {
		return nil, err
	}
	message := "a warm n8n from the pool is yours (warm path): it was started and ready before you paid"
	for _, h := range hosts {
		in, err := s.store.ClaimMember(ctx, specOf(plan), h.Name, Claim{ClientID: sub.ClientID, SubscriptionID: sub.ID, Email: sub.Email}, message)
		if errors.Is(err, ErrPoolEmpty) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("pool member claimed", "instance", in.ID, "client", in.ClientID, "plan", in.PlanID, "host", h.Name)
		if err := s.enqueueProvision(ctx, in.ID); err != nil {
			return &in, err
		}
		if err := s.enqueueRefill(ctx); err != nil {
			s.log.Warn("enqueuing the pool refill failed; the periodic one will run", "error", err.Error())
		}
		return &in, nil
	}
	return nil, ErrPoolEmpty
}

// errNoRoomForMember is what placement returns for a pool member when no host has room:
// the pool never waits for room, and never alerts about it; customers do.
var errNoRoomForMember = errors.New("no host has room for a pool member")

// memberReady ends a pool member's host phase.
func (s *Service) memberReady(ctx context.Context, in *Instance) error {
	s.log.Info("pool member ready", "instance", in.ID, "plan", in.PlanID, "host", deref(in.Host))
	return s.store.AppendEvent(ctx, in.ID, "pool_ready", "ready in the warm pool of plan "+in.PlanID)
}

// retireMember ends a pool member that has no container (yet): its record stays, deleted.
func (s *Service) retireMember(ctx context.Context, in *Instance, why string) error {
	return s.store.Apply(ctx, in.ID, map[string]any{"status": Deleted}, "retired", "pool member retired: "+why)
}

// recycle takes a ready member out of the pool and destroys it; false when a claim took
// it first.
func (s *Service) recycle(ctx context.Context, in *Instance, why string) bool {
	taken, err := s.store.TakeMember(ctx, in.ID)
	if err != nil || !taken {
		return false
	}
	in.Status = Deleting
	return s.destroyMember(ctx, in, why) == nil
}

// destroyMember removes a member's container and data (nothing of a customer's is in it)
// and marks it deleted. On failure it stays deleting, and the next refill tries again.
func (s *Service) destroyMember(ctx context.Context, in *Instance, why string) error {
	if in.Host != nil {
		host, err := s.cfg.Placer.Host(ctx, *in.Host)
		if err == nil {
			_, err = s.cfg.Agent.Run(ctx, host.Node, host.VMID, "destroy", in.Slug, map[string]string{"PURGE": "1"})
		}
		if err != nil && !apperr.Is(err, apperr.NotFound) {
			s.log.Warn("destroying a pool member failed; the next refill tries again", "instance", in.ID, "error", err.Error())
			return err
		}
	}
	s.log.Info("pool member recycled", "instance", in.ID, "plan", in.PlanID, "why", why)
	return s.store.Apply(ctx, in.ID, map[string]any{"status": Deleted}, "recycled", "pool member recycled: "+why)
}

// evictMember frees a slot for a customer who found no room: it recycles the newest ready
// member on an active host. Customers come before the pool.
func (s *Service) evictMember(ctx context.Context) bool {
	members, err := s.store.PoolMembers(ctx)
	if err != nil {
		return false
	}
	active, err := s.activeHosts(ctx)
	if err != nil {
		return false
	}
	for i := len(members) - 1; i >= 0; i-- {
		m := members[i]
		if m.Status == Warm && m.Step == stepHealthy && active[deref(m.Host)] && s.recycle(ctx, &m, "its slot went to a paying customer") {
			return true
		}
	}
	return false
}

func (s *Service) activeHosts(ctx context.Context) (map[string]bool, error) {
	hosts, err := s.cfg.Placer.Capacity(ctx)
	return namesOf(hosts), err
}

func namesOf(hosts []HostRoom) map[string]bool {
	names := map[string]bool{}
	for _, h := range hosts {
		names[h.Name] = true
	}
	return names
}

// fits reports whether member m still runs what its plan sells.
func (s *Service) fits(m *Instance) bool {
	plan, ok := s.cfg.Plans.Find(m.PlanID)
	return ok && m.spec() == specOf(plan)
}

// poolCount is one plan's members on one host.
type poolCount struct{ ready, filling int }

// census sorts the pool's members: it counts the ones that fit their plan, finishes the
// recycles a crash interrupted, recycles ready members that no longer fit (plan changed
// or gone, host no longer active), and restarts fill jobs a crash may have lost.
func (s *Service) census(ctx context.Context, active map[string]bool) (map[string]map[string]*poolCount, error) {
	members, err := s.store.PoolMembers(ctx)
	if err != nil {
		return nil, err
	}
	counts := map[string]map[string]*poolCount{}
	for i := range members {
		m := &members[i]
		_, sold := s.cfg.Plans.Find(m.PlanID)
		fits := s.fits(m)
		switch {
		case m.Status == Deleting:
			s.destroyMember(ctx, m, "recycle resumed")
		case m.Step != stepHealthy:
			if err := s.enqueueFill(ctx, m.ID); err != nil { // unique: a no-op while it runs
				return nil, err
			}
			if fits {
				count(counts, m).filling++
			}
		case !sold:
			s.recycle(ctx, m, "plan "+m.PlanID+" is no longer sold")
		case !fits:
			s.recycle(ctx, m, "plan "+m.PlanID+" changed (resources or n8n image)")
		case !active[deref(m.Host)]:
			s.recycle(ctx, m, "host "+deref(m.Host)+" takes no new instances")
		default:
			count(counts, m).ready++
		}
	}
	return counts, nil
}

func count(counts map[string]map[string]*poolCount, m *Instance) *poolCount {
	byHost := counts[m.PlanID]
	if byHost == nil {
		byHost = map[string]*poolCount{}
		counts[m.PlanID] = byHost
	}
	c := byHost[deref(m.Host)]
	if c == nil {
		c = &poolCount{}
		byHost[deref(m.Host)] = c
	}
	return c
}

// refill brings each plan's pool to its target: WarmPerHost members on every active host,
// and Warm across the fleet, placed like customers (the host with the fewest instances).
func (s *Service) refill(ctx context.Context) error {
	hosts, err := s.cfg.Placer.Capacity(ctx)
	if err != nil {
		return err
	}
	counts, err := s.census(ctx, namesOf(hosts))
	if err != nil {
		return err
	}
	for _, plan := range s.cfg.Plans {
		if err := s.refillPlan(ctx, plan, hosts, counts[plan.ID]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) refillPlan(ctx context.Context, plan plans.Plan, hosts []HostRoom, byHost map[string]*poolCount) error {
	have := func(host string) int {
		if c := byHost[host]; c != nil {
			return c.ready + c.filling
		}
		return 0
	}
	total := 0
	for _, h := range hosts {
		total += have(h.Name)
	}
	var want []string // a host per member to start
	for i := range hosts {
		for n := have(hosts[i].Name); n < plan.WarmPerHost && hosts[i].Fits(plan.MemoryMB, plan.DiskGB); n++ {
			want = append(want, hosts[i].Name)
			hosts[i].Take(plan.MemoryMB, plan.DiskGB)
			total++
		}
	}
	for ; total < plan.Warm; total++ {
		h := leastLoaded(hosts, plan)
		if h == nil {
			break // no room: customers keep the rest
		}
		want = append(want, h.Name)
		h.Take(plan.MemoryMB, plan.DiskGB)
	}
	for _, host := range want {
		if err := s.startMember(ctx, plan, host); err != nil {
			return err
		}
	}
	return nil
}

// leastLoaded returns the host that plan fits on with the fewest instances, or nil.
func leastLoaded(hosts []HostRoom, plan plans.Plan) *HostRoom {
	var best *HostRoom
	for i := range hosts {
		if hosts[i].Fits(plan.MemoryMB, plan.DiskGB) && (best == nil || hosts[i].Instances < best.Instances) {
			best = &hosts[i]
		}
	}
	return best
}

// startMember reserves a pool member of plan on host and starts its fill job.
func (s *Service) startMember(ctx context.Context, plan plans.Plan, host string) error {
	in := &Instance{ID: NewID(), PlanID: plan.ID, CPUs: plan.CPUs, MemoryMB: plan.MemoryMB, DiskGB: plan.DiskGB,
		N8nImage: plan.N8nImage, Status: Warm}
	if err := s.sealSecrets(in); err != nil {
		return err
	}
	if err := s.reserve(ctx, in); err != nil {
		return err
	}
	if _, err := s.cfg.Placer.AssignTo(ctx, in.ID, host); err != nil {
		if errors.Is(err, ErrNoRoom) {
			return s.retireMember(ctx, in, "host "+host+" has no room")
		}
		return err
	}
	s.log.Info("pool member reserved", "instance", in.ID, "plan", plan.ID, "host", host)
	return s.enqueueFill(ctx, in.ID)
}

// PoolHost is a plan's pool on one host.
type PoolHost struct {
	Host    string `json:"host"`
	Ready   int    `json:"ready"`
	Filling int    `json:"filling"`
	Target  int    `json:"target"` // the plan's warm_per_host
}

// PoolPlan is a plan's pool across the fleet.
type PoolPlan struct {
	Plan    string     `json:"plan"`
	Ready   int        `json:"ready"`
	Filling int        `json:"filling"`
	Target  int        `json:"target"` // the larger of warm and warm_per_host × active hosts
	Hosts   []PoolHost `json:"hosts"`
}

// Pool reports each plan's pool: ready and filling members that fit the plan, per active
// host, against the targets.
func (s *Service) Pool(ctx context.Context) ([]PoolPlan, error) {
	hosts, err := s.cfg.Placer.Capacity(ctx)
	if err != nil {
		return nil, err
	}
	members, err := s.store.PoolMembers(ctx)
	if err != nil {
		return nil, err
	}
	counts := map[string]map[string]*poolCount{}
	for i := range members {
		m := &members[i]
		if m.Status != Warm || !s.fits(m) {
			continue
		}
		if m.Step == stepHealthy {
			count(counts, m).ready++
		} else {
			count(counts, m).filling++
		}
	}
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	out := []PoolPlan{}
	for _, plan := range s.cfg.Plans {
		p := PoolPlan{Plan: plan.ID, Target: max(plan.Warm, plan.WarmPerHost*len(hosts)), Hosts: []PoolHost{}}
		for _, h := range hosts {
			ph := PoolHost{Host: h.Name, Target: plan.WarmPerHost}
			if c := counts[plan.ID][h.Name]; c != nil {
				ph.Ready, ph.Filling = c.ready, c.filling
			}
			p.Ready, p.Filling = p.Ready+ph.Ready, p.Filling+ph.Filling
			p.Hosts = append(p.Hosts, ph)
		}
		out = append(out, p)
	}
	return out, nil
}

// HasReadyMember reports whether a ready pool member sits on an active host: a payment
// can always be served then, by that member or by the slot it gives up.
func (s *Service) HasReadyMember(ctx context.Context) (bool, error) {
	members, err := s.store.PoolMembers(ctx)
	if err != nil {
		return false, err
	}
	active, err := s.activeHosts(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range members {
		if m.Status == Warm && m.Step == stepHealthy && active[deref(m.Host)] {
			return true, nil
		}
	}
	return false, nil
}
