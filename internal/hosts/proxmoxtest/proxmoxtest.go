// Package proxmoxtest is an in-process fake of the Proxmox VE HTTP API, enough of it to run
// commands on host VMs through the QEMU guest agent the way the provisioner does.
//
// What it covers, modelled on PVE 8's pve-http-server and qemu-server sources:
//   - the /api2/json prefix and the {"data": ...} envelope; errors as PVE's json formatter
//     writes them, {"data":null,"message":"...\n"} plus "errors" per parameter on a 400;
//   - API-token auth (Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET): 401 with an
//     empty body when the header is missing or the token is wrong;
//   - GET version, GET nodes, GET nodes/{node}/qemu/{vmid}/status/current (with cpus,
//     maxmem and maxdisk),
//     POST .../agent/ping, POST .../agent/exec (JSON or form-encoded body, command as an
//     array, input-data as stdin, 64 KiB limit, unknown parameters rejected) and
//     GET .../agent/exec-status?pid=N (asynchronous: {"exited":0} until the command ends,
//     then exitcode or signal, out-data, err-data, out-truncated/err-truncated as 1; a pid
//     is forgotten once its exit was reported, like qemu-ga, and then answers
//     "Agent error: Invalid parameter 'pid'");
//   - PVE's exact 500 messages for an unknown node ("hostname lookup ..."), an unknown VM
//     ("Configuration file ... does not exist"), a stopped VM ("VM N is not running"), a VM
//     without the agent configured or with the agent down ("QEMU guest agent is not
//     running"), and 403 "Permission check failed (/vms/N, VM.Monitor)";
//   - PVE's byte handling of guest output: out-data is decoded into a byte string and
//     serialised as UTF-8 character by character, so non-ASCII output arrives
//     double-encoded; input-data characters above U+00FF fail as "Wide character".
//
// Knobs: VM state per VM (UpdateVM: running, agent enabled/running, commands that never
// exit, permission denied, the memory, CPUs and disk status/current reports), a fixed latency per exec (ExecLatency), the next N requests
// failing with any status (FailNext), the accepted token (TokenID/TokenSecret), and the
// Runner that plays the guest: nil exits 0 with no output, LocalRunner runs a real local
// process. Inspection: Execs (node, vmid, argv and stdin of every exec), Requests (method,
// path and query of every request, never bodies) and OnRequest.
//
// What it does not cover: tickets and CSRF tokens, privilege separation beyond the per-VM
// flag, tasks (UPIDs), clusters (every node is local), any other endpoint, PVE's
// 3-second delay on failed auth, a custom HTTP reason phrase (Go servers send the standard
// one; PVE repeats its message there), and qemu-ga's synchronous spawn errors (a program
// that cannot be started exits 127 from LocalRunner instead).
package proxmoxtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	apiPrefix        = "/api2/json/"
	maxInputData     = 64 * 1024        // PVE's maxLength for input-data
	defaultMaxOutput = 16 * 1024 * 1024 // qemu-ga's GUEST_EXEC_MAX_OUTPUT
	maxBody          = 64 * 1024 * 2    // comfortably above PVE's POST limit for our fields
)

// Runner plays the guest: it runs argv with stdin and returns how it ended. A negative
// exitCode means the process was killed by signal -exitCode. ctx is cancelled by Close.
type Runner func(ctx context.Context, node string, vmid int, argv []string, stdin []byte) (exitCode int, stdout, stderr []byte)

// VM is the fake state of one VM; tweak it with UpdateVM.
type VM struct {
	Name         string
	Running      bool // the VM is started
	AgentEnabled bool // the VM config has agent: 1
	AgentRunning bool // qemu-ga answers inside the guest
	Hang         bool // execs started from now on never exit
	Forbidden    bool // the token lacks privileges on /vms/{vmid}: 403
	// What status/current reports as the VM's resources: maxmem, cpus and maxdisk.
	MemoryBytes uint64
	CPUs        int
	DiskBytes   uint64
}

