package n8n_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
)

const instanceHost = "acme.n8n.example.com"

// clock is a fake clock; with step set, every reading advances it, so a poller moves time
// forward by polling and nothing sleeps.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.t
	c.t = c.t.Add(c.step)
	return now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// setup starts a fake n8n (already configured by the caller) and a client for it.
func setup(t *testing.T, srv *n8ntest.Server) *n8n.Client {
	t.Helper()
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return n8n.New(n8n.Config{IngressURL: ts.URL, Host: instanceHost, HTTPClient: ts.Client()})
}

var ours = n8n.Owner{Email: "Owner@Acme.test", FirstName: "Ada", LastName: "Lovelace", Password: "Sup3rSecretPassw0rdXyz12"}

func wantKind(t *testing.T, err error, k apperr.Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want kind %s", k)
	}
	if got := apperr.KindOf(err); got != k {
		t.Fatalf("error kind = %s (%v), want %s", got, err, k)
	}
}

func TestReadyFollowsStartup(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	srv := &n8ntest.Server{ReadyAfter: time.Minute, Now: clk.Now}
	srv.Start()
	c := setup(t, srv)
	ctx := t.Context()

	if ok, err := c.Ready(ctx); ok || err != nil {
		t.Fatalf("Ready while migrating = %v, %v; want false, nil", ok, err)
	}
	clk.Advance(time.Minute)
	if ok, err := c.Ready(ctx); !ok || err != nil {
		t.Fatalf("Ready after start-up = %v, %v; want true, nil", ok, err)
	}
}

func TestWaitReadyPollsUntilReady(t *testing.T) {
	t.Parallel()
	// Each request reads the clock once, so readiness arrives after ~10 polls.
	clk := &clock{t: time.Unix(1_700_000_000, 0), step: time.Second}
	srv := &n8ntest.Server{ReadyAfter: 10 * time.Second, Now: clk.Now}
	srv.Start()
	c := setup(t, srv)
	if err := c.WaitReady(t.Context(), time.Millisecond); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
}

func TestWaitReadyGivesUpAtDeadline(t *testing.T) {
	t.Parallel()
	srv := &n8ntest.Server{}
	srv.SetReady(false)
	c := setup(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := c.WaitReady(ctx, time.Millisecond)
	wantKind(t, err, apperr.Unavailable)
	if !strings.Contains(err.Error(), "n8n never became ready") || !strings.Contains(err.Error(), "503") {
		t.Errorf("error %q should say it never became ready and why (503)", err)
	}
}

func TestReadyNotYetAnswers(t *testing.T) {
	t.Parallel()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	tests := []struct {
		name string
		url  string
	}{
		{"connection refused", deadURL},
		{"ingress has no router yet", statusServer(t, 404, "404 page not found\n")},
		{"container not listening yet", statusServer(t, 502, "Bad Gateway")},
		{"gateway timeout", statusServer(t, 504, "Gateway Timeout")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := n8n.New(n8n.Config{IngressURL: tt.url, Host: instanceHost, HTTPClient: &http.Client{}})
			ok, err := c.Ready(t.Context())
			if ok || err != nil {
				t.Fatalf("Ready = %v, %v; want false, nil", ok, err)
			}
		})
	}
}

func TestReadySurprises(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   apperr.Kind
	}{
		{"guarded readiness", 401, "401 Unauthorized\n", apperr.Unauthorized},
		{"server error", 500, `{"code":0,"message":"boom"}`, apperr.Unavailable},
		{"editor page instead of readiness", 200, "<html>n8n</html>", apperr.Internal},
		{"teapot", 418, "", apperr.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := n8n.New(n8n.Config{IngressURL: statusServer(t, tt.status, tt.body), Host: instanceHost, HTTPClient: &http.Client{}})
			ok, err := c.Ready(t.Context())
			if ok {
				t.Fatal("Ready = true")
			}
			wantKind(t, err, tt.want)
		})
	}
}

func TestWaitReadyStopsOnConfigurationErrors(t *testing.T) {
	t.Parallel()
	c := n8n.New(n8n.Config{IngressURL: statusServer(t, 401, "401 Unauthorized\n"), Host: instanceHost, HTTPClient: &http.Client{}})
	// No deadline: a wrong answer must end the wait by itself.
	wantKind(t, c.WaitReady(t.Context(), time.Millisecond), apperr.Unauthorized)
}

