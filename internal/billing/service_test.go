package billing

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

func TestPurchaseLifecycle(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		ctx := context.Background()
		subID, events := e.buy("client-1", "starter")
		for _, ev := range events {
			if r := e.deliver(ev); r.Duplicate || r.EventID != ev.ID {
				t.Fatalf("receipt of %s = %+v", ev.Type, r)
			}
		}
		e.settle()

		// What we sent Stripe lets any later event be attributed on its own.
		sessions := e.stripe.Requests()
		if sessions[0] != "POST /v1/checkout/sessions" {
			t.Fatalf("first call = %s", sessions[0])
		}
		calls := e.rec.of(subID)
		if len(calls) == 0 {
			t.Fatal("never reconciled")
		}
		got := calls[len(calls)-1]
		if got.ClientID != "client-1" || got.Email != "client-1@example.com" || got.Name != "Ada client-1" || got.Locale != "es" ||
			got.PlanID != "starter" || got.Status != Active || !strings.HasPrefix(got.ProviderCustomerID, "cus_") ||
			got.CurrentPeriodEnd.Before(time.Now().AddDate(0, 0, 27)) || got.CanceledAt != nil || got.ID == "" {
			t.Fatalf("reconciled with %+v", got)
		}
		if stored, err := e.svc.Subscription(ctx, got.ID); err != nil || stored.ProviderSubscriptionID != subID {
			t.Fatalf("Subscription(%s) = %+v, %v", got.ID, stored, err)
		}
		for status, want := range map[EventStatus]int{EventProcessed: 3, EventIgnored: 1, EventPending: 0, EventFailed: 0, "": 4} {
			list, next, err := e.svc.Events(ctx, EventFilter{Status: status})
			if err != nil || len(list) != want || next != "" {
				t.Errorf("events %q = %d (%v), want %d", status, len(list), err, want)
			}
		}
		ignored, _, _ := e.svc.Events(ctx, EventFilter{Status: EventIgnored})
		if ignored[0].Type != "customer.created" || ignored[0].Detail == "" {
			t.Errorf("ignored = %+v", ignored[0])
		}

		// Renewal fails, the plan changes, payment comes back, then the customer cancels:
		// each step reaches the reconciler as the stored, authoritative state.
		step := func(name string, events []stripetest.Event, check func(Subscription) bool) {
			t.Helper()
			for _, ev := range events {
				e.deliver(ev)
			}
			e.settle()
			calls := e.rec.of(subID)
			if last := calls[len(calls)-1]; !check(last) {
				t.Fatalf("after %s: reconciled with %+v", name, last)
			}
		}
		e.clock.Advance(time.Hour)
		failed, _ := e.stripe.PaymentFailed(subID)
		step("a failed payment", failed, func(s Subscription) bool {
			return s.Status == PastDue && s.StatusSince.Equal(failed[1].Created) &&
				s.Intent(e.svc.Policy()).SuspendAt.Equal(failed[1].Created.Add(72*time.Hour))
		})
		changed, _ := e.stripe.ChangePrice(subID, "price_pro")
		step("a plan change", []stripetest.Event{changed}, func(s Subscription) bool { return s.PlanID == "pro" && s.Status == PastDue })
		paid, _ := e.stripe.PaymentSucceeded(subID)
		step("a payment", paid, func(s Subscription) bool { return s.Status == Active && s.PlanID == "pro" })

		portal, err := e.svc.BillingPortal(ctx, "client-1")
		if err != nil || !strings.HasPrefix(portal.URL, "https://billing.stripe.com/") {
			t.Fatalf("billing portal = %+v, %v", portal, err)
		}
		if ps := e.stripe.PortalSessions(); ps[0].Customer != got.ProviderCustomerID || *ps[0].ReturnURL != testPortal {
			t.Fatalf("portal session = %+v", ps[0])
		}
		// A returning client buys again as the same Stripe customer.
		again, err := e.svc.Checkout(ctx, CheckoutRequest{ClientID: "client-1", Email: "client-1@example.com", Plan: "pro"})
		if err != nil {
			t.Fatal(err)
		}
		if cs, _ := e.stripe.CheckoutSession(again.ID); cs.Customer == nil || *cs.Customer != got.ProviderCustomerID || cs.CustomerEmail != nil {
			t.Fatalf("second checkout = %+v", cs)
		}

		canceled, _ := e.stripe.Cancel(subID)
		step("a cancellation", []stripetest.Event{canceled}, func(s Subscription) bool {
			return s.Status == Canceled && s.CanceledAt != nil && s.CanceledAt.Equal(canceled.Created)
		})
		if n := counter(t, e.reg, "provisioner_billing_webhooks_total", map[string]string{"result": "stored"}); n != 10 {
			t.Errorf("stored webhooks counted %v, want 10", n)
		}
	})
}

