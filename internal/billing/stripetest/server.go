// Package stripetest is an in-process, stateful fake of the part of Stripe's API that
// billing calls, and a builder of webhook events signed exactly as Stripe signs them.
//
// stripe-mock answers every request from fixed fixtures, so it cannot tell billing that a
// subscription changed; this fake keeps customers, subscriptions and checkout sessions,
// changes them the way Stripe does when a customer pays, fails to pay or cancels, and
// returns the events Stripe would send (API version 2023-10-16 shapes). One contract
// suite (billing's contract_test.go) runs against this fake and against stripe-mock.
//
// Covered, form-encoded like Stripe, answering Stripe's JSON and error envelope
// {"error":{"type","code","message","param"}}:
//
//	GET  /v1/subscriptions/{id}
//	POST /v1/checkout/sessions         (mode, line_items, success_url, cancel_url,
//	                                    client_reference_id, customer | customer_email,
//	                                    metadata, subscription_data[metadata], locale)
//	POST /v1/billing_portal/sessions   (customer, return_url)
//
// Requests need `Authorization: Bearer sk_test_...` (or Stripe's Basic form); with Key set,
// only that key. Knobs: FailNext (5xx or 429), SetPrices, the state changes below.
// Inspection: Subscription, CheckoutSession, PortalSessions, Requests.
// The zero value is ready to use as an http.Handler.
package stripetest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is the fake Stripe API.
type Server struct {
	// Key, when set, is the only API key accepted; otherwise any test-mode secret key is.
	Key string
	// Now is the fake's clock for objects' and events' timestamps (default time.Now).
	Now func() time.Time

	mu            sync.Mutex
	prices        map[string]bool
	customers     map[string]*Customer
	subscriptions map[string]*Subscription
	sessions      map[string]*CheckoutSession
	portals       []PortalSession
	failures      []int // statuses of the next requests to fail, in order
	requests      []string
}

// Customer is a Stripe customer (the fields billing's flows touch).
type Customer struct {
	ID       string            `json:"id"`
	Object   string            `json:"object"`
	Email    string            `json:"email"`
	Name     *string           `json:"name"`
	Created  int64             `json:"created"`
	Metadata map[string]string `json:"metadata"`
	Livemode bool              `json:"livemode"`
}

// Subscription is a Stripe subscription of API version 2023-10-16 (where
// current_period_end is still on the subscription, not its items).
type Subscription struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	Customer           string            `json:"customer"`
	Status             string            `json:"status"`
	Created            int64             `json:"created"`
	StartDate          int64             `json:"start_date"`
	CurrentPeriodStart int64             `json:"current_period_start"`
	CurrentPeriodEnd   int64             `json:"current_period_end"`
	CancelAtPeriodEnd  bool              `json:"cancel_at_period_end"`
	CanceledAt         *int64            `json:"canceled_at"`
	EndedAt            *int64            `json:"ended_at"`
	Metadata           map[string]string `json:"metadata"`
	Items              ItemList          `json:"items"`
	LatestInvoice      *string           `json:"latest_invoice"`
	Currency           string            `json:"currency"`
	CollectionMethod   string            `json:"collection_method"`
	Livemode           bool              `json:"livemode"`
}

// ItemList is a subscription's list of items.
type ItemList struct {
	Object  string `json:"object"`
	Data    []Item `json:"data"`
	HasMore bool   `json:"has_more"`
	URL     string `json:"url"`
}

// Item is a subscription item.
type Item struct {
	ID           string            `json:"id"`
	Object       string            `json:"object"`
	Created      int64             `json:"created"`
	Metadata     map[string]string `json:"metadata"`
	Price        Price             `json:"price"`
	Quantity     int64             `json:"quantity"`
	Subscription string            `json:"subscription"`
}

// Price is a recurring monthly price.
type Price struct {
	ID         string    `json:"id"`
	Object     string    `json:"object"`
	Active     bool      `json:"active"`
	Currency   string    `json:"currency"`
	Product    string    `json:"product"`
	Recurring  Recurring `json:"recurring"`
	Type       string    `json:"type"`
	UnitAmount int64     `json:"unit_amount"`
	Livemode   bool      `json:"livemode"`
}

// Recurring is a price's billing interval.
type Recurring struct {
	Interval      string `json:"interval"`
	IntervalCount int64  `json:"interval_count"`
	UsageType     string `json:"usage_type"`
}

