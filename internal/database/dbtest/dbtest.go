// Package dbtest gives tests a fresh, migrated database on each dialect: a SQLite file in
// the test's temp dir, and a PostgreSQL schema of its own on the server named by
// PROVISIONER_TEST_POSTGRES_URL (the test script starts a throwaway one). Without that
// variable the PostgreSQL runs are skipped, unless PROVISIONER_TEST_REQUIRE_POSTGRES=1 (CI)
// makes that a failure.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// Dialects lists the dialects every store test runs on.
var Dialects = []database.Dialect{database.SQLite, database.Postgres}

// Each runs fn as a subtest once per dialect, each with its own migrated database.
func Each(t *testing.T, fn func(t *testing.T, db *database.DB)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, Open(t, d))
		})
	}
}

// Open returns a fresh migrated database of dialect d, closed and dropped at cleanup.
func Open(t testing.TB, d database.Dialect) *database.DB {
	t.Helper()
	db, err := database.Open(context.Background(), URL(t, d))
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return db
}

// URL returns a connection string for a fresh, empty database of dialect d.
func URL(t testing.TB, d database.Dialect) string {
	t.Helper()
	if d == database.SQLite {
		return filepath.Join(t.TempDir(), "test.db")
	}
	base := os.Getenv("PROVISIONER_TEST_POSTGRES_URL")
	if base == "" {
		if os.Getenv("PROVISIONER_TEST_REQUIRE_POSTGRES") == "1" {
			t.Fatal("dbtest: PROVISIONER_TEST_POSTGRES_URL is not set but PostgreSQL tests are required")
		}
		t.Skip("PostgreSQL tests need PROVISIONER_TEST_POSTGRES_URL (scripts/test.sh starts a server)")
	}
	return newSchema(t, base)
}

// newSchema creates a schema of its own for one test and returns a URL whose search_path
// points at it, so parallel tests never see each other's rows.
func newSchema(t testing.TB, base string) string {
	t.Helper()
	suffix := make([]byte, 6)
	rand.Read(suffix)
	schema := "t_" + hex.EncodeToString(suffix)

	admin, err := database.Open(context.Background(), base)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer admin.Close()
	if _, err := admin.SQL.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("dbtest: creating schema: %v", err)
	}
	t.Cleanup(func() {
		admin, err := database.Open(context.Background(), base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.SQL.Exec("DROP SCHEMA " + schema + " CASCADE")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