func TestReadyOverUnverifiedTLSIsNotYet(t *testing.T) {
	t.Parallel()
	// A fresh instance is served with Traefik's default certificate until its own is
	// issued: not ready yet, and no request (nor credential) goes out over it.
	srv := &n8ntest.Server{}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	ts.StartTLS()
	t.Cleanup(ts.Close)
	c := n8n.New(n8n.Config{IngressURL: ts.URL, Host: instanceHost})
	if ok, err := c.Ready(t.Context()); ok || err != nil {
		t.Fatalf("Ready over an unverified certificate = %v, %v; want false, nil", ok, err)
	}
	wantKind(t, c.SetupOwner(t.Context(), ours, n8n.BasicAuth{User: "provisioner", Password: "x"}), apperr.Unavailable)
	if srv.SetupCalls() != 0 {
		t.Fatal("owner setup reached n8n over an unverified connection")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := c.WaitReady(ctx, time.Millisecond); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("WaitReady error %v should name the certificate problem", err)
	}
}

func TestSetupOwnerOnce(t *testing.T) {
	t.Parallel()
	srv := &n8ntest.Server{}
	c := setup(t, srv)
	ctx := t.Context()

	if err := c.SetupOwner(ctx, ours, n8n.BasicAuth{}); err != nil {
		t.Fatalf("SetupOwner: %v", err)
	}
	got, ok := srv.Owner()
	if !ok || got.Email != strings.ToLower(ours.Email) || got.FirstName != "Ada" || got.Role != "global:owner" {
		t.Fatalf("owner = %+v, %v", got, ok)
	}

	again := ours
	again.Email = "someone@else.test"
	err := c.SetupOwner(ctx, again, n8n.BasicAuth{})
	wantKind(t, err, apperr.Conflict)
	if !errors.Is(err, n8n.ErrOwnerAlreadySetup) {
		t.Fatalf("error %v does not wrap ErrOwnerAlreadySetup", err)
	}
	if got, _ := srv.Owner(); got.Email != strings.ToLower(ours.Email) {
		t.Fatalf("second setup replaced the owner: %+v", got)
	}
	// The saga's way to tell whether the existing owner is ours.
	if err := c.Login(ctx, ours.Email, ours.Password); err != nil {
		t.Fatalf("Login as the owner: %v", err)
	}
	wantKind(t, c.Login(ctx, again.Email, again.Password), apperr.Unauthorized)
}

func TestSetupOwnerValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*n8n.Owner)
		wantMsg string
	}{
		{"bad email", func(o *n8n.Owner) { o.Email = "not-an-email" }, "email: Invalid email"},
		{"no first name", func(o *n8n.Owner) { o.FirstName = "" }, "First name is required"},
		{"no last name", func(o *n8n.Owner) { o.LastName = "" }, "Last name is required"},
		{"short password", func(o *n8n.Owner) { o.Password = "Ab1" }, "Password must be 8 to 64 characters long."},
		{"long password", func(o *n8n.Owner) { o.Password = strings.Repeat("Ab1", 22) }, "Password must be 8 to 64 characters long."},
		{"no digit", func(o *n8n.Owner) { o.Password = "NoDigitsHereAtAll" }, "Password must contain at least 1 number."},
		{"no uppercase", func(o *n8n.Owner) { o.Password = "nouppercase123" }, "Password must contain at least 1 uppercase letter."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := &n8ntest.Server{}
			c := setup(t, srv)
			o := ours
			tt.mutate(&o)
			err := c.SetupOwner(t.Context(), o, n8n.BasicAuth{User: "provisioner", Password: "GuardPass123"})
			wantKind(t, err, apperr.Invalid)
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not carry n8n's message %q", err, tt.wantMsg)
			}
			for _, secret := range []string{o.Password, "GuardPass123"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q leaks a password", err)
				}
			}
			if _, ok := srv.Owner(); ok {
				t.Error("an invalid setup created an owner")
			}
		})
	}
}

func TestRESTNotMountedIsUnavailable(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	srv := &n8ntest.Server{RESTLag: 5 * time.Second, Now: clk.Now}
	srv.Start()
	c := setup(t, srv)
	ctx := t.Context()

	// Ready, but the controllers are not mounted yet: Express answers 404.
	if ok, err := c.Ready(ctx); !ok || err != nil {
		t.Fatalf("Ready = %v, %v", ok, err)
	}
	wantKind(t, c.SetupOwner(ctx, ours, n8n.BasicAuth{}), apperr.Unavailable)
	wantKind(t, c.Login(ctx, ours.Email, ours.Password), apperr.Unavailable)
	clk.Advance(5 * time.Second)
	if err := c.SetupOwner(ctx, ours, n8n.BasicAuth{}); err != nil {
		t.Fatalf("SetupOwner once mounted: %v", err)
	}
}

