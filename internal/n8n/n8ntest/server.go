// Package n8ntest is a fake n8n for tests: an http.Handler that speaks the parts of n8n's
// HTTP API the provisioner uses, with n8n's own validation rules and answers, and knobs to
// reproduce how a real instance starts up and fails.
//
// Covered (n8n 1.x/2.x behaviour):
//   - GET /healthz: always 200 {"status":"ok"}.
//   - GET /healthz/readiness: 503 {"status":"error"} until ready, then 200 {"status":"ok"}.
//   - Every other route is not mounted until the instance is ready and RESTLag has passed:
//     Express's 404 "Cannot POST /rest/owner/setup" page, or, with StartingUpPage, the
//     200 "n8n is starting up. Please wait" that n8n's start-up gate sends.
//   - POST /rest/owner/setup {email, firstName, lastName, password}: the body is checked as
//     n8n's OwnerSetupRequestDto does (a 400 carrying the first zod issue: "Invalid email",
//     "First name is required", "Password must be 8 to 64 characters long.", "Password must
//     contain at least 1 number.", "Password must contain at least 1 uppercase letter."),
//     then the first caller becomes the owner (200 {"data": user} and an n8n-auth cookie)
//     and every later one gets 400 {"code":400,"message":"Instance owner already setup"}.
//     No authentication, as in n8n: whoever calls first owns the instance.
//   - POST /rest/login {emailOrLdapLoginId, password}: 200 {"data": user} or 401
//     {"code":401,"message":"Wrong username or password. Do you have caps lock on?"}.
//   - GET /rest/settings: {"data":{"userManagement":{"showSetupOnFirstLoad":…}}}.
//   - GET of anything else: the editor's index page.
//   - Routing is Express's: case-insensitive, one trailing slash optional, so
//     POST /REST/Owner/Setup/ reaches the owner-setup handler exactly as in n8n.
//
// Not covered: cookies are issued but never checked, no MFA, LDAP or SAML, no rate limits,
// no public API (/api/v1), no workflows or credentials, no push connection.
package n8ntest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

// User is an n8n user as the fake stores it (the password is not exposed).
type User struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	FirstName string `json:"firstName"`
	LastName  string `json:"lastName"`
	Role      string `json:"role"`
}

// Server is a fake n8n instance. The zero value is an instance that is ready at once; set
// the fields before serving, and use the methods while serving.
type Server struct {
	// ReadyAfter is how long after Start (or the first request) readiness turns 200.
	ReadyAfter time.Duration
	// RESTLag is how long after readiness the REST routes are mounted. Real n8n reports
	// ready a moment before its controllers answer, which the client has to ride out.
	RESTLag time.Duration
	// StartingUpPage makes unmounted routes answer 200 "n8n is starting up. Please wait",
	// as n8n's start-up gate does while migrations run, instead of Express's 404.
	StartingUpPage bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Database, when set, is a file where the owner is kept, as real n8n keeps its users
	// in database.sqlite in its data dir: a server started on a data dir that holds one
	// has that owner, so a restored or moved data dir comes back with its login.
	Database string

	mu          sync.Mutex
	started     time.Time
	override    *bool
	overrideAt  time.Time
	failN       int
	failStatus  int
	owner       *User
	ownerPass   string // its SHA-256, as stored
	setupCalls  int
	loginCalls  int
	authSeen    int
	settingsGet int
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Start marks the moment the process started; ReadyAfter counts from here. The first
// request calls it when nobody did.
func (s *Server) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startLocked()
}

func (s *Server) startLocked() {
	if s.started.IsZero() {
		s.started = s.now()
		s.loadLocked()
	}
}

// storedOwner is the Database file's content.
type storedOwner struct {
	Owner        User   `json:"owner"`
	PasswordHash string `json:"password_sha256"`
}

func (s *Server) loadLocked() {
	if s.Database == "" {
		return
	}
	raw, err := os.ReadFile(s.Database)
	var st storedOwner
	if err != nil || json.Unmarshal(raw, &st) != nil || st.Owner.ID == "" {
		return // no database yet: a fresh n8n
	}
	s.owner, s.ownerPass = &st.Owner, st.PasswordHash
}

func (s *Server) saveLocked() error {
	if s.Database == "" {
		return nil
	}
	raw, err := json.Marshal(storedOwner{Owner: *s.owner, PasswordHash: s.ownerPass})
	if err != nil {
		return err
	}
	return os.WriteFile(s.Database, raw, 0o600)
}

func passwordHash(p string) string {
	sum := sha256.Sum256([]byte(p))
	return hex.EncodeToString(sum[:])
}

