package billing

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/mercadopagotest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

const (
	testKey       = "sk_test_billing_0123456789abcdef"
	testSecret    = "whsec_billing_current_0123456789"
	testOldSecret = "whsec_billing_previous_0123456789"
	testPortal    = "https://portal.example.com"

	testMPToken     = "TEST-7171717171717171-120709-0f1e2d3c4b5a69788796a5b4c3d2e1f0-100200300"
	testMPSecret    = "mp-webhook-current-0123456789abcdef0123456789abcdef"
	testMPOldSecret = "mp-webhook-previous-0123456789abcdef0123456789abcd"
	mpStarterPlan   = "2c9380848f0d6a2c018f1b2e3a4b0001"
	mpProPlan       = "2c9380848f0d6a2c018f1b2e3a4b0002"
)

var testPlans = plans.Plans{
	{ID: "starter", Name: "Starter", CPUs: 0.5, MemoryMB: 1024, StripePriceID: "price_starter", MercadoPagoPlanID: mpStarterPlan, N8nImage: plans.DefaultN8nImage},
	{ID: "pro", Name: "Pro", CPUs: 2, MemoryMB: 4096, StripePriceID: "price_pro", MercadoPagoPlanID: mpProPlan, N8nImage: plans.DefaultN8nImage},
	{ID: "manual", Name: "Manual", CPUs: 1, MemoryMB: 2048, N8nImage: plans.DefaultN8nImage}, // not sold through any provider
}

// recorder is the Reconciler of the tests: it keeps every call and can fail.
type recorder struct {
	mu    sync.Mutex
	calls []Subscription
	fail  []error // returned by the next calls, in order
}

func (r *recorder) Reconcile(_ context.Context, s Subscription) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fail) > 0 {
		err := r.fail[0]
		r.fail = r.fail[1:]
		return err
	}
	r.calls = append(r.calls, s)
	return nil
}

func (r *recorder) failNext(errs ...error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = append(r.fail, errs...)
}

// of returns the calls for the provider subscription id.
func (r *recorder) of(providerSubID string) []Subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Subscription
	for _, c := range r.calls {
		if c.ProviderSubscriptionID == providerSubID {
			out = append(out, c)
		}
	}
	return out
}

// room is the Capacity of the tests.
type room struct{ full atomic.Bool }

func (r *room) HasRoom(context.Context, plans.Plan) error {
	if r.full.Load() {
		return apperr.New(apperr.Unavailable, "no active host has room for another instance")
	}
	return nil
}

// clock follows the real time, shifted by what a test advances it.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

type fastRetry struct{}

func (fastRetry) NextRetry(*rivertype.JobRow) time.Time { return time.Now().Add(10 * time.Millisecond) }

// manualRetry never retries by itself: the test retries the job when it has looked.
type manualRetry struct{}

func (manualRetry) NextRetry(*rivertype.JobRow) time.Time { return time.Now().Add(time.Hour) }

type envOptions struct {
	retry      river.ClientRetryPolicy // default fastRetry
	noDispatch bool                    // do not run the dispatcher: events wait for the sweeper
	config     *Config                 // default: Stripe configured against the fake
}

type env struct {
	t       *testing.T
	db      *database.DB
	svc     *Service
	stripe  *stripetest.Server
	mp      *mercadopagotest.Server
	queue   *queue.Queue
	rec     *recorder
	room    *room
	clock   *clock
	reg     *prometheus.Registry
	jobs    <-chan *river.Event
	secrets []string
	logs    *testlog.Buffer
}

