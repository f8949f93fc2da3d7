package billing

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	mpconfig "github.com/mercadopago/sdk-go/pkg/config"
	"github.com/mercadopago/sdk-go/pkg/invoice"
	"github.com/mercadopago/sdk-go/pkg/mperror"
	"github.com/mercadopago/sdk-go/pkg/payment"
	"github.com/mercadopago/sdk-go/pkg/preapproval"
	"github.com/mercadopago/sdk-go/pkg/preapprovalplan"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// ProviderMercadoPago is MercadoPago's name in the inbox, on subscriptions and in webhook
// paths.
const ProviderMercadoPago = plans.MercadoPago

// The notification topics billing acts on (MercadoPago's "type").
const (
	topicPreapproval       = "subscription_preapproval"
	topicAuthorizedPayment = "subscription_authorized_payment"
	topicPayment           = "payment"
	// rereadType is the type of the inbox events our own cancel and card change store,
	// so that their re-read runs through the same processing as a notification.
	rereadType = topicPreapproval
)

// mercadoPagoProvider speaks to MercadoPago with its official SDK (sdk-go v1.8.0):
// preapproval (subscriptions), preapproval_plan, authorized_payments and payments.
//
// A checkout creates a subscription "without an associated plan, with pending payment":
// MercadoPago only lets a subscription tied to a preapproval plan be created with a card
// token already in hand, while a pending one gives the customer an init_point to pay at.
// Its price and frequency are copied from the plan's preapproval plan, read at checkout,
// so that MercadoPago's plan stays the truth as Stripe's price is; the plan itself
// travels in external_reference.
type mercadoPagoProvider struct {
	secrets      []string
	preapprovals preapproval.Client
	plans        preapprovalplan.Client
	invoices     invoice.Client
	payments     payment.Client
}

