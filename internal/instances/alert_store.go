package instances

import (
	"context"
	"errors"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// operatorAlert is what the operator has been told about, by key, so that a restarted
// process does not tell them again.
type operatorAlert struct {
	Key       string `gorm:"primaryKey"`
	Detail    string
	AlertedAt time.Time
}

// TableName tells gorm the table.
func (operatorAlert) TableName() string { return "operator_alerts" }

// AlertedAt returns when the operator was last alerted under key (zero: never).
func (s *Store) AlertedAt(ctx context.Context, key string) (time.Time, error) {
	var a operatorAlert
	err := s.db.WithContext(ctx).Where("key = ?", key).Take(&a).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return time.Time{}, nil
	}
	return a.AlertedAt, err
}

// MarkAlerted records that the operator was alerted under key at at.
func (s *Store) MarkAlerted(ctx context.Context, key, detail string, at time.Time) error {
	return s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns: []clause.Column{{Name: "key"}}, DoUpdates: clause.AssignmentColumns([]string{"detail", "alerted_at"}),
	}).Create(&operatorAlert{Key: key, Detail: detail, AlertedAt: at}).Error
}

// AlertedKeys returns the keys under prefix the operator has been alerted about.
func (s *Store) AlertedKeys(ctx context.Context, prefix string) (map[string]bool, error) {
	var keys []string
	err := s.db.WithContext(ctx).Model(&operatorAlert{}).Where(`key LIKE ? ESCAPE '\'`, likePrefix(prefix)).Pluck("key", &keys).Error
	out := make(map[string]bool, len(keys))
	for _, k := range keys {
		out[k] = true
	}
	return out, err
}

// ForgetAlerts drops the keys under prefix that are not in keep: the conditions that
// ended, so that they are alerted again if they come back.
func (s *Store) ForgetAlerts(ctx context.Context, prefix string, keep map[string]bool) error {
	known, err := s.AlertedKeys(ctx, prefix)
	if err != nil {
		return err
	}
	var gone []string
	for k := range known {
		if !keep[k] {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return s.db.WithContext(ctx).Where("key IN ?", gone).Delete(&operatorAlert{}).Error
}

// likePrefix is a LIKE pattern matching strings that start with prefix, with LIKE's
// wildcards in prefix escaped.
func likePrefix(prefix string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(prefix) + "%"
}
