package n8n_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
)

// These tests put the host's Traefik labels (the set n8nctl writes) in front of a fake n8n
// and attack the one unauthenticated, first-come-first-served endpoint n8n has.

const (
	slug      = "acme"
	guardUser = "provisioner"
)

// exactPathGuard is the setup-guard rule as n8nctl writes it today.
const exactPathGuard = "Host(`" + instanceHost + "`) && Path(`/rest/owner/setup`)"

// caseInsensitiveGuard also covers the spellings Express routes to the same handler
// (any letter case, one trailing slash).
const caseInsensitiveGuard = "Host(`" + instanceHost + "`) && PathRegexp(`(?i)^/rest/owner/setup/?$`)"

func instanceLabels(guardRule, htpasswdLine string) map[string]string {
	r := "n8n-" + slug
	return map[string]string{
		"traefik.enable":                                                "true",
		"traefik.http.routers." + r + ".rule":                           "Host(`" + instanceHost + "`)",
		"traefik.http.routers." + r + ".entrypoints":                    "websecure",
		"traefik.http.routers." + r + ".tls":                            "true",
		"traefik.http.routers." + r + ".service":                        r,
		"traefik.http.services." + r + ".loadbalancer.server.port":      "5678",
		"traefik.http.routers." + r + "-setup.rule":                     guardRule,
		"traefik.http.routers." + r + "-setup.priority":                 "1000",
		"traefik.http.routers." + r + "-setup.service":                  r,
		"traefik.http.routers." + r + "-setup.middlewares":              r + "-setup-auth",
		"traefik.http.middlewares." + r + "-setup-auth.basicauth.users": htpasswdLine,
	}
}

// guardCredential is made once per test binary run: bcrypt is the slow part of every round.
var guardCredential = sync.OnceValues(func() (n8n.BasicAuth, string) {
	pass, err := n8n.GeneratePassword()
	if err != nil {
		panic(err)
	}
	line, err := n8n.SetupGuardHTPasswd(guardUser, pass)
	if err != nil {
		panic(err)
	}
	return n8n.BasicAuth{User: guardUser, Password: pass}, line
})

type stack struct {
	n8n     *n8ntest.Server
	ingress string // URL of the fake Traefik
	client  *n8n.Client
	guard   n8n.BasicAuth
}

// newStack starts a fake n8n behind a fake Traefik configured with the given guard rule.
func newStack(t *testing.T, srv *n8ntest.Server, guardRule string) *stack {
	t.Helper()
	guard, line := guardCredential()
	backend := httptest.NewServer(srv)
	t.Cleanup(backend.Close)
	ing := &traefiktest.Ingress{EntryPoint: "websecure"}
	ing.SetContainers([]traefiktest.Container{{
		Name: "n8n-" + slug, Addr: backend.Listener.Addr().String(), Labels: instanceLabels(guardRule, line),
	}})
	if _, err := ing.Config(); err != nil {
		t.Fatalf("labels do not load cleanly: %v", err)
	}
	front := httptest.NewServer(ing)
	t.Cleanup(front.Close)
	return &stack{
		n8n: srv, ingress: front.URL, guard: guard,
		client: n8n.New(n8n.Config{IngressURL: front.URL, Host: instanceHost, HTTPClient: front.Client()}),
	}
}

