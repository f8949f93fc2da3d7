package proxmoxtest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
)

const token = "PVEAPIToken=root@pam!ci=8f1e2d3c-0000-4000-8000-123456789abc"

type answer struct {
	status int
	raw    string
	body   struct {
		Data    json.RawMessage   `json:"data"`
		Message string            `json:"message"`
		Errors  map[string]string `json:"errors"`
	}
}

// call sends one request straight to the handler, as pveproxy would receive it.
func call(t *testing.T, h http.Handler, method, path, contentType, body string) answer {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, raw: rec.Body.String()}
	if a.raw != "" {
		if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, a.raw)
		}
	}
	return a
}

func setup(t *testing.T) *proxmoxtest.Server {
	t.Helper()
	s := &proxmoxtest.Server{}
	s.AddVM("pve", 100)
	t.Cleanup(s.Close)
	return s
}

// waitExit polls exec-status until the command exits and returns the final data.
func waitExit(t *testing.T, s *proxmoxtest.Server, pid int) map[string]any {
	t.Helper()
	for {
		a := call(t, s, http.MethodGet, "/api2/json/nodes/pve/qemu/100/agent/exec-status?pid="+strconv.Itoa(pid), "", "")
		if a.status != http.StatusOK {
			t.Fatalf("exec-status: %d %s", a.status, a.raw)
		}
		var data map[string]any
		if err := json.Unmarshal(a.body.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data["exited"] == float64(1) {
			return data
		}
		if data["exited"] != float64(0) {
			t.Fatalf("exited = %v", data["exited"])
		}
	}
}

func startPID(t *testing.T, a answer) int {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("exec: %d %s", a.status, a.raw)
	}
	var data struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(a.body.Data, &data); err != nil || data.PID == 0 {
		t.Fatalf("exec answer %s: %v", a.raw, err)
	}
	return data.PID
}

