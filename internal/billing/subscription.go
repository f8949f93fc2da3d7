package billing

import (
	"context"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// Status is a subscription's state as the payment provider reports it. The values are
// Stripe's; other providers map theirs onto them.
type Status string

const (
	Active            Status = "active"
	Trialing          Status = "trialing"
	PastDue           Status = "past_due"
	Unpaid            Status = "unpaid"
	Canceled          Status = "canceled"
	Incomplete        Status = "incomplete"
	IncompleteExpired Status = "incomplete_expired"
)

// Valid reports whether s is one of the statuses above.
func (s Status) Valid() bool {
	switch s {
	case Active, Trialing, PastDue, Unpaid, Canceled, Incomplete, IncompleteExpired:
		return true
	}
	return false
}

// Subscription is the authoritative state of one customer's subscription, as last read
// from the provider's API. Billing owns the row; instances act on it through Reconciler.
type Subscription struct {
	ID                     string // ours, a UUIDv7; instances.subscription_id points at it
	Provider               string // "stripe"
	ProviderSubscriptionID string // sub_...
	ProviderCustomerID     string // cus_...
	// ClientID is the portal's client id; empty while no event has told us whose the
	// subscription is (Reconciler is not called for such a subscription).
	ClientID string
	Email    string
	Name     string
	Locale   string // "en" or "es"; empty when unknown
	PlanID   string // from the subscription item's price, via the plans file
	Status   Status
	// StatusSince is the provider time of the first event that showed Status: the start
	// of a past_due grace period or of a cancellation's retention.
	StatusSince      time.Time
	CurrentPeriodEnd time.Time
	// CanceledAt is when the subscription ended; set only when Status is canceled.
	CanceledAt *time.Time
	// ProviderUpdatedAt is the creation time of the newest provider event whose re-read
	// was applied: a state is never replaced by one read for an older event.
	ProviderUpdatedAt time.Time
}

// Policy is how long a customer keeps an instance after paying stops.
type Policy struct {
	PastDueGrace time.Duration // past_due: suspend this long after the status began
	Retention    time.Duration // canceled: delete (after a final backup) this long after the end
}

// Intent is what a subscription's state asks of its instance, for the lifecycle jobs.
type Intent struct {
	// Run: the client must have one running instance of the plan (provision, or resume a
	// billing suspension).
	Run bool
	// WarnPastDue: tell the customer by email that payment failed and when the instance
	// will be suspended (SuspendAt).
	WarnPastDue bool
	// SuspendAt, when not zero, is when the instance must be suspended for billing.
	SuspendAt time.Time
	// DeleteAt, when not zero, is when the instance must be deleted with a final backup.
	DeleteAt time.Time
}

// Intent returns what the subscription asks of its instance under p: active and trialing
// run; past_due runs until the grace period ends, with a warning; unpaid and
// incomplete_expired suspend now; canceled suspends now and deletes after retention;
// incomplete (first payment pending) asks for nothing yet.
func (s Subscription) Intent(p Policy) Intent {
	switch s.Status {
	case Active, Trialing:
		return Intent{Run: true}
	case PastDue:
		return Intent{Run: true, WarnPastDue: true, SuspendAt: s.StatusSince.Add(p.PastDueGrace)}
	case Unpaid, IncompleteExpired:
		return Intent{SuspendAt: s.StatusSince}
	case Canceled:
		ended := s.StatusSince
		if s.CanceledAt != nil {
			ended = *s.CanceledAt
		}
		return Intent{SuspendAt: s.StatusSince, DeleteAt: ended.Add(p.Retention)}
	}
	return Intent{}
}

// Reconciler makes a client's instances match a subscription. Billing calls it after
// every processed event with the stored, authoritative state, so it must be idempotent.
// An error of kind Invalid or Conflict marks the event failed (retrying cannot help);
// any other error retries the event with backoff.
type Reconciler interface {
	Reconcile(ctx context.Context, s Subscription) error
}

// Capacity says whether a new instance of plan could be served now: nil when some host
// has room for its memory and disk (or a ready pool member can take it), an Unavailable
// error (hosts.ErrNoRoom) otherwise.
type Capacity interface {
	HasRoom(ctx context.Context, plan plans.Plan) error
}

// Enqueuer inserts jobs; *queue.Queue satisfies it.
type Enqueuer interface {
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}
