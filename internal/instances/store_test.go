package instances_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

func newInstance(clientID, slug string) *instances.Instance {
	return &instances.Instance{
		ClientID: clientID, Slug: slug, URL: "https://" + slug + ".example.com",
		PlanID: "starter", CPUs: 0.5, MemoryMB: 1024, N8nImage: "n8nio/n8n:1.123.4",
		Status: instances.Pending, OwnerEmail: "owner@example.com",
		OwnerPasswordSealed: "v1.k.sealed-pw", EncryptionKeySealed: "v1.k.sealed-key",
	}
}

func setup(t *testing.T, db *database.DB) (*instances.Store, context.Context) {
	t.Helper()
	store := instances.NewStore(db.Gorm, nil)
	ctx := context.Background()
	for _, id := range []string{"cus_a", "cus_b"} {
		if _, err := store.UpsertClient(ctx, instances.Client{ID: id, Email: id + "@example.com"}); err != nil {
			t.Fatal(err)
		}
	}
	return store, ctx
}

func TestStore(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		t.Run("create get and timeline", func(t *testing.T) {
			store, ctx := setup(t, db)
			in := newInstance("cus_a", "create-get")
			if err := store.Create(ctx, in); err != nil {
				t.Fatal(err)
			}
			got, err := store.Get(ctx, in.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Slug != in.Slug || got.CPUs != 0.5 || got.Status != instances.Pending || got.Host != nil {
				t.Fatalf("got %+v", got)
			}
			if err := store.AppendEvent(ctx, in.ID, "step", "dns record created"); err != nil {
				t.Fatal(err)
			}
			events, err := store.Timeline(ctx, in.ID)
			if err != nil || len(events) != 2 || events[0].Kind != "created" || events[1].Message != "dns record created" {
				t.Fatalf("timeline = %+v, %v", events, err)
			}
		})
		t.Run("unknown and malformed ids are not found", func(t *testing.T) {
			store, ctx := setup(t, db)
			for _, id := range []string{instances.NewID(), "nope", "'; DROP TABLE instances; --", ""} {
				if _, err := store.Get(ctx, id); !apperr.Is(err, apperr.NotFound) {
					t.Errorf("Get(%q) err = %v, want NotFound", id, err)
				}
			}
			if _, _, err := store.ListByClient(ctx, "cus_unknown", instances.Page{}); !apperr.Is(err, apperr.NotFound) {
				t.Errorf("ListByClient(unknown) err = %v, want NotFound", err)
			}
		})
		t.Run("slug is unique", func(t *testing.T) {
			store, ctx := setup(t, db)
			if err := store.Create(ctx, newInstance("cus_a", "taken")); err != nil {
				t.Fatal(err)
			}
			if err := store.Create(ctx, newInstance("cus_b", "taken")); !apperr.Is(err, apperr.Conflict) {
				t.Fatalf("second create err = %v, want Conflict", err)
			}
		})
		t.Run("client email is unique", func(t *testing.T) {
			store, ctx := setup(t, db)
			_, err := store.UpsertClient(ctx, instances.Client{ID: "cus_c", Email: "cus_a@example.com"})
			if !apperr.Is(err, apperr.Conflict) {
				t.Fatalf("err = %v, want Conflict", err)
			}
			c, err := store.UpsertClient(ctx, instances.Client{ID: "cus_a", Email: "new@example.com", Locale: "es"})
			if err != nil || c.Locale != "es" {
				t.Fatalf("update client = %+v, %v", c, err)
			}
			if got, _ := store.GetClient(ctx, "cus_a"); got.Email != "new@example.com" || got.CreatedAt.IsZero() {
				t.Fatalf("client after update = %+v", got)
			}
		})
		t.Run("a new client stored by two events at once", func(t *testing.T) {
			store, ctx := setup(t, db)
			for round := range 20 {
				id := fmt.Sprintf("cus_race_%d", round)
				errs := make(chan error, 4)
				for range 4 {
					go func() {
						_, err := store.UpsertClient(ctx, instances.Client{ID: id, Email: id + "@example.com", Name: "Ada"})
						errs <- err
					}()
				}
				for range 4 {
					if err := <-errs; err != nil {
						t.Fatalf("round %d: a concurrent upsert of the same new client failed: %v", round, err)
					}
				}
			}
		})
		t.Run("paginates a client's instances in creation order", func(t *testing.T) {
			store, ctx := setup(t, db)
			if _, err := store.UpsertClient(ctx, instances.Client{ID: "cus_pages", Email: "pages@example.com"}); err != nil {
				t.Fatal(err)
			}
			var want []string
			for i := range 7 {
				in := newInstance("cus_pages", fmt.Sprintf("page-%d", i))
				if err := store.Create(ctx, in); err != nil {
					t.Fatal(err)
				}
				want = append(want, in.ID)
			}
			if err := store.Create(ctx, newInstance("cus_b", "other-client")); err != nil {
				t.Fatal(err)
			}
			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				list, next, err := store.ListByClient(ctx, "cus_pages", instances.Page{Cursor: cursor, Limit: 3})
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range list {
					got = append(got, in.ID)
				}
				if next == "" {
					break
				}
				if pages > 5 {
					t.Fatal("pagination does not end")
				}
				cursor = next
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("paged ids = %v, want %v", got, want)
			}
		})
		t.Run("filters by status and client and rejects bad input", func(t *testing.T) {
			store, ctx := setup(t, db)
			active := newInstance("cus_b", "filter-active")
			active.Status = instances.Active
			for _, in := range []*instances.Instance{active, newInstance("cus_b", "filter-pending")} {
				if err := store.Create(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			list, _, err := store.List(ctx, instances.Filter{Status: instances.Active, ClientID: "cus_b"}, instances.Page{})
			if err != nil || len(list) != 1 || list[0].ID != active.ID {
				t.Fatalf("filtered list = %+v, %v", list, err)
			}
			for _, tc := range []struct {
				f instances.Filter
				p instances.Page
			}{
				{instances.Filter{Status: "bogus"}, instances.Page{}},
				{instances.Filter{}, instances.Page{Limit: instances.MaxPageSize + 1}},
				{instances.Filter{}, instances.Page{Cursor: "not-an-id"}},
			} {
				if _, _, err := store.List(ctx, tc.f, tc.p); !apperr.Is(err, apperr.Invalid) {
					t.Errorf("List(%+v, %+v) err = %v, want Invalid", tc.f, tc.p, err)
				}
			}
		})
	})
}

func TestValidClientID(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		"cus_123": true, "42": true, "org:team-1.x": true,
		"": false, "-lead": false, "a b": false, "../etc": false, "<script>": false,
	}
	for id, want := range tests {
		if got := instances.ValidClientID(id); got != want {
			t.Errorf("ValidClientID(%q) = %v, want %v", id, got, want)
		}
	}
}
