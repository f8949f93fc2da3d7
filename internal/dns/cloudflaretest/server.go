// Package cloudflaretest is an in-process fake of the Cloudflare API v4 for DNS records,
// so that the dns adapter, the provisioning saga and the doctor can be tested without a
// Cloudflare account.
//
// What it covers, on the wire as Cloudflare speaks it:
//   - the v4 envelope {"success","errors":[{"code","message"}],"messages","result",
//     "result_info":{"page","per_page","count","total_count","total_pages"}};
//   - bearer-token auth: no Authorization header → 400 code 9106, a header that is not
//     "Bearer <token>" → 400 code 6003 with error_chain 6111, a wrong token → 401 code 9109
//     "Invalid access token", a zone the token is not scoped to (Server.Zones) → 403 code
//     10000 "Authentication error";
//   - GET/POST /zones/{zone}/dns_records, with the filters name (exact, as cloudflare-go
//     sends it), name.exact, name.contains, name.startswith, name.endswith, type, content,
//     proxied, comment, match=all|any, order, direction, page, per_page;
//   - GET/PUT/PATCH/DELETE /zones/{zone}/dns_records/{id} (PUT replaces, PATCH merges);
//   - the "/client/v4" prefix of the real base URL is accepted and stripped;
//   - validation as Cloudflare does it: A content must be IPv4 (9005), AAAA IPv6 (9006),
//     CNAME a hostname (1004/9007), names must be hostnames (9000), TTL 1 (automatic) or
//     60–86400 (1004/9021), only A/AAAA/CNAME may be proxied (9004), an identical record
//     (same type, name and content) → 81058 "An identical record already exists.", an
//     A/AAAA beside a CNAME → 81054, a CNAME beside anything → 81053, an unknown record →
//     404 code 81044, a malformed zone id → 400 codes 7003 and 7000.
//
// Codes and messages were taken from responses that real users reported. A few are
// approximations because no real sample was found: the bodies for an unreadable JSON
// request (9207), a missing type (1004/9101), a method the route does not have (405,
// 10405) and an injected 5xx (10001; cloudflare-go ignores 5xx bodies anyway).
// Not covered: zone names (record names are stored as sent, lowercased, so callers send
// fully-qualified names as the adapter does), other record types' content rules, tags
// validation, batch and import/export endpoints, cursors.
//
// Knobs: FailNext makes the next N requests fail with 429 (with Retry-After) or a 5xx.
// Helpers: Records and AddRecord inspect and change state behind the client's back (drift,
// duplicates made by hand or before Cloudflare refused them); Requests and Writes count what
// was received, so tests can prove that no request, or no write, was made.
//
// A zero Server is ready: it accepts any well-formed bearer token (set Token to require
// one), any zone whose id is 32 hex characters, and it starts with no records.
package cloudflaretest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Record is a DNS record as the fake stores and serves it (the fields of Cloudflare's
// dns_records result that DNS clients read).
type Record struct {
	ID         string    `json:"id"`
	ZoneID     string    `json:"zone_id"`
	Name       string    `json:"name"`
	Type       string    `json:"type"`
	Content    string    `json:"content"`
	Proxiable  bool      `json:"proxiable"`
	Proxied    bool      `json:"proxied"`
	TTL        int       `json:"ttl"`
	Comment    string    `json:"comment,omitempty"` // Cloudflare omits an empty comment
	Tags       []string  `json:"tags"`
	CreatedOn  time.Time `json:"created_on"`
	ModifiedOn time.Time `json:"modified_on"`

	seq int64 // creation order, to break ties between equal CreatedOn
}

// Server is the fake Cloudflare API. It is an http.Handler; mount it with httptest.NewServer
// and give the adapter the server's URL as its base URL. Safe for concurrent use.
type Server struct {
	// Token is the API token every request must carry as "Authorization: Bearer <Token>".
	// Empty accepts any well-formed token.
	Token string
	// Zones, when not empty, are the only zone ids the token may touch; any other zone
	// answers 403 code 10000, as Cloudflare does for a token scoped to other zones.
	Zones []string
	// Now is the clock for created_on/modified_on; nil uses time.Now.
	Now func() time.Time

	mu       sync.Mutex
	zones    map[string]map[string]*Record // zone id → record id → record
	seq      int64
	failN    int
	failCode int
	requests int
	writes   int
}

// retryAfterSeconds is what an injected 429 advertises; Cloudflare sends Retry-After on its
// rate-limit answers and clients are expected to honour it.
const retryAfterSeconds = "1"

var (
	hexID     = regexp.MustCompile(`^[0-9a-f]{32}$`)
	tokenForm = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// FailNext makes the next n requests fail with HTTP status code before they are looked at:
// 429 carries Retry-After and Cloudflare's rate-limit error 971; any other code (500, 502,
// 503, ...) an internal-error envelope. n <= 0 clears pending failures.
func (s *Server) FailNext(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < 0 {
		n = 0
	}
	s.failN, s.failCode = n, code
}

// Requests returns how many requests the server has received, failed ones included.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Writes returns how many POST, PUT, PATCH and DELETE requests the server has received,
// failed ones included: a client that made no write attempt leaves it unchanged.
func (s *Server) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// Records returns copies of the zone's records, oldest first.
func (s *Server) Records(zone string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedLocked(zone)
}

// AddRecord stores r in zone as another Cloudflare client would, without the API's
// validation or duplicate check, so tests can set up drift the adapter must repair. Empty
// ID, TTL and timestamps are filled in; Name and Type are normalised. It returns the
// stored record.
func (s *Server) AddRecord(zone string, r Record) Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if r.ID == "" {
		r.ID = newID()
	}
	r.ZoneID = zone
	r.Name = strings.ToLower(strings.TrimSuffix(r.Name, "."))
	r.Type = strings.ToUpper(r.Type)
	r.Proxiable = proxiable(r.Type)
	if r.TTL == 0 {
		r.TTL = 1
	}
	if r.CreatedOn.IsZero() {
		r.CreatedOn = now
	}
	if r.ModifiedOn.IsZero() {
		r.ModifiedOn = r.CreatedOn
	}
	if r.Tags == nil {
		r.Tags = []string{}
	}
	s.seq++
	r.seq = s.seq
	stored := r
	s.zoneLocked(zone)[r.ID] = &stored
	return stored
}

// ServeHTTP answers the Cloudflare v4 DNS-records routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.requests++
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if write {
		s.writes++
	}
	if s.failN > 0 {
		s.failN--
		s.injectedFailure(w)
		return
	}
	if !s.authorized(w, r) {
		return
	}

	path := strings.TrimPrefix(r.URL.Path, "/client/v4")
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 3 || parts[0] != "zones" || parts[2] != "dns_records" || len(parts) > 4 {
		writeErr(w, http.StatusBadRequest, apiError{7000, "No route for that URI", nil})
		return
	}
	zone := parts[1]
	if !hexID.MatchString(zone) {
		writeErr(w, http.StatusBadRequest,
			apiError{7003, fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?", path), nil},
			apiError{7000, "No route for that URI", nil})
		return
	}
	if len(s.Zones) > 0 && !contains(s.Zones, zone) {
		writeErr(w, http.StatusForbidden, apiError{10000, "Authentication error", nil})
		return
	}

	if len(parts) == 3 {
		switch r.Method {
		case http.MethodGet:
			s.list(w, r, zone)
		case http.MethodPost:
			s.create(w, r, zone)
		default:
			writeErr(w, http.StatusMethodNotAllowed, apiError{10405, "Method not allowed", nil})
		}
		return
	}

	id := parts[3]
	if !hexID.MatchString(id) {
		writeErr(w, http.StatusBadRequest, apiError{1002, "Invalid dns record identifier", nil})
		return
	}
	rec, ok := s.zoneLocked(zone)[id]
	if !ok {
		writeErr(w, http.StatusNotFound, apiError{81044, "Record does not exist.", nil})
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeOK(w, http.StatusOK, rec, nil)
	case http.MethodPut, http.MethodPatch:
		s.update(w, r, zone, rec)
	case http.MethodDelete:
		delete(s.zoneLocked(zone), id)
		writeOK(w, http.StatusOK, map[string]string{"id": id}, nil)
	default:
		writeErr(w, http.StatusMethodNotAllowed, apiError{10405, "Method not allowed", nil})
	}
}

func (s *Server) injectedFailure(w http.ResponseWriter) {
	if s.failCode == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfterSeconds)
		writeErr(w, http.StatusTooManyRequests,
			apiError{971, "Please wait and consider throttling your request speed", nil})
		return
	}
	writeErr(w, s.failCode, apiError{10001, "Internal server error (injected by cloudflaretest)", nil})
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		writeErr(w, http.StatusBadRequest,
			apiError{9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers", nil})
		return false
	}
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || !tokenForm.MatchString(token) {
		writeErr(w, http.StatusBadRequest, apiError{6003, "Invalid request headers",
			[]apiError{{6111, "Invalid format for Authorization header", nil}}})
		return false
	}
	if s.Token != "" && token != s.Token {
		writeErr(w, http.StatusUnauthorized, apiError{9109, "Invalid access token", nil})
		return false
	}
	return true
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, zone string) {
	q := r.URL.Query()
	var filters []func(*Record) bool
	addString := func(key string, field func(*Record) string, match func(have, want string) bool) {
		if want, ok := q[key]; ok && len(want) > 0 {
			v := strings.ToLower(want[0])
			filters = append(filters, func(rec *Record) bool { return match(strings.ToLower(field(rec)), v) })
		}
	}
	name := func(rec *Record) string { return rec.Name }
	addString("name", name, func(h, w string) bool { return h == strings.TrimSuffix(w, ".") })
	addString("name.exact", name, func(h, w string) bool { return h == strings.TrimSuffix(w, ".") })
	addString("name.contains", name, strings.Contains)
	addString("name.startswith", name, strings.HasPrefix)
	addString("name.endswith", name, strings.HasSuffix)
	addString("type", func(rec *Record) string { return rec.Type }, func(h, w string) bool { return h == w })
	addString("content", func(rec *Record) string { return rec.Content }, func(h, w string) bool { return h == w })
	addString("comment", func(rec *Record) string { return rec.Comment }, func(h, w string) bool { return h == w })
	if v := q.Get("proxied"); v != "" {
		want := v == "true"
		filters = append(filters, func(rec *Record) bool { return rec.Proxied == want })
	}
	matchAny := q.Get("match") == "any"

	var matched []Record
	for _, rec := range s.sortedLocked(zone) {
		if keep(&rec, filters, matchAny) {
			matched = append(matched, rec)
		}
	}
	orderRecords(matched, q.Get("order"), q.Get("direction") == "desc")

	perPage := atoiOr(q.Get("per_page"), 100)
	if perPage < 1 {
		perPage = 100
	}
	page := atoiOr(q.Get("page"), 1)
	if page < 1 {
		page = 1
	}
	total := len(matched)
	from := min((page-1)*perPage, total)
	to := min(from+perPage, total)
	pageRecs := matched[from:to]
	if pageRecs == nil {
		pageRecs = []Record{}
	}
	writeOK(w, http.StatusOK, pageRecs, &resultInfo{
		Page:       page,
		PerPage:    perPage,
		Count:      len(pageRecs),
		TotalCount: total,
		TotalPages: (total + perPage - 1) / perPage,
	})
}

