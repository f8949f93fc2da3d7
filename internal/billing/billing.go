// Package billing turns payment providers' events into subscription state: it verifies
// webhooks, keeps them once in an inbox, re-reads what they are about from the provider's
// API, and normalises it onto one set of subscription states. Providers (Stripe,
// MercadoPago) sit behind one small interface, registered by name; the plans they sell
// come from package plans.
package billing
