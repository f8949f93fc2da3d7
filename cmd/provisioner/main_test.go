package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// service is the provisioner running in-process through run, as main runs it.
type service struct {
	URL  string
	Logs *testlog.Buffer
	done chan error
	stop func() error
}

// Stop ends the service as a shutdown (or a crash mid-job) would, and returns what run
// returned.
func (s *service) Stop() error { return s.stop() }

// addrWatcher forwards writes to a buffer and reports the address of the "listening" line.
type addrWatcher struct {
	buf  *testlog.Buffer
	pw   *io.PipeWriter
	addr chan string
}

func newAddrWatcher(buf *testlog.Buffer) *addrWatcher {
	pr, pw := io.Pipe()
	w := &addrWatcher{buf: buf, pw: pw, addr: make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				w.addr <- line.Addr
			}
		}
		io.Copy(io.Discard, pr)
	}()
	return w
}

func (w *addrWatcher) Write(p []byte) (int, error) {
	w.buf.Write(p)
	return w.pw.Write(p)
}

func start(t testing.TB, env map[string]string) *service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testlog.Buffer{}
	testlog.Keep(t, logs)
	w := newAddrWatcher(logs)
	env["PROVISIONER_ADDR"] = "127.0.0.1:0"
	s := &service{Logs: logs, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, []string{"provisioner"}, mapEnv(env), io.Discard, w) }()
	s.stop = sync.OnceValue(func() error {
		cancel()
		err := <-s.done
		w.pw.Close()
		return err
	})
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("run returned %v after shutdown", err)
		}
	})
	select {
	case addr := <-w.addr:
		s.URL = "http://" + addr
	case err := <-s.done:
		t.Fatalf("run stopped before listening: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("not listening after 30s:\n%s", logs)
	}
	return s
}

func mapEnv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func TestServeOnBothDatabases(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			masterKey, _ := secret.NewKey()
			env := map[string]string{
				"PROVISIONER_DATA_DIR":       t.TempDir(),
				"PROVISIONER_DATABASE_URL":   dbtest.URL(t, d),
				"PROVISIONER_MASTER_KEY":     masterKey,
				"PROVISIONER_ADMIN_API_KEY":  "admin-" + strings.Repeat("a", 20),
				"PROVISIONER_PORTAL_API_KEY": "portal-" + strings.Repeat("p", 20),
			}
			testlog.Secret(t, masterKey, env["PROVISIONER_ADMIN_API_KEY"], env["PROVISIONER_PORTAL_API_KEY"])
			s := start(t, env)
			for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/openapi.yaml": 200} {
				if code, body := get(t, s.URL+path, ""); code != want {
					t.Errorf("GET %s = %d %s", path, code, body)
				}
			}
			if code, body := get(t, s.URL+"/v1/plans", env["PROVISIONER_PORTAL_API_KEY"]); code != 200 || !strings.Contains(body, `"starter"`) {
				t.Errorf("GET /v1/plans = %d %s", code, body)
			}
			if code, _ := get(t, s.URL+"/v1/hosts", env["PROVISIONER_PORTAL_API_KEY"]); code != 403 {
				t.Errorf("portal key on /v1/hosts = %d, want 403", code)
			}
			for _, v := range []string{masterKey, env["PROVISIONER_ADMIN_API_KEY"], env["PROVISIONER_PORTAL_API_KEY"]} {
				if strings.Contains(s.Logs.String(), v) {
					t.Fatal("a secret from the environment was logged")
				}
			}
		})
	}
}

func TestDevelopmentSecretsAreGeneratedOnceAndKept(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{"PROVISIONER_DATA_DIR": dir}
	s := start(t, env)
	adminKey, err := os.ReadFile(filepath.Join(dir, "admin-api.key"))
	if err != nil {
		t.Fatal(err)
	}
	testlog.Secret(t, strings.TrimSpace(string(adminKey)))
	if code, _ := get(t, s.URL+"/v1/hosts", strings.TrimSpace(string(adminKey))); code != 200 {
		t.Fatalf("generated admin key refused: %d", code)
	}
	if !strings.Contains(s.Logs.String(), "DEVELOPMENT SECRET IN USE") {
		t.Error("no loud warning about the generated secrets")
	}
	for _, f := range []string{"master.key", "admin-api.key", "portal-api.key"} {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, info)
		}
	}
	again, err := loadConfig(mapEnv(env))
	if err != nil || again.AdminAPIKey != strings.TrimSpace(string(adminKey)) {
		t.Fatalf("second start did not reuse the generated key: %v", err)
	}
}

