package hosts_test

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
)

const (
	proxmoxTestTokenID     = "provisioner@pve!n8n"
	proxmoxTestTokenSecret = "5f0c1f2e-8d7a-4c3b-9e21-0a1b2c3d4e5f"
	proxmoxTestNode        = "pve"
	proxmoxTestVMID        = 100
)

// proxmoxTarget is a PVE API to run the contract against, with one VM whose guest agent
// runs and whose guest has /bin/sh.
type proxmoxTarget struct {
	cfg  hosts.ProxmoxConfig
	node string
	vmid int
}

// proxmoxFake starts the fake with one VM; configure runs before it serves.
func proxmoxFake(t *testing.T, configure func(*proxmoxtest.Server)) (*proxmoxtest.Server, proxmoxTarget) {
	t.Helper()
	fake := &proxmoxtest.Server{
		TokenID:     proxmoxTestTokenID,
		TokenSecret: proxmoxTestTokenSecret,
		Runner:      proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{}),
	}
	if configure != nil {
		configure(fake)
	}
	fake.AddVM(proxmoxTestNode, proxmoxTestVMID)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	return fake, proxmoxTarget{
		cfg: hosts.ProxmoxConfig{
			BaseURL:      srv.URL + "/api2/json",
			TokenID:      proxmoxTestTokenID,
			TokenSecret:  proxmoxTestTokenSecret,
			HTTPClient:   srv.Client(),
			PollInterval: time.Millisecond,
			ExecTimeout:  30 * time.Second,
		},
		node: proxmoxTestNode,
		vmid: proxmoxTestVMID,
	}
}

// proxmoxReal returns the real PVE described by PROXMOX_TEST_* variables, if any.
func proxmoxReal(t *testing.T) (proxmoxTarget, bool) {
	t.Helper()
	url := os.Getenv("PROXMOX_TEST_URL")
	if url == "" {
		return proxmoxTarget{}, false
	}
	vmid, err := strconv.Atoi(os.Getenv("PROXMOX_TEST_VMID"))
	if err != nil {
		t.Fatalf("PROXMOX_TEST_VMID: %v", err)
	}
	client, err := hosts.ProxmoxHTTPClient(os.Getenv("PROXMOX_TEST_CA_FILE"), os.Getenv("PROXMOX_TEST_INSECURE_TLS") == "true")
	if err != nil {
		t.Fatal(err)
	}
	return proxmoxTarget{
		cfg: hosts.ProxmoxConfig{
			BaseURL:      url,
			TokenID:      os.Getenv("PROXMOX_TEST_TOKEN_ID"),
			TokenSecret:  os.Getenv("PROXMOX_TEST_TOKEN_SECRET"),
			HTTPClient:   client,
			PollInterval: 200 * time.Millisecond,
			ExecTimeout:  time.Minute,
		},
		node: os.Getenv("PROXMOX_TEST_NODE"),
		vmid: vmid,
	}, true
}

