package sandbox

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// StopContainer stops instance slug's container on host name behind the provisioner's
// back, through the host's fake docker, as an n8n that died (or a `docker stop` by hand)
// leaves it: the container exists and is not running.
func (w *World) StopContainer(ctx context.Context, name, slug string) error {
	h := w.host(name)
	if h == nil {
		return apperr.New(apperr.NotFound, "sandbox: no host %s", name)
	}
	cmd := exec.CommandContext(ctx, w.dockerPath, "stop", "n8n-"+slug)
	cmd.Env = h.runEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sandbox: stopping n8n-%s on %s: %w: %s", slug, name, err, out)
	}
	return nil
}
