package main

// `provisioner demo` is the README's "see it work": it builds the world outside the
// provisioner from the project's fakes (internal/sandbox: fake Proxmox whose guest agent runs
// the real n8nctl over a fake docker, fake Traefik and n8n, fake Cloudflare; plus the stateful
// fake Stripe), runs the real service through run's own `serve` path against them, and plays
// the portal and Stripe: a checkout, a payment, the signed webhooks. Then it watches the
// instance's timeline over the portal API until the credentials email is out, prints that
// email from the outbox, and checks the result from the outside (DNS record, container caps,
// a login with the emailed password). Everything stays on 127.0.0.1 and in one directory;
// the scripts are embedded in the binary, so it needs no source tree and no network.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	netmail "net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/mercadopagotest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

const demoAbout = `Watch a purchase become a running n8n, end to end, on this machine. The demo starts
fake Proxmox hosts (whose guest agent runs the real n8nctl script over a fake docker), a fake
Cloudflare, a fake Stripe and fake n8n containers, all in this process on 127.0.0.1; runs the
real provisioner service against them with SQLite and the mail outbox in the demo directory;
then buys plans through the portal API, pays on the fake Stripe and delivers Stripe's signed
webhooks (with --provider mercadopago: subscribes on a fake MercadoPago at the checkout's
init_point and delivers its x-signature notifications). It prints each provisioning step as it happens, the credentials email, and a check
of the result: the DNS record, the container's caps, and a login with the emailed password.

It needs bash, jq and flock (and coreutils) on PATH, nothing else: no source tree, no network.
The service's logs go to provisioner.log in the demo directory (--verbose also streams them to
stderr). Exits 0 once every instance is active and emailed, non-zero when one is not in time.`

// demoOptions are the demo's flags.
type demoOptions struct {
	dir        string
	hosts      int
	purchases  int
	warm       int
	readyAfter time.Duration
	timeout    time.Duration
	addr       string
	keep       bool
	verbose    bool
	provider   string // who the customers pay: stripe or mercadopago
}

// demoNames are the customers the demo plays; more purchases than names reuse them with a
// number.
var demoNames = []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson",
	"Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Margaret Hamilton", "Ken Thompson", "Frances Allen"}

// runDemo runs `provisioner demo` with the arguments after "demo".
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := &cli{ctx: ctx, getenv: getenv, stdout: stdout, stderr: stderr}
	f := newFlags("demo", "[flags]", demoAbout)
	var o demoOptions
	f.StringVar(&o.dir, "dir", "", "`directory` for the database, outbox, sandbox and logs; must be empty (default: a new temporary directory, kept)")
	f.IntVar(&o.hosts, "hosts", 2, "number of fake host VMs, 1-20")
	f.IntVar(&o.purchases, "purchases", 1, "number of customers who buy at once, 1-50 (placement is round-robin)")
	f.IntVar(&o.warm, "warm", 0, "warm pool size, 0-50: n8n instances started before the purchases, so that as many are handed over at once (the rest take the cold path)")
	f.DurationVar(&o.readyAfter, "ready-after", 2*time.Second, "how long each fake n8n boots before it is ready (real n8n: ~8s)")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long every instance has, from its payment, to be active and emailed")
	f.StringVar(&o.addr, "addr", "127.0.0.1:0", "`host:port` the service listens on (port 0: a free one)")
	f.BoolVar(&o.keep, "keep", false, "keep everything running after the summary, serving the API, until Ctrl-C")
	f.BoolVar(&o.verbose, "verbose", false, "also stream the service's JSON logs to stderr")
	f.StringVar(&o.provider, "provider", "stripe", "who the customers pay: stripe (Checkout) or mercadopago (a subscription paid at its init_point)")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	switch {
	case o.hosts < 1 || o.hosts > 20:
		return errors.New("demo: --hosts must be between 1 and 20")
	case o.purchases < 1 || o.purchases > 50:
		return errors.New("demo: --purchases must be between 1 and 50")
	case o.warm < 0 || o.warm > 50:
		return errors.New("demo: --warm must be between 0 and 50")
	case o.readyAfter < 0 || o.readyAfter > 10*time.Minute:
		return errors.New("demo: --ready-after must be between 0 and 10m")
	case o.timeout <= 0:
		return errors.New("demo: --timeout must be a positive duration such as 2m")
	case o.provider != billing.ProviderStripe && o.provider != billing.ProviderMercadoPago:
		return errors.New("demo: --provider must be stripe or mercadopago")
	}
	if _, _, err := net.SplitHostPort(o.addr); err != nil {
		return errors.New("demo: --addr must be host:port, e.g. 127.0.0.1:8080")
	}
	d := &demo{opts: o, out: stdout, stderr: stderr}
	return d.run(ctx, getenv)
}

