package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// processArgs is the job that processes one inbox event.
type processArgs struct {
	EventID int64 `json:"event_id" river:"unique"`
	// Replay is set by an operator's replay. It makes the job distinct from the event's
	// previous one, which may still be finishing (River says "running" until it records
	// the outcome, after the event row already says processed) and would swallow it.
	Replay int64 `json:"replay,omitempty" river:"unique"`
}

func (processArgs) Kind() string { return "billing.process_event" }

// InsertOpts makes the job unique per event among jobs not yet finished, so redeliveries,
// the dispatcher on several replicas and the sweeper never run one event twice at once,
// while a replay after the job finished inserts a new one.
func (processArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
		rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
		rivertype.JobStateRetryable, rivertype.JobStateScheduled,
	}}}
}

// sweepArgs is the periodic job that enqueues events nobody enqueued (a replica died
// between storing and enqueueing) or whose job was lost.
type sweepArgs struct{}

func (sweepArgs) Kind() string { return "billing.sweep_events" }

func (sweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: time.Minute}}
}

// Timing of the sweeper.
const (
	sweepEvery = time.Minute
	// sweepGrace leaves a freshly stored event to its own replica's dispatcher.
	sweepGrace = time.Minute
	// sweepStale re-enqueues an event enqueued this long ago and still not processed; the
	// insert is a no-op while its job is alive (waiting for a retry, say).
	sweepStale = 15 * time.Minute
	batchSize  = 100
)

// Register adds billing's job workers to workers, before the queue is opened.
func (s *Service) Register(workers *river.Workers) {
	river.AddWorker(workers, &processWorker{s: s})
	river.AddWorker(workers, &sweepWorker{s: s})
}

// PeriodicJobs returns billing's periodic jobs for the queue's configuration: the sweeper,
// every minute and at start (River runs periodic jobs on the elected leader only).
func (s *Service) PeriodicJobs() []*river.PeriodicJob {
	return []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(sweepEvery),
		func() (river.JobArgs, *river.InsertOpts) { return sweepArgs{}, nil },
		&river.PeriodicJobOpts{ID: "billing.sweep_events", RunOnStart: true})}
}

// Run enqueues the processing of every event the webhook stores, as soon as it is stored,
// until ctx ends. The webhook itself only writes the inbox row: that one statement is its
// whole cost, and the job insert happens here, off the request path. Run it beside the
// queue on every replica; without it, events wait for the sweeper (a minute or two).
func (s *Service) Run(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Second) // a safety net: a failed pass, a full hand-off
	defer tick.Stop()
	scan := true // at start: events a previous process stored but did not enqueue
	for {
		if scan || s.missed.Swap(false) {
			if err := s.dispatch(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("billing: enqueueing stored events failed; retrying", "error", err.Error())
			}
		}
		scan = false
		select {
		case <-ctx.Done():
			return nil
		case id := <-s.fresh:
			batch := []int64{id}
			for len(batch) < batchSize {
				select {
				case id := <-s.fresh:
					batch = append(batch, id)
					continue
				default:
				}
				break
			}
			if err := s.enqueue(ctx, batch); err != nil && ctx.Err() == nil {
				s.log.Warn("billing: enqueueing stored events failed; retrying", "error", err.Error())
				scan = true
			}
		case <-tick.C:
			scan = true
		}
	}
}

// dispatch enqueues every stored event not yet enqueued.
func (s *Service) dispatch(ctx context.Context) error {
	for {
		ids, err := s.store.undispatched(ctx, batchSize)
		if err != nil {
			return err
		}
		if err := s.enqueue(ctx, ids); err != nil {
			return err
		}
		if len(ids) < batchSize {
			return nil
		}
	}
}

// enqueue inserts the processing jobs of ids and records that they are enqueued.
func (s *Service) enqueue(ctx context.Context, ids []int64) error {
	for i, id := range ids {
		release := s.store.serialise()
		_, err := s.queue.Insert(ctx, processArgs{EventID: id}, nil)
		release()
		if err != nil {
			s.store.markEnqueued(ctx, ids[:i])
			return fmt.Errorf("enqueueing billing event %d: %w", id, err)
		}
	}
	return s.store.markEnqueued(ctx, ids)
}

