package billing

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is billing's configuration from PROVISIONER_* variables. The zero value is valid:
// no provider is configured, so webhooks and checkout answer 503 while the rest of the
// service runs. Stripe and MercadoPago may be configured together.
type Config struct {
	// SecretKey is the Stripe API key (sk_live_..., sk_test_... or a restricted rk_...).
	SecretKey string
	// WebhookSecrets are the endpoint's signing secrets (whsec_...); a delivery signed
	// with any of them is accepted, so the operator can roll the secret.
	WebhookSecrets []string
	// APIURL is Stripe's API base URL (stripe-mock or a proxy in tests).
	APIURL string
	// PortalURL is the customer portal's base URL: Checkout returns the customer to
	// PortalURL/checkout/success or /checkout/cancel, the billing portal to PortalURL.
	PortalURL   string
	MercadoPago MercadoPagoConfig
	Policy      Policy
}

// MercadoPagoConfig is MercadoPago's part of the configuration.
type MercadoPagoConfig struct {
	// AccessToken is the application's access token (APP_USR-... in production, TEST-...).
	AccessToken string
	// WebhookSecrets are the application's webhook signing secrets; a notification signed
	// with any of them is accepted, so the operator can roll the secret.
	WebhookSecrets []string
	// APIURL is MercadoPago's API base URL (the fake or a proxy in tests).
	APIURL string
}

// Configured reports whether the access token and a webhook secret are set.
func (c MercadoPagoConfig) Configured() bool { return c.AccessToken != "" && len(c.WebhookSecrets) > 0 }

// DefaultMercadoPagoAPIURL is MercadoPago's production API.
const DefaultMercadoPagoAPIURL = "https://api.mercadopago.com"

// DefaultStripeAPIURL is Stripe's production API.
const DefaultStripeAPIURL = "https://api.stripe.com"

// Defaults of the lifecycle policy.
const (
	DefaultPastDueGrace = 72 * time.Hour
	DefaultRetention    = 30 * 24 * time.Hour
)

// StripeConfigured reports whether the Stripe API key and webhook secret are set.
func (c Config) StripeConfigured() bool { return c.SecretKey != "" && len(c.WebhookSecrets) > 0 }

// String describes the configuration without its secrets, so it can be logged.
func (c Config) String() string {
	return fmt.Sprintf("billing.Config{stripe configured: %t, webhook secrets: %d, api: %s, mercadopago configured: %t, webhook secrets: %d, api: %s, portal: %s, past_due grace: %s, retention: %s}",
		c.StripeConfigured(), len(c.WebhookSecrets), c.APIURL, c.MercadoPago.Configured(), len(c.MercadoPago.WebhookSecrets),
		c.MercadoPago.APIURL, c.PortalURL, c.Policy.PastDueGrace, c.Policy.Retention)
}

