package stripetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
)

// APIVersion is the API version of the events built here: the one stripe-go v76 pins.
const APIVersion = "2023-10-16"

// Event is a webhook event as Stripe would deliver it.
type Event struct {
	ID      string
	Type    string
	Created time.Time
	Payload []byte // the JSON body Stripe POSTs
}

// NewEvent builds an event of type typ about object, created at created, in the shape of
// API version 2023-10-16. previous, when not nil, is data.previous_attributes.
func NewEvent(typ string, created time.Time, object any, previous map[string]any) Event {
	id := NewID("evt")
	data := map[string]any{"object": object}
	if previous != nil {
		data["previous_attributes"] = previous
	}
	body, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": APIVersion, "created": created.Unix(),
		"data": data, "livemode": false, "pending_webhooks": 1,
		"request": map[string]any{"id": nil, "idempotency_key": nil}, "type": typ,
	})
	if err != nil {
		panic(err) // the objects here always marshal
	}
	return Event{ID: id, Type: typ, Created: created.Truncate(time.Second), Payload: body}
}

// Sign returns the Stripe-Signature header for payload signed with secret at t, computed
// by stripe-go's own test helper exactly as Stripe computes it.
func Sign(payload []byte, secret string, t time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: t}).Header
}

// Request returns the POST Stripe would make to url to deliver e, signed with secret now.
func (e Event) Request(url, secret string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(e.Payload))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set("Stripe-Signature", Sign(e.Payload, secret, time.Now()))
	return req
}

func (s *Server) event(typ string, object any, previous map[string]any) Event {
	return NewEvent(typ, s.now(), object, previous)
}

func (s *Server) addCustomer(email, name string) *Customer {
	c := &Customer{ID: NewID("cus"), Object: "customer", Email: email, Created: s.now().Unix(), Metadata: map[string]string{}}
	if name != "" {
		c.Name = &name
	}
	if s.customers == nil {
		s.customers = map[string]*Customer{}
	}
	s.customers[c.ID] = c
	return c
}

// AddCustomer creates a customer, as the Dashboard or an earlier checkout would have.
func (s *Server) AddCustomer(email string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addCustomer(email, "").ID
}

func (s *Server) addSubscription(customer string, items []LineItem, metadata map[string]string) *Subscription {
	now := s.now()
	sub := &Subscription{
		ID: NewID("sub"), Object: "subscription", Customer: customer, Status: "active",
		Created: now.Unix(), StartDate: now.Unix(), CurrentPeriodStart: now.Unix(),
		CurrentPeriodEnd: now.AddDate(0, 1, 0).Unix(), Metadata: cloneMap(metadata),
		Currency: "usd", CollectionMethod: "charge_automatically",
	}
	sub.Items = ItemList{Object: "list", URL: "/v1/subscription_items?subscription=" + sub.ID}
	for _, it := range items {
		sub.Items.Data = append(sub.Items.Data, s.item(sub.ID, it.Price, it.Quantity))
	}
	if s.subscriptions == nil {
		s.subscriptions = map[string]*Subscription{}
	}
	s.subscriptions[sub.ID] = sub
	return sub
}

func (s *Server) item(subID, price string, quantity int64) Item {
	return Item{ID: NewID("si"), Object: "subscription_item", Created: s.now().Unix(), Metadata: map[string]string{},
		Price: Price{ID: price, Object: "price", Active: true, Currency: "usd", Product: "prod_" + price,
			Recurring: Recurring{Interval: "month", IntervalCount: 1, UsageType: "licensed"}, Type: "recurring", UnitAmount: 1000},
		Quantity: quantity, Subscription: subID}
}

func (s *Server) invoice(sub *Subscription, paid bool, reason string) Invoice {
	id := NewID("in")
	sub.LatestInvoice = &id
	inv := Invoice{ID: id, Object: "invoice", Customer: sub.Customer, Subscription: &sub.ID, AmountDue: 1000,
		Currency: "usd", BillingReason: reason, PeriodStart: sub.CurrentPeriodStart, PeriodEnd: sub.CurrentPeriodEnd,
		Created: s.now().Unix(), Attempted: true, AttemptCount: 1}
	if c := s.customers[sub.Customer]; c != nil {
		inv.CustomerEmail = &c.Email
	}
	if paid {
		inv.Status, inv.Paid, inv.AmountPaid = "paid", true, inv.AmountDue
	} else {
		inv.Status = "open"
	}
	return inv
}

// CreateSubscription creates an active subscription outside Checkout (as the Dashboard
// would), and returns it with the events Stripe sends for it.
func (s *Server) CreateSubscription(customer, price string, metadata map[string]string) (Subscription, []Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.customers[customer] == nil {
		return Subscription{}, nil, fmt.Errorf("stripetest: no customer %s", customer)
	}
	sub := s.addSubscription(customer, []LineItem{{Price: price, Quantity: 1}}, metadata)
	inv := s.invoice(sub, true, "subscription_create")
	return sub.clone(), []Event{
		s.event("customer.subscription.created", sub.clone(), nil),
		s.event("invoice.paid", inv, nil),
	}, nil
}