// CheckoutSession is a Stripe Checkout session.
type CheckoutSession struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Mode              string            `json:"mode"`
	Status            string            `json:"status"`
	PaymentStatus     string            `json:"payment_status"`
	URL               *string           `json:"url"`
	SuccessURL        string            `json:"success_url"`
	CancelURL         *string           `json:"cancel_url"`
	ClientReferenceID *string           `json:"client_reference_id"`
	Customer          *string           `json:"customer"`
	CustomerEmail     *string           `json:"customer_email"`
	CustomerDetails   *CustomerDetails  `json:"customer_details"`
	Metadata          map[string]string `json:"metadata"`
	Subscription      *string           `json:"subscription"`
	Invoice           *string           `json:"invoice"`
	Locale            *string           `json:"locale"`
	Created           int64             `json:"created"`
	ExpiresAt         int64             `json:"expires_at"`
	Livemode          bool              `json:"livemode"`

	// What the request asked for that Stripe does not echo on the session.
	LineItems            []LineItem        `json:"-"`
	SubscriptionMetadata map[string]string `json:"-"`
}

// LineItem is one line_items[] entry of a checkout request.
type LineItem struct {
	Price    string
	Quantity int64
}

// CustomerDetails is what the customer entered at checkout.
type CustomerDetails struct {
	Email *string `json:"email"`
	Name  *string `json:"name"`
}

// PortalSession is a billing-portal session.
type PortalSession struct {
	ID        string  `json:"id"`
	Object    string  `json:"object"`
	Customer  string  `json:"customer"`
	ReturnURL *string `json:"return_url"`
	URL       string  `json:"url"`
	Created   int64   `json:"created"`
	Livemode  bool    `json:"livemode"`
}

// Invoice is the part of a Stripe invoice that invoice events carry.
type Invoice struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Customer      string  `json:"customer"`
	CustomerEmail *string `json:"customer_email"`
	Subscription  *string `json:"subscription"`
	Status        string  `json:"status"`
	Paid          bool    `json:"paid"`
	Attempted     bool    `json:"attempted"`
	AttemptCount  int64   `json:"attempt_count"`
	AmountDue     int64   `json:"amount_due"`
	AmountPaid    int64   `json:"amount_paid"`
	Currency      string  `json:"currency"`
	BillingReason string  `json:"billing_reason"`
	PeriodStart   int64   `json:"period_start"`
	PeriodEnd     int64   `json:"period_end"`
	Created       int64   `json:"created"`
	Livemode      bool    `json:"livemode"`
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// NewID returns a Stripe-style id: prefix, underscore, 24 random characters.
func NewID(prefix string) string {
	b := make([]byte, 12)
	rand.Read(b)
	return prefix + "_" + hex.EncodeToString(b)
}

// SetPrices declares prices that exist; checkout refuses any other price, as Stripe does.
func (s *Server) SetPrices(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prices == nil {
		s.prices = map[string]bool{}
	}
	for _, id := range ids {
		s.prices[id] = true
	}
}

// FailNext makes the next n API requests answer status (500, 503, 429...) with Stripe's
// error envelope, before any state is touched.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures = append(s.failures, status)
	}
}

// Requests returns "METHOD /path" of every request served, failures included.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Subscription returns a copy of the subscription with id.
func (s *Server) Subscription(id string) (Subscription, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subscriptions[id]
	if !ok {
		return Subscription{}, false
	}
	return sub.clone(), true
}

// CheckoutSession returns a copy of the checkout session with id.
func (s *Server) CheckoutSession(id string) (CheckoutSession, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs, ok := s.sessions[id]
	if !ok {
		return CheckoutSession{}, false
	}
	c := *cs
	return c, true
}

// PortalSessions returns the billing-portal sessions created so far.
func (s *Server) PortalSessions() []PortalSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.portals)
}