// Exec records one accepted agent/exec call.
type Exec struct {
	Node  string
	VMID  int
	PID   int
	Argv  []string
	Stdin []byte // input-data as the guest received it
}

// Request records one HTTP request; bodies are not kept (input-data is in Exec).
type Request struct {
	Method   string
	Path     string // the URL path, /api2/json/...
	RawQuery string
	Status   int
}

// Failure describes injected failures (see FailNext).
type Failure struct {
	PathSuffix string // only requests whose path ends with this; "" for any
	Status     int    // default 500
	Message    string // default "injected failure"
}

// Server is the fake PVE API, an http.Handler usable from its zero value. Set the exported
// fields before serving; call the methods at any time.
type Server struct {
	// TokenID (user@realm!name) and TokenSecret are the one accepted API token. When both
	// are empty any well-formed PVEAPIToken header is accepted.
	TokenID     string
	TokenSecret string
	// Runner executes agent commands; nil means every command exits 0 with no output.
	Runner Runner
	// ExecLatency delays every command's completion, as a slow guest agent would.
	ExecLatency time.Duration
	// MaxOutput caps captured stdout and stderr each (default 16 MiB, qemu-ga's limit).
	MaxOutput int
	// PVEVersion is what GET version reports (default 8.2.4).
	PVEVersion string
	// OnRequest, when set, is called after every request is answered.
	OnRequest func(Request)

	mu       sync.Mutex
	vms      map[vmKey]*VM
	procs    map[vmKey]map[int]*proc
	nextPID  int
	execs    []Exec
	requests []Request
	failures []Failure // one entry per pending failure
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type vmKey struct {
	node string
	vmid int
}

type proc struct {
	done         bool
	exitCode     int
	stdout       []byte
	stderr       []byte
	outTruncated bool
	errTruncated bool
}

// A new VM's resources (see AddVM).
const (
	DefaultMemoryBytes = 4 << 30
	DefaultCPUs        = 2
	DefaultDiskBytes   = 32 << 30
)

// AddVM registers VM vmid on node, running with its guest agent enabled and up, with
// DefaultMemoryBytes, DefaultCPUs and DefaultDiskBytes.
func (s *Server) AddVM(node string, vmid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.vms[vmKey{node, vmid}] = &VM{Name: fmt.Sprintf("vm%d", vmid), Running: true, AgentEnabled: true, AgentRunning: true,
		MemoryBytes: DefaultMemoryBytes, CPUs: DefaultCPUs, DiskBytes: DefaultDiskBytes}
}

// UpdateVM applies change to the state of VM vmid on node; it reports false when there is
// no such VM.
func (s *Server) UpdateVM(node string, vmid int, change func(*VM)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	vm, ok := s.vms[vmKey{node, vmid}]
	if ok {
		change(vm)
	}
	return ok
}

// VM returns the state of VM vmid on node.
func (s *Server) VM(node string, vmid int) (VM, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vm, ok := s.vms[vmKey{node, vmid}]
	if !ok {
		return VM{}, false
	}
	return *vm, true
}

// FailNext makes the next n requests matching f fail with f's status and message, before
// authentication is even looked at (as a proxy or an overloaded pveproxy would).
func (s *Server) FailNext(n int, f Failure) {
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	if f.Message == "" {
		f.Message = "injected failure"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures = append(s.failures, f)
	}
}

// Execs returns every accepted exec, oldest first.
func (s *Server) Execs() []Exec {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Exec, len(s.execs))
	for i, e := range s.execs {
		e.Argv = slices.Clone(e.Argv)
		e.Stdin = slices.Clone(e.Stdin)
		out[i] = e
	}
	return out
}

// Requests returns every request served, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Close cancels running commands and waits for their goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	s.initLocked()
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) initLocked() {
	if s.vms == nil {
		s.vms = make(map[vmKey]*VM)
		s.procs = make(map[vmKey]map[int]*proc)
		s.nextPID = 1000
	}
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
}

