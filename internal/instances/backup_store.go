package instances

import (
	"context"
	"time"
)

// UpdateBackup sets columns of a backup.
func (s *Store) UpdateBackup(ctx context.Context, id string, set map[string]any) error {
	return s.db.WithContext(ctx).Model(&Backup{}).Where("id = ?", id).Updates(set).Error
}

// BackupFilter selects backups across instances, newest first.
type BackupFilter struct {
	Status     BackupStatus // empty: any
	InstanceID string       // empty: any
	Reason     string       // empty: any
	Since      time.Time    // zero: any
	Limit      int          // default 100, at most 1000
}

// ListBackups returns the backups that match f, newest first.
func (s *Store) ListBackups(ctx context.Context, f BackupFilter) ([]Backup, error) {
	q := s.db.WithContext(ctx).Model(&Backup{})
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.InstanceID != "" {
		q = q.Where("instance_id = ?", f.InstanceID)
	}
	if f.Reason != "" {
		q = q.Where("reason = ?", f.Reason)
	}
	if !f.Since.IsZero() {
		q = q.Where("created_at >= ?", f.Since)
	}
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	var list []Backup
	err := q.Order("created_at DESC").Order("id DESC").Limit(f.Limit).Find(&list).Error
	return list, err
}

// KeptBackups returns every backup that retention has not pruned, by instance, newest
// first: the pruner's work list.
func (s *Store) KeptBackups(ctx context.Context) (map[string][]Backup, error) {
	var list []Backup
	err := s.db.WithContext(ctx).Where("status <> ?", BackupPruned).Order("instance_id").Order("created_at DESC").Find(&list).Error
	by := map[string][]Backup{}
	for _, b := range list {
		by[b.InstanceID] = append(by[b.InstanceID], b)
	}
	return by, err
}

// OnHost returns the instances placed on host in the given statuses, oldest first.
func (s *Store) OnHost(ctx context.Context, host string, statuses ...Status) ([]Instance, error) {
	var list []Instance
	err := s.db.WithContext(ctx).Where("host = ? AND status IN ?", host, statuses).Order("id").Find(&list).Error
	return list, err
}

// FirstEventSince returns when the first event of kind since since happened on instance
// id's timeline, or the zero time.
func (s *Store) FirstEventSince(ctx context.Context, id, kind string, since time.Time) (time.Time, error) {
	var list []Event
	err := s.db.WithContext(ctx).Where("instance_id = ? AND kind = ? AND at >= ?", id, kind, since).Order("at").Limit(1).Find(&list).Error
	if err != nil || len(list) == 0 {
		return time.Time{}, err
	}
	return list[0].At, nil
}