func TestWebhookRefusals(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		_, events, _ := e.stripe.CreateSubscription(e.stripe.AddCustomer("x@example.com"), "price_starter", nil)
		ev := events[0]
		now := time.Now()
		big := stripetest.NewEvent("customer.updated", now, map[string]any{"id": "cus_1", "note": strings.Repeat("x", MaxWebhookBytes)}, nil)
		tests := []struct {
			name    string
			payload []byte
			sig     string
			reason  string
		}{
			{"forged", []byte(strings.Replace(string(ev.Payload), "active", "trialing", 1)), stripetest.Sign(ev.Payload, testSecret, now), "bad_signature"},
			{"wrong secret", ev.Payload, stripetest.Sign(ev.Payload, "whsec_attacker_0123456789", now), "bad_signature"},
			{"stale", ev.Payload, stripetest.Sign(ev.Payload, testSecret, now.Add(-10*time.Minute)), "stale"},
			{"unsigned", ev.Payload, "", "unsigned"},
			{"malformed header", ev.Payload, "v1=,t=", "malformed"},
			{"malformed payload", []byte(`{"id":`), stripetest.Sign([]byte(`{"id":`), testSecret, now), "malformed"},
			{"oversized", big.Payload, stripetest.Sign(big.Payload, testSecret, now), "too_large"},
		}
		for _, tt := range tests {
			h := http.Header{}
			if tt.sig != "" {
				h.Set("Stripe-Signature", tt.sig)
			}
			_, err := e.svc.Webhook(context.Background(), ProviderStripe, bytes.NewReader(tt.payload), h, nil)
			if !apperr.Is(err, apperr.Invalid) {
				t.Errorf("%s: err = %v, want Invalid", tt.name, err)
			}
		}
		if n := e.count("1 = 1"); n != 0 {
			t.Fatalf("refused deliveries stored %d events", n)
		}
		for reason, want := range map[string]float64{"bad_signature": 2, "stale": 1, "unsigned": 1, "malformed": 2, "too_large": 1} {
			if got := counter(t, e.reg, "provisioner_billing_webhooks_total", map[string]string{"result": reason}); got != want {
				t.Errorf("%s counted %v, want %v", reason, got, want)
			}
		}

		// While the secret rolls, deliveries signed with the old or the new one are taken.
		for _, secret := range []string{testOldSecret, testSecret} {
			ev := stripetest.NewEvent("customer.updated", now, map[string]any{"id": "cus_roll"}, nil)
			if _, err := e.svc.Webhook(context.Background(), ProviderStripe, bytes.NewReader(ev.Payload),
				http.Header{"Stripe-Signature": {stripetest.Sign(ev.Payload, secret, now)}}, nil); err != nil {
				t.Errorf("signed with %s: %v", secret[:13], err)
			}
		}
		if _, err := e.svc.Webhook(context.Background(), "paypal", strings.NewReader("{}"), http.Header{}, nil); !apperr.Is(err, apperr.NotFound) {
			t.Errorf("unknown provider: %v", err)
		}
		for _, secret := range []string{testKey, testSecret, testOldSecret} {
			if strings.Contains(e.logs.String(), secret) {
				t.Fatal("a secret reached the log")
			}
		}
	})
}

