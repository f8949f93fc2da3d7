package sandbox

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
)

// n8nHome is where the n8n image keeps its data; n8nctl binds the instance's data dir there.
const n8nHome = "/home/node/.n8n"

// slugLabel is the label n8nctl puts on every container it runs.
const slugLabel = "io.n8n-provisioner.slug"

// Container is one container of a host as the fake docker's state describes it.
type Container struct {
	Name          string // n8n-<slug>
	Slug          string // from n8nctl's io.n8n-provisioner.slug label
	ID            string
	Running       bool
	State         string // created, running, exited
	Image         string
	CPUs          float64 // the real NanoCpus / 1e9
	MemoryMB      int
	MemorySwapMB  int
	PidsLimit     int
	RestartPolicy string // no, unless-stopped, ...
	Labels        map[string]string
	StartedAt     time.Time // zero when never started
	DataDir       string    // the host path bound at /home/node/.n8n; "" when none
}

// host is one host VM: its directories, knobs, ingress and fake n8ns.
type host struct {
	world       *World
	info        Host
	dir         string
	dataRoot    string
	backupDir   string
	dockerState string
	ingress     *traefiktest.Ingress
	ingressHTTP *httpServer

	mu     sync.Mutex
	env    []string                   // SetHostEnv
	cache  map[string]cachedContainer // container name → last parse of its container.json
	procs  map[string]*n8nProc        // by data dir (or "id:"+container id without one)
	warned map[string]bool            // crash reports already logged, by data dir + start
	closed bool
}

type cachedContainer struct {
	fi os.FileInfo
	c  Container
	// encKey is the container's N8N_ENCRYPTION_KEY, kept out of Container so that no
	// printed Container can leak it.
	encKey string
}

// fakeEgress stands in for the host's n8n-egress: a fake host has no kernel firewall of
// its own (its containers are files of the fake docker), so the policy is always in place
// unless SetHostEnv(name, "FAKE_EGRESS_DRIFT=why") says it is not. The real script is
// tested on real kernel networking in package scripts.
const fakeEgress = `#!/bin/sh
if [ -n "${FAKE_EGRESS_DRIFT:-}" ]; then echo "$FAKE_EGRESS_DRIFT"; exit 1; fi
echo ok
`

// runEnv is the environment of a guest command: the host's directories and the fake
// docker, every fake-docker knob cleared (so the test process's own environment cannot
// leak one in), then SetHostEnv's entries, which win.
func (h *host) runEnv() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	env := []string{
		"N8N_DATA_ROOT=" + h.dataRoot,
		"N8N_BACKUP_DIR=" + h.backupDir,
		"N8N_PROXY_NETWORK=" + ProxyNetwork,
		"N8N_HEALTH_INTERVAL=0.1",
		"DOCKER=" + h.world.dockerPath,
		"FAKE_DOCKER_STATE=" + h.dockerState,
		"FAKE_DOCKER_FAIL=", "FAKE_DOCKER_IGNORE_LIMITS=", "FAKE_DOCKER_UNHEALTHY_IMAGE=",
		"FAKE_DOCKER_ON_START=", "FAKE_DOCKER_ON_STOP=",
		"N8N_EGRESS=" + h.world.egressPath, "FAKE_EGRESS_DRIFT=",
		"N8N_FSTAB=" + filepath.Join(h.dataRoot, ".fstab"), "FAKE_DISK_STATE=" + filepath.Join(h.dockerState, "disk"),
		"FAKE_DISK_HOST_BYTES=" + strconv.FormatInt(HostDiskBytes, 10),
		"PATH=" + h.world.diskBin + string(os.PathListSeparator) + os.Getenv("PATH"),
	}
	// LocalRunner starts from this process's environment; a host VM does not share the
	// provisioner's, and its secrets (PROVISIONER_MASTER_KEY, ...) have no business there.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "PROVISIONER_") {
			env = append(env, k+"=")
		}
	}
	return append(env, h.env...)
}

