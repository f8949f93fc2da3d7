package dns_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	cloudflare "github.com/cloudflare/cloudflare-go"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns/cloudflaretest"
)

const (
	testZone   = "023e105f4ecef8ad9ca31a8372d0c353"
	testToken  = "s3cr3t-token-value-for-tests"
	testDomain = "n8n.example.com"
)

// setup serves fake and returns an adapter for it whose requests also pass through the
// returned counter; mutate adjusts the config.
func setup(t *testing.T, fake *cloudflaretest.Server, mutate func(*dns.Config)) (*dns.Cloudflare, *counter, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cf, n := newFor(t, srv, mutate)
	return cf, n, srv
}

func newFor(t *testing.T, srv *httptest.Server, mutate func(*dns.Config)) (*dns.Cloudflare, *counter) {
	t.Helper()
	n := &counter{base: srv.Client().Transport}
	cfg := dns.Config{
		APIToken:   testToken,
		ZoneID:     testZone,
		BaseURL:    srv.URL + "/client/v4",
		HTTPClient: &http.Client{Transport: n},
		Proxied:    true,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	cf, err := dns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cf, n
}

func TestContractFake(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{Token: testToken}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	runContract(t, target{
		domain:  testDomain,
		proxied: true,
		newDNS: func(t *testing.T, mutate func(*dns.Config)) (*dns.Cloudflare, *counter) {
			return newFor(t, srv, mutate)
		},
		addBehind: func(t *testing.T, name, ip, comment string) string {
			return fake.AddRecord(testZone, cloudflaretest.Record{Name: name, Type: "A", Content: ip, Proxied: true, Comment: comment}).ID
		},
	})
}

// TestContractCloudflare keeps the fake honest: the same contract against a real zone.
// It creates and deletes records named ct-<random>.<CLOUDFLARE_TEST_DOMAIN>, unproxied.
func TestContractCloudflare(t *testing.T) {
	token, zone, domain := os.Getenv("CLOUDFLARE_API_TOKEN"), os.Getenv("CLOUDFLARE_ZONE_ID"), os.Getenv("CLOUDFLARE_TEST_DOMAIN")
	if token == "" || zone == "" || domain == "" {
		t.Skip("set CLOUDFLARE_API_TOKEN, CLOUDFLARE_ZONE_ID and CLOUDFLARE_TEST_DOMAIN to run the contract against Cloudflare")
	}
	t.Parallel()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	runContract(t, target{
		domain: domain,
		newDNS: func(t *testing.T, mutate func(*dns.Config)) (*dns.Cloudflare, *counter) {
			n := &counter{base: transport}
			cfg := dns.Config{
				APIToken:          token,
				ZoneID:            zone,
				HTTPClient:        &http.Client{Transport: n, Timeout: 30 * time.Second},
				RequestsPerSecond: 4, // Cloudflare's documented 1200 requests per 5 minutes
			}
			if mutate != nil {
				mutate(&cfg)
			}
			cf, err := dns.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return cf, n
		},
		addBehind: func(t *testing.T, name, ip, comment string) string {
			api, err := cloudflare.NewWithAPIToken(token, cloudflare.HTTPClient(&http.Client{Transport: transport, Timeout: 30 * time.Second}))
			if err != nil {
				t.Fatal(err)
			}
			proxied := false
			rec, err := api.CreateDNSRecord(context.Background(), cloudflare.ZoneIdentifier(zone), cloudflare.CreateDNSRecordParams{
				Type: "A", Name: name, Content: ip, TTL: 1, Proxied: &proxied, Comment: comment,
			})
			if err != nil {
				t.Fatalf("creating %s behind the adapter: %v", name, err)
			}
			return rec.ID
		},
	})
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	good := dns.Config{APIToken: testToken, ZoneID: testZone}
	tests := []struct {
		name   string
		mutate func(*dns.Config)
	}{
		{"no token", func(c *dns.Config) { c.APIToken = "" }},
		{"no zone", func(c *dns.Config) { c.ZoneID = "" }},
		{"zone not hex", func(c *dns.Config) { c.ZoneID = "example.com" }},
		{"zone upper case", func(c *dns.Config) { c.ZoneID = strings.ToUpper(testZone) }},
		{"relative base URL", func(c *dns.Config) { c.BaseURL = "/client/v4" }},
		{"base URL scheme", func(c *dns.Config) { c.BaseURL = "ftp://api.cloudflare.com" }},
		{"negative retries", func(c *dns.Config) { c.MaxRetries = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tt.mutate(&cfg)
			_, err := dns.New(cfg)
			wantKind(t, err, apperr.Invalid)
			if strings.Contains(err.Error(), testToken) {
				t.Fatalf("the token leaked into %q", err)
			}
		})
	}
	if _, err := dns.New(good); err != nil {
		t.Fatalf("defaults (Cloudflare's URL, own HTTP client) refused: %v", err)
	}
}

func TestRateLimitsAndServerErrorsAreUnavailable(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			t.Parallel()
			fake := &cloudflaretest.Server{}
			cf, _, _ := setup(t, fake, nil)
			ctx := context.Background()

			fake.FailNext(1, code)
			_, err := cf.Lookup(ctx, "a."+testDomain)
			wantKind(t, err, apperr.Unavailable)
			fake.FailNext(1, code)
			_, err = cf.UpsertA(ctx, "a."+testDomain, "203.0.113.1", "c")
			wantKind(t, err, apperr.Unavailable)
			fake.FailNext(1, code)
			wantKind(t, cf.Delete(ctx, "a."+testDomain), apperr.Unavailable)
			fake.FailNext(1, code)
			_, err = cf.List(ctx, testDomain)
			wantKind(t, err, apperr.Unavailable)
			if fake.Requests() != 4 {
				t.Fatalf("MaxRetries 0 must not retry: %d requests for 4 failures", fake.Requests())
			}
			// The caller's retry then succeeds: nothing was left half done.
			if _, err := cf.UpsertA(ctx, "a."+testDomain, "203.0.113.1", "c"); err != nil {
				t.Fatal(err)
			}
			if recs := fake.Records(testZone); len(recs) != 1 {
				t.Fatalf("records after retry: %+v", recs)
			}
		})
	}
}