// SetReady forces readiness on or off, overriding ReadyAfter: SetReady(false) keeps the
// instance starting forever, SetReady(true) finishes start-up now (REST routes follow
// after RESTLag).
func (s *Server) SetReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override = &ready
	s.overrideAt = s.now()
}

// FailNext makes the next n requests, other than GET /healthz, answer status (500 when 0)
// with n8n's error shape, as an instance whose database went away does.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status == 0 {
		status = http.StatusInternalServerError
	}
	s.failN, s.failStatus = n, status
}

// Owner returns the instance owner and whether one has been set up.
func (s *Server) Owner() (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owner == nil {
		return User{}, false
	}
	return *s.owner, true
}

// SetupCalls returns how many owner-setup requests reached the mounted handler, whatever
// their outcome.
func (s *Server) SetupCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setupCalls
}

// LoginCalls returns how many login requests reached the mounted handler.
func (s *Server) LoginCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loginCalls
}

// AuthorizationSeen returns how many requests arrived carrying an Authorization header:
// an ingress whose basicauth keeps the header (Traefik's default) forwards the guard
// credential to n8n.
func (s *Server) AuthorizationSeen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authSeen
}

// state reports readiness and whether the REST routes are mounted.
func (s *Server) state() (ready, mounted bool) {
	now := s.now()
	var readyAt time.Time
	switch {
	case s.override != nil && !*s.override:
		return false, false
	case s.override != nil:
		readyAt = s.overrideAt
	default:
		readyAt = s.started.Add(s.ReadyAfter)
	}
	if now.Before(readyAt) {
		return false, false
	}
	return true, !now.Before(readyAt.Add(s.RESTLag))
}

// Express routes ignore case and accept one trailing slash.
func routeIs(path, route string) bool {
	return strings.EqualFold(strings.TrimSuffix(path, "/"), route) || strings.EqualFold(path, route)
}

// ServeHTTP answers like n8n.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.startLocked()
	if r.Header.Get("Authorization") != "" {
		s.authSeen++
	}
	p := r.URL.Path
	if r.Method == http.MethodGet && routeIs(p, "/healthz") {
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	if s.failN > 0 {
		s.failN--
		status := s.failStatus
		s.mu.Unlock()
		// n8n's error shape: a ResponseError carries its status as code, anything else 0.
		if status == http.StatusServiceUnavailable {
			writeJSON(w, status, map[string]any{"code": status, "message": "Database is not ready!"})
		} else {
			writeJSON(w, status, map[string]any{"code": 0, "message": "Internal server error"})
		}
		return
	}
	ready, mounted := s.state()
	if r.Method == http.MethodGet && routeIs(p, "/healthz/readiness") {
		s.mu.Unlock()
		if ready {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		} else {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "error"})
		}
		return
	}
	if !mounted {
		startingUp := s.StartingUpPage
		s.mu.Unlock()
		if startingUp {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte("n8n is starting up. Please wait"))
			return
		}
		expressNotFound(w, r)
		return
	}
	s.mu.Unlock()

	switch {
	case r.Method == http.MethodPost && routeIs(p, "/rest/owner/setup"):
		s.ownerSetup(w, r)
	case r.Method == http.MethodPost && routeIs(p, "/rest/login"):
		s.login(w, r)
	case r.Method == http.MethodGet && routeIs(p, "/rest/settings"):
		s.mu.Lock()
		show := s.owner == nil
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
			"userManagement": map[string]any{"showSetupOnFirstLoad": show},
		}})
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!DOCTYPE html><html><head><title>n8n.io - Workflow Automation</title></head><body><div id=\"app\"></div></body></html>"))
	default:
		expressNotFound(w, r)
	}
}

// expressNotFound is Express's default 404 (finalhandler).
func expressNotFound(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusNotFound)
	fmt.Fprintf(w, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot %s %s</pre>\n</body>\n</html>\n",
		r.Method, html.EscapeString(r.URL.Path))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// zodIssue is the raw first zod issue n8n sends for a body that fails its DTO.
type zodIssue map[string]any

func required(field string) zodIssue {
	return zodIssue{"code": "invalid_type", "expected": "string", "received": "undefined", "path": []string{field}, "message": "Required"}
}

// decodeBody reads a JSON object and returns its string fields; a field of another type
// comes back as a zod invalid_type issue.
func decodeBody(r *http.Request, fields ...string) (map[string]*string, zodIssue) {
	var raw map[string]any
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20)).Decode(&raw); err != nil || raw == nil {
		raw = map[string]any{}
	}
	out := make(map[string]*string, len(fields))
	for _, f := range fields {
		switch v := raw[f].(type) {
		case nil:
			out[f] = nil
		case string:
			out[f] = &v
		default:
			return nil, zodIssue{"code": "invalid_type", "expected": "string", "received": fmt.Sprintf("%T", v), "path": []string{f}, "message": "Expected string"}
		}
	}
	return out, nil
}