func (sub *Subscription) clone() Subscription {
	c := *sub
	c.Metadata = cloneMap(sub.Metadata)
	c.Items.Data = slices.Clone(sub.Items.Data)
	return c
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// apiError is Stripe's error envelope.
type apiError struct {
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	DocURL  string `json:"doc_url,omitempty"`
}

func writeError(w http.ResponseWriter, status int, e apiError) {
	if e.Code != "" {
		e.DocURL = "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(e.Code, "_", "-")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]apiError{"error": e})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func missing(param string) apiError {
	return apiError{Type: "invalid_request_error", Code: "parameter_missing", Param: param, Message: "Missing required param: " + param + "."}
}

func noSuch(kind, id, param string) apiError {
	return apiError{Type: "invalid_request_error", Code: "resource_missing", Param: param, Message: fmt.Sprintf("No such %s: '%s'", kind, id)}
}

var subscriptionPath = regexp.MustCompile(`^/v1/subscriptions/([^/]+)$`)

// ServeHTTP serves the covered API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Request-Id", NewID("req"))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	if e, status := s.authenticate(r); status != 0 {
		writeError(w, status, e)
		return
	}
	if len(s.failures) > 0 {
		status := s.failures[0]
		s.failures = s.failures[1:]
		if status == http.StatusTooManyRequests {
			writeError(w, status, apiError{Type: "invalid_request_error", Code: "rate_limit",
				Message: "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits."})
			return
		}
		w.Header().Set("Stripe-Should-Retry", "true")
		writeError(w, status, apiError{Type: "api_error", Message: "An unknown error occurred"})
		return
	}
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, apiError{Type: "invalid_request_error", Message: "Invalid request body: " + err.Error()})
			return
		}
	}
	switch {
	case r.Method == http.MethodGet && subscriptionPath.MatchString(r.URL.Path):
		id := subscriptionPath.FindStringSubmatch(r.URL.Path)[1]
		sub, ok := s.subscriptions[id]
		if !ok {
			writeError(w, http.StatusNotFound, noSuch("subscription", id, "id"))
			return
		}
		writeJSON(w, sub)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/checkout/sessions":
		s.createCheckout(w, r.PostForm)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/billing_portal/sessions":
		s.createPortal(w, r.PostForm)
	default:
		writeError(w, http.StatusNotFound, apiError{Type: "invalid_request_error",
			Message: fmt.Sprintf("Unrecognized request URL (%s: %s). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.", r.Method, r.URL.Path)})
	}
}

// authenticate checks the API key as Stripe does: Bearer, or Basic with the key as user.
func (s *Server) authenticate(r *http.Request) (apiError, int) {
	h := r.Header.Get("Authorization")
	key := ""
	switch scheme, rest, _ := strings.Cut(h, " "); strings.ToLower(scheme) {
	case "bearer":
		key = strings.TrimSpace(rest)
	case "basic":
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest)); err == nil {
			key, _, _ = strings.Cut(string(b), ":")
		}
	}
	if key == "" {
		return apiError{Type: "invalid_request_error", Message: "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."}, http.StatusUnauthorized
	}
	valid := strings.HasPrefix(key, "sk_test_") || strings.HasPrefix(key, "rk_test_")
	if s.Key != "" {
		valid = key == s.Key
	}
	if !valid {
		masked := key
		if len(masked) > 12 {
			masked = masked[:8] + "****" + masked[len(masked)-4:]
		}
		return apiError{Type: "invalid_request_error", Message: "Invalid API Key provided: " + masked}, http.StatusUnauthorized
	}
	return apiError{}, 0
}

// nested reads Stripe's bracketed form keys with a prefix: metadata[k]=v → {k: v}.
func nested(form url.Values, prefix string) (map[string]string, *apiError) {
	out := map[string]string{}
	for k, vs := range form {
		rest, ok := strings.CutPrefix(k, prefix+"[")
		if !ok || !strings.HasSuffix(rest, "]") || strings.Contains(rest[:len(rest)-1], "[") {
			continue
		}
		key, v := rest[:len(rest)-1], vs[len(vs)-1]
		if len(key) > 40 {
			return nil, &apiError{Type: "invalid_request_error", Param: k, Message: "Metadata keys must be at most 40 characters."}
		}
		if len(v) > 500 {
			return nil, &apiError{Type: "invalid_request_error", Param: k, Message: "Metadata values must be at most 500 characters."}
		}
		out[key] = v
	}
	return out, nil
}

// checkoutLocales are the locales Stripe Checkout accepts.
var checkoutLocales = strings.Fields(`auto bg cs da de el en en-GB es es-419 et fi fil fr fr-CA hr hu id it ja ko lt lv
	ms mt nb nl pl pt pt-BR ro ru sk sl sv th tr vi zh zh-HK zh-TW`)

