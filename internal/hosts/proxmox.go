package hosts

// This file reaches the Proxmox VE API through github.com/luthermonson/go-proxmox (v0.10.0):
// it carries PVE's full error message in a typed *proxmox.APIError (the messages that tell
// a retryable outage, "QEMU guest agent is not running", from a misconfigured host,
// "Configuration file ... does not exist") and types exec-status's `signal` as an int.
// On top of it we keep what the library does not do for us: the exec-status poll loop
// (tolerant of a few transient failures, bounded by ExecTimeout), the checks on stdin
// before it is sent, and the repair of PVE's double-encoded output.
//
// Three of the library's features stay off on purpose:
//   - its logger is replaced by one that drops everything: at debug level it prints request
//     and response bodies, and agent/exec's body carries the secrets we send on stdin;
//   - WithRetry is never set: it retries POSTs, and a retried agent/exec runs n8nctl twice;
//   - Client.Version is never called: it writes a field of the shared client without a
//     lock, so we read /version into a value of our own.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

const (
	proxmoxDefaultPollInterval = 500 * time.Millisecond
	proxmoxDefaultExecTimeout  = 10 * time.Minute // a first provision pulls the n8n image
	proxmoxDefaultHTTPTimeout  = 30 * time.Second

	// ProxmoxMaxInputData is the longest input-data (stdin) PVE accepts for agent/exec.
	ProxmoxMaxInputData = 64 * 1024

	// A poll of exec-status may fail transiently (a pveproxy worker restarting, a 596 while
	// proxying to another node). Abandoning the poll loses the command's result, so a few
	// consecutive failures are tolerated before giving up.
	proxmoxMaxPollFailures = 3
)

// ProxmoxConfig configures a Proxmox VE API client.
type ProxmoxConfig struct {
	// BaseURL is the API root, e.g. https://pve.example.net:8006/api2/json.
	BaseURL string
	// TokenID is the API token's full id, user@realm!name; TokenSecret is its UUID secret.
	TokenID     string
	TokenSecret string
	// HTTPClient carries TLS settings (see ProxmoxHTTPClient); nil means a private client
	// with a 30 s timeout.
	HTTPClient *http.Client
	// PollInterval is the pause between exec-status polls (default 500 ms).
	PollInterval time.Duration
	// ExecTimeout bounds one Exec from start to exit (default 10 min).
	ExecTimeout time.Duration
}

// Proxmox is a client for the parts of the Proxmox VE API the provisioner needs: version,
// nodes, a VM's status and the QEMU guest agent (ping, exec, exec-status). It is safe for
// concurrent use.
type Proxmox struct {
	api     *proxmox.Client
	tokenID string
	poll    time.Duration
	timeout time.Duration
}

// NewProxmox returns a client for cfg, or an apperr.Invalid error naming the bad field.
func NewProxmox(cfg ProxmoxConfig) (*Proxmox, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, apperr.New(apperr.Invalid, "proxmox base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	user, name, ok := strings.Cut(cfg.TokenID, "!")
	if !ok || !strings.Contains(user, "@") || name == "" || strings.ContainsAny(cfg.TokenID, "= \t\r\n") {
		return nil, apperr.New(apperr.Invalid, "proxmox token id %q is not of the form user@realm!tokenname", cfg.TokenID)
	}
	if cfg.TokenSecret == "" || strings.ContainsAny(cfg.TokenSecret, " \t\r\n") {
		return nil, apperr.New(apperr.Invalid, "proxmox token secret is empty or contains whitespace")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: proxmoxDefaultHTTPTimeout}
	}
	p := &Proxmox{
		api: proxmox.NewClient(strings.TrimRight(cfg.BaseURL, "/"),
			proxmox.WithHTTPClient(hc),
			proxmox.WithAPIToken(cfg.TokenID, cfg.TokenSecret), // PVEAPIToken=USER@REALM!TOKENID=UUID
			proxmox.WithLogger(silentLogger{}),
			proxmox.WithUserAgent("n8n-provisioner"),
		),
		tokenID: cfg.TokenID,
		poll:    cfg.PollInterval,
		timeout: cfg.ExecTimeout,
	}
	if p.poll <= 0 {
		p.poll = proxmoxDefaultPollInterval
	}
	if p.timeout <= 0 {
		p.timeout = proxmoxDefaultExecTimeout
	}
	return p, nil
}

