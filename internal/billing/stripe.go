package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	portalsession "github.com/stripe/stripe-go/v76/billingportal/session"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	stripesubscription "github.com/stripe/stripe-go/v76/subscription"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// ProviderStripe is Stripe's name in the inbox, on subscriptions and in webhook paths.
const ProviderStripe = plans.Stripe

// WebhookTolerance is how old a signed delivery may be: Stripe's own default, enough for
// clock skew and Stripe's retries (each retry is signed anew), short against replays.
const WebhookTolerance = 5 * time.Minute

// stripeProvider speaks to Stripe with stripe-go v76, which pins API version 2023-10-16.
// Events of other API versions are accepted: only a few fields of the event are read
// (the equivalent of ConstructEventWithOptions with IgnoreAPIVersionMismatch), and the
// subscription itself is re-read through the pinned version.
type stripeProvider struct {
	secrets       []string
	subscriptions stripesubscription.Client
	checkouts     checkoutsession.Client
	portals       portalsession.Client
}

func newStripe(cfg Config, hc *http.Client) *stripeProvider {
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:        stripe.String(cfg.APIURL),
		HTTPClient: hc,
		// The job queue retries with backoff; a retry inside a request would only hold
		// the portal's request or the worker longer.
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		EnableTelemetry:   stripe.Bool(false),
	})
	return &stripeProvider{
		secrets:       cfg.WebhookSecrets,
		subscriptions: stripesubscription.Client{B: backend, Key: cfg.SecretKey},
		checkouts:     checkoutsession.Client{B: backend, Key: cfg.SecretKey},
		portals:       portalsession.Client{B: backend, Key: cfg.SecretKey},
	}
}

func (*stripeProvider) name() string { return ProviderStripe }

func (p *stripeProvider) verify(payload []byte, header http.Header, _ url.Values) (inbound, error) {
	sig := header.Get("Stripe-Signature")
	if sig == "" {
		return inbound{}, &rejection{"unsigned", "the Stripe-Signature header is missing"}
	}
	// stripe-go's own check (HMAC-SHA256 of "t.payload", constant-time compare, the
	// timestamp within tolerance), once per secret. It is what ConstructEvent does before
	// decoding the whole event into maps; here only id, type and created are decoded, a
	// quarter of the cost, and whatever the event's API version.
	matched := false
	for _, secret := range p.secrets {
		err := webhook.ValidatePayloadWithTolerance(payload, sig, secret, WebhookTolerance)
		switch {
		case err == nil:
			matched = true
		case errors.Is(err, webhook.ErrNoValidSignature):
			continue // maybe signed with another of the secrets being rolled
		case errors.Is(err, webhook.ErrTooOld):
			return inbound{}, &rejection{"stale", "the signature's timestamp is more than 5 minutes old"}
		default: // ErrInvalidHeader, or an unparsable header
			return inbound{}, &rejection{"malformed", "the Stripe-Signature header is malformed"}
		}
		break
	}
	if !matched {
		return inbound{}, &rejection{"bad_signature", "no valid signature for this endpoint's secret"}
	}
	var ev struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Created int64  `json:"created"`
	}
	if err := json.Unmarshal(payload, &ev); err != nil {
		return inbound{}, &rejection{"malformed", "the payload is not a JSON Stripe event"}
	}
	if !strings.HasPrefix(ev.ID, "evt_") || len(ev.ID) > 255 || ev.Type == "" || len(ev.Type) > 255 || ev.Created <= 0 {
		return inbound{}, &rejection{"malformed", "the event lacks a valid id, type or created time"}
	}
	return inbound{ID: ev.ID, Type: ev.Type, Created: time.Unix(ev.Created, 0).UTC()}, nil
}

