package mercadopagotest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Notification is a webhook notification as MercadoPago delivers it.
type Notification struct {
	ID      int64 // the notification's id: a redelivery keeps it
	Type    string
	Action  string
	DataID  string // the object it is about
	Created time.Time
	Payload []byte // the JSON body MercadoPago POSTs
}

// NewNotification builds the notification of topic typ and action about the object with
// dataID, created at created.
func NewNotification(typ, action, dataID string, created time.Time) Notification {
	id := 100000000000 + mathrand.Int64N(900000000000)
	body, err := json.Marshal(map[string]any{
		"id": id, "live_mode": false, "type": typ, "date_created": Time(created), "user_id": 100200300,
		"api_version": "v1", "action": action, "application_id": 1234567890, "version": 1,
		"data": map[string]any{"id": dataID},
	})
	if err != nil {
		panic(err)
	}
	return Notification{ID: id, Type: typ, Action: action, DataID: dataID, Created: created, Payload: body}
}

// Manifest is the string MercadoPago signs for a notification about dataID, delivered with
// requestID at ts (as it appears in x-signature).
func Manifest(dataID, requestID, ts string) string {
	if isAlphanumeric(dataID) {
		dataID = strings.ToLower(dataID)
	}
	return "id:" + dataID + ";request-id:" + requestID + ";ts:" + ts + ";"
}

func isAlphanumeric(s string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}

// Sign returns the x-signature header MercadoPago sends for a notification about dataID,
// delivered with requestID at t, under the application's secret.
func Sign(dataID, requestID, secret string, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(Manifest(dataID, requestID, ts)))
	return "ts=" + ts + ",v1=" + hex.EncodeToString(h.Sum(nil))
}

// Headers returns the headers of a delivery of n signed with secret at t.
func (n Notification) Headers(secret string, t time.Time) http.Header {
	rid := newRequestID()
	return http.Header{
		"Content-Type": {"application/json"},
		"X-Request-Id": {rid},
		"X-Signature":  {Sign(n.DataID, rid, secret, t)},
	}
}

// Query is the query string MercadoPago adds to the webhook URL: data.id and type.
func (n Notification) Query() url.Values {
	return url.Values{"data.id": {n.DataID}, "type": {n.Type}}
}

// Request returns the POST MercadoPago would make to endpoint to deliver n, signed with
// secret now.
func (n Notification) Request(endpoint, secret string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, endpoint+"?"+n.Query().Encode(), bytes.NewReader(n.Payload))
	if err != nil {
		panic(err)
	}
	req.Header = n.Headers(secret, time.Now())
	req.Header.Set("User-Agent", "MercadoPago Feed v2.0 payment")
	return req
}

func newRequestID() string {
	h := newHexID()
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (s *Server) notify(typ, action, dataID string) Notification {
	return NewNotification(typ, action, dataID, s.now())
}

func (s *Server) preapproval(id string) (*Preapproval, error) {
	p, ok := s.preapprovals[id]
	if !ok {
		return nil, fmt.Errorf("mercadopagotest: no preapproval %s", id)
	}
	return p, nil
}

// charge records a recurring charge of p, approved or rejected, and returns the
// notifications of its authorized payment and payment.
func (s *Server) charge(p *Preapproval, approved bool) []Notification {
	now := s.now()
	pay := &Payment{ID: s.numericID(), Status: "approved", StatusDetail: "accredited", DateCreated: Time(now),
		TransactionAmount: p.AutoRecurring.TransactionAmount, CurrencyID: p.AutoRecurring.CurrencyID,
		ExternalReference: p.ExternalReference, Description: p.Reason,
		PointOfInteraction: PointOfInteraction{Type: "SUBSCRIPTIONS",
			TransactionData: TransactionData{SubscriptionID: p.ID, BillingDate: now.Format("2006-01-02")}}}
	inv := &AuthorizedPayment{ID: s.numericID(), PreapprovalID: p.ID, Type: "scheduled", Status: "processed",
		DateCreated: Time(now), LastModified: Time(now), DebitDate: Time(now),
		TransactionAmount: p.AutoRecurring.TransactionAmount, CurrencyID: p.AutoRecurring.CurrencyID,
		Reason: p.Reason, ExternalReference: p.ExternalReference}
	if !approved {
		pay.Status, pay.StatusDetail = "rejected", "cc_rejected_insufficient_amount"
		inv.Status, inv.RetryAttempt = "recycling", 1
	} else {
		p.NextPaymentDate = Time(now.AddDate(0, 1, 0))
	}
	inv.Payment = PaymentBrief{ID: pay.ID, Status: pay.Status, StatusDetail: pay.StatusDetail}
	if s.invoices == nil {
		s.invoices, s.payments = map[int64]*AuthorizedPayment{}, map[int64]*Payment{}
	}
	s.invoices[inv.ID], s.payments[pay.ID] = inv, pay
	p.LastModified = Time(now)
	return []Notification{
		s.notify("subscription_authorized_payment", "created", strconv.FormatInt(inv.ID, 10)),
		s.notify("payment", "payment.created", strconv.FormatInt(pay.ID, 10)),
	}
}

// Subscribe is the payer completing the subscription at its init_point: it is authorized,
// its first charge is approved, and MercadoPago sends subscription_preapproval (updated),
// subscription_authorized_payment (created) and payment (payment.created).
func (s *Server) Subscribe(id, firstName, lastName string) ([]Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.preapproval(id)
	if err != nil {
		return nil, err
	}
	if p.Status != "pending" {
		return nil, fmt.Errorf("mercadopagotest: preapproval %s is %s", id, p.Status)
	}
	p.Status, p.PayerID, p.PayerFirstName, p.PayerLastName = "authorized", 200000000+s.numericID()%100000000, firstName, lastName
	p.PaymentMethodID, p.CardID = "visa", strconv.FormatInt(s.numericID(), 10)
	charged := s.charge(p, true)
	return append([]Notification{s.notify("subscription_preapproval", "updated", id)}, charged...), nil
}

// ChargeFailed makes the subscription's next recurring charge be rejected: MercadoPago
// keeps it authorized and retries the charge (its authorized payment is "recycling"),
// and sends subscription_authorized_payment and payment.
func (s *Server) ChargeFailed(id string) ([]Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.preapproval(id)
	if err != nil {
		return nil, err
	}
	return s.charge(p, false), nil
}

// ChargeSucceeded approves the subscription's next recurring charge: the next payment
// date moves a month on.
func (s *Server) ChargeSucceeded(id string) ([]Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.preapproval(id)
	if err != nil {
		return nil, err
	}
	return s.charge(p, true), nil
}

// SetStatus changes the subscription's status as the payer or the seller does in
// MercadoPago (paused, authorized, cancelled) and returns subscription_preapproval.
func (s *Server) SetStatus(id, status string) (Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.preapproval(id)
	if err != nil {
		return Notification{}, err
	}
	p.Status, p.LastModified, p.Version = status, Time(s.now()), p.Version+1
	return s.notify("subscription_preapproval", "updated", id), nil
}

// Created returns the subscription_preapproval notification MercadoPago sends when a
// subscription is created (POST /preapproval), still pending.
func (s *Server) Created(id string) Notification {
	return s.notify("subscription_preapproval", "created", id)
}

// Changed returns the subscription_preapproval notification of a change made through the
// API (PUT /preapproval/{id}), which MercadoPago sends after it.
func (s *Server) Changed(id string) Notification {
	return s.notify("subscription_preapproval", "updated", id)
}