// emailPattern approximates zod's email check.
var emailPattern = regexp.MustCompile(`^[A-Za-z0-9_'+\-.]*[A-Za-z0-9_+\-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}$`)

// passwordIssue applies n8n's password schema (api-types password.schema.ts).
func passwordIssue(p string) zodIssue {
	n := len(utf16.Encode([]rune(p))) // JavaScript counts UTF-16 code units
	if n < 8 {
		return zodIssue{"code": "too_small", "minimum": 8, "type": "string", "inclusive": true, "exact": false, "message": "Password must be 8 to 64 characters long.", "path": []string{"password"}}
	}
	if n > 64 {
		return zodIssue{"code": "too_big", "maximum": 64, "type": "string", "inclusive": true, "exact": false, "message": "Password must be 8 to 64 characters long.", "path": []string{"password"}}
	}
	if !strings.ContainsAny(p, "0123456789") { // /\d/ in JavaScript is ASCII-only
		return zodIssue{"code": "custom", "message": "Password must contain at least 1 number.", "path": []string{"password"}}
	}
	if !strings.ContainsAny(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		return zodIssue{"code": "custom", "message": "Password must contain at least 1 uppercase letter.", "path": []string{"password"}}
	}
	return nil
}

func (s *Server) ownerSetup(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.setupCalls++
	s.mu.Unlock()

	body, issue := decodeBody(r, "email", "firstName", "lastName", "password")
	if issue == nil {
		issue = validateOwner(body)
	}
	if issue != nil {
		writeJSON(w, http.StatusBadRequest, issue)
		return
	}

	s.mu.Lock()
	if s.owner != nil {
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": "Instance owner already setup"})
		return
	}
	// n8n's User entity lower-cases the email before saving.
	s.owner = &User{
		ID: newID(), Email: strings.ToLower(*body["email"]),
		FirstName: *body["firstName"], LastName: *body["lastName"], Role: "global:owner",
	}
	s.ownerPass = passwordHash(*body["password"])
	u := *s.owner
	err := s.saveLocked()
	s.mu.Unlock()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"code": 0, "message": "SQLITE_IOERR: " + err.Error()})
		return
	}
	issueCookie(w)
	writeJSON(w, http.StatusOK, map[string]any{"data": publicUser(u)})
}

// validateOwner mirrors OwnerSetupRequestDto: fields in order, first issue wins.
func validateOwner(b map[string]*string) zodIssue {
	switch {
	case b["email"] == nil:
		return required("email")
	case !emailPattern.MatchString(*b["email"]):
		return zodIssue{"validation": "email", "code": "invalid_string", "message": "Invalid email", "path": []string{"email"}}
	case b["firstName"] == nil:
		return required("firstName")
	case *b["firstName"] == "":
		return zodIssue{"code": "too_small", "minimum": 1, "type": "string", "inclusive": true, "exact": false, "message": "First name is required", "path": []string{"firstName"}}
	case b["lastName"] == nil:
		return required("lastName")
	case *b["lastName"] == "":
		return zodIssue{"code": "too_small", "minimum": 1, "type": "string", "inclusive": true, "exact": false, "message": "Last name is required", "path": []string{"lastName"}}
	case b["password"] == nil:
		return required("password")
	default:
		return passwordIssue(*b["password"])
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.loginCalls++
	s.mu.Unlock()

	body, issue := decodeBody(r, "emailOrLdapLoginId", "password")
	if issue == nil && body["emailOrLdapLoginId"] == nil {
		issue = required("emailOrLdapLoginId")
	}
	if issue == nil && body["password"] == nil {
		issue = required("password")
	}
	if issue != nil {
		writeJSON(w, http.StatusBadRequest, issue)
		return
	}
	s.mu.Lock()
	var u *User
	if s.owner != nil && strings.EqualFold(s.owner.Email, *body["emailOrLdapLoginId"]) &&
		subtle.ConstantTimeCompare([]byte(s.ownerPass), []byte(passwordHash(*body["password"]))) == 1 {
		c := *s.owner
		u = &c
	}
	s.mu.Unlock()
	if u == nil {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"code": 401, "message": "Wrong username or password. Do you have caps lock on?"})
		return
	}
	issueCookie(w)
	writeJSON(w, http.StatusOK, map[string]any{"data": publicUser(*u)})
}

func publicUser(u User) map[string]any {
	return map[string]any{
		"id": u.ID, "email": u.Email, "firstName": u.FirstName, "lastName": u.LastName,
		"role": u.Role, "isPending": false, "isOwner": true, "mfaEnabled": false,
		"settings": map[string]any{}, "signInType": "email",
	}
}

func issueCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: "n8n-auth", Value: newID(), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
