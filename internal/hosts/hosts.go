// Package hosts owns the inventory of n8n hosts (a Proxmox node, the VM that runs the
// containers, its public IP and ingress, its size and state), the checks a host passes
// before it is stored, the placement of new instances on them by the memory and disk their
// plans commit, and the Proxmox guest-agent runner that executes n8nctl on a host.
package hosts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// State says whether a host takes new instances.
type State string

const (
	Active   State = "active"   // takes new instances
	Draining State = "draining" // keeps its instances, takes no new ones
	Disabled State = "disabled" // out of service: no new instances, operator attention
)

// Valid reports whether s is a known state.
func (s State) Valid() bool { return s == Active || s == Draining || s == Disabled }

// Host is one VM that runs customer containers.
type Host struct {
	Name       string
	Node       string
	VMID       int    `gorm:"column:vmid"`
	PublicIP   string `gorm:"column:public_ip"`
	IngressURL string `gorm:"column:ingress_url"`
	// MaxInstances caps how many instances the host runs; 0 sets no cap, so that memory
	// and disk alone decide.
	MaxInstances int
	// MemoryMB and CPUs are the VM's memory and virtual CPUs as Proxmox allocates them,
	// DiskGB its data disk as its n8nctl reports it; 0 means not read yet.
	MemoryMB  int `gorm:"column:memory_mb"`
	CPUs      int `gorm:"column:cpus"`
	DiskGB    int `gorm:"column:disk_gb"`
	State     State
	CreatedAt time.Time
	UpdatedAt time.Time
	// Instances counts the instances that occupy a slot on the host (warm pool members
	// included), MemoryCommittedMB and DiskCommittedGB the sums of their plans' memory and
	// disk quotas; all three are computed, not stored.
	Instances         int `gorm:"->;-:migration"`
	MemoryCommittedMB int `gorm:"->;-:migration"`
	DiskCommittedGB   int `gorm:"->;-:migration"`
}

// TableName tells gorm the table.
func (Host) TableName() string { return "hosts" }

// occupying lists the instance statuses that hold a slot: everything but the ones whose
// container is gone.
const occupying = "status NOT IN ('deleted', 'failed')"

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate returns Invalid naming the first bad field of h.
func (h Host) Validate() error {
	switch {
	case !namePattern.MatchString(h.Name):
		return apperr.New(apperr.Invalid, "name must be a lowercase DNS label (a-z, 0-9, -), got %q", h.Name)
	case !namePattern.MatchString(h.Node):
		return apperr.New(apperr.Invalid, "node must be the Proxmox node name (a-z, 0-9, -), got %q", h.Node)
	case h.VMID < 100 || h.VMID > 999999999:
		return apperr.New(apperr.Invalid, "vmid must be a Proxmox VM id between 100 and 999999999")
	case net.ParseIP(h.PublicIP) == nil || net.ParseIP(h.PublicIP).To4() == nil:
		return apperr.New(apperr.Invalid, "public_ip must be an IPv4 address (it becomes the DNS A record)")
	case !validIngress(h.IngressURL):
		return apperr.New(apperr.Invalid, "ingress_url must be an http or https URL without a path, e.g. https://10.0.0.5")
	case h.MaxInstances < 0 || h.MaxInstances > 10000:
		return apperr.New(apperr.Invalid, "max_instances must be between 0 and 10000")
	case !h.State.Valid():
		return apperr.New(apperr.Invalid, "state must be active, draining or disabled")
	}
	return nil
}

func validIngress(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.User == nil
}

// Store keeps the host inventory.
type Store struct {
	db   *gorm.DB
	now  func() time.Time
	over Overcommit
}

// NewStore returns a host store on db; now is the clock (nil means time.Now).
func NewStore(db *gorm.DB, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: func() time.Time { return now().UTC() }, over: NoOvercommit}
}

// WithOvercommit returns a store that places with overcommit o (see Overcommit).
func (s *Store) WithOvercommit(o Overcommit) *Store {
	c := *s
	c.over = o
	return &c
}

