package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
)

// n8nEpoch is the moment every fake n8n believes its process started (see n8nProc.now).
var n8nEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// n8nProc is the fake n8n of one data dir, serving on its own 127.0.0.1 port.
type n8nProc struct {
	srv  *n8ntest.Server
	http *httpServer
	slug string
	// startedNs is the container start (unix ns) the fake counts readiness from; 0 while
	// the fake is being started, so that its start is n8nEpoch exactly.
	startedNs atomic.Int64
	startedAt time.Time // the container start last seen; h.mu guards it
}

// now is the fake n8n's clock: n8ntest counts ReadyAfter from its first Start and has no
// restart, so its clock reads n8nEpoch at the container's latest start and runs from there.
// A container restart moves startedNs, and readiness starts over while the owner stays.
func (p *n8nProc) now() time.Time {
	s := p.startedNs.Load()
	if s == 0 {
		return n8nEpoch
	}
	return n8nEpoch.Add(time.Since(time.Unix(0, s)))
}

// n8nSettings is the settings file n8n writes into its data dir on first start
// (InstanceSettings: ~/.n8n/config) and checks against N8N_ENCRYPTION_KEY on every start.
type n8nSettings struct {
	EncryptionKey string `json:"encryptionKey"`
}

// backends is the ingress's view of the host: every running container whose n8n is up,
// at its fake n8n's address. Called on every request the ingress serves.
func (h *host) backends() []traefiktest.Container {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs, err := h.scanLocked()
	if err != nil {
		h.world.log.Warn("sandbox: reading docker state", "host", h.info.Name, "err", err)
		return nil
	}
	return h.syncLocked(cs)
}

// syncLocked starts a fake n8n for each running container that lacks one, restarts the
// ones whose container restarted, forgets those whose data is gone, and returns the
// running containers as the ingress sees them. h.mu is held.
func (h *host) syncLocked(cs []Container) []traefiktest.Container {
	if h.closed {
		return nil
	}
	out := make([]traefiktest.Container, 0, len(cs))
	used := make(map[string]bool, len(cs))
	for _, c := range cs {
		key := procKey(c)
		used[key] = true
		if !c.Running {
			continue
		}
		p := h.ensureLocked(key, c)
		if p == nil {
			continue
		}
		out = append(out, traefiktest.Container{Name: c.Name, Labels: c.Labels, Addr: p.http.addr})
	}
	for key, p := range h.procs {
		if used[key] {
			continue
		}
		// A destroy that kept the data keeps the owner, as n8n's database would; only the
		// data dir's removal (PURGE=1) forgets it.
		if filepath.IsAbs(key) {
			if _, err := os.Stat(filepath.Join(key, "config")); err == nil {
				continue
			}
		}
		p.http.close()
		delete(h.procs, key)
		h.world.log.Info("sandbox: fake n8n gone with its data", "host", h.info.Name, "slug", p.slug)
	}
	return out
}

// procKey is what a fake n8n belongs to: the container's data dir, or the container
// itself when it has none (its data then dies with it, as an anonymous volume's would).
func procKey(c Container) string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return "id:" + c.ID
}