func TestZeroValueServes(t *testing.T) {
	t.Parallel()
	var s proxmoxtest.Server
	t.Cleanup(s.Close)
	a := call(t, &s, http.MethodGet, "/api2/json/version", "", "")
	if a.status != http.StatusOK || !strings.Contains(string(a.body.Data), `"version":"8.2.4"`) {
		t.Fatalf("version: %d %s", a.status, a.raw)
	}
	a = call(t, &s, http.MethodGet, "/api2/json/nodes", "", "")
	if a.status != http.StatusOK || string(a.body.Data) != "[]" {
		t.Fatalf("nodes: %d %s", a.status, a.raw)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := &proxmoxtest.Server{TokenID: "root@pam!ci", TokenSecret: "right"}
	for name, header := range map[string]string{
		"missing":      "",
		"wrong secret": "PVEAPIToken=root@pam!ci=wrong",
		"wrong id":     "PVEAPIToken=root@pam!other=right",
		"malformed":    "PVEAPIToken=root@pam=right",
		"bearer":       "Bearer right",
	} {
		req := httptest.NewRequest(http.MethodGet, "/api2/json/version", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || rec.Body.Len() != 0 {
			t.Errorf("%s: %d %q, want 401 with no body", name, rec.Code, rec.Body.String())
		}
	}
	req := httptest.NewRequest(http.MethodGet, "/api2/json/version", nil)
	req.Header.Set("Authorization", "PVEAPIToken=root@pam!ci=right")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("right token: %d", rec.Code)
	}
}

func TestExecFormEncodedAndPIDForgottenAfterExit(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.Runner = proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{})
	form := url.Values{"command": {"/bin/sh", "-c", "cat; echo err >&2; exit 4"}, "input-data": {"SECRET=x\n"}}
	pid := startPID(t, call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/x-www-form-urlencoded", form.Encode()))
	data := waitExit(t, s, pid)
	if data["exitcode"] != float64(4) || data["out-data"] != "SECRET=x\n" || data["err-data"] != "err\n" {
		t.Fatalf("status = %v", data)
	}
	if _, ok := data["out-truncated"]; ok {
		t.Fatalf("out-truncated present without truncation: %v", data)
	}
	a := call(t, s, http.MethodGet, "/api2/json/nodes/pve/qemu/100/agent/exec-status?pid="+strconv.Itoa(pid), "", "")
	if a.status != http.StatusInternalServerError || a.body.Message != "Agent error: Invalid parameter 'pid'\n" {
		t.Fatalf("second status: %d %s", a.status, a.raw)
	}
	execs := s.Execs()
	if len(execs) != 1 || !slices.Equal(execs[0].Argv, form["command"]) || string(execs[0].Stdin) != "SECRET=x\n" || execs[0].PID != pid {
		t.Fatalf("execs = %+v", execs)
	}
	for _, r := range s.Requests() {
		if strings.Contains(r.RawQuery, "SECRET") {
			t.Fatalf("request records carry stdin: %+v", r)
		}
	}
}

func TestExecJSONDefaultRunnerAndPerlEncoding(t *testing.T) {
	t.Parallel()
	s := setup(t)
	pid := startPID(t, call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{"command":["/bin/true"]}`))
	if data := waitExit(t, s, pid); data["exitcode"] != float64(0) || data["out-data"] != nil {
		t.Fatalf("default runner: %v", data)
	}

	s2 := &proxmoxtest.Server{Runner: func(context.Context, string, int, []string, []byte) (int, []byte, []byte) {
		return 0, []byte("café"), nil
	}}
	s2.AddVM("pve", 100)
	t.Cleanup(s2.Close)
	pid = startPID(t, call(t, s2, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{"command":["x"]}`))
	// PVE serialises the byte string character by character: UTF-8 arrives double-encoded.
	if data := waitExit(t, s2, pid); data["out-data"] != "cafÃ©" {
		t.Fatalf("out-data = %q", data["out-data"])
	}

	a := call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{"command":["x"],"input-data":"€"}`)
	if a.status != http.StatusInternalServerError || !strings.HasPrefix(a.body.Message, "Wide character") {
		t.Fatalf("wide character: %d %s", a.status, a.raw)
	}
}

func TestParameterErrors(t *testing.T) {
	t.Parallel()
	s := setup(t)
	tests := []struct {
		name, method, path, contentType, body string
		status                                int
		field                                 string // expected key of "errors"
	}{
		{"missing command", http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{}`, 400, "command"},
		{"unknown parameter", http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{"command":["x"],"timeout":5}`, 400, "timeout"},
		{"input-data too long", http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{"command":["x"],"input-data":"` + strings.Repeat("a", 64*1024+1) + `"}`, 400, "input-data"},
		{"exec-status without pid", http.MethodGet, "/api2/json/nodes/pve/qemu/100/agent/exec-status", "", "", 400, "pid"},
		{"bad vmid", http.MethodGet, "/api2/json/nodes/pve/qemu/abc/status/current", "", "", 400, "vmid"},
		{"unknown endpoint", http.MethodGet, "/api2/json/nodes/pve/qemu/100/agent/file-read", "", "", 501, ""},
		{"wrong method", http.MethodGet, "/api2/json/nodes/pve/qemu/100/agent/exec", "", "", 501, ""},
		{"outside the API", http.MethodGet, "/version", "", "", 501, ""},
		{"unsupported body type", http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "text/plain", "x", 506, ""},
	}
	for _, tt := range tests {
		a := call(t, s, tt.method, tt.path, tt.contentType, tt.body)
		if a.status != tt.status {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, a.status, tt.status, a.raw)
			continue
		}
		if string(a.body.Data) != "null" || !strings.HasSuffix(a.body.Message, "\n") {
			t.Errorf("%s: body %s is not PVE's error shape", tt.name, a.raw)
		}
		if tt.field != "" && a.body.Errors[tt.field] == "" {
			t.Errorf("%s: errors = %v, want %q", tt.name, a.body.Errors, tt.field)
		}
	}
	if n := len(s.Execs()); n != 0 {
		t.Fatalf("%d execs started by bad requests", n)
	}
}

