package billing

import (
	"context"
	"io/fs"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/migrations"
)

// 00002 lets billing store a subscription before (or without) its client row, and keeps
// instances.subscription_id a real foreign key; it also migrates down and up again.
func TestMigration00002(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		s := newStore(db.Gorm, time.Now)
		res, err := s.apply(ctx, snapshot{Provider: ProviderStripe, ProviderSubscriptionID: "sub_m", PlanID: "starter", Status: Active,
			Attribution: attribution{ClientID: "client-not-created-yet"}, EventCreated: time.Now(), FetchedAt: time.Now()})
		if err != nil {
			t.Fatalf("a subscription whose client row does not exist yet: %v", err)
		}
		now := time.Now().UTC()
		exec := func(q string, args ...any) error { return db.Gorm.Exec(q, args...).Error }
		if err := exec(`INSERT INTO clients (id, email, name, locale, created_at) VALUES ('c1', 'c1@example.com', '', 'en', ?)`, now); err != nil {
			t.Fatal(err)
		}
		instance := func(id, sub string) error {
			return exec(`INSERT INTO instances (id, client_id, subscription_id, slug, url, plan_id, cpus, memory_mb, n8n_image, status,
				owner_email, owner_password_sealed, encryption_key_sealed, created_at, updated_at)
				VALUES (?, 'c1', ?, ?, 'https://x', 'starter', 0.5, 1024, 'img:1', 'pending', 'o@example.com', 's', 's', ?, ?)`,
				id, sub, "slug-"+id, now, now)
		}
		if err := instance("i1", res.Sub.ID); err != nil {
			t.Fatalf("an instance of the subscription: %v", err)
		}
		// The rebuilt table is still what instances.subscription_id points at, and foreign
		// keys are enforced again on the connection that ran the migration.
		for range 3 {
			if err := instance("i2", "no-such-subscription"); err == nil {
				t.Fatal("an instance of a subscription that does not exist was stored")
			}
		}
		for _, bad := range []string{"active ", "paused"} {
			if err := exec(`UPDATE subscriptions SET status = ? WHERE id = ?`, bad, res.Sub.ID); err == nil {
				t.Fatalf("status %q accepted", bad)
			}
		}

		sub, err := fs.Sub(migrations.FS, string(db.Dialect))
		if err != nil {
			t.Fatal(err)
		}
		dialect := goose.DialectSQLite3
		if db.Dialect == database.Postgres {
			dialect = goose.DialectPostgres
		}
		p, err := goose.NewProvider(dialect, db.SQL, sub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 1); err != nil {
			t.Fatalf("down: %v", err)
		}
		if _, err := p.UpTo(ctx, 2); err != nil {
			t.Fatalf("up again: %v", err)
		}
		if _, err := s.apply(ctx, snapshot{Provider: ProviderStripe, ProviderSubscriptionID: "sub_m2", PlanID: "starter", Status: Active,
			EventCreated: time.Now(), FetchedAt: time.Now()}); err != nil {
			t.Fatalf("after down and up: %v", err)
		}
	})
}