// Fifty deliveries of one event at once store it once and process it once.
func TestConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		sub, events, _ := e.stripe.CreateSubscription(e.stripe.AddCustomer("dup@example.com"), "price_starter",
			map[string]string{"client_id": "client-dup", "email": "dup@example.com"})
		ev := events[0]
		var wg sync.WaitGroup
		var mu sync.Mutex
		fresh, dups := 0, 0
		start := make(chan struct{})
		for range 50 {
			wg.Go(func() {
				<-start
				r, err := e.svc.Webhook(context.Background(), ProviderStripe, bytes.NewReader(ev.Payload),
					http.Header{"Stripe-Signature": {stripetest.Sign(ev.Payload, testSecret, time.Now())}}, nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("delivery: %v", err)
				case r.Duplicate:
					dups++
				default:
					fresh++
				}
			})
		}
		close(start)
		wg.Wait()
		if fresh != 1 || dups != 49 {
			t.Fatalf("stored %d, duplicates %d; want 1 and 49", fresh, dups)
		}
		e.settle()
		if n := e.count("event_id = ?", ev.ID); n != 1 {
			t.Fatalf("%d rows for one event", n)
		}
		if row := e.eventByID(ev.ID); row.Attempts != 1 || row.Outcome != "processed" {
			t.Fatalf("event = %+v, want one attempt", row)
		}
		if calls := e.rec.of(sub.ID); len(calls) != 1 {
			t.Fatalf("reconciled %d times", len(calls))
		}
		reads := 0
		for _, r := range e.stripe.Requests() {
			if r == "GET /v1/subscriptions/"+sub.ID {
				reads++
			}
		}
		if reads != 1 {
			t.Fatalf("read the subscription %d times", reads)
		}
	})
}

// state is what must be the same whatever the order of delivery.
type state struct {
	Status   Status
	Plan     string
	Client   string
	Email    string
	Canceled bool
}

func stateOf(s Subscription) state {
	return state{s.Status, s.PlanID, s.ClientID, s.Email, s.CanceledAt != nil}
}

func TestOutOfOrderDeliveriesConverge(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		// No dispatcher: the test processes each event itself, in the order it chooses.
		e := newEnv(t, db, envOptions{noDispatch: true})
		ctx := context.Background()
		// One history per order, on its own subscription: purchase, failed renewal, plan
		// change, cancellation, with Stripe's event times a second apart.
		at := time.Now().Add(-time.Hour).Truncate(time.Second)
		e.stripe.Now = func() time.Time { at = at.Add(time.Second); return at }
		history := func(client string) (string, []stripetest.Event) {
			subID, events := e.buy(client, "starter")
			failed, _ := e.stripe.PaymentFailed(subID)
			changed, _ := e.stripe.ChangePrice(subID, "price_pro")
			deleted, _ := e.stripe.Cancel(subID)
			return subID, append(append(events, failed...), changed, deleted)
		}
		reversed := func(evs []stripetest.Event) []stripetest.Event {
			out := make([]stripetest.Event, 0, len(evs))
			for i := len(evs) - 1; i >= 0; i-- {
				out = append(out, evs[i])
			}
			return out
		}
		firstOfType := func(types ...string) func([]stripetest.Event) []stripetest.Event {
			return func(evs []stripetest.Event) []stripetest.Event {
				var first, rest []stripetest.Event
				for _, ev := range evs {
					if slices.Contains(types, ev.Type) {
						first = append(first, ev)
					} else {
						rest = append(rest, ev)
					}
				}
				return append(first, rest...)
			}
		}
		orders := []struct {
			name  string
			order func([]stripetest.Event) []stripetest.Event
		}{
			{"in-order", func(evs []stripetest.Event) []stripetest.Event { return evs }},
			{"reversed", reversed},
			{"deleted-first", firstOfType("customer.subscription.deleted", "customer.subscription.updated")},
			{"invoice-first", firstOfType("invoice.paid", "invoice.payment_failed")},
		}
		want := state{Status: Canceled, Plan: "pro", Canceled: true}
		for _, o := range orders {
			subID, events := history("client-" + o.name)
			for _, ev := range o.order(events) {
				e.deliver(ev)
				if err := e.svc.process(ctx, e.eventByID(ev.ID).ID, false); err != nil {
					t.Fatalf("%s: processing %s: %v", o.name, ev.Type, err)
				}
			}
			s := e.stored(subID)
			if got := stateOf(s); got != (state{want.Status, want.Plan, "client-" + o.name, "client-" + o.name + "@example.com", true}) {
				t.Errorf("%s: final state %+v, want %+v", o.name, got, want)
			}
			if calls := e.rec.of(subID); stateOf(calls[len(calls)-1]) != stateOf(s) {
				t.Errorf("%s: last reconciled %+v, stored %+v", o.name, calls[len(calls)-1], s)
			}
		}

		// And all at once, through the queue's concurrent workers.
		subID, events := history("client-together")
		for _, ev := range reversed(events) {
			e.deliver(ev)
		}
		if err := e.svc.dispatch(ctx); err != nil {
			t.Fatal(err)
		}
		e.settle()
		if got := stateOf(e.stored(subID)); got != (state{Canceled, "pro", "client-together", "client-together@example.com", true}) {
			t.Errorf("concurrently: final state %+v", got)
		}
	})
}

