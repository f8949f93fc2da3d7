// Package mercadopagotest is an in-process, stateful fake of the part of MercadoPago's API
// that billing calls, and a builder of webhook notifications signed exactly as MercadoPago
// signs them.
//
// It keeps preapproval plans, subscriptions (preapprovals), their authorized payments
// (recurring charges) and payments, changes them the way MercadoPago does when a payer
// subscribes at the init_point, a charge fails or succeeds, or the subscription is paused
// or cancelled, and returns the notifications MercadoPago would send. Shapes are those of
// MercadoPago's API reference and of its Go SDK's types (sdk-go v1.8.0).
//
// Covered, JSON in and out, errors as MercadoPago's {"message","error","status","cause"}:
//
//	GET  /preapproval_plan/{id}
//	POST /preapproval                      (reason, external_reference, payer_email, back_url,
//	                                        auto_recurring{frequency, frequency_type,
//	                                        transaction_amount, currency_id}, status=pending)
//	GET  /preapproval/{id}
//	PUT  /preapproval/{id}                 (status: paused | authorized | cancelled; card_token_id)
//	GET  /authorized_payments/{id}
//	GET  /authorized_payments/search       (preapproval_id, limit, offset)
//	GET  /v1/payments/{id}
//
// Requests need `Authorization: Bearer <access token>` (TEST-... or APP_USR-...; with Token
// set, only that one). Knobs: FailNext (5xx or 429). Inspection: Preapproval, Requests.
// The zero value is ready to use as an http.Handler.
package mercadopagotest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is the fake MercadoPago API.
type Server struct {
	// Token, when set, is the only access token accepted.
	Token string
	// Now is the fake's clock for objects' and notifications' times (default time.Now).
	Now func() time.Time

	mu           sync.Mutex
	plans        map[string]*Plan
	preapprovals map[string]*Preapproval
	invoices     map[int64]*AuthorizedPayment
	payments     map[int64]*Payment
	failures     []int
	requests     []string
	nextID       int64
}

// Plan is a preapproval plan (the fields billing reads).
type Plan struct {
	ID            string        `json:"id"`
	Reason        string        `json:"reason"`
	Status        string        `json:"status"`
	BackURL       string        `json:"back_url"`
	InitPoint     string        `json:"init_point"`
	CollectorID   int64         `json:"collector_id"`
	ApplicationID int64         `json:"application_id"`
	AutoRecurring AutoRecurring `json:"auto_recurring"`
	DateCreated   string        `json:"date_created"`
	LastModified  string        `json:"last_modified"`
}

// AutoRecurring is a plan's or subscription's recurrence.
type AutoRecurring struct {
	Frequency         int     `json:"frequency"`
	FrequencyType     string  `json:"frequency_type"`
	TransactionAmount float64 `json:"transaction_amount"`
	CurrencyID        string  `json:"currency_id"`
	StartDate         string  `json:"start_date,omitempty"`
	EndDate           string  `json:"end_date,omitempty"`
}

// Preapproval is a subscription.
type Preapproval struct {
	ID                string        `json:"id"`
	PayerID           int64         `json:"payer_id"`
	PayerEmail        string        `json:"payer_email"`
	PayerFirstName    string        `json:"payer_first_name"`
	PayerLastName     string        `json:"payer_last_name"`
	BackURL           string        `json:"back_url"`
	CollectorID       int64         `json:"collector_id"`
	ApplicationID     int64         `json:"application_id"`
	Status            string        `json:"status"`
	Reason            string        `json:"reason"`
	ExternalReference string        `json:"external_reference"`
	DateCreated       string        `json:"date_created"`
	LastModified      string        `json:"last_modified"`
	InitPoint         string        `json:"init_point"`
	SandboxInitPoint  string        `json:"sandbox_init_point"`
	PreapprovalPlanID string        `json:"preapproval_plan_id,omitempty"`
	AutoRecurring     AutoRecurring `json:"auto_recurring"`
	NextPaymentDate   string        `json:"next_payment_date"`
	PaymentMethodID   string        `json:"payment_method_id,omitempty"`
	CardID            string        `json:"card_id,omitempty"`
	Version           int           `json:"version"`

	// What the fake keeps beside MercadoPago's fields.
	CardTokens []string `json:"-"` // card tokens the subscription was given, in order
}

