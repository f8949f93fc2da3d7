package billing

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/mercadopagotest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
)

// delivery is one webhook POST, as a provider makes it.
type delivery struct {
	ID      string // the provider's event (notification) id
	Type    string
	Payload []byte
	Header  http.Header
	Query   url.Values
}

// gateway is a payment provider's fake as the shared scenarios drive it: each method
// changes the fake's state the way the provider does and returns the deliveries it sends.
type gateway struct {
	name string
	// buy runs a purchase through our checkout and the provider's payment page.
	buy func(e *env, client, plan string) (subID string, _ []delivery)
	// paymentFailed makes the next renewal fail; paymentSucceeded pays it.
	paymentFailed, paymentSucceeded func(e *env, subID string) []delivery
	// cancel is the customer cancelling at the provider.
	cancel func(e *env, subID string) []delivery
	// signed returns d signed with secret at t (tampered keeps the signature of d but
	// changes what it is about).
	signed   func(d delivery, secret string, t time.Time) delivery
	tampered func(e *env, d delivery) delivery
	// reads counts the fake's reads of the subscription.
	reads func(e *env, subID string) int
	// failNext makes the fake's next n API requests answer status.
	failNext func(e *env, n, status int)
	// secret and oldSecret are the signing secrets configured while one rolls.
	secret, oldSecret string
}

func fromStripe(evs ...stripetest.Event) []delivery {
	out := make([]delivery, 0, len(evs))
	for _, ev := range evs {
		out = append(out, delivery{ID: ev.ID, Type: ev.Type, Payload: ev.Payload,
			Header: http.Header{"Stripe-Signature": {stripetest.Sign(ev.Payload, testSecret, time.Now())}}})
	}
	return out
}

