package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

const (
	adminKey  = "admin-key-for-tests-0123456789"
	portalKey = "portal-key-for-tests-0123456789"
)

var (
	docOnce   sync.Once
	docRouter routers.Router
	docErr    error
)

// openAPIRouter loads and validates the embedded OpenAPI document once.
func openAPIRouter(t testing.TB) routers.Router {
	t.Helper()
	docOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(httpapi.OpenAPI)
		if err != nil {
			docErr = err
			return
		}
		if docErr = doc.Validate(loader.Context); docErr != nil {
			return
		}
		docRouter, docErr = gorillamux.NewRouter(doc)
	})
	if docErr != nil {
		t.Fatalf("openapi.yaml: %v", docErr)
	}
	return docRouter
}

type env struct {
	t         *testing.T
	server    *httpapi.Server
	instances *instances.Store
	hosts     *hosts.Store
	logs      *testlog.Buffer
}

func newEnv(t *testing.T, db *database.DB) *env {
	t.Helper()
	logger, logs := testlog.New(t)
	testlog.Secret(t, adminKey, portalKey)
	e := &env{t: t, instances: instances.NewStore(db.Gorm, nil), hosts: hosts.NewStore(db.Gorm, nil), logs: logs}
	e.server = httpapi.New(httpapi.Config{
		Instances: e.instances, Hosts: e.hosts, Plans: plans.DefaultPlans(), Ready: db.Ready,
		AdminKey: adminKey, PortalKey: portalKey, Logger: logger,
	})
	return e
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string }
	}
	r.decode(t, &body)
	if body.Error.Message == "" {
		t.Fatalf("error without message: %s", r.Body)
	}
	return body.Error.Code
}

// do sends a request and checks the response against the OpenAPI document: every
// response of a documented route must be documented, status included.
func (e *env) do(method, path, key string, body io.Reader) response {
	e.t.Helper()
	req := httptest.NewRequest(method, path, body)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	e.server.ServeHTTP(rec, req)
	res := response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	validate(e.t, req, res)
	return res
}

func validate(t testing.TB, req *http.Request, res response) {
	t.Helper()
	route, params, err := openAPIRouter(t).FindRoute(req)
	if err != nil {
		if res.Status != http.StatusNotFound && res.Status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s answered %d but is not in openapi.yaml: %v", req.Method, req.URL.Path, res.Status, err)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: res.Status, Header: res.Header, Body: io.NopCloser(bytes.NewReader(res.Body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s → %d does not match openapi.yaml: %v\nbody: %s", req.Method, req.URL.Path, res.Status, err, res.Body)
	}
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

var validHost = map[string]any{"name": "nuc", "node": "pve", "vmid": 101, "public_ip": "203.0.113.7",
	"ingress_url": "https://10.0.0.7", "max_instances": 20}

func TestEveryRouteIsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	s := httpapi.New(httpapi.Config{})
	for _, r := range s.Routes() {
		method, path, _ := strings.Cut(r, " ")
		item := doc.Paths.Find(path)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("route %s is registered but missing from openapi.yaml", r)
		}
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dbtest.Open(t, database.SQLite))
	tests := []struct {
		path, key string
		want      int
	}{
		{"/v1/plans", "", 401},
		{"/v1/plans", "wrong", 401},
		{"/v1/plans", portalKey, 200},
		{"/v1/plans", adminKey, 200},
		{"/v1/hosts", "", 401},
		{"/v1/hosts", portalKey, 403},
		{"/v1/hosts", adminKey, 200},
		{"/v1/instances", portalKey, 403},
		{"/v1/instances", adminKey + "x", 401},
		{"/healthz", "", 200},
	}
	for _, tt := range tests {
		res := e.do("GET", tt.path, tt.key, nil)
		if res.Status != tt.want {
			t.Errorf("GET %s with key %q = %d, want %d (%s)", tt.path, tt.key, res.Status, tt.want, res.Body)
		}
		if tt.want == 401 && res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s: 401 without WWW-Authenticate", tt.path)
		}
	}
	// Lower-case scheme and surrounding space are accepted; other schemes are not.
	req := httptest.NewRequest("GET", "/v1/plans", nil)
	req.Header.Set("Authorization", "Basic "+portalKey)
	rec := httptest.NewRecorder()
	e.server.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Errorf("Basic scheme accepted: %d", rec.Code)
	}
}

