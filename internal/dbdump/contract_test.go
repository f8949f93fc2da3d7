package dbdump_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dbdump"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore/objstoretest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/retention"
)

var _ dbdump.Bucket = (*objstore.Store)(nil)

// TestDumpBucketContract runs one dump's life (upload, list, restore, prune) on the fake
// and, when PROVISIONER_TEST_S3_* names one, on the real S3 bucket, so the fake's
// semantics stay those of the store the service uses.
func TestDumpBucketContract(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		bucket func(t *testing.T) dbdump.Bucket
	}{
		{"fake", func(t *testing.T) dbdump.Bucket { return &memBucket{} }},
		{"s3", func(t *testing.T) dbdump.Bucket {
			s, err := objstore.New(objstoretest.Config(t))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := tc.bucket(t)
			src, marker := sqliteSource(t)
			key := newMasterKey(t)
			old := dbdump.Key(now.AddDate(0, -3, 0), database.SQLite)
			foreign := "db/README.txt"
			for _, k := range []string{old, foreign} {
				if err := b.Put(ctx, k, bytesReader("x")); err != nil {
					t.Fatal(err)
				}
			}
			name, size, err := dbdump.Run(ctx, b, src, key, retention.Default, now)
			if err != nil || size == 0 {
				t.Fatalf("Run = %q, %d, %v", name, size, err)
			}
			keys, err := b.Keys(ctx, dbdump.Prefix)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{name, foreign}; !slices.Equal(keys, want) {
				t.Fatalf("after Run the bucket holds %v, want %v", keys, want)
			}
			if latest, err := dbdump.Latest(ctx, b); err != nil || latest != name {
				t.Fatalf("Latest = %q, %v", latest, err)
			}
			dst := filepath.Join(t.TempDir(), "provisioner.db")
			if err := dbdump.Restore(ctx, b, name, [][]byte{key}, dbdump.Target{Dialect: database.SQLite, Location: dst}); err != nil {
				t.Fatal(err)
			}
			if names := hostNames(t, dst); !slices.Equal(names, []string{marker}) {
				t.Fatalf("restored hosts = %v", names)
			}
			missing := dbdump.Key(now.Add(-time.Hour), database.SQLite)
			if err := dbdump.Restore(ctx, b, missing, [][]byte{key}, dbdump.Target{Dialect: database.SQLite, Location: dst + "2"}); err == nil || errors.Is(err, dbdump.ErrCorrupt) {
				t.Fatalf("restoring a missing key: err = %v, want the store's not-found", err)
			}
			if err := b.Delete(ctx, missing); err != nil {
				t.Fatalf("deleting a missing key: %v", err)
			}
		})
	}
}