// ensureLocked returns the fake n8n serving running container c, starting one when the
// data dir is new, or nil when n8n would refuse to start. h.mu is held.
func (h *host) ensureLocked(key string, c Container) *n8nProc {
	started := c.StartedAt
	if started.IsZero() {
		started = time.Now()
	}
	p := h.procs[key]
	if c.DataDir != "" {
		fresh, ok := h.checkSettingsLocked(c, started)
		if !ok {
			return nil
		}
		if fresh && p != nil {
			// The data dir was purged and made again: a new n8n, not the old one.
			p.http.close()
			delete(h.procs, key)
			p = nil
		}
	}
	if p != nil {
		if !p.startedAt.Equal(started) {
			p.startedAt = started
			p.startedNs.Store(started.UnixNano())
			h.world.log.Info("sandbox: fake n8n restarted with its container", "host", h.info.Name, "slug", c.Slug)
		}
		return p
	}

	p = &n8nProc{slug: c.Slug, startedAt: started}
	p.srv = &n8ntest.Server{ReadyAfter: h.world.cfg.N8nReadyAfter, Now: p.now}
	if c.DataDir != "" {
		p.srv.Database = filepath.Join(c.DataDir, "database.json") // real n8n's database.sqlite
	}
	p.srv.Start() // at n8nEpoch: startedNs is still 0
	p.startedNs.Store(started.UnixNano())
	if f := h.world.cfg.ConfigureN8n; f != nil {
		f(h.info.Name, c.Slug, p.srv)
	}
	srv, err := serve(context.Background(), p.srv)
	if err != nil {
		h.world.log.Warn("sandbox: fake n8n cannot listen", "host", h.info.Name, "slug", c.Slug, "err", err)
		return nil
	}
	p.http = srv
	h.procs[key] = p
	h.world.log.Info("sandbox: fake n8n started", "host", h.info.Name, "slug", c.Slug,
		"container", c.Name, "addr", srv.addr, "ready_after", h.world.cfg.N8nReadyAfter.String())
	return p
}

// checkSettingsLocked does what n8n does with its settings file at start: write it with the
// container's N8N_ENCRYPTION_KEY when there is none (fresh is true), and refuse to start
// (ok is false) when it holds another key. h.mu is held.
func (h *host) checkSettingsLocked(c Container, started time.Time) (fresh, ok bool) {
	path := filepath.Join(c.DataDir, "config")
	key := h.cache[c.Name].encKey
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if key == "" {
			key = randomHex(24) // n8n generates one when the environment has none
		}
		b, _ := json.Marshal(n8nSettings{EncryptionKey: key})
		err := os.MkdirAll(c.DataDir, 0o700)
		if err == nil {
			err = os.WriteFile(path, b, 0o600)
		}
		if err != nil {
			h.warnOnce(c, started, "sandbox: fake n8n cannot write its settings file", "err", err)
			return false, false
		}
		return true, true
	case err != nil:
		h.warnOnce(c, started, "sandbox: fake n8n cannot read its settings file", "err", err)
		return false, false
	}
	var s n8nSettings
	if json.Unmarshal(raw, &s) != nil {
		h.warnOnce(c, started, "sandbox: fake n8n finds its settings file corrupt")
		return false, false
	}
	if key != "" && s.EncryptionKey != key {
		// n8n: "Mismatching encryption keys. The encryption key in the settings file ...
		// does not match the N8N_ENCRYPTION_KEY env var." The process exits; no route.
		h.warnOnce(c, started, "sandbox: fake n8n refuses to start: the data dir holds another encryption key")
		return false, false
	}
	return false, true
}

// warnOnce logs a start failure once per container start, not on every request.
func (h *host) warnOnce(c Container, started time.Time, msg string, args ...any) {
	id := c.DataDir + "@" + started.String()
	if h.warned[id] {
		return
	}
	h.warned[id] = true
	h.world.log.Warn(msg, append([]any{"host", h.info.Name, "slug", c.Slug}, args...)...)
}

// N8n returns the fake n8n of instance slug, the one its container (running or stopped,
// on any host) has, or nil when there is no such container or its n8n never started.
// Calling it starts the fake of a running container that no request has reached yet.
func (w *World) N8n(slug string) *n8ntest.Server {
	w.mu.Lock()
	hs := make([]*host, 0, len(w.order))
	for _, n := range w.order {
		hs = append(hs, w.hosts[n])
	}
	w.mu.Unlock()
	for _, h := range hs {
		if srv := h.n8n(slug); srv != nil {
			return srv
		}
	}
	return nil
}

func (h *host) n8n(slug string) *n8ntest.Server {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs, err := h.scanLocked()
	if err != nil {
		return nil
	}
	h.syncLocked(cs)
	for _, c := range cs {
		if c.Slug == slug {
			if p := h.procs[procKey(c)]; p != nil {
				return p.srv
			}
		}
	}
	return nil
}