// silentLogger drops go-proxmox's log lines: at debug level they hold request and response
// bodies (stdin secrets), and its errors reach us as returned errors anyway.
type silentLogger struct{}

func (silentLogger) Debugf(string, ...any) {}
func (silentLogger) Errorf(string, ...any) {}
func (silentLogger) Infof(string, ...any)  {}
func (silentLogger) Warnf(string, ...any)  {}

// ProxmoxHTTPClient returns an HTTP client for a Proxmox VE API endpoint. caFile, when set,
// names a PEM file of CA certificates trusted in addition to the system roots (PVE's own
// /etc/pve/pve-root-ca.pem); insecureTLS skips certificate verification (lab use only).
// Setting both, or a CA file that cannot be read or holds no certificate, is apperr.Invalid
// with the file named.
func ProxmoxHTTPClient(caFile string, insecureTLS bool) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case caFile != "" && insecureTLS:
		return nil, apperr.New(apperr.Invalid, "proxmox: set either a CA file (%s) or insecure TLS, not both", caFile)
	case insecureTLS:
		tlsConfig.InsecureSkipVerify = true //nolint:gosec // explicit operator opt-in
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, apperr.Wrap(apperr.Invalid, err, "proxmox CA file %s cannot be read", caFile)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, apperr.New(apperr.Invalid, "proxmox CA file %s holds no PEM certificate", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	return &http.Client{Transport: transport, Timeout: proxmoxDefaultHTTPTimeout}, nil
}

// ProxmoxVersion is the answer of GET /version.
type ProxmoxVersion struct {
	Version string // e.g. 8.2.4
	Release string // e.g. 8.2
	RepoID  string
}

// ProxmoxNode is one row of GET /nodes.
type ProxmoxNode struct {
	Node   string
	Status string // online, offline, unknown
}

// ProxmoxVMStatus is the part of GET nodes/{node}/qemu/{vmid}/status/current we use.
type ProxmoxVMStatus struct {
	Name         string
	Status       string // running or stopped
	QMPStatus    string // running, paused, prelaunch, ...
	Running      bool
	AgentEnabled bool // the VM's config enables the QEMU guest agent
	// The VM's resources as PVE allocates them: memory (maxmem), virtual CPUs and the size
	// of its boot disk (maxdisk), in bytes.
	MemoryBytes uint64
	CPUs        int
	DiskBytes   uint64
}

// ExecResult is how a command run through the guest agent ended.
type ExecResult struct {
	PID             int    // the guest-side pid qemu-ga reported
	ExitCode        int    // valid when Signal is 0
	Signal          int    // non-zero when the process was killed by a signal
	Stdout          []byte // captured stdout (qemu-ga keeps up to 16 MiB)
	Stderr          []byte
	StdoutTruncated bool
	StderrTruncated bool
}

// Version returns the PVE version. Errors: Unauthorized, Forbidden, Unavailable.
func (p *Proxmox) Version(ctx context.Context) (ProxmoxVersion, error) {
	var v proxmox.Version // not Client.Version: see the header
	if err := p.api.Get(ctx, "/version", &v); err != nil {
		return ProxmoxVersion{}, p.classify(err, http.MethodGet, "version")
	}
	return ProxmoxVersion{Version: v.Version, Release: v.Release, RepoID: v.RepoID}, nil
}