func proxmoxClient(t *testing.T, cfg hosts.ProxmoxConfig) *hosts.Proxmox {
	t.Helper()
	p, err := hosts.NewProxmox(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func proxmoxWantKind(t *testing.T, err error, kind apperr.Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want kind %s", kind)
	}
	if got := apperr.KindOf(err); got != kind {
		t.Fatalf("kind = %s, want %s (err: %v)", got, kind, err)
	}
}

// TestProxmoxContract runs the same checks against the fake and, when PROXMOX_TEST_URL,
// _TOKEN_ID, _TOKEN_SECRET, _NODE and _VMID (and _CA_FILE or _INSECURE_TLS) are set,
// against a real PVE, so the fake cannot drift from the real API unnoticed.
func TestProxmoxContract(t *testing.T) {
	t.Parallel()
	t.Run("fake", func(t *testing.T) {
		t.Parallel()
		_, target := proxmoxFake(t, nil)
		proxmoxContract(t, target)
	})
	t.Run("real", func(t *testing.T) {
		t.Parallel()
		target, ok := proxmoxReal(t)
		if !ok {
			t.Skip("PROXMOX_TEST_URL not set")
		}
		proxmoxContract(t, target)
	})
}

func proxmoxContract(t *testing.T, target proxmoxTarget) {
	ctx := t.Context()
	p := proxmoxClient(t, target.cfg)

	t.Run("version and nodes", func(t *testing.T) {
		v, err := p.Version(ctx)
		if err != nil || v.Version == "" || v.Release == "" {
			t.Fatalf("Version = %+v, %v", v, err)
		}
		nodes, err := p.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(nodes, func(n hosts.ProxmoxNode) bool { return n.Node == target.node && n.Status == "online" }) {
			t.Fatalf("Nodes = %+v, want %s online", nodes, target.node)
		}
	})

	t.Run("status and ping", func(t *testing.T) {
		st, err := p.VMStatus(ctx, target.node, target.vmid)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Running || st.Status != "running" || !st.AgentEnabled {
			t.Fatalf("VMStatus = %+v, want running with agent", st)
		}
		if st.MemoryBytes < 256<<20 || st.CPUs < 1 {
			t.Fatalf("VMStatus = %+v, want the VM's memory and CPUs", st)
		}
		if err := p.Ping(ctx, target.node, target.vmid); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("exec returns exit code, stdout from stdin and stderr", func(t *testing.T) {
		res, err := p.Exec(ctx, target.node, target.vmid,
			[]string{"/bin/sh", "-c", "cat; echo oops >&2; exit 3"}, []byte("A=1\nB=two\n"))
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 3 || res.Signal != 0 || string(res.Stdout) != "A=1\nB=two\n" || string(res.Stderr) != "oops\n" {
			t.Fatalf("Exec = %+v (stdout %q, stderr %q)", res, res.Stdout, res.Stderr)
		}
		if res.PID <= 0 {
			t.Fatalf("PID = %d", res.PID)
		}
	})

	t.Run("exec without output or stdin", func(t *testing.T) {
		res, err := p.Exec(ctx, target.node, target.vmid, []string{"/bin/sh", "-c", "exit 0"}, nil)
		if err != nil || res.ExitCode != 0 || len(res.Stdout) != 0 || len(res.Stderr) != 0 {
			t.Fatalf("Exec = %+v, %v", res, err)
		}
	})

	t.Run("non-ASCII output survives PVE's encoding", func(t *testing.T) {
		res, err := p.Exec(ctx, target.node, target.vmid, []string{"/bin/sh", "-c", `printf 'caf\303\251 \342\202\254'`}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Stdout) != "café €" {
			t.Fatalf("Stdout = %q, want %q", res.Stdout, "café €")
		}
	})

	t.Run("bad token is unauthorized and not echoed", func(t *testing.T) {
		cfg := target.cfg
		cfg.TokenSecret = "00000000-0000-0000-0000-000000000000"
		_, err := proxmoxClient(t, cfg).Version(ctx)
		proxmoxWantKind(t, err, apperr.Unauthorized)
		if strings.Contains(err.Error(), cfg.TokenSecret) || strings.Contains(err.Error(), target.cfg.TokenSecret) {
			t.Fatalf("error leaks the secret: %v", err)
		}
	})

	t.Run("unknown VM is not found", func(t *testing.T) {
		_, err := p.VMStatus(ctx, target.node, 999999998)
		proxmoxWantKind(t, err, apperr.NotFound)
		_, err = p.Exec(ctx, target.node, 999999998, []string{"/bin/true"}, nil)
		proxmoxWantKind(t, err, apperr.NotFound)
	})
}

func TestProxmoxAgentUnavailableSurfacesPVEMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*proxmoxtest.VM)
		want   string
	}{
		{"agent not running", func(vm *proxmoxtest.VM) { vm.AgentRunning = false }, "QEMU guest agent is not running"},
		{"vm stopped", func(vm *proxmoxtest.VM) { vm.Running = false }, "VM 100 is not running"},
		{"agent not configured", func(vm *proxmoxtest.VM) { vm.AgentEnabled = false }, "No QEMU guest agent configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, target := proxmoxFake(t, nil)
			fake.UpdateVM(target.node, target.vmid, tt.change)
			p := proxmoxClient(t, target.cfg)

			err := p.Ping(t.Context(), target.node, target.vmid)
			proxmoxWantKind(t, err, apperr.Unavailable)
			if !strings.Contains(apperr.Message(err), tt.want) {
				t.Fatalf("message %q does not carry PVE's %q", apperr.Message(err), tt.want)
			}
			_, err = p.Exec(t.Context(), target.node, target.vmid, []string{"/bin/true"}, nil)
			proxmoxWantKind(t, err, apperr.Unavailable)
			apiErr, ok := proxmox.AsAPIError(err)
			if !ok || apiErr.StatusCode != http.StatusInternalServerError || apiErr.Message != tt.want {
				t.Fatalf("cause = %+v, want 500 %q", apiErr, tt.want)
			}
			if n := len(fake.Execs()); n != 0 {
				t.Fatalf("%d execs started on an unavailable agent", n)
			}
		})
	}
}