// outside sends a request through the ingress as anyone on the internet could.
func (s *stack) outside(t *testing.T, method, path, body string, auth *n8n.BasicAuth) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.ingress+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = instanceHost
	req.Header.Set("Content-Type", "application/json")
	if auth != nil {
		req.SetBasicAuth(auth.User, auth.Password)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

const attackerBody = `{"email":"mallory@evil.test","firstName":"Mal","lastName":"Lory","password":"Attack3rOwnsIt"}`

func TestIngressGuardsOwnerSetup(t *testing.T) {
	t.Parallel()
	s := newStack(t, &n8ntest.Server{}, exactPathGuard)

	// Anyone may look at the instance without a credential.
	for _, p := range []struct{ method, path string }{
		{"GET", "/healthz"}, {"GET", "/healthz/readiness"}, {"GET", "/"}, {"GET", "/rest/settings"},
	} {
		if code, _, body := s.outside(t, p.method, p.path, "", nil); code != 200 {
			t.Errorf("%s %s → %d %q, want it to pass through", p.method, p.path, code, body)
		}
	}
	// Login passes through to n8n, which answers for itself.
	code, _, body := s.outside(t, "POST", "/rest/login", `{"emailOrLdapLoginId":"x@y.test","password":"nope"}`, nil)
	if code != 401 || !strings.Contains(body, "Wrong username or password") {
		t.Errorf("POST /rest/login → %d %q, want n8n's own 401", code, body)
	}

	// The setup path refuses strangers at the ingress.
	wrong := []*n8n.BasicAuth{
		nil,
		{User: guardUser, Password: "Wrong-Guess-1"},
		{User: guardUser, Password: ""},
		{User: "admin", Password: s.guard.Password},
	}
	for _, auth := range wrong {
		code, hdr, body := s.outside(t, "POST", "/rest/owner/setup", attackerBody, auth)
		if code != 401 || hdr.Get("WWW-Authenticate") != `Basic realm="traefik"` || body != "401 Unauthorized\n" {
			t.Errorf("outside setup (auth %v) → %d %q %q, want Traefik's 401", auth != nil, code, hdr.Get("WWW-Authenticate"), body)
		}
	}
	if n := s.n8n.SetupCalls(); n != 0 {
		t.Fatalf("%d owner-setup requests got past the ingress", n)
	}
	wantKind(t, s.client.SetupOwner(t.Context(), ours, n8n.BasicAuth{User: guardUser, Password: "Wrong-Guess-1"}), apperr.Unauthorized)

	// The provisioner, with the credential, gets through and owns the instance.
	if err := s.client.SetupOwner(t.Context(), ours, s.guard); err != nil {
		t.Fatalf("provisioner's SetupOwner: %v", err)
	}
	if owner, _ := s.n8n.Owner(); owner.Email != strings.ToLower(ours.Email) {
		t.Fatalf("owner = %+v", owner)
	}
	if err := s.client.Login(t.Context(), ours.Email, ours.Password); err != nil {
		t.Fatalf("Login through the ingress: %v", err)
	}
	// Traefik's basicauth keeps the Authorization header by default, so n8n saw the guard
	// credential; removeheader=true in the labels would stop that.
	if s.n8n.AuthorizationSeen() == 0 {
		t.Error("expected the guard credential to reach n8n with Traefik's default removeheader=false")
	}
}

// TestGuardPathVariants shows which spellings of the setup path get past each guard rule.
// n8n's router (Express) ignores letter case and a trailing slash; Traefik's Path() does
// not, so an exact Path() guard leaves those spellings to the unguarded main router.
func TestGuardPathVariants(t *testing.T) {
	t.Parallel()
	variants := []struct {
		path        string
		exactBypass bool // does it reach n8n's setup handler past the exact-Path guard?
	}{
		{"/rest/owner/setup", false},
		{"/rest/owner/setup?x=1", false},
		{"//rest/owner/setup", false},  // cleaned by the entry point, then guarded
		{"/rest/owner/./setup", false}, // likewise
		{"/rest/owner/%73etup", false}, // decoded before matching
		{"/rest/owner/setup/", true},   // Express: optional trailing slash
		{"/REST/OWNER/SETUP", true},    // Express: case-insensitive
		{"/rest/Owner/Setup/", true},
	}
	for _, guard := range []struct {
		name, rule string
		exact      bool
	}{
		{"exact Path guard", exactPathGuard, true},
		{"case-insensitive PathRegexp guard", caseInsensitiveGuard, false},
	} {
		for _, v := range variants {
			t.Run(guard.name+" "+v.path, func(t *testing.T) {
				t.Parallel()
				s := newStack(t, &n8ntest.Server{}, guard.rule)
				code, _, body := s.outside(t, "POST", v.path, attackerBody, nil)
				_, owned := s.n8n.Owner()
				bypass := owned
				if want := guard.exact && v.exactBypass; bypass != want {
					t.Fatalf("POST %s → %d %q; attacker owns the instance: %v, want %v", v.path, code, body, bypass, want)
				}
				if !bypass && code != 401 {
					t.Fatalf("POST %s → %d %q, want the ingress's 401", v.path, code, body)
				}
			})
		}
	}
}

// TestUnguardedInstanceIsFirstComeFirstServed is the control for the race below: without
// the guard router, the attacker's first request after readiness takes the instance, so
// the race harness can see an attacker win.
func TestUnguardedInstanceIsFirstComeFirstServed(t *testing.T) {
	t.Parallel()
	srv := &n8ntest.Server{}
	backend := httptest.NewServer(srv)
	t.Cleanup(backend.Close)
	_, line := guardCredential()
	labels := instanceLabels(exactPathGuard, line)
	for k := range labels {
		if strings.Contains(k, "-setup") {
			delete(labels, k)
		}
	}
	ing := &traefiktest.Ingress{}
	ing.SetContainers([]traefiktest.Container{{Name: "n8n-acme", Addr: backend.Listener.Addr().String(), Labels: labels}})
	front := httptest.NewServer(ing)
	t.Cleanup(front.Close)
	s := &stack{n8n: srv, ingress: front.URL}
	if code, _, body := s.outside(t, "POST", "/rest/owner/setup", attackerBody, nil); code != 200 {
		t.Fatalf("unguarded setup → %d %q", code, body)
	}
	if owner, _ := srv.Owner(); owner.Email != "mallory@evil.test" {
		t.Fatalf("owner = %+v", owner)
	}
}

// TestAttackerNeverWinsTheRace: in every round an attacker hammers the setup path through
// the ingress while the provisioner waits for readiness and claims the owner; the instance
// turns ready while the attack is under way. The owner must always be ours.
func TestAttackerNeverWinsTheRace(t *testing.T) {
	t.Parallel()
	var afterReady atomic.Int64
	t.Cleanup(func() {
		// Across the rounds the attack must really have overlapped the window in which the
		// owner could be claimed; otherwise the rounds prove nothing.
		if !t.Failed() && afterReady.Load() == 0 {
			t.Error("no attack request was sent after the instance turned ready")
		}
	})
	for _, tc := range []struct {
		name   string
		rule   string
		paths  []string
		rounds int
	}{
		// The labels n8nctl writes, attacked on the spellings they cover.
		{"exact Path guard", exactPathGuard, []string{"/rest/owner/setup", "//rest/owner/setup", "/rest/owner/setup?a=b"}, 100},
		// The hardened rule, attacked on the spellings only it covers too.
		{"case-insensitive guard", caseInsensitiveGuard, []string{"/rest/owner/setup", "/rest/owner/setup/", "/REST/Owner/Setup"}, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for round := range tc.rounds {
				afterReady.Add(raceRound(t, round, tc.rule, tc.paths))
			}
		})
	}
}

