// Package scripts_test tests the host agent scripts/n8nctl end to end: the
// real script runs as a process, settings on stdin, against
// testdata/fake-docker, which keeps container state in files. Each test has
// its own data root, backup dir and fake Docker state.
package scripts_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

const (
	imageV1 = "n8nio/n8n:1.97.1"
	imageV2 = "n8nio/n8n:1.98.0"
	encKey  = "k3y-0f-the-customer-9b1c2d3e4f5a6b7c"
	users   = "provisioner:$2y$05$Zm9vYmFyYmF6cXV4cXV1eO3bV5zK6GZ3b1hJ7WlUjW0p2sQ1mYt8e"
)

// provisionInput is a valid provision stdin, with overrides (KEY=value, or
// KEY= to drop the key).
func provisionInput(overrides ...string) string {
	kv := map[string]string{
		"IMAGE":              imageV1,
		"CPUS":               "0.5",
		"MEMORY_MB":          "1024",
		"FQDN":               "acme.n8n.example.com",
		"N8N_ENCRYPTION_KEY": encKey,
		"SETUP_AUTH_USERS":   users,
		"TZ":                 "Europe/Madrid",
	}
	for _, o := range overrides {
		k, v, _ := strings.Cut(o, "=")
		if v == "" {
			delete(kv, k)
			continue
		}
		kv[k] = v
	}
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range kv {
			if !yield(k) {
				return
			}
		}
	}) {
		b.WriteString(k + "=" + kv[k] + "\n")
	}
	return b.String()
}

type host struct {
	t                         testing.TB
	dir, root, state, backups string
	script, dockerBin         string
	env                       []string
	outputs                   bytes.Buffer // every stdout and stderr n8nctl wrote
}

type result struct {
	code   int
	out    map[string]any
	stderr string
}

func setup(t testing.TB, env ...string) *host {
	t.Helper()
	dir := t.TempDir()
	script, err := filepath.Abs("n8nctl")
	if err != nil {
		t.Fatal(err)
	}
	docker, err := filepath.Abs(filepath.Join("testdata", "fake-docker"))
	if err != nil {
		t.Fatal(err)
	}
	h := &host{
		t: t, dir: dir, script: script, dockerBin: docker,
		root:    filepath.Join(dir, "root"),
		state:   filepath.Join(dir, "docker"),
		backups: filepath.Join(dir, "backups"),
	}
	if err := os.Mkdir(h.state, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "N8N_") || strings.HasPrefix(k, "FAKE_DOCKER") || k == "DOCKER" {
			continue
		}
		h.env = append(h.env, kv)
	}
	h.env = append(h.env,
		"N8N_DATA_ROOT="+h.root,
		"N8N_BACKUP_DIR="+h.backups,
		"DOCKER="+docker,
		"FAKE_DOCKER_STATE="+h.state,
		"N8N_HEALTH_INTERVAL=0",
	)
	h.env = append(h.env, env...)
	return h
}

// run runs `n8nctl verb slug` with stdin and checks the contract every verb
// keeps: exactly one JSON object on stdout, "ok" agreeing with the exit
// code, and exit codes 0, 1 or 2 only.
func (h *host) run(verb, slug, stdin string, env ...string) result {
	h.t.Helper()
	return h.runArgs(stdin, env, verb, slug)
}

func (h *host) runArgs(stdin string, env []string, args ...string) result {
	h.t.Helper()
	return h.wait(h.start(stdin, env, args...))
}

// started is an n8nctl running in the background, for a test to act while it works.
type started struct {
	cmd            *exec.Cmd
	args           []string
	stdout, stderr bytes.Buffer
}

// start starts `n8nctl args...`; wait checks it as run does.
func (h *host) start(stdin string, env []string, args ...string) *started {
	h.t.Helper()
	p := &started{cmd: exec.Command(h.script, args...), args: args}
	p.cmd.Dir = h.dir
	p.cmd.Env = append(slices.Clone(h.env), env...)
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		h.t.Fatalf("n8nctl %v: %v", args, err)
	}
	return p
}

func (h *host) wait(p *started) result {
	h.t.Helper()
	args, stdout, stderr := p.args, &p.stdout, &p.stderr
	err := p.cmd.Wait()
	res := result{stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		h.t.Fatalf("n8nctl %v: %v", args, err)
	}
	h.outputs.Write(stdout.Bytes())
	h.outputs.Write(stderr.Bytes())

	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	if err := dec.Decode(&res.out); err != nil {
		h.t.Fatalf("n8nctl %v: stdout is not a JSON object: %v\nstdout: %q\nstderr: %s", args, err, stdout.String(), res.stderr)
	}
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimSpace(rest)) != 0 || dec.More() {
		h.t.Fatalf("n8nctl %v: more than one JSON object on stdout: %q", args, stdout.String())
	}
	if ok, _ := res.out["ok"].(bool); ok != (res.code == 0) {
		h.t.Fatalf("n8nctl %v: ok=%v with exit %d: %s\nstderr: %s", args, res.out["ok"], res.code, stdout.String(), res.stderr)
	}
	if res.code != 0 {
		if msg, _ := res.out["error"].(string); msg == "" {
			h.t.Fatalf("n8nctl %v: failure without an error message: %s", args, stdout.String())
		}
	}
	if res.code > 2 {
		h.t.Fatalf("n8nctl %v: exit %d, want 0, 1 or 2", args, res.code)
	}
	return res
}

// must runs a verb that has to succeed.
func (h *host) must(verb, slug, stdin string, env ...string) map[string]any {
	h.t.Helper()
	res := h.run(verb, slug, stdin, env...)
	if res.code != 0 {
		h.t.Fatalf("n8nctl %s %s: exit %d: %v\nstderr: %s", verb, slug, res.code, res.out, res.stderr)
	}
	return res.out
}

