package database_test

import (
	"context"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		dialect database.Dialect
		target  string
		wantErr bool
	}{
		{"./data/provisioner.db", database.SQLite, "./data/provisioner.db", false},
		{"sqlite:///var/lib/p.db", database.SQLite, "/var/lib/p.db", false},
		{"file:/tmp/x.db?mode=rwc", database.SQLite, "/tmp/x.db", false},
		{"postgres://u:p@localhost:5432/db?sslmode=disable", database.Postgres, "postgres://u:p@localhost:5432/db?sslmode=disable", false},
		{"postgresql://localhost/db", database.Postgres, "postgresql://localhost/db", false},
		{"mysql://localhost/db", "", "", true},
		{"", "", "", true},
	}
	for _, tt := range tests {
		d, target, err := database.ParseURL(tt.in)
		if (err != nil) != tt.wantErr || d != tt.dialect || target != tt.target {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q, err=%v", tt.in, d, target, err, tt.dialect, tt.target, tt.wantErr)
		}
	}
}

func TestMigrateThenReady(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, err := database.Open(ctx, dbtest.URL(t, d))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Ready(ctx); err == nil {
				t.Fatal("Ready before migrating: want a pending-migrations error")
			}
			n, err := db.Migrate(ctx)
			if err != nil || n == 0 {
				t.Fatalf("Migrate = %d, %v", n, err)
			}
			if err := db.Ready(ctx); err != nil {
				t.Fatalf("Ready after migrating: %v", err)
			}
			if n, err := db.Migrate(ctx); err != nil || n != 0 {
				t.Fatalf("second Migrate = %d, %v; want 0, nil", n, err)
			}
		})
	}
}