// apiError is an answer PVE's json formatter would write for a failed call.
type apiError struct {
	status  int
	message string
	errors  map[string]string
}

func fail(status int, format string, args ...any) *apiError {
	return &apiError{status: status, message: fmt.Sprintf(format, args...)}
}

func badParams(errs map[string]string) *apiError {
	return &apiError{status: http.StatusBadRequest, message: "Parameter verification failed.", errors: errs}
}

// ServeHTTP answers one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	data, aerr := s.serve(r)
	switch {
	case aerr != nil && aerr.status == http.StatusUnauthorized:
		// PVE answers a failed login with the reason in the status line only.
		rec.Status = aerr.status
		w.WriteHeader(aerr.status)
	case aerr != nil:
		rec.Status = aerr.status
		body := map[string]any{"data": nil, "message": aerr.message + "\n"}
		if len(aerr.errors) > 0 {
			errs := make(map[string]string, len(aerr.errors))
			for k, v := range aerr.errors {
				errs[k] = v + "\n"
			}
			body["errors"] = errs
		}
		writeJSON(w, aerr.status, body)
	default:
		rec.Status = http.StatusOK
		writeJSON(w, http.StatusOK, map[string]any{"data": data})
	}
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.mu.Unlock()
	if s.OnRequest != nil {
		s.OnRequest(rec)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(r *http.Request) (any, *apiError) {
	s.mu.Lock()
	s.initLocked()
	if i := slices.IndexFunc(s.failures, func(f Failure) bool { return strings.HasSuffix(r.URL.Path, f.PathSuffix) }); i >= 0 {
		f := s.failures[i]
		s.failures = slices.Delete(s.failures, i, i+1)
		s.mu.Unlock()
		return nil, fail(f.Status, "%s", f.Message)
	}
	s.mu.Unlock()

	if !strings.HasPrefix(r.URL.Path, apiPrefix) {
		return nil, fail(http.StatusNotImplemented, "no such uri")
	}
	if aerr := s.authenticate(r.Header.Get("Authorization")); aerr != nil {
		return nil, aerr
	}
	rel := strings.Trim(strings.TrimPrefix(r.URL.Path, apiPrefix), "/")
	notImplemented := fail(http.StatusNotImplemented, "Method '%s /%s' not implemented", r.Method, rel)
	parts := strings.Split(rel, "/")
	switch {
	case rel == "version" && r.Method == http.MethodGet:
		return s.version(), nil
	case rel == "nodes" && r.Method == http.MethodGet:
		return s.nodes(), nil
	case len(parts) >= 5 && parts[0] == "nodes" && parts[2] == "qemu":
		endpoint := strings.Join(parts[4:], "/")
		method, ok := map[string]string{
			"status/current":    http.MethodGet,
			"agent/ping":        http.MethodPost,
			"agent/exec":        http.MethodPost,
			"agent/exec-status": http.MethodGet,
		}[endpoint]
		if !ok || method != r.Method {
			return nil, notImplemented
		}
		return s.vmEndpoint(r, parts[1], parts[3], endpoint)
	default:
		return nil, notImplemented
	}
}

func (s *Server) authenticate(header string) *apiError {
	value, ok := strings.CutPrefix(header, "PVEAPIToken=")
	if !ok {
		return fail(http.StatusUnauthorized, "No ticket")
	}
	id, secret, ok := strings.Cut(value, "=")
	user, name, okID := strings.Cut(id, "!")
	if !ok || !okID || !strings.Contains(user, "@") || name == "" || secret == "" {
		return fail(http.StatusUnauthorized, "invalid token value!")
	}
	if s.TokenID == "" && s.TokenSecret == "" {
		return nil
	}
	if id != s.TokenID || secret != s.TokenSecret {
		return fail(http.StatusUnauthorized, "invalid token value!")
	}
	return nil
}

func (s *Server) version() any {
	v := s.PVEVersion
	if v == "" {
		v = "8.2.4"
	}
	release := v
	if i := strings.LastIndex(v, "."); strings.Count(v, ".") >= 2 && i > 0 {
		release = v[:i]
	}
	return map[string]any{"version": v, "release": release, "repoid": "fa4e7b5c1d2e3f40"}
}

func (s *Server) nodes() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	var names []string
	for k := range s.vms {
		if !seen[k.node] {
			seen[k.node] = true
			names = append(names, k.node)
		}
	}
	slices.Sort(names)
	out := make([]map[string]any, 0, len(names))
	for _, n := range names {
		out = append(out, map[string]any{"node": n, "status": "online", "type": "node", "id": "node/" + n, "level": ""})
	}
	return out
}

