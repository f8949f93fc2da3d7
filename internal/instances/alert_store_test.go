package instances_test

import (
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
)

// The remembered alerts on both databases: upsert, prefix listing (LIKE's wildcards in a
// prefix are literal) and forgetting what ended.
func TestRememberedAlerts(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		store, ctx := setup(t, db)
		at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
		if got, err := store.AlertedAt(ctx, "drift|x"); err != nil || !got.IsZero() {
			t.Fatalf("never alerted: %v, %v", got, err)
		}
		for _, k := range []string{"drift|a", "drift|b", "drift_x", "throttled|a"} {
			if err := store.MarkAlerted(ctx, k, "detail", at); err != nil {
				t.Fatal(err)
			}
		}
		if err := store.MarkAlerted(ctx, "drift|a", "again", at.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, err := store.AlertedAt(ctx, "drift|a"); err != nil || !got.Equal(at.Add(time.Hour)) {
			t.Errorf("after the upsert: %v, %v", got, err)
		}
		keys, err := store.AlertedKeys(ctx, "drift|")
		if err != nil || len(keys) != 2 || !keys["drift|a"] || !keys["drift|b"] {
			t.Fatalf("keys under drift| = %v, %v", keys, err)
		}
		if err := store.ForgetAlerts(ctx, "drift|", map[string]bool{"drift|b": true}); err != nil {
			t.Fatal(err)
		}
		keys, _ = store.AlertedKeys(ctx, "drift")
		if len(keys) != 2 || !keys["drift|b"] || !keys["drift_x"] {
			t.Errorf("after forgetting drift|a: %v", keys)
		}
	})
}