// Nodes returns the cluster's nodes. Errors: Unauthorized, Forbidden, Unavailable.
func (p *Proxmox) Nodes(ctx context.Context) ([]ProxmoxNode, error) {
	list, err := p.api.Nodes(ctx)
	if err != nil {
		return nil, p.classify(err, http.MethodGet, "nodes")
	}
	out := make([]ProxmoxNode, 0, len(list))
	for _, n := range list {
		if n != nil {
			out = append(out, ProxmoxNode{Node: n.Node, Status: n.Status})
		}
	}
	return out, nil
}

// VMStatus returns whether VM vmid on node runs and has the guest agent enabled, and the
// resources PVE gives it. Errors: NotFound (no such VM or node), Unauthorized, Forbidden,
// Unavailable.
func (p *Proxmox) VMStatus(ctx context.Context, node string, vmid int) (ProxmoxVMStatus, error) {
	path, err := proxmoxVMPath(node, vmid, "status/current")
	if err != nil {
		return ProxmoxVMStatus{}, err
	}
	var vm proxmox.VirtualMachine
	if err := p.api.Get(ctx, "/"+path, &vm); err != nil {
		return ProxmoxVMStatus{}, p.classify(err, http.MethodGet, path)
	}
	return ProxmoxVMStatus{
		Name:         vm.Name,
		Status:       vm.Status,
		QMPStatus:    vm.QMPStatus,
		Running:      vm.Status == "running",
		AgentEnabled: bool(vm.Agent),
		MemoryBytes:  vm.MaxMem,
		CPUs:         vm.CPUs,
		DiskBytes:    vm.MaxDisk,
	}, nil
}

// Ping checks that the guest agent of VM vmid answers. Errors: NotFound, Unauthorized,
// Forbidden, Unavailable (VM stopped, agent not configured or not running).
func (p *Proxmox) Ping(ctx context.Context, node string, vmid int) error {
	vm, path, err := p.vm(node, vmid, "agent/ping")
	if err != nil {
		return err
	}
	return p.classify(vm.AgentPing(ctx), http.MethodPost, path)
}

// Exec runs argv in VM vmid through the guest agent with stdin as its standard input and
// waits for it to exit, polling exec-status every PollInterval for at most ExecTimeout.
// A non-zero exit is not an error: it is in the result. stdin travels only in the request
// body's input-data, so secrets belong there and never in argv; it must be ASCII (see
// below) and at most ProxmoxMaxInputData bytes.
//
// Errors: Invalid (empty argv, stdin too long or not ASCII), NotFound, Unauthorized,
// Forbidden, Unavailable (agent not running, PVE down, or the command outlived
// ExecTimeout: it may still be running in the guest, which is why n8nctl verbs are
// idempotent).
func (p *Proxmox) Exec(ctx context.Context, node string, vmid int, argv []string, stdin []byte) (ExecResult, error) {
	if err := checkExec(argv, stdin); err != nil {
		return ExecResult{}, err
	}
	vm, execPath, err := p.vm(node, vmid, "agent/exec")
	if err != nil {
		return ExecResult{}, err
	}
	statusPath, _ := proxmoxVMPath(node, vmid, "agent/exec-status")

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	pid, err := vm.AgentExec(ctx, argv, string(stdin))
	if err != nil {
		return ExecResult{}, p.execTimeout(ctx, p.classify(err, http.MethodPost, execPath), argv[0], node, vmid)
	}
	if pid <= 0 {
		return ExecResult{}, apperr.New(apperr.Internal, "proxmox exec on %s/%d: no pid in the answer", node, vmid)
	}

	var (
		timer    *time.Timer
		failures int
	)
	for {
		st, err := vm.AgentExecStatus(ctx, pid)
		err = p.classify(err, http.MethodGet, statusPath)
		switch {
		case err == nil && st != nil && st.Exited != 0:
			return execResult(pid, st), nil
		case err == nil:
			failures = 0
		case ctx.Err() == nil && apperr.Is(err, apperr.Unavailable) && !proxmoxLostPID(err) && failures+1 < proxmoxMaxPollFailures:
			failures++
		default:
			return ExecResult{}, p.execTimeout(ctx, err, argv[0], node, vmid)
		}
		if timer == nil {
			timer = time.NewTimer(p.poll)
			defer timer.Stop()
		} else {
			timer.Reset(p.poll)
		}
		select {
		case <-ctx.Done():
			return ExecResult{}, p.execTimeout(ctx, ctx.Err(), argv[0], node, vmid)
		case <-timer.C:
		}
	}
}

