package billing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/mercadopagotest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// mpBackend is a MercadoPago API the contract runs against.
type mpBackend struct {
	url, token, plan, payer string
	fake                    *mercadopagotest.Server
}

// TestMercadoPagoContract runs every call billing makes to MercadoPago against the fake,
// and against MercadoPago itself with an application's test credentials when they are in
// the environment (PROVISIONER_TEST_MERCADOPAGO_ACCESS_TOKEN, a TEST-... token;
// PROVISIONER_TEST_MERCADOPAGO_PLAN_ID, a preapproval plan of that application;
// PROVISIONER_TEST_MERCADOPAGO_PAYER_EMAIL, a test buyer's email), so that the fake
// cannot drift from what MercadoPago accepts and answers.
func TestMercadoPagoContract(t *testing.T) {
	t.Parallel()
	backends := map[string]func(t *testing.T) mpBackend{
		"mercadopagotest": func(t *testing.T) mpBackend {
			fake := &mercadopagotest.Server{Token: testMPToken}
			plan := mercadopagotest.NewPlanID()
			fake.AddPlan(plan, "n8n Starter", 15000, "ARS")
			srv := httptest.NewServer(fake)
			t.Cleanup(srv.Close)
			return mpBackend{url: srv.URL, token: testMPToken, plan: plan, payer: "contract@example.com", fake: fake}
		},
		"mercadopago": func(t *testing.T) mpBackend {
			b := mpBackend{url: DefaultMercadoPagoAPIURL, token: os.Getenv("PROVISIONER_TEST_MERCADOPAGO_ACCESS_TOKEN"),
				plan: os.Getenv("PROVISIONER_TEST_MERCADOPAGO_PLAN_ID"), payer: os.Getenv("PROVISIONER_TEST_MERCADOPAGO_PAYER_EMAIL")}
			if !strings.HasPrefix(b.token, "TEST-") || b.plan == "" || b.payer == "" {
				t.Skip("no MercadoPago test credentials (PROVISIONER_TEST_MERCADOPAGO_ACCESS_TOKEN, _PLAN_ID, _PAYER_EMAIL)")
			}
			testlog.Secret(t, b.token)
			return b
		},
	}
	for name, setup := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			hc := &http.Client{}
			p, err := newMercadoPago(MercadoPagoConfig{AccessToken: b.token, WebhookSecrets: []string{testMPSecret}, APIURL: b.url}, hc)
			if err != nil {
				t.Fatal(err)
			}
			plan := plans.Plan{ID: "starter", Name: "Starter", MercadoPagoPlanID: b.plan}
			sess, err := p.checkout(ctx, checkoutParams{ClientID: "client-contract", Email: b.payer, Locale: "es", Plan: plan,
				SuccessURL: testPortal + "/checkout/success?provider=mercadopago"})
			if err != nil {
				t.Fatalf("checkout: %v", err)
			}
			if sess.ID == "" || !strings.HasPrefix(sess.URL, "https://") || !strings.Contains(sess.URL, sess.ID) {
				t.Fatalf("checkout = %+v", sess)
			}
			sub, err := p.fetch(ctx, sess.ID)
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if sub.ID != sess.ID || sub.Status != Incomplete || sub.PlanID != "starter" || sub.Attribution.ClientID != "client-contract" ||
				sub.Attribution.Locale != "es" || !strings.EqualFold(sub.Attribution.Email, b.payer) {
				t.Fatalf("fetched %+v", sub)
			}
			if err := p.cancel(ctx, sess.ID); err != nil {
				t.Fatalf("cancel: %v", err)
			}
			if sub, err := p.fetch(ctx, sess.ID); err != nil || sub.Status != Canceled || sub.EndedAt == nil {
				t.Fatalf("after cancel: %+v, %v", sub, err)
			}
			if _, err := p.fetch(ctx, "2c9380848f0d6a2c018f1b2e3a4bdead"); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("fetch of a missing subscription: %v, want NotFound", err)
			}
			missing := plan
			missing.MercadoPagoPlanID = "2c9380848f0d6a2c018f1b2e3a4bdead"
			if _, err := p.checkout(ctx, checkoutParams{ClientID: "c", Email: b.payer, Plan: missing, SuccessURL: testPortal}); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("checkout of a missing preapproval plan: %v, want NotFound", err)
			}
			wrong, _ := newMercadoPago(MercadoPagoConfig{AccessToken: "TEST-0000000000000000-000000-notatoken-0", APIURL: b.url}, hc)
			if _, err := wrong.fetch(ctx, sess.ID); !apperr.Is(err, apperr.Unavailable) || !strings.Contains(apperr.Message(err), "access token") {
				t.Fatalf("a refused token: %v, want Unavailable naming the token", err)
			}
			if b.fake == nil {
				return // what follows needs failure knobs
			}
			b.fake.FailNext(1, 502)
			if _, err := p.fetch(ctx, sess.ID); !apperr.Is(err, apperr.Unavailable) {
				t.Fatalf("fetch during an outage: %v", err)
			}
			if _, err := p.interpret(ctx, topicPayment, []byte(`{"type":"payment","data":{"id":"123"}}`)); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("a payment MercadoPago does not know: %v", err)
			}
			if it, err := p.interpret(ctx, "merchant_order", []byte(`{"type":"merchant_order","data":{"id":"1"}}`)); err != nil || it.Relevant || it.Why == "" {
				t.Fatalf("another topic: %+v, %v", it, err)
			}
		})
	}
}