// sweep enqueues events that were stored but never enqueued, or whose job went missing.
func (s *Service) sweep(ctx context.Context) (int, error) {
	ids, err := s.store.stale(ctx, sweepGrace, sweepStale, 500)
	if err != nil {
		return 0, err
	}
	if len(ids) > 0 {
		s.log.Info("billing: sweeping unprocessed events", "count", len(ids))
	}
	return len(ids), s.enqueue(ctx, ids)
}

type sweepWorker struct {
	river.WorkerDefaults[sweepArgs]
	s *Service
}

func (w *sweepWorker) Work(ctx context.Context, _ *river.Job[sweepArgs]) error {
	_, err := w.s.sweep(ctx)
	return err
}

type processWorker struct {
	river.WorkerDefaults[processArgs]
	s *Service
}

// Timeout bounds one attempt: a Stripe read and a reconciliation.
func (w *processWorker) Timeout(*river.Job[processArgs]) time.Duration { return 2 * time.Minute }

func (w *processWorker) Work(ctx context.Context, job *river.Job[processArgs]) error {
	return w.s.process(ctx, job.Args.EventID, job.Attempt >= job.MaxAttempts)
}

// process handles one inbox event: it re-reads the subscription the event is about from
// the provider, maps its price to a plan, stores the state unless a newer one is stored,
// and reconciles. lastAttempt makes a retryable failure final.
func (s *Service) process(ctx context.Context, id int64, lastAttempt bool) error {
	row, err := s.store.event(ctx, id)
	if apperr.Is(err, apperr.NotFound) {
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	if row.ProcessedAt != nil {
		return nil // finished by an earlier job; a replay resets it first
	}
	if err := s.store.startAttempt(ctx, id); err != nil {
		return err
	}
	fail := func(subRef string, err error) error { return s.fail(ctx, row, subRef, err, lastAttempt) }
	p, err := s.provider(row.Provider)
	if err != nil {
		return fail("", err)
	}
	it, err := p.interpret(ctx, row.Type, []byte(row.Payload))
	if err != nil {
		return fail("", err)
	}
	if !it.Relevant {
		s.metrics.event(row.Provider, EventIgnored)
		return s.store.finish(ctx, id, EventIgnored, "", "", it.Why)
	}
	created := row.ReceivedAt
	if row.ProviderCreatedAt != nil {
		created = *row.ProviderCreatedAt
	}
	fetchedAt := s.now().UTC()
	remote, err := p.fetch(ctx, it.SubscriptionID)
	if err != nil {
		return fail(it.SubscriptionID, err)
	}
	plan, err := s.planOf(row.Provider, remote)
	if err != nil {
		return fail(it.SubscriptionID, err)
	}
	// The subscription's metadata (set when we created the checkout) is the current
	// truth; the event's own hints fill what it lacks.
	who := remote.Attribution
	who.ClientID = firstOf(who.ClientID, it.Attribution.ClientID)
	who.Email = firstOf(who.Email, it.Attribution.Email)
	who.Name = firstOf(who.Name, it.Attribution.Name)
	who.Locale = firstOf(who.Locale, it.Attribution.Locale)
	if who.Locale != "en" && who.Locale != "es" {
		who.Locale = ""
	}
	res, err := s.store.apply(ctx, snapshot{
		Provider: row.Provider, ProviderSubscriptionID: remote.ID, ProviderCustomerID: remote.CustomerID,
		PlanID: plan.ID, Status: remote.Status, CurrentPeriodEnd: remote.CurrentPeriodEnd, CanceledAt: remote.EndedAt,
		Attribution: who, EventCreated: created, FetchedAt: fetchedAt,
	})
	if err != nil {
		return fail(it.SubscriptionID, err)
	}
	sub := res.Sub
	detail := fmt.Sprintf("%s is %s on plan %s", sub.ProviderSubscriptionID, sub.Status, sub.PlanID)
	if !res.StateApplied {
		detail += fmt.Sprintf(" (state kept from a newer event of %s)", sub.ProviderUpdatedAt.Format(time.RFC3339))
	}
	if res.Conflict != "" {
		detail += "; " + res.Conflict
		s.log.Warn("billing: conflicting client for a subscription", "subscription", sub.ID, "detail", res.Conflict)
	}
	if sub.ClientID == "" {
		// Nothing to reconcile yet: checkout.session.completed (or the subscription's
		// client_id metadata) will say whose it is, and its processing reconciles.
		s.metrics.event(row.Provider, EventProcessed)
		return s.store.finish(ctx, id, EventProcessed, it.SubscriptionID, "",
			detail+"; no client id yet (no client_id metadata, no checkout seen): not reconciled")
	}
	if err := s.reconciler.Reconcile(ctx, sub); err != nil {
		return fail(it.SubscriptionID, fmt.Errorf("reconciling subscription %s: %w", sub.ID, err))
	}
	s.metrics.event(row.Provider, EventProcessed)
	return s.store.finish(ctx, id, EventProcessed, it.SubscriptionID, "", detail+"; reconciled for client "+sub.ClientID)
}

// planOf returns the plan the provider sells under the subscription's price, or, when the
// subscription has no price (a MercadoPago subscription our checkout created without a
// preapproval plan), the plan our checkout recorded on it, if the provider sells that
// plan. An unknown price is an error on the event, never a guess.
func (s *Service) planOf(provider string, r remoteSubscription) (plans.Plan, error) {
	field := priceFields[provider]
	if len(r.PriceIDs) == 0 {
		if p, ok := s.plans.Find(r.PlanID); ok && p.Sells(provider) {
			return p, nil
		}
		return plans.Plan{}, apperr.New(apperr.Invalid,
			"subscription %s names plan %q, and no plan in the plans file (PROVISIONER_PLANS_FILE) with that id has a %s: add it, then replay the event", r.ID, r.PlanID, field)
	}
	var found []plans.Plan
	for _, price := range r.PriceIDs {
		if p, ok := s.plans.ByPrice(provider, price); ok {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return plans.Plan{}, apperr.New(apperr.Invalid,
			"subscription %s has price(s) %v, and no plan in the plans file (PROVISIONER_PLANS_FILE) has that %s: add it, then replay the event", r.ID, r.PriceIDs, field)
	}
	return plans.Plan{}, apperr.New(apperr.Invalid, "subscription %s has %d items priced as plans; one subscription must buy one plan", r.ID, len(found))
}

// fail records a processing failure. Invalid, NotFound and Conflict cannot get better by
// retrying: the event is marked failed for the operator and the job cancelled. Anything
// else keeps its error on the event and retries with backoff, until the last attempt,
// which also marks the event failed.
func (s *Service) fail(ctx context.Context, row eventRow, subRef string, err error, lastAttempt bool) error {
	msg := err.Error()
	switch apperr.KindOf(err) {
	case apperr.Invalid, apperr.NotFound, apperr.Conflict:
		s.metrics.event(row.Provider, EventFailed)
		s.log.Error("billing event failed; the operator must fix and replay it", "event", row.ID, "type", row.Type, "error", msg)
		if ferr := s.store.finish(ctx, row.ID, EventFailed, subRef, msg, "not retried: fix the cause, then replay"); ferr != nil {
			return ferr
		}
		return river.JobCancel(err)
	}
	if lastAttempt {
		s.metrics.event(row.Provider, EventFailed)
		s.log.Error("billing event failed after its last attempt", "event", row.ID, "type", row.Type, "error", msg)
		if ferr := s.store.finish(ctx, row.ID, EventFailed, subRef, msg, "retries exhausted: replay it once the cause is gone"); ferr != nil {
			return ferr
		}
		return err
	}
	s.metrics.event(row.Provider, "retry")
	s.log.Warn("billing event will be retried", "event", row.ID, "type", row.Type, "error", msg)
	if rerr := s.store.recordError(ctx, row.ID, subRef, msg); rerr != nil {
		return rerr
	}
	return err
}