// A read that finishes late must not replace a state read for a newer event, and of two
// reads for events of the same second, the one that started later wins.
func TestApplyNeverRegresses(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		s := newStore(db.Gorm, time.Now)
		ctx := context.Background()
		t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		snap := func(created, fetched int, status Status, who attribution) snapshot {
			return snapshot{Provider: ProviderStripe, ProviderSubscriptionID: "sub_regress", PlanID: "starter", Status: status,
				Attribution: who, EventCreated: t0.Add(time.Duration(created) * time.Second), FetchedAt: t0.Add(time.Duration(fetched) * time.Millisecond)}
		}
		steps := []struct {
			snap    snapshot
			applied bool
			status  Status
			client  string
		}{
			{snap(10, 100, Canceled, attribution{}), true, Canceled, ""},
			{snap(5, 200, Active, attribution{ClientID: "c1", Email: "c1@example.com"}), false, Canceled, "c1"}, // older event: only attribution
			{snap(10, 50, Active, attribution{}), false, Canceled, "c1"},                                        // same second, read earlier
			{snap(10, 300, PastDue, attribution{ClientID: "c2"}), true, PastDue, "c1"},                          // same second, read later; client kept
			{snap(11, 0, Active, attribution{}), true, Active, "c1"},
		}
		for i, st := range steps {
			res, err := s.apply(ctx, st.snap)
			if err != nil {
				t.Fatal(err)
			}
			if res.StateApplied != st.applied || res.Sub.Status != st.status || res.Sub.ClientID != st.client {
				t.Fatalf("step %d: %+v (applied %t), want status %s client %s applied %t", i, res.Sub, res.StateApplied, st.status, st.client, st.applied)
			}
		}
		// The status began with the event that first showed it.
		sub, _ := s.subscription(ctx, func() string { r, _ := s.apply(ctx, snap(11, 1, Active, attribution{})); return r.Sub.ID }())
		if !sub.StatusSince.Equal(t0.Add(11*time.Second)) || sub.Email != "c1@example.com" {
			t.Fatalf("stored = %+v", sub)
		}
		// Concurrent first reads of one subscription make one row.
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				sn := snap(20, i, Active, attribution{})
				sn.ProviderSubscriptionID = "sub_race"
				if _, err := s.apply(ctx, sn); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		var n int64
		db.Gorm.Model(&subscriptionRow{}).Where("provider_subscription_id = ?", "sub_race").Count(&n)
		if n != 1 {
			t.Fatalf("%d rows for one subscription", n)
		}
	})
}

