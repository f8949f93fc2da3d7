package cloudflaretest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/dns/cloudflaretest"
)

const zone = "023e105f4ecef8ad9ca31a8372d0c353"

type apiError struct {
	Code       int        `json:"code"`
	Message    string     `json:"message"`
	ErrorChain []apiError `json:"error_chain"`
}

type response struct {
	Success    bool            `json:"success"`
	Errors     []apiError      `json:"errors"`
	Messages   []apiError      `json:"messages"`
	Result     json.RawMessage `json:"result"`
	ResultInfo *struct {
		Page       int `json:"page"`
		PerPage    int `json:"per_page"`
		Count      int `json:"count"`
		TotalCount int `json:"total_count"`
		TotalPages int `json:"total_pages"`
	} `json:"result_info"`

	status int
	header http.Header
	raw    map[string]json.RawMessage
}

type record struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Type       string    `json:"type"`
	Content    string    `json:"content"`
	Proxied    bool      `json:"proxied"`
	Proxiable  bool      `json:"proxiable"`
	TTL        int       `json:"ttl"`
	Comment    string    `json:"comment"`
	Tags       []string  `json:"tags"`
	CreatedOn  time.Time `json:"created_on"`
	ModifiedOn time.Time `json:"modified_on"`
}

// setup serves fake and returns a function doing one authenticated call against it.
func setup(t *testing.T, fake *cloudflaretest.Server) func(method, path string, body any) response {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return func(method, path string, body any) response {
		t.Helper()
		return call(t, srv, method, path, body, "Bearer good-token")
	}
}

