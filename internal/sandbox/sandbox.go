// Package sandbox is the world outside the provisioner, built only from the project's
// fakes and its real host script: a fake Proxmox VE API whose guest agent runs the real
// scripts/n8nctl against the fake docker CLI, one directory tree per host VM; a fake
// Cloudflare; and per host a fake Traefik ingress that routes by the labels n8nctl gave
// each container to a fake n8n started for it. End-to-end tests use it (the provisioner
// running in the test process or as a child process pointed at the World's URLs), and so
// does `provisioner demo`, which is why nothing here imports package testing and the
// scripts come embedded in the binary.
//
// How the pieces meet:
//
//	provisioner ──agent/exec──▶ proxmoxtest ──LocalRunner, by vmid──▶ n8nctl ──DOCKER──▶ fake-docker
//	                                                                        (state files per host)
//	provisioner ──Host: slug.base──▶ traefiktest ingress ──reads the state, by labels──▶ n8ntest
//
// The ingress reads the host's fake docker state on every request (cached by file
// identity) and routes only to running containers, as Traefik's Docker provider does. For
// each running container it starts, the first time it is needed, an in-process n8ntest
// server on its own 127.0.0.1 port. That fake n8n belongs to the container's data dir (the
// bind mounted at /home/node/.n8n), as a real n8n's SQLite does: its owner survives stop and
// start, suspend and resume, upgrade, and a destroy that keeps the data; a destroy with
// PURGE=1 removes the data dir and with it the owner. The owner is kept in the data dir
// (database.json, where real n8n has database.sqlite), so a data dir restored or moved to
// another host comes back with its owner. Each (re)start of the container
// starts its readiness over: /healthz/readiness turns 200 Config.N8nReadyAfter after the
// container's State.StartedAt. Like real n8n, the fake writes its settings file (config,
// holding the encryption key) into the data dir on first start, and refuses to start (no
// route) when that file holds another N8N_ENCRYPTION_KEY than the container's.
//
// Failure knobs are the fakes' own:
//   - Proxmox: World.Proxmox.UpdateVM(host.Node, host.VMID, ...) (VM stopped, guest agent
//     down, commands that hang, 403), World.Proxmox.FailNext, Config.AgentLatency.
//   - Cloudflare: World.Cloudflare.FailNext (429 with Retry-After, 5xx), AddRecord (drift).
//   - Docker on one host: SetHostEnv(name, "FAKE_DOCKER_FAIL=run,start",
//     "FAKE_DOCKER_IGNORE_LIMITS=1" (caps that do not take effect),
//     "FAKE_DOCKER_UNHEALTHY_IMAGE=img").
//   - n8n: Config.ConfigureN8n sees each fresh fake n8n before it serves (SetReady(false)
//     for an instance that never gets ready, RESTLag, StartingUpPage, FailNext); N8n(slug)
//     returns the live one (Owner, SetupCalls, SetReady, FailNext).
//
// What it does not model: TLS (the ingress speaks plain HTTP on 127.0.0.1), DNS resolution
// (records live in the fake Cloudflare only; clients reach a host through its IngressURL
// with the instance's Host header), the fake n8n's memory of owners across a restart of
// the World itself (it lives in this process) beyond what it keeps in the data dir.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns/cloudflaretest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
	"github.com/n8n-provisioner/n8n-provisioner/scripts"
)

const (
	// Node is the Proxmox node every sandbox host VM lives on.
	Node = "pve"
	// DefaultBaseDomain is the base domain when Config.BaseDomain is empty; .test is
	// reserved (RFC 2606), so no sandbox name can ever resolve to a real site.
	DefaultBaseDomain = "n8n.sandbox.test"
	// ProxyNetwork is the docker network n8nctl attaches containers to in the sandbox.
	ProxyNetwork = "proxy"
	// EntryPoint is the Traefik entry point the ingress listens as; n8nctl's routers name it.
	EntryPoint = "websecure"

	// A host VM's size: a big box, so that a test's max_instances is what limits it unless
	// the test shrinks it (Proxmox.UpdateVM for memory, SetHostEnv with
	// FAKE_DISK_HOST_BYTES for the data disk).
	HostMemoryBytes = 256 << 30
	HostCPUs        = 32
	HostDiskBytes   = 4 << 40

	firstVMID = 101
	maxHosts  = 240 // one TEST-NET-3 address each, 203.0.113.10 and up
)