// raceRound plays one round and returns how many attack requests were sent once the
// instance was ready.
func raceRound(t *testing.T, round int, rule string, paths []string) int64 {
	t.Helper()
	srv := &n8ntest.Server{}
	srv.SetReady(false)
	s := newStack(t, srv, rule)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	var (
		attacks atomic.Int64
		late    atomic.Int64
		isReady atomic.Bool
		wins    atomic.Int64
		primed  = make(chan struct{})
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	// Mostly no credential; now and then a guess at the guard's password (each guess costs
	// the ingress a bcrypt compare, as in Traefik) or a wrong user.
	attempt := func(i int) *n8n.BasicAuth {
		switch i % 10 {
		case 5:
			return &n8n.BasicAuth{User: guardUser, Password: "Guess-" + fmt.Sprint(round, i)}
		case 2:
			return &n8n.BasicAuth{User: "root", Password: "root"}
		}
		return nil
	}
	hc := &http.Client{}
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if isReady.Load() {
				late.Add(1)
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", s.ingress+paths[i%len(paths)], strings.NewReader(attackerBody))
			req.Host = instanceHost
			if a := attempt(i); a != nil {
				req.SetBasicAuth(a.User, a.Password)
			}
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					wins.Add(1)
				}
			}
			if attacks.Add(1) == 3 {
				close(primed)
			}
		}
	})

	done := make(chan error, 1)
	go func() {
		if err := s.client.WaitReady(ctx, time.Millisecond); err != nil {
			done <- err
			return
		}
		done <- s.client.SetupOwner(ctx, ours, s.guard)
	}()

	<-primed // the attack is under way before the instance turns ready
	srv.SetReady(true)
	isReady.Store(true)
	err := <-done
	close(stop)
	wg.Wait()

	if err != nil {
		t.Fatalf("round %d: provisioner: %v", round, err)
	}
	if n := wins.Load(); n != 0 {
		t.Fatalf("round %d: %d attacker requests were answered 200", round, n)
	}
	if owner, ok := srv.Owner(); !ok || owner.Email != strings.ToLower(ours.Email) {
		t.Fatalf("round %d: owner = %+v, want ours", round, owner)
	}
	if srv.SetupCalls() != 1 {
		t.Fatalf("round %d: %d owner-setup requests reached n8n, want only ours", round, srv.SetupCalls())
	}
	return late.Load()
}