func TestProxmoxErrorKinds(t *testing.T) {
	t.Parallel()

	t.Run("forbidden", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		fake.UpdateVM(target.node, target.vmid, func(vm *proxmoxtest.VM) { vm.Forbidden = true })
		_, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/true"}, nil)
		proxmoxWantKind(t, err, apperr.Forbidden)
		if !strings.Contains(apperr.Message(err), "Permission check failed (/vms/100, VM.Monitor)") {
			t.Fatalf("message = %q", apperr.Message(err))
		}
	})

	t.Run("unknown node", func(t *testing.T) {
		t.Parallel()
		_, target := proxmoxFake(t, nil)
		_, err := proxmoxClient(t, target.cfg).VMStatus(t.Context(), "nuc2", target.vmid)
		proxmoxWantKind(t, err, apperr.NotFound)
	})

	t.Run("5xx is unavailable with its text", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		fake.FailNext(1, proxmoxtest.Failure{Status: 596, Message: "Connection timed out"})
		err := proxmoxClient(t, target.cfg).Ping(t.Context(), target.node, target.vmid)
		proxmoxWantKind(t, err, apperr.Unavailable)
		if !strings.Contains(apperr.Message(err), "Connection timed out") {
			t.Fatalf("message = %q", apperr.Message(err))
		}
	})

	t.Run("5xx on exec start is unavailable and starts nothing", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		fake.FailNext(1, proxmoxtest.Failure{PathSuffix: "/agent/exec"})
		_, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/true"}, nil)
		proxmoxWantKind(t, err, apperr.Unavailable)
		if n := len(fake.Execs()); n != 0 {
			t.Fatalf("execs = %d", n)
		}
	})

	t.Run("connection refused is unavailable", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		p := proxmoxClient(t, hosts.ProxmoxConfig{BaseURL: url + "/api2/json", TokenID: proxmoxTestTokenID, TokenSecret: proxmoxTestTokenSecret, HTTPClient: srv.Client()})
		err := p.Ping(t.Context(), proxmoxTestNode, proxmoxTestVMID)
		proxmoxWantKind(t, err, apperr.Unavailable)
		if strings.Contains(err.Error(), proxmoxTestTokenSecret) {
			t.Fatalf("error leaks the secret: %v", err)
		}
	})

	t.Run("bad input is invalid before any request", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		p := proxmoxClient(t, target.cfg)
		_, err := p.Exec(t.Context(), target.node, 42, []string{"/bin/true"}, nil)
		proxmoxWantKind(t, err, apperr.Invalid)
		_, err = p.Exec(t.Context(), target.node, target.vmid, nil, nil)
		proxmoxWantKind(t, err, apperr.Invalid)
		_, err = p.Exec(t.Context(), "a/b", target.vmid, []string{"/bin/true"}, nil)
		proxmoxWantKind(t, err, apperr.Invalid)
		if n := len(fake.Requests()); n != 0 {
			t.Fatalf("%d requests sent for invalid input", n)
		}
	})
}

func TestProxmoxExecTimeout(t *testing.T) {
	t.Parallel()
	fake, target := proxmoxFake(t, nil)
	fake.UpdateVM(target.node, target.vmid, func(vm *proxmoxtest.VM) { vm.Hang = true })
	cfg := target.cfg
	cfg.ExecTimeout = 50 * time.Millisecond
	_, err := proxmoxClient(t, cfg).Exec(t.Context(), target.node, target.vmid, []string{"/opt/n8n-provisioner/bin/n8nctl", "status", "acme"}, nil)
	proxmoxWantKind(t, err, apperr.Unavailable)
	if !strings.Contains(apperr.Message(err), "did not finish within 50ms") {
		t.Fatalf("message = %q", apperr.Message(err))
	}
	if n := len(fake.Execs()); n != 1 {
		t.Fatalf("execs = %d, want 1", n)
	}
}

func TestProxmoxExecCallerCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	fake, target := proxmoxFake(t, func(s *proxmoxtest.Server) {
		// The caller gives up while the command runs (its job was cancelled).
		s.OnRequest = func(r proxmoxtest.Request) {
			if strings.HasSuffix(r.Path, "/agent/exec-status") {
				cancel()
			}
		}
	})
	fake.UpdateVM(target.node, target.vmid, func(vm *proxmoxtest.VM) { vm.Hang = true })
	_, err := proxmoxClient(t, target.cfg).Exec(ctx, target.node, target.vmid, []string{"/bin/true"}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled in the chain", err)
	}
	proxmoxWantKind(t, err, apperr.Unavailable)
}

func TestProxmoxExecPollsUntilExit(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var polls atomic.Int32
	_, target := proxmoxFake(t, func(s *proxmoxtest.Server) {
		s.Runner = func(ctx context.Context, _ string, _ int, _ []string, stdin []byte) (int, []byte, []byte) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return 0, stdin, nil
		}
		// Release the command only after the client has seen it running twice, so the
		// test proves polling without timing anything.
		s.OnRequest = func(r proxmoxtest.Request) {
			if strings.HasSuffix(r.Path, "/agent/exec-status") {
				if polls.Add(1) == 2 {
					close(release)
				}
			}
		}
	})
	res, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/cat"}, []byte("x"))
	if err != nil || string(res.Stdout) != "x" {
		t.Fatalf("Exec = %+v, %v", res, err)
	}
	if n := polls.Load(); n < 2 {
		t.Fatalf("polls = %d, want at least 2", n)
	}
}

func TestProxmoxExecToleratesTransientPollFailures(t *testing.T) {
	t.Parallel()
	t.Run("two failures are retried", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		fake.FailNext(2, proxmoxtest.Failure{PathSuffix: "/agent/exec-status", Status: http.StatusServiceUnavailable})
		res, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/sh", "-c", "echo done"}, nil)
		if err != nil || string(res.Stdout) != "done\n" {
			t.Fatalf("Exec = %+v, %v", res, err)
		}
	})
	t.Run("three in a row give up", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		fake.FailNext(3, proxmoxtest.Failure{PathSuffix: "/agent/exec-status", Message: "pveproxy restarting"})
		_, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/true"}, nil)
		proxmoxWantKind(t, err, apperr.Unavailable)
		if !strings.Contains(apperr.Message(err), "pveproxy restarting") {
			t.Fatalf("message = %q", apperr.Message(err))
		}
	})
	t.Run("auth failure while polling is not retried", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		fake.FailNext(1, proxmoxtest.Failure{PathSuffix: "/agent/exec-status", Status: http.StatusUnauthorized})
		_, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/true"}, nil)
		proxmoxWantKind(t, err, apperr.Unauthorized)
	})
}

func TestProxmoxExecWithSlowAgent(t *testing.T) {
	t.Parallel()
	_, target := proxmoxFake(t, func(s *proxmoxtest.Server) { s.ExecLatency = 20 * time.Millisecond })
	res, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/sh", "-c", "exit 7"}, nil)
	if err != nil || res.ExitCode != 7 {
		t.Fatalf("Exec = %+v, %v", res, err)
	}
}