// Config configures a World.
type Config struct {
	// Dir is the root of all state: the scripts, and per host its data root, backup dir and
	// fake docker state. Required; created when missing.
	Dir string
	// BaseDomain is the domain instances live under; DefaultBaseDomain when empty.
	BaseDomain string
	// N8nReadyAfter is how long after a container's start its fake n8n answers 503 on
	// /healthz/readiness (real n8n: ~8 s on a fresh volume). 0 in tests, ~2 s in the demo.
	N8nReadyAfter time.Duration
	// AgentLatency delays the completion of every guest-agent command, as a slow host does.
	AgentLatency time.Duration
	// ConfigureN8n, when set, is called with each fresh fake n8n (a data dir's first start)
	// before it serves a request: set RESTLag or StartingUpPage, or call SetReady(false)
	// or FailNext there. It must not call back into the World.
	ConfigureN8n func(host, slug string, srv *n8ntest.Server)
	// Logger receives what the World does (never a secret); nil discards.
	Logger *slog.Logger
}

// Host is one host VM of the World, with what an operator registers for it.
type Host struct {
	Name       string
	Node       string
	VMID       int
	PublicIP   string // a TEST-NET-3 address, 203.0.113.x
	IngressURL string // http://127.0.0.1:port, the host's Traefik
}

// World is the running sandbox. Its exported fields are set by Start and are read-only.
type World struct {
	// Proxmox and Cloudflare are the fakes themselves, for knobs and inspection.
	Proxmox    *proxmoxtest.Server
	Cloudflare *cloudflaretest.Server

	ProxmoxURL         string // the API root, http://127.0.0.1:port/api2/json
	ProxmoxTokenID     string // user@realm!name
	ProxmoxTokenSecret string
	CloudflareURL      string // the API base, http://127.0.0.1:port/client/v4
	CloudflareToken    string
	CloudflareZoneID   string
	BaseDomain         string

	cfg        Config
	log        *slog.Logger
	dir        string
	n8nctlPath string
	dockerPath string
	egressPath string
	diskBin    string
	pveHTTP    *httpServer
	cfHTTP     *httpServer

	mu     sync.Mutex
	hosts  map[string]*host
	order  []string      // host names in the order they were added
	byVMID map[int]*host // every host is on Node
	closed bool
}