// checkExec refuses a command PVE would reject or corrupt, before anything is sent.
func checkExec(argv []string, stdin []byte) error {
	if len(argv) == 0 || argv[0] == "" {
		return apperr.New(apperr.Invalid, "proxmox exec: empty command")
	}
	if len(stdin) > ProxmoxMaxInputData {
		return apperr.New(apperr.Invalid, "proxmox exec: stdin is %d bytes, PVE accepts at most %d", len(stdin), ProxmoxMaxInputData)
	}
	// PVE decodes the JSON body into Perl characters and base64-encodes input-data without
	// encoding it back to UTF-8, so a non-ASCII byte would reach the guest altered (or fail
	// with "Wide character"). Refuse rather than corrupt a secret silently.
	for i, b := range stdin {
		if b >= utf8.RuneSelf {
			return apperr.New(apperr.Invalid, "proxmox exec: stdin has a non-ASCII byte at offset %d", i)
		}
	}
	return nil
}

// vm returns go-proxmox's handle on VM vmid (no request is made) and the API path of
// endpoint, for error messages.
func (p *Proxmox) vm(node string, vmid int, endpoint string) (*proxmox.VirtualMachine, string, error) {
	path, err := proxmoxVMPath(node, vmid, endpoint)
	if err != nil {
		return nil, "", err
	}
	return p.api.NodeRef(node).VirtualMachineRef(vmid), path, nil
}

// execTimeout turns our own ExecTimeout expiring into a clear Unavailable error and leaves
// every other error (including the caller's cancellation) as it is.
func (p *Proxmox) execTimeout(ctx context.Context, err error, program, node string, vmid int) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return apperr.Wrap(apperr.Unavailable, err, "proxmox exec of %s on %s/%d did not finish within %s", program, node, vmid, p.timeout)
	}
	if ctx.Err() != nil {
		return apperr.Wrap(apperr.Unavailable, ctx.Err(), "proxmox exec of %s on %s/%d interrupted", program, node, vmid)
	}
	return err
}

// proxmoxLostPID reports whether qemu-ga no longer knows the pid: its status was already
// collected (an answer lost in transit) or the agent restarted. Polling again cannot help.
func proxmoxLostPID(err error) bool {
	e, ok := proxmox.AsAPIError(err)
	return ok && strings.Contains(e.Message, "Invalid parameter 'pid'")
}

// execResult converts exec-status's answer. PVE returns out-data/err-data already
// base64-decoded.
func execResult(pid int, s *proxmox.AgentExecStatus) ExecResult {
	return ExecResult{
		PID:             pid,
		ExitCode:        s.ExitCode,
		Signal:          s.Signal,
		Stdout:          pveOutputBytes(s.OutData),
		Stderr:          pveOutputBytes(s.ErrData),
		StdoutTruncated: bool(s.OutTruncated),
		StderrTruncated: bool(s.ErrTruncated),
	}
}

// pveOutputBytes recovers the bytes a process wrote. PVE base64-decodes qemu-ga's output
// into a Perl byte string and serialises it with to_json(utf8 => 1), which encodes each
// byte as a character: UTF-8 output arrives double-encoded ("é" as "Ã©"). When every
// character fits in a byte and those bytes form valid UTF-8, they are the original output;
// otherwise the text is taken as it is (already proper UTF-8, or not from a PVE we know).
func pveOutputBytes(s string) []byte {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return []byte(s)
		}
		b = append(b, byte(r))
	}
	if !utf8.Valid(b) {
		return []byte(s)
	}
	return b
}