// stripeEvent is the part of an event (any API version) processing reads.
type stripeEvent struct {
	Data struct {
		Object struct {
			ID                string            `json:"id"`
			Mode              string            `json:"mode"`
			Subscription      json.RawMessage   `json:"subscription"`
			ClientReferenceID string            `json:"client_reference_id"`
			Metadata          map[string]string `json:"metadata"`
			CustomerEmail     string            `json:"customer_email"`
			CustomerDetails   *struct {
				Email string `json:"email"`
				Name  string `json:"name"`
			} `json:"customer_details"`
		} `json:"object"`
	} `json:"data"`
}

// idOf reads an expandable field: a string id, or an object with an id, or null.
func idOf(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ""
	}
	var id string
	if json.Unmarshal(raw, &id) == nil {
		return id
	}
	var obj struct {
		ID string `json:"id"`
	}
	json.Unmarshal(raw, &obj)
	return obj.ID
}

func (p *stripeProvider) interpret(_ context.Context, eventType string, payload []byte) (interpretation, error) {
	var ev stripeEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return interpretation{}, apperr.Wrap(apperr.Invalid, err, "the stored payload is not a Stripe event")
	}
	obj := ev.Data.Object
	meta := func(k string) string { return strings.TrimSpace(obj.Metadata[k]) }
	var it interpretation
	switch eventType {
	case "checkout.session.completed":
		if obj.Mode != "subscription" {
			return interpretation{Why: fmt.Sprintf("a checkout in %s mode buys no subscription", obj.Mode)}, nil
		}
		it.SubscriptionID = idOf(obj.Subscription)
		it.Attribution = attribution{ClientID: strings.TrimSpace(obj.ClientReferenceID), Email: meta("email"), Name: meta("name"), Locale: meta("locale")}
		if it.Attribution.ClientID == "" {
			it.Attribution.ClientID = meta("client_id")
		}
		if d := obj.CustomerDetails; d != nil {
			it.Attribution.Email = firstOf(d.Email, it.Attribution.Email)
			it.Attribution.Name = firstOf(d.Name, it.Attribution.Name)
		}
		it.Attribution.Email = firstOf(it.Attribution.Email, obj.CustomerEmail)
	case "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted":
		it.SubscriptionID = obj.ID
	case "invoice.paid", "invoice.payment_failed":
		it.SubscriptionID = idOf(obj.Subscription)
		if it.SubscriptionID == "" {
			return interpretation{Why: "the invoice is not for a subscription"}, nil
		}
	default:
		return interpretation{Why: "billing does not act on " + eventType + " events"}, nil
	}
	if !strings.HasPrefix(it.SubscriptionID, "sub_") {
		return interpretation{}, apperr.New(apperr.Invalid, "the %s event names no subscription", eventType)
	}
	it.Relevant = true
	return it, nil
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

func (p *stripeProvider) fetch(ctx context.Context, id string) (remoteSubscription, error) {
	params := &stripe.SubscriptionParams{}
	params.Context = ctx
	sub, err := p.subscriptions.Get(id, params)
	if err != nil {
		return remoteSubscription{}, stripeError(err, "reading subscription "+id)
	}
	r := remoteSubscription{ID: sub.ID, Status: Status(sub.Status)}
	if sub.Customer != nil {
		r.CustomerID = sub.Customer.ID
	}
	if sub.Status == stripe.SubscriptionStatusPaused {
		// A trial that ended without a payment method: no payment, so no service. Our
		// statuses are the ones instances act on; unpaid means exactly "suspend".
		r.Status = Unpaid
	}
	if !r.Status.Valid() {
		return remoteSubscription{}, apperr.New(apperr.Invalid, "subscription %s has status %q, which billing does not know", id, sub.Status)
	}
	if sub.Items != nil {
		for _, item := range sub.Items.Data {
			if item != nil && item.Price != nil {
				r.PriceIDs = append(r.PriceIDs, item.Price.ID)
			}
		}
	}
	if sub.CurrentPeriodEnd > 0 {
		r.CurrentPeriodEnd = time.Unix(sub.CurrentPeriodEnd, 0).UTC()
	}
	if r.Status == Canceled {
		ended := sub.EndedAt
		if ended == 0 {
			ended = sub.CanceledAt
		}
		if ended > 0 {
			t := time.Unix(ended, 0).UTC()
			r.EndedAt = &t
		}
	}
	r.PlanID = strings.TrimSpace(sub.Metadata["plan"])
	r.Attribution = attribution{ClientID: strings.TrimSpace(sub.Metadata["client_id"]), Email: strings.TrimSpace(sub.Metadata["email"]),
		Name: strings.TrimSpace(sub.Metadata["name"]), Locale: strings.TrimSpace(sub.Metadata["locale"])}
	return r, nil
}

