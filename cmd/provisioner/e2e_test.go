package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail/smtptest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// The end-to-end tests drive the whole service through run (or its binary) against the
// sandbox: the fake Proxmox running the real n8nctl over a fake docker, the fake Traefik
// and n8n, the fake Cloudflare, a stateful fake Stripe, and a real SMTP server.

const (
	e2eAdminKey   = "e2e-admin-key-0123456789abcdef"
	e2ePortalKey  = "e2e-portal-key-0123456789abcdef"
	e2eWebhookKey = "whsec_e2e_0123456789abcdef"
	e2eStripeKey  = "sk_test_e2e_0123456789abcdef"
	e2eOperator   = "ops@example.com"
	starterPrice  = "price_e2e_starter"
	proPrice      = "price_e2e_pro"
)

const e2ePlans = `plans:
  - id: starter
    name: Starter
    cpus: 0.5
    memory_mb: 1024
    price: USD 10/month
    stripe_price_id: ` + starterPrice + `
    n8n_image: docker.n8n.io/n8nio/n8n:2.8.4
  - id: pro
    name: Pro
    cpus: 1
    memory_mb: 2048
    price: USD 20/month
    stripe_price_id: ` + proPrice + `
    n8n_image: docker.n8n.io/n8nio/n8n:2.8.4
`

type e2e struct {
	t      testing.TB
	world  *sandbox.World
	stripe *stripetest.Server
	smtp   *smtptest.Server
	env    map[string]string
	url    string // the provisioner's base URL
	logs   *testlog.Buffer
	svc    *service
}

type e2eOptions struct {
	dialect database.Dialect
	sandbox sandbox.Config
	env     map[string]string // overrides
	plans   string            // the plans file (default e2ePlans)
}

// newE2E builds the world and the provisioner's environment; start runs the provisioner.
func newE2E(t testing.TB, o e2eOptions) *e2e {
	t.Helper()
	if o.dialect == "" {
		o.dialect = database.SQLite
	}
	ctx := context.Background()
	logger, _ := testlog.New(t)
	o.sandbox.Dir = t.TempDir()
	o.sandbox.Logger = logger
	world, err := sandbox.Start(ctx, o.sandbox)
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	t.Cleanup(world.Close)

	st := &stripetest.Server{Key: e2eStripeKey}
	st.SetPrices(starterPrice, proPrice)
	stripeURL := serveHTTP(t, st)

	smtp := smtptest.Start(t)
	dataDir := t.TempDir()
	plans := filepath.Join(dataDir, "plans.yaml")
	if o.plans == "" {
		o.plans = e2ePlans
	}
	if err := os.WriteFile(plans, []byte(o.plans), 0o600); err != nil {
		t.Fatal(err)
	}
	masterKey, _ := secret.NewKey()
	env := map[string]string{
		"PROVISIONER_DATA_DIR":              dataDir,
		"PROVISIONER_DATABASE_URL":          dbtest.URL(t, o.dialect),
		"PROVISIONER_MASTER_KEY":            masterKey,
		"PROVISIONER_ADMIN_API_KEY":         e2eAdminKey,
		"PROVISIONER_PORTAL_API_KEY":        e2ePortalKey,
		"PROVISIONER_PLANS_FILE":            plans,
		"PROVISIONER_STRIPE_SECRET_KEY":     e2eStripeKey,
		"PROVISIONER_STRIPE_WEBHOOK_SECRET": e2eWebhookKey,
		"PROVISIONER_STRIPE_API_URL":        stripeURL,
		"PROVISIONER_PORTAL_URL":            "https://portal.example.com",
		"PROVISIONER_SMTP_URL":              smtp.URL(),
		"PROVISIONER_MAIL_FROM":             "n8n <noreply@example.com>",
		"PROVISIONER_OPERATOR_EMAIL":        e2eOperator,
		"PROVISIONER_LOG_LEVEL":             "info",
		// Nothing else: retries, waits, polls and takeover run on the production defaults,
		// so the tests see what a customer meets.
	}
	for _, kv := range world.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range o.env {
		env[k] = v
	}
	testlog.Secret(t, masterKey, e2eAdminKey, e2ePortalKey, e2eWebhookKey, e2eStripeKey, world.ProxmoxTokenSecret, world.CloudflareToken)
	return &e2e{t: t, world: world, stripe: st, smtp: smtp, env: env}
}