func newMercadoPago(cfg MercadoPagoConfig, hc *http.Client) (*mercadoPagoProvider, error) {
	base, err := url.Parse(strings.TrimRight(cfg.APIURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_MERCADOPAGO_API_URL: %w", err)
	}
	// Our own requester: the SDK's default one retries 5xx three times inside the call
	// (the job queue retries with backoff instead) and always calls api.mercadopago.com.
	sdk, err := mpconfig.New(cfg.AccessToken, mpconfig.WithHTTPClient(rebased{base: base, client: hc}))
	if err != nil {
		return nil, err
	}
	return &mercadoPagoProvider{secrets: cfg.WebhookSecrets,
		preapprovals: preapproval.NewClient(sdk), plans: preapprovalplan.NewClient(sdk),
		invoices: invoice.NewClient(sdk), payments: payment.NewClient(sdk)}, nil
}

// rebased sends the SDK's requests (always to https://api.mercadopago.com) to base.
type rebased struct {
	base   *url.URL
	client *http.Client
}

func (r rebased) Do(req *http.Request) (*http.Response, error) {
	u := *req.URL
	u.Scheme, u.Host = r.base.Scheme, r.base.Host
	u.Path = r.base.Path + u.Path
	req = req.Clone(req.Context())
	req.URL, req.Host = &u, ""
	return r.client.Do(req)
}

func (*mercadoPagoProvider) name() string { return ProviderMercadoPago }

// notification is the body MercadoPago POSTs for a webhook.
type notification struct {
	ID          json.RawMessage `json:"id"` // a number in MercadoPago's examples; a string is taken too
	LiveMode    bool            `json:"live_mode"`
	Type        string          `json:"type"`
	DateCreated string          `json:"date_created"`
	Action      string          `json:"action"`
	Data        struct {
		ID json.RawMessage `json:"id"`
	} `json:"data"`
}

// dataID reads data.id.
func (n notification) dataID() string { return stringOrNumber(n.Data.ID) }

// stringOrNumber reads a JSON string or number as text ("" for anything else).
func stringOrNumber(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var num json.Number
	if json.Unmarshal(raw, &num) == nil {
		return num.String()
	}
	return ""
}

var (
	alphanumeric   = regexp.MustCompile(`^[A-Za-z0-9]+$`)
	notificationID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// verify checks x-signature as MercadoPago documents it: "ts=<unix time>,v1=<hex>", v1
// being HMAC-SHA256 under the application's secret of the manifest
// "id:<data.id>;request-id:<x-request-id>;ts:<ts>;", where data.id is the notification
// URL's query parameter (lowercased when alphanumeric) and a part whose value is absent is
// left out. The body itself is not signed: the notification's data.id must be the signed
// one, and everything billing acts on is re-read from the API.
func (p *mercadoPagoProvider) verify(payload []byte, header http.Header, query url.Values) (inbound, error) {
	sig := strings.TrimSpace(header.Get("X-Signature"))
	if sig == "" {
		return inbound{}, &rejection{"unsigned", "the x-signature header is missing"}
	}
	var ts, v1 string
	for _, part := range strings.Split(sig, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.TrimSpace(k) {
		case "ts":
			ts = strings.TrimSpace(v)
		case "v1":
			v1 = strings.TrimSpace(v)
		}
	}
	sent, err := strconv.ParseInt(ts, 10, 64)
	mac, hexErr := hex.DecodeString(v1)
	if err != nil || sent <= 0 || hexErr != nil || len(mac) != sha256.Size {
		return inbound{}, &rejection{"malformed", "the x-signature header is malformed"}
	}
	var n notification
	if err := json.Unmarshal(payload, &n); err != nil {
		return inbound{}, &rejection{"malformed", "the payload is not a JSON MercadoPago notification"}
	}
	dataID := query.Get("data.id")
	if dataID == "" {
		dataID = n.dataID() // MercadoPago always sends it in the URL; a proxy may drop it
	}
	if alphanumeric.MatchString(dataID) {
		dataID = strings.ToLower(dataID)
	}
	var manifest strings.Builder
	if dataID != "" {
		fmt.Fprintf(&manifest, "id:%s;", dataID)
	}
	if rid := header.Get("X-Request-Id"); rid != "" {
		fmt.Fprintf(&manifest, "request-id:%s;", rid)
	}
	fmt.Fprintf(&manifest, "ts:%s;", ts)
	if !slices.ContainsFunc(p.secrets, func(secret string) bool {
		h := hmac.New(sha256.New, []byte(secret))
		h.Write([]byte(manifest.String()))
		return hmac.Equal(h.Sum(nil), mac)
	}) {
		return inbound{}, &rejection{"bad_signature", "no valid signature for this application's secret"}
	}
	// Only a fresh signature is taken (ts is in seconds, or milliseconds in newer
	// deliveries): a captured one cannot be replayed later. Wall time, as stripe-go's check.
	at := time.Unix(sent, 0)
	if sent > 1e11 {
		at = time.UnixMilli(sent)
	}
	if age := time.Since(at); age > WebhookTolerance || age < -WebhookTolerance {
		return inbound{}, &rejection{"stale", "the signature's timestamp is more than 5 minutes away"}
	}
	id := stringOrNumber(n.ID)
	if !notificationID.MatchString(id) || n.Type == "" || len(n.Type) > 255 {
		return inbound{}, &rejection{"malformed", "the notification lacks a valid id or type"}
	}
	if body := n.dataID(); !strings.EqualFold(body, dataID) {
		return inbound{}, &rejection{"bad_signature", "the notification's data.id is not the signed one"}
	}
	// The event's time orders re-reads of one subscription; it is the signed ts, since
	// date_created is not signed and a forged one far ahead would freeze the state.
	return inbound{ID: id, Type: n.Type, Created: at.UTC()}, nil
}

func (p *mercadoPagoProvider) interpret(ctx context.Context, eventType string, payload []byte) (interpretation, error) {
	var n notification
	if err := json.Unmarshal(payload, &n); err != nil {
		return interpretation{}, apperr.Wrap(apperr.Invalid, err, "the stored payload is not a MercadoPago notification")
	}
	id := n.dataID()
	if id == "" {
		return interpretation{}, apperr.New(apperr.Invalid, "the %s notification names no object (data.id)", eventType)
	}
	var it interpretation
	switch eventType {
	case topicPreapproval:
		it.SubscriptionID = id
	case topicAuthorizedPayment:
		inv, err := p.invoices.Get(ctx, id)
		if err != nil {
			return interpretation{}, mercadoPagoError(err, "reading authorized payment "+id)
		}
		it.SubscriptionID = inv.PreapprovalID
	case topicPayment:
		num, err := strconv.Atoi(id)
		if err != nil {
			return interpretation{}, apperr.New(apperr.Invalid, "payment id %q is not a number", id)
		}
		pay, err := p.payments.Get(ctx, num)
		if err != nil {
			return interpretation{}, mercadoPagoError(err, "reading payment "+id)
		}
		it.SubscriptionID = pay.PointOfInteraction.TransactionData.SubscriptionID
		if it.SubscriptionID == "" {
			return interpretation{Why: "the payment is not a subscription's"}, nil
		}
	default:
		return interpretation{Why: "billing does not act on " + eventType + " notifications"}, nil
	}
	if it.SubscriptionID == "" {
		return interpretation{}, apperr.New(apperr.Invalid, "the %s notification names no subscription", eventType)
	}
	it.Relevant = true
	return it, nil
}

// fetch reads the preapproval and its authorized payments, and maps them onto our
// statuses: pending → incomplete; authorized → active, or past_due when its latest
// recurring payment was rejected (MercadoPago retries it, "recycling"); paused → unpaid
// (no payment, no service, until it is authorized again); cancelled → canceled.
func (p *mercadoPagoProvider) fetch(ctx context.Context, id string) (remoteSubscription, error) {
	pre, err := p.preapprovals.Get(ctx, id)
	if err != nil {
		return remoteSubscription{}, mercadoPagoError(err, "reading subscription "+id)
	}
	r := remoteSubscription{ID: pre.ID, CurrentPeriodEnd: pre.NextPaymentDate.UTC()}
	if pre.PayerID != 0 {
		r.CustomerID = strconv.FormatInt(pre.PayerID, 10)
	}
	if pre.PreapprovalPlanID != "" {
		r.PriceIDs = []string{pre.PreapprovalPlanID}
	}
	ref := parseReference(pre.ExternalReference)
	r.PlanID = ref.plan
	r.Attribution = attribution{ClientID: ref.client, Locale: ref.locale, Email: strings.TrimSpace(pre.PayerEmail),
		Name: strings.TrimSpace(pre.PayerFirstName + " " + pre.PayerLastName)}
	switch pre.Status {
	case "pending":
		r.Status = Incomplete
	case "authorized":
		r.Status = Active
		rejected, err := p.lastPaymentRejected(ctx, id)
		if err != nil {
			return remoteSubscription{}, err
		}
		if rejected {
			r.Status = PastDue
		}
	case "paused":
		r.Status = Unpaid
	case "cancelled":
		r.Status = Canceled
		if !pre.LastModified.IsZero() { // else the cancellation's notification dates it
			ended := pre.LastModified.UTC()
			r.EndedAt = &ended
		}
	default:
		return remoteSubscription{}, apperr.New(apperr.Invalid, "subscription %s has status %q, which billing does not know", id, pre.Status)
	}
	return r, nil
}

// lastPaymentRejected reports whether the subscription's newest authorized payment (its
// latest recurring charge) failed.
func (p *mercadoPagoProvider) lastPaymentRejected(ctx context.Context, id string) (bool, error) {
	const limit = 100
	search := func(offset int) (*invoice.SearchResponse, error) {
		res, err := p.invoices.Search(ctx, invoice.SearchRequest{Limit: limit, Offset: offset, Filters: map[string]string{"preapproval_id": id}})
		return res, mercadoPagoError(err, "searching the authorized payments of "+id)
	}
	res, err := search(0)
	if err == nil && res.Paging.Total > limit {
		res, err = search(res.Paging.Total - limit) // the newest are on the last page
	}
	if err != nil {
		return false, err
	}
	var last *invoice.Response
	for i := range res.Results {
		inv := &res.Results[i]
		if last == nil || inv.DateCreated.After(last.DateCreated) || (inv.DateCreated.Equal(last.DateCreated) && inv.ID > last.ID) {
			last = inv
		}
	}
	if last == nil {
		return false, nil
	}
	return last.Status == "recycling" || last.Payment.Status == "rejected", nil
}

func (p *mercadoPagoProvider) checkout(ctx context.Context, req checkoutParams) (Session, error) {
	plan, err := p.plans.Get(ctx, req.Plan.MercadoPagoPlanID)
	if err != nil {
		return Session{}, mercadoPagoError(err, "reading preapproval plan "+req.Plan.MercadoPagoPlanID)
	}
	ar := plan.AutoRecurring
	reason := plan.Reason
	if reason == "" {
		reason = "n8n " + req.Plan.Name
	}
	pre, err := p.preapprovals.Create(ctx, preapproval.Request{
		Reason:            reason,
		ExternalReference: reference{client: req.ClientID, plan: req.Plan.ID, locale: req.Locale}.String(),
		PayerEmail:        req.Email,
		BackURL:           req.SuccessURL,
		Status:            "pending",
		AutoRecurring: &preapproval.AutoRecurringRequest{Frequency: ar.Frequency, FrequencyType: ar.FrequencyType,
			TransactionAmount: ar.TransactionAmount, CurrencyID: ar.CurrencyID},
	})
	if err != nil {
		return Session{}, mercadoPagoError(err, "creating a subscription")
	}
	if pre.InitPoint == "" {
		return Session{}, apperr.New(apperr.Unavailable, "MercadoPago returned a subscription without an init_point")
	}
	return Session{ID: pre.ID, URL: pre.InitPoint}, nil
}

func (p *mercadoPagoProvider) cancel(ctx context.Context, id string) error {
	_, err := p.preapprovals.Update(ctx, id, preapproval.UpdateRequest{Status: "cancelled"})
	return mercadoPagoError(err, "cancelling subscription "+id)
}

func (p *mercadoPagoProvider) changeCard(ctx context.Context, id, cardToken string) error {
	_, err := p.preapprovals.Update(ctx, id, preapproval.UpdateRequest{CardTokenID: cardToken})
	return mercadoPagoError(err, "changing the card of subscription "+id)
}

// reference is what our checkout puts in a subscription's external_reference: whose it
// is and which plan it buys, "client=<id>;plan=<id>[;locale=<l>]" (neither id can hold
// ; or =).
type reference struct{ client, plan, locale string }

func (r reference) String() string {
	s := "client=" + r.client + ";plan=" + r.plan
	if r.locale != "" {
		s += ";locale=" + r.locale
	}
	return s
}

// parseReference reads an external_reference; one not made by our checkout gives nothing.
func parseReference(s string) reference {
	var r reference
	for _, part := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(part, "=")
		switch v = strings.TrimSpace(v); k {
		case "client":
			if clientIDPattern.MatchString(v) {
				r.client = v
			}
		case "plan":
			r.plan = v
		case "locale":
			r.locale = v
		}
	}
	return r
}

// mercadoPagoError turns an API failure into a domain error: the kind says whether a
// retry can help; MercadoPago's own message stays in the cause, for the operator's log.
func mercadoPagoError(err error, doing string) error {
	if err == nil {
		return nil
	}
	var re *mperror.ResponseError
	if !errors.As(err, &re) {
		return apperr.Wrap(apperr.Unavailable, err, "MercadoPago is unreachable (%s)", doing)
	}
	var body struct {
		Message string `json:"message"`
	}
	json.Unmarshal([]byte(re.Message), &body)
	switch status := re.StatusCode; {
	case status == http.StatusNotFound:
		return apperr.Wrap(apperr.NotFound, err, "MercadoPago does not know the object (%s): %s", doing, body.Message)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return apperr.Wrap(apperr.Unavailable, err, "MercadoPago refused the access token (%s): check PROVISIONER_MERCADOPAGO_ACCESS_TOKEN", doing)
	case status == http.StatusTooManyRequests || status >= 500:
		return apperr.Wrap(apperr.Unavailable, err, "MercadoPago is unavailable (%s, HTTP %d)", doing, status)
	default:
		return apperr.Wrap(apperr.Invalid, err, "MercadoPago refused the request (%s): %s", doing, body.Message)
	}
}