// docker runs the fake docker directly, as an operator (or a host reboot)
// would act behind n8nctl's back.
func (h *host) docker(args ...string) string {
	h.t.Helper()
	cmd := exec.Command(h.dockerBin, args...)
	cmd.Env = h.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.t.Fatalf("docker %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// calls returns the docker invocations so far, one argv per line.
func (h *host) calls() []string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.state, "calls.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// callsOf returns the invocations of one docker subcommand.
func (h *host) callsOf(sub string) []string {
	var out []string
	for _, c := range h.calls() {
		if strings.HasPrefix(c, "docker "+sub+" ") {
			out = append(out, c)
		}
	}
	return out
}

// containers returns the names of the containers the fake holds.
func (h *host) containers() []string {
	h.t.Helper()
	entries, err := os.ReadDir(filepath.Join(h.state, "containers"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// container returns the fake's inspect object of one container.
func (h *host) container(name string) map[string]any {
	h.t.Helper()
	var arr []map[string]any
	if err := json.Unmarshal([]byte(h.docker("inspect", "--type", "container", name)), &arr); err != nil || len(arr) != 1 {
		h.t.Fatalf("inspect %s: %v %v", name, err, arr)
	}
	return arr[0]
}

func (h *host) readFile(rel string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, rel))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func (h *host) writeFile(rel, content string) {
	h.t.Helper()
	p := filepath.Join(h.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// want checks fields of a JSON object (numbers as float64).
func want(t *testing.T, got map[string]any, fields map[string]any) {
	t.Helper()
	for k, v := range fields {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v (in %v)", k, got[k], v, got)
		}
	}
}

func TestUsageAndHostileSlugsAreRejectedBeforeAnythingRuns(t *testing.T) {
	t.Parallel()
	hostile := []string{
		"", "A", "Acme", "-acme", "acme-", "a_b", "a.b", "..", "../etc", "a/b", "a b",
		"$(touch pwned)", "`touch pwned`", "a;touch pwned", "acme\n", "acme\nb", "--help", "-rf",
		strings.Repeat("a", 64), "ñandú",
	}
	verbs := []string{"provision", "status", "suspend", "resume", "limits", "destroy", "backup", "restore", "upgrade",
		"upload", "fetch", "prune"}
	h := setup(t)
	for _, slug := range hostile {
		for _, verb := range verbs {
			res := h.run(verb, slug, provisionInput()+"PURGE=1\nBACKUP=/etc/passwd\n")
			if res.code != 2 {
				t.Errorf("%s %q: exit %d, want 2: %v", verb, slug, res.code, res.out)
			}
		}
	}
	for _, args := range [][]string{{}, {"status"}, {"status", "acme", "extra"}, {"explode", "acme"}, {"", "acme"}} {
		if res := h.runArgs("", nil, args...); res.code != 2 {
			t.Errorf("n8nctl %q: exit %d, want 2", args, res.code)
		}
	}
	if calls := h.calls(); len(calls) != 0 {
		t.Errorf("docker ran for rejected input: %q", calls)
	}
	for _, p := range []string{h.root, h.backups, filepath.Join(h.dir, "pwned")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after rejected input (err %v)", p, err)
		}
	}
	for _, env := range []string{"N8N_DATA_ROOT=data", "N8N_DATA_ROOT=/", "N8N_BACKUP_DIR=backups", "N8N_PROXY_NETWORK=-x"} {
		if res := h.runArgs("", []string{env}, "status", "acme"); res.code != 2 {
			t.Errorf("%s: exit %d, want 2", env, res.code)
		}
	}
	// The longest valid slug is fine.
	if res := h.run("status", strings.Repeat("a", 63), ""); res.code != 0 {
		t.Errorf("63-char slug: exit %d", res.code)
	}
}

func TestProvisionCreatesCappedContainerBehindTraefik(t *testing.T) {
	t.Parallel()
	h := setup(t)
	out := h.must("provision", "acme", provisionInput())
	want(t, out, map[string]any{
		"slug": "acme", "exists": true, "running": true, "image": imageV1, "action": "created",
		"cpus": 0.5, "memory_mb": 1024.0, "memory_swap_mb": 1024.0, "pids_limit": 512.0,
		"restart_policy": "unless-stopped",
	})

	runs := h.callsOf("run")
	if len(runs) != 1 {
		t.Fatalf("docker run calls = %q, want 1", runs)
	}
	dataDir := filepath.Join(h.root, "acme", "data")
	for _, arg := range []string{
		"-d", "--name n8n-acme", "--cpus 0.5", "--memory 1024m", "--memory-swap 1024m",
		"--pids-limit 512", "--restart unless-stopped", "--network proxy",
		"--env-file " + filepath.Join(h.root, "acme", "env"),
		"--label-file " + filepath.Join(h.root, "acme", "labels"),
		"-v " + dataDir + ":/home/node/.n8n", "-v " + dataDir + "/files:/home/node/files", imageV1,
	} {
		if !strings.Contains(runs[0], " "+arg) {
			t.Errorf("docker run lacks %q: %s", arg, runs[0])
		}
	}

	st, err := os.Stat(filepath.Join(h.root, "acme", "env"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %v, want 0600", st.Mode().Perm())
	}
	env := h.readFile("acme/env")
	for _, line := range []string{
		"N8N_ENCRYPTION_KEY=" + encKey, "N8N_HOST=acme.n8n.example.com", "N8N_PORT=5678",
		"N8N_PROTOCOL=https", "N8N_PROXY_HOPS=1", "WEBHOOK_URL=https://acme.n8n.example.com/",
		"N8N_EDITOR_BASE_URL=https://acme.n8n.example.com/", "N8N_DIAGNOSTICS_ENABLED=false",
		"N8N_PERSONALIZATION_ENABLED=false", "EXECUTIONS_DATA_PRUNE=true",
		"EXECUTIONS_DATA_MAX_AGE=336", "GENERIC_TIMEZONE=Europe/Madrid", "TZ=Europe/Madrid",
		"N8N_RUNNERS_ENABLED=true", "N8N_BLOCK_ENV_ACCESS_IN_NODE=true", "N8N_BLOCK_FILE_ACCESS_TO_N8N_FILES=true",
		"N8N_RESTRICT_FILE_ACCESS_TO=/home/node/files", "EXECUTIONS_DATA_PRUNE_MAX_COUNT=10000",
		`NODES_EXCLUDE=["n8n-nodes-base.executeCommand","n8n-nodes-base.localFileTrigger"]`,
		"N8N_DEFAULT_BINARY_DATA_MODE=filesystem", "N8N_PAYLOAD_SIZE_MAX=16", "N8N_FORMDATA_FILE_SIZE_MAX=64",
	} {
		if !slices.Contains(strings.Split(env, "\n"), line) {
			t.Errorf("env file lacks %q:\n%s", line, env)
		}
	}

	c := h.container("n8n-acme")
	labels := c["Config"].(map[string]any)["Labels"].(map[string]any)
	wantLabels := map[string]string{
		"traefik.enable":                                               "true",
		"traefik.http.routers.n8n-acme.rule":                           "Host(`acme.n8n.example.com`)",
		"traefik.http.routers.n8n-acme.entrypoints":                    "websecure",
		"traefik.http.routers.n8n-acme.tls":                            "true",
		"traefik.http.services.n8n-acme.loadbalancer.server.port":      "5678",
		"traefik.http.routers.n8n-acme-setup.rule":                     "Host(`acme.n8n.example.com`) && PathRegexp(`(?i)^/rest/owner/setup/?$`)",
		"traefik.http.routers.n8n-acme-setup.priority":                 "1000",
		"traefik.http.routers.n8n-acme-setup.service":                  "n8n-acme",
		"traefik.http.routers.n8n-acme-setup.entrypoints":              "websecure",
		"traefik.http.routers.n8n-acme-setup.middlewares":              "n8n-acme-setup-auth",
		"traefik.http.middlewares.n8n-acme-setup-auth.basicauth.users": users,
	}
	for k, v := range wantLabels {
		if labels[k] != v {
			t.Errorf("label %s = %#v, want %q", k, labels[k], v)
		}
	}
	if c["HostConfig"].(map[string]any)["NetworkMode"] != "proxy" {
		t.Errorf("network = %v", c["HostConfig"].(map[string]any)["NetworkMode"])
	}
	mounts := c["Mounts"].([]any)
	// The data volume, and its files directory where the customer's file nodes are confined.
	if len(mounts) != 2 || mounts[0].(map[string]any)["Source"] != dataDir ||
		mounts[0].(map[string]any)["Destination"] != "/home/node/.n8n" ||
		mounts[1].(map[string]any)["Source"] != dataDir+"/files" || mounts[1].(map[string]any)["Destination"] != "/home/node/files" {
		t.Errorf("mounts = %v", mounts)
	}
	if got := h.readFile("acme/image"); got != "IMAGE="+imageV1+"\n" {
		t.Errorf("image record = %q", got)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(dataDir)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fileUID(fi); uid != 1000 {
			t.Errorf("data dir owned by %d, want 1000 (node)", uid)
		}
	}
}

func TestProvisionCertResolverAndDefaults(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.must("provision", "acme", provisionInput("TZ=", "CERT_RESOLVER=le"))
	env := h.readFile("acme/env")
	if !strings.Contains(env, "\nTZ=UTC\n") || !strings.Contains(env, "GENERIC_TIMEZONE=UTC\n") {
		t.Errorf("TZ default not UTC:\n%s", env)
	}
	labels := h.readFile("acme/labels")
	for _, l := range []string{
		"traefik.http.routers.n8n-acme.tls.certresolver=le",
		"traefik.http.routers.n8n-acme-setup.tls.certresolver=le",
	} {
		if !strings.Contains(labels, l+"\n") {
			t.Errorf("labels lack %q", l)
		}
	}
}

func TestProvisionIsIdempotent(t *testing.T) {
	t.Parallel()
	h := setup(t)
	first := h.must("provision", "acme", provisionInput())
	envBefore := h.readFile("acme/env")
	second := h.must("provision", "acme", provisionInput())
	want(t, second, map[string]any{"action": "unchanged", "running": true})
	delete(first, "action")
	delete(second, "action")
	if a, b := jsonString(t, first), jsonString(t, second); a != b {
		t.Errorf("second provision changed the state:\n%s\n%s", a, b)
	}
	if n := len(h.callsOf("run")); n != 1 {
		t.Errorf("docker run called %d times, want 1", n)
	}
	if got := h.containers(); !slices.Equal(got, []string{"n8n-acme"}) {
		t.Errorf("containers = %q", got)
	}
	if h.readFile("acme/env") != envBefore {
		t.Error("env file rewritten")
	}

	// Stopped (say, a half-finished earlier attempt or a suspension):
	// provision brings it up and makes it survive reboots again.
	h.docker("update", "--restart", "no", "n8n-acme")
	h.docker("stop", "n8n-acme")
	out := h.must("provision", "acme", provisionInput())
	want(t, out, map[string]any{"action": "started", "running": true, "restart_policy": "unless-stopped"})
	if n := len(h.callsOf("run")); n != 1 {
		t.Errorf("docker run called %d times, want 1", n)
	}

	// Another image is an upgrade, not a provision.
	res := h.run("provision", "acme", provisionInput("IMAGE="+imageV2))
	if res.code != 1 || !strings.Contains(res.out["error"].(string), "upgrade") {
		t.Errorf("provision with another image: exit %d %v", res.code, res.out)
	}
}

func TestProvisionValidatesInput(t *testing.T) {
	t.Parallel()
	invalid := []struct {
		name  string
		stdin string
	}{
		{"latest", provisionInput("IMAGE=n8nio/n8n:latest")},
		{"untagged", provisionInput("IMAGE=n8nio/n8n")},
		{"registry port is not a tag", provisionInput("IMAGE=registry.local:5000/n8nio/n8n")},
		{"no image", provisionInput("IMAGE=")},
		{"flag as image", provisionInput("IMAGE=--privileged")},
		{"short digest", provisionInput("IMAGE=n8nio/n8n@sha256:abc")},
		{"zero cpus", provisionInput("CPUS=0")},
		{"negative cpus", provisionInput("CPUS=-1")},
		{"word cpus", provisionInput("CPUS=two")},
		{"no cpus", provisionInput("CPUS=")},
		{"tiny memory", provisionInput("MEMORY_MB=4")},
		{"memory unit", provisionInput("MEMORY_MB=1g")},
		{"no memory", provisionInput("MEMORY_MB=")},
		{"zero pids", provisionInput("PIDS_LIMIT=0")},
		{"fqdn with space", provisionInput("FQDN=acme example.com")},
		{"fqdn single label", provisionInput("FQDN=localhost")},
		{"fqdn backtick", provisionInput("FQDN=a`.example.com")},
		{"no fqdn", provisionInput("FQDN=")},
		{"short key", provisionInput("N8N_ENCRYPTION_KEY=short")},
		{"key with space", provisionInput("N8N_ENCRYPTION_KEY=0123456789 abcdef0123")},
		{"no key", provisionInput("N8N_ENCRYPTION_KEY=")},
		{"no setup auth", provisionInput("SETUP_AUTH_USERS=")},
		{"two setup users", provisionInput("SETUP_AUTH_USERS=a:$2y$05$x,b:$2y$05$y")},
		{"tz traversal", provisionInput("TZ=../../etc/passwd")},
		{"duplicate key", provisionInput() + "CPUS=4\n"},
		{"not key=value", provisionInput() + "garbage\n"},
		{"lowercase key", provisionInput() + "cpus=4\n"},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t)
			res := h.run("provision", "acme", tc.stdin)
			if res.code != 2 {
				t.Fatalf("exit %d, want 2: %v", res.code, res.out)
			}
			if calls := h.calls(); len(calls) != 0 {
				t.Errorf("docker ran: %q", calls)
			}
			if _, err := os.Stat(filepath.Join(h.root, "acme")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("slug dir created (err %v)", err)
			}
			if strings.Contains(res.stderr+jsonString(t, res.out), encKey) {
				t.Error("the encryption key was echoed")
			}
		})
	}
	valid := []struct{ name, image string }{
		{"digest", "n8nio/n8n@sha256:" + strings.Repeat("ab", 32)},
		{"registry with port", "registry.local:5000/n8nio/n8n:1.97.1"},
		{"docker.n8n.io", "docker.n8n.io/n8nio/n8n:1.97.1"},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t)
			out := h.must("provision", "acme", provisionInput("IMAGE="+tc.image, "FQDN=ACME.Example.COM"))
			want(t, out, map[string]any{"image": tc.image})
			if !strings.Contains(h.readFile("acme/env"), "N8N_HOST=acme.example.com\n") {
				t.Error("FQDN not lower-cased")
			}
		})
	}
}

