package mercadopagotest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mercadopago/sdk-go/pkg/config"
	"github.com/mercadopago/sdk-go/pkg/invoice"
	"github.com/mercadopago/sdk-go/pkg/mperror"
	"github.com/mercadopago/sdk-go/pkg/payment"
	"github.com/mercadopago/sdk-go/pkg/preapproval"
	"github.com/mercadopago/sdk-go/pkg/preapprovalplan"
)

const token = "TEST-1111111111111111-120709-fake0123456789abcdef0123456789ab-100200300"

// toFake sends the SDK's requests (to api.mercadopago.com) to the fake.
type toFake struct{ base *url.URL }

func (f toFake) Do(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host, req.Host = f.base.Scheme, f.base.Host, ""
	return http.DefaultTransport.RoundTrip(req)
}

func setup(t *testing.T) (*Server, *config.Config) {
	t.Helper()
	s := &Server{Token: token}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	base, _ := url.Parse(srv.URL)
	cfg, err := config.New(token, config.WithHTTPClient(toFake{base}))
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// The official SDK reads what the fake answers, through a subscription's whole life.
func TestSDKAgainstTheFake(t *testing.T) {
	t.Parallel()
	s, cfg := setup(t)
	ctx := context.Background()
	planID := NewPlanID()
	s.AddPlan(planID, "n8n Starter", 15000, "ARS")
	plan, err := preapprovalplan.NewClient(cfg).Get(ctx, planID)
	if err != nil || plan.AutoRecurring.TransactionAmount != 15000 || plan.AutoRecurring.CurrencyID != "ARS" || plan.AutoRecurring.FrequencyType != "months" {
		t.Fatalf("plan = %+v, %v", plan, err)
	}
	pre := preapproval.NewClient(cfg)
	created, err := pre.Create(ctx, preapproval.Request{Reason: "n8n Starter", ExternalReference: "client=c1;plan=starter",
		PayerEmail: "ana@example.com", BackURL: "https://portal.example.com/ok", Status: "pending",
		AutoRecurring: &preapproval.AutoRecurringRequest{Frequency: 1, FrequencyType: "months", TransactionAmount: 15000, CurrencyID: "ARS"}})
	if err != nil || created.Status != "pending" || !strings.Contains(created.InitPoint, created.ID) || created.DateCreated.IsZero() {
		t.Fatalf("created = %+v, %v", created, err)
	}
	notes, err := s.Subscribe(created.ID, "Ana", "Lovelace")
	if err != nil || len(notes) != 3 {
		t.Fatalf("subscribe = %v, %v", notes, err)
	}
	got, err := pre.Get(ctx, created.ID)
	if err != nil || got.Status != "authorized" || got.PayerID == 0 || got.NextPaymentDate.Before(time.Now().AddDate(0, 0, 27)) {
		t.Fatalf("got = %+v, %v", got, err)
	}
	if _, err := s.ChargeFailed(created.ID); err != nil {
		t.Fatal(err)
	}
	res, err := invoice.NewClient(cfg).Search(ctx, invoice.SearchRequest{Filters: map[string]string{"preapproval_id": created.ID}})
	if err != nil || res.Paging.Total != 2 || res.Results[1].Status != "recycling" || res.Results[1].Payment.Status != "rejected" ||
		res.Results[0].Payment.Status != "approved" {
		t.Fatalf("authorized payments = %+v, %v", res, err)
	}
	inv, err := invoice.NewClient(cfg).Get(ctx, strconv.Itoa(res.Results[1].ID))
	if err != nil || inv.PreapprovalID != created.ID {
		t.Fatalf("authorized payment = %+v, %v", inv, err)
	}
	pay, err := payment.NewClient(cfg).Get(ctx, res.Results[1].Payment.ID)
	if err != nil || pay.Status != "rejected" || pay.PointOfInteraction.TransactionData.SubscriptionID != created.ID {
		t.Fatalf("payment = %+v, %v", pay, err)
	}
	updated, err := pre.Update(ctx, created.ID, preapproval.UpdateRequest{Status: "cancelled"})
	if err != nil || updated.Status != "cancelled" {
		t.Fatalf("updated = %+v, %v", updated, err)
	}
	// A cancelled subscription cannot come back, as in MercadoPago.
	_, err = pre.Update(ctx, created.ID, preapproval.UpdateRequest{Status: "authorized"})
	if status, body := apiErr(t, err); status != 400 || body.Error != "bad_request" || len(body.Cause) == 0 {
		t.Fatalf("reactivating = %d %+v", status, body)
	}
}

func apiErr(t *testing.T, err error) (int, apiError) {
	t.Helper()
	var re *mperror.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want an API error", err)
	}
	var body apiError
	if err := json.Unmarshal([]byte(re.Message), &body); err != nil || body.Status != re.StatusCode || body.Message == "" {
		t.Fatalf("error body %q is not MercadoPago's shape", re.Message)
	}
	return re.StatusCode, body
}