// Add stores a new host (state active unless h says otherwise). It returns Invalid for a
// bad field and Conflict when the name or the Proxmox node and VM id are taken.
func (s *Store) Add(ctx context.Context, h Host) (Host, error) {
	if h.State == "" {
		h.State = Active
	}
	if err := h.Validate(); err != nil {
		return Host{}, err
	}
	h.CreatedAt, h.UpdatedAt, h.Instances, h.MemoryCommittedMB, h.DiskCommittedGB = s.now(), s.now(), 0, 0, 0
	if err := s.db.WithContext(ctx).Omit("Instances", "MemoryCommittedMB", "DiskCommittedGB").Create(&h).Error; err != nil {
		if database.IsUniqueViolation(err) {
			return Host{}, apperr.Wrap(apperr.Conflict, err, "a host named %s or on %s/%d exists already", h.Name, h.Node, h.VMID)
		}
		return Host{}, fmt.Errorf("storing host: %w", err)
	}
	return h, nil
}

func (s *Store) withCounts(db *gorm.DB) *gorm.DB {
	return db.Model(&Host{}).Select("hosts.*, " +
		"(SELECT COUNT(*) FROM instances WHERE " + onHost + ") AS instances, " +
		"(SELECT COALESCE(SUM(instances.memory_mb), 0) FROM instances WHERE " + onHost + ") AS memory_committed_mb, " +
		"(SELECT COALESCE(SUM(instances.disk_gb), 0) FROM instances WHERE " + onHost + ") AS disk_committed_gb")
}

// onHost selects the instances holding a slot on the host of the outer query.
const onHost = "instances.host = hosts.name AND " + occupying

// SetDisk records the size of the host's data disk, as its n8nctl reports it.
func (s *Store) SetDisk(ctx context.Context, name string, gb int) error {
	return s.db.WithContext(ctx).Model(&Host{}).Where("name = ?", name).Update("disk_gb", gb).Error
}

// Resources are a host VM's size, as Proxmox and n8nctl report it; 0 is "not known".
type Resources struct {
	MemoryMB int
	CPUs     int
	DiskGB   int
}

// SetResources records what the host VM has (a field of r that is 0 keeps the stored
// value) and returns the host, or NotFound.
func (s *Store) SetResources(ctx context.Context, name string, r Resources) (Host, error) {
	set := map[string]any{"updated_at": s.now()}
	for col, v := range map[string]int{"memory_mb": r.MemoryMB, "cpus": r.CPUs, "disk_gb": r.DiskGB} {
		if v > 0 {
			set[col] = v
		}
	}
	res := s.db.WithContext(ctx).Model(&Host{}).Where("name = ?", name).Updates(set)
	if res.Error != nil {
		return Host{}, fmt.Errorf("recording the resources of host %s: %w", name, res.Error)
	}
	if res.RowsAffected == 0 {
		return Host{}, apperr.New(apperr.NotFound, "host %q not found", name)
	}
	return s.Get(ctx, name)
}

// List returns every host by name, with its instance count.
func (s *Store) List(ctx context.Context) ([]Host, error) {
	var list []Host
	err := s.withCounts(s.db.WithContext(ctx)).Order("name").Find(&list).Error
	return list, err
}

// Get returns the host called name with its instance count, or NotFound.
func (s *Store) Get(ctx context.Context, name string) (Host, error) {
	return s.get(s.db.WithContext(ctx), name)
}

func (s *Store) get(db *gorm.DB, name string) (Host, error) {
	var h Host
	err := s.withCounts(db).Where("name = ?", name).Take(&h).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return h, apperr.New(apperr.NotFound, "host %q not found", name)
	}
	return h, err
}

// Patch changes some of a host's settings; nil fields stay as they are.
type Patch struct {
	State        *State
	MaxInstances *int
}

// Update applies p to the host called name and returns it. Lowering MaxInstances below the
// current count is allowed: the host simply takes no new instances until it has room.
func (s *Store) Update(ctx context.Context, name string, p Patch) (Host, error) {
	h, err := s.Get(ctx, name)
	if err != nil {
		return h, err
	}
	if p.State != nil {
		h.State = *p.State
	}
	if p.MaxInstances != nil {
		h.MaxInstances = *p.MaxInstances
	}
	if err := h.Validate(); err != nil {
		return Host{}, err
	}
	err = s.db.WithContext(ctx).Model(&Host{}).Where("name = ?", name).
		Updates(map[string]any{"state": h.State, "max_instances": h.MaxInstances, "updated_at": s.now()}).Error
	if err != nil {
		return Host{}, fmt.Errorf("updating host: %w", err)
	}
	return s.Get(ctx, name)
}

