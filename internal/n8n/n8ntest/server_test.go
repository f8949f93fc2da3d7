package n8ntest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type answer struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

func call(t *testing.T, h http.Handler, method, path, body string) answer {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
	_ = json.Unmarshal(rec.Body.Bytes(), &a.json)
	return a
}

const validOwner = `{"email":"Owner@Acme.test","firstName":"Ada","lastName":"Lovelace","password":"abcd1234X"}`

func TestZeroValueIsReadyAndClaimable(t *testing.T) {
	t.Parallel()
	var s Server
	if a := call(t, &s, "GET", "/healthz/readiness", ""); a.status != 200 || a.json["status"] != "ok" {
		t.Fatalf("readiness → %d %s", a.status, a.body)
	}
	a := call(t, &s, "POST", "/rest/owner/setup", validOwner)
	if a.status != 200 {
		t.Fatalf("setup → %d %s", a.status, a.body)
	}
	data, _ := a.json["data"].(map[string]any)
	if data["email"] != "owner@acme.test" || data["role"] != "global:owner" || data["id"] == "" {
		t.Errorf("setup answer %s", a.body)
	}
	if !strings.Contains(a.header.Get("Set-Cookie"), "n8n-auth=") {
		t.Errorf("no n8n-auth cookie: %q", a.header.Get("Set-Cookie"))
	}
	a = call(t, &s, "POST", "/rest/owner/setup", validOwner)
	if a.status != 400 || a.json["message"] != "Instance owner already setup" || a.json["code"] != float64(400) {
		t.Errorf("second setup → %d %s", a.status, a.body)
	}
	if s.SetupCalls() != 2 {
		t.Errorf("SetupCalls = %d", s.SetupCalls())
	}
	if a := call(t, &s, "GET", "/rest/settings", ""); !strings.Contains(a.body, `"showSetupOnFirstLoad":false`) {
		t.Errorf("settings after setup: %s", a.body)
	}
}

func TestStartupPhases(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }

	s := &Server{ReadyAfter: 10 * time.Second, RESTLag: 3 * time.Second, Now: clock}
	s.Start()
	phase := func(wantReady int, wantSetup int, wantBody string) {
		t.Helper()
		if a := call(t, s, "GET", "/healthz", ""); a.status != 200 {
			t.Errorf("/healthz → %d", a.status)
		}
		if a := call(t, s, "GET", "/healthz/readiness", ""); a.status != wantReady {
			t.Errorf("readiness → %d, want %d", a.status, wantReady)
		}
		a := call(t, s, "POST", "/rest/owner/setup", "{}")
		if a.status != wantSetup || !strings.Contains(a.body, wantBody) {
			t.Errorf("setup → %d %q, want %d containing %q", a.status, a.body, wantSetup, wantBody)
		}
	}
	phase(503, 404, "Cannot POST /rest/owner/setup")
	advance(10 * time.Second)
	phase(200, 404, "Cannot POST /rest/owner/setup") // ready, controllers not mounted yet
	advance(3 * time.Second)
	phase(200, 400, `"path":["email"]`)

	s.SetReady(false)
	phase(503, 404, "Cannot POST")
	s.SetReady(true) // RESTLag counts again from here
	phase(200, 404, "Cannot POST")
	advance(3 * time.Second)
	phase(200, 400, "Required")

	page := &Server{StartingUpPage: true}
	page.SetReady(false)
	if a := call(t, page, "POST", "/rest/owner/setup", validOwner); a.status != 200 || a.body != "n8n is starting up. Please wait" {
		t.Errorf("start-up gate → %d %q", a.status, a.body)
	}
	if _, ok := page.Owner(); ok || page.SetupCalls() != 0 {
		t.Error("the start-up gate let a setup through")
	}
}

func TestOwnerValidationShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body     string
		wantCode string
		wantMsg  string
		wantPath string
	}{
		{`{}`, "invalid_type", "Required", "email"},
		{`not json`, "invalid_type", "Required", "email"},
		{`{"email":42}`, "invalid_type", "Expected string", "email"},
		{`{"email":"nope","firstName":"A","lastName":"B","password":"abcd1234X"}`, "invalid_string", "Invalid email", "email"},
		{`{"email":"a@b.test","lastName":"B","password":"abcd1234X"}`, "invalid_type", "Required", "firstName"},
		{`{"email":"a@b.test","firstName":"","lastName":"B","password":"abcd1234X"}`, "too_small", "First name is required", "firstName"},
		{`{"email":"a@b.test","firstName":"A","lastName":"","password":"abcd1234X"}`, "too_small", "Last name is required", "lastName"},
		{`{"email":"a@b.test","firstName":"A","lastName":"B"}`, "invalid_type", "Required", "password"},
		{`{"email":"a@b.test","firstName":"A","lastName":"B","password":"Ab1"}`, "too_small", "Password must be 8 to 64 characters long.", "password"},
		{`{"email":"a@b.test","firstName":"A","lastName":"B","password":"` + strings.Repeat("Ab1", 22) + `"}`, "too_big", "Password must be 8 to 64 characters long.", "password"},
		{`{"email":"a@b.test","firstName":"A","lastName":"B","password":"abcdEFGH"}`, "custom", "Password must contain at least 1 number.", "password"},
		{`{"email":"a@b.test","firstName":"A","lastName":"B","password":"abcd1234"}`, "custom", "Password must contain at least 1 uppercase letter.", "password"},
	}
	for _, tt := range tests {
		var s Server
		a := call(t, &s, "POST", "/rest/owner/setup", tt.body)
		path, _ := a.json["path"].([]any)
		if a.status != 400 || a.json["code"] != tt.wantCode || a.json["message"] != tt.wantMsg || len(path) != 1 || path[0] != tt.wantPath {
			t.Errorf("body %s → %d %s, want 400 %s %q at %s", tt.body, a.status, a.body, tt.wantCode, tt.wantMsg, tt.wantPath)
		}
		if _, ok := s.Owner(); ok {
			t.Errorf("body %s created an owner", tt.body)
		}
	}
}

