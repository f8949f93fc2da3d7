package billing

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// provider is one payment gateway behind the inbox (Stripe, MercadoPago), registered in
// the service under its name. The inbox, the processing job and the subscription store
// are shared; a provider only verifies deliveries, says what an event is about, and
// reads state from its API.
type provider interface {
	name() string
	// verify checks a delivery's signature and returns the event's identity, or a
	// *rejection saying why the delivery is refused. query is the delivery URL's query
	// (MercadoPago signs its data.id).
	verify(payload []byte, header http.Header, query url.Values) (inbound, error)
	// interpret says which subscription a stored event is about and what it tells of the
	// client; an event the service does not act on comes back not relevant. It may read
	// the provider's API (a MercadoPago payment names its subscription only there).
	interpret(ctx context.Context, eventType string, payload []byte) (interpretation, error)
	// fetch reads the subscription's current state from the provider's API: NotFound or
	// Invalid when it never will be readable, Unavailable when a retry may help.
	fetch(ctx context.Context, subscriptionID string) (remoteSubscription, error)
	checkout(ctx context.Context, req checkoutParams) (Session, error)
}

// portaler is a provider with a hosted billing portal (Stripe's).
type portaler interface {
	portal(ctx context.Context, customerID, returnURL string) (Session, error)
}

// manager is a provider whose subscriptions our API manages (MercadoPago's): the
// customer cancels, and changes the card, through our endpoints, which call the API.
type manager interface {
	cancel(ctx context.Context, subscriptionID string) error
	changeCard(ctx context.Context, subscriptionID, cardTokenID string) error
}

// inbound is a verified delivery's event identity.
type inbound struct {
	ID      string
	Type    string
	Created time.Time
}

// interpretation is what an event is about.
type interpretation struct {
	Relevant       bool
	Why            string // why an event is not relevant
	SubscriptionID string
	Attribution    attribution
}

// remoteSubscription is a subscription as the provider's API returns it, normalised.
type remoteSubscription struct {
	ID         string
	CustomerID string
	Status     Status
	PriceIDs   []string
	// PlanID is the plan our checkout recorded on the subscription; it names the plan
	// when no price id does (a MercadoPago subscription created without a preapproval plan).
	PlanID           string
	CurrentPeriodEnd time.Time
	EndedAt          *time.Time
	Attribution      attribution // from the subscription's metadata, set at checkout
}

// checkoutParams is a checkout session to create.
type checkoutParams struct {
	ClientID, Email, Name, Locale string
	Plan                          plans.Plan
	CustomerID                    string // the client's existing customer, if any
	SuccessURL, CancelURL         string
}

// Session is a hosted page the portal sends the customer to.
type Session struct {
	ID  string // empty for billing-portal sessions, whose id the portal never needs
	URL string
}

// rejection is why a webhook delivery was refused; Reason labels the metric.
type rejection struct {
	Reason  string // unsigned, bad_signature, stale, too_large, malformed
	Message string
}

func (r *rejection) Error() string { return r.Message }
