package hosts

// This file speaks the Proxmox VE HTTP API directly with net/http rather than through
// github.com/luthermonson/go-proxmox: its AgentExec path turns every HTTP 500 into the bare
// status line (handleResponse returns errors.New(res.Status)), so "QEMU guest agent is not
// running" and "Configuration file ... does not exist" would be lost, and its AgentExecStatus
// types exec-status's integer `signal` as a bool. We need exactly those details to tell a
// retryable outage from a misconfigured host, and the four endpoints we use are small.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

const (
	proxmoxDefaultPollInterval = 500 * time.Millisecond
	proxmoxDefaultExecTimeout  = 10 * time.Minute // a first provision pulls the n8n image
	proxmoxDefaultHTTPTimeout  = 30 * time.Second

	// ProxmoxMaxInputData is the longest input-data (stdin) PVE accepts for agent/exec.
	ProxmoxMaxInputData = 64 * 1024

	// exec-status answers carry up to 16 MiB of stdout and of stderr (qemu-ga's capture
	// limit), JSON-escaped; anything beyond this is not a PVE answer.
	proxmoxMaxResponse = 80 << 20

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
	base    string // without a trailing slash
	tokenID string
	auth    string // the Authorization header value; holds the secret, never printed
	http    *http.Client
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
	p := &Proxmox{
		base:    strings.TrimRight(cfg.BaseURL, "/"),
		tokenID: cfg.TokenID,
		// PVE's format: "PVEAPIToken=USER@REALM!TOKENID=UUID".
		auth:    "PVEAPIToken=" + cfg.TokenID + "=" + cfg.TokenSecret,
		http:    cfg.HTTPClient,
		poll:    cfg.PollInterval,
		timeout: cfg.ExecTimeout,
	}
	if p.http == nil {
		p.http = &http.Client{Timeout: proxmoxDefaultHTTPTimeout}
	}
	if p.poll <= 0 {
		p.poll = proxmoxDefaultPollInterval
	}
	if p.timeout <= 0 {
		p.timeout = proxmoxDefaultExecTimeout
	}
	return p, nil
}

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
	Version string `json:"version"` // e.g. 8.2.4
	Release string `json:"release"` // e.g. 8.2
	RepoID  string `json:"repoid"`
}

// ProxmoxNode is one row of GET /nodes.
type ProxmoxNode struct {
	Node   string `json:"node"`
	Status string `json:"status"` // online, offline, unknown
}

// ProxmoxVMStatus is the part of GET nodes/{node}/qemu/{vmid}/status/current we use.
type ProxmoxVMStatus struct {
	Name         string
	Status       string // running or stopped
	QMPStatus    string // running, paused, prelaunch, ...
	Running      bool
	AgentEnabled bool // the VM's config enables the QEMU guest agent
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

// ProxmoxAPIError is the cause inside the apperr errors this client returns for an HTTP
// error answer: the status and the text PVE sent, never the request's credentials.
type ProxmoxAPIError struct {
	Method  string
	Path    string // relative to the base URL
	Status  int
	Message string            // PVE's message, trailing newline removed
	Errors  map[string]string // per-parameter errors of a 400
}

func (e *ProxmoxAPIError) Error() string {
	msg := fmt.Sprintf("proxmox %s %s: HTTP %d", e.Method, e.Path, e.Status)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if len(e.Errors) > 0 {
		keys := make([]string, 0, len(e.Errors))
		for k := range e.Errors {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, k+": "+strings.TrimSpace(e.Errors[k]))
		}
		msg += " (" + strings.Join(parts, "; ") + ")"
	}
	return msg
}

// Version returns the PVE version. Errors: Unauthorized, Forbidden, Unavailable.
func (p *Proxmox) Version(ctx context.Context) (ProxmoxVersion, error) {
	var v ProxmoxVersion
	err := p.do(ctx, http.MethodGet, "version", nil, nil, &v)
	return v, err
}

// Nodes returns the cluster's nodes. Errors: Unauthorized, Forbidden, Unavailable.
func (p *Proxmox) Nodes(ctx context.Context) ([]ProxmoxNode, error) {
	var nodes []ProxmoxNode
	err := p.do(ctx, http.MethodGet, "nodes", nil, nil, &nodes)
	return nodes, err
}

