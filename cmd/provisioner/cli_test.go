package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns/cloudflaretest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// The CLI's tests run it through run, as main does, on both databases. The fleet upgrade
// and the doctor run against the sandbox (the fake Proxmox whose guest agent runs the real
// n8nctl with the fake docker, and the fake Cloudflare), with a `provisioner serve` in the
// same test as the workers.

const (
	cliImageOld = "docker.n8n.io/n8nio/n8n:1.97.1"
	cliImageNew = "docker.n8n.io/n8nio/n8n:1.98.0"
	cliImageBad = "docker.n8n.io/n8nio/n8n:1.99.0"
)

// cliWorld is one test's database, its configuration and, when asked for, a sandbox.
type cliWorld struct {
	t     *testing.T
	env   map[string]string
	db    *database.DB
	store *instances.Store
	w     *sandbox.World // nil without a sandbox
	agent *hosts.Agent

	hostsAdded int
}

func newCLIWorld(t *testing.T, d database.Dialect, withSandbox bool) *cliWorld {
	t.Helper()
	masterKey, err := secret.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cw := &cliWorld{t: t, env: map[string]string{
		"PROVISIONER_DATA_DIR":       t.TempDir(),
		"PROVISIONER_DATABASE_URL":   dbtest.URL(t, d),
		"PROVISIONER_MASTER_KEY":     masterKey,
		"PROVISIONER_ADMIN_API_KEY":  "admin-" + strings.Repeat("a", 20),
		"PROVISIONER_PORTAL_API_KEY": "portal-" + strings.Repeat("p", 20),
	}}
	testlog.Secret(t, masterKey)
	if withSandbox {
		w, err := sandbox.Start(context.Background(), sandbox.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Close)
		for _, kv := range w.Env() {
			k, v, _ := strings.Cut(kv, "=")
			cw.env[k] = v
		}
		testlog.Secret(t, w.ProxmoxTokenSecret, w.CloudflareToken)
		pve, err := hosts.NewProxmox(hosts.ProxmoxConfig{BaseURL: w.ProxmoxURL, TokenID: w.ProxmoxTokenID,
			TokenSecret: w.ProxmoxTokenSecret, PollInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if cw.agent, err = hosts.NewAgent(hosts.AgentConfig{Exec: pve}); err != nil {
			t.Fatal(err)
		}
		cw.w = w
	}
	cw.must("migrate")
	cw.db, err = database.Open(context.Background(), cw.env["PROVISIONER_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cw.db.Close() })
	cw.store = instances.NewStore(cw.db.Gorm, nil)
	return cw
}

// run runs `provisioner args...` and returns what it printed and its error.
func (cw *cliWorld) run(args ...string) (stdout, stderr string, err error) {
	cw.t.Helper()
	var out, errb bytes.Buffer
	err = run(context.Background(), append([]string{"provisioner"}, args...), func(k string) string { return cw.env[k] }, &out, &errb)
	return out.String(), errb.String(), err
}

// must runs the command and fails the test when it fails.
func (cw *cliWorld) must(args ...string) string {
	cw.t.Helper()
	out, errOut, err := cw.run(args...)
	if err != nil {
		cw.t.Fatalf("provisioner %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// mustJSON runs the command with --json and decodes its output into v.
func (cw *cliWorld) mustJSON(v any, args ...string) {
	cw.t.Helper()
	out := cw.must(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		cw.t.Fatalf("provisioner %s --json printed no JSON (%v):\n%s", strings.Join(args, " "), err, out)
	}
}

// addHost registers host name: through the CLI, which checks it, when there is a sandbox;
// without one (no Proxmox to check against) made-up coordinates go straight into the
// inventory, as `hosts add` stores a host once its checks pass.
func (cw *cliWorld) addHost(name string, max int) {
	cw.t.Helper()
	cw.hostsAdded++
	if cw.w == nil {
		h := hosts.Host{Name: name, Node: "pve", VMID: 100 + cw.hostsAdded, PublicIP: "192.0.2.10", IngressURL: "https://10.0.0.5", MaxInstances: max}
		if _, err := hosts.NewStore(cw.db.Gorm, nil).Add(context.Background(), h); err != nil {
			cw.t.Fatal(err)
		}
		return
	}
	h, err := cw.w.AddHost(name)
	if err != nil {
		cw.t.Fatal(err)
	}
	cw.must("hosts", "add", "--name", h.Name, "--node", h.Node, "--vmid", fmt.Sprint(h.VMID),
		"--public-ip", h.PublicIP, "--ingress-url", h.IngressURL, "--max-instances", fmt.Sprint(max))
}

func cliRandomSlug() string {
	b := make([]byte, 5)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// addInstance stores an instance on host behind the service's back, as if the saga had
// made it, and with a sandbox provisions its container and DNS record with n8nctl.
func (cw *cliWorld) addInstance(host, image string, status instances.Status) instances.Instance {
	cw.t.Helper()
	ctx := context.Background()
	slug := cliRandomSlug()
	client, err := cw.store.UpsertClient(ctx, instances.Client{ID: "cus_" + slug, Email: slug + "@example.com", Name: "Client " + slug})
	if err != nil {
		cw.t.Fatal(err)
	}
	base := cw.env["PROVISIONER_BASE_DOMAIN"]
	if base == "" {
		base = "localhost"
	}
	in := instances.Instance{ClientID: client.ID, PlanID: "starter", CPUs: 1, MemoryMB: 1024, N8nImage: image,
		Status: status, Step: "emailed", OwnerEmail: client.Email, Host: &host, Slug: slug, URL: "https://" + slug + "." + base}
	if status == instances.Suspended {
		in.SuspendReason = instances.ReasonManual
	}
	if err := cw.store.Create(ctx, &in); err != nil {
		cw.t.Fatal(err)
	}
	if cw.w != nil {
		cw.provision(host, slug, image)
		h, _ := cw.w.Host(host)
		cw.w.Cloudflare.AddRecord(cw.w.CloudflareZoneID, cloudflaretest.Record{Type: "A", Name: cw.w.FQDN(slug), Content: h.PublicIP})
	}
	return in
}

// provision runs `n8nctl provision` for slug on host directly, behind the database's back.
func (cw *cliWorld) provision(host, slug, image string) {
	cw.t.Helper()
	h, ok := cw.w.Host(host)
	if !ok {
		cw.t.Fatalf("no sandbox host %s", host)
	}
	key, _ := n8n.GenerateEncryptionKey()
	guard, _ := n8n.SetupGuardHTPasswd("provisioner", rand.Text())
	_, err := cw.agent.Run(context.Background(), h.Node, h.VMID, "provision", slug, map[string]string{
		"IMAGE": image, "CPUS": "1", "MEMORY_MB": "1024", "FQDN": cw.w.FQDN(slug),
		"N8N_ENCRYPTION_KEY": key, "SETUP_AUTH_USERS": guard,
	})
	if err != nil {
		cw.t.Fatalf("n8nctl provision %s on %s: %v", slug, host, err)
	}
}

// serve starts `provisioner serve` on the test's database: the workers that run the jobs
// the CLI queues. It returns once the server listens (its workers have started).
func (cw *cliWorld) serve() {
	cw.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &cliServerLogs{listening: make(chan struct{})}
	testlog.Keep(cw.t, &logs.buf)
	env := map[string]string{"PROVISIONER_ADDR": "127.0.0.1:0", "PROVISIONER_HEALTH_TIMEOUT": "1s"}
	for k, v := range cw.env {
		env[k] = v
	}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"provisioner", "serve"}, func(k string) string { return env[k] }, io.Discard, logs)
	}()
	cw.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			cw.t.Errorf("provisioner serve returned %v after shutdown", err)
		}
	})
	select {
	case <-logs.listening:
	case err := <-done:
		cw.t.Fatalf("provisioner serve stopped before listening: %v\n%s", err, logs.buf.String())
	case <-time.After(time.Minute): // a hang guard, not a timing assertion
		cw.t.Fatalf("provisioner serve not listening after a minute:\n%s", logs.buf.String())
	}
}

// cliServerLogs keeps the server's log and signals its "listening" line (slog writes one
// line per Write).
type cliServerLogs struct {
	buf       testlog.Buffer
	once      sync.Once
	listening chan struct{}
}

func (l *cliServerLogs) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"msg":"listening"`)) {
		l.once.Do(func() { close(l.listening) })
	}
	return l.buf.Write(p)
}

func (cw *cliWorld) timeline(id string) []instances.Event {
	cw.t.Helper()
	events, err := cw.store.Timeline(context.Background(), id)
	if err != nil {
		cw.t.Fatal(err)
	}
	return events
}

func cliCountKind(events []instances.Event, kind string) int {
	n := 0
	for _, e := range events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func TestCLIHelpForEveryCommand(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "never-created")
	env := func(k string) string {
		return map[string]string{"PROVISIONER_DATA_DIR": dataDir}[k]
	}
	commands := [][]string{
		{"help"}, {"--help"},
		{"hosts", "--help"}, {"hosts", "help"}, {"instances", "-h"},
		{"hosts", "list", "--help"}, {"hosts", "add", "--help"}, {"hosts", "drain", "--help"},
		{"hosts", "enable", "--help"}, {"hosts", "disable", "--help"}, {"hosts", "set", "-h"},
		{"instances", "list", "--help"}, {"instances", "show", "--help"}, {"instances", "suspend", "--help"},
		{"instances", "resume", "--help"}, {"instances", "restart", "--help"}, {"instances", "upgrade", "--help"},
		{"instances", "backup", "--help"}, {"instances", "delete", "--help"}, {"instances", "retry", "--help"},
		{"doctor", "--help"},
		{"pool", "--help"},
	}
	for _, args := range commands {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if err := run(context.Background(), append([]string{"provisioner"}, args...), env, &out, &errb); err != nil {
				t.Fatalf("err = %v", err)
			}
			want := "usage: provisioner " + strings.Join(args[:len(args)-1], " ")
			if !strings.HasPrefix(out.String(), strings.TrimSpace(want)) {
				t.Fatalf("help does not start with %q:\n%s", want, out.String())
			}
			if errb.Len() > 0 {
				t.Errorf("help wrote to stderr: %s", errb.String())
			}
			if len(args) == 3 && !strings.Contains(out.String(), "flags:") && args[1] != "drain" && args[1] != "enable" && args[1] != "disable" && args[1] != "show" {
				t.Errorf("no flags in the help:\n%s", out.String())
			}
		})
	}
	t.Cleanup(func() {
		if _, err := os.Stat(dataDir); err == nil {
			t.Error("--help created the data dir: it must not touch the configuration or the database")
		}
	})
}

func TestCLIBadInputNamesWhatIsWrong(t *testing.T) {
	t.Parallel()
	cw := newCLIWorld(t, database.SQLite, false)
	cw.addHost("nuc1", 2)
	valid := []string{"--name", "nuc2", "--node", "pve", "--vmid", "202", "--public-ip", "192.0.2.20", "--ingress-url", "https://10.0.0.6", "--max-instances", "5"}
	with := func(flag, value string) []string {
		out := []string{"hosts", "add"}
		for i := 0; i < len(valid); i += 2 {
			if valid[i] == flag {
				if value != "" {
					out = append(out, flag, value)
				}
				continue
			}
			out = append(out, valid[i], valid[i+1])
		}
		return out
	}
	tests := []struct {
		args []string
		want []string // all must be in the error
	}{
		{with("--name", ""), []string{"--name is required"}},
		{with("--name", "Bad_Name"), []string{"--name must be"}},
		{with("--vmid", "abc"), []string{"--vmid", "abc"}},
		{with("--vmid", "7"), []string{"--vmid must be"}},
		{with("--public-ip", "not-an-ip"), []string{"--public-ip must be"}},
		{with("--ingress-url", "ftp://x"), []string{"--ingress-url must be"}},
		{with("--max-instances", "-1"), []string{"--max-instances must be"}},
		{with("--max-instances", ""), []string{"nuc2 cannot be checked", "PROVISIONER_PROXMOX_URL"}}, // optional, but no host is stored unchecked
		{with("--name", "nuc1"), []string{"nuc1", "exists already"}},
		{[]string{"hosts", "add", "--colour", "red"}, []string{"--colour"}},
		{[]string{"hosts", "set", "nuc1"}, []string{"--max-instances is required"}},
		{[]string{"hosts", "set", "nuc1", "--max-instances", "x"}, []string{"--max-instances"}},
		{[]string{"hosts", "drain"}, []string{"host name is missing"}},
		{[]string{"hosts", "drain", "nuc1", "nuc2"}, []string{"expected one host name"}},
		{[]string{"hosts", "enable", "nope"}, []string{`"nope" not found`}},
		{[]string{"hosts", "list", "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"hosts"}, []string{"hosts needs a command"}},
		{[]string{"hosts", "frobnicate"}, []string{`"hosts frobnicate"`}},
		{[]string{"instances", "list", "--status", "sleepy"}, []string{"--status", "sleepy"}},
		{[]string{"instances", "list", "--limit", "0"}, []string{"--limit must be"}},
		{[]string{"instances", "list", "--limit", "500"}, []string{"--limit must be"}},
		{[]string{"instances", "list", "--cursor", "x"}, []string{"--cursor"}},
		{[]string{"instances", "show"}, []string{"instance id is missing"}},
		{[]string{"instances", "show", "0190aaaa-0000-7000-8000-000000000000"}, []string{"instance not found"}},
		{[]string{"instances", "suspend", "0190aaaa-0000-7000-8000-000000000000"}, []string{"instance not found"}},
		{[]string{"instances", "upgrade", "0190aaaa-0000-7000-8000-000000000000"}, []string{"--image is required"}},
		{[]string{"instances", "upgrade", "--all", "--image", "n8nio/n8n:latest"}, []string{"--image", "pinned"}},
		{[]string{"instances", "upgrade", "--all", "--image", cliImageNew, "--concurrency", "0"}, []string{"--concurrency must be"}},
		{[]string{"instances", "upgrade", "--all", "--image", cliImageNew, "--host", "nope"}, []string{"--host", `"nope" not found`}},
		{[]string{"instances", "upgrade", "x", "--image", cliImageNew, "--host", "nuc1"}, []string{"--host and --concurrency go with --all"}},
		{[]string{"instances", "upgrade", "x", "--all", "--image", cliImageNew}, []string{"not both"}},
		{[]string{"instances", "upgrade", "--image", cliImageNew}, []string{"--all"}},
		{[]string{"instances", "backup", "x", "--poll-interval", "0s"}, []string{"--poll-interval"}},
		{[]string{"doctor", "now"}, []string{`unexpected argument "now"`}},
		{[]string{"pool", "now"}, []string{`unexpected argument "now"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			t.Parallel()
			_, _, err := cw.run(tt.args...)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestCLIInstancesListShowAndActions(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cw := newCLIWorld(t, d, false)
			cw.addHost("nuc1", 10)
			cw.addHost("nuc2", 10)
			a := cw.addInstance("nuc1", cliImageOld, instances.Active)
			b := cw.addInstance("nuc2", cliImageOld, instances.Active)
			s := cw.addInstance("nuc1", cliImageOld, instances.Suspended)

			type list struct {
				Instances  []httpapi.InstanceJSON
				NextCursor *string `json:"next_cursor"`
			}
			ids := func(l list) string {
				var out []string
				for _, in := range l.Instances {
					out = append(out, in.ID)
				}
				return strings.Join(out, ",")
			}
			var all, onNuc1, suspended, page1, page2, byClient list
			cw.mustJSON(&all, "instances", "list")
			cw.mustJSON(&onNuc1, "instances", "list", "--host", "nuc1")
			cw.mustJSON(&suspended, "instances", "list", "--status", "suspended")
			cw.mustJSON(&byClient, "instances", "list", "--client", b.ClientID)
			cw.mustJSON(&page1, "instances", "list", "--limit", "2")
			if page1.NextCursor == nil {
				t.Fatal("no next_cursor on a full page")
			}
			cw.mustJSON(&page2, "instances", "list", "--limit", "2", "--cursor", *page1.NextCursor)
			for name, c := range map[string]struct{ got, want string }{
				"all":       {ids(all), a.ID + "," + b.ID + "," + s.ID},
				"host":      {ids(onNuc1), a.ID + "," + s.ID},
				"status":    {ids(suspended), s.ID},
				"client":    {ids(byClient), b.ID},
				"two pages": {ids(page1) + "," + ids(page2), a.ID + "," + b.ID + "," + s.ID},
			} {
				if c.got != c.want {
					t.Errorf("%s: %s, want %s", name, c.got, c.want)
				}
			}
			if all.NextCursor != nil || all.Instances[0].Plan != "starter" || all.Instances[0].Status != "active" || *all.Instances[0].Host != "nuc1" {
				t.Errorf("list --json: %+v", all)
			}
			human := cw.must("instances", "list", "--limit", "2")
			for _, want := range []string{"SLUG", a.Slug, b.Slug, cliImageOld, "--cursor " + b.ID} {
				if !strings.Contains(human, want) {
					t.Errorf("list does not show %q:\n%s", want, human)
				}
			}
			if human := cw.must("instances", "list", "--status", "suspended"); !strings.Contains(human, "suspended (manual)") {
				t.Errorf("list does not say why the instance is suspended:\n%s", human)
			}

			// An action is a job, and asking twice while it is queued (no server runs here)
			// adds no second job.
			var first, second actionJSON
			cw.mustJSON(&first, "instances", "suspend", a.ID)
			cw.mustJSON(&second, "instances", "suspend", a.ID)
			if first.Job == nil || second.Job == nil || first.Job.ID != second.Job.ID || first.Job.Duplicate || !second.Job.Duplicate {
				t.Fatalf("two suspend requests: %+v then %+v; want one job, the second a duplicate", first.Job, second.Job)
			}
			if first.Action != "suspend" || first.Instance.ID != a.ID || first.Job.State != "available" {
				t.Errorf("suspend --json = %+v", first)
			}
			var jobs int
			if err := cw.db.SQL.QueryRow("SELECT COUNT(*) FROM river_job WHERE kind = 'instance_action'").Scan(&jobs); err != nil || jobs != 1 {
				t.Errorf("river_job holds %d instance_action job(s) (%v), want 1", jobs, err)
			}
			if n := cliCountKind(cw.timeline(a.ID), "requested"); n != 2 {
				t.Errorf("the timeline has %d requested event(s), want 2", n)
			}
			out := cw.must("instances", "backup", b.ID)
			if !strings.Contains(out, "Backup of "+b.Slug) || !strings.Contains(out, "queued") {
				t.Errorf("backup printed %q", out)
			}
			if _, _, err := cw.run("instances", "resume", b.ID); err == nil || !strings.Contains(err.Error(), "cannot resume an instance that is active") {
				t.Errorf("resume of an active instance: %v", err)
			}
			if _, _, err := cw.run("instances", "retry", b.ID); err == nil || !strings.Contains(err.Error(), "only a failed instance") {
				t.Errorf("retry of an active instance: %v", err)
			}

			show := cw.must("instances", "show", a.ID)
			for _, want := range []string{a.Slug, "https://" + a.Slug, "nuc1", "starter (1 CPU, 1024 MiB, no quota)", cliImageOld,
				"Timeline:", "created", "instance requested", "suspend requested"} {
				if !strings.Contains(show, want) {
					t.Errorf("show does not say %q:\n%s", want, show)
				}
			}
			var shown httpapi.InstanceJSON
			cw.mustJSON(&shown, "instances", "show", a.ID)
			if shown.ID != a.ID || len(shown.Timeline) != 3 || shown.Timeline[0].Kind != "created" || shown.Timeline[2].Kind != "requested" {
				t.Errorf("show --json = %+v", shown)
			}
			raw := cw.must("instances", "show", a.ID, "--json")
			for _, secretField := range []string{"sealed", "password", "encryption"} {
				if strings.Contains(strings.ToLower(raw), secretField) {
					t.Errorf("show --json mentions %q:\n%s", secretField, raw)
				}
			}
		})
	}
}