func TestStartingUpPageIsNotAnOwner(t *testing.T) {
	t.Parallel()
	srv := &n8ntest.Server{StartingUpPage: true}
	srv.SetReady(false)
	c := setup(t, srv)
	// n8n's start-up gate answers 200 with a text page.
	wantKind(t, c.SetupOwner(t.Context(), ours, n8n.BasicAuth{}), apperr.Unavailable)
	wantKind(t, c.Login(t.Context(), ours.Email, ours.Password), apperr.Unavailable)
	if _, ok := srv.Owner(); ok {
		t.Fatal("owner set while starting")
	}
}

func TestServerErrorsAreUnavailable(t *testing.T) {
	t.Parallel()
	srv := &n8ntest.Server{}
	c := setup(t, srv)
	srv.FailNext(2, http.StatusServiceUnavailable)
	wantKind(t, c.SetupOwner(t.Context(), ours, n8n.BasicAuth{}), apperr.Unavailable)
	wantKind(t, c.Login(t.Context(), ours.Email, ours.Password), apperr.Unavailable)
	if err := c.SetupOwner(t.Context(), ours, n8n.BasicAuth{}); err != nil {
		t.Fatalf("SetupOwner after the failures: %v", err)
	}
}

func TestLoginWrongPassword(t *testing.T) {
	t.Parallel()
	srv := &n8ntest.Server{}
	c := setup(t, srv)
	if err := c.SetupOwner(t.Context(), ours, n8n.BasicAuth{}); err != nil {
		t.Fatal(err)
	}
	err := c.Login(t.Context(), ours.Email, "Wr0ngPassword")
	wantKind(t, err, apperr.Unauthorized)
	if strings.Contains(err.Error(), "Wr0ngPassword") {
		t.Errorf("error %q leaks the password", err)
	}
	if err := c.Login(t.Context(), strings.ToUpper(ours.Email), ours.Password); err != nil {
		t.Errorf("Login is case-insensitive on the email in n8n: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	t.Parallel()
	tests := []n8n.Config{
		{IngressURL: "", Host: instanceHost},
		{IngressURL: "ftp://x", Host: instanceHost},
		{IngressURL: "http://127.0.0.1:1", Host: ""},
	}
	for _, cfg := range tests {
		c := n8n.New(cfg)
		_, err := c.Ready(t.Context())
		wantKind(t, err, apperr.Invalid)
		wantKind(t, c.WaitReady(t.Context(), time.Millisecond), apperr.Invalid)
		wantKind(t, c.SetupOwner(t.Context(), ours, n8n.BasicAuth{}), apperr.Invalid)
		wantKind(t, c.Login(t.Context(), "a@b.test", "x"), apperr.Invalid)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://"+instanceHost+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(ts.Close)
	c := n8n.New(n8n.Config{IngressURL: ts.URL, Host: instanceHost})
	err := c.SetupOwner(t.Context(), ours, n8n.BasicAuth{User: "provisioner", Password: "GuardPass123"})
	wantKind(t, err, apperr.Internal)
	if !strings.Contains(err.Error(), "redirected") {
		t.Errorf("error %q should say it was redirected", err)
	}
}

func statusServer(t *testing.T, status int, body string) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// Unclaimed is what a warm pool member waits for: REST routes mounted, and no owner. It
// is starting while migrating and while the routes are not mounted, and a conflict once
// anyone has set up the owner.
func TestUnclaimedFollowsRoutesAndOwner(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	srv := &n8ntest.Server{ReadyAfter: 6 * time.Second, RESTLag: 3 * time.Second, Now: clk.Now}
	srv.Start()
	c := setup(t, srv)
	ctx := t.Context()

	starting := func(when string) {
		t.Helper()
		err := c.Unclaimed(ctx)
		if !errors.Is(err, n8n.ErrStarting) || apperr.KindOf(err) != apperr.Unavailable {
			t.Fatalf("Unclaimed %s = %v, want Unavailable wrapping ErrStarting", when, err)
		}
	}
	starting("while migrating")
	clk.Advance(6 * time.Second)
	starting("once ready, before the REST routes")
	clk.Advance(3 * time.Second)
	if err := c.Unclaimed(ctx); err != nil {
		t.Fatalf("Unclaimed once mounted = %v", err)
	}
	if err := c.SetupOwner(ctx, ours, n8n.BasicAuth{}); err != nil {
		t.Fatal(err)
	}
	err := c.Unclaimed(ctx)
	wantKind(t, err, apperr.Conflict)
	if !errors.Is(err, n8n.ErrOwnerAlreadySetup) {
		t.Fatalf("error %v does not wrap ErrOwnerAlreadySetup", err)
	}
}