// VMStatus returns whether VM vmid on node runs and has the guest agent enabled.
// Errors: NotFound (no such VM or node), Unauthorized, Forbidden, Unavailable.
func (p *Proxmox) VMStatus(ctx context.Context, node string, vmid int) (ProxmoxVMStatus, error) {
	var raw struct {
		Name      string   `json:"name"`
		Status    string   `json:"status"`
		QMPStatus string   `json:"qmpstatus"`
		Agent     pveFlag  `json:"agent"`
		VMID      pveInt64 `json:"vmid"`
	}
	path, err := proxmoxVMPath(node, vmid, "status/current")
	if err != nil {
		return ProxmoxVMStatus{}, err
	}
	if err := p.do(ctx, http.MethodGet, path, nil, nil, &raw); err != nil {
		return ProxmoxVMStatus{}, err
	}
	return ProxmoxVMStatus{
		Name:         raw.Name,
		Status:       raw.Status,
		QMPStatus:    raw.QMPStatus,
		Running:      raw.Status == "running",
		AgentEnabled: bool(raw.Agent),
	}, nil
}

// Ping checks that the guest agent of VM vmid answers. Errors: NotFound, Unauthorized,
// Forbidden, Unavailable (VM stopped, agent not configured or not running).
func (p *Proxmox) Ping(ctx context.Context, node string, vmid int) error {
	path, err := proxmoxVMPath(node, vmid, "agent/ping")
	if err != nil {
		return err
	}
	return p.do(ctx, http.MethodPost, path, nil, struct{}{}, nil)
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
	if len(argv) == 0 || argv[0] == "" {
		return ExecResult{}, apperr.New(apperr.Invalid, "proxmox exec: empty command")
	}
	if len(stdin) > ProxmoxMaxInputData {
		return ExecResult{}, apperr.New(apperr.Invalid, "proxmox exec: stdin is %d bytes, PVE accepts at most %d", len(stdin), ProxmoxMaxInputData)
	}
	// PVE decodes the JSON body into Perl characters and base64-encodes input-data without
	// encoding it back to UTF-8, so a non-ASCII byte would reach the guest altered (or fail
	// with "Wide character"). Refuse rather than corrupt a secret silently.
	for i, b := range stdin {
		if b >= utf8.RuneSelf {
			return ExecResult{}, apperr.New(apperr.Invalid, "proxmox exec: stdin has a non-ASCII byte at offset %d", i)
		}
	}
	execPath, err := proxmoxVMPath(node, vmid, "agent/exec")
	if err != nil {
		return ExecResult{}, err
	}
	statusPath, _ := proxmoxVMPath(node, vmid, "agent/exec-status")

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	body := struct {
		Command   []string `json:"command"`
		InputData string   `json:"input-data,omitempty"`
	}{Command: argv, InputData: string(stdin)}
	var started struct {
		PID pveInt64 `json:"pid"`
	}
	if err := p.do(ctx, http.MethodPost, execPath, nil, body, &started); err != nil {
		return ExecResult{}, p.execTimeout(ctx, err, argv[0], node, vmid)
	}
	if started.PID <= 0 {
		return ExecResult{}, apperr.New(apperr.Internal, "proxmox exec on %s/%d: no pid in the answer", node, vmid)
	}
	pid := int(started.PID)
	query := url.Values{"pid": {strconv.Itoa(pid)}}

	var (
		timer    *time.Timer
		failures int
	)
	for {
		var st proxmoxExecStatus
		err := p.do(ctx, http.MethodGet, statusPath, query, nil, &st)
		switch {
		case err == nil && bool(st.Exited):
			return st.result(pid), nil
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
	var apiErr *ProxmoxAPIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Message, "Invalid parameter 'pid'")
}

// proxmoxExecStatus is exec-status's answer. PVE turns qemu-ga's JSON booleans into 0/1 and
// returns out-data/err-data already base64-decoded.
type proxmoxExecStatus struct {
	Exited       pveFlag  `json:"exited"`
	ExitCode     pveInt64 `json:"exitcode"`
	Signal       pveInt64 `json:"signal"`
	OutData      string   `json:"out-data"`
	ErrData      string   `json:"err-data"`
	OutTruncated pveFlag  `json:"out-truncated"`
	ErrTruncated pveFlag  `json:"err-truncated"`
}

func (s proxmoxExecStatus) result(pid int) ExecResult {
	return ExecResult{
		PID:             pid,
		ExitCode:        int(s.ExitCode),
		Signal:          int(s.Signal),
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

// do sends one API request and decodes the "data" member of the answer into out (when out
// is non-nil). body, when non-nil, is sent as JSON.
func (p *Proxmox) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	target := p.base + "/" + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return apperr.Wrap(apperr.Internal, err, "proxmox %s %s: encode body", method, path)
		}
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, reader)
	if err != nil {
		return apperr.Wrap(apperr.Internal, err, "proxmox %s %s: build request", method, path)
	}
	req.Header.Set("Authorization", p.auth)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		// *url.Error names the URL, which carries no credentials; the header is not printed.
		return apperr.Wrap(apperr.Unavailable, err, "proxmox %s %s unreachable", method, path)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, proxmoxMaxResponse))
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "proxmox %s %s: read answer", method, path)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return p.apiError(method, path, resp, raw)
	}
	if out == nil {
		return nil
	}
	var envelope struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &envelope); err != nil {
		return apperr.Wrap(apperr.Internal, err, "proxmox %s %s: answer is not JSON: %s", method, path, proxmoxExcerpt(raw, 200))
	}
	if len(envelope.Data) == 0 || string(envelope.Data) == "null" {
		return apperr.New(apperr.Internal, "proxmox %s %s: answer has no data", method, path)
	}
	if err := json.Unmarshal(envelope.Data, out); err != nil {
		return apperr.Wrap(apperr.Internal, err, "proxmox %s %s: unexpected answer: %s", method, path, proxmoxExcerpt(envelope.Data, 200))
	}
	return nil
}

