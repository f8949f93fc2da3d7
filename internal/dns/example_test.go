package dns_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/n8n-provisioner/n8n-provisioner/internal/dns"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns/cloudflaretest"
)

// An instance's record is created once, left alone when nothing changed, and moved when
// its host changes; the fake stands in for Cloudflare.
func ExampleCloudflare_UpsertA() {
	fake := &cloudflaretest.Server{Token: "example-token"}
	srv := httptest.NewServer(fake)
	defer srv.Close()

	cf, err := dns.New(dns.Config{
		APIToken:   "example-token",
		ZoneID:     "023e105f4ecef8ad9ca31a8372d0c353",
		BaseURL:    srv.URL,
		HTTPClient: srv.Client(),
		Proxied:    true,
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	rec, _ := cf.UpsertA(ctx, "acme.n8n.example.com", "203.0.113.10", "n8n instance acme")
	fmt.Println(rec.Name, rec.Content, "proxied:", rec.Proxied, "writes:", fake.Writes())

	rec, _ = cf.UpsertA(ctx, "acme.n8n.example.com", "203.0.113.10", "n8n instance acme")
	fmt.Println("unchanged, writes:", fake.Writes())

	rec, _ = cf.UpsertA(ctx, "acme.n8n.example.com", "203.0.113.20", "n8n instance acme")
	fmt.Println("moved to", rec.Content, "writes:", fake.Writes())

	_ = cf.Delete(ctx, "acme.n8n.example.com")
	_, err = cf.Lookup(ctx, "acme.n8n.example.com")
	fmt.Println(err)
	// Output:
	// acme.n8n.example.com 203.0.113.10 proxied: true writes: 1
	// unchanged, writes: 1
	// moved to 203.0.113.20 writes: 2
	// no dns record acme.n8n.example.com
}