func TestHostsAPI(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		res := e.do("POST", "/v1/hosts", adminKey, jsonBody(validHost))
		if res.Status != http.StatusCreated {
			t.Fatalf("add host = %d %s", res.Status, res.Body)
		}
		var h map[string]any
		res.decode(t, &h)
		if h["state"] != "active" || h["instances"] != float64(0) || h["public_ip"] != "203.0.113.7" {
			t.Fatalf("added host = %v", h)
		}

		bad := []struct {
			name string
			body io.Reader
			want int
		}{
			{"duplicate", jsonBody(validHost), 409},
			{"malformed", strings.NewReader(`{"name":`), 400},
			{"not an object", strings.NewReader(`[1,2]`), 400},
			{"empty", strings.NewReader(``), 400},
			{"trailing data", strings.NewReader(`{"name":"x"} {}`), 400},
			{"unknown field", jsonBody(map[string]any{"name": "x2", "node": "pve", "vmid": 102, "public_ip": "203.0.113.8", "ingress_url": "https://10.0.0.8", "max_instances": 1, "password": "x"}), 400},
			{"wrong type", strings.NewReader(`{"name":"x3","vmid":"one"}`), 400},
			{"hostile name", jsonBody(map[string]any{"name": "../../etc", "node": "pve", "vmid": 103, "public_ip": "203.0.113.8", "ingress_url": "https://10.0.0.8", "max_instances": 1}), 400},
			{"oversized", strings.NewReader(`{"name":"` + strings.Repeat("a", 2<<20) + `"}`), 413},
		}
		for _, b := range bad {
			res := e.do("POST", "/v1/hosts", adminKey, b.body)
			if res.Status != b.want {
				t.Errorf("%s: status %d, want %d (%s)", b.name, res.Status, b.want, res.Body)
			}
			res.errorCode(t)
		}
		res = e.do("GET", "/v1/hosts", adminKey, nil)
		var list struct{ Hosts []map[string]any }
		res.decode(t, &list)
		if len(list.Hosts) != 1 {
			t.Fatalf("bad requests changed the inventory: %s", res.Body)
		}

		res = e.do("PATCH", "/v1/hosts/nuc", adminKey, strings.NewReader(`{"state":"draining","max_instances":5}`))
		res.decode(t, &h)
		if res.Status != 200 || h["state"] != "draining" || h["max_instances"] != float64(5) {
			t.Fatalf("patch = %d %s", res.Status, res.Body)
		}
		for body, want := range map[string]int{`{}`: 400, `{"state":"asleep"}`: 400, `{"max_instances":-1}`: 400, `{"name":"x"}`: 400} {
			if res := e.do("PATCH", "/v1/hosts/nuc", adminKey, strings.NewReader(body)); res.Status != want {
				t.Errorf("PATCH %s = %d, want %d", body, res.Status, want)
			}
		}
		if res := e.do("PATCH", "/v1/hosts/ghost", adminKey, strings.NewReader(`{"state":"active"}`)); res.Status != 404 {
			t.Errorf("PATCH unknown host = %d, want 404", res.Status)
		}
		if got, _ := e.hosts.Get(context.Background(), "nuc"); got.State != hosts.Draining || got.MaxInstances != 5 {
			t.Errorf("bad patches changed the host: %+v", got)
		}
	})
}

// seed stores a client with n instances and returns their ids in creation order.
func (e *env) seed(clientID string, n int) []string {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.instances.UpsertClient(ctx, instances.Client{ID: clientID, Email: clientID + "@example.com"}); err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	for i := range n {
		in := &instances.Instance{ClientID: clientID, Slug: fmt.Sprintf("%s-%d", strings.ReplaceAll(clientID, "_", "-"), i),
			URL: "https://x.example.com", PlanID: "starter", CPUs: 0.5, MemoryMB: 1024, N8nImage: plans.DefaultN8nImage,
			Status: instances.Active, OwnerEmail: clientID + "@example.com",
			OwnerPasswordSealed: "SEALED-PASSWORD-" + clientID, EncryptionKeySealed: "SEALED-KEY-" + clientID}
		if err := e.instances.Create(ctx, in); err != nil {
			e.t.Fatal(err)
		}
		ids = append(ids, in.ID)
	}
	return ids
}

