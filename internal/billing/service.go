package billing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// Deps are the service's collaborators. DB, Queue, Reconciler, Capacity and Plans are
// required; the rest have defaults.
type Deps struct {
	DB         *gorm.DB
	Queue      Enqueuer
	Reconciler Reconciler
	Capacity   Capacity
	Plans      plans.Plans
	Logger     *slog.Logger
	Now        func() time.Time // the clock (default time.Now)
	// HTTPClient calls the provider's API (default: a client with a 30 s timeout).
	HTTPClient *http.Client
	// Metrics registers the webhook and event counters (nil: counted but not exported).
	Metrics prometheus.Registerer
}

// Service is billing: the webhook inbox, the processing jobs, checkout and billing-portal
// sessions, and the operator's view of the inbox.
type Service struct {
	cfg        Config
	store      *store
	providers  map[string]provider
	queue      Enqueuer
	reconciler Reconciler
	capacity   Capacity
	plans      plans.Plans
	log        *slog.Logger
	now        func() time.Time
	metrics    *metrics
	// fresh hands the ids of newly stored events to the dispatcher (Run); when it is full,
	// missed makes the dispatcher look in the database instead.
	fresh  chan int64
	missed atomic.Bool
}

// New returns the billing service with a provider registered for each one configured:
// Stripe when cfg.StripeConfigured(), MercadoPago when cfg.MercadoPago.Configured(). An
// unconfigured provider's webhooks, checkouts and sessions answer Unavailable, and
// everything else works. It returns an error naming a missing dependency.
func New(cfg Config, d Deps) (*Service, error) {
	switch {
	case d.DB == nil:
		return nil, errors.New("billing.New: Deps.DB is required")
	case d.Queue == nil:
		return nil, errors.New("billing.New: Deps.Queue is required")
	case d.Reconciler == nil:
		return nil, errors.New("billing.New: Deps.Reconciler is required")
	case d.Capacity == nil:
		return nil, errors.New("billing.New: Deps.Capacity is required")
	case len(d.Plans) == 0:
		return nil, errors.New("billing.New: Deps.Plans is required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultStripeAPIURL
	}
	if cfg.Policy == (Policy{}) {
		cfg.Policy = Policy{PastDueGrace: DefaultPastDueGrace, Retention: DefaultRetention}
	}
	s := &Service{
		cfg: cfg, store: newStore(d.DB, d.Now), providers: map[string]provider{},
		queue: d.Queue, reconciler: d.Reconciler, capacity: d.Capacity, plans: d.Plans,
		log: d.Logger, now: d.Now, metrics: newMetrics(d.Metrics), fresh: make(chan int64, 4096),
	}
	if cfg.StripeConfigured() {
		s.register(newStripe(cfg, d.HTTPClient))
	}
	if cfg.MercadoPago.Configured() {
		mp, err := newMercadoPago(cfg.MercadoPago, d.HTTPClient)
		if err != nil {
			return nil, err
		}
		s.register(mp)
	}
	return s, nil
}

func (s *Service) register(p provider) { s.providers[p.name()] = p }

// providerTitles are the providers billing knows, by name, as the operator reads them.
var providerTitles = map[string]string{ProviderStripe: "Stripe", ProviderMercadoPago: "MercadoPago"}

// priceFields name, for each provider, the plans file's field of its price id.
var priceFields = map[string]string{ProviderStripe: "stripe_price_id", ProviderMercadoPago: "mercadopago_plan_id"}

// Policy returns the lifecycle policy of the configuration (see Subscription.Intent).
func (s *Service) Policy() Policy { return s.cfg.Policy }

// MaxWebhookBytes is the largest webhook payload accepted; Stripe's events are a few KiB.
const MaxWebhookBytes = 256 << 10

// Receipt acknowledges a webhook delivery.
type Receipt struct {
	EventID   string
	Duplicate bool // the event was already in the inbox: nothing more was done
}

// Webhook verifies a delivery for providerName ("stripe", "mercadopago") and stores its
// event once in the inbox; processing happens later, in a job. query is the delivery
// URL's query string. It returns Invalid for a delivery that is
// unsigned, forged, stale, over MaxWebhookBytes or malformed (nothing is stored; the
// reason is counted), Unavailable when the provider is not configured or the event could
// not be stored (the provider delivers it again), NotFound for an unknown provider.
func (s *Service) Webhook(ctx context.Context, providerName string, body io.Reader, header http.Header, query url.Values) (Receipt, error) {
	p, err := s.provider(providerName)
	if err != nil {
		label := providerName
		if providerTitles[label] == "" {
			label = "unknown" // the path's name is the caller's: never a label of its own
		}
		s.metrics.webhook(label, "unconfigured")
		return Receipt{}, err
	}
	payload, err := io.ReadAll(io.LimitReader(body, MaxWebhookBytes+1))
	if err != nil {
		return Receipt{}, s.reject(providerName, &rejection{"malformed", "the request body could not be read"})
	}
	if len(payload) > MaxWebhookBytes {
		return Receipt{}, s.reject(providerName, &rejection{"too_large", fmt.Sprintf("the payload is over %d KiB", MaxWebhookBytes>>10)})
	}
	in, err := p.verify(payload, header, query)
	if err != nil {
		var rej *rejection
		if errors.As(err, &rej) {
			return Receipt{}, s.reject(providerName, rej)
		}
		return Receipt{}, err
	}
	id, stored, err := s.store.addEvent(ctx, providerName, in, payload)
	if err != nil {
		s.metrics.webhook(providerName, "store_failed")
		return Receipt{}, err
	}
	if !stored {
		s.metrics.webhook(providerName, "duplicate")
		return Receipt{EventID: in.ID, Duplicate: true}, nil
	}
	s.metrics.webhook(providerName, "stored")
	select {
	case s.fresh <- id:
	default:
		s.missed.Store(true)
	}
	return Receipt{EventID: in.ID}, nil
}

func (s *Service) reject(providerName string, r *rejection) error {
	s.metrics.webhook(providerName, r.Reason)
	s.log.Warn("webhook refused", "provider", providerName, "reason", r.Reason)
	return apperr.New(apperr.Invalid, "webhook refused: %s", r.Message)
}

func (s *Service) provider(name string) (provider, error) {
	if p, ok := s.providers[name]; ok {
		return p, nil
	}
	if title, known := providerTitles[name]; known {
		return nil, apperr.New(apperr.Unavailable, "%s is not configured", title)
	}
	return nil, apperr.New(apperr.NotFound, "unknown payment provider %q", name)
}

// CheckoutRequest is what the portal sends to start a purchase.
type CheckoutRequest struct {
	ClientID string // the portal's client id
	Email    string
	Name     string
	Plan     string // a plan id from the plans file
	Locale   string // "en" or "es"; empty lets Stripe choose
	Provider string // "stripe" (the default) or "mercadopago"
}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// Validate returns an Invalid error naming the first field that is wrong.
func (r CheckoutRequest) Validate() error {
	switch {
	case !clientIDPattern.MatchString(r.ClientID):
		return apperr.New(apperr.Invalid, "client_id must be 1-128 letters, digits, _ . : or -")
	case !validEmail(r.Email):
		return apperr.New(apperr.Invalid, "email is not a valid address")
	case len(r.Name) > 200 || strings.ContainsAny(r.Name, "\r\n"):
		return apperr.New(apperr.Invalid, "name must be one line of at most 200 characters")
	case r.Plan == "":
		return apperr.New(apperr.Invalid, "plan is required")
	case r.Locale != "" && r.Locale != "en" && r.Locale != "es":
		return apperr.New(apperr.Invalid, "locale must be en or es")
	case r.Provider != "" && providerTitles[r.Provider] == "":
		return apperr.New(apperr.Invalid, "provider must be stripe or mercadopago")
	}
	return nil
}

func validEmail(e string) bool {
	local, domain, ok := strings.Cut(e, "@")
	return ok && local != "" && strings.Contains(domain, ".") && !strings.ContainsAny(e, " \t\r\n<>,;\"") &&
		!strings.Contains(domain, "@") && len(e) <= 254
}

// Checkout starts a purchase of the plan for the client through the request's provider
// and returns the page to send the customer to: a Stripe Checkout session in subscription
// mode, or a pending MercadoPago subscription (its init_point). It returns Invalid for a
// bad request, an unknown plan or a plan the provider does not sell, Conflict when no host
// has room for another instance (so no one pays for an instance we cannot run),
// Unavailable when the provider is not configured or unreachable.
func (s *Service) Checkout(ctx context.Context, req CheckoutRequest) (Session, error) {
	req.Email, req.Name = strings.TrimSpace(req.Email), strings.TrimSpace(req.Name)
	if req.Provider == "" {
		req.Provider = ProviderStripe
	}
	if err := req.Validate(); err != nil {
		return Session{}, err
	}
	plan, ok := s.plans.Find(req.Plan)
	if !ok {
		return Session{}, apperr.New(apperr.Invalid, "unknown plan %q", req.Plan)
	}
	if !plan.Sells(req.Provider) {
		return Session{}, apperr.New(apperr.Invalid, "plan %q is not sold through %s: it has no %s", plan.ID, providerTitles[req.Provider], priceFields[req.Provider])
	}
	p, err := s.provider(req.Provider)
	if err != nil {
		return Session{}, err
	}
	if err := s.capacity.HasRoom(ctx, plan); err != nil {
		if apperr.Is(err, apperr.Unavailable) {
			return Session{}, apperr.Wrap(apperr.Conflict, err, "no server has room for a new instance right now; please try again later")
		}
		return Session{}, err
	}
	customer, err := s.store.customerOf(ctx, req.Provider, req.ClientID)
	if err != nil && !apperr.Is(err, apperr.NotFound) {
		return Session{}, err
	}
	params := checkoutParams{
		ClientID: req.ClientID, Email: req.Email, Name: req.Name, Locale: req.Locale, Plan: plan, CustomerID: customer,
		SuccessURL: s.cfg.PortalURL + "/checkout/success?session_id={CHECKOUT_SESSION_ID}",
		CancelURL:  s.cfg.PortalURL + "/checkout/cancel",
	}
	if req.Provider == ProviderMercadoPago {
		// MercadoPago has one back URL, and appends the subscription's preapproval_id.
		params.SuccessURL, params.CancelURL = s.cfg.PortalURL+"/checkout/success?provider=mercadopago", ""
	}
	sess, err := p.checkout(ctx, params)
	if apperr.Is(err, apperr.Invalid) || apperr.Is(err, apperr.NotFound) {
		// The provider refused what we built from the plans file: our configuration, not
		// the portal's request, is wrong. The cause reaches the operator's log.
		return Session{}, apperr.Wrap(apperr.Internal, err, "%s refused the checkout for plan %s (price %s)",
			providerTitles[req.Provider], plan.ID, plan.PriceID(req.Provider))
	}
	return sess, err
}

// BillingPortal creates a Stripe billing-portal session for the client, where they manage
// payment methods, invoices and cancellation, and returns its URL. It returns NotFound
// when no Stripe customer is known for the client (a MercadoPago subscription is managed
// with Cancel and ChangeCard instead), Unavailable when Stripe is not configured or
// unreachable.
func (s *Service) BillingPortal(ctx context.Context, clientID string) (Session, error) {
	if !clientIDPattern.MatchString(clientID) {
		return Session{}, apperr.New(apperr.Invalid, "client_id must be 1-128 letters, digits, _ . : or -")
	}
	p, err := s.provider(ProviderStripe)
	if err != nil {
		return Session{}, err
	}
	customer, err := s.store.customerOf(ctx, ProviderStripe, clientID)
	if err != nil {
		return Session{}, err
	}
	return p.(portaler).portal(ctx, customer, s.cfg.PortalURL)
}

// Cancel cancels the subscription with our id at its provider, now. The provider's
// notification, and a re-read queued here in case it is late, bring the cancellation
// into the stored state and the instance's lifecycle. It returns NotFound for an unknown
// subscription, Invalid for a provider whose customers cancel in its own portal
// (Stripe's billing portal), Unavailable when the provider is unreachable.
func (s *Service) Cancel(ctx context.Context, subscriptionID string) (Subscription, error) {
	sub, m, err := s.managed(ctx, subscriptionID)
	if err != nil {
		return Subscription{}, err
	}
	if sub.Status == Canceled {
		return sub, nil
	}
	if err := m.cancel(ctx, sub.ProviderSubscriptionID); err != nil {
		return Subscription{}, err
	}
	s.log.Info("subscription cancelled through the API", "subscription", sub.ID, "provider", sub.Provider)
	return sub, s.reread(ctx, sub, "cancel")
}

// ChangeCard makes the subscription charge the card behind cardTokenID from now on: a
// token the portal made with MercadoPago's card form, so no card number reaches us. It
// returns Invalid for a bad token or a provider that does not take one, NotFound for an
// unknown subscription, Unavailable when the provider is unreachable.
func (s *Service) ChangeCard(ctx context.Context, subscriptionID, cardTokenID string) (Subscription, error) {
	if !cardTokenPattern.MatchString(cardTokenID) {
		return Subscription{}, apperr.New(apperr.Invalid, "card_token_id must be the token of MercadoPago's card form")
	}
	sub, m, err := s.managed(ctx, subscriptionID)
	if err != nil {
		return Subscription{}, err
	}
	if sub.Status == Canceled {
		return Subscription{}, apperr.New(apperr.Conflict, "the subscription is cancelled")
	}
	if err := m.changeCard(ctx, sub.ProviderSubscriptionID, cardTokenID); err != nil {
		return Subscription{}, err
	}
	return sub, s.reread(ctx, sub, "card")
}

var cardTokenPattern = regexp.MustCompile(`^[A-Za-z0-9]{16,64}$`)

func (s *Service) managed(ctx context.Context, subscriptionID string) (Subscription, manager, error) {
	sub, err := s.store.subscription(ctx, subscriptionID)
	if err != nil {
		return Subscription{}, nil, err
	}
	p, err := s.provider(sub.Provider)
	if err != nil {
		return Subscription{}, nil, err
	}
	m, ok := p.(manager)
	if !ok {
		return Subscription{}, nil, apperr.New(apperr.Invalid, "a %s subscription is managed in the billing portal (POST /v1/billing-portal-sessions)", providerTitles[sub.Provider])
	}
	return sub, m, nil
}

// reread stores an inbox event of our own that re-reads the subscription, so the change
// just made reaches the stored state even when the provider's notification is late.
func (s *Service) reread(ctx context.Context, sub Subscription, why string) error {
	now := s.now().UTC()
	in := inbound{ID: fmt.Sprintf("provisioner-%s-%s-%d", why, sub.ProviderSubscriptionID, now.UnixNano()), Type: rereadType, Created: now}
	payload := fmt.Sprintf(`{"type":%q,"action":"provisioner.%s","data":{"id":%q}}`, rereadType, why, sub.ProviderSubscriptionID)
	id, _, err := s.store.addEvent(ctx, sub.Provider, in, []byte(payload))
	if err != nil {
		return err
	}
	select {
	case s.fresh <- id:
	default:
		s.missed.Store(true)
	}
	return nil
}

// Events lists inbox events, oldest first, one page at a time; the second result is the
// cursor of the next page ("" on the last). It returns Invalid for a bad filter.
func (s *Service) Events(ctx context.Context, f EventFilter) ([]Event, string, error) {
	return s.store.listEvents(ctx, f)
}

// Replay makes an event pending again and enqueues its processing, which re-reads the
// subscription and reconciles it: after a plans-file fix, or to repeat a reconciliation.
// It returns NotFound for an unknown id.
func (s *Service) Replay(ctx context.Context, id int64) (Event, error) {
	if _, err := s.store.event(ctx, id); err != nil {
		return Event{}, err
	}
	if err := s.store.resetForReplay(ctx, id); err != nil {
		return Event{}, err
	}
	if _, err := s.queue.Insert(ctx, processArgs{EventID: id, Replay: s.now().UnixNano()}, nil); err != nil {
		return Event{}, fmt.Errorf("enqueueing billing event %d: %w", id, err)
	}
	if err := s.store.markEnqueued(ctx, []int64{id}); err != nil {
		return Event{}, err
	}
	row, err := s.store.event(ctx, id)
	if err != nil {
		return Event{}, err
	}
	s.log.Info("billing event replayed", "event", id, "provider_event", row.EventID)
	return row.event(), nil
}

// Subscription returns the stored subscription with our id, or NotFound.
func (s *Service) Subscription(ctx context.Context, id string) (Subscription, error) {
	return s.store.subscription(ctx, id)
}