// A subscription bought without our metadata (a Payment Link, say) is attributed by
// checkout.session.completed alone, even when its invoice.paid is processed first.
func TestInvoiceBeforeCheckoutWithoutMetadata(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		ctx := context.Background()
		p := e.svc.providers[ProviderStripe].(*stripeProvider)
		// What a Payment Link creates: client_reference_id only, no subscription metadata.
		params := checkoutParams{ClientID: "client-link", Email: "link@example.com", Plan: testPlans[0],
			SuccessURL: testPortal + "/ok", CancelURL: testPortal + "/no"}
		sess, err := p.checkout(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		events, err := e.stripe.CompleteCheckout(sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		cs, _ := e.stripe.CheckoutSession(sess.ID)
		subID := *cs.Subscription
		// Drop the metadata the checkout put on the subscription.
		if _, err := e.stripe.Update(subID, func(s *stripetest.Subscription) { s.Metadata = map[string]string{} }); err != nil {
			t.Fatal(err)
		}
		byType := map[string]stripetest.Event{}
		for _, ev := range events {
			byType[ev.Type] = ev
		}
		e.deliver(byType["invoice.paid"])
		e.settle()
		if row := e.eventByID(byType["invoice.paid"].ID); row.Outcome != "processed" || !strings.Contains(row.Detail, "not reconciled") {
			t.Fatalf("invoice.paid first = %+v", row)
		}
		if len(e.rec.of(subID)) != 0 {
			t.Fatal("reconciled a subscription nobody is known to own")
		}
		e.deliver(byType["checkout.session.completed"])
		e.settle()
		calls := e.rec.of(subID)
		if len(calls) != 1 || calls[0].ClientID != "client-link" || calls[0].Email != "link@example.com" || calls[0].Status != Active {
			t.Fatalf("after checkout.session.completed: %+v", calls)
		}
	})
}

func TestUnknownPriceFailsVisibly(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		sub, events, _ := e.stripe.CreateSubscription(e.stripe.AddCustomer("p@example.com"), "price_not_in_plans",
			map[string]string{"client_id": "client-price"})
		e.deliver(events[0])
		e.settle()
		row := e.eventByID(events[0].ID)
		if row.Outcome != "failed" || row.Attempts != 1 || !strings.Contains(row.Error, "price_not_in_plans") ||
			!strings.Contains(row.Error, "PROVISIONER_PLANS_FILE") {
			t.Fatalf("event = %+v", row)
		}
		if len(e.rec.of(sub.ID)) != 0 {
			t.Fatal("reconciled with a guessed plan")
		}
		failed, _, err := e.svc.Events(context.Background(), EventFilter{Status: EventFailed})
		if err != nil || len(failed) != 1 || failed[0].SubscriptionRef != sub.ID || failed[0].Status != EventFailed {
			t.Fatalf("failed events = %+v, %v", failed, err)
		}
		if n := counter(t, e.reg, "provisioner_billing_events_total", map[string]string{"outcome": "failed"}); n != 1 {
			t.Errorf("failed counted %v", n)
		}
	})
}

func TestStripeFailingThenRecovering(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{retry: manualRetry{}})
		sub, events, _ := e.stripe.CreateSubscription(e.stripe.AddCustomer("r@example.com"), "price_starter",
			map[string]string{"client_id": "client-retry"})
		e.stripe.FailNext(1, 500)
		e.stripe.FailNext(1, 429)
		e.deliver(events[0])
		for i, want := range []string{"HTTP 500", "HTTP 429"} {
			job := e.nextJob(river.EventKindJobFailed)
			row := e.eventByID(events[0].ID)
			if row.ProcessedAt != nil || row.Attempts != i+1 || !strings.Contains(row.Error, want) {
				t.Fatalf("after failure %d: event = %+v", i+1, row)
			}
			if list, _, _ := e.svc.Events(context.Background(), EventFilter{Status: EventPending}); len(list) != 1 || list[0].Error == "" {
				t.Fatalf("pending list = %+v", list)
			}
			if _, err := e.queue.Retry(context.Background(), job.Job.ID); err != nil { // the backoff, shortened
				t.Fatal(err)
			}
		}
		e.nextJob(river.EventKindJobCompleted)
		row := e.eventByID(events[0].ID)
		if row.Outcome != "processed" || row.Error != "" || row.Attempts != 3 || len(e.rec.of(sub.ID)) != 1 {
			t.Fatalf("after recovery: event = %+v", row)
		}
		if n := counter(t, e.reg, "provisioner_billing_events_total", map[string]string{"outcome": "retry"}); n != 2 {
			t.Errorf("retries counted %v", n)
		}
	})
}

