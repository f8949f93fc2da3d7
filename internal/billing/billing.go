// Package billing turns payment providers' events into subscription state: it verifies
// webhooks, keeps them once in an inbox, normalises them, and holds the plan catalogue the
// portal sells. Stripe is the first provider.
package billing