func TestProvisionRefusesDataOfAnotherEncryptionKey(t *testing.T) {
	t.Parallel()
	h := setup(t)
	// What n8n writes on first start: its settings file with the key.
	h.writeFile("acme/data/config", `{"encryptionKey":"the-previous-customers-key-123"}`)
	res := h.run("provision", "acme", provisionInput())
	if res.code != 2 || !strings.Contains(res.out["error"].(string), "N8N_ENCRYPTION_KEY") {
		t.Fatalf("exit %d %v, want 2 about the key", res.code, res.out)
	}
	if len(h.callsOf("run")) != 0 {
		t.Error("docker run called")
	}
	// The same key is a re-provision of kept data: fine.
	h.writeFile("acme/data/config", `{"encryptionKey":"`+encKey+`"}`)
	h.must("provision", "acme", provisionInput())
}

func TestSecretsNeverReachArgvOrOutput(t *testing.T) {
	t.Parallel()
	h := setup(t, "FAKE_DOCKER_UNHEALTHY_IMAGE=n8nio/n8n:9.9.9")
	h.must("provision", "acme", provisionInput())
	h.must("status", "acme", "")
	h.must("limits", "acme", "CPUS=1\nMEMORY_MB=2048\n")
	h.must("suspend", "acme", "")
	h.must("resume", "acme", "")
	backup := h.must("backup", "acme", "")
	h.must("restore", "acme", "BACKUP="+backup["path"].(string)+"\n")
	h.must("upgrade", "acme", "IMAGE="+imageV2+"\nHEALTH_TIMEOUT=0\n")
	if res := h.run("upgrade", "acme", "IMAGE=n8nio/n8n:9.9.9\nHEALTH_TIMEOUT=0\n"); res.code != 1 {
		t.Fatalf("unhealthy upgrade: exit %d", res.code)
	}
	h.must("destroy", "acme", "PURGE=1\n")

	log, err := os.ReadFile(filepath.Join(h.state, "calls.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(log) == 0 {
		t.Fatal("calls.log is empty")
	}
	if bytes.Contains(log, []byte(encKey)) {
		t.Errorf("the encryption key is in docker's argv:\n%s", log)
	}
	if strings.Contains(h.outputs.String(), encKey) {
		t.Error("the encryption key is in n8nctl's output")
	}
}

func TestStatusReportsRealLimits(t *testing.T) {
	t.Parallel()
	h := setup(t)
	out := h.must("status", "acme", "")
	want(t, out, map[string]any{"slug": "acme", "exists": false, "running": false})

	h.must("provision", "acme", provisionInput("CPUS=1.25", "MEMORY_MB=1536", "PIDS_LIMIT=300"))
	out = h.must("status", "acme", "")
	want(t, out, map[string]any{
		"exists": true, "running": true, "image": imageV1, "cpus": 1.25,
		"memory_mb": 1536.0, "memory_swap_mb": 1536.0, "pids_limit": 300.0, "restart_policy": "unless-stopped",
	})

	// A daemon that does not answer is an error, never "does not exist".
	res := h.run("status", "acme", "", "FAKE_DOCKER_FAIL=inspect")
	if res.code != 1 {
		t.Errorf("status with docker failing: exit %d %v, want 1", res.code, res.out)
	}
}

func TestIgnoredLimitsAreVisibleInStatus(t *testing.T) {
	t.Parallel()
	h := setup(t, "FAKE_DOCKER_IGNORE_LIMITS=1")
	out := h.must("provision", "acme", provisionInput())
	want(t, out, map[string]any{"cpus": 0.0, "memory_mb": 0.0, "memory_swap_mb": 0.0, "pids_limit": 0.0})
	out = h.must("limits", "acme", "CPUS=2\nMEMORY_MB=2048\nPIDS_LIMIT=256\n")
	want(t, out, map[string]any{"cpus": 0.0, "memory_mb": 0.0, "pids_limit": 0.0})
}

func TestSuspendSurvivesRebootAndResumeUndoesIt(t *testing.T) {
	t.Parallel()
	h := setup(t)
	if res := h.run("suspend", "acme", ""); res.code != 1 {
		t.Errorf("suspend of nothing: exit %d, want 1", res.code)
	}
	h.must("provision", "acme", provisionInput())
	for range 2 {
		out := h.must("suspend", "acme", "")
		want(t, out, map[string]any{"running": false, "restart_policy": "no", "exists": true})
	}
	// The restart policy changes before the stop, so a daemon restart in
	// between cannot bring the container back.
	calls := h.calls()
	upd := slices.Index(calls, "docker update --restart no n8n-acme")
	stop := slices.Index(calls, "docker stop n8n-acme")
	if upd < 0 || stop < 0 || upd > stop {
		t.Errorf("want update --restart no before stop: %q", calls)
	}
	if n := len(h.callsOf("stop")); n != 1 {
		t.Errorf("docker stop called %d times, want 1", n)
	}
	for range 2 {
		out := h.must("resume", "acme", "")
		want(t, out, map[string]any{"running": true, "restart_policy": "unless-stopped"})
	}
	if n := len(h.callsOf("start")); n != 1 {
		t.Errorf("docker start called %d times, want 1", n)
	}
	if got := h.containers(); len(got) != 1 {
		t.Errorf("containers = %q", got)
	}
}

func TestRestartKeepsThePolicy(t *testing.T) {
	t.Parallel()
	h := setup(t)
	if res := h.run("restart", "acme", ""); res.code != 1 {
		t.Errorf("restart of nothing: exit %d, want 1", res.code)
	}
	h.must("provision", "acme", provisionInput())
	out := h.must("restart", "acme", "")
	want(t, out, map[string]any{"running": true, "restart_policy": "unless-stopped"})
	calls := h.calls()
	stop := slices.Index(calls, "docker stop n8n-acme")
	start := slices.Index(calls, "docker start n8n-acme")
	if stop < 0 || start < stop {
		t.Errorf("want stop then start: %q", calls)
	}
}

func TestListReportsEveryInstance(t *testing.T) {
	t.Parallel()
	h := setup(t)
	empty := h.must("list", "all", "")
	if got := fmt.Sprint(empty["instances"]); got != "[]" {
		t.Errorf("list on an empty host = %s", got)
	}
	h.must("provision", "acme", provisionInput())
	h.must("provision", "beta", provisionInput("FQDN=beta.n8n.example.com"))
	h.must("suspend", "beta", "")
	h.must("destroy", "acme", "") // data kept: the doctor must see the orphaned files
	out := h.must("list", "all", "")
	list, _ := out["instances"].([]any)
	if len(list) != 2 {
		t.Fatalf("list = %v", out)
	}
	got := map[string]string{}
	for _, item := range list {
		m := item.(map[string]any)
		got[m["slug"].(string)] = fmt.Sprint(m["exists"], " ", m["running"])
	}
	if got["acme"] != "false false" || got["beta"] != "true false" {
		t.Errorf("list = %v", got)
	}
	if res := h.run("list", "acme", ""); res.code != 2 {
		t.Errorf("list with a slug: exit %d, want 2", res.code)
	}
}

func TestLimitsChangeThePlan(t *testing.T) {
	t.Parallel()
	h := setup(t)
	if res := h.run("limits", "acme", "CPUS=1\n"); res.code != 1 {
		t.Errorf("limits of nothing: exit %d, want 1", res.code)
	}
	h.must("provision", "acme", provisionInput())
	for _, bad := range []string{"", "CPUS=0\n", "MEMORY_MB=3\n", "PIDS_LIMIT=-1\n"} {
		if res := h.run("limits", "acme", bad); res.code != 2 {
			t.Errorf("limits %q: exit %d, want 2", bad, res.code)
		}
	}
	out := h.must("limits", "acme", "CPUS=2\nMEMORY_MB=4096\nPIDS_LIMIT=1024\n")
	want(t, out, map[string]any{"cpus": 2.0, "memory_mb": 4096.0, "memory_swap_mb": 4096.0, "pids_limit": 1024.0, "running": true})
	out = h.must("limits", "acme", "MEMORY_MB=1024\n")
	want(t, out, map[string]any{"cpus": 2.0, "memory_mb": 1024.0, "memory_swap_mb": 1024.0, "pids_limit": 1024.0})
	if got := h.readFile("acme/limits"); got != "CPUS=2\nMEMORY_MB=1024\nPIDS_LIMIT=1024\n" {
		t.Errorf("limits file = %q", got)
	}
	// An upgrade recreates the container with the plan, not the original.
	out = h.must("upgrade", "acme", "IMAGE="+imageV2+"\nHEALTH_TIMEOUT=0\n")
	want(t, out, map[string]any{"cpus": 2.0, "memory_mb": 1024.0, "pids_limit": 1024.0, "image": imageV2})
}

func TestDestroyKeepsDataUnlessPurged(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "workflows")
	out := h.must("destroy", "acme", "")
	want(t, out, map[string]any{"removed": true, "purged": false, "data_kept": true})
	if len(h.containers()) != 0 {
		t.Errorf("containers left: %q", h.containers())
	}
	if h.readFile("acme/data/database.sqlite") != "workflows" {
		t.Error("data changed")
	}
	out = h.must("destroy", "acme", "")
	want(t, out, map[string]any{"removed": false, "data_kept": true})

	if res := h.run("destroy", "acme", "PURGE=yes\n"); res.code != 2 {
		t.Errorf("PURGE=yes: exit %d, want 2", res.code)
	}
	for range 2 {
		out = h.must("destroy", "acme", "PURGE=1\n")
		want(t, out, map[string]any{"purged": true, "data_kept": false})
	}
	if _, err := os.Stat(filepath.Join(h.root, "acme")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("slug dir survives PURGE=1 (err %v)", err)
	}
	// Other instances are untouched.
	h.must("provision", "other", provisionInput("FQDN=other.example.com"))
	h.must("destroy", "acme", "PURGE=1\n")
	if got := h.containers(); !slices.Equal(got, []string{"n8n-other"}) {
		t.Errorf("containers = %q", got)
	}
}