// demo is one run of the demo: the world, the service, and what the portal saw.
type demo struct {
	opts   demoOptions
	out    io.Writer
	stderr io.Writer

	dir     string
	dataDir string
	logPath string
	logs    *lockedWriter
	world   *sandbox.World
	stripe  *stripetest.Server
	mp      *mercadopagotest.Server // with --provider mercadopago
	plan    plans.Plan
	hc      *http.Client
	api     string // the service's base URL

	adminKey, portalKey, webhookSecret, mpSecret string

	start     time.Time
	purchases []*purchase
}

// purchase is one customer's way from checkout to a running instance.
type purchase struct {
	label, name, email, client string
	session                    string
	paidAt                     time.Time
	instance                   demoInstance
	seen                       int  // timeline entries printed
	bootNoted                  bool // "n8n is booting" printed
	emlPath                    string
	password                   string
}

// demoInstance is the portal API's instance, as GET /v1/instances/{id} returns it (the
// API's own type, so the demo reads what the portal reads), with the demo's questions.
type demoInstance struct{ httpapi.InstanceJSON }

func (in demoInstance) host() string {
	if in.Host == nil {
		return ""
	}
	return *in.Host
}

func (in demoInstance) done() bool { return in.Status == "active" && in.Step == "emailed" }

func (d *demo) printf(format string, a ...any) { fmt.Fprintf(d.out, format, a...) }

func (d *demo) run(ctx context.Context, getenv func(string) string) (err error) {
	d.start = time.Now()
	if err := d.prepareDir(getenv); err != nil {
		return err
	}
	defer func() {
		// A temporary directory of a demo that could not even start (bash or jq missing)
		// holds nothing worth keeping.
		if err != nil && d.opts.dir == "" && d.world == nil {
			os.RemoveAll(d.dir)
		}
	}()
	logFile, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer logFile.Close()
	var logOut io.Writer = logFile
	if d.opts.verbose {
		logOut = io.MultiWriter(logFile, d.stderr)
	}
	d.logs = &lockedWriter{w: logOut}
	// The demo's own HTTP calls go to 127.0.0.1 only; no proxy from the environment.
	d.hc = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer d.hc.CloseIdleConnections()

	d.printf("n8n-provisioner demo: a purchase becomes a running n8n, end to end, on this machine.\n")
	d.printf("Only the provisioner is real; Proxmox, Cloudflare, Stripe, docker and n8n are in-process\n")
	d.printf("fakes speaking their real protocols, and the host script n8nctl is the real one.\n\n")
	d.printf("  directory    %s\n  logs         %s\n\n", d.dir, d.logPath)

	d.printf("World\n")
	if err := d.startWorld(ctx); err != nil {
		return err
	}
	defer d.world.Close()
	stripeURL, closeStripe, err := d.startStripe()
	if err != nil {
		return err
	}
	defer closeStripe()
	mpURL := ""
	if d.opts.provider == billing.ProviderMercadoPago {
		var closeMP func()
		if mpURL, closeMP, err = d.startMercadoPago(); err != nil {
			return err
		}
		defer closeMP()
	}
	stopService, err := d.startService(ctx, stripeURL, mpURL)
	if err != nil {
		return err
	}
	defer func() {
		if serr := stopService(); serr != nil && err == nil {
			err = fmt.Errorf("demo: the provisioner did not stop cleanly: %w (see %s)", serr, d.logPath)
		}
	}()
	if err := d.registerHosts(ctx); err != nil {
		return err
	}
	if err := d.waitPool(ctx); err != nil {
		return err
	}

	for i := range d.opts.purchases {
		if err := d.buy(ctx, i); err != nil {
			return err
		}
	}
	if err := d.watch(ctx); err != nil {
		return err
	}
	if err := d.showEmails(); err != nil {
		return err
	}
	if err := d.summary(ctx); err != nil {
		return err
	}
	if d.opts.provider == billing.ProviderMercadoPago {
		if err := d.cancelMercadoPago(ctx, d.purchases[0]); err != nil {
			return err
		}
	}
	d.printf("\nDone in %.1fs. The demo's files stay in %s (remove it when done).\n", time.Since(d.start).Seconds(), d.dir)
	if d.opts.keep {
		d.keepServing(ctx)
	}
	return nil
}

