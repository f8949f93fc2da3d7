package instances

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// Store keeps clients, instances and their timelines in the database.
type Store struct {
	db  *gorm.DB
	now func() time.Time
}

// NewStore returns a store on db. now is the clock (nil means time.Now).
func NewStore(db *gorm.DB, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: func() time.Time { return now().UTC() }}
}

// Page asks for one page of a list: up to Limit items after the item whose id is Cursor.
type Page struct {
	Cursor string
	Limit  int
}

const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

func (p Page) normalize() (Page, error) {
	switch {
	case p.Limit == 0:
		p.Limit = DefaultPageSize
	case p.Limit < 0 || p.Limit > MaxPageSize:
		return p, apperr.New(apperr.Invalid, "limit must be between 1 and %d", MaxPageSize)
	}
	if p.Cursor != "" && !ValidID(p.Cursor) {
		return p, apperr.New(apperr.Invalid, "cursor is not valid")
	}
	return p, nil
}

// Filter narrows the operator's instance list. Empty fields match everything.
type Filter struct {
	Status   Status
	Host     string
	ClientID string
}

// UpsertClient stores c, or updates the name, email and locale of the client with c's id.
// It returns Invalid for a malformed id or email and Conflict when the email belongs to
// another client.
func (s *Store) UpsertClient(ctx context.Context, c Client) (Client, error) {
	if !ValidClientID(c.ID) {
		return Client{}, apperr.New(apperr.Invalid, "client id %q is not valid", c.ID)
	}
	if !strings.Contains(c.Email, "@") {
		return Client{}, apperr.New(apperr.Invalid, "client email is not valid")
	}
	if c.Locale == "" {
		c.Locale = "en"
	}
	// An upsert on the id, so that two events of a new customer processed at once (a
	// subscription's creation and its first invoice) both succeed, where a read then an
	// insert let the second fail. PostgreSQL resolves the race only on the id: a row the
	// other transaction was inserting can still trip the email's index, so a unique
	// violation is tried once more, when the row is there to update; a second one is an
	// email that belongs to another client.
	c.CreatedAt = s.now()
	var err error
	for range 2 {
		if err = s.upsertClient(ctx, &c); !database.IsUniqueViolation(err) {
			break
		}
	}
	if database.IsUniqueViolation(err) {
		return Client{}, apperr.Wrap(apperr.Conflict, err, "email %s belongs to another client", c.Email)
	}
	if err != nil {
		return Client{}, fmt.Errorf("storing client: %w", err)
	}
	return c, nil
}

func (s *Store) upsertClient(ctx context.Context, c *Client) error {
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "id"}},
		DoUpdates: clause.AssignmentColumns([]string{"email", "name", "locale"}),
	}).Create(c).Error
	if err != nil {
		return err
	}
	return s.db.WithContext(ctx).Where("id = ?", c.ID).Take(c).Error
}

// GetClient returns the client with id, or NotFound.
func (s *Store) GetClient(ctx context.Context, id string) (Client, error) {
	var c Client
	if !ValidClientID(id) {
		return c, apperr.New(apperr.NotFound, "client not found")
	}
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&c).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return c, apperr.New(apperr.NotFound, "client not found")
	}
	return c, err
}

// Create stores a new instance and the first entry of its timeline. It returns Conflict
// when the slug is taken.
func (s *Store) Create(ctx context.Context, in *Instance) error {
	if in.ID == "" {
		in.ID = NewID()
	}
	in.CreatedAt, in.UpdatedAt = s.now(), s.now()
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(in).Error; err != nil {
			return err
		}
		message := "instance requested"
		if in.Status == Warm {
			message = "pool member requested for plan " + in.PlanID
		}
		return tx.Create(&Event{InstanceID: in.ID, At: in.CreatedAt, Kind: "created", Message: message}).Error
	})
	switch {
	case database.IsUniqueViolation(err) && strings.Contains(err.Error(), "subscription"):
		return apperr.Wrap(apperr.Conflict, ErrSubscriptionHasInstance, "subscription already has a live instance")
	case database.IsUniqueViolation(err):
		return apperr.Wrap(apperr.Conflict, err, "slug %s is taken", in.Slug)
	}
	return err
}

// ErrSubscriptionHasInstance is the cause of Create's Conflict when the subscription has
// a live instance already (another worker created it at the same moment).
var ErrSubscriptionHasInstance = errors.New("subscription already has a live instance")

// Get returns the instance with id, or NotFound (also for ids of the wrong shape).
func (s *Store) Get(ctx context.Context, id string) (Instance, error) {
	var in Instance
	if !ValidID(id) {
		return in, apperr.New(apperr.NotFound, "instance not found")
	}
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&in).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return in, apperr.New(apperr.NotFound, "instance not found")
	}
	return in, err
}

// ListByClient returns one page of a client's instances, oldest first, and the cursor of
// the next page ("" on the last). It returns NotFound for an unknown client.
func (s *Store) ListByClient(ctx context.Context, clientID string, page Page) ([]Instance, string, error) {
	if _, err := s.GetClient(ctx, clientID); err != nil {
		return nil, "", err
	}
	return s.List(ctx, Filter{ClientID: clientID}, page)
}