func call(t *testing.T, srv *httptest.Server, method, path string, body any, auth string) response {
	t.Helper()
	var rd bytes.Buffer
	if s, ok := body.(string); ok {
		rd.WriteString(s)
	} else if body != nil {
		if err := json.NewEncoder(&rd).Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, srv.URL+path, &rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(res.Body); err != nil {
		t.Fatal(err)
	}
	out := response{status: res.StatusCode, header: res.Header}
	if err := json.Unmarshal(raw.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v\n%s", method, path, err, raw.String())
	}
	if err := json.Unmarshal(raw.Bytes(), &out.raw); err != nil {
		t.Fatal(err)
	}
	return out
}

func records(t *testing.T, r response) []record {
	t.Helper()
	var recs []record
	if err := json.Unmarshal(r.Result, &recs); err != nil {
		t.Fatalf("result is not a list of records: %v: %s", err, r.Result)
	}
	return recs
}

func one(t *testing.T, r response) record {
	t.Helper()
	if !r.Success || r.status != http.StatusOK {
		t.Fatalf("want success, got %d %+v", r.status, r.Errors)
	}
	var rec record
	if err := json.Unmarshal(r.Result, &rec); err != nil {
		t.Fatalf("result is not a record: %v: %s", err, r.Result)
	}
	return rec
}

func wantError(t *testing.T, r response, status, code int) {
	t.Helper()
	if r.Success || r.status != status || len(r.Errors) == 0 || r.Errors[0].Code != code {
		t.Fatalf("want %d with error code %d, got %d success=%v errors=%+v", status, code, r.status, r.Success, r.Errors)
	}
	if string(r.raw["result"]) != "null" {
		t.Errorf("an error envelope has result null, got %s", r.raw["result"])
	}
}

func a(name, content string) map[string]any {
	return map[string]any{"type": "A", "name": name, "content": content, "ttl": 1, "proxied": true, "comment": "instance " + name}
}

const records0 = "/zones/" + zone + "/dns_records"

func TestZeroValueCreateGetList(t *testing.T) {
	t.Parallel()
	do := setup(t, &cloudflaretest.Server{})

	created := one(t, do("POST", records0, a("Acme.Example.com", "203.0.113.10")))
	if len(created.ID) != 32 || created.Name != "acme.example.com" || created.Type != "A" ||
		created.Content != "203.0.113.10" || !created.Proxied || !created.Proxiable || created.TTL != 1 ||
		created.Comment != "instance Acme.Example.com" || created.CreatedOn.IsZero() || created.Tags == nil {
		t.Fatalf("created %+v", created)
	}
	if got := one(t, do("GET", records0+"/"+created.ID, nil)); got.ID != created.ID || got.Content != created.Content {
		t.Fatalf("get %+v, want %+v", got, created)
	}

	list := do("GET", records0+"?name=ACME.example.com&type=A", nil)
	for _, key := range []string{"success", "errors", "messages", "result", "result_info"} {
		if _, ok := list.raw[key]; !ok {
			t.Errorf("envelope lacks %q: %v", key, list.raw)
		}
	}
	if recs := records(t, list); len(recs) != 1 || recs[0].ID != created.ID {
		t.Fatalf("list by exact name: %+v", recs)
	}
	if ri := list.ResultInfo; ri == nil || ri.Page != 1 || ri.PerPage != 100 || ri.Count != 1 || ri.TotalCount != 1 || ri.TotalPages != 1 {
		t.Fatalf("result_info %+v", list.ResultInfo)
	}
	if recs := records(t, do("GET", records0+"?name=other.example.com", nil)); len(recs) != 0 {
		t.Fatalf("another name matched: %+v", recs)
	}
	// The real base URL's path prefix works too.
	if recs := records(t, do("GET", "/client/v4"+records0, nil)); len(recs) != 1 {
		t.Fatalf("list under /client/v4: %+v", recs)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{Token: "right-token"}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	tests := []struct {
		auth         string
		status, code int
		chain        int
	}{
		{auth: "", status: 400, code: 9106},
		{auth: "Basic dXNlcjpwYXNz", status: 400, code: 6003, chain: 6111},
		{auth: "Bearer has space", status: 400, code: 6003, chain: 6111},
		{auth: "Bearer wrong-token", status: 401, code: 9109},
	}
	for _, tt := range tests {
		r := call(t, srv, "GET", records0, nil, tt.auth)
		wantError(t, r, tt.status, tt.code)
		if tt.chain != 0 && (len(r.Errors[0].ErrorChain) == 0 || r.Errors[0].ErrorChain[0].Code != tt.chain) {
			t.Errorf("auth %q: want error_chain %d, got %+v", tt.auth, tt.chain, r.Errors)
		}
	}
	if r := call(t, srv, "GET", records0, nil, "Bearer right-token"); !r.Success {
		t.Fatalf("right token refused: %+v", r.Errors)
	}
}

func TestZoneScopeAndRouting(t *testing.T) {
	t.Parallel()
	other := "99999999999999999999999999999999"
	do := setup(t, &cloudflaretest.Server{Zones: []string{zone}})

	wantError(t, do("GET", "/zones/"+other+"/dns_records", nil), 403, 10000)
	wantError(t, do("GET", "/zones/not-a-zone/dns_records", nil), 400, 7003)
	wantError(t, do("GET", "/zones/"+zone+"/settings", nil), 400, 7000)
	wantError(t, do("GET", records0+"/not-an-id", nil), 400, 1002)
	wantError(t, do("GET", records0+"/00000000000000000000000000000000", nil), 404, 81044)
	wantError(t, do("DELETE", records0, nil), 405, 10405)
	if r := do("GET", records0, nil); !r.Success {
		t.Fatalf("scoped zone refused: %+v", r.Errors)
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	do := setup(t, &cloudflaretest.Server{})
	one(t, do("POST", records0, a("taken.example.com", "203.0.113.1")))
	one(t, do("POST", records0, map[string]any{"type": "CNAME", "name": "alias.example.com", "content": "taken.example.com"}))

	tests := []struct {
		name         string
		body         any
		code, status int
		chain        int
	}{
		{"A with IPv6", a("x.example.com", "2001:db8::1"), 9005, 400, 0},
		{"A with a name", a("x.example.com", "example.com"), 9005, 400, 0},
		{"AAAA with IPv4", map[string]any{"type": "AAAA", "name": "x.example.com", "content": "192.0.2.1"}, 9006, 400, 0},
		{"bad name", a("bad name.example.com", "203.0.113.1"), 9000, 400, 0},
		{"TTL too low", map[string]any{"type": "A", "name": "x.example.com", "content": "192.0.2.1", "ttl": 30}, 1004, 400, 9021},
		{"proxied TXT", map[string]any{"type": "TXT", "name": "x.example.com", "content": "hello", "proxied": true}, 9004, 400, 0},
		{"missing type", map[string]any{"name": "x.example.com", "content": "192.0.2.1"}, 1004, 400, 9101},
		{"identical", a("taken.example.com", "203.0.113.1"), 81058, 400, 0},
		{"A beside CNAME", a("alias.example.com", "203.0.113.1"), 81054, 400, 0},
		{"CNAME beside A", map[string]any{"type": "CNAME", "name": "taken.example.com", "content": "example.net"}, 81053, 400, 0},
		{"not JSON", "{", 9207, 400, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := do("POST", records0, tt.body)
			wantError(t, r, tt.status, tt.code)
			if tt.chain != 0 && (len(r.Errors[0].ErrorChain) == 0 || r.Errors[0].ErrorChain[0].Code != tt.chain) {
				t.Errorf("want error_chain %d, got %+v", tt.chain, r.Errors)
			}
		})
	}
	// A second A record with other content is allowed (round robin), as on Cloudflare.
	one(t, do("POST", records0, a("taken.example.com", "203.0.113.2")))
}

func TestUpdateAndDelete(t *testing.T) {
	t.Parallel()
	clock := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	fake := &cloudflaretest.Server{Now: func() time.Time { return clock }}
	do := setup(t, fake)
	body := a("app.example.com", "203.0.113.1")
	body["tags"] = []string{"owner:ops"}
	rec := one(t, do("POST", records0, body))
	one(t, do("POST", records0, a("app.example.com", "203.0.113.9")))

	clock = clock.Add(time.Minute)
	patched := one(t, do("PATCH", records0+"/"+rec.ID, map[string]any{"content": "203.0.113.2", "tags": nil}))
	if patched.Content != "203.0.113.2" || patched.Comment != rec.Comment || !patched.Proxied ||
		len(patched.Tags) != 1 || !patched.CreatedOn.Equal(rec.CreatedOn) || !patched.ModifiedOn.Equal(clock) {
		t.Fatalf("PATCH must merge: %+v", patched)
	}
	// Updating into an identical twin of another record is refused like a create.
	wantError(t, do("PATCH", records0+"/"+rec.ID, map[string]any{"content": "203.0.113.9"}), 400, 81058)

	put := one(t, do("PUT", records0+"/"+rec.ID, map[string]any{"type": "A", "name": "app.example.com", "content": "203.0.113.3"}))
	if put.Content != "203.0.113.3" || put.Comment != "" || put.Proxied || put.TTL != 1 || len(put.Tags) != 0 {
		t.Fatalf("PUT must replace: %+v", put)
	}
	if _, ok := do("GET", records0+"/"+rec.ID, nil).raw["result"]; !ok {
		t.Fatal("GET after PUT has no result")
	}

	del := do("DELETE", records0+"/"+rec.ID, nil)
	var id struct{ ID string }
	if err := json.Unmarshal(del.Result, &id); err != nil || !del.Success || id.ID != rec.ID {
		t.Fatalf("delete answered %d %s %v", del.status, del.Result, err)
	}
	wantError(t, do("DELETE", records0+"/"+rec.ID, nil), 404, 81044)
	if got := fake.Records(zone); len(got) != 1 || got[0].Content != "203.0.113.9" {
		t.Fatalf("left %+v", got)
	}
}

func TestListFiltersOrderAndPages(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	do := setup(t, fake)
	for i := 1; i <= 5; i++ {
		one(t, do("POST", records0, a(fmt.Sprintf("i%d.n8n.example.com", i), fmt.Sprintf("203.0.113.%d", i))))
	}
	one(t, do("POST", records0, map[string]any{"type": "TXT", "name": "i1.n8n.example.com", "content": "v=spf1 -all"}))
	one(t, do("POST", records0, a("www.example.com", "198.51.100.1")))

	var seen []string
	for page := 1; page <= 4; page++ {
		r := do("GET", fmt.Sprintf("%s?type=A&name.endswith=.n8n.example.com&per_page=2&page=%d", records0, page), nil)
		recs := records(t, r)
		wantCount := map[int]int{1: 2, 2: 2, 3: 1, 4: 0}[page]
		ri := r.ResultInfo
		if len(recs) != wantCount || ri.Count != wantCount || ri.Page != page || ri.PerPage != 2 || ri.TotalCount != 5 || ri.TotalPages != 3 {
			t.Fatalf("page %d: %d records, result_info %+v", page, len(recs), ri)
		}
		for _, rec := range recs {
			seen = append(seen, rec.Name)
		}
	}
	if got := strings.Join(seen, " "); got != "i1.n8n.example.com i2.n8n.example.com i3.n8n.example.com i4.n8n.example.com i5.n8n.example.com" {
		t.Fatalf("pages in creation order, no repeats: %s", got)
	}

	desc := records(t, do("GET", records0+"?type=A&order=content&direction=desc&per_page=1", nil))
	if len(desc) != 1 || desc[0].Content != "203.0.113.5" {
		t.Fatalf("order=content desc: %+v", desc)
	}
	anyOf := records(t, do("GET", records0+"?match=any&type=TXT&name=www.example.com", nil))
	if len(anyOf) != 2 {
		t.Fatalf("match=any: %+v", anyOf)
	}
	allOf := records(t, do("GET", records0+"?type=TXT&name=www.example.com", nil))
	if len(allOf) != 0 {
		t.Fatalf("match=all by default: %+v", allOf)
	}
	if got := records(t, do("GET", records0+"?proxied=false", nil)); len(got) != 1 || got[0].Type != "TXT" {
		t.Fatalf("proxied=false: %+v", got)
	}
}

func TestFailNextAndCounters(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	do := setup(t, fake)

	fake.FailNext(2, http.StatusTooManyRequests)
	for i := 0; i < 2; i++ {
		r := do("GET", records0, nil)
		wantError(t, r, 429, 971)
		if r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	fake.FailNext(1, http.StatusInternalServerError)
	wantError(t, do("POST", records0, a("x.example.com", "192.0.2.1")), 500, 10001)
	if len(fake.Records(zone)) != 0 {
		t.Fatal("a failed write changed state")
	}
	one(t, do("POST", records0, a("x.example.com", "192.0.2.1")))
	if got := fake.Requests(); got != 4 {
		t.Errorf("Requests() = %d, want 4", got)
	}
	if got := fake.Writes(); got != 2 {
		t.Errorf("Writes() = %d, want 2 (the failed POST counts: it was attempted)", got)
	}
	fake.FailNext(3, http.StatusBadGateway)
	fake.FailNext(0, 0)
	if r := do("GET", records0, nil); !r.Success {
		t.Fatal("FailNext(0) must clear pending failures")
	}
}

func TestAddRecordMakesDrift(t *testing.T) {
	t.Parallel()
	fake := &cloudflaretest.Server{}
	do := setup(t, fake)
	old := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	first := fake.AddRecord(zone, cloudflaretest.Record{Name: "Dup.Example.com.", Type: "a", Content: "192.0.2.1", CreatedOn: old})
	// Identical twins are refused by the API but may exist; AddRecord makes them.
	second := fake.AddRecord(zone, cloudflaretest.Record{Name: "dup.example.com", Type: "A", Content: "192.0.2.1"})
	if first.ID == "" || first.Name != "dup.example.com" || first.Type != "A" || first.TTL != 1 || !first.Proxiable {
		t.Fatalf("AddRecord normalised %+v", first)
	}
	recs := records(t, do("GET", records0+"?name=dup.example.com", nil))
	if len(recs) != 2 || recs[0].ID != first.ID || recs[1].ID != second.ID || !recs[0].CreatedOn.Equal(old) {
		t.Fatalf("served %+v", recs)
	}
	got := fake.Records(zone)
	got[0].Content = "mutated"
	if fake.Records(zone)[0].Content != "192.0.2.1" {
		t.Fatal("Records must return copies")
	}
	if n := fake.Requests(); n != 1 {
		t.Fatalf("helpers must not count as requests, got %d", n)
	}
}