// prepareDir makes the demo directory: a new temporary one, or --dir, which must be empty
// because an earlier run's database would name hosts and instances this world lacks.
func (d *demo) prepareDir(getenv func(string) string) error {
	if d.opts.dir == "" {
		dir, err := os.MkdirTemp(getenv("TMPDIR"), "provisioner-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		d.dir = dir
	} else {
		dir, err := filepath.Abs(d.opts.dir)
		if err != nil {
			return fmt.Errorf("demo: --dir: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("demo: --dir: %w", err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("demo: --dir: %w", err)
		}
		if len(entries) > 0 {
			return fmt.Errorf("demo: --dir %s is not empty: each demo starts from a clean directory (an earlier run's database names hosts this run does not have)", dir)
		}
		d.dir = dir
	}
	d.dataDir = filepath.Join(d.dir, "data")
	d.logPath = filepath.Join(d.dir, "provisioner.log")
	return nil
}

func (d *demo) startWorld(ctx context.Context) error {
	world, err := sandbox.Start(ctx, sandbox.Config{
		Dir:           filepath.Join(d.dir, "sandbox"),
		N8nReadyAfter: d.opts.readyAfter,
		Logger:        slog.New(slog.NewJSONHandler(d.logs, nil)).With("component", "sandbox"),
	})
	if err != nil {
		return fmt.Errorf("demo: starting the sandbox: %w", err)
	}
	d.world = world
	d.printf("  fake Proxmox VE   %s\n", world.ProxmoxURL)
	d.printf("  fake Cloudflare   %s (zone %s, domain %s)\n", world.CloudflareURL, world.CloudflareZoneID, world.BaseDomain)
	for i := range d.opts.hosts {
		h, err := world.AddHost(fmt.Sprintf("demo-%d", i+1))
		if err != nil {
			world.Close()
			return fmt.Errorf("demo: adding a host: %w", err)
		}
		d.printf("  host %-12s VM %s/%d, public IP %s, ingress %s\n", h.Name, h.Node, h.VMID, h.PublicIP, h.IngressURL)
	}
	return nil
}

// startStripe serves the fake Stripe on a loopback port with the built-in plan's price.
func (d *demo) startStripe() (string, func(), error) {
	d.plan = plans.DefaultPlans()[0]
	d.plan.Warm = d.opts.warm
	key, err := demoToken("sk_test_demo_")
	if err != nil {
		return "", nil, err
	}
	d.stripe = &stripetest.Server{Key: key}
	d.stripe.SetPrices(d.plan.StripePriceID)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("demo: fake Stripe: %w", err)
	}
	srv := &http.Server{Handler: d.stripe, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	d.printf("  fake Stripe       %s (price %s: %s, %s)\n", url, d.plan.StripePriceID, d.plan.Name, d.plan.Price)
	return url, func() { srv.Close(); <-done }, nil
}

// startService runs the real service (run's serve path) with the demo's configuration and
// returns once it listens; stop shuts it down and returns what run returned.
func (d *demo) startService(ctx context.Context, stripeURL, mercadoPagoURL string) (stop func() error, err error) {
	plansPath := filepath.Join(d.dir, "plans.yaml")
	plans, err := yaml.Marshal(map[string]plans.Plans{"plans": {d.plan}})
	if err != nil {
		return nil, fmt.Errorf("demo: plans: %w", err)
	}
	if err := os.WriteFile(plansPath, plans, 0o600); err != nil {
		return nil, fmt.Errorf("demo: plans: %w", err)
	}
	masterKey, err := secret.NewKey()
	if err != nil {
		return nil, err
	}
	if d.adminKey, err = demoToken("demo-admin-"); err != nil {
		return nil, err
	}
	if d.portalKey, err = demoToken("demo-portal-"); err != nil {
		return nil, err
	}
	if d.webhookSecret, err = demoToken("whsec_demo_"); err != nil {
		return nil, err
	}
	level := "info"
	if d.opts.verbose {
		level = "debug"
	}
	// A closed environment: whatever PROVISIONER_* the shell has (a production database,
	// real Stripe keys) must never reach the demo.
	env := map[string]string{
		"PROVISIONER_ADDR":                  d.opts.addr,
		"PROVISIONER_DATA_DIR":              d.dataDir,
		"PROVISIONER_MASTER_KEY":            masterKey,
		"PROVISIONER_ADMIN_API_KEY":         d.adminKey,
		"PROVISIONER_PORTAL_API_KEY":        d.portalKey,
		"PROVISIONER_PLANS_FILE":            plansPath,
		"PROVISIONER_STRIPE_SECRET_KEY":     d.stripe.Key,
		"PROVISIONER_STRIPE_WEBHOOK_SECRET": d.webhookSecret,
		"PROVISIONER_STRIPE_API_URL":        stripeURL,
		"PROVISIONER_PORTAL_URL":            "https://portal.example.com",
		// Everything else is the production default: the demo shows what a customer meets.
		"PROVISIONER_HEALTH_TIMEOUT": d.opts.timeout.String(),
		"PROVISIONER_JOB_TIMEOUT":    (d.opts.timeout + time.Minute).String(),
		"PROVISIONER_LOG_LEVEL":      level,
	}
	if mercadoPagoURL != "" {
		env["PROVISIONER_MERCADOPAGO_ACCESS_TOKEN"] = d.mp.Token
		env["PROVISIONER_MERCADOPAGO_WEBHOOK_SECRET"] = d.mpSecret
		env["PROVISIONER_MERCADOPAGO_API_URL"] = mercadoPagoURL
	}
	for _, kv := range d.world.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}

	sctx, cancel := context.WithCancel(ctx)
	tee := &listenWatcher{w: d.logs, addr: make(chan string, 1)}
	done := make(chan error, 1)
	go func() {
		done <- run(sctx, []string{"provisioner", "serve"}, func(k string) string { return env[k] }, io.Discard, tee)
	}()
	stop = func() error {
		cancel()
		return <-done
	}
	select {
	case addr := <-tee.addr:
		d.api = "http://" + addr
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("demo: the provisioner stopped before listening: %v (see %s)", err, d.logPath)
	case <-time.After(30 * time.Second):
		stop()
		return nil, fmt.Errorf("demo: the provisioner was not listening after 30s (see %s)", d.logPath)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	d.printf("  provisioner       %s (SQLite in %s, mail to %s)\n", d.api, d.dataDir, filepath.Join(d.dataDir, "outbox"))
	return stop, nil
}

// registerHosts adds the sandbox's hosts through the operator API, as an operator would,
// each with room for every purchase, so that placement is round-robin and never "no room".
func (d *demo) registerHosts(ctx context.Context) error {
	var names []string
	for _, h := range d.world.Hosts() {
		body := map[string]any{"name": h.Name, "node": h.Node, "vmid": h.VMID, "public_ip": h.PublicIP,
			"ingress_url": h.IngressURL, "max_instances": max(10, d.opts.purchases)}
		if _, err := d.call(ctx, "POST", "/v1/hosts", d.adminKey, body, http.StatusCreated, nil); err != nil {
			return err
		}
		names = append(names, h.Name)
	}
	d.printf("  hosts registered  POST /v1/hosts %s → 201\n", strings.Join(names, ", "))
	return nil
}

// waitPool waits until the warm pool (--warm) is ready, as GET /v1/pool reports it.
func (d *demo) waitPool(ctx context.Context) error {
	if d.opts.warm == 0 {
		return nil
	}
	d.printf("\nWarm pool\n")
	t0 := time.Now()
	for {
		var pool struct {
			Plans []struct{ Ready, Filling, Target int }
		}
		if _, err := d.call(ctx, "GET", "/v1/pool", d.adminKey, nil, http.StatusOK, &pool); err != nil {
			return err
		}
		if len(pool.Plans) > 0 && pool.Plans[0].Ready >= d.opts.warm {
			d.printf("  pool     GET /v1/pool → %d of %d n8n ready for plan %s after %.1fs, started before anyone paid\n",
				pool.Plans[0].Ready, pool.Plans[0].Target, d.plan.ID, time.Since(t0).Seconds())
			return nil
		}
		if time.Since(t0) > d.opts.timeout {
			return fmt.Errorf("demo: the warm pool was not ready within %s", d.opts.timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// buy plays purchase i: the portal's checkout, the customer paying on Stripe, and Stripe's
// signed webhooks.
func (d *demo) buy(ctx context.Context, i int) error {
	name := demoNames[i%len(demoNames)]
	label := strings.ToLower(strings.Fields(name)[0])
	if i >= len(demoNames) {
		label += fmt.Sprint(i/len(demoNames) + 1)
	}
	p := &purchase{label: label, name: name, email: label + "@example.com", client: "demo-" + label}
	d.purchases = append(d.purchases, p)
	if d.opts.provider == billing.ProviderMercadoPago {
		return d.buyMercadoPago(ctx, i, p)
	}
	d.printf("\nPurchase %d: %s <%s> buys %s (%g CPU, %d MB, %s)\n", i+1, p.name, p.email, d.plan.Name, d.plan.CPUs, d.plan.MemoryMB, d.plan.Price)

	var session struct{ ID, URL string }
	body := map[string]any{"client_id": p.client, "email": p.email, "name": p.name, "plan": d.plan.ID, "locale": "en"}
	if _, err := d.call(ctx, "POST", "/v1/checkout-sessions", d.portalKey, body, http.StatusCreated, &session); err != nil {
		return err
	}
	p.session = session.ID
	d.printf("  portal   POST /v1/checkout-sessions → 201, checkout %s\n", session.ID)

	events, err := d.stripe.CompleteCheckout(session.ID)
	if err != nil {
		return fmt.Errorf("demo: paying checkout %s: %w", session.ID, err)
	}
	p.paidAt = time.Now()
	cs, _ := d.stripe.CheckoutSession(session.ID)
	d.printf("  stripe   %s paid: customer %s, subscription %s\n", p.name, deref(cs.Customer), deref(cs.Subscription))
	for _, ev := range events {
		req := ev.Request(d.api+"/webhooks/payments/stripe", d.webhookSecret).WithContext(ctx)
		t0 := time.Now()
		res, err := d.hc.Do(req)
		if err != nil {
			return fmt.Errorf("demo: delivering %s: %w", ev.Type, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("demo: webhook %s = %d %s", ev.Type, res.StatusCode, b)
		}
		d.printf("  webhook  POST /webhooks/payments/stripe %s (signed) → 200 in %s\n", ev.Type, time.Since(t0).Round(100*time.Microsecond))
	}
	return nil
}

// timelineLine is one line of the live view.
type timelineLine struct {
	at   time.Time
	p    *purchase
	text string
}

// watch polls each purchase's instance over the portal API and prints every new timeline
// entry, until all are active and emailed, one failed, or the timeout passes.
func (d *demo) watch(ctx context.Context) error {
	d.printf("\nProvisioning (times from each payment; polling GET /v1/instances/{id})\n")
	width := 0
	for _, p := range d.purchases {
		width = max(width, len(p.label))
	}
	deadline := d.purchases[0].paidAt.Add(d.opts.timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var lines []timelineLine
		allDone := true
		var failed *purchase
		for _, p := range d.purchases {
			if err := d.poll(ctx, p, &lines); err != nil {
				return err
			}
			allDone = allDone && p.instance.done()
			if p.instance.Status == "failed" {
				failed = p
			}
		}
		slices.SortStableFunc(lines, func(a, b timelineLine) int { return a.at.Compare(b.at) })
		for _, l := range lines {
			d.printf("  %-*s  %7s  %s\n", width+2, "["+l.p.label+"]", sinceDemo(l.p.paidAt, l.at), l.text)
		}
		switch {
		case allDone:
			return nil
		case failed != nil:
			d.printUnfinished()
			return fmt.Errorf("demo: %s's instance failed (see %s)", failed.label, d.logPath)
		case time.Now().After(deadline):
			d.printUnfinished()
			return fmt.Errorf("demo: not every instance was active and emailed %s after the payment (see %s)", d.opts.timeout, d.logPath)
		}
		select {
		case <-ctx.Done():
			d.printUnfinished()
			return fmt.Errorf("demo: interrupted: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// poll refreshes p's instance and adds its new timeline entries (and, once, a note that its
// n8n is still booting) to lines.
func (d *demo) poll(ctx context.Context, p *purchase, lines *[]timelineLine) error {
	if p.instance.ID == "" {
		var list struct {
			Instances []demoInstance `json:"instances"`
		}
		code, err := d.call(ctx, "GET", "/v1/clients/"+p.client+"/instances", d.portalKey, nil, 0, &list)
		if err != nil {
			return err
		}
		if code == http.StatusNotFound || len(list.Instances) == 0 {
			return nil // the webhook's job has not created the client's instance yet
		}
		if code != http.StatusOK {
			return fmt.Errorf("demo: GET /v1/clients/%s/instances = %d", p.client, code)
		}
		p.instance.ID = list.Instances[0].ID
	}
	var in demoInstance
	if _, err := d.call(ctx, "GET", "/v1/instances/"+p.instance.ID, d.portalKey, nil, http.StatusOK, &in); err != nil {
		return err
	}
	p.instance = in
	for _, ev := range in.Timeline[min(p.seen, len(in.Timeline)):] {
		text := ev.Message
		if ev.Kind != "step" && ev.Kind != "created" {
			text = ev.Kind + ": " + text
		}
		*lines = append(*lines, timelineLine{at: ev.At, p: p, text: text})
	}
	p.seen = max(p.seen, len(in.Timeline))
	// Between the container's start and readiness the saga waits on /healthz/readiness;
	// show what it sees, through the same ingress and Host header.
	if !p.bootNoted && (in.Step == "launched" || in.Step == "caps_verified") {
		if code, ok := d.readiness(ctx, in); ok && code != http.StatusOK {
			p.bootNoted = true
			*lines = append(*lines, timelineLine{at: time.Now(), p: p,
				text: fmt.Sprintf("n8n is booting: GET /healthz/readiness via %s's ingress → %d", in.host(), code)})
		}
	}
	return nil
}

// readiness asks instance in's n8n for its readiness through its host's ingress.
func (d *demo) readiness(ctx context.Context, in demoInstance) (int, bool) {
	h, ok := d.world.Host(in.host())
	if !ok {
		return 0, false
	}
	req, err := http.NewRequestWithContext(ctx, "GET", h.IngressURL+"/healthz/readiness", nil)
	if err != nil {
		return 0, false
	}
	req.Host = d.world.FQDN(in.Slug)
	res, err := d.hc.Do(req)
	if err != nil {
		return 0, false
	}
	res.Body.Close()
	return res.StatusCode, true
}

// printUnfinished prints the whole timeline of every instance that is not done.
func (d *demo) printUnfinished() {
	for _, p := range d.purchases {
		if p.instance.done() {
			continue
		}
		if p.instance.ID == "" {
			d.printf("\n%s: no instance yet (the payment was not acted on; see the billing events: GET /v1/billing-events)\n", p.label)
			continue
		}
		d.printf("\n%s: instance %s is %s at step %q; its timeline:\n", p.label, p.instance.ID, p.instance.Status, p.instance.Step)
		for _, ev := range p.instance.Timeline {
			d.printf("  %7s  %-8s %s\n", sinceDemo(p.paidAt, ev.At), ev.Kind, ev.Message)
		}
	}
}

var demoPasswordLine = regexp.MustCompile(`(?m)^\s*(?:Password|Contraseña):\s*(\S+)\s*$`)

// showEmails finds each customer's credentials email in the outbox and prints the first in
// full (the others by subject), keeping each password for the login check.
func (d *demo) showEmails() error {
	outbox := filepath.Join(d.dataDir, "outbox")
	entries, err := os.ReadDir(outbox)
	if err != nil {
		return fmt.Errorf("demo: reading the outbox: %w", err)
	}
	type eml struct {
		path, subject, text string
		to                  []string
	}
	var mails []eml
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".eml") {
			continue
		}
		path := filepath.Join(outbox, e.Name())
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		m, err := parseEML(raw)
		if err != nil {
			return fmt.Errorf("demo: %s: %w", path, err)
		}
		mails = append(mails, eml{path: path, subject: m.subject, text: m.text, to: m.to})
	}
	for i, p := range d.purchases {
		var found *eml
		for j := range mails {
			if slices.Contains(mails[j].to, p.email) && demoPasswordLine.MatchString(mails[j].text) {
				found = &mails[j]
			}
		}
		if found == nil {
			return fmt.Errorf("demo: no credentials email to %s in %s", p.email, outbox)
		}
		p.emlPath = found.path
		p.password = demoPasswordLine.FindStringSubmatch(found.text)[1]
		if i > 0 {
			d.printf("  also to %s: %q (%s)\n", p.email, found.subject, filepath.Base(found.path))
			continue
		}
		d.printf("\nThe credentials email (%s)\n", found.path)
		d.printf("  To:      %s\n  Subject: %s\n\n", p.email, found.subject)
		for _, line := range strings.Split(strings.TrimRight(found.text, "\n"), "\n") {
			d.printf("  | %s\n", strings.TrimRight(line, " \r"))
		}
		d.printf("\n")
	}
	return nil
}

// summary checks each instance from the outside: its DNS record in the fake Cloudflare, its
// container's caps in the fake docker, and a login with the emailed password through the
// host's ingress. A failed login fails the demo.
func (d *demo) summary(ctx context.Context) error {
	d.printf("\nSummary\n")
	records := d.world.Cloudflare.Records(d.world.CloudflareZoneID)
	perHost := map[string]int{}
	var failed []string
	for _, p := range d.purchases {
		in := p.instance
		host, _ := d.world.Host(in.host())
		perHost[host.Name]++
		fqdn := d.world.FQDN(in.Slug)
		d.printf("  %s: %s\n", p.label, in.URL)
		d.printf("    host       %s (%s), ingress %s\n", host.Name, host.PublicIP, host.IngressURL)
		dnsLine := "no record for " + fqdn + " in the fake Cloudflare"
		for _, r := range records {
			if r.Name == fqdn {
				dnsLine = fmt.Sprintf("%s %s → %s (proxied %v, in the fake Cloudflare)", r.Type, r.Name, r.Content, r.Proxied)
			}
		}
		d.printf("    DNS        %s\n", dnsLine)
		cs, err := d.world.Containers(host.Name)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		ctrLine := "no container for " + in.Slug + " on " + host.Name
		for _, c := range cs {
			if c.Slug == in.Slug {
				state := "running"
				if !c.Running {
					state = c.State
				}
				ctrLine = fmt.Sprintf("%s %s, %s, %g CPU, %d MB memory (swap %d MB), pids %d, restart %s",
					c.Name, state, c.Image, c.CPUs, c.MemoryMB, c.MemorySwapMB, c.PidsLimit, c.RestartPolicy)
			}
		}
		d.printf("    container  %s\n", ctrLine)
		d.printf("    path       %s\n", pathOf(in, p.paidAt))
		app := n8n.New(n8n.Config{IngressURL: host.IngressURL, Host: fqdn, HTTPClient: d.hc})
		if err := app.Login(ctx, p.email, p.password); err != nil {
			d.printf("    login      FAILED: %s with the emailed password: %v\n", p.email, err)
			failed = append(failed, p.label)
		} else {
			d.printf("    login      works: POST /rest/login as %s with the emailed password → 200\n", p.email)
		}
	}
	var placement []string
	for _, h := range d.world.Hosts() {
		placement = append(placement, fmt.Sprintf("%s %d", h.Name, perHost[h.Name]))
	}
	d.printf("  placement: %s (round-robin by instance count)\n", strings.Join(placement, ", "))
	if len(failed) > 0 {
		return fmt.Errorf("demo: the emailed password does not log in for %s", strings.Join(failed, ", "))
	}
	return nil
}

// pathOf says how the instance came to be, from its timeline: handed over from the warm
// pool, or started for the purchase (the cold path), and how long the email took.
func pathOf(in demoInstance, paid time.Time) string {
	path := "cold (a new container, started after the payment)"
	var emailed time.Time
	for _, ev := range in.Timeline {
		if ev.Kind == "assigned" {
			path = "warm (a pool member, started and ready before the payment)"
		}
		if ev.Kind == "step" && strings.HasPrefix(ev.Message, "login details emailed") {
			emailed = ev.At
		}
	}
	return fmt.Sprintf("%s: credentials emailed %.1fs after the payment", path, emailed.Sub(paid).Seconds())
}

// keepServing prints how to use what is running and waits for Ctrl-C.
func (d *demo) keepServing(ctx context.Context) {
	p := d.purchases[0]
	host, _ := d.world.Host(p.instance.host())
	d.printf("\nStill running until Ctrl-C (--keep):\n")
	d.printf("  API          %s (the OpenAPI document: %s/openapi.yaml)\n", d.api, d.api)
	d.printf("  admin key    %s\n  portal key   %s\n", d.adminKey, d.portalKey)
	d.printf("  try          curl -H 'Authorization: Bearer %s' %s/v1/instances/%s\n", d.portalKey, d.api, p.instance.ID)
	d.printf("               curl -H 'Authorization: Bearer %s' %s/v1/hosts\n", d.adminKey, d.api)
	d.printf("  the sandbox has no DNS: reach an instance through its host's ingress with its Host header:\n")
	d.printf("               curl -H 'Host: %s' %s/healthz/readiness\n", d.world.FQDN(p.instance.Slug), host.IngressURL)
	<-ctx.Done()
	d.printf("\nStopping.\n")
}

// call sends a JSON request to the service with key and decodes a JSON answer into out.
// With want non-zero another status is an error; it returns the status either way.
func (d *demo) call(ctx context.Context, method, path, key string, body any, want int, out any) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.api+path, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := d.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("demo: %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if want != 0 && res.StatusCode != want {
		return res.StatusCode, fmt.Errorf("demo: %s %s = %d %s", method, path, res.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil && res.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("demo: %s %s: decoding %s: %w", method, path, b, err)
		}
	}
	return res.StatusCode, nil
}

// demoToken returns prefix followed by 32 random hex characters.
func demoToken(prefix string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b), nil
}

// sinceDemo formats t relative to the payment at paid, as "+0.41s".
func sinceDemo(paid, t time.Time) string {
	return fmt.Sprintf("%+.2fs", t.Sub(paid).Seconds())
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// lockedWriter serialises the writes of the loggers that share the demo's log.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// listenWatcher passes the service's JSON log on and reports the address of its
// "listening" line, the moment the service accepts requests (with --addr :0, the only way
// to learn the port it got).
type listenWatcher struct {
	w    io.Writer
	mu   sync.Mutex
	buf  []byte
	addr chan string // gets one address; the field is never reassigned, so reading it races nothing
	sent bool
}

func (l *listenWatcher) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent {
		return n, err
	}
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		var line struct{ Msg, Addr string }
		if json.Unmarshal(l.buf[:i], &line) == nil && line.Msg == "listening" && line.Addr != "" {
			l.addr <- line.Addr
			l.sent, l.buf = true, nil
			break
		}
		l.buf = l.buf[i+1:]
	}
	return n, err
}

// email is what the demo reads from an .eml file.
type email struct {
	to            []string
	subject, text string
}

// parseEML reads an RFC 5322 message as the outbox writes it: the recipients, the decoded
// subject and the first text/plain part with its transfer encoding undone.
func parseEML(raw []byte) (email, error) {
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return email{}, err
	}
	var m email
	if list, err := msg.Header.AddressList("To"); err == nil {
		for _, a := range list {
			m.to = append(m.to, a.Address)
		}
	}
	if m.subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return email{}, err
	}
	text, err := firstText(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	if err != nil {
		return email{}, err
	}
	m.text = text
	return m, nil
}

// firstText returns the first text/plain leaf of a (possibly multipart) body.
func firstText(contentType, encoding string, body io.Reader) (string, error) {
	if contentType == "" {
		contentType = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return "", nil
			}
			if err != nil {
				return "", err
			}
			// NextPart undoes quoted-printable itself and drops the header.
			text, err := firstText(part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part)
			if err != nil || text != "" {
				return text, err
			}
		}
	}
	if mediaType != "text/plain" {
		return "", nil
	}
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body) // it skips the line breaks itself
	}
	b, err := io.ReadAll(body)
	return strings.ReplaceAll(string(b), "\r\n", "\n"), err
}