// AuthorizedPayment is one recurring charge of a subscription (an "invoice" in the SDK).
type AuthorizedPayment struct {
	ID                int64        `json:"id"`
	PreapprovalID     string       `json:"preapproval_id"`
	Type              string       `json:"type"`
	Status            string       `json:"status"` // scheduled, processed, recycling, cancelled
	DateCreated       string       `json:"date_created"`
	LastModified      string       `json:"last_modified"`
	DebitDate         string       `json:"debit_date"`
	TransactionAmount float64      `json:"transaction_amount"`
	CurrencyID        string       `json:"currency_id"`
	Reason            string       `json:"reason"`
	ExternalReference string       `json:"external_reference"`
	RetryAttempt      int          `json:"retry_attempt"`
	Payment           PaymentBrief `json:"payment"`
}

// PaymentBrief is the payment of an authorized payment.
type PaymentBrief struct {
	ID           int64  `json:"id"`
	Status       string `json:"status"`
	StatusDetail string `json:"status_detail"`
}

// Payment is a payment (the fields billing's flows touch).
type Payment struct {
	ID                 int64              `json:"id"`
	Status             string             `json:"status"` // approved, rejected
	StatusDetail       string             `json:"status_detail"`
	DateCreated        string             `json:"date_created"`
	TransactionAmount  float64            `json:"transaction_amount"`
	CurrencyID         string             `json:"currency_id"`
	ExternalReference  string             `json:"external_reference"`
	Description        string             `json:"description"`
	PointOfInteraction PointOfInteraction `json:"point_of_interaction"`
}

// PointOfInteraction says a payment is a subscription's.
type PointOfInteraction struct {
	Type            string          `json:"type"`
	TransactionData TransactionData `json:"transaction_data"`
}

// TransactionData names the subscription of a recurring payment.
type TransactionData struct {
	SubscriptionID string `json:"subscription_id"`
	BillingDate    string `json:"billing_date"`
}

// Time formats MercadoPago's timestamps: "2024-01-15T10:04:58.396-04:00".
func Time(t time.Time) string { return t.Format("2006-01-02T15:04:05.000-07:00") }

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func newHexID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) numericID() int64 {
	if s.nextID == 0 {
		s.nextID = 1000000000 + mathrand.Int64N(1000000000)
	}
	s.nextID++
	return s.nextID
}

// NewPlanID returns an id in the form of MercadoPago's preapproval plan ids.
func NewPlanID() string { return newHexID() }

// AddPlan creates the preapproval plan id (see NewPlanID), monthly, as the operator does in
// MercadoPago.
func (s *Server) AddPlan(id, reason string, amount float64, currency string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := Time(s.now())
	if s.plans == nil {
		s.plans = map[string]*Plan{}
	}
	s.plans[id] = &Plan{ID: id, Reason: reason, Status: "active", CollectorID: 100200300, ApplicationID: 1234567890,
		InitPoint:     "https://www.mercadopago.com.ar/subscriptions/checkout?preapproval_plan_id=" + id,
		AutoRecurring: AutoRecurring{Frequency: 1, FrequencyType: "months", TransactionAmount: amount, CurrencyID: currency},
		DateCreated:   now, LastModified: now}
}

// FailNext makes the next n API requests answer status (500, 503, 429...) with
// MercadoPago's error body, before any state is touched.
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

// Preapproval returns a copy of the subscription with id.
func (s *Server) Preapproval(id string) (Preapproval, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.preapprovals[id]
	if !ok {
		return Preapproval{}, false
	}
	c := *p
	c.CardTokens = slices.Clone(p.CardTokens)
	return c, true
}

// apiError is MercadoPago's error body.
type apiError struct {
	Message string  `json:"message"`
	Error   string  `json:"error"`
	Status  int     `json:"status"`
	Cause   []cause `json:"cause"`
}

type cause struct {
	Code        string `json:"code"`
	Description string `json:"description"`
}