func TestReplay(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		ctx := context.Background()
		sub, events, _ := e.stripe.CreateSubscription(e.stripe.AddCustomer("taken@example.com"), "price_starter",
			map[string]string{"client_id": "client-replay", "email": "taken@example.com"})
		// A transient reconciler failure retries by itself; a conflict waits for the operator.
		e.rec.failNext(apperr.New(apperr.Unavailable, "database busy"), apperr.New(apperr.Conflict, "email taken@example.com belongs to another client"))
		e.deliver(events[0])
		e.settle()
		row := e.eventByID(events[0].ID)
		if row.Outcome != "failed" || row.Attempts != 2 || !strings.Contains(row.Error, "belongs to another client") {
			t.Fatalf("event = %+v", row)
		}
		replayed, err := e.svc.Replay(ctx, row.ID)
		if err != nil || replayed.ID != row.ID {
			t.Fatalf("replay = %+v, %v", replayed, err)
		}
		e.settle()
		row = e.eventByID(events[0].ID)
		if row.Outcome != "processed" || row.Error != "" || len(e.rec.of(sub.ID)) != 1 {
			t.Fatalf("after replay: event = %+v", row)
		}
		// Replaying a processed event reconciles again (after an instances fix, say).
		if _, err := e.svc.Replay(ctx, row.ID); err != nil {
			t.Fatal(err)
		}
		e.settle()
		if n := len(e.rec.of(sub.ID)); n != 2 {
			t.Fatalf("reconciled %d times after the second replay", n)
		}
		if _, err := e.svc.Replay(ctx, 987654); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("replay of an unknown event: %v", err)
		}
	})
}

// A subscription created outside our checkout, with no client metadata, is stored but not
// reconciled: nobody is known to own it.
func TestUnattributedSubscription(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		sub, events, _ := e.stripe.CreateSubscription(e.stripe.AddCustomer("anon@example.com"), "price_pro", nil)
		for _, ev := range events {
			e.deliver(ev)
		}
		e.settle()
		if s := e.stored(sub.ID); s.ClientID != "" || s.PlanID != "pro" || s.Status != Active {
			t.Fatalf("stored = %+v", s)
		}
		if len(e.rec.of(sub.ID)) != 0 {
			t.Fatal("reconciled")
		}
	})
}

func TestCheckout(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		ctx := context.Background()
		good := CheckoutRequest{ClientID: "client-c", Email: "c@example.com", Name: "C", Plan: "pro", Locale: "en"}
		sess, err := e.svc.Checkout(ctx, good)
		if err != nil || !strings.HasPrefix(sess.ID, "cs_test_") || !strings.HasPrefix(sess.URL, "https://checkout.stripe.com/") {
			t.Fatalf("checkout = %+v, %v", sess, err)
		}
		cs, _ := e.stripe.CheckoutSession(sess.ID)
		if cs.Mode != "subscription" || *cs.ClientReferenceID != "client-c" || cs.Metadata["client_id"] != "client-c" ||
			cs.SubscriptionMetadata["client_id"] != "client-c" || cs.SubscriptionMetadata["email"] != "c@example.com" ||
			cs.SubscriptionMetadata["locale"] != "en" || *cs.CustomerEmail != "c@example.com" || cs.LineItems[0].Price != "price_pro" ||
			cs.SuccessURL != testPortal+"/checkout/success?session_id={CHECKOUT_SESSION_ID}" || *cs.CancelURL != testPortal+"/checkout/cancel" {
			t.Fatalf("session sent to Stripe = %+v", cs)
		}
		with := func(f func(*CheckoutRequest)) CheckoutRequest { r := good; f(&r); return r }
		bad := []struct {
			name string
			req  CheckoutRequest
			kind apperr.Kind
		}{
			{"unknown plan", with(func(r *CheckoutRequest) { r.Plan = "enterprise" }), apperr.Invalid},
			{"plan not sold through Stripe", with(func(r *CheckoutRequest) { r.Plan = "manual" }), apperr.Invalid},
			{"bad client id", with(func(r *CheckoutRequest) { r.ClientID = "../x" }), apperr.Invalid},
			{"bad email", with(func(r *CheckoutRequest) { r.Email = "not-an-email" }), apperr.Invalid},
			{"bad locale", with(func(r *CheckoutRequest) { r.Locale = "fr" }), apperr.Invalid},
		}
		for _, b := range bad {
			if _, err := e.svc.Checkout(ctx, b.req); apperr.KindOf(err) != b.kind {
				t.Errorf("%s: %v, want %s", b.name, err, b.kind)
			}
		}
		sessionsBefore := len(e.stripe.Requests())
		e.room.full.Store(true)
		if _, err := e.svc.Checkout(ctx, good); !apperr.Is(err, apperr.Conflict) || !strings.Contains(apperr.Message(err), "room") {
			t.Fatalf("checkout with no room: %v", err)
		}
		if len(e.stripe.Requests()) != sessionsBefore {
			t.Fatal("Stripe was called although no host has room")
		}
		e.room.full.Store(false)
		e.stripe.FailNext(1, 503)
		if _, err := e.svc.Checkout(ctx, good); !apperr.Is(err, apperr.Unavailable) {
			t.Fatalf("checkout with Stripe down: %v", err)
		}
		if _, err := e.svc.BillingPortal(ctx, "client-never-paid"); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("billing portal without a customer: %v", err)
		}
	})
}