func TestVMStateMessages(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ping := func() answer { return call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/ping", "", "") }
	if a := ping(); a.status != http.StatusOK {
		t.Fatalf("ping: %d %s", a.status, a.raw)
	}
	steps := []struct {
		change func(*proxmoxtest.VM)
		status int
		msg    string
	}{
		{func(vm *proxmoxtest.VM) { vm.AgentRunning = false }, 500, "QEMU guest agent is not running\n"},
		{func(vm *proxmoxtest.VM) { vm.Running = false }, 500, "VM 100 is not running\n"},
		{func(vm *proxmoxtest.VM) { vm.AgentEnabled = false }, 500, "No QEMU guest agent configured\n"},
		{func(vm *proxmoxtest.VM) { vm.Forbidden = true }, 403, "Permission check failed (/vms/100, VM.Monitor)\n"},
	}
	for _, st := range steps {
		s.UpdateVM("pve", 100, st.change)
		if a := ping(); a.status != st.status || a.body.Message != st.msg {
			t.Fatalf("ping: %d %q, want %d %q", a.status, a.body.Message, st.status, st.msg)
		}
	}
	if a := call(t, s, http.MethodGet, "/api2/json/nodes/pve/qemu/101/status/current", "", ""); a.status != 500 ||
		a.body.Message != "Configuration file 'nodes/pve/qemu-server/101.conf' does not exist\n" {
		t.Fatalf("unknown VM: %d %s", a.status, a.raw)
	}
	if a := call(t, s, http.MethodGet, "/api2/json/nodes/nuc/qemu/100/status/current", "", ""); a.status != 500 ||
		!strings.HasPrefix(a.body.Message, "hostname lookup 'nuc' failed") {
		t.Fatalf("unknown node: %d %s", a.status, a.raw)
	}

	s.UpdateVM("pve", 100, func(vm *proxmoxtest.VM) { *vm = proxmoxtest.VM{Name: "host1", Running: true} })
	a := call(t, s, http.MethodGet, "/api2/json/nodes/pve/qemu/100/status/current", "", "")
	var st map[string]any
	if err := json.Unmarshal(a.body.Data, &st); err != nil || st["status"] != "running" || st["name"] != "host1" {
		t.Fatalf("status: %s", a.raw)
	}
	if _, ok := st["agent"]; ok {
		t.Fatalf("agent key present although disabled: %s", a.raw)
	}
}

func TestFailNextMatchesPathAndCount(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.FailNext(2, proxmoxtest.Failure{PathSuffix: "/agent/ping", Status: 596, Message: "Connection timed out"})
	if a := call(t, s, http.MethodGet, "/api2/json/version", "", ""); a.status != http.StatusOK {
		t.Fatalf("unmatched path failed: %d", a.status)
	}
	for range 2 {
		if a := call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/ping", "", ""); a.status != 596 || a.body.Message != "Connection timed out\n" {
			t.Fatalf("injected: %d %s", a.status, a.raw)
		}
	}
	if a := call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/ping", "", ""); a.status != http.StatusOK {
		t.Fatalf("after the injected failures: %d %s", a.status, a.raw)
	}
	got := s.Requests()
	if len(got) != 4 || got[1].Status != 596 || got[3].Status != http.StatusOK {
		t.Fatalf("requests = %+v", got)
	}
}

func TestHangAndCloseStopsRunningCommands(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.Runner = proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{})
	s.UpdateVM("pve", 100, func(vm *proxmoxtest.VM) { vm.Hang = true })
	hung := startPID(t, call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{"command":["/bin/true"]}`))
	s.UpdateVM("pve", 100, func(vm *proxmoxtest.VM) { vm.Hang = false })
	long := startPID(t, call(t, s, http.MethodPost, "/api2/json/nodes/pve/qemu/100/agent/exec", "application/json", `{"command":["/bin/sleep","600"]}`))

	s.Close() // must kill sleep rather than wait ten minutes
	if data := waitExit(t, s, long); data["exitcode"] == float64(0) {
		t.Fatalf("sleep was not stopped: %v", data)
	}
	a := call(t, s, http.MethodGet, "/api2/json/nodes/pve/qemu/100/agent/exec-status?pid="+strconv.Itoa(hung), "", "")
	if a.status != http.StatusOK || !strings.Contains(string(a.body.Data), `"exited":0`) {
		t.Fatalf("hung command: %d %s", a.status, a.raw)
	}
}

func TestLocalRunner(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run := proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{
		Paths: map[string]string{"/opt/n8n-provisioner/bin/n8nctl": "/bin/sh"},
		Env:   []string{"N8NCTL_DATA_ROOT=" + dir},
		Dir:   dir,
	})
	code, out, errOut := run(t.Context(), "pve", 100,
		[]string{"/opt/n8n-provisioner/bin/n8nctl", "-c", `read -r line; printf '%s|%s|%s' "$line" "$N8NCTL_DATA_ROOT" "$(pwd)"; echo warn >&2; exit 5`},
		[]byte("A=1\n"))
	if code != 5 || string(out) != "A=1|"+dir+"|"+dir || string(errOut) != "warn\n" {
		t.Fatalf("got %d %q %q", code, out, errOut)
	}
	code, _, errOut = run(t.Context(), "pve", 100, []string{"/nonexistent/n8nctl"}, nil)
	if code != 127 || !strings.Contains(string(errOut), "/nonexistent/n8nctl") {
		t.Fatalf("missing program: %d %q", code, errOut)
	}
	code, _, _ = run(t.Context(), "pve", 100, []string{"/bin/sh", "-c", "kill -TERM $$"}, nil)
	if code != -15 {
		t.Fatalf("signalled: code %d, want -15", code)
	}
}