// ErrNoRoom means no active host has room for the instance.
var ErrNoRoom = apperr.New(apperr.Unavailable, "no active host has room for another instance")

// Pick returns the host a new instance needing need would go to: among active hosts it
// fits on (see Room), the one with the fewest instances, ties broken by name so placement
// is deterministic. It returns ErrNoRoom when there is none.
func (s *Store) Pick(ctx context.Context, need Need) (Host, error) {
	return s.pick(s.db.WithContext(ctx), need)
}

func (s *Store) pick(db *gorm.DB, need Need) (Host, error) {
	var list []Host
	if err := s.withCounts(db).Where("state = ?", Active).Order("instances, name").Find(&list).Error; err != nil {
		return Host{}, err
	}
	for _, h := range list {
		if s.RoomOf(h).Fits(need) {
			return h, nil
		}
	}
	return Host{}, ErrNoRoom
}

// needOf reads what instance id takes from its host.
func needOf(tx *gorm.DB, id string) (Need, error) {
	var n Need
	err := tx.Table("instances").Select("memory_mb, disk_gb").Where("id = ?", id).Take(&n).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return n, apperr.New(apperr.NotFound, "instance not found")
	}
	return n, err
}

// Assign places the instance instanceID on a host (see Pick) and records it on the
// instance, atomically, so concurrent placements never overfill a host. An instance that
// already has a host keeps it: Assign is idempotent. It returns ErrNoRoom when no host has
// room for its plan.
func (s *Store) Assign(ctx context.Context, instanceID string) (Host, error) {
	return s.assign(ctx, instanceID, func(tx *gorm.DB) (Host, error) {
		need, err := needOf(tx, instanceID)
		if err != nil {
			return Host{}, err
		}
		return s.pick(tx, need)
	})
}

// AssignTo places the instance on the host called name, atomically, when that host is
// active and its plan fits there (ErrNoRoom otherwise); an instance with a host keeps it.
func (s *Store) AssignTo(ctx context.Context, instanceID, name string) (Host, error) {
	return s.assign(ctx, instanceID, func(tx *gorm.DB) (Host, error) {
		need, err := needOf(tx, instanceID)
		if err != nil {
			return Host{}, err
		}
		h, err := s.get(tx, name)
		if err != nil {
			return h, err
		}
		if h.State != Active || !s.RoomOf(h).Fits(need) {
			return h, ErrNoRoom
		}
		return h, nil
	})
}
func (s *Store) assign(ctx context.Context, instanceID string, choose func(tx *gorm.DB) (Host, error)) (Host, error) {
	var picked Host
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Lock the active hosts so that two placements count the same instances in turn
		// (PostgreSQL; SQLite's immediate transactions already serialise writers).
		if s.db.Dialector.Name() == "postgres" {
			var names []string
			if err := tx.Model(&Host{}).Clauses(clause.Locking{Strength: "UPDATE"}).
				Where("state = ?", Active).Order("name").Pluck("name", &names).Error; err != nil {
				return err
			}
		}
		var current struct{ Host *string }
		if err := tx.Table("instances").Select("host").Where("id = ?", instanceID).Take(&current).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return apperr.New(apperr.NotFound, "instance not found")
			}
			return err
		}
		if current.Host != nil {
			var err error
			picked, err = s.get(tx, *current.Host)
			return err
		}
		h, err := choose(tx)
		if err != nil {
			return err
		}
		picked = h
		picked.Instances++
		return tx.Table("instances").Where("id = ? AND host IS NULL", instanceID).
			Updates(map[string]any{"host": h.Name, "updated_at": s.now()}).Error
	})
	return picked, err
}

// Capacity returns the active hosts in placement order (fewest instances first, then by
// name), each with its instance count and committed memory and disk.
func (s *Store) Capacity(ctx context.Context) ([]Host, error) {
	var list []Host
	err := s.withCounts(s.db.WithContext(ctx)).Where("state = ?", Active).Order("instances, name").Find(&list).Error
	return list, err
}

// HasRoom returns nil when some active host has room for an instance needing need, and
// ErrNoRoom otherwise, so that checkout can refuse to sell an instance we could not run.
func (s *Store) HasRoom(ctx context.Context, need Need) error {
	_, err := s.Pick(ctx, need)
	return err
}