func TestMaxRetriesIsCloudflareGosOwnRetry(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	// cloudflare-go's backoff is whole seconds (1 s here); this is the one test that waits.
	cf, _, _ := setup(t, fake, func(c *dns.Config) { c.MaxRetries = 1 })
	fake.FailNext(1, http.StatusServiceUnavailable)
	_, err := cf.Lookup(context.Background(), "a."+testDomain)
	wantKind(t, err, apperr.NotFound)
	if got := fake.Requests(); got != 2 {
		t.Fatalf("want the failure and one retry, got %d requests", got)
	}
}

func TestCredentialFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("wrong token is Unauthorized", func(t *testing.T) {
		t.Parallel()
		cf, _, _ := setup(t, &cloudflaretest.Server{Token: "the-right-one"}, nil)
		_, err := cf.Lookup(ctx, "a."+testDomain)
		wantKind(t, err, apperr.Unauthorized)
	})
	t.Run("malformed token (400 6003) is Unauthorized, not Invalid", func(t *testing.T) {
		t.Parallel()
		cf, _, _ := setup(t, &cloudflaretest.Server{}, func(c *dns.Config) { c.APIToken = "has a space" })
		_, err := cf.UpsertA(ctx, "a."+testDomain, "203.0.113.1", "c")
		wantKind(t, err, apperr.Unauthorized)
	})
	t.Run("token scoped to another zone is Forbidden", func(t *testing.T) {
		t.Parallel()
		cf, _, _ := setup(t, &cloudflaretest.Server{Zones: []string{"99999999999999999999999999999999"}}, nil)
		err := cf.Delete(ctx, "a."+testDomain)
		wantKind(t, err, apperr.Forbidden)
	})
}

func TestCloudflareValidationIsInvalidWithItsMessage(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	cf, _, _ := setup(t, fake, nil)
	name := "taken." + testDomain
	fake.AddRecord(testZone, cloudflaretest.Record{Name: name, Type: "CNAME", Content: "elsewhere.example.net"})

	_, err := cf.UpsertA(context.Background(), name, "203.0.113.1", "c")
	wantKind(t, err, apperr.Invalid)
	if msg := apperr.Message(err); !strings.Contains(msg, "A CNAME record with that host already exists.") {
		t.Fatalf("public message %q lacks Cloudflare's reason", msg)
	}
}

// raceTransport lets a test act just before a request leaves, as another writer would.
type raceTransport struct {
	base   http.RoundTripper
	before func(*http.Request)
}

func (r raceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.before(req)
	return r.base.RoundTrip(req)
}

