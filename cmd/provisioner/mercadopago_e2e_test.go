package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/mercadopagotest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// MercadoPago end to end: the real service, configured for Stripe and MercadoPago at
// once, sells the starter plan through MercadoPago; its notifications reach
// /webhooks/payments/mercadopago over HTTP, signed as MercadoPago signs them, and drive
// the same lifecycle as Stripe's events do.

const (
	e2eMPToken   = "TEST-5555555555555555-120709-e2e0123456789abcdef0123456789ab-100200300"
	e2eMPSecret  = "mp-e2e-webhook-secret-0123456789abcdef"
	e2eMPStarter = "2c9380848f0d6a2c018f1b2e3a4be2e1"
)

const e2eMercadoPagoPlans = `plans:
  - id: starter
    name: Starter
    cpus: 0.5
    memory_mb: 1024
    price: USD 10/month
    stripe_price_id: ` + starterPrice + `
    mercadopago_plan_id: ` + e2eMPStarter + `
    mercadopago_price: ARS 15000/month
    n8n_image: docker.n8n.io/n8nio/n8n:2.8.4
`

func newMercadoPagoLifecycle(t *testing.T, d database.Dialect, env map[string]string) (*lifecycle, *mercadopagotest.Server) {
	t.Helper()
	mp := &mercadopagotest.Server{Token: e2eMPToken}
	mp.AddPlan(e2eMPStarter, "n8n Starter", 15000, "ARS")
	all := map[string]string{
		"PROVISIONER_SWEEP_INTERVAL":             "200ms",
		"PROVISIONER_MERCADOPAGO_ACCESS_TOKEN":   e2eMPToken,
		"PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET": "mp-e2e-previous-secret-0123456789ab," + e2eMPSecret,
		"PROVISIONER_MERCADOPAGO_API_URL":        serveHTTP(t, mp),
	}
	for k, v := range env {
		all[k] = v
	}
	testlog.Secret(t, e2eMPToken, e2eMPSecret)
	e := newE2E(t, e2eOptions{dialect: d, env: all, plans: e2eMercadoPagoPlans})
	e.start()
	return &lifecycle{e2e: e, host: e.addHost("nuc", 10)}, mp
}

// notify posts MercadoPago's notifications to the webhook and returns the statuses.
func (l *lifecycle) notify(secret string, ns ...mercadopagotest.Notification) []int {
	l.t.Helper()
	var out []int
	for _, n := range ns {
		res, err := http.DefaultClient.Do(n.Request(l.url+"/webhooks/payments/mercadopago", secret))
		if err != nil {
			l.t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		out = append(out, res.StatusCode)
	}
	return out
}

func (l *lifecycle) mustNotify(ns ...mercadopagotest.Notification) {
	l.t.Helper()
	for i, status := range l.notify(e2eMPSecret, ns...) {
		if status != http.StatusOK {
			l.t.Fatalf("notification %s = %d", ns[i].Type, status)
		}
	}
}

func TestMercadoPagoPurchaseGraceResumeAndCancel(t *testing.T) {
	t.Parallel()
	const grace = 8 * time.Second // as in TestLifecyclePastDueGraceSuspendsAndPaymentResumes
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			l, mp := newMercadoPagoLifecycle(t, d, map[string]string{"PROVISIONER_PAST_DUE_GRACE": grace.String()})
			const client = "cus_mp"
			customer := client + "@example.com"

			// The portal's checkout gives the subscription's init_point.
			var sess struct{ ID, URL, Provider string }
			l.mustAPI("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": client, "email": customer,
				"name": "Ana Lovelace", "plan": "starter", "locale": "en", "provider": "mercadopago"}, http.StatusCreated, &sess)
			if !strings.HasSuffix(sess.URL, "preapproval_id="+sess.ID) || sess.Provider != "mercadopago" {
				t.Fatalf("checkout = %+v", sess)
			}
			notes, err := mp.Subscribe(sess.ID, "Ana", "Lovelace")
			if err != nil {
				t.Fatal(err)
			}

			// Forged and stale notifications: 400, and nothing is stored.
			stale := notes[0].Request(l.url+"/webhooks/payments/mercadopago", e2eMPSecret)
			stale.Header = notes[0].Headers(e2eMPSecret, time.Now().Add(-10*time.Minute))
			res, err := http.DefaultClient.Do(stale)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if forged := l.notify("attacker-secret-0123456789abcdef", notes...); res.StatusCode != 400 || forged[0] != 400 || forged[1] != 400 || forged[2] != 400 {
				t.Fatalf("stale = %d, forged = %v; want 400", res.StatusCode, forged)
			}
			var events struct{ Events []map[string]any }
			l.mustAPI("GET", "/v1/billing-events", e2eAdminKey, nil, http.StatusOK, &events)
			if len(events.Events) != 0 {
				t.Fatalf("refused notifications were stored: %v", events.Events)
			}

			// Twenty redeliveries of each notification make one instance and one email.
			for range 20 {
				l.mustNotify(notes...)
			}
			in := l.waitInstance(client, "active", 60*time.Second)
			if all := l.instances(client); len(all) != 1 {
				t.Fatalf("%d instances for one subscription", len(all))
			}
			mails := l.waitMail(customer, subjCreds)
			password := passwordIn(t, mails)
			testlog.Secret(t, password)
			if err := l.login(in, customer, password); err != nil {
				t.Fatalf("the emailed password does not log in: %v", err)
			}

			// A rejected recurring charge: past due, warned, suspended when the grace ends.
			failedAt := time.Now()
			charged, err := mp.ChargeFailed(sess.ID)
			if err != nil {
				t.Fatal(err)
			}
			l.mustNotify(charged...)
			l.waitMail(customer, subjPastDue)
			v := l.waitStatus(in.ID, "suspended", 30*time.Second)
			suspended, _ := v.event("suspended")
			if earliest := failedAt.Truncate(time.Second).Add(grace); suspended.At.Before(earliest) || !strings.Contains(suspended.Message, "(billing)") {
				t.Errorf("suspended at %s (%q), before the grace ended (%s) or not for billing", suspended.At, suspended.Message, earliest)
			}
			if c := l.mustContainer(in.Slug); c.Running {
				t.Error("the suspended container runs")
			}
			l.waitMail(customer, subjSuspended)

			// The retry is approved: resumed.
			paid, err := mp.ChargeSucceeded(sess.ID)
			if err != nil {
				t.Fatal(err)
			}
			l.mustNotify(paid...)
			l.waitStatus(in.ID, "active", 30*time.Second)
			l.waitMail(customer, subjResumed)

			// The customer cancels through our endpoint, which calls MercadoPago's API.
			var withSub struct {
				SubscriptionID string `json:"subscription_id"`
			}
			l.mustAPI("GET", "/v1/instances/"+in.ID, e2ePortalKey, nil, http.StatusOK, &withSub)
			l.mustAPI("POST", "/v1/subscriptions/"+withSub.SubscriptionID+"/cancel", e2ePortalKey, nil, http.StatusAccepted, nil)
			if pre, _ := mp.Preapproval(sess.ID); pre.Status != "cancelled" {
				t.Fatalf("MercadoPago's subscription is %s after the cancel", pre.Status)
			}
			l.mustNotify(mp.Changed(sess.ID)) // and MercadoPago's own notification of it
			v = l.waitStatus(in.ID, "suspended", 30*time.Second, "deleted")
			if _, ok := v.event("canceled"); !ok {
				t.Errorf("no canceled entry:\n%s", v.kinds())
			}
		})
	}
}
