package billing

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
)

func TestStripeVerify(t *testing.T) {
	t.Parallel()
	const old, current = "whsec_verify_old_0123456789", "whsec_verify_new_0123456789"
	p := newStripe(Config{WebhookSecrets: []string{old, current}, APIURL: "http://127.0.0.1:1"}, &http.Client{})
	ev := stripetest.NewEvent("invoice.paid", time.Now(), map[string]any{"id": "in_1", "object": "invoice"}, nil)
	otherVersion := []byte(strings.Replace(string(ev.Payload), stripetest.APIVersion, "2020-08-27", 1))
	now := time.Now()
	hdr := func(v string) http.Header { return http.Header{"Stripe-Signature": {v}} }
	tests := []struct {
		name    string
		payload []byte
		header  http.Header
		reason  string // "" accepted
	}{
		{"current secret", ev.Payload, hdr(stripetest.Sign(ev.Payload, current, now)), ""},
		{"old secret while rolling", ev.Payload, hdr(stripetest.Sign(ev.Payload, old, now)), ""},
		{"another API version", otherVersion, hdr(stripetest.Sign(otherVersion, current, now)), ""},
		{"both signatures, as Stripe sends while it rolls", ev.Payload,
			hdr(stripetest.Sign(ev.Payload, "whsec_unknown_0123456789", now) + ",v1=" + strings.Split(stripetest.Sign(ev.Payload, current, now), "v1=")[1]), ""},
		{"wrong secret", ev.Payload, hdr(stripetest.Sign(ev.Payload, "whsec_attacker_0123456789", now)), "bad_signature"},
		{"forged body", []byte(strings.Replace(string(ev.Payload), "in_1", "in_2", 1)), hdr(stripetest.Sign(ev.Payload, current, now)), "bad_signature"},
		{"stale", ev.Payload, hdr(stripetest.Sign(ev.Payload, current, now.Add(-6*time.Minute))), "stale"},
		{"unsigned", ev.Payload, http.Header{}, "unsigned"},
		{"garbage header", ev.Payload, hdr("t=abc,v1=zz"), "malformed"},
		{"not json", []byte("hello"), hdr(stripetest.Sign([]byte("hello"), current, now)), "malformed"},
		{"no id", []byte(`{"type":"invoice.paid","created":1}`), hdr(stripetest.Sign([]byte(`{"type":"invoice.paid","created":1}`), current, now)), "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in, err := p.verify(tt.payload, tt.header, nil)
			if tt.reason == "" {
				if err != nil || in.ID != ev.ID || in.Type != "invoice.paid" || in.Created.Unix() != ev.Created.Unix() {
					t.Fatalf("verify = %+v, %v", in, err)
				}
				return
			}
			rej, ok := err.(*rejection)
			if !ok || rej.Reason != tt.reason {
				t.Fatalf("verify err = %v, want rejection %s", err, tt.reason)
			}
		})
	}
}

func TestStripeInterpret(t *testing.T) {
	t.Parallel()
	p := &stripeProvider{}
	at := time.Now()
	ev := func(typ string, obj map[string]any) (string, []byte) {
		return typ, stripetest.NewEvent(typ, at, obj, nil).Payload
	}
	tests := []struct {
		name     string
		typ      string
		payload  []byte
		relevant bool
		sub      string
		who      attribution
	}{
		{name: "checkout", relevant: true, sub: "sub_1", who: attribution{ClientID: "c1", Email: "ada@example.com", Name: "Ada", Locale: "es"}},
		{name: "checkout with client id only in metadata", relevant: true, sub: "sub_1", who: attribution{ClientID: "c2", Email: "x@example.com"}},
		{name: "checkout in payment mode"},
		{name: "subscription updated", relevant: true, sub: "sub_9"},
		{name: "invoice paid", relevant: true, sub: "sub_3"},
		{name: "invoice with expanded subscription", relevant: true, sub: "sub_4"},
		{name: "one-off invoice"},
		{name: "other type"},
	}
	tests[0].typ, tests[0].payload = ev("checkout.session.completed", map[string]any{"id": "cs_1", "object": "checkout.session", "mode": "subscription",
		"subscription": "sub_1", "client_reference_id": "c1", "metadata": map[string]string{"client_id": "other", "locale": "es"},
		"customer_details": map[string]any{"email": "ada@example.com", "name": "Ada"}, "customer_email": nil})
	tests[1].typ, tests[1].payload = ev("checkout.session.completed", map[string]any{"mode": "subscription", "subscription": "sub_1",
		"client_reference_id": nil, "metadata": map[string]string{"client_id": "c2"}, "customer_details": nil, "customer_email": "x@example.com"})
	tests[2].typ, tests[2].payload = ev("checkout.session.completed", map[string]any{"mode": "payment", "subscription": nil})
	tests[3].typ, tests[3].payload = ev("customer.subscription.updated", map[string]any{"id": "sub_9", "object": "subscription"})
	tests[4].typ, tests[4].payload = ev("invoice.paid", map[string]any{"id": "in_1", "subscription": "sub_3"})
	tests[5].typ, tests[5].payload = ev("invoice.payment_failed", map[string]any{"id": "in_1", "subscription": map[string]any{"id": "sub_4"}})
	tests[6].typ, tests[6].payload = ev("invoice.paid", map[string]any{"id": "in_1", "subscription": nil})
	tests[7].typ, tests[7].payload = ev("customer.created", map[string]any{"id": "cus_1"})
	for _, tt := range tests {
		it, err := p.interpret(context.Background(), tt.typ, tt.payload)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if it.Relevant != tt.relevant || it.SubscriptionID != tt.sub || it.Attribution != tt.who || (!it.Relevant && it.Why == "") {
			t.Errorf("%s: %+v, want relevant=%t sub=%s who=%+v", tt.name, it, tt.relevant, tt.sub, tt.who)
		}
	}
	if _, err := p.interpret(context.Background(), "customer.subscription.deleted", []byte(`{"data":{"object":{"id":""}}}`)); err == nil {
		t.Error("an event without its subscription id was accepted")
	}
}