// classify turns a go-proxmox error into our error kinds, keeping PVE's message in the
// public text and the *proxmox.APIError as the cause (never the request's credentials:
// the library does not put the Authorization header in its errors).
func (p *Proxmox) classify(err error, method, path string) error {
	if err == nil {
		return nil
	}
	apiErr, ok := proxmox.AsAPIError(err)
	if !ok {
		var urlErr *url.Error
		var netErr net.Error
		if errors.As(err, &urlErr) || errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) ||
			errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			// *url.Error names the URL, which carries no credentials.
			return apperr.Wrap(apperr.Unavailable, err, "proxmox %s %s unreachable", method, path)
		}
		// Not an HTTP error: the answer did not decode (not PVE, or a PVE we do not know).
		return apperr.Wrap(apperr.Internal, err, "proxmox %s %s: unexpected answer", method, path)
	}
	msg := fmt.Sprintf("proxmox %s %s: HTTP %d", method, path, apiErr.StatusCode)
	if apiErr.Message != "" {
		msg += ": " + apiErr.Message
	}
	for _, k := range slices.Sorted(maps.Keys(apiErr.Errors)) {
		msg += fmt.Sprintf(" (%s: %s)", k, apiErr.Errors[k])
	}
	switch code := apiErr.StatusCode; {
	case code == http.StatusUnauthorized:
		return apperr.Wrap(apperr.Unauthorized, err, "proxmox rejected API token %s", p.tokenID)
	case code == http.StatusForbidden:
		return apperr.Wrap(apperr.Forbidden, err, "%s", msg)
	case proxmox.IsNotFound(err) || proxmoxUnknownNode(apiErr.Message):
		return apperr.Wrap(apperr.NotFound, err, "%s", msg)
	case code == http.StatusBadRequest:
		return apperr.Wrap(apperr.Invalid, err, "%s", msg)
	case code >= 500, code == http.StatusTooManyRequests, code == http.StatusRequestTimeout:
		// Includes "QEMU guest agent is not running", "VM 100 is not running",
		// "No QEMU guest agent configured" and pveproxy's 595/596 (the target node is
		// unreachable, proxmox.IsNodeUnreachable): the host may come back, so these retry.
		return apperr.Wrap(apperr.Unavailable, err, "%s", msg)
	default:
		return apperr.Wrap(apperr.Invalid, err, "%s", msg)
	}
}

// proxmoxUnknownNode recognises PVE's answer when it proxies to a node that does not exist,
// which go-proxmox's not-found patterns do not cover.
func proxmoxUnknownNode(msg string) bool {
	return strings.HasPrefix(msg, "hostname lookup")
}

func proxmoxVMPath(node string, vmid int, rest string) (string, error) {
	if node == "" || strings.ContainsAny(node, "/?#% ") || !utf8.ValidString(node) {
		return "", apperr.New(apperr.Invalid, "proxmox node name %q is not valid", node)
	}
	if vmid < 100 || vmid > 999999999 {
		return "", apperr.New(apperr.Invalid, "proxmox vmid %d is out of range (100-999999999)", vmid)
	}
	return fmt.Sprintf("nodes/%s/qemu/%d/%s", node, vmid, rest), nil
}

// proxmoxExcerpt returns at most n bytes of b as text, cut on a rune boundary, for error messages.
func proxmoxExcerpt(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) <= n {
		return strings.ToValidUTF8(s, "?")
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "?") + "…"
}

// AgentNotRunning reports whether err is PVE saying the VM's QEMU guest agent does not
// answer: a VM that is booting, or whose agent restarts, is on its way back, so a caller
// waits for it rather than counting a failure.
func AgentNotRunning(err error) bool {
	e, ok := proxmox.AsAPIError(err)
	return ok && strings.Contains(e.Message, "guest agent is not running")
}
