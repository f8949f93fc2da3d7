package instances

import (
	"context"
	"errors"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// ErrPoolEmpty means no ready pool member of the plan is on the hosts asked.
var ErrPoolEmpty = errors.New("no ready pool member")

// Claim is who a pool member is handed to.
type Claim struct {
	ClientID, SubscriptionID, Email string
}

// Spec is what a pool member must run to be handed out for a plan: a member started
// before the plan changed is recycled, never given to a customer.
type Spec struct {
	PlanID   string
	CPUs     float64
	MemoryMB int
	DiskGB   int
	Image    string
}

// ClaimMember hands a ready pool member of spec on host to the claimant, atomically: the
// member becomes the subscription's provisioning instance, and two claims never get the
// same one (PostgreSQL skips the rows another claim has locked; SQLite has one writer).
// It returns ErrPoolEmpty when host has none, and a Conflict for which errors.Is(err,
// ErrSubscriptionHasInstance) when the subscription got its instance meanwhile.
func (s *Store) ClaimMember(ctx context.Context, spec Spec, host string, c Claim, message string) (Instance, error) {
	var in Instance
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q := readyMembers(tx, spec).Where("host = ?", host).Order("id").Limit(1)
		if s.db.Dialector.Name() == "postgres" {
			q = q.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"})
		}
		switch err := q.Take(&in).Error; {
		case errors.Is(err, gorm.ErrRecordNotFound):
			return ErrPoolEmpty
		case err != nil:
			return err
		}
		now := s.now()
		res := tx.Model(&Instance{}).Where("id = ? AND status = ?", in.ID, Warm).Updates(map[string]any{
			"status": Provisioning, "client_id": c.ClientID, "subscription_id": c.SubscriptionID,
			"owner_email": c.Email, "updated_at": now,
		})
		switch {
		case database.IsUniqueViolation(res.Error):
			return apperr.Wrap(apperr.Conflict, ErrSubscriptionHasInstance, "subscription already has a live instance")
		case res.Error != nil:
			return res.Error
		case res.RowsAffected == 0:
			return ErrPoolEmpty // taken out of the pool between the read and the write
		}
		in.Status, in.ClientID, in.OwnerEmail, in.UpdatedAt = Provisioning, c.ClientID, c.Email, now
		in.SubscriptionID = &c.SubscriptionID
		return tx.Create(&Event{InstanceID: in.ID, At: now, Kind: "assigned", Message: message}).Error
	})
	return in, err
}

// readyMembers selects the pool members of spec that are started and ready.
func readyMembers(tx *gorm.DB, spec Spec) *gorm.DB {
	return tx.Model(&Instance{}).Where("status = ? AND step = ? AND plan_id = ? AND cpus = ? AND memory_mb = ? AND disk_gb = ? AND n8n_image = ?",
		Warm, stepHealthy, spec.PlanID, spec.CPUs, spec.MemoryMB, spec.DiskGB, spec.Image)
}

// TakeMember takes the ready pool member id out of the pool (status deleting) so that it
// can be destroyed; false when a claim or another recycle took it first.
func (s *Store) TakeMember(ctx context.Context, id string) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Instance{}).Where("id = ? AND status = ? AND step = ?", id, Warm, stepHealthy).
		Updates(map[string]any{"status": Deleting, "updated_at": s.now()})
	return res.RowsAffected == 1, res.Error
}

// PoolMembers returns the instances that belong to no client and are not gone: the pool's
// members, filling or ready, and the ones being recycled.
func (s *Store) PoolMembers(ctx context.Context) ([]Instance, error) {
	var list []Instance
	err := s.db.WithContext(ctx).Where("client_id IS NULL AND status IN ?", []Status{Warm, Deleting}).Order("id").Find(&list).Error
	return list, err
}