func (s *Server) vmEndpoint(r *http.Request, node, rawVMID, endpoint string) (any, *apiError) {
	s.mu.Lock()
	known := false
	for k := range s.vms {
		if k.node == node {
			known = true
			break
		}
	}
	s.mu.Unlock()
	if !known {
		return nil, fail(http.StatusInternalServerError, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", node, node)
	}
	vmid, err := strconv.Atoi(rawVMID)
	if err != nil || vmid < 100 || vmid > 999999999 {
		return nil, badParams(map[string]string{"vmid": "invalid format - value does not look like a valid VM ID"})
	}
	key := vmKey{node, vmid}

	s.mu.Lock()
	vm, exists := s.vms[key]
	forbidden := exists && vm.Forbidden
	s.mu.Unlock()
	if forbidden {
		priv := "VM.Monitor"
		if endpoint == "status/current" {
			priv = "VM.Audit"
		}
		return nil, fail(http.StatusForbidden, "Permission check failed (/vms/%d, %s)", vmid, priv)
	}

	var params url.Values
	switch endpoint {
	case "agent/exec":
		p, aerr := execParams(r)
		if aerr != nil {
			return nil, aerr
		}
		params = p
	default:
		params = r.URL.Query()
		allowed := map[string]bool{}
		if endpoint == "agent/exec-status" {
			allowed["pid"] = true
			if _, ok := params["pid"]; !ok {
				return nil, badParams(map[string]string{"pid": "property is missing and it is not optional"})
			}
			if _, err := strconv.Atoi(params.Get("pid")); err != nil {
				return nil, badParams(map[string]string{"pid": fmt.Sprintf("type check ('integer') failed - got '%s'", params.Get("pid"))})
			}
		}
		if aerr := checkAllowed(params, allowed); aerr != nil {
			return nil, aerr
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	vm, exists = s.vms[key]
	if !exists {
		return nil, fail(http.StatusInternalServerError, "Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", node, vmid)
	}
	if endpoint == "status/current" {
		return vmStatus(vmid, vm), nil
	}
	// PVE::QemuServer::Agent::assert_agent_available, in its order.
	switch {
	case !vm.AgentEnabled:
		return nil, fail(http.StatusInternalServerError, "No QEMU guest agent configured")
	case !vm.Running:
		return nil, fail(http.StatusInternalServerError, "VM %d is not running", vmid)
	case !vm.AgentRunning:
		return nil, fail(http.StatusInternalServerError, "QEMU guest agent is not running")
	}
	switch endpoint {
	case "agent/ping":
		return map[string]any{"result": map[string]any{}}, nil
	case "agent/exec":
		return s.startLocked(key, vm, params)
	default:
		pid, _ := strconv.Atoi(params.Get("pid"))
		return s.statusLocked(key, pid)
	}
}

func vmStatus(vmid int, vm *VM) any {
	st := map[string]any{
		"vmid": vmid, "name": vm.Name, "status": "stopped", "qmpstatus": "stopped",
		"cpus": vm.CPUs, "maxmem": vm.MemoryBytes, "maxdisk": vm.DiskBytes, "uptime": 0, "ha": map[string]any{"managed": 0},
	}
	if vm.Running {
		st["status"], st["qmpstatus"], st["uptime"] = "running", "running", 3600
	}
	if vm.AgentEnabled {
		st["agent"] = 1 // PVE includes the key only when the agent is enabled
	}
	return st
}

// execParams reads agent/exec's parameters from a JSON or form-encoded body, as
// pveproxy accepts both; an array parameter arrives as repeated form keys.
func execParams(r *http.Request) (url.Values, *apiError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fail(http.StatusBadRequest, "unable to read request body")
	}
	if len(body) > maxBody {
		return nil, fail(http.StatusNotImplemented, "for data too large")
	}
	params := url.Values{}
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	switch strings.TrimSpace(ct) {
	case "application/json":
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, fail(http.StatusBadRequest, "malformed JSON string")
		}
		for k, v := range raw {
			var list []string
			var one string
			switch {
			case json.Unmarshal(v, &list) == nil:
				params[k] = list
			case json.Unmarshal(v, &one) == nil:
				params[k] = []string{one}
			default:
				return nil, badParams(map[string]string{k: "type check failed"})
			}
		}
	case "", "application/x-www-form-urlencoded":
		values, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fail(http.StatusBadRequest, "unable to parse form data")
		}
		for k, v := range values {
			params[k] = v
		}
	default:
		return nil, fail(506, "upload 'Content-Type '%s' not implemented", r.Header.Get("Content-Type"))
	}
	for k, v := range r.URL.Query() {
		params[k] = append(params[k], v...)
	}
	if aerr := checkAllowed(params, map[string]bool{"command": true, "input-data": true}); aerr != nil {
		return nil, aerr
	}
	if len(params["command"]) == 0 || params["command"][0] == "" {
		return nil, badParams(map[string]string{"command": "property is missing and it is not optional"})
	}
	if in := params["input-data"]; len(in) > 1 {
		return nil, badParams(map[string]string{"input-data": "duplicate parameter"})
	} else if len(in) == 1 && len([]rune(in[0])) > maxInputData {
		return nil, badParams(map[string]string{"input-data": fmt.Sprintf("value may only be %d characters long", maxInputData)})
	}
	return params, nil
}

