// Package httpapi is the service's HTTP surface: the portal's and the operator's REST API
// under /v1 (bearer API keys with a portal and an admin scope), health and readiness,
// Prometheus metrics and the OpenAPI document. Handlers decode, call the domain, and map
// domain error kinds to statuses in one place (errors.go).
package httpapi

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// InstanceStore is what the API reads and writes of instances.
type InstanceStore interface {
	Get(ctx context.Context, id string) (instances.Instance, error)
	ListByClient(ctx context.Context, clientID string, page instances.Page) ([]instances.Instance, string, error)
	List(ctx context.Context, f instances.Filter, page instances.Page) ([]instances.Instance, string, error)
	Timeline(ctx context.Context, id string) ([]instances.Event, error)
	Backups(ctx context.Context, id string) ([]instances.Backup, error)
	ListBackups(ctx context.Context, f instances.BackupFilter) ([]instances.Backup, error)
}

// InstanceActions are the actions on an instance; each runs as a durable job and returns
// the instance as it was when the job was queued.
type InstanceActions interface {
	Retry(ctx context.Context, id string) (instances.Instance, error)
	Suspend(ctx context.Context, id string) (instances.Instance, error)
	Resume(ctx context.Context, id string) (instances.Instance, error)
	Restart(ctx context.Context, id string) (instances.Instance, error)
	Backup(ctx context.Context, id string) (instances.Instance, error)
	Delete(ctx context.Context, id string) (instances.Instance, error)
	Upgrade(ctx context.Context, id, image string) (instances.Instance, error)
	Restore(ctx context.Context, id, backupID, host string) (instances.Instance, error)
	Move(ctx context.Context, id, host string) (instances.Instance, error)
}

// Doctor compares the database with the hosts and DNS (see instances.Service.Doctor).
type Doctor interface {
	Doctor(ctx context.Context, fix bool, progress instances.Progress) (instances.Report, error)
}

// Pool reports the warm pool (see instances.Service.Pool).
type Pool interface {
	Pool(ctx context.Context) ([]instances.PoolPlan, error)
}

// HostStore is what the API reads and writes of the host inventory.
type HostStore interface {
	List(ctx context.Context) ([]hosts.Host, error)
	Add(ctx context.Context, h hosts.Host) (hosts.Host, error)
	Update(ctx context.Context, name string, p hosts.Patch) (hosts.Host, error)
}

// HostRefresher is the part of the inventory that checks a stored host again and records
// what its VM has now (hosts.Inventory). A HostStore without it answers 503 to a refresh.
type HostRefresher interface {
	Refresh(ctx context.Context, name string) (hosts.Host, error)
}

// Config is everything the server needs. Registry may be nil (a fresh one is made).
type Config struct {
	Instances InstanceStore
	Actions   InstanceActions
	Doctor    Doctor
	Pool      Pool
	Hosts     HostStore
	// Billing serves webhooks, checkout and billing-portal sessions and the billing events
	// (nil: those routes answer 503).
	Billing Billing
	Plans   plans.Plans
	// Ready reports whether the service can serve (database reachable, schema current).
	Ready     func(ctx context.Context) error
	AdminKey  string
	PortalKey string
	Logger    *slog.Logger
	Registry  *prometheus.Registry
}

// Server is the HTTP API; it is an http.Handler.
type Server struct {
	cfg     Config
	echo    *echo.Echo
	log     *slog.Logger
	metrics *metrics
	keys    keyring
}

// New returns a server with every route registered.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &Server{
		cfg:     cfg,
		echo:    echo.New(),
		log:     cfg.Logger,
		metrics: newMetrics(cfg.Registry),
		keys:    newKeyring(cfg.AdminKey, cfg.PortalKey),
	}
	s.echo.HideBanner, s.echo.HidePort = true, true
	s.echo.HTTPErrorHandler = s.handleError
	s.routes()
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Routes lists the registered routes as "METHOD /path/{param}", for the OpenAPI check.
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.echo.Routes() {
		out = append(out, r.Method+" "+openAPIPath(r.Path))
	}
	return out
}

// recoverPanic turns a handler's panic into a 500 with the usual error body, and logs it
// once, with its stack, through the service's JSON logger rather than echo's own, so it
// lands with the request's id where every other log line goes.
func (s *Server) recoverPanic() echo.MiddlewareFunc {
	return middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.ErrorContext(c.Request().Context(), "handler panicked",
				"request_id", requestID(c), "method", c.Request().Method, "route", c.Path(),
				"error", err.Error(), "stack", string(stack))
			return err
		},
	})
}