// CompleteCheckout pays an open subscription-mode checkout session as a customer would:
// it creates the customer (unless the session named one), an active subscription with
// the session's subscription_data[metadata], and its paid first invoice. It returns the
// events Stripe sends: customer.created (for a new customer),
// customer.subscription.created, invoice.paid and checkout.session.completed.
func (s *Server) CompleteCheckout(sessionID string) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs, ok := s.sessions[sessionID]
	switch {
	case !ok:
		return nil, fmt.Errorf("stripetest: no checkout session %s", sessionID)
	case cs.Status != "open":
		return nil, fmt.Errorf("stripetest: checkout session %s is %s", sessionID, cs.Status)
	case cs.Mode != "subscription":
		return nil, fmt.Errorf("stripetest: checkout session %s is in %s mode", sessionID, cs.Mode)
	}
	var events []Event
	var customer *Customer
	if cs.Customer != nil {
		customer = s.customers[*cs.Customer]
	} else {
		email := "customer@example.com"
		if cs.CustomerEmail != nil {
			email = *cs.CustomerEmail
		}
		customer = s.addCustomer(email, "Test Customer")
		events = append(events, s.event("customer.created", *customer, nil))
	}
	sub := s.addSubscription(customer.ID, cs.LineItems, cs.SubscriptionMetadata)
	inv := s.invoice(sub, true, "subscription_create")
	cs.Status, cs.PaymentStatus, cs.URL = "complete", "paid", nil
	cs.Customer, cs.Subscription, cs.Invoice = &customer.ID, &sub.ID, &inv.ID
	email := customer.Email
	cs.CustomerDetails = &CustomerDetails{Email: &email, Name: customer.Name}
	events = append(events,
		s.event("customer.subscription.created", sub.clone(), nil),
		s.event("invoice.paid", inv, nil),
		s.event("checkout.session.completed", *cs, nil))
	return events, nil
}

// Update changes a subscription with fn and returns customer.subscription.updated, with
// the previous values of what changed among status, items and metadata.
func (s *Server) Update(id string, fn func(*Subscription)) (Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.update(id, fn)
}

func (s *Server) update(id string, fn func(*Subscription)) (Event, error) {
	sub, ok := s.subscriptions[id]
	if !ok {
		return Event{}, fmt.Errorf("stripetest: no subscription %s", id)
	}
	before := sub.clone()
	fn(sub)
	prev := map[string]any{}
	if before.Status != sub.Status {
		prev["status"] = before.Status
	}
	if b, _ := json.Marshal(before.Items); !bytes.Equal(b, mustJSON(sub.Items)) {
		prev["items"] = before.Items
	}
	if b, _ := json.Marshal(before.Metadata); !bytes.Equal(b, mustJSON(sub.Metadata)) {
		prev["metadata"] = before.Metadata
	}
	return s.event("customer.subscription.updated", sub.clone(), prev), nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// ChangePrice moves the subscription to another price (a plan change in the portal).
func (s *Server) ChangePrice(id, price string) (Event, error) {
	return s.Update(id, func(sub *Subscription) {
		sub.Items.Data = []Item{s.item(sub.ID, price, 1)}
	})
}

// PaymentFailed makes the subscription's renewal fail: it becomes past_due, and Stripe
// sends invoice.payment_failed and customer.subscription.updated.
func (s *Server) PaymentFailed(id string) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subscriptions[id]
	if !ok {
		return nil, fmt.Errorf("stripetest: no subscription %s", id)
	}
	inv := s.invoice(sub, false, "subscription_cycle")
	updated, err := s.update(id, func(sub *Subscription) { sub.Status = "past_due" })
	return []Event{s.event("invoice.payment_failed", inv, nil), updated}, err
}

// PaymentSucceeded pays the subscription's open invoice: it becomes active for a new
// period, and Stripe sends invoice.paid and customer.subscription.updated.
func (s *Server) PaymentSucceeded(id string) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subscriptions[id]
	if !ok {
		return nil, fmt.Errorf("stripetest: no subscription %s", id)
	}
	inv := s.invoice(sub, true, "subscription_cycle")
	updated, err := s.update(id, func(sub *Subscription) {
		sub.Status = "active"
		sub.CurrentPeriodStart = s.now().Unix()
		sub.CurrentPeriodEnd = s.now().AddDate(0, 1, 0).Unix()
	})
	return []Event{s.event("invoice.paid", inv, nil), updated}, err
}

// Cancel ends the subscription now and returns customer.subscription.deleted. The
// subscription stays readable, canceled, as in Stripe.
func (s *Server) Cancel(id string) (Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subscriptions[id]
	if !ok {
		return Event{}, fmt.Errorf("stripetest: no subscription %s", id)
	}
	now := s.now().Unix()
	sub.Status, sub.CanceledAt, sub.EndedAt = "canceled", &now, &now
	return s.event("customer.subscription.deleted", sub.clone(), nil), nil
}