func checkAllowed(params url.Values, allowed map[string]bool) *apiError {
	errs := map[string]string{}
	for k := range params {
		if !allowed[k] {
			errs[k] = "property is not defined in schema and the schema does not allow additional properties"
		}
	}
	if len(errs) > 0 {
		return badParams(errs)
	}
	return nil
}

// startLocked starts a command; s.mu is held.
func (s *Server) startLocked(key vmKey, vm *VM, params url.Values) (any, *apiError) {
	var stdin []byte
	if in := params["input-data"]; len(in) == 1 {
		// PVE hands the decoded characters to encode_base64, which takes each as a byte.
		for _, r := range in[0] {
			if r > 0xFF {
				return nil, fail(http.StatusInternalServerError, "Wide character in subroutine entry at /usr/share/perl5/PVE/QemuServer/Agent.pm line 111.")
			}
			stdin = append(stdin, byte(r))
		}
	}
	argv := slices.Clone(params["command"])
	s.nextPID++
	pid := s.nextPID
	if s.procs[key] == nil {
		s.procs[key] = map[int]*proc{}
	}
	p := &proc{}
	s.procs[key][pid] = p
	s.execs = append(s.execs, Exec{Node: key.node, VMID: key.vmid, PID: pid, Argv: argv, Stdin: slices.Clone(stdin)})
	if vm.Hang {
		return map[string]any{"pid": pid}, nil
	}
	ctx, runner, latency := s.ctx, s.Runner, s.ExecLatency
	maxOut := s.MaxOutput
	if maxOut <= 0 {
		maxOut = defaultMaxOutput
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		code, stdout, stderr := 0, []byte(nil), []byte(nil)
		if runner != nil {
			code, stdout, stderr = runner(ctx, key.node, key.vmid, slices.Clone(argv), slices.Clone(stdin))
		}
		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		p.done, p.exitCode = true, code
		p.stdout, p.outTruncated = capOutput(stdout, maxOut)
		p.stderr, p.errTruncated = capOutput(stderr, maxOut)
	}()
	return map[string]any{"pid": pid}, nil
}