func TestUpsertLosingACreateRaceAdoptsTheWinner(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	name := "race." + testDomain
	var winner cloudflaretest.Record
	var once sync.Once
	cf, err := dns.New(dns.Config{
		APIToken: testToken, ZoneID: testZone, BaseURL: srv.URL, Proxied: true,
		HTTPClient: &http.Client{Transport: raceTransport{base: srv.Client().Transport, before: func(r *http.Request) {
			if r.Method == http.MethodPost {
				once.Do(func() {
					winner = fake.AddRecord(testZone, cloudflaretest.Record{
						Name: name, Type: "A", Content: "203.0.113.7", Proxied: true, Comment: "n8n instance race"})
				})
			}
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}

	rec, err := cf.UpsertA(context.Background(), name, "203.0.113.7", "n8n instance race")
	if err != nil {
		t.Fatalf("losing the race to an identical create must not fail: %v", err)
	}
	if rec.ID != winner.ID || len(fake.Records(testZone)) != 1 {
		t.Fatalf("got %+v, want the winner %s and one record: %+v", rec, winner.ID, fake.Records(testZone))
	}
}

func TestConcurrentUpsertsLeaveOneRecord(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	cf, _, _ := setup(t, fake, nil)
	name := "busy." + testDomain

	const workers = 8
	ids := make([]string, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			var rec dns.Record
			rec, errs[i] = cf.UpsertA(context.Background(), name, "203.0.113.8", "n8n instance busy")
			ids[i] = rec.ID
		})
	}
	wg.Wait()
	for i := range workers {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("worker %d: id %s err %v; want all %s", i, ids[i], errs[i], ids[0])
		}
	}
	if recs := fake.Records(testZone); len(recs) != 1 {
		t.Fatalf("concurrent upserts left %d records", len(recs))
	}
}

func TestUpsertTTL(t *testing.T) {
	t.Parallel()
	for _, proxied := range []bool{false, true} {
		fake := &cloudflaretest.Server{}
		cf, _, _ := setup(t, fake, func(c *dns.Config) { c.Proxied = proxied })
		name := "ttl." + testDomain
		fake.AddRecord(testZone, cloudflaretest.Record{Name: name, Type: "A", Content: "192.0.2.1", TTL: 300})
		rec, err := cf.UpsertA(context.Background(), name, "203.0.113.9", "c")
		if err != nil {
			t.Fatal(err)
		}
		want := 300 // an operator's TTL on an unproxied record is kept
		if proxied {
			want = 1 // proxied records are answered by Cloudflare: automatic only
		}
		if rec.TTL != want || rec.Proxied != proxied {
			t.Errorf("proxied=%v: got %+v, want TTL %d", proxied, rec, want)
		}
	}
}

func TestListAndDeleteTouchOnlyARecordsOfTheirNames(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	cf, _, _ := setup(t, fake, nil)
	ctx := context.Background()
	add := func(name, typ, content string) {
		fake.AddRecord(testZone, cloudflaretest.Record{Name: name, Type: typ, Content: content})
	}
	add("b."+testDomain, "A", "192.0.2.2")
	add("a."+testDomain, "A", "192.0.2.1")
	add("deep.a."+testDomain, "A", "192.0.2.3")
	add(testDomain, "A", "192.0.2.4")        // the suffix itself is not an instance
	add("evil"+testDomain, "A", "192.0.2.5") // ends with the suffix, not with "."+suffix
	add("a."+testDomain, "TXT", "owner=ops") // not an A record
	add("v6."+testDomain, "AAAA", "2001:db8::1")

	got, err := cf.List(ctx, testDomain)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.Name)
	}
	if strings.Join(names, " ") != "a.n8n.example.com b.n8n.example.com deep.a.n8n.example.com" {
		t.Fatalf("List = %v", names)
	}

	if err := cf.Delete(ctx, "a."+testDomain); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, r := range fake.Records(testZone) {
		left = append(left, r.Type+" "+r.Name)
	}
	if strings.Join(left, ", ") != "A b.n8n.example.com, A deep.a.n8n.example.com, A n8n.example.com, A eviln8n.example.com, TXT a.n8n.example.com, AAAA v6.n8n.example.com" {
		t.Fatalf("after Delete: %v", left)
	}
}

