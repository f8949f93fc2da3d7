package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

const (
	image     = "n8nio/n8n:1.97.1"
	guardUser = "provisioner"
)

// guardCredential is made once per test binary: bcrypt is the slow part of a provision.
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

// env is one World and the real provisioner-side clients pointed at it.
type env struct {
	t     testing.TB
	world *World
	agent *hosts.Agent
	dns   *dns.Cloudflare
}

func setup(t testing.TB, mutate func(*Config)) *env {
	t.Helper()
	log, _ := testlog.New(t)
	cfg := Config{Dir: t.TempDir(), BaseDomain: "n8n.example.test", Logger: log}
	if mutate != nil {
		mutate(&cfg)
	}
	w, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	testlog.Secret(t, w.ProxmoxTokenSecret, w.CloudflareToken)

	pve, err := hosts.NewProxmox(hosts.ProxmoxConfig{
		BaseURL: w.ProxmoxURL, TokenID: w.ProxmoxTokenID, TokenSecret: w.ProxmoxTokenSecret,
		PollInterval: 5 * time.Millisecond, ExecTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := hosts.NewAgent(hosts.AgentConfig{Exec: pve})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := dns.New(dns.Config{APIToken: w.CloudflareToken, ZoneID: w.CloudflareZoneID, BaseURL: w.CloudflareURL, Proxied: true})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, world: w, agent: agent, dns: cf}
}

func (e *env) addHost(name string) Host {
	e.t.Helper()
	h, err := e.world.AddHost(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// instance is what the provisioner knows about one instance.
type instance struct {
	slug, fqdn, key string
	host            Host
	client          *n8n.Client
	owner           n8n.Owner
}

func (e *env) settings(slug, key string) map[string]string {
	_, line := guardCredential()
	return map[string]string{
		"IMAGE": image, "CPUS": "1.5", "MEMORY_MB": "1024", "FQDN": e.world.FQDN(slug),
		"N8N_ENCRYPTION_KEY": key, "SETUP_AUTH_USERS": line,
	}
}

// provision runs the real `n8nctl provision` on h through the fake Proxmox.
func (e *env) provision(h Host, slug string) *instance {
	e.t.Helper()
	in, err := e.tryProvision(h, slug)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// tryProvision is provision for goroutines other than the test's.
func (e *env) tryProvision(h Host, slug string) (*instance, error) {
	key, err := n8n.GenerateEncryptionKey()
	if err != nil {
		return nil, err
	}
	pass, err := n8n.GeneratePassword()
	if err != nil {
		return nil, err
	}
	testlog.Secret(e.t, key, pass)
	raw, err := e.agent.Run(context.Background(), h.Node, h.VMID, "provision", slug, e.settings(slug, key))
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	if out["action"] != "created" || out["running"] != true {
		return nil, fmt.Errorf("provision %s: %v", slug, out)
	}
	return &instance{
		slug: slug, fqdn: e.world.FQDN(slug), key: key, host: h,
		client: n8n.New(n8n.Config{IngressURL: h.IngressURL, Host: e.world.FQDN(slug)}),
		owner:  n8n.Owner{Email: "owner@" + slug + ".example.com", FirstName: "Ada", LastName: "Lovelace", Password: pass},
	}, nil
}

func (e *env) run(h Host, verb, slug string, settings map[string]string) map[string]any {
	e.t.Helper()
	raw, err := e.agent.Run(context.Background(), h.Node, h.VMID, verb, slug, settings)
	if err != nil {
		e.t.Fatalf("n8nctl %s %s: %v", verb, slug, err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func waitReady(t testing.TB, c *n8n.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

// post sends body to path through h's ingress as an outsider would: no credentials.
func post(t *testing.T, h Host, fqdn, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.IngressURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = fqdn
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func get(t *testing.T, h Host, fqdn, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.IngressURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = fqdn
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) container(host, name string) (Container, bool) {
	e.t.Helper()
	cs, err := e.world.Containers(host)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name {
			return c, true
		}
	}
	return Container{}, false
}

func wantKind(t *testing.T, err error, kind apperr.Kind) {
	t.Helper()
	if apperr.KindOf(err) != kind {
		t.Fatalf("got %v (kind %q), want kind %q", err, apperr.KindOf(err), kind)
	}
}

// The whole life of one instance, driven by the provisioner's real adapters against the
// real host script.
func TestInstanceLifecycleThroughTheRealPieces(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	h := e.addHost("nuc1")
	ctx := context.Background()

	start := time.Now()
	in := e.provision(h, "acme")
	t.Logf("provision through the sandbox took %v", time.Since(start))

	st := e.run(h, "status", "acme", nil)
	if st["cpus"] != 1.5 || st["memory_mb"] != 1024.0 || st["memory_swap_mb"] != 1024.0 || st["restart_policy"] != "unless-stopped" {
		t.Fatalf("status does not show the caps: %v", st)
	}
	c, ok := e.container("nuc1", "n8n-acme")
	if !ok || !c.Running || c.Slug != "acme" || c.Image != image || c.CPUs != 1.5 || c.MemoryMB != 1024 ||
		c.PidsLimit != 512 || c.RestartPolicy != "unless-stopped" || c.DataDir == "" {
		t.Fatalf("container: %+v", c)
	}
	if guard, line := guardCredential(); c.Labels["traefik.http.middlewares.n8n-acme-setup-auth.basicauth.users"] != line ||
		strings.Contains(strings.Join(mapValues(c.Labels), "\n"), guard.Password) {
		t.Fatalf("guard label: %v", c.Labels)
	}

	// A label set Traefik cannot fully decode would drop the guard router and fail open.
	labels, err := traefiktest.LoadLabelFile(filepath.Join(filepath.Dir(c.DataDir), "labels"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := traefiktest.ParseLabels([]traefiktest.Container{{Name: c.Name, Labels: labels, Addr: "127.0.0.1:5678"}})
	if err != nil {
		t.Fatalf("n8nctl's labels do not parse cleanly: %v", err)
	}
	if r := cfg.Routers["n8n-acme-setup"]; r == nil || len(r.Middlewares) != 1 {
		t.Fatalf("no guarded setup router in %v", cfg.Routers)
	}

	waitReady(t, in.client)
	srv := e.world.N8n("acme")
	if srv == nil {
		t.Fatal("no fake n8n for acme")
	}

	// Outsiders are refused at the ingress, in every spelling n8n would route.
	body := `{"email":"mallory@evil.example","firstName":"M","lastName":"X","password":"Stolen123"}`
	for _, path := range []string{"/rest/owner/setup", "/REST/Owner/Setup/", "//rest/./owner/setup"} {
		if code, _ := post(t, h, in.fqdn, path, body); code != http.StatusUnauthorized {
			t.Fatalf("unauthenticated POST %s through the ingress: %d, want 401", path, code)
		}
	}
	err = in.client.SetupOwner(ctx, in.owner, n8n.BasicAuth{User: guardUser, Password: "Wrong-guess-1"})
	wantKind(t, err, apperr.Unauthorized)
	if n := srv.SetupCalls(); n != 0 {
		t.Fatalf("%d setup calls reached n8n past the guard", n)
	}
	// Every other path is the instance's, as before.
	if code, _ := get(t, h, in.fqdn, "/"); code != http.StatusOK {
		t.Fatalf("GET / through the ingress: %d", code)
	}

	guard, _ := guardCredential()
	if err := in.client.SetupOwner(ctx, in.owner, guard); err != nil {
		t.Fatal(err)
	}
	if u, ok := srv.Owner(); !ok || u.Email != in.owner.Email {
		t.Fatalf("owner %+v %v", u, ok)
	}
	if srv.AuthorizationSeen() != 0 {
		t.Fatal("the guard credential reached n8n (removeheader is off)")
	}
	if err := in.client.Login(ctx, in.owner.Email, in.owner.Password); err != nil {
		t.Fatal(err)
	}
	wantKind(t, in.client.Login(ctx, in.owner.Email, "Not-the-password-1"), apperr.Unauthorized)
	wantKind(t, in.client.SetupOwner(ctx, in.owner, guard), apperr.Conflict)

	// DNS, the real adapter against the fake Cloudflare.
	rec, err := e.dns.UpsertA(ctx, in.fqdn, h.PublicIP, "n8n instance acme")
	if err != nil {
		t.Fatal(err)
	}
	if recs := e.world.Cloudflare.Records(e.world.CloudflareZoneID); len(recs) != 1 || recs[0].Name != in.fqdn ||
		recs[0].Content != h.PublicIP || recs[0].ID != rec.ID || !recs[0].Proxied {
		t.Fatalf("records: %+v", recs)
	}

	// Suspend stops the container and with it the route; the owner stays.
	if st := e.run(h, "suspend", "acme", nil); st["running"] != false || st["restart_policy"] != "no" {
		t.Fatalf("suspend: %v", st)
	}
	if c, _ := e.container("nuc1", "n8n-acme"); c.Running {
		t.Fatal("container still running after suspend")
	}
	if ready, err := in.client.Ready(ctx); ready || err != nil {
		t.Fatalf("suspended instance: ready=%v err=%v", ready, err)
	}
	if code, _ := get(t, h, in.fqdn, "/healthz"); code != http.StatusNotFound {
		t.Fatalf("suspended instance answers %d through the ingress, want 404 (no router)", code)
	}
	if e.world.N8n("acme") != srv {
		t.Fatal("a stopped container lost its n8n")
	}

	if st := e.run(h, "resume", "acme", nil); st["running"] != true {
		t.Fatalf("resume: %v", st)
	}
	waitReady(t, in.client)
	if err := in.client.Login(ctx, in.owner.Email, in.owner.Password); err != nil {
		t.Fatalf("owner lost across suspend and resume: %v", err)
	}

	// Destroy keeps the data, and n8n's database with it: a re-provision finds the owner.
	if out := e.run(h, "destroy", "acme", nil); out["removed"] != true || out["data_kept"] != true {
		t.Fatalf("destroy: %v", out)
	}
	if _, ok := e.container("nuc1", "n8n-acme"); ok {
		t.Fatal("container left after destroy")
	}
	if e.world.N8n("acme") != nil {
		t.Fatal("N8n returns an instance without a container")
	}
	if code, _ := get(t, h, in.fqdn, "/healthz"); code != http.StatusNotFound {
		t.Fatalf("destroyed instance answers %d", code)
	}
	if out := e.run(h, "provision", "acme", e.settings("acme", in.key)); out["action"] != "created" {
		t.Fatalf("re-provision: %v", out)
	}
	waitReady(t, in.client)
	wantKind(t, in.client.SetupOwner(ctx, in.owner, guard), apperr.Conflict)
	if err := in.client.Login(ctx, in.owner.Email, in.owner.Password); err != nil {
		t.Fatalf("kept data lost its owner: %v", err)
	}

	// Another key on that data is refused by n8nctl, from the settings file n8n wrote.
	e.run(h, "destroy", "acme", nil)
	otherKey, _ := n8n.GenerateEncryptionKey()
	_, err = e.agent.Run(ctx, h.Node, h.VMID, "provision", "acme", e.settings("acme", otherKey))
	wantKind(t, err, apperr.Invalid)

	// A purge forgets the owner: the next instance on that slug is a fresh n8n.
	if out := e.run(h, "destroy", "acme", map[string]string{"PURGE": "1"}); out["purged"] != true {
		t.Fatalf("purge: %v", out)
	}
	e.run(h, "provision", "acme", e.settings("acme", otherKey))
	waitReady(t, in.client)
	if err := in.client.SetupOwner(ctx, in.owner, guard); err != nil {
		t.Fatalf("fresh n8n after purge: %v", err)
	}
	if e.world.N8n("acme") == srv {
		t.Fatal("the purged instance's n8n came back")
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// Two hosts share nothing: each has its own docker, data and ingress.
func TestHostsAreIsolated(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	h1, h2 := e.addHost("nuc1"), e.addHost("ovh1")
	if h1.VMID == h2.VMID || h1.PublicIP == h2.PublicIP || h1.IngressURL == h2.IngressURL {
		t.Fatalf("hosts overlap: %+v %+v", h1, h2)
	}
	a := e.provision(h1, "alpha")
	b := e.provision(h2, "beta")
	waitReady(t, a.client)
	waitReady(t, b.client)

	if code, _ := get(t, h1, b.fqdn, "/healthz"); code != http.StatusNotFound {
		t.Fatalf("host 1's ingress routes host 2's instance: %d", code)
	}
	if code, _ := get(t, h2, a.fqdn, "/healthz"); code != http.StatusNotFound {
		t.Fatalf("host 2's ingress routes host 1's instance: %d", code)
	}
	if st := e.run(h2, "status", "alpha", nil); st["exists"] != false {
		t.Fatalf("host 2 sees host 1's container: %v", st)
	}
	for host, want := range map[string]string{"nuc1": "n8n-alpha", "ovh1": "n8n-beta"} {
		cs, err := e.world.Containers(host)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || cs[0].Name != want {
			t.Fatalf("%s has %+v, want only %s", host, cs, want)
		}
	}
	guard, _ := guardCredential()
	if err := a.client.SetupOwner(context.Background(), a.owner, guard); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.world.N8n("beta").Owner(); ok {
		t.Fatal("setting up alpha gave beta an owner")
	}
	// The same slug on two hosts is two instances (the provisioner never does this, but
	// the hosts must not share state if it did).
	e.provision(h2, "alpha")
	if _, ok := e.world.N8n("alpha").Owner(); !ok {
		t.Fatal("N8n(alpha) is not the first host's instance")
	}
	if st := e.run(h1, "status", "alpha", nil); st["exists"] != true {
		t.Fatalf("host 1 lost alpha: %v", st)
	}
}

// Readiness counts from the container's start, and the fakes' knobs reach through.
func TestKnobs(t *testing.T) {
	t.Parallel()
	var configured sync.Map
	e := setup(t, func(c *Config) {
		c.N8nReadyAfter = time.Hour
		c.ConfigureN8n = func(host, slug string, srv *n8ntest.Server) {
			configured.Store(host+"/"+slug, true)
			srv.StartingUpPage = true
		}
	})
	h := e.addHost("nuc1")
	ctx := context.Background()

	in := e.provision(h, "slow")
	if ready, err := in.client.Ready(ctx); ready || err != nil {
		t.Fatalf("an hour-long start-up is ready: %v %v", ready, err)
	}
	if _, ok := configured.Load("nuc1/slow"); !ok {
		t.Fatal("ConfigureN8n was not called")
	}
	if code, body := get(t, h, in.fqdn, "/rest/settings"); code != http.StatusOK || !strings.Contains(body, "starting up") {
		t.Fatalf("StartingUpPage set by ConfigureN8n did not take: %d %q", code, body)
	}
	e.world.N8n("slow").SetReady(true)
	waitReady(t, in.client)

	// Caps that do not take effect show in status.
	if err := e.world.SetHostEnv("nuc1", "FAKE_DOCKER_IGNORE_LIMITS=1"); err != nil {
		t.Fatal(err)
	}
	e.provision(h, "uncapped")
	if st := e.run(h, "status", "uncapped", nil); st["cpus"] != 0.0 || st["memory_mb"] != 0.0 {
		t.Fatalf("ignored limits not visible: %v", st)
	}
	// A docker that fails.
	if err := e.world.SetHostEnv("nuc1", "FAKE_DOCKER_FAIL=run"); err != nil {
		t.Fatal(err)
	}
	key, _ := n8n.GenerateEncryptionKey()
	_, err := e.agent.Run(ctx, h.Node, h.VMID, "provision", "broken", e.settings("broken", key))
	wantKind(t, err, apperr.Unavailable)
	if err := e.world.SetHostEnv("nuc1"); err != nil {
		t.Fatal(err)
	}

	// The guest agent going away.
	e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentRunning = false })
	_, err = e.agent.Run(ctx, h.Node, h.VMID, "status", "slow", nil)
	if err == nil || !strings.Contains(err.Error(), "QEMU guest agent is not running") {
		t.Fatalf("agent down: %v", err)
	}
	e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentRunning = true })

	// Cloudflare rate limiting.
	e.world.Cloudflare.FailNext(1, http.StatusTooManyRequests)
	_, err = e.dns.UpsertA(ctx, in.fqdn, h.PublicIP, "n8n instance slow")
	wantKind(t, err, apperr.Unavailable)

	wantKind(t, e.world.SetHostEnv("nowhere", "X=1"), apperr.NotFound)
	wantKind(t, e.world.SetHostEnv("nuc1", "NOEQUALS"), apperr.Invalid)
	if _, err := e.world.Containers("nowhere"); apperr.KindOf(err) != apperr.NotFound {
		t.Fatalf("Containers of an unknown host: %v", err)
	}
}

// The fake n8n's clock reads the epoch at the container's latest start, so that a restart
// starts readiness over while the owner stays.
func TestN8nClockFollowsContainerStarts(t *testing.T) {
	t.Parallel()
	p := &n8nProc{}
	p.srv = &n8ntest.Server{ReadyAfter: time.Hour, Now: p.now}
	p.srv.Start()
	ready := func() bool {
		rec := &statusRecorder{header: http.Header{}}
		req, _ := http.NewRequest(http.MethodGet, "/healthz/readiness", nil)
		p.srv.ServeHTTP(rec, req)
		return rec.status == http.StatusOK
	}
	p.startedNs.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	if !ready() {
		t.Fatal("a container started two hours ago is not ready")
	}
	p.startedNs.Store(time.Now().UnixNano()) // restarted just now
	if ready() {
		t.Fatal("a restarted container is ready at once")
	}
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}
func (r *statusRecorder) WriteHeader(s int) { r.status = s }

func TestStartAndAddHostValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{}},
		{"bad domain", Config{Dir: t.TempDir(), BaseDomain: "not a domain"}},
		{"negative latency", Config{Dir: t.TempDir(), AgentLatency: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Start(context.Background(), tc.cfg)
			wantKind(t, err, apperr.Invalid)
		})
	}

	e := setup(t, nil)
	if e.world.BaseDomain != "n8n.example.test" || e.world.FQDN("x") != "x.n8n.example.test" {
		t.Fatalf("base domain %q", e.world.BaseDomain)
	}
	for _, kv := range e.world.Env() {
		if k, v, _ := strings.Cut(kv, "="); v == "" {
			t.Fatalf("%s is empty", k)
		}
	}
	for _, bad := range []string{"", "Upper", "-x", "a_b", strings.Repeat("a", 64)} {
		_, err := e.world.AddHost(bad)
		wantKind(t, err, apperr.Invalid)
	}
	e.addHost("nuc1")
	_, err := e.world.AddHost("nuc1")
	wantKind(t, err, apperr.Conflict)
	if h, ok := e.world.Host("nuc1"); !ok || h.Node != Node || h.VMID != firstVMID || h.PublicIP != "203.0.113.10" {
		t.Fatalf("host %+v %v", h, ok)
	}
	if hs := e.world.Hosts(); len(hs) != 1 || hs[0].Name != "nuc1" {
		t.Fatalf("hosts %+v", hs)
	}
	for _, f := range []string{e.world.n8nctlPath, e.world.dockerPath} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}

	e.world.Close()
	e.world.Close()
	_, err = e.world.AddHost("late")
	wantKind(t, err, apperr.Unavailable)
	if resp, err := (&http.Client{}).Get(e.world.ProxmoxURL + "/version"); err == nil {
		resp.Body.Close()
		t.Fatal("Proxmox still serving after Close")
	}
}

// Instances provisioned at once on two hosts, while an outsider hammers each one's
// owner-setup path through the ingress from the moment it is named: every instance ends
// with our owner, and no outside call ever reaches n8n.
func TestConcurrentInstancesUnderAttack(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	hs := []Host{e.addHost("nuc1"), e.addHost("ovh1")}
	guard, _ := guardCredential()
	ctx := context.Background()
	attackerClient := &http.Client{Transport: &http.Transport{Proxy: nil}}

	const n = 6
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		h := hs[i%2]
		slug := fmt.Sprintf("shop%d", i)
		done := make(chan struct{})
		wg.Go(func() { // the attacker
			body := `{"email":"mallory@evil.example","firstName":"M","lastName":"X","password":"Stolen123"}`
			for {
				select {
				case <-done:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, h.IngressURL+"/rest/owner/setup", strings.NewReader(body))
				req.Host = e.world.FQDN(slug)
				resp, err := attackerClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusNotFound {
					errs <- fmt.Errorf("attacker on %s got %d", slug, resp.StatusCode)
					return
				}
			}
		})
		wg.Go(func() { // the provisioner
			defer close(done)
			in, err := e.tryProvision(h, slug)
			if err == nil {
				err = in.client.WaitReady(ctx, 5*time.Millisecond)
			}
			if err == nil {
				err = in.client.SetupOwner(ctx, in.owner, guard)
			}
			if err == nil {
				err = in.client.Login(ctx, in.owner.Email, in.owner.Password)
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", slug, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range n {
		srv := e.world.N8n(fmt.Sprintf("shop%d", i))
		if u, ok := srv.Owner(); !ok || !strings.HasSuffix(u.Email, ".example.com") || srv.SetupCalls() != 1 {
			t.Errorf("shop%d: owner %+v %v after %d setup calls", i, u, ok, srv.SetupCalls())
		}
	}
}
