package main

// `provisioner demo --provider mercadopago`: the same purchase, sold through MercadoPago.
// The portal asks for a checkout with "provider": "mercadopago" and gets the pending
// subscription's init_point; the fake MercadoPago plays the customer subscribing there and
// its notifications, signed with x-signature, reach /webhooks/payments/mercadopago.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/mercadopagotest"
)

// startMercadoPago serves the fake MercadoPago on a loopback port with a preapproval plan
// for the demo's plan, and names it in the plan.
func (d *demo) startMercadoPago() (string, func(), error) {
	token, err := demoToken("TEST-demo-")
	if err != nil {
		return "", nil, err
	}
	if d.mpSecret, err = demoToken("mp-demo-"); err != nil {
		return "", nil, err
	}
	d.mp = &mercadopagotest.Server{Token: token}
	d.plan.MercadoPagoPlanID = mercadopagotest.NewPlanID()
	d.plan.MercadoPagoPrice = "ARS 15000/month"
	d.mp.AddPlan(d.plan.MercadoPagoPlanID, "n8n "+d.plan.Name, 15000, "ARS")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("demo: fake MercadoPago: %w", err)
	}
	srv := &http.Server{Handler: d.mp, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	d.printf("  fake MercadoPago  %s (preapproval plan %s: %s, %s)\n", url, d.plan.MercadoPagoPlanID, d.plan.Name, d.plan.MercadoPagoPrice)
	return url, func() { srv.Close(); <-done }, nil
}

// buyMercadoPago plays purchase i through MercadoPago: the portal's checkout, the customer
// subscribing at the init_point, and MercadoPago's signed notifications.
func (d *demo) buyMercadoPago(ctx context.Context, i int, p *purchase) error {
	d.printf("\nPurchase %d: %s <%s> buys %s (%g CPU, %d MB, %s) with MercadoPago\n", i+1, p.name, p.email, d.plan.Name,
		d.plan.CPUs, d.plan.MemoryMB, d.plan.MercadoPagoPrice)
	var session struct{ ID, URL string }
	body := map[string]any{"client_id": p.client, "email": p.email, "name": p.name, "plan": d.plan.ID, "locale": "es",
		"provider": billing.ProviderMercadoPago}
	if _, err := d.call(ctx, "POST", "/v1/checkout-sessions", d.portalKey, body, http.StatusCreated, &session); err != nil {
		return err
	}
	p.session = session.ID
	d.printf("  portal   POST /v1/checkout-sessions {\"provider\":\"mercadopago\"} → 201, init_point %s\n", session.URL)
	pre, _ := d.mp.Preapproval(session.ID)
	d.printf("  mp       subscription %s: %s, external_reference %q, back_url %s\n", pre.ID, pre.Status, pre.ExternalReference, pre.BackURL)

	if err := d.deliverMercadoPago(ctx, d.mp.Created(session.ID)); err != nil {
		return err
	}
	first, last, _ := strings.Cut(p.name, " ")
	notes, err := d.mp.Subscribe(session.ID, first, last)
	if err != nil {
		return fmt.Errorf("demo: subscribing to %s: %w", session.ID, err)
	}
	p.paidAt = time.Now()
	pre, _ = d.mp.Preapproval(session.ID)
	d.printf("  mp       %s subscribed at the init_point: %s, payer %d, first charge approved\n", p.name, pre.Status, pre.PayerID)
	return d.deliverMercadoPago(ctx, notes...)
}

// deliverMercadoPago posts notifications to the webhook as MercadoPago does.
func (d *demo) deliverMercadoPago(ctx context.Context, notes ...mercadopagotest.Notification) error {
	for _, n := range notes {
		req := n.Request(d.api+"/webhooks/payments/mercadopago", d.mpSecret).WithContext(ctx)
		t0 := time.Now()
		res, err := d.hc.Do(req)
		if err != nil {
			return fmt.Errorf("demo: delivering %s: %w", n.Type, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("demo: notification %s = %d %s", n.Type, res.StatusCode, b)
		}
		d.printf("  webhook  POST /webhooks/payments/mercadopago?data.id=%s&type=%s (%s, x-signature) → 200 in %s\n",
			n.DataID, n.Type, n.Action, time.Since(t0).Round(100*time.Microsecond))
	}
	return nil
}

// cancelMercadoPago shows billing management: the customer cancels in the portal, which
// calls our POST /v1/subscriptions/{id}/cancel; we cancel the subscription through
// MercadoPago's API, re-read it, and the instance is suspended (and deleted after the
// retention period, with a final backup).
func (d *demo) cancelMercadoPago(ctx context.Context, p *purchase) error {
	d.printf("\nCancellation: %s cancels in the portal\n", p.name)
	if p.instance.SubscriptionID == nil {
		return fmt.Errorf("demo: instance %s has no subscription", p.instance.ID)
	}
	sub := *p.instance.SubscriptionID
	t0 := time.Now()
	if _, err := d.call(ctx, "POST", "/v1/subscriptions/"+sub+"/cancel", d.portalKey, nil, http.StatusAccepted, nil); err != nil {
		return err
	}
	pre, _ := d.mp.Preapproval(p.session)
	d.printf("  portal   POST /v1/subscriptions/%s/cancel → 202; MercadoPago subscription %s is %s\n", sub, pre.ID, pre.Status)
	for {
		var in demoInstance
		if _, err := d.call(ctx, "GET", "/v1/instances/"+p.instance.ID, d.portalKey, nil, http.StatusOK, &in); err != nil {
			return err
		}
		if in.Status == "suspended" {
			d.printf("  [%s] +%.2fs  instance suspended (deleted after the retention period, with a final backup)\n", p.label, time.Since(t0).Seconds())
			return nil
		}
		if time.Since(t0) > d.opts.timeout {
			return fmt.Errorf("demo: the instance was not suspended within %s of the cancellation (status %s)", d.opts.timeout, in.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