// A price Stripe does not know is our configuration's fault: not the portal's 400.
func TestCheckoutPriceUnknownToStripe(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dbtest.Open(t, database.SQLite), envOptions{})
	e.svc.plans = plans.Plans{{ID: "ghost", Name: "Ghost", CPUs: 1, MemoryMB: 1024, StripePriceID: "price_deleted_in_stripe", N8nImage: plans.DefaultN8nImage}}
	_, err := e.svc.Checkout(context.Background(), CheckoutRequest{ClientID: "c", Email: "c@example.com", Plan: "ghost"})
	if apperr.KindOf(err) != apperr.Internal || !strings.Contains(err.Error(), "No such price") {
		t.Fatalf("err = %v, want an internal error naming Stripe's refusal", err)
	}
}

func TestNotConfigured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dbtest.Open(t, database.SQLite), envOptions{config: &Config{}})
	ctx := context.Background()
	ev := stripetest.NewEvent("invoice.paid", time.Now(), map[string]any{"id": "in_1"}, nil)
	_, err := e.svc.Webhook(ctx, ProviderStripe, bytes.NewReader(ev.Payload), http.Header{"Stripe-Signature": {stripetest.Sign(ev.Payload, testSecret, time.Now())}}, nil)
	if !apperr.Is(err, apperr.Unavailable) || apperr.Message(err) != "Stripe is not configured" {
		t.Fatalf("webhook: %v", err)
	}
	if _, err := e.svc.Checkout(ctx, CheckoutRequest{ClientID: "c", Email: "c@example.com", Plan: "starter"}); !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("checkout: %v", err)
	}
	if _, err := e.svc.BillingPortal(ctx, "c"); !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("portal: %v", err)
	}
	if list, _, err := e.svc.Events(ctx, EventFilter{}); err != nil || len(list) != 0 {
		t.Fatalf("events: %v %v", list, err)
	}
	if e.svc.Policy() != (Policy{PastDueGrace: DefaultPastDueGrace, Retention: DefaultRetention}) {
		t.Fatalf("policy = %+v", e.svc.Policy())
	}
}

// Events stored by a replica that died before enqueueing them are picked up by the sweeper.
func TestSweeperEnqueuesOrphans(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{noDispatch: true})
		ctx := context.Background()
		sub, events, _ := e.stripe.CreateSubscription(e.stripe.AddCustomer("o@example.com"), "price_starter",
			map[string]string{"client_id": "client-orphan"})
		e.deliver(events[0])
		if n, err := e.svc.sweep(ctx); err != nil || n != 0 {
			t.Fatalf("sweep within the grace period = %d, %v", n, err)
		}
		e.clock.Advance(2 * sweepGrace)
		if n, err := e.svc.sweep(ctx); err != nil || n != 1 {
			t.Fatalf("sweep = %d, %v", n, err)
		}
		e.settle()
		if len(e.rec.of(sub.ID)) != 1 {
			t.Fatal("the orphan was not processed")
		}
		if n, err := e.svc.sweep(ctx); err != nil || n != 0 {
			t.Fatalf("sweep after processing = %d, %v", n, err)
		}
		// The periodic job is what runs the sweep in production.
		if jobs := e.svc.PeriodicJobs(); len(jobs) != 1 {
			t.Fatalf("periodic jobs = %d", len(jobs))
		}
	})
}

func TestEventsPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dbtest.Open(t, database.SQLite), envOptions{noDispatch: true})
	ctx := context.Background()
	for i := range 5 {
		e.deliver(stripetest.NewEvent("customer.updated", time.Now(), map[string]any{"id": "cus_" + string(rune('a'+i))}, nil))
	}
	var seen []int64
	cursor := ""
	for {
		page, next, err := e.svc.Events(ctx, EventFilter{Status: EventPending, Cursor: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page {
			seen = append(seen, ev.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != 5 || seen[0] >= seen[4] {
		t.Fatalf("pages = %v", seen)
	}
	for _, f := range []EventFilter{{Status: "exploded"}, {Cursor: "abc"}, {Limit: 500}} {
		if _, _, err := e.svc.Events(ctx, f); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("filter %+v: %v", f, err)
		}
	}
}

// Our cancel endpoint calls MercadoPago's API; a Stripe subscription is cancelled in
// Stripe's billing portal instead, and nothing is called.
func TestCancelThroughTheAPI(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db, envOptions{})
		ctx := context.Background()
		stripeSub, events := e.buy("client-s", "starter")
		for _, ev := range events {
			e.deliver(ev)
		}
		sess, err := e.svc.Checkout(ctx, CheckoutRequest{ClientID: "client-m", Email: "m@example.com", Plan: "pro", Provider: ProviderMercadoPago})
		if err != nil {
			t.Fatal(err)
		}
		notes, _ := e.mp.Subscribe(sess.ID, "M", "P")
		e.send(ProviderMercadoPago, fromMercadoPago(notes[0])[0])
		e.settle()
		if _, err := e.svc.Cancel(ctx, e.stored(stripeSub).ID); !apperr.Is(err, apperr.Invalid) || !strings.Contains(err.Error(), "billing portal") {
			t.Fatalf("cancelling a Stripe subscription: %v", err)
		}
		ours := e.stored(sess.ID)
		e.mp.FailNext(1, 500)
		if _, err := e.svc.Cancel(ctx, ours.ID); !apperr.Is(err, apperr.Unavailable) {
			t.Fatalf("cancel with MercadoPago down: %v", err)
		}
		if pre, _ := e.mp.Preapproval(sess.ID); pre.Status != "authorized" {
			t.Fatalf("preapproval = %s after a failed cancel", pre.Status)
		}
		if _, err := e.svc.Cancel(ctx, ours.ID); err != nil {
			t.Fatal(err)
		}
		e.settle()
		if got := e.stored(sess.ID); got.Status != Canceled || got.CanceledAt == nil {
			t.Fatalf("after cancel: %+v", got)
		}
		// Again: nothing more is asked of MercadoPago.
		before := len(e.mp.Requests())
		if _, err := e.svc.Cancel(ctx, ours.ID); err != nil || len(e.mp.Requests()) != before {
			t.Fatalf("second cancel: %v, %d calls", err, len(e.mp.Requests())-before)
		}
		if _, err := e.svc.Cancel(ctx, "no-such-subscription"); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("unknown subscription: %v", err)
		}
	})
}

// A MercadoPago subscription not paid yet (pending) is stored, attributed, and asks nothing
// of its instance; paying at the init_point makes it active.
func TestMercadoPagoPendingThenPaid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dbtest.Open(t, database.SQLite), envOptions{})
	sess, err := e.svc.Checkout(context.Background(), CheckoutRequest{ClientID: "client-p", Email: "p@example.com", Plan: "starter", Provider: ProviderMercadoPago})
	if err != nil {
		t.Fatal(err)
	}
	e.sendAll(ProviderMercadoPago, fromMercadoPago(e.mp.Created(sess.ID)))
	e.settle()
	got := e.last(sess.ID)
	if got.Status != Incomplete || got.ClientID != "client-p" || got.Intent(e.svc.Policy()) != (Intent{}) {
		t.Fatalf("pending: %+v", got)
	}
	notes, _ := e.mp.Subscribe(sess.ID, "P", "Q")
	e.sendAll(ProviderMercadoPago, fromMercadoPago(notes...))
	e.settle()
	if got := e.last(sess.ID); got.Status != Active || !got.Intent(e.svc.Policy()).Run {
		t.Fatalf("paid: %+v", got)
	}
}
