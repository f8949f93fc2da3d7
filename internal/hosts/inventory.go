package hosts

import (
	"context"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// Inventory is the Store behind a Checker: a host is stored only after its checks pass,
// with what its VM has. The REST API and the CLI add hosts through it.
type Inventory struct {
	*Store
	checker *Checker
	why     string // why there is no checker, for the refusal
}

// NewInventory returns the inventory of store whose hosts checker verifies. A nil checker
// (Proxmox not configured) refuses every Add and Refresh, saying why.
func NewInventory(store *Store, checker *Checker, why string) *Inventory {
	return &Inventory{Store: store, checker: checker, why: why}
}

// Add checks h (see Checker.Check) and stores it with its VM's resources. Errors: Invalid
// for a bad field or a failed check (nothing is stored), Conflict when the name or the VM
// is taken, Unavailable when Proxmox cannot be asked.
func (i *Inventory) Add(ctx context.Context, h Host) (Host, error) {
	if h.State == "" {
		h.State = Active
	}
	if err := h.Validate(); err != nil {
		return Host{}, err
	}
	if _, err := i.Get(ctx, h.Name); err == nil {
		return Host{}, apperr.New(apperr.Conflict, "a host named %s exists already", h.Name)
	}
	r, err := i.check(ctx, h)
	if err != nil {
		return Host{}, err
	}
	h.MemoryMB, h.CPUs, h.DiskGB = r.MemoryMB, r.CPUs, r.DiskGB
	return i.Store.Add(ctx, h)
}

// Refresh runs the checks on the stored host called name again and records what its VM
// has now (after the VM was resized, say). Errors as for Add, and NotFound.
func (i *Inventory) Refresh(ctx context.Context, name string) (Host, error) {
	h, err := i.Get(ctx, name)
	if err != nil {
		return h, err
	}
	r, err := i.check(ctx, h)
	if err != nil {
		return Host{}, err
	}
	return i.SetResources(ctx, name, r)
}

func (i *Inventory) check(ctx context.Context, h Host) (Resources, error) {
	if i.checker == nil {
		return Resources{}, apperr.New(apperr.Unavailable, "host %s cannot be checked: %s", h.Name, i.why)
	}
	return i.checker.Check(ctx, h)
}