func writeError(w http.ResponseWriter, status int, code, message string, causes ...cause) {
	if causes == nil {
		causes = []cause{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Message: message, Error: code, Status: status, Cause: causes})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

var (
	planPath        = regexp.MustCompile(`^/preapproval_plan/([^/]+)$`)
	preapprovalPath = regexp.MustCompile(`^/preapproval/([^/]+)$`)
	invoicePath     = regexp.MustCompile(`^/authorized_payments/([0-9]+)$`)
	paymentPath     = regexp.MustCompile(`^/v1/payments/([^/]+)$`)
)

// ServeHTTP serves the covered API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Request-Id", newHexID())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid access token")
		return
	}
	if len(s.failures) > 0 {
		status := s.failures[0]
		s.failures = s.failures[1:]
		if status == http.StatusTooManyRequests {
			writeError(w, status, "too_many_requests", "Too many requests")
			return
		}
		writeError(w, status, "internal_error", "Internal server error")
		return
	}
	path := r.URL.Path
	switch {
	case r.Method == http.MethodGet && planPath.MatchString(path):
		id := planPath.FindStringSubmatch(path)[1]
		p, ok := s.plans[id]
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "The preapproval_plan with id "+id+" does not exist")
			return
		}
		writeJSON(w, http.StatusOK, p)
	case r.Method == http.MethodPost && path == "/preapproval":
		s.createPreapproval(w, r)
	case r.Method == http.MethodGet && path == "/preapproval/search":
		writeError(w, http.StatusNotImplemented, "not_implemented", "the fake does not search preapprovals")
	case r.Method == http.MethodGet && preapprovalPath.MatchString(path):
		id := preapprovalPath.FindStringSubmatch(path)[1]
		p, ok := s.preapprovals[id]
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "The preapproval with id "+id+" does not exist")
			return
		}
		writeJSON(w, http.StatusOK, p)
	case r.Method == http.MethodPut && preapprovalPath.MatchString(path):
		s.updatePreapproval(w, r, preapprovalPath.FindStringSubmatch(path)[1])
	case r.Method == http.MethodGet && path == "/authorized_payments/search":
		s.searchInvoices(w, r)
	case r.Method == http.MethodGet && invoicePath.MatchString(path):
		id, _ := strconv.ParseInt(invoicePath.FindStringSubmatch(path)[1], 10, 64)
		inv, ok := s.invoices[id]
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("authorized_payment %d not found", id))
			return
		}
		writeJSON(w, http.StatusOK, inv)
	case r.Method == http.MethodGet && paymentPath.MatchString(path):
		id, err := strconv.ParseInt(paymentPath.FindStringSubmatch(path)[1], 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "Invalid payment_id", cause{Code: "2029", Description: "Invalid payment_id"})
			return
		}
		p, ok := s.payments[id]
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "Payment not found", cause{Code: "2000", Description: "Payment not found"})
			return
		}
		writeJSON(w, http.StatusOK, p)
	default:
		writeError(w, http.StatusNotFound, "not_found", "resource "+r.Method+" "+path+" not found")
	}
}

func (s *Server) authorized(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return false
	}
	if s.Token != "" {
		return token == s.Token
	}
	return strings.HasPrefix(token, "TEST-") || strings.HasPrefix(token, "APP_USR-")
}

var currencies = []string{"ARS", "BRL", "CLP", "COP", "MXN", "PEN", "UYU", "USD"}