func (p *stripeProvider) checkout(ctx context.Context, req checkoutParams) (Session, error) {
	// The client travels three ways: client_reference_id (what Stripe documents for
	// this), the session's metadata, and the subscription's metadata. The last one is
	// what makes any subscription event attributable on its own, even one that arrives
	// before checkout.session.completed, because processing re-reads the subscription.
	meta := map[string]string{"client_id": req.ClientID, "email": req.Email, "plan": req.Plan.ID}
	if req.Name != "" {
		meta["name"] = req.Name
	}
	if req.Locale != "" {
		meta["locale"] = req.Locale
	}
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		LineItems:         []*stripe.CheckoutSessionLineItemParams{{Price: stripe.String(req.Plan.StripePriceID), Quantity: stripe.Int64(1)}},
		SuccessURL:        stripe.String(req.SuccessURL),
		CancelURL:         stripe.String(req.CancelURL),
		ClientReferenceID: stripe.String(req.ClientID),
		SubscriptionData:  &stripe.CheckoutSessionSubscriptionDataParams{Metadata: meta},
	}
	for k, v := range meta {
		params.AddMetadata(k, v)
	}
	if req.CustomerID != "" {
		params.Customer = stripe.String(req.CustomerID) // a returning customer keeps one customer
	} else {
		params.CustomerEmail = stripe.String(req.Email)
	}
	if req.Locale != "" {
		params.Locale = stripe.String(req.Locale)
	}
	params.Context = ctx
	s, err := p.checkouts.New(params)
	if err != nil {
		return Session{}, stripeError(err, "creating a checkout session")
	}
	if s.URL == "" {
		return Session{}, apperr.New(apperr.Unavailable, "Stripe returned a checkout session without a URL")
	}
	return Session{ID: s.ID, URL: s.URL}, nil
}

func (p *stripeProvider) portal(ctx context.Context, customerID, returnURL string) (Session, error) {
	params := &stripe.BillingPortalSessionParams{Customer: stripe.String(customerID), ReturnURL: stripe.String(returnURL)}
	params.Context = ctx
	s, err := p.portals.New(params)
	if err != nil {
		return Session{}, stripeError(err, "creating a billing portal session")
	}
	return Session{URL: s.URL}, nil
}

// stripeError turns a Stripe API failure into a domain error: the kind says whether a
// retry can help; Stripe's own message stays in the cause, for the operator's log.
func stripeError(err error, doing string) error {
	var se *stripe.Error
	if !errors.As(err, &se) {
		return apperr.Wrap(apperr.Unavailable, err, "Stripe is unreachable (%s)", doing)
	}
	switch status := se.HTTPStatusCode; {
	case status == http.StatusNotFound || se.Code == stripe.ErrorCodeResourceMissing:
		return apperr.Wrap(apperr.NotFound, err, "Stripe does not know the object (%s): %s", doing, se.Msg)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return apperr.Wrap(apperr.Unavailable, err, "Stripe refused the API key (%s): check PROVISIONER_STRIPE_SECRET_KEY", doing)
	case status == http.StatusTooManyRequests || status >= 500 || status == 0:
		return apperr.Wrap(apperr.Unavailable, err, "Stripe is unavailable (%s, HTTP %d)", doing, status)
	default:
		return apperr.Wrap(apperr.Invalid, err, "Stripe refused the request (%s): %s", doing, se.Msg)
	}
}