func capOutput(b []byte, limit int) ([]byte, bool) {
	if len(b) > limit {
		return b[:limit:limit], true
	}
	return b, false
}

// statusLocked answers exec-status; s.mu is held.
func (s *Server) statusLocked(key vmKey, pid int) (any, *apiError) {
	p, ok := s.procs[key][pid]
	if !ok {
		return nil, fail(http.StatusInternalServerError, "Agent error: Invalid parameter 'pid'")
	}
	if !p.done {
		return map[string]any{"exited": 0}, nil
	}
	delete(s.procs[key], pid) // qemu-ga forgets a pid once its exit was reported
	res := map[string]any{"exited": 1}
	if p.exitCode < 0 {
		res["signal"] = -p.exitCode
	} else {
		res["exitcode"] = p.exitCode
	}
	for _, stream := range []struct {
		data      []byte
		truncated bool
		key, tkey string
	}{{p.stdout, p.outTruncated, "out-data", "out-truncated"}, {p.stderr, p.errTruncated, "err-data", "err-truncated"}} {
		// qemu-ga sends a stream only when something was captured, and its truncation
		// flag only when set; PVE turns the JSON true into 1.
		if len(stream.data) > 0 {
			res[stream.key] = perlBytesToJSON(stream.data)
		}
		if stream.truncated {
			res[stream.tkey] = 1
		}
	}
	return res, nil
}

// perlBytesToJSON mimics to_json(utf8 => 1) on a Perl byte string: every byte becomes the
// character of the same number, which JSON then carries as UTF-8.
func perlBytesToJSON(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		sb.WriteRune(rune(c))
	}
	return sb.String()
}

// LocalRunnerConfig configures LocalRunner.
type LocalRunnerConfig struct {
	// Paths maps a program path inside the VM (argv[0]) to a local file, since
	// /opt/n8n-provisioner/bin/n8nctl does not exist on the test machine. Programs not in
	// the map run as they are named.
	Paths map[string]string
	// Env is added to the test process's environment (later entries win), e.g.
	// N8NCTL_DATA_ROOT=/tmp/... or DOCKER=/path/to/fake-docker.
	Env []string
	// Dir is the working directory; empty means the test process's.
	Dir string
}

// LocalRunner returns a Runner that runs each command as a real local process with its
// stdin, capturing stdout and stderr. A program that cannot be started exits 127 with the
// reason on stderr; a process killed by a signal reports it as a negative exit code.
func LocalRunner(cfg LocalRunnerConfig) Runner {
	return func(ctx context.Context, node string, vmid int, argv []string, stdin []byte) (int, []byte, []byte) {
		program := argv[0]
		if local, ok := cfg.Paths[program]; ok {
			program = local
		}
		cmd := exec.CommandContext(ctx, program, argv[1:]...)
		cmd.Env = append(os.Environ(), cfg.Env...)
		cmd.Dir = cfg.Dir
		cmd.Stdin = strings.NewReader(string(stdin))
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		// A grandchild holding the pipes open must not keep the fake waiting forever.
		cmd.WaitDelay = 5 * time.Second
		err := cmd.Run()
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			return 0, []byte(stdout.String()), []byte(stderr.String())
		case errors.As(err, &exitErr):
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return -int(ws.Signal()), []byte(stdout.String()), []byte(stderr.String())
			}
			return exitErr.ExitCode(), []byte(stdout.String()), []byte(stderr.String())
		default:
			return 127, []byte(stdout.String()), []byte(stderr.String() + fmt.Sprintf("proxmoxtest: %s: %v\n", argv[0], err))
		}
	}
}