func TestCLIFleetUpgradeSaysWhenNoWorkerRuns(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cw := newCLIWorld(t, d, false)
			cw.addHost("nuc1", 10)
			a := cw.addInstance("nuc1", cliImageOld, instances.Active)
			b := cw.addInstance("nuc1", cliImageOld, instances.Active)
			cw.addInstance("nuc1", cliImageNew, instances.Active)
			out, _, err := cw.run("instances", "upgrade", "--all", "--image", cliImageNew, "--concurrency", "1",
				"--start-timeout", "100ms", "--poll-interval", "10ms", "--json")
			if err == nil || !strings.Contains(err.Error(), "no worker") || !strings.Contains(err.Error(), "provisioner serve") {
				t.Fatalf("err = %v, want one saying that no server runs the jobs", err)
			}
			var r fleetJSON
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if r.Total != 2 || len(r.Already) != 1 || !r.Stopped || len(r.Upgraded) != 0 ||
				len(r.Failed) != 1 || r.Failed[0].ID != a.ID || r.Failed[0].Outcome != outcomeNoWorker ||
				len(r.NotStarted) != 1 || r.NotStarted[0].ID != b.ID {
				t.Fatalf("report = %+v", r)
			}
		})
	}
}

func TestCLIDoctorFindsOrphans(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cw := newCLIWorld(t, d, true)
			cw.addHost("nuc1", 10)
			in := cw.addInstance("nuc1", cliImageOld, instances.Active)
			out, errOut, err := cw.run("doctor")
			if err != nil || !strings.Contains(out, "No drift: 1 instance(s) on 1 host(s)") {
				t.Fatalf("doctor on a clean world: %v\n%s%s", err, out, errOut)
			}
			if !strings.Contains(errOut, "hosts checked 1/1") {
				t.Errorf("no progress on stderr: %q", errOut)
			}

			// Behind the database's back: a container and a DNS record that no instance owns.
			cw.provision("nuc1", "ghost", cliImageOld)
			cw.w.Cloudflare.AddRecord(cw.w.CloudflareZoneID, cloudflaretest.Record{Type: "A", Name: cw.w.FQDN("stray"), Content: "203.0.113.99"})
			out, _, err = cw.run("doctor")
			if err == nil || !strings.Contains(err.Error(), "drift") {
				t.Fatalf("doctor with orphans: err = %v, want drift", err)
			}
			for _, want := range []string{"KIND", "orphan_container", "ghost", "orphan_dns", "stray", "no (needs the operator)"} {
				if !strings.Contains(out, want) {
					t.Errorf("the table does not show %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, in.Slug) {
				t.Errorf("the healthy instance is reported:\n%s", out)
			}
			// --fix leaves orphans alone (they may be someone's only copy of data).
			out, _, err = cw.run("doctor", "--fix", "--json")
			if err == nil {
				t.Fatal("doctor --fix exits 0 with orphans left")
			}
			var r instances.Report
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			kinds := map[string]string{}
			for _, f := range r.Findings {
				kinds[f.Kind] = f.Slug
				if f.Fixed {
					t.Errorf("an orphan was fixed: %+v", f)
				}
			}
			if len(r.Findings) != 2 || kinds[instances.DriftOrphanContainer] != "ghost" || kinds[instances.DriftOrphanDNS] != "stray" {
				t.Errorf("findings = %+v", r.Findings)
			}
			if cs, _ := cw.w.Containers("nuc1"); len(cs) != 2 {
				t.Errorf("the host has %d containers after --fix, want both still there", len(cs))
			}
		})
	}
}

