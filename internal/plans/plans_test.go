package plans

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadDefault(t *testing.T) {
	t.Parallel()
	plans, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	p, ok := plans.Find("starter")
	if !ok || p.CPUs != 0.5 || p.MemoryMB != 1024 || !strings.Contains(p.Price, "10") {
		t.Fatalf("default plans = %+v", plans)
	}
	if err := plans.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFile(t *testing.T) {
	t.Parallel()
	good := `plans:
  - id: starter
    name: Starter
    cpus: 0.5
    memory_mb: 1024
    price: USD 10/month
    stripe_price_id: price_123
    n8n_image: docker.n8n.io/n8nio/n8n:2.8.4
  - id: pro
    name: Pro
    cpus: 2
    memory_mb: 4096
    price: USD 40/month
    stripe_price_id: price_456
    mercadopago_plan_id: 2c9380848f0d6a2c018f1b2e3a4b05d1
    mercadopago_price: ARS 40000/month
  - id: latam
    name: Latam
    cpus: 1
    memory_mb: 2048
    price: ARS 20000/month
    mercadopago_plan_id: 2c9380848f0d6a2c018f1b2e3a4b05d2
`
	tests := []struct {
		name, body, wantErr string
	}{
		{"good", good, ""},
		{"latest image", strings.Replace(good, "2.8.4", "latest", 1), "never latest"},
		{"untagged image", strings.Replace(good, ":2.8.4", "", 1), "pinned"},
		{"small memory", strings.Replace(good, "memory_mb: 1024", "memory_mb: 512", 1), "memory_mb"},
		{"unknown field", strings.Replace(good, "cpus: 2", "cpu: 2", 1), "cpu"},
		{"duplicate id", strings.Replace(good, "id: pro", "id: starter", 1), "duplicate id"},
		{"duplicate price", strings.Replace(good, "price_456", "price_123", 1), "another plan"},
		{"duplicate mercadopago plan", strings.Replace(good, "05d2", "05d1", 1), "another plan"},
		{"bad mercadopago plan id", strings.Replace(good, "2c9380848f0d6a2c018f1b2e3a4b05d2", "../x", 1), "mercadopago_plan_id"},
		{"bad mercadopago price", strings.Replace(good, "ARS 40000/month", "forty thousand", 1), "mercadopago_price"},
		{"price without id", strings.Replace(good, "price: ARS 20000/month", "price: ARS 20000/month\n    stripe_price: USD 20", 1), "needs that provider"},
		{"empty", "plans: []\n", "no plans"},
		{"not yaml", "plans: [", "parsing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "plans.yaml")
			os.WriteFile(path, []byte(tt.body), 0o600)
			plans, err := Load(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p, ok := plans.ByPrice(Stripe, "price_456"); !ok || p.ID != "pro" || p.N8nImage != DefaultN8nImage {
					t.Fatalf("pro plan = %+v", p)
				}
				if p, ok := plans.ByPrice(MercadoPago, "2c9380848f0d6a2c018f1b2e3a4b05d2"); !ok || p.ID != "latam" || p.Sells(Stripe) {
					t.Fatalf("latam plan = %+v", p)
				}
				if _, ok := plans.ByPrice(MercadoPago, "price_456"); ok {
					t.Fatal("a Stripe price found a MercadoPago plan")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Load("/nonexistent/plans.yaml"); err == nil {
		t.Fatal("missing file accepted")
	}
}

// The catalogue says which providers sell each plan, with each one's price and currency.
func TestOffersInJSON(t *testing.T) {
	t.Parallel()
	p := Plan{ID: "pro", Name: "Pro", Price: "USD 40/month", StripePriceID: "price_456",
		MercadoPagoPlanID: "2c93", MercadoPagoPrice: "ARS 40000.50/month"}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID        string  `json:"id"`
		Providers []Offer `json:"providers"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := []Offer{
		{Provider: Stripe, PriceID: "price_456", Price: "USD 40/month", Currency: "USD", Amount: "40"},
		{Provider: MercadoPago, PriceID: "2c93", Price: "ARS 40000.50/month", Currency: "ARS", Amount: "40000.50"},
	}
	if got.ID != "pro" || !reflect.DeepEqual(got.Providers, want) {
		t.Fatalf("json = %s", b)
	}
	if b, _ := json.Marshal(Plan{ID: "manual"}); !strings.Contains(string(b), `"providers":[]`) {
		t.Fatalf("a plan nobody sells: %s", b)
	}
}
