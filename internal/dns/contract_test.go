package dns_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns"
)

// counter is an http.RoundTripper that counts what a client sends, so the contract can
// prove "no write" and "no request" against the fake and real Cloudflare alike.
type counter struct {
	base   http.RoundTripper
	total  atomic.Int64
	writes atomic.Int64
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.total.Add(1)
	if r.Method != http.MethodGet {
		c.writes.Add(1)
	}
	return c.base.RoundTrip(r)
}

// target is one Cloudflare to run the contract against.
type target struct {
	// domain is a name the token may create records under; each test uses fresh names.
	domain string
	// newDNS returns an adapter whose requests the returned counter sees; mutate adjusts
	// the config (page size, token).
	newDNS func(t *testing.T, mutate func(*dns.Config)) (*dns.Cloudflare, *counter)
	// addBehind creates an A record without the adapter, as an operator would, proxied
	// like the adapter's records, and returns its id.
	addBehind func(t *testing.T, name, ip, comment string) string
	proxied   bool
}

func randomLabel(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "ct-" + hex.EncodeToString(b[:])
}

// freshName returns an unused name under the target's domain and deletes its records when
// the test ends, so a real zone is left as it was found.
func (tg target) freshName(t *testing.T, cf *dns.Cloudflare) string {
	t.Helper()
	name := randomLabel(t) + "." + tg.domain
	t.Cleanup(func() {
		if err := cf.Delete(context.Background(), name); err != nil {
			t.Errorf("cleanup of %s: %v", name, err)
		}
	})
	return name
}

func wantKind(t *testing.T, err error, kind apperr.Kind) {
	t.Helper()
	if !apperr.Is(err, kind) {
		t.Fatalf("want a %s error, got %v (kind %s)", kind, err, apperr.KindOf(err))
	}
}