// keep reports whether rec passes the filters: all of them (match=all, the default) or at
// least one (match=any).
func keep(rec *Record, filters []func(*Record) bool, matchAny bool) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if f(rec) == matchAny {
			return matchAny
		}
	}
	return !matchAny
}

func orderRecords(recs []Record, by string, desc bool) {
	var less func(a, b *Record) bool
	switch by {
	case "type":
		less = func(a, b *Record) bool { return a.Type < b.Type }
	case "name":
		less = func(a, b *Record) bool { return a.Name < b.Name }
	case "content":
		less = func(a, b *Record) bool { return a.Content < b.Content }
	case "ttl":
		less = func(a, b *Record) bool { return a.TTL < b.TTL }
	case "proxied":
		less = func(a, b *Record) bool { return !a.Proxied && b.Proxied }
	default:
		return // creation order, which keeps pages stable
	}
	sort.SliceStable(recs, func(i, j int) bool {
		if desc {
			return less(&recs[j], &recs[i])
		}
		return less(&recs[i], &recs[j])
	})
}

// body is a create/update request; pointers tell "absent" from "zero" for PATCH.
type body struct {
	Type    *string  `json:"type"`
	Name    *string  `json:"name"`
	Content *string  `json:"content"`
	TTL     *int     `json:"ttl"`
	Proxied *bool    `json:"proxied"`
	Comment *string  `json:"comment"`
	Tags    []string `json:"tags"`
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, zone string) {
	var b body
	if !decode(w, r, &b) {
		return
	}
	rec := Record{ZoneID: zone, Tags: []string{}}
	apply(&rec, &b)
	if !s.valid(w, zone, &rec, "") {
		return
	}
	now := s.now()
	rec.ID, rec.CreatedOn, rec.ModifiedOn = newID(), now, now
	s.seq++
	rec.seq = s.seq
	stored := rec
	s.zoneLocked(zone)[rec.ID] = &stored
	writeOK(w, http.StatusOK, stored, nil)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, zone string, cur *Record) {
	var b body
	if !decode(w, r, &b) {
		return
	}
	next := *cur
	if r.Method == http.MethodPut {
		// PUT replaces the record: what the body leaves out goes back to its default.
		next.Type, next.Name, next.Content, next.TTL, next.Proxied, next.Comment = "", "", "", 0, false, ""
		next.Tags = []string{}
	}
	apply(&next, &b)
	if !s.valid(w, zone, &next, cur.ID) {
		return
	}
	next.ModifiedOn = s.now()
	*cur = next
	writeOK(w, http.StatusOK, cur, nil)
}