func TestInstancesAPI(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ids := e.seed("cus_42", 3)
		e.seed("cus_empty", 0)
		if err := e.instances.AppendEvent(context.Background(), ids[0], "step", "dns record created"); err != nil {
			t.Fatal(err)
		}

		for _, path := range []string{"/v1/clients/cus_42/instances", "/clients/cus_42/instances"} {
			res := e.do("GET", path, portalKey, nil)
			var list struct {
				Instances  []map[string]any
				NextCursor *string `json:"next_cursor"`
			}
			res.decode(t, &list)
			if res.Status != 200 || len(list.Instances) != 3 || list.NextCursor != nil || list.Instances[0]["id"] != ids[0] {
				t.Fatalf("GET %s = %d %s", path, res.Status, res.Body)
			}
			if bytes.Contains(res.Body, []byte("SEALED")) {
				t.Fatalf("GET %s leaks sealed secrets: %s", path, res.Body)
			}
		}

		res := e.do("GET", "/v1/clients/cus_42/instances?limit=2", portalKey, nil)
		var page struct {
			Instances  []map[string]any
			NextCursor *string `json:"next_cursor"`
		}
		res.decode(t, &page)
		if len(page.Instances) != 2 || page.NextCursor == nil || *page.NextCursor != ids[1] {
			t.Fatalf("first page = %s", res.Body)
		}
		res = e.do("GET", "/v1/clients/cus_42/instances?limit=2&cursor="+*page.NextCursor, portalKey, nil)
		res.decode(t, &page)
		if len(page.Instances) != 1 || page.Instances[0]["id"] != ids[2] || page.NextCursor != nil {
			t.Fatalf("second page = %s", res.Body)
		}

		res = e.do("GET", "/v1/instances/"+ids[0], portalKey, nil)
		var one struct {
			ID       string
			Timeline []struct{ Kind, Message string }
		}
		res.decode(t, &one)
		if res.Status != 200 || one.ID != ids[0] || len(one.Timeline) != 2 || one.Timeline[1].Message != "dns record created" {
			t.Fatalf("get instance = %d %s", res.Status, res.Body)
		}
		if bytes.Contains(res.Body, []byte("SEALED")) {
			t.Fatalf("instance leaks sealed secrets: %s", res.Body)
		}

		res = e.do("GET", "/v1/clients/cus_empty/instances", portalKey, nil)
		if res.Status != 200 || !bytes.Contains(res.Body, []byte(`"instances":[]`)) {
			t.Fatalf("empty client = %d %s", res.Status, res.Body)
		}

		notFound := []string{"/v1/instances/" + instances.NewID(), "/v1/instances/not-an-id", "/v1/instances/%27%20OR%201=1",
			"/v1/clients/cus_nobody/instances", "/v1/clients/%3Cscript%3E/instances", "/v1/nothing-here"}
		for _, path := range notFound {
			if res := e.do("GET", path, portalKey, nil); res.Status != 404 || res.errorCode(t) != "not_found" {
				t.Errorf("GET %s = %d %s, want 404", path, res.Status, res.Body)
			}
		}
		for _, path := range []string{"/v1/clients/cus_42/instances?limit=0", "/v1/clients/cus_42/instances?limit=abc",
			"/v1/clients/cus_42/instances?limit=1000", "/v1/clients/cus_42/instances?cursor=zzz", "/v1/instances?status=exploded"} {
			if res := e.do("GET", path, adminKey, nil); res.Status != 400 || res.errorCode(t) != "invalid" {
				t.Errorf("GET %s = %d %s, want 400", path, res.Status, res.Body)
			}
		}
		if res := e.do("DELETE", "/v1/hosts", adminKey, nil); res.Status != 405 {
			t.Errorf("DELETE /v1/hosts = %d, want 405", res.Status)
		}

		e.seed("cus_other", 2)
		res = e.do("GET", "/v1/instances?client=cus_other&status=active", adminKey, nil)
		var all struct{ Instances []map[string]any }
		res.decode(t, &all)
		if len(all.Instances) != 2 {
			t.Fatalf("admin filter = %s", res.Body)
		}
		res = e.do("GET", "/v1/instances?status=pending", adminKey, nil)
		res.decode(t, &all)
		if len(all.Instances) != 0 {
			t.Fatalf("status filter = %s", res.Body)
		}
	})
}