// List returns one page of the instances matching f, oldest first, and the next cursor.
func (s *Store) List(ctx context.Context, f Filter, page Page) ([]Instance, string, error) {
	page, err := page.normalize()
	if err != nil {
		return nil, "", err
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", apperr.New(apperr.Invalid, "status %q is not one of %v", f.Status, Statuses)
	}
	q := s.db.WithContext(ctx).Model(&Instance{})
	if f.ClientID != "" {
		q = q.Where("client_id = ?", f.ClientID)
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.Host != "" {
		q = q.Where("host = ?", f.Host)
	}
	if page.Cursor != "" {
		q = q.Where("id > ?", page.Cursor)
	}
	var list []Instance
	if err := q.Order("id").Limit(page.Limit + 1).Find(&list).Error; err != nil {
		return nil, "", fmt.Errorf("listing instances: %w", err)
	}
	next := ""
	if len(list) > page.Limit {
		list = list[:page.Limit]
		next = list[len(list)-1].ID
	}
	return list, next, nil
}

// Timeline returns the events of instance id, oldest first.
func (s *Store) Timeline(ctx context.Context, id string) ([]Event, error) {
	var events []Event
	err := s.db.WithContext(ctx).Where("instance_id = ?", id).Order("id").Find(&events).Error
	return events, err
}

// AppendEvent adds an entry to the timeline of instance id.
func (s *Store) AppendEvent(ctx context.Context, id, kind, message string) error {
	return s.db.WithContext(ctx).Create(&Event{InstanceID: id, At: s.now(), Kind: kind, Message: message}).Error
}

// Apply updates columns of instance id (set maps column names to values; updated_at is
// set too) and, when kind is not empty, appends a timeline event, in one transaction: a
// saga step and its record on the timeline are never half-written.
func (s *Store) Apply(ctx context.Context, id string, set map[string]any, kind, message string) error {
	now := s.now()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if len(set) > 0 {
			set["updated_at"] = now
			res := tx.Model(&Instance{}).Where("id = ?", id).Updates(set)
			if database.IsUniqueViolation(res.Error) {
				return apperr.Wrap(apperr.Conflict, res.Error, "the change clashes with another instance (slug or subscription)")
			}
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected == 0 {
				return apperr.New(apperr.NotFound, "instance not found")
			}
		}
		if kind == "" {
			return nil
		}
		return tx.Create(&Event{InstanceID: id, At: now, Kind: kind, Message: message}).Error
	})
}

// BySubscription returns the instances of a subscription, oldest first.
func (s *Store) BySubscription(ctx context.Context, subscriptionID string) ([]Instance, error) {
	var list []Instance
	err := s.db.WithContext(ctx).Where("subscription_id = ?", subscriptionID).Order("id").Find(&list).Error
	return list, err
}

// HasEvent reports whether the timeline of instance id has an event of kind.
func (s *Store) HasEvent(ctx context.Context, id, kind string) (bool, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&Event{}).Where("instance_id = ? AND kind = ?", id, kind).Count(&n).Error
	return n > 0, err
}

// AddBackup records a backup.
func (s *Store) AddBackup(ctx context.Context, b Backup) error {
	return s.db.WithContext(ctx).Create(&b).Error
}

// FinalBackup returns the instance's final (pre-deletion) backup, or nil.
func (s *Store) FinalBackup(ctx context.Context, instanceID string) (*Backup, error) {
	var list []Backup
	err := s.db.WithContext(ctx).Where("instance_id = ? AND reason = ?", instanceID, "final").Order("created_at DESC").Limit(1).Find(&list).Error
	if err != nil || len(list) == 0 {
		return nil, err
	}
	return &list[0], nil
}

// Backup returns the backup with id, or NotFound.
func (s *Store) Backup(ctx context.Context, id string) (Backup, error) {
	var b Backup
	if !ValidID(id) {
		return b, apperr.New(apperr.NotFound, "backup not found")
	}
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&b).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return b, apperr.New(apperr.NotFound, "backup not found")
	}
	return b, err
}

// Backups returns an instance's backups, newest first.
func (s *Store) Backups(ctx context.Context, instanceID string) ([]Backup, error) {
	var list []Backup
	err := s.db.WithContext(ctx).Where("instance_id = ?", instanceID).Order("created_at DESC").Find(&list).Error
	return list, err
}

// Due returns the instances in status whose column (suspend_at or delete_after) is at or
// before now: the clock-driven jobs' work list.
func (s *Store) Due(ctx context.Context, status Status, column string, now time.Time) ([]Instance, error) {
	if column != "suspend_at" && column != "delete_after" {
		return nil, fmt.Errorf("Due: unknown column %q", column)
	}
	var list []Instance
	err := s.db.WithContext(ctx).Where("status = ? AND "+column+" IS NOT NULL AND "+column+" <= ?", status, now).
		Order("id").Limit(500).Find(&list).Error
	return list, err
}

// Live returns every instance that is not deleted, oldest first: what the doctor compares
// with the hosts and DNS.
func (s *Store) Live(ctx context.Context) ([]Instance, error) {
	var list []Instance
	err := s.db.WithContext(ctx).Where("status <> ?", Deleted).Order("id").Find(&list).Error
	return list, err
}