func TestDeleteToleratesARecordVanishing(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	name := "gone." + testDomain
	rec := fake.AddRecord(testZone, cloudflaretest.Record{Name: name, Type: "A", Content: "192.0.2.1"})
	var once sync.Once
	// Another worker deletes the record between our lookup and our delete.
	cf, err := dns.New(dns.Config{APIToken: testToken, ZoneID: testZone, BaseURL: srv.URL,
		HTTPClient: &http.Client{Transport: raceTransport{base: srv.Client().Transport, before: func(r *http.Request) {
			if r.Method == http.MethodDelete {
				once.Do(func() {
					req := httptest.NewRequest(http.MethodDelete, "/zones/"+testZone+"/dns_records/"+rec.ID, nil)
					req.Header.Set("Authorization", "Bearer other-worker")
					fake.ServeHTTP(httptest.NewRecorder(), req)
				})
			}
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cf.Delete(context.Background(), name); err != nil {
		t.Fatalf("a record already gone is what Delete wanted: %v", err)
	}
}

func TestNetworkAndContextFailuresAreUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("server gone", func(t *testing.T) {
		t.Parallel()
		cf, _, srv := setup(t, &cloudflaretest.Server{}, nil)
		srv.Close()
		_, err := cf.Lookup(context.Background(), "a."+testDomain)
		wantKind(t, err, apperr.Unavailable)
	})
	t.Run("cancelled context", func(t *testing.T) {
		t.Parallel()
		cf, _, _ := setup(t, &cloudflaretest.Server{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := cf.UpsertA(ctx, "a."+testDomain, "203.0.113.1", "c")
		wantKind(t, err, apperr.Unavailable)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the cause must stay visible to the caller: %v", err)
		}
	})
}

func TestErrorsNeverCarryTheToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("want an error")
		}
		if strings.Contains(err.Error(), testToken) || strings.Contains(apperr.Message(err), testToken) {
			t.Fatalf("the API token leaked into %q", err)
		}
	}
	for _, code := range []int{http.StatusTooManyRequests, http.StatusInternalServerError} {
		fake := &cloudflaretest.Server{}
		cf, _, _ := setup(t, fake, nil)
		fake.FailNext(1, code)
		_, err := cf.Lookup(ctx, "a."+testDomain)
		check(t, err)
	}
	cf, _, _ := setup(t, &cloudflaretest.Server{Token: "another"}, nil)
	_, err := cf.Lookup(ctx, "a."+testDomain)
	check(t, err)

	fake := &cloudflaretest.Server{}
	cf, _, srv := setup(t, fake, nil)
	fake.AddRecord(testZone, cloudflaretest.Record{Name: "c." + testDomain, Type: "CNAME", Content: "x.example.net"})
	_, err = cf.UpsertA(ctx, "c."+testDomain, "203.0.113.1", "c")
	check(t, err)
	srv.Close()
	_, err = cf.Lookup(ctx, "a."+testDomain)
	check(t, err)
}

// A record deleted between two pages of a listing shifts the later pages by one, so a
// single pass skips a record that still exists: the listing notices (the total changed)
// and reads the pages again.
func TestListReadsAgainWhenTheZoneChangesBetweenPages(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	// The oldest record, on the first page, is the one deleted under the listing.
	victim := fake.AddRecord(testZone, cloudflaretest.Record{Name: "gone." + testDomain, Type: "A", Content: "192.0.2.9"})
	var names []string
	for i := 1; i <= 5; i++ {
		r := fake.AddRecord(testZone, cloudflaretest.Record{Name: fmt.Sprintf("i%d.%s", i, testDomain), Type: "A", Content: "192.0.2.1"})
		names = append(names, r.Name)
	}
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fake.ServeHTTP(w, r)
		if r.Method == http.MethodGet && r.URL.Query().Get("page") == "1" {
			once.Do(func() { // another worker deletes a record the first page held
				del := httptest.NewRequest(http.MethodDelete, "/client/v4/zones/"+testZone+"/dns_records/"+victim.ID, nil)
				del.Header.Set("Authorization", "Bearer "+testToken)
				fake.ServeHTTP(httptest.NewRecorder(), del)
			})
		}
	}))
	t.Cleanup(srv.Close)
	cf, _ := newFor(t, srv, func(c *dns.Config) { c.PageSize = 2 })
	got, err := cf.List(context.Background(), testDomain)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, r := range got {
		listed = append(listed, r.Name)
	}
	if strings.Join(listed, " ") != strings.Join(names, " ") {
		t.Fatalf("List = %v, want every record that still exists: %v", listed, names)
	}
}
