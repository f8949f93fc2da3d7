package hosts_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
)

// agentStub is an Executor that records its call and answers with a fixed result.
type agentStub struct {
	res   hosts.ExecResult
	err   error
	argv  []string
	stdin []byte
	calls int
}

func (s *agentStub) Exec(_ context.Context, _ string, _ int, argv []string, stdin []byte) (hosts.ExecResult, error) {
	s.calls++
	s.argv, s.stdin = argv, stdin
	return s.res, s.err
}

func agentNew(t *testing.T, exec hosts.Executor, path string) *hosts.Agent {
	t.Helper()
	a, err := hosts.NewAgent(hosts.AgentConfig{Exec: exec, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAgentEncodeSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		settings map[string]string
		want     string
		invalid  bool
	}{
		{"none", nil, "", false},
		{"sorted lines", map[string]string{"N8N_IMAGE": "n8nio/n8n:1.80.0", "CPUS": "1", "MEMORY": "1g"}, "CPUS=1\nMEMORY=1g\nN8N_IMAGE=n8nio/n8n:1.80.0\n", false},
		{"value may hold = and spaces", map[string]string{"A": "x=y z"}, "A=x=y z\n", false},
		{"empty value", map[string]string{"A": ""}, "A=\n", false},
		{"newline in value", map[string]string{"A": "x\ny"}, "", true},
		{"carriage return in value", map[string]string{"A": "x\ry"}, "", true},
		{"NUL in value", map[string]string{"A": "x\x00"}, "", true},
		{"= in key", map[string]string{"A=B": "x"}, "", true},
		{"newline in key", map[string]string{"A\nB": "x"}, "", true},
		{"empty key", map[string]string{"": "x"}, "", true},
		{"key starting with a digit", map[string]string{"1A": "x"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := hosts.AgentEncodeSettings(tt.settings)
			if tt.invalid {
				proxmoxWantKind(t, err, apperr.Invalid)
				for _, v := range tt.settings {
					if v != "" && strings.Contains(err.Error(), v) {
						t.Fatalf("error echoes the value: %v", err)
					}
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestAgentRunMapsOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		res      hosts.ExecResult
		execErr  error
		wantKind apperr.Kind // "" for success
		wantText string      // in the public message (or the result on success)
	}{
		{
			name:     "ok",
			res:      hosts.ExecResult{Stdout: []byte(`{"ok":true,"slug":"acme","url":"https://acme.example.net"}` + "\n")},
			wantText: `"url":"https://acme.example.net"`,
		},
		{
			name:     "ok after a stray line",
			res:      hosts.ExecResult{Stdout: []byte("Pulling from n8nio/n8n\n{\"ok\":true,\"state\":\"running\"}\n")},
			wantText: `"state":"running"`,
		},
		{
			name:     "exit 2 is invalid with n8nctl's error",
			res:      hosts.ExecResult{ExitCode: 2, Stdout: []byte(`{"ok":false,"error":"slug 'acme' is reserved"}`)},
			wantKind: apperr.Invalid,
			wantText: "slug 'acme' is reserved",
		},
		{
			name:     "exit 2 without JSON uses stderr",
			res:      hosts.ExecResult{ExitCode: 2, Stderr: []byte("usage: n8nctl <verb> <slug>\n")},
			wantKind: apperr.Invalid,
			wantText: "usage: n8nctl",
		},
		{
			name:     "other exit is unavailable with the error",
			res:      hosts.ExecResult{ExitCode: 1, Stdout: []byte(`{"ok":false,"error":"docker: Cannot connect to the Docker daemon"}`)},
			wantKind: apperr.Unavailable,
			wantText: "exit status 1: docker: Cannot connect to the Docker daemon",
		},
		{
			name:     "other exit with only stderr",
			res:      hosts.ExecResult{ExitCode: 125, Stderr: []byte("line1\nline2\nno space left on device\n")},
			wantKind: apperr.Unavailable,
			wantText: "no space left on device",
		},
		{
			name:     "killed by a signal is unavailable",
			res:      hosts.ExecResult{Signal: 9},
			wantKind: apperr.Unavailable,
			wantText: "killed by signal 9",
		},
		{
			name:     "unparseable output is internal with an excerpt",
			res:      hosts.ExecResult{Stdout: []byte("Segmentation fault " + strings.Repeat("x", 1000))},
			wantKind: apperr.Internal,
			wantText: "Segmentation fault",
		},
		{
			name:     "ok false with exit 0 is internal",
			res:      hosts.ExecResult{Stdout: []byte(`{"ok":false,"error":"confused"}`)},
			wantKind: apperr.Internal,
		},
		{
			name:     "JSON without ok is internal",
			res:      hosts.ExecResult{Stdout: []byte(`{"state":"running"}`)},
			wantKind: apperr.Internal,
		},
		{
			name:     "truncated output is internal",
			res:      hosts.ExecResult{Stdout: []byte(`{"ok":true}`), StdoutTruncated: true},
			wantKind: apperr.Internal,
		},
		{
			name:     "executor errors keep their kind and text",
			execErr:  apperr.New(apperr.Unavailable, "proxmox POST nodes/pve/qemu/100/agent/exec: HTTP 500: QEMU guest agent is not running"),
			wantKind: apperr.Unavailable,
			wantText: "n8nctl provision acme on pve/100: proxmox POST nodes/pve/qemu/100/agent/exec: HTTP 500: QEMU guest agent is not running",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := &agentStub{res: tt.res, err: tt.execErr}
			out, err := agentNew(t, stub, "").Run(t.Context(), "pve", 100, "provision", "acme", map[string]string{"CPUS": "1"})
			if tt.wantKind == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !json.Valid(out) || !strings.Contains(string(out), tt.wantText) {
					t.Fatalf("out = %s, want it to hold %s", out, tt.wantText)
				}
				return
			}
			proxmoxWantKind(t, err, tt.wantKind)
			if tt.wantKind != apperr.Internal && !strings.Contains(apperr.Message(err), tt.wantText) {
				t.Fatalf("message = %q, want it to hold %q", apperr.Message(err), tt.wantText)
			}
			if tt.wantKind == apperr.Internal && !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("error = %q, want it to hold %q", err.Error(), tt.wantText)
			}
			if len(err.Error()) > 1000 {
				t.Fatalf("error is %d bytes long; excerpts must be short", len(err.Error()))
			}
		})
	}
}

func TestAgentRunSendsArgvAndStdin(t *testing.T) {
	t.Parallel()
	stub := &agentStub{res: hosts.ExecResult{Stdout: []byte(`{"ok":true}`)}}
	_, err := agentNew(t, stub, "").Run(t.Context(), "pve", 100, "provision", "acme",
		map[string]string{"N8N_ENCRYPTION_KEY": "k3y-0f-32-bytes-abcdefghijklmnop", "CPUS": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{hosts.AgentDefaultPath, "provision", "acme"}; !slices.Equal(stub.argv, want) {
		t.Fatalf("argv = %q, want %q", stub.argv, want)
	}
	if want := "CPUS=1\nN8N_ENCRYPTION_KEY=k3y-0f-32-bytes-abcdefghijklmnop\n"; string(stub.stdin) != want {
		t.Fatalf("stdin = %q, want %q", stub.stdin, want)
	}
}

func TestAgentRunRejectsBadInputWithoutRunning(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, verb, slug string
		settings         map[string]string
	}{
		{"empty verb", "", "acme", nil},
		{"verb with space", "provision now", "acme", nil},
		{"verb that is an option", "--help", "acme", nil},
		{"empty slug", "provision", "", nil},
		{"slug with slash", "provision", "../etc", nil},
		{"slug that is an option", "provision", "-rf", nil},
		{"uppercase slug", "provision", "Acme", nil},
		{"bad setting", "provision", "acme", map[string]string{"PASSWORD": "a\nINJECTED=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := &agentStub{}
			_, err := agentNew(t, stub, "").Run(t.Context(), "pve", 100, tt.verb, tt.slug, tt.settings)
			proxmoxWantKind(t, err, apperr.Invalid)
			if stub.calls != 0 {
				t.Fatal("n8nctl ran despite invalid input")
			}
			if strings.Contains(err.Error(), "INJECTED") {
				t.Fatalf("error echoes a setting value: %v", err)
			}
		})
	}
}

func TestNewAgentValidatesConfig(t *testing.T) {
	t.Parallel()
	_, err := hosts.NewAgent(hosts.AgentConfig{})
	proxmoxWantKind(t, err, apperr.Invalid)
	_, err = hosts.NewAgent(hosts.AgentConfig{Exec: &agentStub{}, Path: "bin/n8nctl"})
	proxmoxWantKind(t, err, apperr.Invalid)
}

func TestAgentRunNeverLeaksSecrets(t *testing.T) {
	t.Parallel()
	const secret = "Sup3r-Secret-Passw0rd"
	settings := map[string]string{"OWNER_PASSWORD": secret, "SHORT_KEY": "k9z", "CPUS": "1"}
	tests := []struct {
		name string
		res  hosts.ExecResult
	}{
		{"in n8nctl's JSON error", hosts.ExecResult{ExitCode: 2, Stdout: []byte(`{"ok":false,"error":"bad password ` + secret + ` / k9z"}`)}},
		{"in stderr", hosts.ExecResult{ExitCode: 1, Stderr: []byte("+ echo " + secret + " k9z\n")}},
		{"in unparseable stdout", hosts.ExecResult{Stdout: []byte("OWNER_PASSWORD=" + secret + " SHORT_KEY=k9z")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := &agentStub{res: tt.res}
			_, err := agentNew(t, stub, "").Run(t.Context(), "pve", 100, "provision", "acme", settings)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, s := range []string{secret, "k9z"} {
				if strings.Contains(err.Error(), s) || strings.Contains(apperr.Message(err), s) {
					t.Fatalf("error leaks %q: %v", s, err)
				}
				if slices.ContainsFunc(stub.argv, func(a string) bool { return strings.Contains(a, s) }) {
					t.Fatalf("argv carries %q: %q", s, stub.argv)
				}
			}
			if !strings.Contains(err.Error(), "[redacted]") {
				t.Fatalf("error = %v, want the secret replaced by [redacted]", err)
			}
		})
	}
}

// TestAgentThroughFakeProxmox runs a real shell script standing in for n8nctl through the
// whole path: Agent, the Proxmox client, the fake PVE API and LocalRunner.
func TestAgentThroughFakeProxmox(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "n8nctl")
	// Reads KEY=value lines from stdin as n8nctl does; exits 2 on an unknown verb.
	err := os.WriteFile(script, []byte(`#!/bin/sh
set -eu
verb=$1 slug=$2
while IFS= read -r line; do
  case $line in
    N8N_ENCRYPTION_KEY=*) key=${line#N8N_ENCRYPTION_KEY=} ;;
    CPUS=*) cpus=${line#CPUS=} ;;
  esac
done
case $verb in
  provision)
    printf '{"ok":true,"slug":"%s","cpus":%s,"key_len":%d,"data_root":"%s"}\n' "$slug" "$cpus" "${#key}" "$N8NCTL_DATA_ROOT" ;;
  destroy)
    echo "docker: daemon not reachable" >&2; exit 1 ;;
  *)
    printf '{"ok":false,"error":"unknown verb %s"}\n' "$verb"; exit 2 ;;
esac
`), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	fake, target := proxmoxFake(t, func(s *proxmoxtest.Server) {
		s.Runner = proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{
			Paths: map[string]string{hosts.AgentDefaultPath: script},
			Env:   []string{"N8NCTL_DATA_ROOT=" + dir},
		})
	})
	agent := agentNew(t, proxmoxClient(t, target.cfg), "")
	const key = "0123456789abcdef0123456789abcdef"
	settings := map[string]string{"N8N_ENCRYPTION_KEY": key, "CPUS": "2"}

	out, err := agent.Run(t.Context(), target.node, target.vmid, "provision", "acme", settings)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		OK       bool   `json:"ok"`
		Slug     string `json:"slug"`
		CPUs     int    `json:"cpus"`
		KeyLen   int    `json:"key_len"`
		DataRoot string `json:"data_root"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if !got.OK || got.Slug != "acme" || got.CPUs != 2 || got.KeyLen != len(key) || got.DataRoot != dir {
		t.Fatalf("out = %s", out)
	}

	_, err = agent.Run(t.Context(), target.node, target.vmid, "destroy", "acme", settings)
	proxmoxWantKind(t, err, apperr.Unavailable)
	if !strings.Contains(apperr.Message(err), "docker: daemon not reachable") {
		t.Fatalf("message = %q", apperr.Message(err))
	}
	_, err = agent.Run(t.Context(), target.node, target.vmid, "frobnicate", "acme", settings)
	proxmoxWantKind(t, err, apperr.Invalid)
	if !strings.Contains(apperr.Message(err), "unknown verb frobnicate") {
		t.Fatalf("message = %q", apperr.Message(err))
	}

	// The secret reached the guest on stdin only: never in argv, a URL or a query.
	execs := fake.Execs()
	if len(execs) != 3 {
		t.Fatalf("execs = %d, want 3", len(execs))
	}
	for _, e := range execs {
		if !slices.Equal(e.Argv[:1], []string{hosts.AgentDefaultPath}) || len(e.Argv) != 3 {
			t.Fatalf("argv = %q", e.Argv)
		}
		if slices.ContainsFunc(e.Argv, func(a string) bool { return strings.Contains(a, key) }) {
			t.Fatalf("argv carries the secret: %q", e.Argv)
		}
		if !strings.Contains(string(e.Stdin), "N8N_ENCRYPTION_KEY="+key+"\n") {
			t.Fatalf("stdin = %q, want the key", e.Stdin)
		}
	}
	for _, r := range fake.Requests() {
		if strings.Contains(r.Path+"?"+r.RawQuery, key) {
			t.Fatalf("request %s %s?%s carries the secret", r.Method, r.Path, r.RawQuery)
		}
	}
}