func fromMercadoPago(ns ...mercadopagotest.Notification) []delivery {
	out := make([]delivery, 0, len(ns))
	for _, n := range ns {
		out = append(out, delivery{ID: fmt.Sprint(n.ID), Type: n.Type, Payload: n.Payload,
			Header: n.Headers(testMPSecret, time.Now()), Query: n.Query()})
	}
	return out
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var gateways = []gateway{
	{
		name: ProviderStripe, secret: testSecret, oldSecret: testOldSecret,
		buy: func(e *env, client, plan string) (string, []delivery) {
			sub, events := e.buy(client, plan)
			return sub, fromStripe(events...)
		},
		paymentFailed:    func(e *env, id string) []delivery { return fromStripe(must(e.stripe.PaymentFailed(id))...) },
		paymentSucceeded: func(e *env, id string) []delivery { return fromStripe(must(e.stripe.PaymentSucceeded(id))...) },
		cancel:           func(e *env, id string) []delivery { return fromStripe(must(e.stripe.Cancel(id))) },
		signed: func(d delivery, secret string, t time.Time) delivery {
			d.Header = http.Header{"Stripe-Signature": {stripetest.Sign(d.Payload, secret, t)}}
			return d
		},
		tampered: func(_ *env, d delivery) delivery {
			d.Payload = append(bytes.TrimSuffix(bytes.Clone(bytes.TrimSpace(d.Payload)), []byte("}")), []byte(`,"livemode":true}`)...)
			return d
		},
		reads:    func(e *env, id string) int { return countOf(e.stripe.Requests(), "GET /v1/subscriptions/"+id) },
		failNext: func(e *env, n, status int) { e.stripe.FailNext(n, status) },
	},
	{
		name: ProviderMercadoPago, secret: testMPSecret, oldSecret: testMPOldSecret,
		buy: func(e *env, client, plan string) (string, []delivery) {
			e.t.Helper()
			sess, err := e.svc.Checkout(context.Background(), CheckoutRequest{ClientID: client, Email: client + "@example.com",
				Name: "Ada " + client, Plan: plan, Locale: "es", Provider: ProviderMercadoPago})
			if err != nil {
				e.t.Fatal(err)
			}
			created := e.mp.Created(sess.ID)
			return sess.ID, fromMercadoPago(append([]mercadopagotest.Notification{created}, must(e.mp.Subscribe(sess.ID, "Ada", client))...)...)
		},
		paymentFailed:    func(e *env, id string) []delivery { return fromMercadoPago(must(e.mp.ChargeFailed(id))...) },
		paymentSucceeded: func(e *env, id string) []delivery { return fromMercadoPago(must(e.mp.ChargeSucceeded(id))...) },
		cancel:           func(e *env, id string) []delivery { return fromMercadoPago(must(e.mp.SetStatus(id, "cancelled"))) },
		signed: func(d delivery, secret string, t time.Time) delivery {
			rid := "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
			d.Header = http.Header{"X-Request-Id": {rid}, "X-Signature": {mercadopagotest.Sign(d.Query.Get("data.id"), rid, secret, t)}}
			return d
		},
		// Only data.id is signed: a notification moved to another subscription is forged.
		tampered: func(e *env, d delivery) delivery {
			other, _ := e.svc.Checkout(context.Background(), CheckoutRequest{ClientID: "victim", Email: "victim@example.com",
				Plan: "starter", Provider: ProviderMercadoPago})
			id := d.Query.Get("data.id")
			d.Payload = bytes.Replace(d.Payload, []byte(id), []byte(other.ID), 1)
			d.Query = url.Values{"data.id": {other.ID}, "type": {d.Type}}
			return d
		},
		reads:    func(e *env, id string) int { return countOf(e.mp.Requests(), "GET /preapproval/"+id) },
		failNext: func(e *env, n, status int) { e.mp.FailNext(n, status) },
	},
}

// aboutSubscription returns the delivery that says the subscription was created or changed.
func aboutSubscription(t *testing.T, ds []delivery) delivery {
	t.Helper()
	for _, d := range ds {
		if d.Type == "customer.subscription.created" || d.Type == topicPreapproval {
			return d
		}
	}
	t.Fatal("no delivery about the subscription")
	return delivery{}
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// send posts d to the service.
func (e *env) send(provider string, d delivery) (Receipt, error) {
	return e.svc.Webhook(context.Background(), provider, bytes.NewReader(d.Payload), d.Header, d.Query)
}

func (e *env) sendAll(provider string, ds []delivery) {
	e.t.Helper()
	for _, d := range ds {
		if _, err := e.send(provider, d); err != nil {
			e.t.Fatalf("delivering %s %s: %v", provider, d.Type, err)
		}
	}
}

func (e *env) last(subID string) Subscription {
	e.t.Helper()
	calls := e.rec.of(subID)
	if len(calls) == 0 {
		e.t.Fatalf("subscription %s was never reconciled", subID)
	}
	return calls[len(calls)-1]
}

// The scenarios every provider must pass, each on SQLite and PostgreSQL: what the
// instances see of a subscription is the same whichever provider sells it.
func TestProviderScenarios(t *testing.T) {
	t.Parallel()
	scenarios := []struct {
		name string
		run  func(t *testing.T, e *env, g gateway)
		opts envOptions
	}{
		{"purchase", func(t *testing.T, e *env, g gateway) {
			subID, ds := g.buy(e, "client-buy", "starter")
			e.sendAll(g.name, ds)
			e.settle()
			got := e.last(subID)
			if got.Provider != g.name || got.ClientID != "client-buy" || got.Email != "client-buy@example.com" || got.Locale != "es" ||
				got.PlanID != "starter" || got.Status != Active || got.ProviderCustomerID == "" ||
				got.CurrentPeriodEnd.Before(time.Now().AddDate(0, 0, 27)) || got.CanceledAt != nil || !got.Intent(e.svc.Policy()).Run {
				t.Fatalf("reconciled with %+v", got)
			}
			if n := e.count("provider = ? AND processed_at IS NULL", g.name); n != 0 {
				t.Fatalf("%d events left pending", n)
			}
		}, envOptions{}},
		{"20x redelivery", func(t *testing.T, e *env, g gateway) {
			subID, ds := g.buy(e, "client-redeliver", "starter")
			first := aboutSubscription(t, ds)
			for i := range 20 {
				r, err := e.send(g.name, first)
				if err != nil || r.EventID != first.ID || r.Duplicate != (i > 0) {
					t.Fatalf("delivery %d: %+v, %v", i+1, r, err)
				}
			}
			e.settle()
			if n := e.count("provider = ? AND event_id = ?", g.name, first.ID); n != 1 {
				t.Fatalf("%d rows for one event", n)
			}
			if row := e.eventByID(first.ID); row.Attempts != 1 || row.Outcome != "processed" {
				t.Fatalf("event = %+v, want processed once", row)
			}
			if n := g.reads(e, subID); n != 1 {
				t.Fatalf("read the subscription %d times", n)
			}
			if n := len(e.rec.of(subID)); n != 1 {
				t.Fatalf("reconciled %d times", n)
			}
		}, envOptions{}},
		{"forged and stale signatures", func(t *testing.T, e *env, g gateway) {
			_, ds := g.buy(e, "client-forge", "starter")
			d := aboutSubscription(t, ds)
			now := time.Now()
			refused := map[string]delivery{
				"tampered":     g.tampered(e, g.signed(d, g.secret, now)),
				"wrong secret": g.signed(d, "attacker-secret-0123456789abcdef", now),
				"stale":        g.signed(d, g.secret, now.Add(-10*time.Minute)),
				"unsigned":     {ID: d.ID, Type: d.Type, Payload: d.Payload, Header: http.Header{}, Query: d.Query},
			}
			for name, bad := range refused {
				if _, err := e.send(g.name, bad); !apperr.Is(err, apperr.Invalid) {
					t.Errorf("%s: %v, want Invalid", name, err)
				}
			}
			if n := e.count("1 = 1"); n != 0 {
				t.Fatalf("refused deliveries stored %d events", n)
			}
			// While the secret rolls, both the old and the new one are taken.
			for _, secret := range []string{g.oldSecret, g.secret} {
				if _, err := e.send(g.name, g.signed(d, secret, now)); err != nil {
					t.Errorf("signed with the %s secret: %v", map[bool]string{true: "old", false: "new"}[secret == g.oldSecret], err)
				}
			}
			if strings.Contains(e.logs.String(), g.secret) || strings.Contains(e.logs.String(), g.oldSecret) {
				t.Fatal("a secret reached the log")
			}
		}, envOptions{}},
		{"out-of-order delivery", func(t *testing.T, e *env, g gateway) {
			subID, ds := g.buy(e, "client-order", "starter")
			ds = append(ds, g.paymentFailed(e, subID)...)
			ds = append(ds, g.cancel(e, subID)...)
			ctx := context.Background()
			for i := len(ds) - 1; i >= 0; i-- { // newest first
				if _, err := e.send(g.name, ds[i]); err != nil {
					t.Fatal(err)
				}
				if err := e.svc.process(ctx, e.eventByID(ds[i].ID).ID, false); err != nil {
					t.Fatalf("processing %s: %v", ds[i].Type, err)
				}
			}
			s := e.stored(subID)
			if s.Status != Canceled || s.CanceledAt == nil || s.ClientID != "client-order" || s.PlanID != "starter" {
				t.Fatalf("final state %+v", s)
			}
			if last := e.last(subID); last.Status != Canceled {
				t.Fatalf("last reconciled %+v", last)
			}
		}, envOptions{noDispatch: true}},
		{"cancel", func(t *testing.T, e *env, g gateway) {
			subID, ds := g.buy(e, "client-cancel", "pro")
			e.sendAll(g.name, ds)
			e.settle()
			e.sendAll(g.name, g.cancel(e, subID))
			e.settle()
			got := e.last(subID)
			in := got.Intent(e.svc.Policy())
			if got.Status != Canceled || got.CanceledAt == nil || got.PlanID != "pro" || in.Run || in.SuspendAt.IsZero() ||
				!in.DeleteAt.Equal(got.CanceledAt.Add(DefaultRetention)) {
				t.Fatalf("after cancelling: %+v, intent %+v", got, in)
			}
		}, envOptions{}},
		{"payment failed, grace, suspended; paid, resumed", func(t *testing.T, e *env, g gateway) {
			subID, ds := g.buy(e, "client-dunning", "starter")
			e.sendAll(g.name, ds)
			e.settle()
			e.sendAll(g.name, g.paymentFailed(e, subID))
			e.settle()
			got := e.last(subID)
			in := got.Intent(e.svc.Policy())
			if got.Status != PastDue || !in.Run || !in.WarnPastDue || !in.SuspendAt.Equal(got.StatusSince.Add(DefaultPastDueGrace)) {
				t.Fatalf("after a failed payment: %+v, intent %+v", got, in)
			}
			// Once the grace period is over the instance is due for suspension.
			e.clock.Advance(DefaultPastDueGrace + time.Hour)
			if due := e.stored(subID).Intent(e.svc.Policy()).SuspendAt; !due.Before(e.clock.Now()) {
				t.Fatalf("after the grace period, suspension is due at %s", due)
			}
			e.sendAll(g.name, g.paymentSucceeded(e, subID))
			e.settle()
			if got := e.last(subID); got.Status != Active || !got.Intent(e.svc.Policy()).Run || !got.Intent(e.svc.Policy()).SuspendAt.IsZero() {
				t.Fatalf("after paying: %+v", got)
			}
		}, envOptions{}},
		{"provider down, then back", func(t *testing.T, e *env, g gateway) {
			subID, ds := g.buy(e, "client-outage", "starter")
			d := aboutSubscription(t, ds)
			g.failNext(e, 1, 503)
			g.failNext(e, 1, 429)
			if _, err := e.send(g.name, d); err != nil {
				t.Fatal(err)
			}
			e.settle()
			row := e.eventByID(d.ID)
			if row.Outcome != "processed" || row.Attempts != 3 || row.Error != "" {
				t.Fatalf("event = %+v, want processed at the third attempt", row)
			}
			if got := e.last(subID); got.Status != Active || got.ClientID != "client-outage" {
				t.Fatalf("reconciled with %+v", got)
			}
		}, envOptions{}},
	}
	for _, g := range gateways {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					t.Parallel()
					dbtest.Each(t, func(t *testing.T, db *database.DB) {
						sc.run(t, newEnv(t, db, sc.opts), g)
					})
				})
			}
		})
	}
}
