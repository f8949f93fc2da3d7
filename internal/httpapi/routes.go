package httpapi

import (
	"github.com/labstack/echo/v4/middleware"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
)

// routes registers the whole API surface; keep it on one screen. Unknown paths get 404
// and wrong methods 405 from echo, in the same JSON error shape (errors.go).
func (s *Server) routes() {
	e := s.echo
	e.Use(middleware.RequestID())
	e.Use(s.observe)                                 // request log and metrics, with the request id
	e.Use(s.recoverPanic())                          // a panic is a 500 and an error in our log, with its stack
	e.Use(skipWebhookLimit(limitBody(maxBodyBytes))) // webhooks have their own, smaller limit

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/openapi.yaml", s.openapi)

	// Payment providers' webhooks (stripe, mercadopago): authenticated by their signature,
	// not by an API key.
	e.POST("/webhooks/payments/:provider", s.webhook(""))
	e.POST("/webhooks/payments/n8n", s.webhook(billing.ProviderStripe))        // the seed's paths, kept as aliases
	e.POST("/webhooks/payments/n8n/cancel", s.webhook(billing.ProviderStripe)) // for Stripe endpoints already set up

	portal := s.require(scopePortal)
	e.GET("/v1/plans", s.listPlans, portal)
	e.GET("/v1/clients/:id/instances", s.listClientInstances, portal)
	e.GET("/clients/:id/instances", s.listClientInstances, portal) // the seed's path, kept for old portals
	e.GET("/v1/instances/:id", s.getInstance, portal)
	e.POST("/v1/instances/:id/restart", s.instanceAction(InstanceActions.Restart), portal)
	e.POST("/v1/checkout-sessions", s.createCheckoutSession, portal)
	e.POST("/v1/billing-portal-sessions", s.createBillingPortalSession, portal)
	e.POST("/v1/subscriptions/:id/cancel", s.cancelSubscription, portal)
	e.POST("/v1/subscriptions/:id/card", s.changeSubscriptionCard, portal)

	admin := s.require(scopeAdmin)
	// Metrics name hosts, plans and traffic: the operator's, not the public's. A
	// Prometheus without the key scrapes PROVISIONER_METRICS_ADDR instead.
	e.GET("/metrics", s.metricsHandler(), admin)
	e.GET("/v1/instances", s.listInstances, admin)
	e.POST("/v1/instances/:id/retry", s.instanceAction(InstanceActions.Retry), admin)
	e.POST("/v1/instances/:id/suspend", s.instanceAction(InstanceActions.Suspend), admin)
	e.POST("/v1/instances/:id/resume", s.instanceAction(InstanceActions.Resume), admin)
	e.POST("/v1/instances/:id/backup", s.instanceAction(InstanceActions.Backup), admin)
	e.POST("/v1/instances/:id/upgrade", s.upgradeInstance, admin)
	e.GET("/v1/instances/:id/backups", s.listBackups, admin)
	e.POST("/v1/instances/:id/restore", s.restoreInstance, admin)
	e.POST("/v1/instances/:id/move", s.moveInstance, admin)
	e.GET("/v1/backups", s.listAllBackups, admin)
	e.DELETE("/v1/instances/:id", s.instanceAction(InstanceActions.Delete), admin)
	e.GET("/v1/hosts", s.listHosts, admin)
	e.POST("/v1/hosts", s.addHost, admin)
	e.PATCH("/v1/hosts/:name", s.updateHost, admin)
	e.POST("/v1/hosts/:name/refresh", s.refreshHost, admin)
	e.GET("/v1/doctor", s.doctor, admin)
	e.GET("/v1/pool", s.pool, admin)
	e.GET("/v1/billing-events", s.listBillingEvents, admin)
	e.POST("/v1/billing-events/:id/replay", s.replayBillingEvent, admin)
}
