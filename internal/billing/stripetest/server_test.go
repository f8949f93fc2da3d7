package stripetest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
)

const key = "sk_test_fake_0123456789"

type call struct {
	status int
	body   map[string]any
}

func do(t *testing.T, h http.Handler, method, path, auth string, form url.Values) call {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: body is not JSON: %s", method, path, rec.Body)
	}
	if rec.Header().Get("Request-Id") == "" {
		t.Errorf("%s %s: no Request-Id header", method, path)
	}
	return call{rec.Code, out}
}

func (c call) errorField(t *testing.T, field string) string {
	t.Helper()
	e, ok := c.body["error"].(map[string]any)
	if !ok {
		t.Fatalf("not an error envelope: %v", c.body)
	}
	s, _ := e[field].(string)
	return s
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	var s stripetest.Server // the zero value serves
	tests := []struct {
		auth string
		want int
	}{
		{"", 401},
		{"Bearer ", 401},
		{"Bearer sk_live_real", 401},
		{"Bearer pk_test_publishable", 401},
		{"Bearer " + key, 404},
		{"Basic c2tfdGVzdF9hYmM6", 404}, // sk_test_abc: with an empty password, as curl -u sends it
	}
	for _, tt := range tests {
		c := do(t, &s, "GET", "/v1/subscriptions/sub_nope", tt.auth, nil)
		if c.status != tt.want {
			t.Errorf("auth %q: %d, want %d", tt.auth, c.status, tt.want)
		}
		if c.errorField(t, "type") != "invalid_request_error" {
			t.Errorf("auth %q: error type %q", tt.auth, c.errorField(t, "type"))
		}
	}
	strict := stripetest.Server{Key: key}
	if c := do(t, &strict, "GET", "/v1/subscriptions/sub_x", "Bearer sk_test_other", nil); c.status != 401 ||
		strings.Contains(c.errorField(t, "message"), "sk_test_other") {
		t.Errorf("another key = %d %v (the key must be masked)", c.status, c.body)
	}
}

func TestCheckoutValidationAndCompletion(t *testing.T) {
	t.Parallel()
	s := &stripetest.Server{}
	s.SetPrices("price_pro")
	good := url.Values{
		"mode": {"subscription"}, "success_url": {"https://portal.example.com/ok"}, "cancel_url": {"https://portal.example.com/no"},
		"line_items[0][price]": {"price_pro"}, "line_items[0][quantity]": {"1"}, "client_reference_id": {"client-1"},
		"customer_email": {"ada@example.com"}, "metadata[client_id]": {"client-1"},
		"subscription_data[metadata][client_id]": {"client-1"}, "subscription_data[metadata][email]": {"ada@example.com"},
		"locale": {"es"},
	}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for kk, vv := range good {
			f[kk] = vv
		}
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	bad := []struct {
		name  string
		form  url.Values
		param string
	}{
		{"no mode", with("mode", ""), "mode"},
		{"no success url", with("success_url", ""), "success_url"},
		{"unknown price", with("line_items[0][price]", "price_gone"), "line_items[0][price]"},
		{"no line items", with("line_items[0][price]", ""), "line_items"},
		{"customer and email", with("customer", "cus_x"), "customer_email"},
		{"bad locale", with("locale", "xx"), "locale"},
		{"long metadata", with("metadata[client_id]", strings.Repeat("a", 501)), "metadata[client_id]"},
	}
	for _, b := range bad {
		c := do(t, s, "POST", "/v1/checkout/sessions", "Bearer "+key, b.form)
		if c.status != 400 || c.errorField(t, "param") != b.param {
			t.Errorf("%s: %d %v, want 400 on %s", b.name, c.status, c.body, b.param)
		}
	}
	c := do(t, s, "POST", "/v1/checkout/sessions", "Bearer "+key, good)
	if c.status != 200 || c.body["object"] != "checkout.session" || !strings.HasPrefix(c.body["url"].(string), "https://checkout.stripe.com/") {
		t.Fatalf("checkout = %d %v", c.status, c.body)
	}
	id := c.body["id"].(string)
	cs, ok := s.CheckoutSession(id)
	if !ok || cs.SubscriptionMetadata["email"] != "ada@example.com" || *cs.ClientReferenceID != "client-1" || cs.LineItems[0].Price != "price_pro" {
		t.Fatalf("stored session = %+v", cs)
	}

	events, err := s.CompleteCheckout(id)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, ","); got != "customer.created,customer.subscription.created,invoice.paid,checkout.session.completed" {
		t.Fatalf("events = %s", got)
	}
	if _, err := s.CompleteCheckout(id); err == nil {
		t.Fatal("a session completed twice")
	}
	// The completed session names its subscription, which carries the checkout's metadata.
	var completed stripe.Event
	if err := json.Unmarshal(events[3].Payload, &completed); err != nil {
		t.Fatal(err)
	}
	subID := completed.Data.Object["subscription"].(string)
	c = do(t, s, "GET", "/v1/subscriptions/"+subID, "Bearer "+key, nil)
	meta := c.body["metadata"].(map[string]any)
	items := c.body["items"].(map[string]any)["data"].([]any)
	price := items[0].(map[string]any)["price"].(map[string]any)["id"]
	if c.status != 200 || c.body["status"] != "active" || meta["client_id"] != "client-1" || price != "price_pro" {
		t.Fatalf("subscription = %d %v", c.status, c.body)
	}
	customer := c.body["customer"].(string)

	c = do(t, s, "POST", "/v1/billing_portal/sessions", "Bearer "+key, url.Values{"customer": {customer}, "return_url": {"https://portal.example.com"}})
	if c.status != 200 || !strings.HasPrefix(c.body["url"].(string), "https://billing.stripe.com/") || len(s.PortalSessions()) != 1 {
		t.Fatalf("portal = %d %v", c.status, c.body)
	}
	for _, form := range []url.Values{{}, {"customer": {"cus_nobody"}}} {
		if c := do(t, s, "POST", "/v1/billing_portal/sessions", "Bearer "+key, form); c.status != 400 || c.errorField(t, "param") != "customer" {
			t.Errorf("portal %v = %d %v", form, c.status, c.body)
		}
	}
}