func TestProxmoxExecSignalAndTruncation(t *testing.T) {
	t.Parallel()
	_, target := proxmoxFake(t, func(s *proxmoxtest.Server) { s.MaxOutput = 4 })
	p := proxmoxClient(t, target.cfg)
	res, err := p.Exec(t.Context(), target.node, target.vmid, []string{"/bin/sh", "-c", "printf 123456; kill -9 $$"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signal != 9 || string(res.Stdout) != "1234" || !res.StdoutTruncated || res.StderrTruncated {
		t.Fatalf("Exec = %+v (stdout %q)", res, res.Stdout)
	}
}

func TestProxmoxExecRejectsBadStdin(t *testing.T) {
	t.Parallel()
	fake, target := proxmoxFake(t, nil)
	p := proxmoxClient(t, target.cfg)
	for name, stdin := range map[string][]byte{
		"non-ASCII": []byte("PASSWORD=contraseña\n"),
		"too long":  []byte(strings.Repeat("x", hosts.ProxmoxMaxInputData+1)),
	} {
		_, err := p.Exec(t.Context(), target.node, target.vmid, []string{"/bin/cat"}, stdin)
		if apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("%s: err = %v, want invalid", name, err)
		}
		if strings.Contains(err.Error(), "contraseña") {
			t.Errorf("%s: error echoes stdin: %v", name, err)
		}
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("%d requests sent for rejected stdin", n)
	}
}

func TestNewProxmoxValidatesConfig(t *testing.T) {
	t.Parallel()
	ok := hosts.ProxmoxConfig{BaseURL: "https://pve:8006/api2/json", TokenID: "root@pam!prov", TokenSecret: "0b9c4e52-secret"}
	tests := []struct {
		name   string
		change func(*hosts.ProxmoxConfig)
		valid  bool
	}{
		{"ok", func(*hosts.ProxmoxConfig) {}, true},
		{"no url", func(c *hosts.ProxmoxConfig) { c.BaseURL = "" }, false},
		{"not http", func(c *hosts.ProxmoxConfig) { c.BaseURL = "ftp://pve/api2/json" }, false},
		{"token without realm", func(c *hosts.ProxmoxConfig) { c.TokenID = "root!prov" }, false},
		{"token without name", func(c *hosts.ProxmoxConfig) { c.TokenID = "root@pam" }, false},
		{"token with =", func(c *hosts.ProxmoxConfig) { c.TokenID = "root@pam!a=b" }, false},
		{"no secret", func(c *hosts.ProxmoxConfig) { c.TokenSecret = "" }, false},
		{"secret with newline", func(c *hosts.ProxmoxConfig) { c.TokenSecret = "a\nb" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.change(&cfg)
			_, err := hosts.NewProxmox(cfg)
			if tt.valid != (err == nil) {
				t.Fatalf("err = %v, want valid=%v", err, tt.valid)
			}
			if err != nil {
				proxmoxWantKind(t, err, apperr.Invalid)
				if cfg.TokenSecret != "" && strings.Contains(err.Error(), cfg.TokenSecret) {
					t.Fatalf("error leaks the secret: %v", err)
				}
			}
		})
	}
}

func TestProxmoxHTTPClient(t *testing.T) {
	t.Parallel()
	fake := &proxmoxtest.Server{}
	fake.AddVM(proxmoxTestNode, proxmoxTestVMID)
	srv := httptest.NewUnstartedServer(fake)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "pve-root-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}

	version := func(t *testing.T, client *http.Client) error {
		t.Helper()
		p := proxmoxClient(t, hosts.ProxmoxConfig{BaseURL: srv.URL + "/api2/json", TokenID: proxmoxTestTokenID, TokenSecret: proxmoxTestTokenSecret, HTTPClient: client})
		_, err := p.Version(t.Context())
		return err
	}

	t.Run("CA file trusts PVE's certificate", func(t *testing.T) {
		t.Parallel()
		client, err := hosts.ProxmoxHTTPClient(caFile, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := version(t, client); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("without CA the certificate is refused", func(t *testing.T) {
		t.Parallel()
		client, err := hosts.ProxmoxHTTPClient("", false)
		if err != nil {
			t.Fatal(err)
		}
		proxmoxWantKind(t, version(t, client), apperr.Unavailable)
	})
	t.Run("insecure skips verification", func(t *testing.T) {
		t.Parallel()
		client, err := hosts.ProxmoxHTTPClient("", true)
		if err != nil {
			t.Fatal(err)
		}
		if err := version(t, client); err != nil {
			t.Fatal(err)
		}
	})
	for name, tc := range map[string]struct {
		file     string
		insecure bool
	}{
		"missing file": {filepath.Join(dir, "nope.pem"), false},
		"no PEM":       {junk, false},
		"both set":     {caFile, true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := hosts.ProxmoxHTTPClient(tc.file, tc.insecure)
			proxmoxWantKind(t, err, apperr.Invalid)
			if !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("error does not name the file %s: %v", tc.file, err)
			}
		})
	}
}

// TestProxmoxGoProxmoxWire pins what go-proxmox makes of PVE's error answers, on the wire
// protocol the fake speaks (the /api2/json prefix, the data envelope, API-token auth,
// agent/exec and agent/exec-status): PVE's message and status reach the caller, a POST is
// never sent twice, and a command's signal is an int.
func TestProxmoxGoProxmoxWire(t *testing.T) {
	t.Parallel()

	t.Run("a 500 carries PVE's message", func(t *testing.T) {
		t.Parallel()
		const pveMessage = "VM 100 qmp command 'guest-exec' failed - got timeout"
		fake, target := proxmoxFake(t, nil)
		fake.FailNext(1, proxmoxtest.Failure{PathSuffix: "/agent/exec", Message: pveMessage})
		_, err := proxmoxClient(t, target.cfg).Exec(t.Context(), target.node, target.vmid, []string{"/bin/true"}, []byte("SECRET=s3cr3t-value\n"))
		proxmoxWantKind(t, err, apperr.Unavailable)
		if !strings.Contains(apperr.Message(err), pveMessage) {
			t.Fatalf("message %q does not carry PVE's %q", apperr.Message(err), pveMessage)
		}
		apiErr, ok := proxmox.AsAPIError(err)
		if !ok || apiErr.StatusCode != http.StatusInternalServerError || apiErr.Message != pveMessage ||
			apiErr.Method != http.MethodPost || apiErr.Path != "/api2/json/nodes/pve/qemu/100/agent/exec" {
			t.Fatalf("cause = %+v", apiErr)
		}
		if strings.Contains(err.Error(), "s3cr3t-value") || strings.Contains(err.Error(), proxmoxTestTokenSecret) {
			t.Fatalf("error leaks stdin or the token: %v", err)
		}
		posts := 0
		for _, r := range fake.Requests() {
			if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/agent/exec") {
				posts++
			}
		}
		if posts != 1 || len(fake.Execs()) != 0 {
			t.Fatalf("agent/exec sent %d times, %d started: a failed POST must not be retried", posts, len(fake.Execs()))
		}
	})

	t.Run("a 596 is a node unreachable, retried while polling", func(t *testing.T) {
		t.Parallel()
		fake, target := proxmoxFake(t, nil)
		p := proxmoxClient(t, target.cfg)

		fake.FailNext(1, proxmoxtest.Failure{Status: proxmox.StatusNodeRequestFailed, Message: "Connection timed out"})
		_, err := p.VMStatus(t.Context(), target.node, target.vmid)
		proxmoxWantKind(t, err, apperr.Unavailable)
		if !proxmox.IsNodeUnreachable(err) || !strings.Contains(apperr.Message(err), "HTTP 596: Connection timed out") {
			t.Fatalf("err = %v, want a 596 node-unreachable carrying PVE's text", err)
		}

		// One 596 between polls does not lose the command's result.
		fake.FailNext(1, proxmoxtest.Failure{PathSuffix: "/agent/exec-status", Status: proxmox.StatusNodeRequestFailed, Message: "Connection timed out"})
		res, err := p.Exec(t.Context(), target.node, target.vmid, []string{"/bin/sh", "-c", "echo survived"}, nil)
		if err != nil || string(res.Stdout) != "survived\n" {
			t.Fatalf("Exec = %+v, %v", res, err)
		}
	})

	t.Run("a command killed by signal 9", func(t *testing.T) {
		t.Parallel()
		// n8nctl on this guest is a script that the OOM killer, say, ends with SIGKILL.
		n8nctl := filepath.Join(t.TempDir(), "n8nctl")
		if err := os.WriteFile(n8nctl, []byte("#!/bin/sh\necho 'provisioning...' >&2\nkill -9 $$\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		_, target := proxmoxFake(t, func(s *proxmoxtest.Server) {
			s.Runner = proxmoxtest.LocalRunner(proxmoxtest.LocalRunnerConfig{Paths: map[string]string{hosts.AgentDefaultPath: n8nctl}})
		})
		p := proxmoxClient(t, target.cfg)
		res, err := p.Exec(t.Context(), target.node, target.vmid, []string{hosts.AgentDefaultPath, "provision", "acme"}, nil)
		if err != nil || res.Signal != 9 || res.ExitCode != 0 || string(res.Stderr) != "provisioning...\n" {
			t.Fatalf("Exec = %+v, %v", res, err)
		}
		agent, err := hosts.NewAgent(hosts.AgentConfig{Exec: p})
		if err != nil {
			t.Fatal(err)
		}
		_, err = agent.Run(t.Context(), target.node, target.vmid, "provision", "acme", nil)
		proxmoxWantKind(t, err, apperr.Unavailable)
		if !strings.Contains(apperr.Message(err), "killed by signal 9: provisioning...") {
			t.Fatalf("message = %q", apperr.Message(err))
		}
	})
}
