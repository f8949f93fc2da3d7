package billing_test

import (
	"fmt"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
)

// What a past-due subscription asks of its instance: keep running, warn the customer,
// and suspend when the grace period ends unless a payment arrives first.
func ExampleSubscription_Intent() {
	failed := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	sub := billing.Subscription{Status: billing.PastDue, StatusSince: failed}
	intent := sub.Intent(billing.Policy{PastDueGrace: 72 * time.Hour, Retention: 30 * 24 * time.Hour})
	fmt.Println(intent.Run, intent.WarnPastDue, intent.SuspendAt.Format(time.RFC3339))

	sub.Status = billing.Canceled
	intent = sub.Intent(billing.Policy{PastDueGrace: 72 * time.Hour, Retention: 30 * 24 * time.Hour})
	fmt.Println(intent.Run, intent.DeleteAt.Format(time.RFC3339))
	// Output:
	// true true 2024-03-04T09:00:00Z
	// false 2024-03-31T09:00:00Z
}
