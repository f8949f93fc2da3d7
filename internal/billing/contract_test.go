package billing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// backend is a Stripe API the contract runs against, with what it needs set up.
type backend struct {
	url          string
	subscription string // an existing subscription
	customer     string // an existing customer
	fake         *stripetest.Server
}

func contractBackends(t *testing.T) map[string]func(t *testing.T) backend {
	return map[string]func(t *testing.T) backend{
		"stripetest": func(t *testing.T) backend {
			fake := &stripetest.Server{}
			fake.SetPrices("price_starter")
			srv := httptest.NewServer(fake)
			t.Cleanup(srv.Close)
			cus := fake.AddCustomer("contract@example.com")
			sub, _, err := fake.CreateSubscription(cus, "price_starter", map[string]string{"client_id": "client-contract"})
			if err != nil {
				t.Fatal(err)
			}
			return backend{url: srv.URL, subscription: sub.ID, customer: cus, fake: fake}
		},
		// stripe-mock answers from Stripe's own OpenAPI fixtures and validates every
		// request against Stripe's OpenAPI spec of API version 2023-10-16 (v0.180.0):
		// any id exists, and no state is kept.
		"stripe-mock": func(t *testing.T) backend {
			url := os.Getenv("PROVISIONER_TEST_STRIPE_MOCK_URL")
			if url == "" {
				if os.Getenv("PROVISIONER_TEST_REQUIRE_STRIPE_MOCK") == "1" {
					t.Fatal("PROVISIONER_TEST_STRIPE_MOCK_URL is not set but the stripe-mock contract is required")
				}
				t.Skip("stripe-mock is not running: scripts/test.sh installs and starts it (PROVISIONER_TEST_STRIPE_MOCK_URL)")
			}
			return backend{url: url, subscription: "sub_contract123", customer: "cus_contract123"}
		},
	}
}

// TestStripeContract runs every call billing makes to Stripe against the fake and against
// stripe-mock, so the fake cannot drift from what Stripe accepts and answers.
func TestStripeContract(t *testing.T) {
	t.Parallel()
	const key = "sk_test_contract0123456789" // stripe-mock wants sk_test_ then letters and digits
	testlog.Secret(t, key)
	for name, setup := range contractBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			hc := &http.Client{}
			p := newStripe(Config{SecretKey: key, APIURL: b.url}, hc)
			ctx := context.Background()

			sub, err := p.fetch(ctx, b.subscription)
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if sub.ID != b.subscription || !sub.Status.Valid() || !strings.HasPrefix(sub.CustomerID, "cus_") ||
				len(sub.PriceIDs) == 0 || !strings.HasPrefix(sub.PriceIDs[0], "price_") || sub.CurrentPeriodEnd.IsZero() {
				t.Fatalf("fetched %+v", sub)
			}

			params := checkoutParams{ClientID: "client-contract", Email: "contract@example.com", Name: "Contract Test", Locale: "es",
				Plan: plans.Plan{ID: "starter", StripePriceID: "price_starter"}, SuccessURL: testPortal + "/checkout/success?session_id={CHECKOUT_SESSION_ID}",
				CancelURL: testPortal + "/checkout/cancel"}
			sess, err := p.checkout(ctx, params)
			if err != nil {
				t.Fatalf("checkout: %v", err)
			}
			if !strings.HasPrefix(sess.ID, "cs_") || !strings.HasPrefix(sess.URL, "https://") {
				t.Fatalf("checkout session = %+v", sess)
			}
			params.CustomerID = b.customer
			if _, err := p.checkout(ctx, params); err != nil {
				t.Fatalf("checkout for an existing customer: %v", err)
			}
			params.Locale = "xx"
			if _, err := p.checkout(ctx, params); !apperr.Is(err, apperr.Invalid) {
				t.Fatalf("checkout with a locale Stripe refuses: %v, want Invalid", err)
			}

			portal, err := p.portal(ctx, b.customer, testPortal)
			if err != nil || !strings.HasPrefix(portal.URL, "https://") {
				t.Fatalf("portal = %+v, %v", portal, err)
			}

			wrongKey := newStripe(Config{SecretKey: "sk_live_notakey", APIURL: b.url}, hc)
			if _, err := wrongKey.fetch(ctx, b.subscription); !apperr.Is(err, apperr.Unavailable) || !strings.Contains(apperr.Message(err), "API key") {
				t.Fatalf("a refused key: %v, want Unavailable naming the key", err)
			}

			if b.fake == nil {
				return // what follows needs state or failure knobs
			}
			if _, err := p.fetch(ctx, "sub_missing"); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("fetch of a missing subscription: %v", err)
			}
			b.fake.FailNext(1, 500)
			if _, err := p.fetch(ctx, b.subscription); !apperr.Is(err, apperr.Unavailable) {
				t.Fatalf("fetch during an outage: %v", err)
			}
			if _, err := p.portal(ctx, "cus_missing", testPortal); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("portal for a missing customer: %v", err)
			}
			if sub.Attribution.ClientID != "client-contract" {
				t.Fatalf("metadata not read: %+v", sub.Attribution)
			}
		})
	}
}