// serveHTTP runs h on a loopback listener for the test's lifetime and returns its URL.
func serveHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// start runs the provisioner in-process through run.
func (e *e2e) start() {
	e.t.Helper()
	s := start(e.t, e.env)
	e.url, e.logs, e.svc = s.URL, s.Logs, s
}

func (e *e2e) api(method, path, key string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.url+path, r)
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func (e *e2e) mustAPI(method, path, key string, body any, want int, out any) {
	e.t.Helper()
	code, b := e.api(method, path, key, body)
	if code != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, code, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// addHost adds a sandbox host and registers it with the provisioner.
func (e *e2e) addHost(name string, max int) sandbox.Host {
	e.t.Helper()
	h, err := e.world.AddHost(name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mustAPI("POST", "/v1/hosts", e2eAdminKey, map[string]any{"name": h.Name, "node": h.Node, "vmid": h.VMID,
		"public_ip": h.PublicIP, "ingress_url": h.IngressURL, "max_instances": max}, http.StatusCreated, nil)
	return h
}

// deliver posts events to the webhook as Stripe would, signed with the endpoint's secret.
func (e *e2e) deliver(events ...stripetest.Event) {
	e.t.Helper()
	for _, ev := range events {
		res, err := http.DefaultClient.Do(ev.Request(e.url+"/webhooks/payments/stripe", e2eWebhookKey))
		if err != nil {
			e.t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			e.t.Fatalf("webhook %s = %d %s", ev.Type, res.StatusCode, b)
		}
	}
}

// purchase runs the portal's checkout for client and pays it; it returns the Stripe
// subscription id.
func (e *e2e) purchase(client, plan string) string {
	e.t.Helper()
	id, events := e.checkoutPlan(client, plan)
	e.deliver(events...)
	cs, _ := e.stripe.CheckoutSession(id)
	return *cs.Subscription
}

// checkout runs the portal's checkout of the starter plan for client and pays it at
// Stripe; it returns the webhook deliveries that payment makes, not yet delivered.
func (e *e2e) checkout(client string) []stripetest.Event {
	e.t.Helper()
	_, events := e.checkoutPlan(client, "starter")
	return events
}

func (e *e2e) checkoutPlan(client, plan string) (string, []stripetest.Event) {
	e.t.Helper()
	var session struct{ ID, URL string }
	e.mustAPI("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": client,
		"email": client + "@example.com", "name": "Ada " + client, "plan": plan}, http.StatusCreated, &session)
	events, err := e.stripe.CompleteCheckout(session.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return session.ID, events
}

type instanceView struct {
	ID       string  `json:"id"`
	ClientID string  `json:"client_id"`
	Slug     string  `json:"slug"`
	URL      string  `json:"url"`
	Host     *string `json:"host"`
	Plan     string  `json:"plan"`
	Status   string  `json:"status"`
	Step     string  `json:"step"`
	Timeline []struct {
		Kind, Message string
	} `json:"timeline"`
}

func (e *e2e) instances(client string) []instanceView {
	e.t.Helper()
	var list struct{ Instances []instanceView }
	code, b := e.api("GET", "/v1/clients/"+client+"/instances", e2ePortalKey, nil)
	if code == http.StatusNotFound {
		return nil
	}
	if code != http.StatusOK || json.Unmarshal(b, &list) != nil {
		e.t.Fatalf("listing %s's instances = %d %s", client, code, b)
	}
	return list.Instances
}

func (e *e2e) instance(id string) instanceView {
	e.t.Helper()
	var in instanceView
	e.mustAPI("GET", "/v1/instances/"+id, e2ePortalKey, nil, http.StatusOK, &in)
	return in
}

// waitFor polls cond until it holds, failing the test after timeout with what describe says.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitInstance waits until client has an instance in status (and, for active, emailed).
func (e *e2e) waitInstance(client, status string, timeout time.Duration) instanceView {
	e.t.Helper()
	var got instanceView
	waitFor(e.t, timeout, client+"'s instance to be "+status, func() bool {
		for _, in := range e.instances(client) {
			if in.Status == status && (status != "active" || in.Step == "emailed") {
				got = in
				return true
			}
		}
		return false
	})
	return e.instance(got.ID)
}

// emailsTo returns the distinct messages (by Message-ID) delivered to addr.
func (e *e2e) emailsTo(addr string) []smtptest.Message {
	var out []smtptest.Message
	seen := map[string]bool{}
	for _, m := range e.smtp.Messages() {
		if !slices.Contains(m.To, addr) {
			continue
		}
		id := m.Header.Get("Message-Id")
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, m)
	}
	return out
}

var passwordLine = regexp.MustCompile(`(?m)^\s*(?:Password|Contraseña):\s*(\S+)\s*$`)

// passwordIn returns the password a credentials email carries.
func passwordIn(t testing.TB, m smtptest.Message) string {
	t.Helper()
	match := passwordLine.FindStringSubmatch(m.Text)
	if match == nil {
		t.Fatalf("no password line in the credentials email:\n%s", m.Text)
	}
	return match[1]
}

// login checks that email and password open the instance through its host's ingress.
func (e *e2e) login(in instanceView, email, password string) error {
	h, _ := e.world.Host(*in.Host)
	c := n8n.New(n8n.Config{IngressURL: h.IngressURL, Host: e.world.FQDN(in.Slug)})
	return c.Login(context.Background(), email, password)
}

func TestPurchaseBecomesARunningInstance(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			e := newE2E(t, e2eOptions{dialect: d})
			e.start()
			host := e.addHost("nuc", 10)
			e.purchase("cus_ada", "starter")
			in := e.waitInstance("cus_ada", "active", 60*time.Second)

			if *in.Host != "nuc" || in.Plan != "starter" || !strings.HasPrefix(in.URL, "https://"+in.Slug+".") {
				t.Errorf("instance = %+v", in)
			}
			var steps []string
			for _, ev := range in.Timeline {
				if ev.Kind == "step" {
					steps = append(steps, ev.Message)
				}
			}
			if len(steps) != 8 {
				t.Errorf("timeline has %d steps, want 8:\n%s", len(steps), strings.Join(steps, "\n"))
			}

			records := e.world.Cloudflare.Records(e.world.CloudflareZoneID)
			if len(records) != 1 || records[0].Name != e.world.FQDN(in.Slug) || records[0].Content != host.PublicIP {
				t.Errorf("DNS records = %+v, want one %s → %s", records, e.world.FQDN(in.Slug), host.PublicIP)
			}
			containers, err := e.world.Containers("nuc")
			if err != nil || len(containers) != 1 {
				t.Fatalf("containers = %+v, %v", containers, err)
			}
			c := containers[0]
			if !c.Running || c.CPUs != 0.5 || c.MemoryMB != 1024 || c.RestartPolicy != "unless-stopped" {
				t.Errorf("container = %+v, want running with the starter plan's caps", c)
			}
			owner, ok := e.world.N8n(in.Slug).Owner()
			if !ok || owner.Email != "cus_ada@example.com" {
				t.Errorf("n8n owner = %+v, %v", owner, ok)
			}

			mails := e.emailsTo("cus_ada@example.com")
			if len(mails) != 1 {
				t.Fatalf("%d emails to the customer, want exactly 1", len(mails))
			}
			password := passwordIn(t, mails[0])
			testlog.Secret(t, password)
			if !strings.Contains(mails[0].Text, in.URL) {
				t.Errorf("the email does not carry the URL %s", in.URL)
			}
			if err := e.login(in, "cus_ada@example.com", password); err != nil {
				t.Errorf("the emailed password does not log in: %v", err)
			}
			if strings.Contains(e.logs.String(), password) {
				t.Error("the owner password was logged")
			}
			var report struct {
				Instances int
				Findings  []map[string]any
			}
			e.mustAPI("GET", "/v1/doctor", e2eAdminKey, nil, http.StatusOK, &report)
			if report.Instances != 1 || len(report.Findings) != 0 {
				t.Errorf("doctor after a clean purchase = %+v, want one instance and no drift", report)
			}
		})
	}
}
