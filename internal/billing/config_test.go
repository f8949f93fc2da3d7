package billing

import (
	"strings"
	"testing"
	"time"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	const (
		key  = "sk_test_config_0123456789"
		sec1 = "whsec_config_old_0123456789"
		sec2 = "whsec_config_new_0123456789"
	)
	stripeEnv := map[string]string{
		"PROVISIONER_STRIPE_SECRET_KEY":     key,
		"PROVISIONER_STRIPE_WEBHOOK_SECRET": sec1 + ", " + sec2,
		"PROVISIONER_PORTAL_URL":            "https://portal.example.com/",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for kk, vv := range stripeEnv {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // the variable the error must name
		check   func(t *testing.T, c Config)
	}{
		{"nothing set", map[string]string{}, "", func(t *testing.T, c Config) {
			if c.StripeConfigured() || c.Policy.PastDueGrace != 72*time.Hour || c.Policy.Retention != 720*time.Hour || c.APIURL != DefaultStripeAPIURL {
				t.Errorf("defaults = %v", c)
			}
		}},
		{"stripe", stripeEnv, "", func(t *testing.T, c Config) {
			if !c.StripeConfigured() || len(c.WebhookSecrets) != 2 || c.WebhookSecrets[1] != sec2 || c.PortalURL != "https://portal.example.com" {
				t.Errorf("config = %v", c)
			}
			if s := c.String(); strings.Contains(s, key) || strings.Contains(s, sec1) {
				t.Errorf("String() shows a secret: %s", s)
			}
		}},
		{"stripe-mock", with("PROVISIONER_STRIPE_API_URL", "http://127.0.0.1:12111"), "", func(t *testing.T, c Config) {
			if c.APIURL != "http://127.0.0.1:12111" {
				t.Errorf("api url = %s", c.APIURL)
			}
		}},
		{"days", with("PROVISIONER_RETENTION", "30d"), "", func(t *testing.T, c Config) {
			if c.Policy.Retention != 30*24*time.Hour {
				t.Errorf("retention = %s", c.Policy.Retention)
			}
		}},
		{"publishable key", with("PROVISIONER_STRIPE_SECRET_KEY", "pk_test_abcdefghijkl"), "PROVISIONER_STRIPE_SECRET_KEY", nil},
		{"key without secret", with("PROVISIONER_STRIPE_WEBHOOK_SECRET", ""), "PROVISIONER_STRIPE_WEBHOOK_SECRET", nil},
		{"secret without key", with("PROVISIONER_STRIPE_SECRET_KEY", ""), "PROVISIONER_STRIPE_SECRET_KEY", nil},
		{"bad secret", with("PROVISIONER_STRIPE_WEBHOOK_SECRET", sec1+",hunter2hunter2hunter2"), "PROVISIONER_STRIPE_WEBHOOK_SECRET", nil},
		{"no portal", with("PROVISIONER_PORTAL_URL", ""), "PROVISIONER_PORTAL_URL", nil},
		{"relative portal", with("PROVISIONER_PORTAL_URL", "portal.example.com"), "PROVISIONER_PORTAL_URL", nil},
		{"api url", with("PROVISIONER_STRIPE_API_URL", "ftp://x"), "PROVISIONER_STRIPE_API_URL", nil},
		{"grace", with("PROVISIONER_PAST_DUE_GRACE", "three days"), "PROVISIONER_PAST_DUE_GRACE", nil},
		{"negative", with("PROVISIONER_RETENTION", "-1h"), "PROVISIONER_RETENTION", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ConfigFromEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to name %s", err, tt.wantErr)
				}
				for _, secret := range []string{key, sec1, "hunter2"} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("the error quotes a secret: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestIntent(t *testing.T) {
	t.Parallel()
	since := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	ended := since.Add(time.Hour)
	p := Policy{PastDueGrace: 72 * time.Hour, Retention: 30 * 24 * time.Hour}
	tests := []struct {
		status   Status
		canceled *time.Time
		want     Intent
	}{
		{Active, nil, Intent{Run: true}},
		{Trialing, nil, Intent{Run: true}},
		{PastDue, nil, Intent{Run: true, WarnPastDue: true, SuspendAt: since.Add(72 * time.Hour)}},
		{Unpaid, nil, Intent{SuspendAt: since}},
		{IncompleteExpired, nil, Intent{SuspendAt: since}},
		{Canceled, &ended, Intent{SuspendAt: since, DeleteAt: ended.Add(30 * 24 * time.Hour)}},
		{Canceled, nil, Intent{SuspendAt: since, DeleteAt: since.Add(30 * 24 * time.Hour)}},
		{Incomplete, nil, Intent{}},
	}
	for _, tt := range tests {
		got := Subscription{Status: tt.status, StatusSince: since, CanceledAt: tt.canceled}.Intent(p)
		if got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.status, got, tt.want)
		}
		if !tt.status.Valid() {
			t.Errorf("%s not valid", tt.status)
		}
	}
	if Status("paused").Valid() {
		t.Error("paused is not one of ours")
	}
}

func TestMercadoPagoConfigFromEnv(t *testing.T) {
	t.Parallel()
	const (
		token = "APP_USR-1234567890123456-120709-0123456789abcdef0123456789abcdef-100200300"
		sec1  = "mp-old-secret-0123456789abcdef"
		sec2  = "mp-new-secret-0123456789abcdef"
	)
	base := map[string]string{
		"PROVISIONER_MERCADOPAGO_ACCESS_TOKEN":   token,
		"PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET": sec1 + "," + sec2,
		"PROVISIONER_PORTAL_URL":                 "https://portal.example.com",
	}
	with := func(k, v string) func(string) string {
		return func(name string) string {
			if name == k {
				return v
			}
			return base[name]
		}
	}
	c, err := ConfigFromEnv(func(name string) string { return base[name] })
	if err != nil || !c.MercadoPago.Configured() || c.StripeConfigured() || len(c.MercadoPago.WebhookSecrets) != 2 ||
		c.MercadoPago.WebhookSecrets[0] != sec1 || c.MercadoPago.APIURL != DefaultMercadoPagoAPIURL {
		t.Fatalf("config = %v, %v", c, err)
	}
	if s := c.String(); strings.Contains(s, token) || strings.Contains(s, sec1) || strings.Contains(s, sec2) {
		t.Errorf("String() shows a secret: %s", s)
	}
	for name, tc := range map[string]struct {
		getenv  func(string) string
		wantErr string
	}{
		"a Stripe key as token": {with("PROVISIONER_MERCADOPAGO_ACCESS_TOKEN", "sk_test_123456789012"), "PROVISIONER_MERCADOPAGO_ACCESS_TOKEN"},
		"token without secret":  {with("PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET", ""), "PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET"},
		"secret without token":  {with("PROVISIONER_MERCADOPAGO_ACCESS_TOKEN", ""), "PROVISIONER_MERCADOPAGO_ACCESS_TOKEN"},
		"short secret":          {with("PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET", "short"), "PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET"},
		"no portal":             {with("PROVISIONER_PORTAL_URL", ""), "PROVISIONER_PORTAL_URL"},
		"bad api url":           {with("PROVISIONER_MERCADOPAGO_API_URL", "ftp://x"), "PROVISIONER_MERCADOPAGO_API_URL"},
	} {
		_, err := ConfigFromEnv(tc.getenv)
		if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want it to start with %s", name, err, tc.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), token) || strings.Contains(err.Error(), sec1)) {
			t.Errorf("%s: the error quotes a secret: %v", name, err)
		}
	}
}
