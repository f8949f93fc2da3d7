package main

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail"
	"github.com/n8n-provisioner/n8n-provisioner/internal/metrics"
)

// The route templates of each HTTP dependency: the collections whose next path segment is
// an id, so that the operation label names the endpoint and never a node, VM, zone,
// record or customer (provisioner_dependency_request_duration_seconds).
var (
	proxmoxRoutes    = metrics.Routes{Prefix: "/api2/json", IDsAfter: []string{"nodes", "qemu", "lxc", "tasks", "storage"}}
	cloudflareRoutes = metrics.Routes{Prefix: "/client/v4", IDsAfter: []string{"zones", "dns_records"}}
	paymentRoutes    = metrics.Routes{IDsAfter: []string{
		"customers", "subscriptions", "events", "invoices", "prices", "sessions", // Stripe
		"preapproval", "payments", "authorized_payments", "preapproval_plan", // MercadoPago
	}}
	// A webhook URL's path is its credential.
	alertRoutes = metrics.Routes{Opaque: true}
)

// metered returns hc with its transport recorded as calls to dependency, when the process
// records them (serve); otherwise hc itself.
func (p providers) metered(hc *http.Client, dependency string, routes metrics.Routes) *http.Client {
	if p.deps == nil {
		return hc
	}
	c := *hc
	c.Transport = p.deps.Transport(dependency, routes, hc.Transport)
	return &c
}

// paymentsHTTPClient is billing's client to the payment providers' APIs, each call
// recorded under the provider whose configured API host it goes to.
func paymentsHTTPClient(deps *metrics.Dependencies, cfg billing.Config) *http.Client {
	mercadoPago := ""
	if u, err := url.Parse(cfg.MercadoPago.APIURL); err == nil && cfg.MercadoPago.APIURL != "" {
		mercadoPago = u.Host
	}
	name := func(host string) string {
		if host == mercadoPago {
			return "mercadopago"
		}
		return "stripe"
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: deps.TransportByHost(name, paymentRoutes, nil)}
}

// meteredSender records each SMTP send as a call to the smtp dependency.
type meteredSender struct {
	next sender
	deps *metrics.Dependencies
}

func (m meteredSender) Send(ctx context.Context, msg mail.Message) error {
	start := time.Now()
	err := m.next.Send(ctx, msg)
	m.deps.Observe("smtp", "send", time.Since(start), err)
	return err
}