func TestBackupAndRestore(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "version one")
	h.writeFile("acme/data/binaryData/a.bin", "attachment")

	out := h.must("backup", "acme", "")
	path := out["path"].(string)
	if !strings.HasPrefix(path, filepath.Join(h.backups, "acme")+"/") || !strings.HasSuffix(path, ".tar.gz") {
		t.Fatalf("backup path %q", path)
	}
	archive, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(archive)
	want(t, out, map[string]any{"sha256": hex.EncodeToString(sum[:]), "bytes": float64(len(archive)), "files": 2.0})
	side, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if string(side) != hex.EncodeToString(sum[:])+"  "+filepath.Base(path)+"\n" {
		t.Errorf("sidecar = %q", side)
	}
	var manifest map[string]any
	mb, err := os.ReadFile(strings.TrimSuffix(path, ".tar.gz") + ".json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &manifest); err != nil {
		t.Fatal(err)
	}
	want(t, manifest, map[string]any{"slug": "acme", "image": imageV1, "files": 2.0, "sha256": hex.EncodeToString(sum[:])})
	if manifest["created_at"] != out["created_at"] || manifest["created_at"] == nil {
		t.Errorf("created_at %v vs %v", manifest["created_at"], out["created_at"])
	}
	// Stopped for a consistent copy, started again.
	calls := h.calls()
	stop, start := slices.Index(calls, "docker stop n8n-acme"), slices.Index(calls, "docker start n8n-acme")
	if stop < 0 || start < stop {
		t.Errorf("want stop then start around the backup: %q", calls)
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true})

	// A second backup in the same second gets its own name.
	second := h.must("backup", "acme", "")
	if second["path"] == path {
		t.Error("second backup overwrote the first")
	}

	h.writeFile("acme/data/database.sqlite", "version two")
	h.writeFile("acme/data/new.txt", "later")
	out = h.must("restore", "acme", "BACKUP="+path+"\n")
	want(t, out, map[string]any{"restored_from": path, "running": true, "sha256": hex.EncodeToString(sum[:])})
	if got := h.readFile("acme/data/database.sqlite"); got != "version one" {
		t.Errorf("database after restore = %q", got)
	}
	if got := h.readFile("acme/data/binaryData/a.bin"); got != "attachment" {
		t.Errorf("binary data after restore = %q", got)
	}
	if _, err := os.Stat(filepath.Join(h.root, "acme/data/new.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Error("restore kept a file the backup did not have")
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true})

	// A stopped (suspended) container stays stopped.
	h.must("suspend", "acme", "")
	h.must("restore", "acme", "BACKUP="+path+"\n")
	want(t, h.must("status", "acme", ""), map[string]any{"running": false, "restart_policy": "no"})
	entries, _ := os.ReadDir(filepath.Join(h.root, "acme"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("restore left %s behind", e.Name())
		}
	}
}