func TestStateChangesAndFailures(t *testing.T) {
	t.Parallel()
	clock := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	s := &stripetest.Server{Now: func() time.Time { return clock }}
	sub, events, err := s.CreateSubscription(s.AddCustomer("bob@example.com"), "price_a", nil)
	if err != nil || len(events) != 2 || sub.Status != "active" {
		t.Fatalf("create = %+v %v %v", sub, events, err)
	}
	clock = clock.Add(time.Hour)
	failed, err := s.PaymentFailed(sub.ID)
	if err != nil || failed[0].Type != "invoice.payment_failed" || failed[1].Type != "customer.subscription.updated" {
		t.Fatalf("payment failed = %v %v", failed, err)
	}
	var updated stripe.Event
	json.Unmarshal(failed[1].Payload, &updated)
	if updated.Data.PreviousAttributes["status"] != "active" || updated.Data.Object["status"] != "past_due" ||
		updated.Created != clock.Unix() || updated.APIVersion != stripetest.APIVersion {
		t.Fatalf("updated event = %+v", updated)
	}
	if e, _ := s.ChangePrice(sub.ID, "price_b"); !strings.Contains(string(e.Payload), `"previous_attributes":{"items"`) {
		t.Fatalf("price change event = %s", e.Payload)
	}
	deleted, err := s.Cancel(sub.ID)
	if err != nil || deleted.Type != "customer.subscription.deleted" {
		t.Fatal(err)
	}
	got, _ := s.Subscription(sub.ID)
	if got.Status != "canceled" || *got.EndedAt != clock.Unix() || got.Items.Data[0].Price.ID != "price_b" {
		t.Fatalf("after cancel = %+v", got)
	}

	s.FailNext(1, 500)
	s.FailNext(1, 429)
	for _, want := range []struct {
		status int
		typ    string
	}{{500, "api_error"}, {429, "invalid_request_error"}, {200, ""}} {
		c := do(t, s, "GET", "/v1/subscriptions/"+sub.ID, "Bearer "+key, nil)
		if c.status != want.status || (want.typ != "" && c.errorField(t, "type") != want.typ) {
			t.Errorf("after FailNext: %d %v, want %d", c.status, c.body, want.status)
		}
	}
	if c := do(t, s, "GET", "/v1/subscriptions/sub_missing", "Bearer "+key, nil); c.status != 404 || c.errorField(t, "code") != "resource_missing" {
		t.Errorf("missing subscription = %d %v", c.status, c.body)
	}
	if c := do(t, s, "DELETE", "/v1/customers/x", "Bearer "+key, nil); c.status != 404 {
		t.Errorf("unknown route = %d", c.status)
	}
	if n := len(s.Requests()); n != 5 {
		t.Errorf("requests = %d, want 5", n)
	}
}

// The signature helper must produce what stripe-go's verifier accepts, and only with the
// secret it was signed with.
func TestSign(t *testing.T) {
	t.Parallel()
	e := stripetest.NewEvent("invoice.paid", time.Now(), map[string]any{"id": "in_1", "object": "invoice"}, nil)
	header := stripetest.Sign(e.Payload, "whsec_test_secret", time.Now())
	ev, err := webhook.ConstructEvent(e.Payload, header, "whsec_test_secret")
	if err != nil || ev.ID != e.ID || string(ev.Type) != "invoice.paid" {
		t.Fatalf("ConstructEvent = %+v, %v", ev, err)
	}
	if _, err := webhook.ConstructEvent(e.Payload, header, "whsec_other"); err == nil {
		t.Fatal("verified with another secret")
	}
	req := e.Request("http://example.com/webhooks", "whsec_test_secret")
	if _, err := webhook.ConstructEvent(e.Payload, req.Header.Get("Stripe-Signature"), "whsec_test_secret"); err != nil {
		t.Fatal(err)
	}
}