func apply(rec *Record, b *body) {
	if b.Type != nil {
		rec.Type = strings.ToUpper(*b.Type)
	}
	if b.Name != nil {
		rec.Name = strings.ToLower(strings.TrimSuffix(*b.Name, "."))
	}
	if b.Content != nil {
		rec.Content = *b.Content
	}
	if b.TTL != nil {
		rec.TTL = *b.TTL
	}
	if b.Proxied != nil {
		rec.Proxied = *b.Proxied
	}
	if b.Comment != nil {
		rec.Comment = *b.Comment
	}
	if b.Tags != nil {
		rec.Tags = b.Tags
	}
	if rec.TTL == 0 {
		rec.TTL = 1 // Cloudflare's default: automatic
	}
	rec.Proxiable = proxiable(rec.Type)
}

var hostname = regexp.MustCompile(`^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`)

// valid checks rec as Cloudflare would and writes the error when it is not; self is the id
// of the record being updated, which does not conflict with itself.
func (s *Server) valid(w http.ResponseWriter, zone string, rec *Record, self string) bool {
	validation := func(code int, msg string) bool {
		writeErr(w, http.StatusBadRequest, apiError{1004, "DNS Validation Error", []apiError{{code, msg, nil}}})
		return false
	}
	switch {
	case rec.Type == "":
		return validation(9101, "type is required")
	case rec.Name == "" || len(rec.Name) > 253 || !hostname.MatchString(rec.Name):
		writeErr(w, http.StatusBadRequest, apiError{9000, "DNS name is invalid.", nil})
		return false
	case rec.TTL != 1 && (rec.TTL < 60 || rec.TTL > 86400):
		return validation(9021, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.")
	case rec.Proxied && !rec.Proxiable:
		writeErr(w, http.StatusBadRequest, apiError{9004, "This record type cannot be proxied.", nil})
		return false
	}
	switch rec.Type {
	case "A":
		if a, err := netip.ParseAddr(rec.Content); err != nil || !a.Is4() {
			writeErr(w, http.StatusBadRequest, apiError{9005, "Content for A record must be a valid IPv4 address.", nil})
			return false
		}
	case "AAAA":
		if a, err := netip.ParseAddr(rec.Content); err != nil || !a.Is6() || a.Is4In6() {
			writeErr(w, http.StatusBadRequest, apiError{9006, "Content for AAAA record must be a valid IPv6 address.", nil})
			return false
		}
	case "CNAME":
		if !hostname.MatchString(strings.ToLower(strings.TrimSuffix(rec.Content, "."))) {
			return validation(9007, "Content for CNAME record is invalid")
		}
	}
	for _, other := range s.zoneLocked(zone) {
		if other.ID == self || other.Name != rec.Name {
			continue
		}
		switch {
		case other.Type == rec.Type && other.Content == rec.Content:
			writeErr(w, http.StatusBadRequest, apiError{81058, "An identical record already exists.", nil})
			return false
		case rec.Type == "CNAME" && (other.Type == "A" || other.Type == "AAAA" || other.Type == "CNAME"):
			writeErr(w, http.StatusBadRequest, apiError{81053, "An A, AAAA, or CNAME record with that host already exists.", nil})
			return false
		case (rec.Type == "A" || rec.Type == "AAAA") && other.Type == "CNAME":
			writeErr(w, http.StatusBadRequest, apiError{81054, "A CNAME record with that host already exists.", nil})
			return false
		}
	}
	return true
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, apiError{9207, "Request body is invalid.", nil})
		return false
	}
	return true
}