func TestCLIFleetUpgradeStopsAtTheFirstFailure(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cw := newCLIWorld(t, d, true)
			cw.addHost("nuc1", 10)
			cw.addHost("nuc2", 10)
			// In creation order, the order the fleet upgrade follows: a and c on the healthy
			// nuc1, b on nuc2, where the bad image never gets ready.
			a := cw.addInstance("nuc1", cliImageOld, instances.Active)
			b := cw.addInstance("nuc2", cliImageOld, instances.Active)
			c := cw.addInstance("nuc1", cliImageOld, instances.Active)
			if err := cw.w.SetHostEnv("nuc2", "FAKE_DOCKER_UNHEALTHY_IMAGE="+cliImageBad); err != nil {
				t.Fatal(err)
			}
			cw.serve()
			follow := []string{"--poll-interval", "20ms", "--start-timeout", "1m"}

			// One instance, followed to its end.
			out := cw.must(append([]string{"instances", "backup", a.ID, "--wait"}, follow...)...)
			if !strings.Contains(out, "completed") || !strings.Contains(out, "backup") {
				t.Errorf("backup --wait printed:\n%s", out)
			}

			// One upgrade to an image its host cannot run, followed: rolled back, and a failure.
			_, errOut, err := cw.run(append([]string{"instances", "upgrade", b.ID, "--image", cliImageBad, "--wait"}, follow...)...)
			if err == nil || !strings.Contains(err.Error(), outcomeRolledBack) || !strings.Contains(err.Error(), "not healthy") {
				t.Errorf("upgrade --wait of an unhealthy image: err = %v, want a rollback reported", err)
			}

			// nuc1 only, two at a time: both upgraded.
			out = cw.must(append([]string{"instances", "upgrade", "--all", "--image", cliImageNew, "--host", "nuc1"}, follow...)...)
			for _, want := range []string{"Upgrading 2 active instance(s) on nuc1", "2 at a time", "[1/2]", "[2/2]", a.Slug, c.Slug, "Done: 2 upgraded"} {
				if !strings.Contains(out, want) {
					t.Errorf("fleet upgrade of nuc1 does not say %q:\n%s", want, out)
				}
			}

			// The whole fleet, one at a time, to the image nuc2 cannot run: a is upgraded,
			// b rolls back and stops the upgrade, c is never started.
			out, errOut, err = cw.run(append([]string{"instances", "upgrade", "--all", "--image", cliImageBad, "--concurrency", "1", "--json"}, follow...)...)
			if err == nil || !strings.Contains(err.Error(), b.Slug) || !strings.Contains(err.Error(), outcomeRolledBack) {
				t.Fatalf("err = %v, want the fleet stopped at %s rolled back\nstderr:\n%s", err, b.Slug, errOut)
			}
			var r fleetJSON
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if r.Total != 3 || !r.Stopped || len(r.Upgraded) != 1 || r.Upgraded[0].ID != a.ID ||
				len(r.Failed) != 1 || r.Failed[0].ID != b.ID || r.Failed[0].Outcome != outcomeRolledBack ||
				len(r.NotStarted) != 1 || r.NotStarted[0].ID != c.ID {
				t.Fatalf("report = %+v", r)
			}
			for _, want := range []string{"[1/3] " + a.Slug + " on nuc1: upgraded", "[2/3] " + b.Slug + " on nuc2: FAILED (rolled_back)"} {
				if !strings.Contains(errOut, want) {
					t.Errorf("progress does not say %q:\n%s", want, errOut)
				}
			}
			images := map[string]string{}
			for _, in := range []instances.Instance{a, b, c} {
				got, err := cw.store.Get(context.Background(), in.ID)
				if err != nil {
					t.Fatal(err)
				}
				images[in.Slug] = got.N8nImage
			}
			if images[a.Slug] != cliImageBad || images[b.Slug] != cliImageOld || images[c.Slug] != cliImageNew {
				t.Errorf("images after the stopped upgrade: %v", images)
			}
			if n := cliCountKind(cw.timeline(b.ID), "upgrade_rolled_back"); n != 2 {
				t.Errorf("b's timeline has %d upgrade_rolled_back event(s)", n)
			}
			cEvents := cw.timeline(c.ID)
			if n := cliCountKind(cEvents, "requested"); n != 1 {
				t.Errorf("c has %d requested events, want only the first fleet's", n)
			}
			for _, e := range cEvents {
				if strings.Contains(e.Message, cliImageBad) {
					t.Errorf("c was touched by the stopped upgrade: %+v", e)
				}
			}
			cs, err := cw.w.Containers("nuc2")
			if err != nil || len(cs) != 1 || cs[0].Image != cliImageOld || !cs[0].Running {
				t.Errorf("nuc2's container after the rollback: %+v %v", cs, err)
			}
		})
	}
}