// Start builds the World under cfg.Dir and serves its fakes on 127.0.0.1 ports; ctx bounds
// the start-up only. Call Close when done. Errors: Invalid for a bad Config, Unavailable
// when a tool n8nctl needs (bash, jq, flock, ...) is not on PATH or a port cannot be had,
// Internal when the files cannot be written.
func Start(ctx context.Context, cfg Config) (*World, error) {
	if cfg.Dir == "" {
		return nil, apperr.New(apperr.Invalid, "sandbox: Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "sandbox: dir %q", cfg.Dir)
	}
	if cfg.BaseDomain == "" {
		cfg.BaseDomain = DefaultBaseDomain
	}
	cfg.BaseDomain = strings.ToLower(strings.TrimSuffix(cfg.BaseDomain, "."))
	if !domainRE.MatchString(cfg.BaseDomain) {
		return nil, apperr.New(apperr.Invalid, "sandbox: base domain %q is not a domain name", cfg.BaseDomain)
	}
	if cfg.N8nReadyAfter < 0 || cfg.AgentLatency < 0 {
		return nil, apperr.New(apperr.Invalid, "sandbox: durations must not be negative")
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	w := &World{
		cfg: cfg, log: log, dir: dir, BaseDomain: cfg.BaseDomain,
		hosts: map[string]*host{}, byVMID: map[int]*host{},
		n8nctlPath: filepath.Join(dir, "bin", "n8nctl"),
		dockerPath: filepath.Join(dir, "bin", "fake-docker"),
		egressPath: filepath.Join(dir, "bin", "fake-n8n-egress"),
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return nil, apperr.Wrap(apperr.Internal, err, "sandbox: create %s", dir)
	}
	for path, content := range map[string]string{w.n8nctlPath: scripts.N8nctl, w.dockerPath: scripts.FakeDocker, w.egressPath: fakeEgress} {
		if err := writeExecutable(path, content); err != nil {
			return nil, err
		}
	}
	if err := w.installFakeDisk(); err != nil {
		return nil, err
	}

	w.ProxmoxTokenID = "provisioner@pve!sandbox"
	w.ProxmoxTokenSecret = newUUID()
	w.CloudflareToken = randomHex(20)
	w.CloudflareZoneID = randomHex(16)
	w.Proxmox = &proxmoxtest.Server{
		TokenID: w.ProxmoxTokenID, TokenSecret: w.ProxmoxTokenSecret,
		ExecLatency: cfg.AgentLatency, Runner: w.run,
	}
	w.Cloudflare = &cloudflaretest.Server{Token: w.CloudflareToken, Zones: []string{w.CloudflareZoneID}}

	if w.pveHTTP, err = serve(ctx, w.Proxmox); err != nil {
		w.Close()
		return nil, err
	}
	if w.cfHTTP, err = serve(ctx, w.Cloudflare); err != nil {
		w.Close()
		return nil, err
	}
	w.ProxmoxURL = w.pveHTTP.url + "/api2/json"
	w.CloudflareURL = w.cfHTTP.url + "/client/v4"
	log.Info("sandbox started", "dir", dir, "proxmox_url", w.ProxmoxURL,
		"cloudflare_url", w.CloudflareURL, "base_domain", w.BaseDomain)
	return w, nil
}

var (
	domainRE   = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	hostNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// checkTools fails early, with a useful message, on a machine that cannot run n8nctl: the
// demo would otherwise fail at the first provision with an exit 127 deep in a job error.
func checkTools() error {
	var missing []string
	for _, tool := range []string{"bash", "jq", "flock", "sha256sum", "tar", "timeout", "realpath", "mktemp", "age", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return apperr.New(apperr.Unavailable, "sandbox: n8nctl and the fake docker need %s on PATH (jq and flock come in the jq and util-linux packages; age in Debian's age package, or scripts/install-tools.sh)", strings.Join(missing, ", "))
	}
	return nil
}

// writeExecutable replaces path with content, mode 0755, through a rename: a script still
// running from an earlier World keeps its old file instead of failing "text file busy".
func writeExecutable(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return apperr.Wrap(apperr.Internal, err, "sandbox: write %s", path)
	}
	_, err = tmp.WriteString(content)
	err = errors.Join(err, tmp.Chmod(0o755), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return apperr.Wrap(apperr.Internal, err, "sandbox: write %s", path)
	}
	return nil
}

// AddHost creates host VM name: a VM on Node with the next VMID and its guest agent up, its
// own data root, backup dir and fake docker state under Dir/hosts/name, and its ingress on
// a 127.0.0.1 port. Errors: Invalid for a name that is not a DNS label (or past 240 hosts),
// Conflict when the name is taken, Unavailable after Close or when no port can be had,
// Internal when the directories cannot be made.
func (w *World) AddHost(name string) (Host, error) {
	if !hostNameRE.MatchString(name) {
		return Host{}, apperr.New(apperr.Invalid, "sandbox: host name %q is not a DNS label", name)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return Host{}, apperr.New(apperr.Unavailable, "sandbox: closed")
	case w.hosts[name] != nil:
		return Host{}, apperr.New(apperr.Conflict, "sandbox: host %s exists", name)
	case len(w.hosts) >= maxHosts:
		return Host{}, apperr.New(apperr.Invalid, "sandbox: at most %d hosts", maxHosts)
	}
	n := len(w.order)
	root := filepath.Join(w.dir, "hosts", name)
	h := &host{
		world:       w,
		dir:         root,
		dataRoot:    filepath.Join(root, "data"),
		backupDir:   filepath.Join(root, "backups"),
		dockerState: filepath.Join(root, "docker"),
		cache:       map[string]cachedContainer{},
		procs:       map[string]*n8nProc{},
		warned:      map[string]bool{},
	}
	for _, d := range []string{h.dataRoot, h.backupDir, h.dockerState} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return Host{}, apperr.Wrap(apperr.Internal, err, "sandbox: create %s", d)
		}
	}
	h.info = Host{Name: name, Node: Node, VMID: firstVMID + n, PublicIP: fmt.Sprintf("203.0.113.%d", 10+n)}
	h.ingress = &traefiktest.Ingress{EntryPoint: EntryPoint, Backends: h.backends}
	srv, err := serve(context.Background(), h.ingress)
	if err != nil {
		return Host{}, err
	}
	h.ingressHTTP = srv
	h.info.IngressURL = srv.url
	w.Proxmox.AddVM(Node, h.info.VMID)
	w.Proxmox.UpdateVM(Node, h.info.VMID, func(vm *proxmoxtest.VM) {
		vm.Name, vm.MemoryBytes, vm.CPUs = name, HostMemoryBytes, HostCPUs
	})
	w.hosts[name] = h
	w.order = append(w.order, name)
	w.byVMID[h.info.VMID] = h
	w.log.Info("sandbox host added", "host", name, "node", Node, "vmid", h.info.VMID,
		"public_ip", h.info.PublicIP, "ingress_url", h.info.IngressURL)
	return h.info, nil
}

// Host returns host name and whether it exists.
func (w *World) Host(name string) (Host, bool) {
	h := w.host(name)
	if h == nil {
		return Host{}, false
	}
	return h.info, true
}

// Hosts returns every host, in the order they were added.
func (w *World) Hosts() []Host {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Host, 0, len(w.order))
	for _, n := range w.order {
		out = append(out, w.hosts[n].info)
	}
	return out
}

