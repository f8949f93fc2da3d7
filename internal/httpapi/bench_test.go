package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

const (
	benchInstances = 100_000
	benchPerClient = 5
)

// seedBulk stores benchInstances instances for benchInstances/benchPerClient clients in one
// transaction: the store's Create is too slow to seed this many one by one.
func seedBulk(b *testing.B, db *database.DB) {
	b.Helper()
	ctx := context.Background()
	tx, err := db.SQL.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	ph := func(n int) string {
		if db.Dialect == database.Postgres {
			return fmt.Sprintf("$%d", n)
		}
		return "?"
	}
	insClient, err := tx.Prepare(fmt.Sprintf("INSERT INTO clients (id, email, name, locale, created_at) VALUES (%s, %s, '', 'en', %s)", ph(1), ph(2), ph(3)))
	if err != nil {
		b.Fatal(err)
	}
	insInstance, err := tx.Prepare(fmt.Sprintf(`INSERT INTO instances (id, client_id, slug, url, plan_id, cpus, memory_mb,
		n8n_image, status, owner_email, owner_password_sealed, encryption_key_sealed, created_at, updated_at)
		VALUES (%s, %s, %s, 'https://x', 'starter', 0.5, 1024, 'img:1', 'active', 'o@example.com', 's', 's', %s, %s)`,
		ph(1), ph(2), ph(3), ph(4), ph(5)))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	for c := range benchInstances / benchPerClient {
		id := fmt.Sprintf("cus_%d", c)
		if _, err := insClient.Exec(id, id+"@example.com", now); err != nil {
			b.Fatal(err)
		}
	}
	// Interleave clients as real purchases would, so one client's rows are spread out.
	for i := range benchInstances {
		client := fmt.Sprintf("cus_%d", i%(benchInstances/benchPerClient))
		if _, err := insInstance.Exec(instances.NewID(), client, fmt.Sprintf("slug-%d", i), now, now); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	if db.Dialect == database.SQLite {
		db.SQL.Exec("ANALYZE")
	}
}

// BenchmarkListClientInstances measures GET /v1/clients/{id}/instances through the whole
// HTTP stack (auth, store, JSON) over 100,000 stored instances. Target: under 1 ms on SQLite.
func BenchmarkListClientInstances(b *testing.B) {
	for _, d := range dbtest.Dialects {
		b.Run(string(d), func(b *testing.B) {
			db := dbtest.Open(b, d)
			seedBulk(b, db)
			s := httpapi.New(httpapi.Config{
				Instances: instances.NewStore(db.Gorm, nil), Hosts: hosts.NewStore(db.Gorm, nil),
				Plans: plans.DefaultPlans(), Ready: db.Ready, AdminKey: adminKey, PortalKey: portalKey,
			})
			clients := benchInstances / benchPerClient
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				req := httptest.NewRequest("GET", fmt.Sprintf("/v1/clients/cus_%d/instances", (i*7919)%clients), nil)
				req.Header.Set("Authorization", "Bearer "+portalKey)
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