func TestServiceEndpoints(t *testing.T) {
	t.Parallel()
	db := dbtest.Open(t, database.SQLite)
	e := newEnv(t, db)
	if res := e.do("GET", "/healthz", "", nil); res.Status != 200 {
		t.Fatalf("healthz = %d", res.Status)
	}
	if res := e.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Fatalf("readyz = %d %s", res.Status, res.Body)
	}
	if res := e.do("GET", "/openapi.yaml", "", nil); res.Status != 200 || !bytes.Equal(res.Body, httpapi.OpenAPI) {
		t.Fatalf("openapi.yaml = %d", res.Status)
	}
	e.do("GET", "/v1/plans", portalKey, nil)
	e.do("GET", "/v1/instances/"+instances.NewID(), portalKey, nil)
	e.do("GET", "/no/such/route/"+strings.Repeat("x", 50), "", nil)
	if res := e.do("GET", "/metrics", "", nil); res.Status != 401 {
		t.Errorf("metrics without a key = %d, want 401: they are the operator's", res.Status)
	}
	if res := e.do("GET", "/metrics", portalKey, nil); res.Status != 403 {
		t.Errorf("metrics with the portal key = %d, want 403", res.Status)
	}
	res := e.do("GET", "/metrics", adminKey, nil)
	for _, want := range []string{
		`provisioner_http_requests_total{method="GET",route="/v1/plans",status="200"} 1`,
		`provisioner_http_requests_total{method="GET",route="/v1/instances/:id",status="404"} 1`,
		`provisioner_http_request_duration_seconds_bucket{method="GET",route="/readyz",status="200"`,
	} {
		if !bytes.Contains(res.Body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if bytes.Contains(res.Body, []byte("xxxxxxxxxx")) {
		t.Error("a raw unmatched path became a metric label")
	}

	// Every request is logged as JSON with a request id, and no key ever is.
	logs := e.logs.String()
	if !strings.Contains(logs, `"request_id":"`) || !strings.Contains(logs, `"route":"/v1/plans"`) {
		t.Errorf("request log lacks request id or route:\n%s", logs)
	}
	if strings.Contains(logs, portalKey) || strings.Contains(logs, adminKey) {
		t.Error("an API key was logged")
	}

	db.Close()
	if res := e.do("GET", "/readyz", "", nil); res.Status != 503 || res.errorCode(t) != "unavailable" {
		t.Fatalf("readyz with the database closed = %d %s", res.Status, res.Body)
	}
}

type failingStore struct{ httpapi.InstanceStore }

var errInternal = errors.New("pq: connection to 10.0.0.3 refused; password=hunter2")

func (failingStore) Get(context.Context, string) (instances.Instance, error) {
	return instances.Instance{}, errInternal
}

func (failingStore) ListByClient(context.Context, string, instances.Page) ([]instances.Instance, string, error) {
	return nil, "", apperr.Wrap(apperr.Unavailable, errInternal, "database busy, try again")
}

func TestInternalErrorsStayInside(t *testing.T) {
	t.Parallel()
	logger, logs := testlog.New(t)
	s := httpapi.New(httpapi.Config{Instances: failingStore{}, PortalKey: portalKey, Logger: logger})
	for path, want := range map[string]int{"/v1/instances/" + instances.NewID(): 500, "/v1/clients/c/instances": 503} {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+portalKey)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != want || strings.Contains(rec.Body.String(), "hunter2") || strings.Contains(rec.Body.String(), "10.0.0.3") {
			t.Errorf("GET %s = %d %s: want %d without internal text", path, rec.Code, rec.Body, want)
		}
	}
	if !strings.Contains(logs.String(), "10.0.0.3") {
		t.Error("the cause of a 500 should be logged for the operator")
	}
}

type fakePool []instances.PoolPlan

func (p fakePool) Pool(context.Context) ([]instances.PoolPlan, error) { return p, nil }

// The pool report is the operator's: the portal key is refused, and the body follows the
// document.
func TestPoolReport(t *testing.T) {
	t.Parallel()
	logger, _ := testlog.New(t)
	e := &env{t: t}
	e.server = httpapi.New(httpapi.Config{AdminKey: adminKey, PortalKey: portalKey, Logger: logger,
		Pool: fakePool{{Plan: "starter", Ready: 1, Filling: 1, Target: 2,
			Hosts: []instances.PoolHost{{Host: "nuc", Ready: 1, Filling: 1, Target: 0}}}}})
	if res := e.do("GET", "/v1/pool", portalKey, nil); res.Status != http.StatusForbidden {
		t.Errorf("portal key: %d", res.Status)
	}
	res := e.do("GET", "/v1/pool", adminKey, nil)
	var body struct{ Plans []instances.PoolPlan }
	res.decode(t, &body)
	if res.Status != http.StatusOK || len(body.Plans) != 1 || body.Plans[0].Hosts[0].Ready != 1 {
		t.Errorf("pool = %d %s", res.Status, res.Body)
	}
}