func newEnv(t *testing.T, db *database.DB, opts envOptions) *env {
	t.Helper()
	ctx := context.Background()
	testlog.Secret(t, testKey, testSecret, testOldSecret, testMPToken, testMPSecret, testMPOldSecret)
	logger, logs := testlog.New(t)
	e := &env{t: t, db: db, stripe: &stripetest.Server{Key: testKey}, rec: &recorder{}, room: &room{}, clock: &clock{},
		reg: prometheus.NewRegistry(), secrets: []string{testOldSecret, testSecret}, logs: logs}
	e.stripe.SetPrices("price_starter", "price_pro", "price_not_in_plans")
	api := httptest.NewServer(e.stripe)
	t.Cleanup(api.Close)
	e.mp = &mercadopagotest.Server{Token: testMPToken}
	e.mp.AddPlan(mpStarterPlan, "n8n Starter", 15000, "ARS")
	e.mp.AddPlan(mpProPlan, "n8n Pro", 60000, "ARS")
	mpAPI := httptest.NewServer(e.mp)
	t.Cleanup(mpAPI.Close)
	cfg := Config{SecretKey: testKey, WebhookSecrets: e.secrets, APIURL: api.URL, PortalURL: testPortal,
		MercadoPago: MercadoPagoConfig{AccessToken: testMPToken, WebhookSecrets: []string{testMPOldSecret, testMPSecret}, APIURL: mpAPI.URL},
		Policy:      Policy{PastDueGrace: DefaultPastDueGrace, Retention: DefaultRetention}}
	if opts.config != nil {
		cfg = *opts.config
	}
	if err := queue.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	retry := opts.retry
	if retry == nil {
		retry = fastRetry{}
	}
	// As cmd/provisioner does: open the queue on the workers, then register into them.
	q, err := queue.Open(ctx, db, queue.Config{Workers: workers, PollInterval: 20 * time.Millisecond, RetryPolicy: retry, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(cfg, Deps{DB: db.Gorm, Queue: q, Reconciler: e.rec, Capacity: e.room, Plans: testPlans,
		Logger: logger, Now: e.clock.Now, HTTPClient: api.Client(), Metrics: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	svc.Register(workers)
	e.svc, e.queue = svc, q
	jobs, cancelSub := q.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled)
	e.jobs = jobs
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	if opts.noDispatch {
		close(done)
	} else {
		go func() { defer close(done); svc.Run(runCtx) }()
	}
	t.Cleanup(func() {
		stop()
		<-done
		cancelSub()
		q.Stop(context.Background())
	})
	return e
}

// deliver posts ev to the service as Stripe would, signed with the current secret.
func (e *env) deliver(ev stripetest.Event) Receipt {
	e.t.Helper()
	r, err := e.svc.Webhook(context.Background(), ProviderStripe, bytes.NewReader(ev.Payload),
		http.Header{"Stripe-Signature": {stripetest.Sign(ev.Payload, testSecret, time.Now())}}, nil)
	if err != nil {
		e.t.Fatalf("delivering %s: %v", ev.Type, err)
	}
	return r
}

// waitFor waits until cond holds, re-checking it after every job that finishes an attempt.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-e.jobs:
		case <-deadline:
			e.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// nextJob returns the next job event of billing's processing.
func (e *env) nextJob(kind river.EventKind) *river.Event {
	e.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-e.jobs:
			if ev.Kind == kind && ev.Job.Kind == (processArgs{}).Kind() {
				return ev
			}
		case <-deadline:
			e.t.Fatalf("timed out waiting for a job %s", kind)
		}
	}
}

func (e *env) count(where string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.db.Gorm.Model(&eventRow{}).Where(where, args...).Count(&n).Error; err != nil {
		e.t.Fatal(err)
	}
	return n
}

// settle waits until no stored event is pending.
func (e *env) settle() {
	e.t.Helper()
	e.waitFor("every event processed", func() bool { return e.count("processed_at IS NULL") == 0 })
}

func (e *env) eventByID(providerEventID string) eventRow {
	e.t.Helper()
	var r eventRow
	if err := e.db.Gorm.Where("event_id = ?", providerEventID).Take(&r).Error; err != nil {
		e.t.Fatalf("event %s: %v", providerEventID, err)
	}
	return r
}

func (e *env) stored(providerSubID string) Subscription {
	e.t.Helper()
	var r subscriptionRow
	if err := e.db.Gorm.Where("provider_subscription_id = ?", providerSubID).Take(&r).Error; err != nil {
		e.t.Fatalf("subscription %s: %v", providerSubID, err)
	}
	return r.subscription()
}

// buy runs a purchase through our checkout and the fake's payment page, and returns the
// subscription's id and the events Stripe sends for it.
func (e *env) buy(clientID, plan string) (string, []stripetest.Event) {
	e.t.Helper()
	sess, err := e.svc.Checkout(context.Background(), CheckoutRequest{ClientID: clientID, Email: clientID + "@example.com",
		Name: "Ada " + clientID, Plan: plan, Locale: "es"})
	if err != nil {
		e.t.Fatal(err)
	}
	events, err := e.stripe.CompleteCheckout(sess.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	cs, _ := e.stripe.CheckoutSession(sess.ID)
	return *cs.Subscription, events
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