func TestRestoreRefusesBadArchives(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "version one")
	path := h.must("backup", "acme", "")["path"].(string)
	h.writeFile("acme/data/database.sqlite", "version two")

	check := func(name, stdin string, code int) {
		t.Helper()
		before := len(h.calls())
		res := h.run("restore", "acme", stdin)
		if res.code != code {
			t.Errorf("%s: exit %d, want %d: %v", name, res.code, code, res.out)
		}
		if got := h.readFile("acme/data/database.sqlite"); got != "version two" {
			t.Errorf("%s: data touched: %q", name, got)
		}
		for _, c := range h.calls()[before:] {
			if !strings.HasPrefix(c, "docker inspect ") {
				t.Errorf("%s: docker %s", name, c)
			}
		}
	}

	// One flipped byte.
	archive, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(filepath.Dir(path), "corrupt.tar.gz")
	archive[len(archive)/2] ^= 0xff
	if err := os.WriteFile(corrupt, archive, 0o600); err != nil {
		t.Fatal(err)
	}
	side, _ := os.ReadFile(path + ".sha256")
	if err := os.WriteFile(corrupt+".sha256", side, 0o600); err != nil {
		t.Fatal(err)
	}
	check("corrupted", "BACKUP="+corrupt+"\n", 1)

	// No checksum: unverifiable.
	if err := os.Remove(corrupt + ".sha256"); err != nil {
		t.Fatal(err)
	}
	check("no sidecar", "BACKUP="+corrupt+"\n", 1)

	// An archive reaching outside data/, with an honest checksum.
	evil := filepath.Join(filepath.Dir(path), "evil.tar.gz")
	src := filepath.Join(h.dir, "evil")
	if err := os.MkdirAll(filepath.Join(src, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "env"), []byte("N8N_ENCRYPTION_KEY=stolen\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-C", src, "-czf", evil, "data", "env").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	b, _ := os.ReadFile(evil)
	s := sha256.Sum256(b)
	if err := os.WriteFile(evil+".sha256", []byte(hex.EncodeToString(s[:])+"  evil.tar.gz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("member outside data/", "BACKUP="+evil+"\n", 1)

	h.must("provision", "other", provisionInput("FQDN=other.example.com"))
	otherBackup := h.must("backup", "other", "")["path"].(string)
	check("another instance's backup", "BACKUP="+otherBackup+"\n", 2)
	check("outside the backup dir", "BACKUP=/etc/passwd.tar.gz\n", 2)
	check("dot-dot out of the backup dir", "BACKUP="+h.backups+"/../x.tar.gz\n", 2)
	check("relative", "BACKUP=acme/x.tar.gz\n", 2)
	check("missing", "BACKUP="+h.backups+"/acme/nope.tar.gz\n", 1)
	check("no BACKUP", "", 2)

	outside := filepath.Join(h.dir, "outside.tar.gz")
	if err := os.WriteFile(outside, b, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(h.backups, "acme", "link.tar.gz")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	check("symlink out of the backup dir", "BACKUP="+link+"\n", 2)

	// The genuine archive still restores.
	h.must("restore", "acme", "BACKUP="+path+"\n")
	if got := h.readFile("acme/data/database.sqlite"); got != "version one" {
		t.Errorf("after the good restore: %q", got)
	}
}

func TestUpgrade(t *testing.T) {
	t.Parallel()
	h := setup(t)
	if res := h.run("upgrade", "acme", "IMAGE="+imageV2+"\n"); res.code != 1 {
		t.Errorf("upgrade of nothing: exit %d, want 1", res.code)
	}
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "workflows")
	labelsBefore := h.container("n8n-acme")["Config"].(map[string]any)["Labels"]

	for _, bad := range []string{"IMAGE=n8nio/n8n:latest\n", "IMAGE=n8nio/n8n\n", "IMAGE=" + imageV2 + "\nHEALTH_TIMEOUT=soon\n"} {
		if res := h.run("upgrade", "acme", bad); res.code != 2 {
			t.Errorf("upgrade %q: exit %d, want 2", bad, res.code)
		}
	}

	out := h.must("upgrade", "acme", "IMAGE="+imageV2+"\nHEALTH_TIMEOUT=5\n")
	want(t, out, map[string]any{
		"image": imageV2, "previous_image": imageV1, "changed": true, "rolled_back": false,
		"running": true, "restart_policy": "unless-stopped", "cpus": 0.5, "memory_mb": 1024.0,
	})
	if _, err := os.Stat(out["backup"].(string)); err != nil {
		t.Errorf("upgrade backup: %v", err)
	}
	if h.readFile("acme/image") != "IMAGE="+imageV2+"\n" {
		t.Errorf("image record = %q", h.readFile("acme/image"))
	}
	if h.readFile("acme/data/database.sqlite") != "workflows" {
		t.Error("data lost in upgrade")
	}
	c := h.container("n8n-acme")
	if got := c["Config"].(map[string]any)["Labels"]; jsonString(t, got) != jsonString(t, labelsBefore) {
		t.Errorf("labels changed: %v", got)
	}
	if n := len(h.callsOf("exec")); n != 1 {
		t.Errorf("health probes = %d, want 1", n)
	}
	if !strings.Contains(h.callsOf("exec")[0], "n8n-acme wget") ||
		!strings.Contains(h.callsOf("exec")[0], "http://127.0.0.1:5678/healthz/readiness") {
		t.Errorf("health probe = %s", h.callsOf("exec")[0])
	}

	runs := len(h.callsOf("run"))
	out = h.must("upgrade", "acme", "IMAGE="+imageV2+"\n")
	want(t, out, map[string]any{"changed": false, "image": imageV2})
	if len(h.callsOf("run")) != runs {
		t.Error("an upgrade to the running image recreated the container")
	}
	if got := h.containers(); len(got) != 1 {
		t.Errorf("containers = %q", got)
	}

	// A suspended instance is not silently started to be health-checked.
	h.must("suspend", "acme", "")
	if res := h.run("upgrade", "acme", "IMAGE=n8nio/n8n:1.99.0\n"); res.code != 1 {
		t.Errorf("upgrade of a suspended instance: exit %d, want 1", res.code)
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": false, "image": imageV2})
}

func TestUpgradeRollsBackAnUnhealthyImage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hook := filepath.Join(dir, "on-start")
	// The new image "migrates" the database as it starts, the way a real
	// upgrade would, so that the rollback has to restore it.
	script := `#!/usr/bin/env bash
set -euo pipefail
image=$(jq -r .Config.Image "$2/container.json")
data=$(jq -r '.Mounts[0].Source' "$2/container.json")
if [[ $image == ` + imageV2 + ` ]]; then echo migrated >"$data/database.sqlite"; fi
`
	if err := os.WriteFile(hook, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	h := setup(t, "FAKE_DOCKER_UNHEALTHY_IMAGE="+imageV2, "FAKE_DOCKER_ON_START="+hook)
	h.must("provision", "acme", provisionInput())
	h.must("limits", "acme", "CPUS=1.5\n")
	h.writeFile("acme/data/database.sqlite", "workflows")

	res := h.run("upgrade", "acme", "IMAGE="+imageV2+"\nHEALTH_TIMEOUT=0\n")
	if res.code != 1 {
		t.Fatalf("exit %d, want 1: %v", res.code, res.out)
	}
	want(t, res.out, map[string]any{"rolled_back": true, "image": imageV1})
	if _, err := os.Stat(res.out["backup"].(string)); err != nil {
		t.Errorf("backup: %v", err)
	}
	if got := h.readFile("acme/data/database.sqlite"); got != "workflows" {
		t.Errorf("data after rollback = %q, want the pre-upgrade data", got)
	}
	want(t, h.must("status", "acme", ""), map[string]any{
		"running": true, "image": imageV1, "cpus": 1.5, "restart_policy": "unless-stopped",
	})
	if h.readFile("acme/image") != "IMAGE="+imageV1+"\n" {
		t.Errorf("image record = %q", h.readFile("acme/image"))
	}
	if got := h.containers(); !slices.Equal(got, []string{"n8n-acme"}) {
		t.Errorf("containers = %q", got)
	}
	// The new image did run (and migrate) before it was judged.
	var sawV2 bool
	for _, c := range h.callsOf("run") {
		sawV2 = sawV2 || strings.HasSuffix(c, " "+imageV2)
	}
	if !sawV2 {
		t.Error("the new image never ran")
	}
}

func TestOneAgentAtATimePerSlug(t *testing.T) {
	t.Parallel()
	h := setup(t, "N8N_LOCK_TIMEOUT=0")
	h.must("provision", "acme", provisionInput())
	// Hold the slug's lock, as a slow backup in another n8nctl would.
	f, err := os.OpenFile(filepath.Join(h.root, ".locks", "acme.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	before := len(h.callsOf("stop"))
	if res := h.run("suspend", "acme", ""); res.code != 1 || !strings.Contains(res.out["error"].(string), "another n8nctl") {
		t.Errorf("suspend while locked: exit %d %v", res.code, res.out)
	}
	if len(h.callsOf("stop")) != before {
		t.Error("suspend acted without the lock")
	}
	// Other slugs and read-only status are not held up.
	h.must("status", "acme", "")
	h.must("provision", "other", provisionInput("FQDN=other.example.com"))
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	h.must("suspend", "acme", "")
}

func TestDockerFailuresAreReported(t *testing.T) {
	t.Parallel()
	h := setup(t)
	res := h.run("provision", "acme", provisionInput(), "FAKE_DOCKER_FAIL=run")
	if res.code != 1 || !strings.Contains(res.out["error"].(string), "docker run failed") {
		t.Errorf("provision with run failing: exit %d %v", res.code, res.out)
	}
	// Retrying once docker works converges.
	want(t, h.must("provision", "acme", provisionInput()), map[string]any{"action": "created"})

	res = h.run("suspend", "acme", "", "FAKE_DOCKER_FAIL=stop")
	if res.code != 1 {
		t.Errorf("suspend with stop failing: exit %d", res.code)
	}
	want(t, h.must("suspend", "acme", ""), map[string]any{"running": false, "restart_policy": "no"})
	h.must("resume", "acme", "")

	// A failed backup restarts what it stopped.
	res = h.run("backup", "acme", "", "N8N_BACKUP_DIR=/proc/n8nctl-cannot-write-here")
	if res.code != 1 {
		t.Errorf("backup into an unwritable dir: exit %d", res.code)
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true})
}

// TestFakeDocker keeps the fake honest about the docker CLI behaviours
// n8nctl relies on.
func TestFakeDocker(t *testing.T) {
	t.Parallel()
	h := setup(t)
	docker := func(env []string, args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(h.dockerBin, args...)
		cmd.Env = append(slices.Clone(h.env), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			code = exitErr.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}

	out, errOut, code := docker(nil, "inspect", "--type", "container", "ghost")
	if code != 1 || strings.TrimSpace(out) != "[]" || !strings.Contains(errOut, "Error: No such container: ghost") {
		t.Errorf("inspect missing: %d %q %q", code, out, errOut)
	}
	if _, errOut, _ = docker(nil, "inspect", "ghost"); !strings.Contains(errOut, "Error: No such object: ghost") {
		t.Errorf("inspect missing without type: %q", errOut)
	}

	hookLog := filepath.Join(h.dir, "hooks.log")
	hook := filepath.Join(h.dir, "hook")
	if err := os.WriteFile(hook, []byte("#!/usr/bin/env bash\necho \"$0 $1 $(grep -c . \"$2/labels\") $(cat \"$2/env\")\" >>"+hookLog+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	hooks := []string{"FAKE_DOCKER_ON_START=" + hook + "", "FAKE_DOCKER_ON_STOP=" + hook}
	envFile := filepath.Join(h.dir, "env")
	if err := os.WriteFile(envFile, []byte("# comment\n\n  A=1\nB=x=$y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	labelFile := filepath.Join(h.dir, "labels")
	if err := os.WriteFile(labelFile, []byte("x=1\ny=Host(`a`) && Path(`/b`)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code = docker(hooks, "run", "-d", "--name", "c1", "--memory=512m", "--env-file", envFile, "--label-file", labelFile, "img:1")
	if code != 0 || len(strings.TrimSpace(out)) != 64 {
		t.Fatalf("run: %d %q", code, out)
	}
	c := h.container("c1")
	want(t, c, map[string]any{"Name": "/c1"})
	hc := c["HostConfig"].(map[string]any)
	// Without --memory-swap the daemon allows as much swap again.
	if hc["Memory"] != float64(512<<20) || hc["MemorySwap"] != float64(1024<<20) || hc["PidsLimit"] != nil {
		t.Errorf("host config = %v", hc)
	}
	if env := c["Config"].(map[string]any)["Env"]; jsonString(t, env) != `["A=1","B=x=$y"]` {
		t.Errorf("env = %v", env)
	}
	if l := c["Config"].(map[string]any)["Labels"].(map[string]any); l["y"] != "Host(`a`) && Path(`/b`)" {
		t.Errorf("labels = %v", l)
	}

	_, errOut, code = docker(nil, "run", "-d", "--name", "c1", "img:1")
	if code != 125 || !strings.Contains(errOut, `Conflict. The container name "/c1" is already in use`) {
		t.Errorf("run of a taken name: %d %q", code, errOut)
	}
	_, errOut, code = docker(nil, "update", "--memory", "2g", "c1")
	if code != 1 || !strings.Contains(errOut, "update the memoryswap at the same time") {
		t.Errorf("update memory above swap: %d %q", code, errOut)
	}
	if _, _, code = docker([]string{"FAKE_DOCKER_FAIL=start,stop"}, "stop", "c1"); code != 1 {
		t.Errorf("injected stop failure: exit %d", code)
	}
	if _, _, code = docker(nil, "rm", "c1"); code != 1 {
		t.Errorf("rm of a running container without -f: exit %d", code)
	}
	if _, _, code = docker(hooks, "rm", "-f", "c1"); code != 0 {
		t.Errorf("rm -f: exit %d", code)
	}
	if _, _, code = docker(nil, "rm", "-f", "c1"); code != 0 {
		t.Errorf("rm -f of a missing container: exit %d, want 0", code)
	}
	if _, _, code = docker(nil, "rm", "c1"); code != 1 {
		t.Errorf("rm of a missing container: exit %d, want 1", code)
	}
	if _, _, code = docker(nil, "run", "--name", "c2", "img:1"); code != 125 {
		t.Errorf("attached run: exit %d, want 125", code)
	}
	if _, _, code = docker(nil, "run", "-d", "--bogus", "img:1"); code != 125 {
		t.Errorf("unknown flag: exit %d, want 125", code)
	}

	log, err := os.ReadFile(hookLog)
	if err != nil {
		t.Fatal(err)
	}
	wantLog := hook + " c1 2 A=1\nB=x=$y\n" + hook + " c1 2 A=1\nB=x=$y\n"
	if string(log) != wantLog {
		t.Errorf("hook log = %q, want start and stop with name, labels and env", log)
	}
}

func TestShellcheck(t *testing.T) {
	t.Parallel()
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck is not installed")
	}
	out, err := exec.Command(sc, "--norc", "n8nctl", filepath.Join("testdata", "fake-docker")).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

func fileUID(fi os.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return 0
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// list says whether the host's egress policy is in place, from n8n-egress check.
func TestListReportsTheEgressPolicy(t *testing.T) {
	t.Parallel()
	h := setup(t)
	egress := filepath.Join(t.TempDir(), "n8n-egress")
	for _, c := range []struct{ script, want string }{
		{"", "n8n-egress is not installed: run bootstrap-host.sh"},
		{"#!/bin/sh\n[ \"$1\" = check ] && echo ok\n", "ok"},
		{"#!/bin/sh\necho 'IPv4 chain N8N-EGRESS is missing;IPv4: INPUT does not send n8n-proxy to N8N-EGRESS-HOST'\nexit 1\n",
			"IPv4 chain N8N-EGRESS is missing;IPv4: INPUT does not send n8n-proxy to N8N-EGRESS-HOST"},
	} {
		os.Remove(egress)
		if c.script != "" {
			if err := os.WriteFile(egress, []byte(c.script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		out := h.must("list", "all", "", "N8N_EGRESS="+egress)
		host, _ := out["host"].(map[string]any)
		if got := fmt.Sprint(host["egress"]); got != c.want {
			t.Errorf("list with %q: host.egress %q, want %q", c.script, got, c.want)
		}
	}
}