func optional(form url.Values, key string) *string {
	if v := form.Get(key); v != "" {
		return &v
	}
	return nil
}

func (s *Server) createCheckout(w http.ResponseWriter, form url.Values) {
	mode := form.Get("mode")
	switch {
	case mode == "":
		writeError(w, 400, missing("mode"))
		return
	case mode != "subscription" && mode != "payment" && mode != "setup":
		writeError(w, 400, apiError{Type: "invalid_request_error", Param: "mode", Message: "Invalid mode: must be one of payment, setup, or subscription"})
		return
	case form.Get("success_url") == "":
		writeError(w, 400, missing("success_url"))
		return
	case form.Get("customer") != "" && form.Get("customer_email") != "":
		writeError(w, 400, apiError{Type: "invalid_request_error", Param: "customer_email",
			Message: "You may only specify one of these parameters: customer, customer_email."})
		return
	case len(form.Get("client_reference_id")) > 200:
		writeError(w, 400, apiError{Type: "invalid_request_error", Param: "client_reference_id",
			Message: "Invalid string: client_reference_id must be at most 200 characters"})
		return
	}
	if l := form.Get("locale"); l != "" && !slices.Contains(checkoutLocales, l) {
		writeError(w, 400, apiError{Type: "invalid_request_error", Param: "locale", Message: fmt.Sprintf("Invalid locale: %s", l)})
		return
	}
	if c := form.Get("customer"); c != "" && s.customers[c] == nil {
		writeError(w, 400, noSuch("customer", c, "customer"))
		return
	}
	var items []LineItem
	for i := 0; form.Has(fmt.Sprintf("line_items[%d][price]", i)); i++ {
		price := form.Get(fmt.Sprintf("line_items[%d][price]", i))
		if !s.prices[price] {
			writeError(w, 400, noSuch("price", price, fmt.Sprintf("line_items[%d][price]", i)))
			return
		}
		q, err := strconv.ParseInt(form.Get(fmt.Sprintf("line_items[%d][quantity]", i)), 10, 64)
		if err != nil || q < 1 {
			writeError(w, 400, missing(fmt.Sprintf("line_items[%d][quantity]", i)))
			return
		}
		items = append(items, LineItem{Price: price, Quantity: q})
	}
	if mode == "subscription" && len(items) == 0 {
		writeError(w, 400, missing("line_items"))
		return
	}
	meta, apiErr := nested(form, "metadata")
	if apiErr != nil {
		writeError(w, 400, *apiErr)
		return
	}
	subMeta, apiErr := nested(form, "subscription_data[metadata]")
	if apiErr != nil {
		writeError(w, 400, *apiErr)
		return
	}
	now := s.now()
	id := NewID("cs_test")
	url := "https://checkout.stripe.com/c/pay/" + id
	cs := &CheckoutSession{
		ID: id, Object: "checkout.session", Mode: mode, Status: "open", PaymentStatus: "unpaid", URL: &url,
		SuccessURL: form.Get("success_url"), CancelURL: optional(form, "cancel_url"),
		ClientReferenceID: optional(form, "client_reference_id"), Customer: optional(form, "customer"),
		CustomerEmail: optional(form, "customer_email"), Metadata: meta, Locale: optional(form, "locale"),
		Created: now.Unix(), ExpiresAt: now.Add(24 * time.Hour).Unix(),
		LineItems: items, SubscriptionMetadata: subMeta,
	}
	if s.sessions == nil {
		s.sessions = map[string]*CheckoutSession{}
	}
	s.sessions[id] = cs
	writeJSON(w, cs)
}

func (s *Server) createPortal(w http.ResponseWriter, form url.Values) {
	c := form.Get("customer")
	if c == "" {
		writeError(w, 400, missing("customer"))
		return
	}
	if s.customers[c] == nil {
		writeError(w, 400, noSuch("customer", c, "customer"))
		return
	}
	id := NewID("bps")
	p := PortalSession{ID: id, Object: "billing_portal.session", Customer: c, ReturnURL: optional(form, "return_url"),
		URL: "https://billing.stripe.com/p/session/test_" + id, Created: s.now().Unix()}
	s.portals = append(s.portals, p)
	writeJSON(w, p)
}