func TestExpressRouting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method, path string
		wantStatus   int
	}{
		{"POST", "/REST/OWNER/SETUP", 200},
		{"POST", "/rest/owner/setup/", 200},
		{"POST", "/rest/owner/setup//", 404},
		{"POST", "/rest/owner/setupx", 404},
		{"POST", "/rest/owner", 404},
		{"GET", "/rest/owner/setup", 200}, // the editor page, not the handler
		{"GET", "/HEALTHZ/", 200},
	}
	for _, tt := range tests {
		var s Server
		a := call(t, &s, tt.method, tt.path, validOwner)
		if a.status != tt.wantStatus {
			t.Errorf("%s %s → %d %q, want %d", tt.method, tt.path, a.status, a.body, tt.wantStatus)
		}
		_, owned := s.Owner()
		if wantOwned := tt.method == "POST" && tt.wantStatus == 200; owned != wantOwned {
			t.Errorf("%s %s: owner set = %v, want %v", tt.method, tt.path, owned, wantOwned)
		}
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	var s Server
	if a := call(t, &s, "POST", "/rest/login", `{"emailOrLdapLoginId":"owner@acme.test","password":"abcd1234X"}`); a.status != 401 {
		t.Errorf("login before any owner → %d", a.status)
	}
	call(t, &s, "POST", "/rest/owner/setup", validOwner)
	tests := []struct {
		body       string
		wantStatus int
		wantMsg    string
	}{
		{`{"emailOrLdapLoginId":"OWNER@acme.test","password":"abcd1234X"}`, 200, ""},
		{`{"emailOrLdapLoginId":"owner@acme.test","password":"abcd1234x"}`, 401, "Wrong username or password. Do you have caps lock on?"},
		{`{"emailOrLdapLoginId":"other@acme.test","password":"abcd1234X"}`, 401, "Wrong username or password. Do you have caps lock on?"},
		{`{"email":"owner@acme.test","password":"abcd1234X"}`, 400, "Required"},
		{`{"emailOrLdapLoginId":"owner@acme.test"}`, 400, "Required"},
	}
	for _, tt := range tests {
		a := call(t, &s, "POST", "/rest/login", tt.body)
		if a.status != tt.wantStatus || (tt.wantMsg != "" && a.json["message"] != tt.wantMsg) {
			t.Errorf("login %s → %d %s", tt.body, a.status, a.body)
		}
	}
	if s.LoginCalls() != 6 {
		t.Errorf("LoginCalls = %d, want 6", s.LoginCalls())
	}
}

func TestFailNext(t *testing.T) {
	t.Parallel()
	var s Server
	s.FailNext(2, 0)
	if a := call(t, &s, "GET", "/healthz", ""); a.status != 200 {
		t.Errorf("/healthz must not fail: %d", a.status)
	}
	for i := range 2 {
		if a := call(t, &s, "POST", "/rest/owner/setup", validOwner); a.status != 500 || a.json["code"] != float64(0) {
			t.Errorf("failure %d → %d %s", i, a.status, a.body)
		}
	}
	if a := call(t, &s, "POST", "/rest/owner/setup", validOwner); a.status != 200 {
		t.Errorf("after the failures → %d", a.status)
	}
	s.FailNext(1, 503)
	if a := call(t, &s, "GET", "/healthz/readiness", ""); a.status != 503 || a.json["message"] != "Database is not ready!" {
		t.Errorf("503 failure → %d %s", a.status, a.body)
	}
}

func TestConcurrentSetupHasOneWinner(t *testing.T) {
	t.Parallel()
	var s Server
	const n = 20
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"email":"user%d@acme.test","firstName":"A","lastName":"B","password":"abcd1234X"}`, i)
			statuses[i] = call(t, &s, "POST", "/rest/owner/setup", body).status
		})
	}
	wg.Wait()
	wins := 0
	for _, st := range statuses {
		switch st {
		case 200:
			wins++
		case 400:
		default:
			t.Errorf("status %d", st)
		}
	}
	owner, ok := s.Owner()
	if wins != 1 || !ok {
		t.Fatalf("%d winners, owner %+v", wins, owner)
	}
	if s.AuthorizationSeen() != 0 {
		t.Errorf("AuthorizationSeen = %d without any Authorization header", s.AuthorizationSeen())
	}
	req := httptest.NewRequest("GET", "/healthz", nil)
	req.SetBasicAuth("u", "p")
	s.ServeHTTP(httptest.NewRecorder(), req)
	if s.AuthorizationSeen() != 1 {
		t.Errorf("AuthorizationSeen = %d, want 1", s.AuthorizationSeen())
	}
}