func TestBadConfigurationNamesTheVariable(t *testing.T) {
	t.Parallel()
	plans := filepath.Join(t.TempDir(), "plans.yaml")
	os.WriteFile(plans, []byte("plans:\n  - id: x\n    n8n_image: n8nio/n8n:latest\n"), 0o600)
	tests := map[string]map[string]string{
		"PROVISIONER_MASTER_KEY":          {"PROVISIONER_MASTER_KEY": "too-short"},
		"PROVISIONER_MASTER_KEY_PREVIOUS": {"PROVISIONER_MASTER_KEY_PREVIOUS": "bm9wZQ=="},
		"PROVISIONER_DATABASE_URL":        {"PROVISIONER_DATABASE_URL": "mysql://localhost/x"},
		"PROVISIONER_ADDR":                {"PROVISIONER_ADDR": "8080"},
		"PROVISIONER_BASE_DOMAIN":         {"PROVISIONER_BASE_DOMAIN": "not a domain!"},
		"PROVISIONER_PLANS_FILE":          {"PROVISIONER_PLANS_FILE": plans},
		"PROVISIONER_ADMIN_API_KEY":       {"PROVISIONER_ADMIN_API_KEY": "short"},
		"PROVISIONER_LOG_LEVEL":           {"PROVISIONER_LOG_LEVEL": "loud"},
	}
	for name, env := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env["PROVISIONER_DATA_DIR"] = t.TempDir()
			err := run(context.Background(), []string{"provisioner", "migrate"}, mapEnv(env), io.Discard, io.Discard)
			if err == nil || !strings.HasPrefix(err.Error(), name+" ") {
				t.Fatalf("err = %v, want one naming %s", err, name)
			}
			if strings.Contains(err.Error(), "too-short") && name == "PROVISIONER_MASTER_KEY" {
				t.Fatal("the bad master key value is echoed in the error")
			}
		})
	}
	if err := run(context.Background(), []string{"provisioner", "frobnicate"}, mapEnv(nil), io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			url := dbtest.URL(t, d)
			env := map[string]string{"PROVISIONER_DATA_DIR": t.TempDir(), "PROVISIONER_DATABASE_URL": url}
			var out strings.Builder
			if err := run(context.Background(), []string{"provisioner", "migrate"}, mapEnv(env), &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "schema is current") {
				t.Fatalf("migrate printed %q", out.String())
			}
			db, err := database.Open(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Ready(context.Background()); err != nil {
				t.Fatalf("after migrate: %v", err)
			}
		})
	}
}

// TestStartsWithNoEnvironmentAtAll runs the real binary with an empty environment in an
// empty directory: the README's first command on a fresh machine.
func TestStartsWithNoEnvironmentAtAll(t *testing.T) {
	t.Parallel()
	if ln, err := net.Listen("tcp", ":8080"); err != nil {
		t.Skipf("port 8080 is taken on this machine (%v): the default address cannot be tested", err)
	} else {
		ln.Close()
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "provisioner")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Dir, cmd.Env = dir, []string{}
	logs := &testlog.Buffer{}
	testlog.Keep(t, logs)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("provisioner did not exit cleanly on SIGINT: %v\n%s", err, logs)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := http.Get("http://127.0.0.1:8080/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("/readyz = %d", res.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after 60s: %v\n%s", err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res, err := http.Get("http://127.0.0.1:8080/healthz"); err != nil || res.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "provisioner.db")); err != nil {
		t.Fatalf("the SQLite database is not in ./data: %v", err)
	}
}

// Metrics are the operator's: the public listener wants the admin key, and
// PROVISIONER_METRICS_ADDR serves them without one on an address of the operator's.
func TestMetricsAreOffThePublicListener(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	env := map[string]string{"PROVISIONER_DATA_DIR": t.TempDir(), "PROVISIONER_ADMIN_API_KEY": "adm_" + strings.Repeat("k", 32),
		"PROVISIONER_METRICS_ADDR": metricsAddr}
	s := start(t, env)
	get := func(url, key string) int {
		req, _ := http.NewRequest("GET", url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := get(s.URL+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("public /metrics without a key = %d, want 401", code)
	}
	if code := get(s.URL+"/metrics", env["PROVISIONER_ADMIN_API_KEY"]); code != http.StatusOK {
		t.Errorf("public /metrics with the admin key = %d", code)
	}
	if code := get("http://"+metricsAddr+"/metrics", ""); code != http.StatusOK {
		t.Errorf("PROVISIONER_METRICS_ADDR /metrics = %d", code)
	}
}