// apiError classifies an HTTP error answer. PVE puts the reason in the JSON body's
// "message" (format json) and in the status line; a 400 adds per-parameter "errors".
func (p *Proxmox) apiError(method, path string, resp *http.Response, raw []byte) error {
	e := &ProxmoxAPIError{Method: method, Path: path, Status: resp.StatusCode}
	var body struct {
		Message string            `json:"message"`
		Errors  map[string]string `json:"errors"`
	}
	if json.Unmarshal(raw, &body) == nil {
		e.Message = strings.TrimSpace(body.Message)
		e.Errors = body.Errors
	}
	if e.Message == "" {
		// The status line carries PVE's reason (e.g. "401 invalid token value!"); Go
		// servers send the standard text instead.
		reason := strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
		if reason != http.StatusText(resp.StatusCode) {
			e.Message = reason
		}
	}
	msg := e.Error()
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized:
		return apperr.Wrap(apperr.Unauthorized, e, "proxmox rejected API token %s", p.tokenID)
	case code == http.StatusForbidden:
		return apperr.Wrap(apperr.Forbidden, e, "%s", msg)
	case code == http.StatusNotFound:
		return apperr.Wrap(apperr.NotFound, e, "%s", msg)
	case code == http.StatusBadRequest:
		return apperr.Wrap(apperr.Invalid, e, "%s", msg)
	case code >= 500 && proxmoxIsNotFound(e.Message):
		return apperr.Wrap(apperr.NotFound, e, "%s", msg)
	case code >= 500, code == http.StatusTooManyRequests, code == http.StatusRequestTimeout:
		// Includes "QEMU guest agent is not running", "VM 100 is not running",
		// "No QEMU guest agent configured" and PVE's 595/596 proxy errors: the host may
		// come back, so these retry.
		return apperr.Wrap(apperr.Unavailable, e, "%s", msg)
	default:
		return apperr.Wrap(apperr.Invalid, e, "%s", msg)
	}
}

// proxmoxIsNotFound recognises PVE's 500 answers for a VM or node that does not exist:
// PVE::QemuConfig->load_config dies with "Configuration file 'nodes/N/qemu-server/V.conf'
// does not exist", and proxying to an unknown node fails with "hostname lookup 'N' failed".
func proxmoxIsNotFound(msg string) bool {
	return (strings.HasPrefix(msg, "Configuration file") && strings.Contains(msg, "does not exist")) ||
		strings.HasPrefix(msg, "hostname lookup") ||
		strings.Contains(msg, "no such VM") ||
		strings.Contains(msg, "no such node")
}

func proxmoxVMPath(node string, vmid int, rest string) (string, error) {
	if node == "" || strings.ContainsAny(node, "/?#%") {
		return "", apperr.New(apperr.Invalid, "proxmox node name %q is not valid", node)
	}
	if vmid < 100 || vmid > 999999999 {
		return "", apperr.New(apperr.Invalid, "proxmox vmid %d is out of range (100-999999999)", vmid)
	}
	return "nodes/" + url.PathEscape(node) + "/qemu/" + strconv.Itoa(vmid) + "/" + rest, nil
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

// pveFlag decodes PVE's booleans, which arrive as 0/1, true/false or "0"/"1".
type pveFlag bool

func (f *pveFlag) UnmarshalJSON(b []byte) error {
	switch strings.Trim(string(b), `"`) {
	case "1", "true":
		*f = true
	case "0", "false", "", "null":
		*f = false
	default:
		return fmt.Errorf("not a PVE boolean: %s", b)
	}
	return nil
}

// pveInt64 decodes PVE's integers, which some endpoints send as strings.
type pveInt64 int64

func (n *pveInt64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not a PVE integer: %s", b)
	}
	*n = pveInt64(v)
	return nil
}

// AgentNotRunning reports whether err is PVE saying the VM's QEMU guest agent does not
// answer: a VM that is booting, or whose agent restarts, is on its way back, so a caller
// waits for it rather than counting a failure.
func AgentNotRunning(err error) bool {
	var e *ProxmoxAPIError
	return errors.As(err, &e) && strings.Contains(e.Message, "guest agent is not running")
}
