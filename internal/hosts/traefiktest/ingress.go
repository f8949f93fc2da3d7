// Package traefiktest is a fake Traefik ingress for tests: an http.Handler that routes
// requests the way Traefik's Docker provider would from the containers' labels, so that a
// test can put the host's real label set in front of fake backends and check who gets
// through.
//
// Covered (Traefik v3 behaviour unless noted):
//   - labels: traefik.enable (exposedByDefault=false), http routers (rule, priority,
//     entrypoints, service, middlewares, tls), services (loadbalancer.server.port, scheme,
//     passhostheader; same-named services on several containers are balanced round-robin),
//     basicauth middlewares (users, realm, removeheader, headerfield); the default service
//     and default rule a container gets; containers whose labels do not decode are skipped
//     and routers with a bad rule or a missing service/middleware are dropped, as Traefik
//     does (ParseLabels reports them);
//   - rules: Host (case-insensitive, port ignored, several domains allowed as in v2),
//     HostRegexp, Path, PathPrefix, PathRegexp, Method, Header, with &&, ||, ! and
//     parentheses; default priority len(rule); the highest priority wins (ties go to the
//     router name that sorts first, where Traefik's order is unspecified);
//   - the entry point's default path sanitizing (//, /./, /../ cleaned before routing);
//   - basicauth with bcrypt, MD5-crypt ($apr1$, $1$) and {SHA} hashes; a refused request
//     gets 401, `WWW-Authenticate: Basic realm="traefik"` and "401 Unauthorized\n". As in
//     Traefik, removeheader defaults to false, so the backend sees the Authorization header
//     unless the labels set removeheader=true;
//   - answers: no router → 404 "404 page not found"; backend unreachable → 502 "Bad
//     Gateway"; backend timeout → 504; the Host header is passed through and
//     X-Forwarded-For/-Host/-Proto and X-Real-Ip are set.
//
// Not covered: TLS termination and certificates (wrap the handler in an httptest TLS server
// if a test needs https), TCP/UDP routers, other middlewares, health checks, sticky
// sessions, weighted services, the file provider and cross-provider references
// (name@file), and v3's rejection of encoded characters in paths.
package traefiktest

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// Ingress routes requests to containers by their Traefik labels. The zero value serves an
// empty configuration (every request is a 404); give it containers with SetContainers or a
// Backends function. It is safe for concurrent use and re-reads the containers on every
// request, like a provider that never misses an event.
type Ingress struct {
	// Backends, when set, is called on every request for the current containers and takes
	// precedence over SetContainers.
	Backends func() []Container
	// EntryPoint, when set, limits routing to routers that list it (or list no entry point).
	EntryPoint string
	// Transport carries proxied requests; nil uses a transport of the Ingress's own.
	Transport http.RoundTripper

	mu         sync.Mutex
	containers []Container
	rr         map[string]int
	transport  *http.Transport
}

// SetContainers replaces the containers the ingress routes to.
func (in *Ingress) SetContainers(cs []Container) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.containers = slices.Clone(cs)
}

// Config returns the configuration the ingress would route with now, and the error
// describing what ParseLabels dropped.
func (in *Ingress) Config() (*Config, error) {
	return ParseLabels(in.currentContainers())
}

func (in *Ingress) currentContainers() []Container {
	if in.Backends != nil {
		return in.Backends()
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.containers)
}

// ServeHTTP routes req as Traefik would.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// A bad container or router is skipped, not fatal, as in Traefik.
	cfg, _ := in.Config()
	sanitizePath(req)

	router := selectRouter(cfg, req, in.EntryPoint)
	if router == nil {
		http.NotFound(w, req)
		return
	}
	for _, name := range router.Middlewares {
		ba := cfg.Middlewares[name].BasicAuth
		user, ok := ba.Check(req)
		if !ok {
			ba.RequireAuth(w)
			return
		}
		req.URL.User = url.User(user)
		if ba.HeaderField != "" {
			req.Header[ba.HeaderField] = []string{user}
		}
		if ba.RemoveHeader {
			req.Header.Del("Authorization")
		}
	}
	in.proxy(w, req, cfg.Services[router.Service])
}

// selectRouter returns the matching router of highest priority, or nil.
func selectRouter(cfg *Config, req *http.Request, entryPoint string) *Router {
	routers := make([]*Router, 0, len(cfg.Routers))
	for _, r := range cfg.Routers {
		if entryPoint != "" && len(r.EntryPoints) > 0 && !slices.Contains(r.EntryPoints, entryPoint) {
			continue
		}
		routers = append(routers, r)
	}
	slices.SortFunc(routers, func(a, b *Router) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, r := range routers {
		if r.rule.Match(req) {
			return r
		}
	}
	return nil
}

// sanitizePath cleans the request path as Traefik's entry points do by default
// (sanitizePath=true), keeping a trailing slash, so that "//rest/./owner/setup" is routed
// and forwarded as "/rest/owner/setup".
func sanitizePath(req *http.Request) {
	p := req.URL.Path
	if p == "" || !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return
	}
	clean := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	req.URL.Path = clean
	req.URL.RawPath = ""
}

func (in *Ingress) proxy(w http.ResponseWriter, req *http.Request, svc *Service) {
	in.mu.Lock()
	if in.rr == nil {
		in.rr = map[string]int{}
	}
	server := svc.Servers[in.rr[svc.Name]%len(svc.Servers)]
	in.rr[svc.Name]++
	transport := in.Transport
	if transport == nil {
		if in.transport == nil {
			in.transport = &http.Transport{Proxy: nil, DialContext: (&net.Dialer{}).DialContext}
		}
		transport = in.transport
	}
	in.mu.Unlock()

	target := &url.URL{Scheme: svc.Scheme, Host: server}
	rp := &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.User = nil
			if svc.PassHostHeader {
				pr.Out.Host = pr.In.Host
			}
			pr.SetXForwarded()
			if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
				pr.Out.Header.Set("X-Real-Ip", ip)
			}
		},
		ErrorHandler: proxyError,
	}
	rp.ServeHTTP(w, req)
}

// proxyError answers like Traefik's proxy: the status text alone as the body.
func proxyError(w http.ResponseWriter, req *http.Request, err error) {
	status := http.StatusBadGateway
	var netErr net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		status = http.StatusBadGateway
	case req.Context().Err() != nil:
		status = 499 // client closed the request
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		status = http.StatusGatewayTimeout
	}
	text := http.StatusText(status)
	if status == 499 {
		text = "Client Closed Request"
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text))
}