func proxiable(typ string) bool { return typ == "A" || typ == "AAAA" || typ == "CNAME" }

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Server) zoneLocked(zone string) map[string]*Record {
	if s.zones == nil {
		s.zones = make(map[string]map[string]*Record)
	}
	z, ok := s.zones[zone]
	if !ok {
		z = make(map[string]*Record)
		s.zones[zone] = z
	}
	return z
}

func (s *Server) sortedLocked(zone string) []Record {
	z := s.zones[zone]
	out := make([]Record, 0, len(z))
	for _, rec := range z {
		c := *rec
		c.Tags = append([]string{}, rec.Tags...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedOn.Equal(out[j].CreatedOn) {
			return out[i].CreatedOn.Before(out[j].CreatedOn)
		}
		return out[i].seq < out[j].seq
	})
	return out
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

type apiError struct {
	Code       int        `json:"code"`
	Message    string     `json:"message"`
	ErrorChain []apiError `json:"error_chain,omitempty"`
}

type resultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

type envelope struct {
	Success    bool        `json:"success"`
	Errors     []apiError  `json:"errors"`
	Messages   []apiError  `json:"messages"`
	Result     any         `json:"result"`
	ResultInfo *resultInfo `json:"result_info,omitempty"`
}

func writeOK(w http.ResponseWriter, status int, result any, info *resultInfo) {
	writeJSON(w, status, envelope{Success: true, Errors: []apiError{}, Messages: []apiError{}, Result: result, ResultInfo: info})
}

func writeErr(w http.ResponseWriter, status int, errs ...apiError) {
	writeJSON(w, status, envelope{Success: false, Errors: errs, Messages: []apiError{}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}
