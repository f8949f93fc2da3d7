package billing

import (
	"context"
	"net/http"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// provider is one payment gateway behind the inbox: Stripe now, MercadoPago next. The
// inbox, the processing job and the subscription store are shared; a provider only
// verifies deliveries, says what an event is about, and reads state from its API.
type provider interface {
	name() string
	// verify checks a delivery's signature and returns the event's identity, or a
	// *rejection saying why the delivery is refused.
	verify(payload []byte, header http.Header) (inbound, error)
	// interpret says which subscription a stored event is about and what it tells of the
	// client; an event the service does not act on comes back not relevant.
	interpret(eventType string, payload []byte) (interpretation, error)
	// fetch reads the subscription's current state from the provider's API: NotFound or
	// Invalid when it never will be readable, Unavailable when a retry may help.
	fetch(ctx context.Context, subscriptionID string) (remoteSubscription, error)
	checkout(ctx context.Context, req checkoutParams) (Session, error)
	portal(ctx context.Context, customerID, returnURL string) (Session, error)
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
	ID               string
	CustomerID       string
	Status           Status
	PriceIDs         []string
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