func TestErrorsAndFailures(t *testing.T) {
	t.Parallel()
	s, cfg := setup(t)
	ctx := context.Background()
	pre := preapproval.NewClient(cfg)
	if _, err := pre.Get(ctx, "2c9380848f0d6a2c018f1b2e3a4bffff"); func() bool { st, _ := apiErr(t, err); return st != 404 }() {
		t.Fatal("unknown preapproval is not 404")
	}
	// A subscription tied to a plan needs the payer's card; without auto_recurring or with
	// a bad currency it is refused.
	for _, req := range []preapproval.Request{
		{PreapprovalPlanID: "abc", PayerEmail: "a@example.com", BackURL: "https://x.example", Reason: "r"},
		{PayerEmail: "a@example.com", BackURL: "https://x.example", Reason: "r"},
		{PayerEmail: "a@example.com", BackURL: "https://x.example", Reason: "r",
			AutoRecurring: &preapproval.AutoRecurringRequest{Frequency: 1, FrequencyType: "months", TransactionAmount: 10, CurrencyID: "EUR"}},
	} {
		if _, err := pre.Create(ctx, req); func() bool { st, _ := apiErr(t, err); return st != 400 }() {
			t.Errorf("%+v was not refused with 400", req)
		}
	}
	s.FailNext(1, 503)
	s.FailNext(1, 429)
	for _, want := range []int{503, 429} {
		if st, _ := apiErr(t, func() error { _, err := pre.Get(ctx, "x"); return err }()); st != want {
			t.Errorf("injected failure = %d, want %d", st, want)
		}
	}
	bad, _ := config.New("TEST-wrong-token", config.WithHTTPClient(cfg.Requester))
	if st, _ := apiErr(t, func() error { _, err := preapproval.NewClient(bad).Get(ctx, "x"); return err }()); st != 401 {
		t.Errorf("wrong token = %d", st)
	}
	if n := len(s.Requests()); n != 7 {
		t.Errorf("requests = %d, want 7", n)
	}
}

// The signature is MercadoPago's documented template, HMAC-SHA256 in hex.
func TestSign(t *testing.T) {
	t.Parallel()
	at := time.Unix(1704908010, 0)
	h := hmac.New(sha256.New, []byte("secret"))
	h.Write([]byte("id:2c93abcd;request-id:bb56a2f1-6aae-46ac-982e-9dcd3581d08e;ts:1704908010;"))
	want := "ts=1704908010,v1=" + hex.EncodeToString(h.Sum(nil))
	// An alphanumeric data.id is signed lowercased.
	if got := Sign("2C93ABCD", "bb56a2f1-6aae-46ac-982e-9dcd3581d08e", "secret", at); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	n := NewNotification("subscription_preapproval", "updated", "2c93abcd", at)
	var body struct {
		ID   int64  `json:"id"`
		Type string `json:"type"`
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(n.Payload, &body); err != nil || body.ID != n.ID || body.Type != n.Type || body.Data.ID != "2c93abcd" {
		t.Fatalf("payload %s", n.Payload)
	}
	req := n.Request("https://provisioner.example.com/webhooks/payments/mercadopago", "secret")
	if req.URL.Query().Get("data.id") != "2c93abcd" || req.URL.Query().Get("type") != "subscription_preapproval" ||
		!strings.HasPrefix(req.Header.Get("X-Signature"), "ts=") || req.Header.Get("X-Request-Id") == "" {
		t.Fatalf("request = %v %v", req.URL, req.Header)
	}
}