// ConfigFromEnv reads PROVISIONER_STRIPE_SECRET_KEY, PROVISIONER_STRIPE_WEBHOOK_SECRET
// (comma-separated), PROVISIONER_STRIPE_API_URL, PROVISIONER_MERCADOPAGO_ACCESS_TOKEN,
// PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET (comma-separated), PROVISIONER_MERCADOPAGO_API_URL,
// PROVISIONER_PORTAL_URL,
// PROVISIONER_PAST_DUE_GRACE (default 72h) and PROVISIONER_RETENTION (default 720h; both
// Go durations, or whole days as "30d"). With none set, Stripe is simply not configured.
// An error names the variable and never quotes a secret.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	env := func(name string) string { return strings.TrimSpace(getenv(name)) }
	c := Config{
		SecretKey: env("PROVISIONER_STRIPE_SECRET_KEY"),
		APIURL:    env("PROVISIONER_STRIPE_API_URL"),
		PortalURL: strings.TrimRight(env("PROVISIONER_PORTAL_URL"), "/"),
	}
	c.WebhookSecrets = secretList(env("PROVISIONER_STRIPE_WEBHOOK_SECRET"))
	if c.SecretKey != "" && !strings.HasPrefix(c.SecretKey, "sk_") && !strings.HasPrefix(c.SecretKey, "rk_") {
		return c, errors.New("PROVISIONER_STRIPE_SECRET_KEY must be a Stripe secret key (sk_...) or restricted key (rk_...)")
	}
	for i, s := range c.WebhookSecrets {
		if !strings.HasPrefix(s, "whsec_") || len(s) < 16 {
			return c, fmt.Errorf("PROVISIONER_STRIPE_WEBHOOK_SECRET: secret %d is not a Stripe signing secret (whsec_...)", i+1)
		}
	}
	switch {
	case c.SecretKey != "" && len(c.WebhookSecrets) == 0:
		return c, errors.New("PROVISIONER_STRIPE_WEBHOOK_SECRET is required when PROVISIONER_STRIPE_SECRET_KEY is set: without it no payment is ever acted on")
	case c.SecretKey == "" && len(c.WebhookSecrets) > 0:
		return c, errors.New("PROVISIONER_STRIPE_SECRET_KEY is required when PROVISIONER_STRIPE_WEBHOOK_SECRET is set: events are re-read from Stripe's API")
	}
	if c.APIURL == "" {
		c.APIURL = DefaultStripeAPIURL
	}
	var err error
	if err = checkURL(c.APIURL); err != nil {
		return c, fmt.Errorf("PROVISIONER_STRIPE_API_URL %w", err)
	}
	if c.MercadoPago, err = mercadoPagoFromEnv(env); err != nil {
		return c, err
	}
	if c.PortalURL == "" && c.StripeConfigured() {
		return c, errors.New("PROVISIONER_PORTAL_URL is required when Stripe is configured: Checkout returns the customer there")
	}
	if c.PortalURL == "" && c.MercadoPago.Configured() {
		return c, errors.New("PROVISIONER_PORTAL_URL is required when MercadoPago is configured: the subscription's back URL is there")
	}
	if c.PortalURL != "" {
		if err := checkURL(c.PortalURL); err != nil {
			return c, fmt.Errorf("PROVISIONER_PORTAL_URL %w", err)
		}
	}
	if c.Policy.PastDueGrace, err = duration(env("PROVISIONER_PAST_DUE_GRACE"), DefaultPastDueGrace); err != nil {
		return c, fmt.Errorf("PROVISIONER_PAST_DUE_GRACE %w", err)
	}
	if c.Policy.Retention, err = duration(env("PROVISIONER_RETENTION"), DefaultRetention); err != nil {
		return c, fmt.Errorf("PROVISIONER_RETENTION %w", err)
	}
	return c, nil
}

// mercadoPagoFromEnv reads MercadoPago's variables; with none set it is not configured.
func mercadoPagoFromEnv(env func(string) string) (MercadoPagoConfig, error) {
	c := MercadoPagoConfig{
		AccessToken:    env("PROVISIONER_MERCADOPAGO_ACCESS_TOKEN"),
		WebhookSecrets: secretList(env("PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET")),
		APIURL:         env("PROVISIONER_MERCADOPAGO_API_URL"),
	}
	if c.AccessToken != "" && !strings.HasPrefix(c.AccessToken, "APP_USR-") && !strings.HasPrefix(c.AccessToken, "TEST-") {
		return c, errors.New("PROVISIONER_MERCADOPAGO_ACCESS_TOKEN must be a MercadoPago access token (APP_USR-... or TEST-...)")
	}
	for i, s := range c.WebhookSecrets {
		if len(s) < 16 || strings.ContainsAny(s, " \t") {
			return c, fmt.Errorf("PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET: secret %d is not a webhook secret signature (at least 16 characters)", i+1)
		}
	}
	switch {
	case c.AccessToken != "" && len(c.WebhookSecrets) == 0:
		return c, errors.New("PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET is required when PROVISIONER_MERCADOPAGO_ACCESS_TOKEN is set: without it no notification is ever acted on")
	case c.AccessToken == "" && len(c.WebhookSecrets) > 0:
		return c, errors.New("PROVISIONER_MERCADOPAGO_ACCESS_TOKEN is required when PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET is set: notifications are re-read from MercadoPago's API")
	}
	if c.APIURL == "" {
		c.APIURL = DefaultMercadoPagoAPIURL
	}
	if err := checkURL(c.APIURL); err != nil {
		return c, fmt.Errorf("PROVISIONER_MERCADOPAGO_API_URL %w", err)
	}
	return c, nil
}

// secretList splits a comma-separated list of secrets, as operators roll them.
func secretList(raw string) []string {
	var out []string
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an http(s) URL, got %q", raw)
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	return nil
}

// duration parses a Go duration or a whole number of days ("30d"); empty gives def.
func duration(raw string, def time.Duration) (time.Duration, error) {
	if raw == "" {
		return def, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(raw, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("must be a duration such as 72h or 30d, got %q", raw)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(raw); err != nil {
			return 0, fmt.Errorf("must be a duration such as 72h or 30d, got %q", raw)
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("must not be negative, got %q", raw)
	}
	return d, nil
}