func (s *Server) createPreapproval(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason            string         `json:"reason"`
		ExternalReference string         `json:"external_reference"`
		PayerEmail        string         `json:"payer_email"`
		BackURL           string         `json:"back_url"`
		Status            string         `json:"status"`
		PreapprovalPlanID string         `json:"preapproval_plan_id"`
		CardTokenID       string         `json:"card_token_id"`
		AutoRecurring     *AutoRecurring `json:"auto_recurring"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "invalid body: "+err.Error())
		return
	}
	bad := func(field, msg string) {
		writeError(w, http.StatusBadRequest, "bad_request", msg, cause{Code: "invalid_" + field, Description: msg})
	}
	switch {
	case req.PreapprovalPlanID != "" && req.CardTokenID == "":
		// A subscription tied to a plan is created with the payer's card in hand.
		bad("card_token_id", "card_token_id is required")
		return
	case req.PayerEmail == "" || !strings.Contains(req.PayerEmail, "@"):
		bad("payer_email", "Invalid value for payer_email")
		return
	case req.BackURL == "" || !strings.HasPrefix(req.BackURL, "http"):
		bad("back_url", "back_url is required and must be a valid url")
		return
	case req.Reason == "":
		bad("reason", "reason is required")
		return
	case len(req.ExternalReference) > 256:
		bad("external_reference", "external_reference must be at most 256 characters")
		return
	case req.PreapprovalPlanID == "" && req.AutoRecurring == nil:
		bad("auto_recurring", "auto_recurring is required")
		return
	case req.Status != "" && req.Status != "pending" && req.Status != "authorized":
		bad("status", "Invalid value for status")
		return
	}
	ar := AutoRecurring{}
	if req.AutoRecurring != nil {
		ar = *req.AutoRecurring
		switch {
		case ar.Frequency < 1:
			bad("frequency", "auto_recurring.frequency must be positive")
			return
		case ar.FrequencyType != "days" && ar.FrequencyType != "months":
			bad("frequency_type", "auto_recurring.frequency_type must be days or months")
			return
		case ar.TransactionAmount <= 0:
			bad("transaction_amount", "auto_recurring.transaction_amount must be positive")
			return
		case !slices.Contains(currencies, ar.CurrencyID):
			bad("currency_id", "Invalid value for auto_recurring.currency_id")
			return
		}
	} else if p, ok := s.plans[req.PreapprovalPlanID]; ok {
		ar = p.AutoRecurring
	} else {
		writeError(w, http.StatusNotFound, "not_found", "The preapproval_plan with id "+req.PreapprovalPlanID+" does not exist")
		return
	}
	now := s.now()
	ar.StartDate = Time(now)
	id := newHexID()
	p := &Preapproval{ID: id, PayerEmail: req.PayerEmail, BackURL: req.BackURL, CollectorID: 100200300, ApplicationID: 1234567890,
		Status: "pending", Reason: req.Reason, ExternalReference: req.ExternalReference, DateCreated: Time(now), LastModified: Time(now),
		InitPoint:         "https://www.mercadopago.com.ar/subscriptions/checkout?preapproval_id=" + id,
		SandboxInitPoint:  "https://sandbox.mercadopago.com.ar/subscriptions/checkout?preapproval_id=" + id,
		PreapprovalPlanID: req.PreapprovalPlanID, AutoRecurring: ar, NextPaymentDate: Time(now), Version: 1}
	if s.preapprovals == nil {
		s.preapprovals = map[string]*Preapproval{}
	}
	s.preapprovals[id] = p
	writeJSON(w, http.StatusCreated, p)
}

func (s *Server) updatePreapproval(w http.ResponseWriter, r *http.Request, id string) {
	p, ok := s.preapprovals[id]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "The preapproval with id "+id+" does not exist")
		return
	}
	var req struct {
		Status      string `json:"status"`
		CardTokenID string `json:"card_token_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "invalid body: "+err.Error())
		return
	}
	switch {
	case req.Status != "" && req.Status != "paused" && req.Status != "authorized" && req.Status != "cancelled":
		writeError(w, http.StatusBadRequest, "bad_request", "Invalid value for status", cause{Code: "invalid_status", Description: "Invalid value for status"})
		return
	case p.Status == "cancelled" && req.Status != "" && req.Status != "cancelled":
		writeError(w, http.StatusBadRequest, "bad_request", "You can not modify a cancelled preapproval",
			cause{Code: "invalid_status_transition", Description: "cancelled preapprovals can not be modified"})
		return
	}
	if req.Status != "" {
		p.Status = req.Status
	}
	if req.CardTokenID != "" {
		p.CardTokens = append(p.CardTokens, req.CardTokenID)
		p.CardID = strconv.FormatInt(s.numericID(), 10)
	}
	p.LastModified, p.Version = Time(s.now()), p.Version+1
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) searchInvoices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, offset := 30, 0
	if v := q.Get("limit"); v != "" {
		limit, _ = strconv.Atoi(v)
	}
	if v := q.Get("offset"); v != "" {
		offset, _ = strconv.Atoi(v)
	}
	if limit < 1 || limit > 100 || offset < 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "Invalid limit or offset")
		return
	}
	var all []AuthorizedPayment
	for _, inv := range s.invoices {
		if pid := q.Get("preapproval_id"); pid == "" || inv.PreapprovalID == pid {
			all = append(all, *inv)
		}
	}
	slices.SortFunc(all, func(a, b AuthorizedPayment) int { return int(a.ID - b.ID) })
	page := []AuthorizedPayment{}
	if offset < len(all) {
		page = all[offset:min(len(all), offset+limit)]
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"paging":  map[string]int{"total": len(all), "limit": limit, "offset": offset},
		"results": page,
	})
}