// Containers returns host name's containers, running or not, sorted by name, as the fake
// docker's state holds them now. Errors: NotFound for an unknown host, Internal when the
// state cannot be read.
func (w *World) Containers(name string) ([]Container, error) {
	h := w.host(name)
	if h == nil {
		return nil, apperr.New(apperr.NotFound, "sandbox: no host %s", name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cs, err := h.scanLocked()
	if err != nil {
		return nil, err
	}
	for i := range cs {
		cs[i].Labels = cloneMap(cs[i].Labels)
	}
	return cs, nil
}

// scanLocked reads the fake docker's containers, re-parsing only the container.json files
// that changed: the fake replaces the file on every edit, so a file that is still the same
// file (and of the same size and time) holds the same container. h.mu is held.
func (h *host) scanLocked() ([]Container, error) {
	dir := filepath.Join(h.dockerState, "containers")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		clear(h.cache)
		return nil, nil
	}
	if err != nil {
		return nil, apperr.Wrap(apperr.Internal, err, "sandbox: read %s", dir)
	}
	seen := make(map[string]bool, len(entries))
	out := make([]Container, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		name := e.Name()
		path := filepath.Join(dir, name, "container.json")
		fi, err := os.Stat(path)
		if err != nil {
			continue // being created or removed right now
		}
		if prev, ok := h.cache[name]; ok && os.SameFile(prev.fi, fi) && prev.fi.ModTime().Equal(fi.ModTime()) && prev.fi.Size() == fi.Size() {
			seen[name] = true
			out = append(out, prev.c)
			continue
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		c, key, err := parseInspect(raw)
		if err != nil {
			// `docker run` writes the first version in place; a half-written file is read
			// again on the next request.
			continue
		}
		seen[name] = true
		h.cache[name] = cachedContainer{fi: fi, c: c, encKey: key}
		out = append(out, c)
	}
	for name := range h.cache {
		if !seen[name] {
			delete(h.cache, name)
		}
	}
	slices.SortFunc(out, func(a, b Container) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// inspect is the part of docker's inspect object the sandbox reads.
type inspect struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"`
	State struct {
		Status    string `json:"Status"`
		Running   bool   `json:"Running"`
		StartedAt string `json:"StartedAt"`
	} `json:"State"`
	Config struct {
		Image  string            `json:"Image"`
		Env    []string          `json:"Env"`
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	HostConfig struct {
		NanoCpus      int64  `json:"NanoCpus"`
		Memory        int64  `json:"Memory"`
		MemorySwap    int64  `json:"MemorySwap"`
		PidsLimit     *int64 `json:"PidsLimit"`
		RestartPolicy struct {
			Name string `json:"Name"`
		} `json:"RestartPolicy"`
	} `json:"HostConfig"`
	Mounts []struct {
		Type        string `json:"Type"`
		Source      string `json:"Source"`
		Destination string `json:"Destination"`
	} `json:"Mounts"`
}

// parseInspect returns the container an inspect object describes and its
// N8N_ENCRYPTION_KEY.
func parseInspect(raw []byte) (Container, string, error) {
	var in inspect
	if err := json.Unmarshal(raw, &in); err != nil {
		return Container{}, "", err
	}
	if in.ID == "" || in.Name == "" {
		return Container{}, "", errors.New("not a container object")
	}
	c := Container{
		Name:          strings.TrimPrefix(in.Name, "/"),
		ID:            in.ID,
		Running:       in.State.Running,
		State:         in.State.Status,
		Image:         in.Config.Image,
		CPUs:          float64(in.HostConfig.NanoCpus) / 1e9,
		MemoryMB:      mib(in.HostConfig.Memory),
		MemorySwapMB:  mib(in.HostConfig.MemorySwap),
		RestartPolicy: in.HostConfig.RestartPolicy.Name,
		Labels:        in.Config.Labels,
	}
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	c.Slug = c.Labels[slugLabel]
	if c.Slug == "" {
		c.Slug = strings.TrimPrefix(c.Name, "n8n-")
	}
	if c.RestartPolicy == "" {
		c.RestartPolicy = "no"
	}
	if p := in.HostConfig.PidsLimit; p != nil && *p > 0 {
		c.PidsLimit = int(*p)
	}
	if t, err := time.Parse(time.RFC3339Nano, in.State.StartedAt); err == nil && t.Year() > 1 {
		c.StartedAt = t
	}
	for _, m := range in.Mounts {
		if m.Type == "bind" && strings.TrimSuffix(m.Destination, "/") == n8nHome {
			c.DataDir = filepath.Clean(m.Source)
		}
	}
	return c, envValue(in.Config.Env, "N8N_ENCRYPTION_KEY"), nil
}

func mib(b int64) int {
	switch {
	case b < 0:
		return -1 // unlimited swap
	default:
		return int(b / (1 << 20))
	}
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// envValue returns KEY's value in a KEY=value list; the last entry wins, as in docker.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

func (h *host) close() {
	h.ingressHTTP.close()
	h.mu.Lock()
	h.closed = true
	procs := h.procs
	h.procs = map[string]*n8nProc{}
	h.mu.Unlock()
	for _, p := range procs {
		p.http.close()
	}
}