// runContract is what the adapter promises, whichever Cloudflare answers.
func runContract(t *testing.T, tg target) {
	ctx := context.Background()

	t.Run("upsert creates, then writes nothing", func(t *testing.T) {
		t.Parallel()
		cf, n := tg.newDNS(t, nil)
		name := tg.freshName(t, cf)

		rec, err := cf.UpsertA(ctx, name, "203.0.113.10", "n8n instance acme")
		if err != nil {
			t.Fatal(err)
		}
		if rec.ID == "" || rec.Name != name || rec.Type != "A" || rec.Content != "203.0.113.10" ||
			rec.Proxied != tg.proxied || rec.Comment != "n8n instance acme" || rec.TTL != 1 {
			t.Fatalf("created %+v", rec)
		}
		writes := n.writes.Load()
		again, err := cf.UpsertA(ctx, name, "203.0.113.10", "n8n instance acme")
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != rec.ID {
			t.Fatalf("second upsert returned %s, want the same record %s", again.ID, rec.ID)
		}
		if w := n.writes.Load() - writes; w != 0 {
			t.Fatalf("second upsert made %d writes, want none", w)
		}
		got, err := cf.Lookup(ctx, name)
		if err != nil || got.ID != rec.ID || got.Content != "203.0.113.10" {
			t.Fatalf("lookup = %+v, %v", got, err)
		}
	})

	t.Run("upsert with a new IP or comment updates in place", func(t *testing.T) {
		t.Parallel()
		cf, n := tg.newDNS(t, nil)
		name := tg.freshName(t, cf)
		rec, err := cf.UpsertA(ctx, name, "203.0.113.10", "n8n instance acme")
		if err != nil {
			t.Fatal(err)
		}

		writes := n.writes.Load()
		moved, err := cf.UpsertA(ctx, name, "203.0.113.20", "n8n instance acme")
		if err != nil {
			t.Fatal(err)
		}
		if moved.ID != rec.ID || moved.Content != "203.0.113.20" {
			t.Fatalf("moved %+v, want record %s at 203.0.113.20", moved, rec.ID)
		}
		if w := n.writes.Load() - writes; w != 1 {
			t.Fatalf("an IP change made %d writes, want 1 update", w)
		}
		renamed, err := cf.UpsertA(ctx, name, "203.0.113.20", "n8n instance acme (client 7)")
		if err != nil || renamed.ID != rec.ID || renamed.Comment != "n8n instance acme (client 7)" {
			t.Fatalf("comment change: %+v, %v", renamed, err)
		}
		got, err := cf.Lookup(ctx, name)
		if err != nil || got.Content != "203.0.113.20" || got.Comment != "n8n instance acme (client 7)" {
			t.Fatalf("lookup = %+v, %v", got, err)
		}
	})

	t.Run("duplicates collapse to one", func(t *testing.T) {
		t.Parallel()
		cf, _ := tg.newDNS(t, nil)
		name := tg.freshName(t, cf)
		tg.addBehind(t, name, "192.0.2.1", "made by hand")
		tg.addBehind(t, name, "192.0.2.2", "made by hand")
		tg.addBehind(t, name, "192.0.2.3", "made by hand")

		rec, err := cf.UpsertA(ctx, name, "203.0.113.30", "n8n instance dup")
		if err != nil {
			t.Fatal(err)
		}
		all, err := cf.List(ctx, tg.domain)
		if err != nil {
			t.Fatal(err)
		}
		var mine []dns.Record
		for _, r := range all {
			if r.Name == name {
				mine = append(mine, r)
			}
		}
		if len(mine) != 1 || mine[0].ID != rec.ID || mine[0].Content != "203.0.113.30" {
			t.Fatalf("after upsert %s has %+v, want only %+v", name, mine, rec)
		}
	})

	t.Run("duplicates: the one already right survives without an update", func(t *testing.T) {
		t.Parallel()
		cf, n := tg.newDNS(t, nil)
		name := tg.freshName(t, cf)
		tg.addBehind(t, name, "192.0.2.9", "n8n instance keep") // older, stale
		right := tg.addBehind(t, name, "203.0.113.40", "n8n instance keep")

		writes := n.writes.Load()
		kept, err := cf.UpsertA(ctx, name, "203.0.113.40", "n8n instance keep")
		if err != nil {
			t.Fatal(err)
		}
		if kept.ID != right {
			t.Fatalf("kept %+v, want the record already pointing right (%s)", kept, right)
		}
		if w := n.writes.Load() - writes; w != 1 {
			t.Fatalf("made %d writes, want only the stale duplicate's delete", w)
		}
		if got, err := cf.Lookup(ctx, name); err != nil || got.ID != right || got.Content != "203.0.113.40" {
			t.Fatalf("lookup = %+v, %v", got, err)
		}
	})

	t.Run("delete is idempotent", func(t *testing.T) {
		t.Parallel()
		cf, n := tg.newDNS(t, nil)
		name := tg.freshName(t, cf)
		if _, err := cf.UpsertA(ctx, name, "203.0.113.50", "n8n instance gone"); err != nil {
			t.Fatal(err)
		}
		tg.addBehind(t, name, "192.0.2.50", "made by hand")
		if err := cf.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		_, err := cf.Lookup(ctx, name)
		wantKind(t, err, apperr.NotFound)

		writes := n.writes.Load()
		if err := cf.Delete(ctx, name); err != nil {
			t.Fatalf("deleting an absent name: %v", err)
		}
		if w := n.writes.Load() - writes; w != 0 {
			t.Fatalf("deleting an absent name made %d writes", w)
		}
	})

	t.Run("list follows every page and keeps to the suffix", func(t *testing.T) {
		t.Parallel()
		cf, n := tg.newDNS(t, func(c *dns.Config) { c.PageSize = 2 })
		sfx := randomLabel(t) + "." + tg.domain
		var want []string
		for i := 1; i <= 5; i++ {
			name := fmt.Sprintf("i%d.%s", i, sfx)
			want = append(want, name)
			t.Cleanup(func() { _ = cf.Delete(context.Background(), name) })
			if _, err := cf.UpsertA(ctx, name, fmt.Sprintf("203.0.113.%d", 60+i), "n8n instance list"); err != nil {
				t.Fatal(err)
			}
		}
		outside := tg.freshName(t, cf) // a sibling of the suffix, not under it
		if _, err := cf.UpsertA(ctx, outside, "203.0.113.69", "n8n instance outside"); err != nil {
			t.Fatal(err)
		}

		before := n.total.Load()
		got, err := cf.List(ctx, sfx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("List(%s) = %d records %+v, want %v", sfx, len(got), got, want)
		}
		for i, r := range got {
			if r.Name != want[i] || r.Type != "A" {
				t.Fatalf("List[%d] = %+v, want %s", i, r, want[i])
			}
		}
		if pages := n.total.Load() - before; pages < 3 {
			t.Fatalf("5 records at 2 per page took %d requests; pages were not followed", pages)
		}
	})

	t.Run("lookup of an absent name is NotFound", func(t *testing.T) {
		t.Parallel()
		cf, _ := tg.newDNS(t, nil)
		_, err := cf.Lookup(ctx, randomLabel(t)+"."+tg.domain)
		wantKind(t, err, apperr.NotFound)
	})

	t.Run("a bad token is Unauthorized", func(t *testing.T) {
		t.Parallel()
		cf, _ := tg.newDNS(t, func(c *dns.Config) { c.APIToken = "not-a-valid-token-0123456789abcdefghij" })
		_, err := cf.Lookup(ctx, randomLabel(t)+"."+tg.domain)
		wantKind(t, err, apperr.Unauthorized)
	})

	t.Run("bad names and addresses never reach Cloudflare", func(t *testing.T) {
		t.Parallel()
		cf, n := tg.newDNS(t, nil)
		good := randomLabel(t) + "." + tg.domain
		badNames := []string{"", "UPPER." + tg.domain, "under_score." + tg.domain, "-lead." + tg.domain,
			"a.." + tg.domain, good + ".", "*." + tg.domain, "single", "sp ace." + tg.domain}
		badIPs := []string{"", "::1", "2001:db8::1", "1.2.3", "256.1.1.1", "0.0.0.0", "example.com", " 203.0.113.1", "::ffff:203.0.113.1"}

		for _, name := range badNames {
			_, err := cf.UpsertA(ctx, name, "203.0.113.1", "c")
			wantKind(t, err, apperr.Invalid)
			_, err = cf.Lookup(ctx, name)
			wantKind(t, err, apperr.Invalid)
			wantKind(t, cf.Delete(ctx, name), apperr.Invalid)
			_, err = cf.List(ctx, name)
			wantKind(t, err, apperr.Invalid)
		}
		for _, ip := range badIPs {
			_, err := cf.UpsertA(ctx, good, ip, "c")
			wantKind(t, err, apperr.Invalid)
		}
		_, err := cf.UpsertA(ctx, good, "203.0.113.1", strings.Repeat("x", 101))
		wantKind(t, err, apperr.Invalid)
		if got := n.total.Load(); got != 0 {
			t.Fatalf("invalid input made %d requests", got)
		}
	})
}