// FQDN returns the public name of instance slug: slug.BaseDomain.
func (w *World) FQDN(slug string) string { return slug + "." + w.BaseDomain }

// installFakeDisk puts the fake disk tools first on the hosts' PATH (diskBin): a fake
// host is a directory of this machine, where loop-mounting images would need root.
func (w *World) installFakeDisk() error {
	dir := filepath.Join(w.dir, "bin", "disk")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return apperr.Wrap(apperr.Internal, err, "sandbox: create %s", dir)
	}
	for _, tool := range scripts.FakeDiskTools {
		if err := writeExecutable(filepath.Join(dir, tool), scripts.FakeDisk); err != nil {
			return err
		}
	}
	w.diskBin = dir
	return nil
}

// SetHostEnv sets extra environment for every command the guest agent runs on host name
// from now on (replacing what an earlier call set): the fake docker's knobs
// FAKE_DOCKER_FAIL=sub[,sub], FAKE_DOCKER_IGNORE_LIMITS=1, FAKE_DOCKER_UNHEALTHY_IMAGE=img,
// or n8nctl's N8N_LOCK_TIMEOUT. No arguments clears them. Errors: NotFound for an unknown
// host, Invalid for an entry without "=".
func (w *World) SetHostEnv(name string, env ...string) error {
	h := w.host(name)
	if h == nil {
		return apperr.New(apperr.NotFound, "sandbox: no host %s", name)
	}
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return apperr.New(apperr.Invalid, "sandbox: environment entry %q is not KEY=value", kv)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.env = slices.Clone(env)
	return nil
}

// Env returns the provisioner's environment for this World, as KEY=value entries:
// PROVISIONER_PROXMOX_URL, _TOKEN_ID, _TOKEN_SECRET, PROVISIONER_CLOUDFLARE_API_URL,
// _API_TOKEN, _ZONE_ID and PROVISIONER_BASE_DOMAIN. It holds the fakes' tokens: pass it to
// a child process's environment, never to a log.
func (w *World) Env() []string {
	return []string{
		"PROVISIONER_PROXMOX_URL=" + w.ProxmoxURL,
		"PROVISIONER_PROXMOX_TOKEN_ID=" + w.ProxmoxTokenID,
		"PROVISIONER_PROXMOX_TOKEN_SECRET=" + w.ProxmoxTokenSecret,
		"PROVISIONER_CLOUDFLARE_API_URL=" + w.CloudflareURL,
		"PROVISIONER_CLOUDFLARE_API_TOKEN=" + w.CloudflareToken,
		"PROVISIONER_CLOUDFLARE_ZONE_ID=" + w.CloudflareZoneID,
		"PROVISIONER_BASE_DOMAIN=" + w.BaseDomain,
	}
}

// Close stops every server of the World, cancels the guest-agent commands still running
// and waits for them. The files under Dir stay. It is safe to call more than once.
func (w *World) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	hs := make([]*host, 0, len(w.hosts))
	for _, n := range w.order {
		hs = append(hs, w.hosts[n])
	}
	w.mu.Unlock()

	w.pveHTTP.close()
	if w.Proxmox != nil {
		w.Proxmox.Close()
	}
	w.cfHTTP.close()
	for _, h := range hs {
		h.close()
	}
	w.log.Info("sandbox closed")
}

func (w *World) host(name string) *host {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hosts[name]
}

// run plays the guest of VM vmid: the real n8nctl (at its path inside the VM) with the
// host's environment, its docker being the fake one.
func (w *World) run(ctx context.Context, node string, vmid int, argv []string, stdin []byte) (int, []byte, []byte) {
	w.mu.Lock()
	h := w.byVMID[vmid]
	w.mu.Unlock()
	if h == nil || node != Node {
		return 127, nil, fmt.Appendf(nil, "sandbox: no host VM %s/%d\n", node, vmid)
	}
	return proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{
		Paths: map[string]string{hosts.AgentDefaultPath: w.n8nctlPath},
		Env:   h.runEnv(),
		Dir:   h.dir,
	})(ctx, node, vmid, argv, stdin)
}

// httpServer is one of the World's listeners.
type httpServer struct {
	url  string
	addr string
	srv  *http.Server
	done chan struct{}
}

// serve serves h on a fresh 127.0.0.1 port until close.
func serve(ctx context.Context, h http.Handler) (*httpServer, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "sandbox: listen on 127.0.0.1")
	}
	s := &httpServer{
		addr: ln.Addr().String(),
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	s.url = "http://" + s.addr
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // ends with ErrServerClosed on close
	}()
	return s, nil
}

func (s *httpServer) close() {
	if s == nil {
		return
	}
	_ = s.srv.Close()
	<-s.done
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

func newUUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
