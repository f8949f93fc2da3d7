package httpapi

import "github.com/labstack/echo/v4/middleware"

// routes registers the whole API surface; keep it on one screen. Unknown paths get 404
// and wrong methods 405 from echo, in the same JSON error shape (errors.go).
func (s *Server) routes() {
	e := s.echo
	e.Use(middleware.RequestID())
	e.Use(s.observe) // request log and metrics, with the request id
	e.Use(middleware.Recover())
	e.Use(limitBody(maxBodyBytes))

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", s.metricsHandler())
	e.GET("/openapi.yaml", s.openapi)

	portal := s.require(scopePortal)
	e.GET("/v1/plans", s.listPlans, portal)
	e.GET("/v1/clients/:id/instances", s.listClientInstances, portal)
	e.GET("/clients/:id/instances", s.listClientInstances, portal) // the seed's path, kept for old portals
	e.GET("/v1/instances/:id", s.getInstance, portal)
	e.POST("/v1/instances/:id/restart", s.instanceAction(InstanceActions.Restart), portal)

	admin := s.require(scopeAdmin)
	e.GET("/v1/instances", s.listInstances, admin)
	e.POST("/v1/instances/:id/retry", s.instanceAction(InstanceActions.Retry), admin)
	e.POST("/v1/instances/:id/suspend", s.instanceAction(InstanceActions.Suspend), admin)
	e.POST("/v1/instances/:id/resume", s.instanceAction(InstanceActions.Resume), admin)
	e.POST("/v1/instances/:id/backup", s.instanceAction(InstanceActions.Backup), admin)
	e.POST("/v1/instances/:id/upgrade", s.upgradeInstance, admin)
	e.DELETE("/v1/instances/:id", s.instanceAction(InstanceActions.Delete), admin)
	e.GET("/v1/hosts", s.listHosts, admin)
	e.POST("/v1/hosts", s.addHost, admin)
	e.PATCH("/v1/hosts/:name", s.updateHost, admin)
}
