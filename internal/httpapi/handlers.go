package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	if err := s.cfg.Ready(ctx); err != nil {
		if !apperr.Is(err, apperr.Unavailable) {
			err = apperr.Wrap(apperr.Unavailable, err, "not ready")
		}
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) listPlans(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"plans": s.cfg.Plans})
}

// page reads ?cursor= and ?limit=.
func page(c echo.Context) (instances.Page, error) {
	p := instances.Page{Cursor: c.QueryParam("cursor")}
	if raw := c.QueryParam("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			return p, apperr.New(apperr.Invalid, "limit must be a positive integer")
		}
		p.Limit = n
	}
	return p, nil
}

func (s *Server) listClientInstances(c echo.Context) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	list, next, err := s.cfg.Instances.ListByClient(c.Request().Context(), c.Param("id"), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ViewInstanceList(list, next))
}

func (s *Server) getInstance(c echo.Context) error {
	ctx := c.Request().Context()
	in, err := s.cfg.Instances.Get(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	events, err := s.cfg.Instances.Timeline(ctx, in.ID)
	if err != nil {
		return err
	}
	view := ViewInstance(in)
	view.Timeline = ViewTimeline(events)
	return c.JSON(http.StatusOK, view)
}

func (s *Server) listInstances(c echo.Context) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	f := instances.Filter{
		Status:   instances.Status(c.QueryParam("status")),
		Host:     c.QueryParam("host"),
		ClientID: c.QueryParam("client"),
	}
	list, next, err := s.cfg.Instances.List(c.Request().Context(), f, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ViewInstanceList(list, next))
}

// instanceAction serves an action that takes only the instance id: 202 once it is queued.
func (s *Server) instanceAction(act func(InstanceActions, context.Context, string) (instances.Instance, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		in, err := act(s.cfg.Actions, c.Request().Context(), c.Param("id"))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusAccepted, ViewInstance(in))
	}
}

func (s *Server) upgradeInstance(c echo.Context) error {
	var body struct {
		Image string `json:"image"`
	}
	if err := decode(c, &body); err != nil {
		return err
	}
	in, err := s.cfg.Actions.Upgrade(c.Request().Context(), c.Param("id"), body.Image)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, ViewInstance(in))
}

func (s *Server) listHosts(c echo.Context) error {
	list, err := s.cfg.Hosts.List(c.Request().Context())
	if err != nil {
		return err
	}
	out := make([]HostJSON, 0, len(list))
	for _, h := range list {
		out = append(out, ViewHost(h))
	}
	return c.JSON(http.StatusOK, map[string]any{"hosts": out})
}

func (s *Server) addHost(c echo.Context) error {
	var body newHostJSON
	if err := decode(c, &body); err != nil {
		return err
	}
	h, err := s.cfg.Hosts.Add(c.Request().Context(), hosts.Host{
		Name: body.Name, Node: body.Node, VMID: body.VMID, PublicIP: body.PublicIP,
		IngressURL: body.IngressURL, MaxInstances: body.MaxInstances,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, ViewHost(h))
}

func (s *Server) updateHost(c echo.Context) error {
	var body hostPatchJSON
	if err := decode(c, &body); err != nil {
		return err
	}
	if body.State == nil && body.MaxInstances == nil {
		return apperr.New(apperr.Invalid, "nothing to change: send state and/or max_instances")
	}
	h, err := s.cfg.Hosts.Update(c.Request().Context(), c.Param("name"),
		hosts.Patch{State: body.State, MaxInstances: body.MaxInstances})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ViewHost(h))
}

// refreshHost runs a host's checks again and records its VM's memory, CPUs and disk: after
// the VM was resized in Proxmox, placement commits against the new size.
func (s *Server) refreshHost(c echo.Context) error {
	r, ok := s.cfg.Hosts.(HostRefresher)
	if !ok {
		return apperr.New(apperr.Unavailable, "this server cannot check hosts (no Proxmox is configured)")
	}
	h, err := r.Refresh(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ViewHost(h))
}

// doctor reports drift without repairing it: repairs are the CLI's `doctor --fix`, run by
// an operator who reads the report first.
func (s *Server) doctor(c echo.Context) error {
	report, err := s.cfg.Doctor.Doctor(c.Request().Context(), false, nil)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, report)
}

// pool reports each plan's warm pool: ready and filling members against the targets.
func (s *Server) pool(c echo.Context) error {
	plans, err := s.cfg.Pool.Pool(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"plans": plans})
}

func (s *Server) listBackups(c echo.Context) error {
	ctx := c.Request().Context()
	in, err := s.cfg.Instances.Get(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	list, err := s.cfg.Instances.Backups(ctx, in.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"backups": ViewBackups(list)})
}

// listAllBackups lists backups across instances, newest first: ?status=failed is the
// operator's list of what needs attention.
func (s *Server) listAllBackups(c echo.Context) error {
	f := instances.BackupFilter{Status: instances.BackupStatus(c.QueryParam("status")), Limit: 100}
	switch f.Status {
	case "", instances.BackupLocal, instances.BackupUploaded, instances.BackupFailed, instances.BackupPruned:
	default:
		return apperr.New(apperr.Invalid, "status must be one of local, uploaded, failed, pruned")
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return apperr.New(apperr.Invalid, "limit must be a number from 1 to 1000")
		}
		f.Limit = n
	}
	list, err := s.cfg.Instances.ListBackups(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"backups": ViewBackups(list)})
}

func (s *Server) moveInstance(c echo.Context) error {
	var body struct {
		Host string `json:"host"`
	}
	if err := decode(c, &body); err != nil {
		return err
	}
	if body.Host == "" {
		return apperr.New(apperr.Invalid, "host is required")
	}
	in, err := s.cfg.Actions.Move(c.Request().Context(), c.Param("id"), body.Host)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, ViewInstance(in))
}

func (s *Server) restoreInstance(c echo.Context) error {
	var body struct {
		BackupID string `json:"backup_id"`
		Host     string `json:"host"`
	}
	if err := decode(c, &body); err != nil {
		return err
	}
	in, err := s.cfg.Actions.Restore(c.Request().Context(), c.Param("id"), body.BackupID, body.Host)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, ViewInstance(in))
}
