package plans

import (
	"os"
	"path/filepath"
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
				if p, ok := plans.ByStripePrice("price_456"); !ok || p.ID != "pro" || p.N8nImage != DefaultN8nImage {
					t.Fatalf("pro plan = %+v", p)
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
