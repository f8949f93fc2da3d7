package traefiktest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Container is what the Docker provider sees of one container: its name, its labels and the
// address where its service port answers.
type Container struct {
	Name   string
	Labels map[string]string
	// Addr is host:port of the backend. Traefik would dial the container's IP on the port the
	// labels declare; a fake backend listens on a port of its own, so a port here wins over
	// the declared one. A bare host gets the declared port appended.
	Addr string
}

// Config is the dynamic configuration the Docker provider derives from container labels.
type Config struct {
	Routers     map[string]*Router
	Services    map[string]*Service
	Middlewares map[string]*Middleware
}

// Router is one traefik.http.routers.<name> entry.
type Router struct {
	Name        string
	Rule        string
	Priority    int // the label's value, or len(Rule) when unset or 0, as in Traefik
	EntryPoints []string
	Service     string
	Middlewares []string
	TLS         bool

	rule *Rule
}

// Service is one traefik.http.services.<name> entry with the servers Traefik balances over.
type Service struct {
	Name           string
	Port           int // the declared loadbalancer.server.port (0 when not declared)
	Scheme         string
	PassHostHeader bool
	Servers        []string // host:port
}

// Middleware is one traefik.http.middlewares.<name> entry. Only basicauth is supported.
type Middleware struct {
	Name      string
	BasicAuth *BasicAuth
}

// ParseLabels builds the dynamic configuration from containers' labels the way Traefik's
// Docker provider does with exposedByDefault=false: only containers labelled
// traefik.enable=true count; a container without service labels gets a service named after
// it; a router without a service uses its container's only service; a router without a rule
// gets Host(`<container name>`); services of the same name on several containers balance
// over all of them.
//
// Like Traefik it serves what it can: a container whose labels do not decode is skipped
// entirely, and a router whose rule does not parse, or that names a missing service or
// middleware, is dropped. The returned Config holds what survived and the error lists what
// was dropped and why (nil when nothing was). A dropped guard router means its path falls
// through to a lower-priority router, exactly as in Traefik, so callers that care check it.
func ParseLabels(containers []Container) (*Config, error) {
	cfg := &Config{
		Routers:     map[string]*Router{},
		Services:    map[string]*Service{},
		Middlewares: map[string]*Middleware{},
	}
	var errs []error
	routerSeen := map[string]int{}
	mwBad := map[string]bool{}
	rtBad := map[string]bool{}

	for _, c := range containers {
		if !strings.EqualFold(c.Labels["traefik.enable"], "true") {
			continue
		}
		cc, err := parseContainer(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s skipped: %w", c.Name, err))
			continue
		}
		for name, r := range cc.Routers {
			routerSeen[name]++
			if prev, ok := cfg.Routers[name]; ok {
				if !sameRouter(prev, r) {
					rtBad[name] = true
				}
				continue
			}
			cfg.Routers[name] = r
		}
		for name, s := range cc.Services {
			if prev, ok := cfg.Services[name]; ok {
				prev.Servers = append(prev.Servers, s.Servers...)
				continue
			}
			cfg.Services[name] = s
		}
		for name, m := range cc.Middlewares {
			if prev, ok := cfg.Middlewares[name]; ok {
				if !reflect.DeepEqual(prev.BasicAuth.Users, m.BasicAuth.Users) ||
					prev.BasicAuth.Realm != m.BasicAuth.Realm ||
					prev.BasicAuth.RemoveHeader != m.BasicAuth.RemoveHeader ||
					prev.BasicAuth.HeaderField != m.BasicAuth.HeaderField {
					mwBad[name] = true
				}
				continue
			}
			cfg.Middlewares[name] = m
		}
	}
	for name := range rtBad {
		errs = append(errs, fmt.Errorf("router %s defined %d times with different configurations: dropped", name, routerSeen[name]))
		delete(cfg.Routers, name)
	}
	for name := range mwBad {
		errs = append(errs, fmt.Errorf("middleware %s defined several times with different configurations: dropped", name))
		delete(cfg.Middlewares, name)
	}

	for name, r := range cfg.Routers {
		var err error
		r.rule, err = ParseRule(r.Rule)
		if err == nil && r.Priority == 0 {
			r.Priority = len(r.Rule)
		}
		if err == nil {
			if _, ok := cfg.Services[r.Service]; !ok {
				err = fmt.Errorf("service %q does not exist", r.Service)
			}
		}
		for _, m := range r.Middlewares {
			if err != nil {
				break
			}
			if _, ok := cfg.Middlewares[m]; !ok {
				err = fmt.Errorf("middleware %q does not exist", m)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("router %s dropped: %w", name, err))
			delete(cfg.Routers, name)
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return cfg, errors.Join(errs...)
}

func sameRouter(a, b *Router) bool {
	return a.Rule == b.Rule && a.Priority == b.Priority && a.Service == b.Service && a.TLS == b.TLS &&
		slices.Equal(a.EntryPoints, b.EntryPoints) && slices.Equal(a.Middlewares, b.Middlewares)
}

// parseContainer decodes one container's labels. Unknown fields fail the whole container,
// as Traefik's label decoder does ("field not found").
func parseContainer(c Container) (*Config, error) {
	cc := &Config{Routers: map[string]*Router{}, Services: map[string]*Service{}, Middlewares: map[string]*Middleware{}}
	svcPorts := map[string]string{}
	keys := make([]string, 0, len(c.Labels))
	for k := range c.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	for _, key := range keys {
		val := c.Labels[key]
		parts := strings.Split(key, ".")
		if len(parts) < 2 || !strings.EqualFold(parts[0], "traefik") {
			continue
		}
		// Option names are case-insensitive in Traefik's labels; object names are not.
		if len(parts) < 5 || !strings.EqualFold(parts[1], "http") {
			continue // traefik.enable, traefik.docker.network, tcp/udp: not HTTP routing
		}
		kind, name := strings.ToLower(parts[2]), parts[3]
		field := strings.ToLower(strings.Join(parts[4:], "."))
		name = strings.TrimSuffix(name, "@docker")
		switch kind {
		case "routers":
			r := cc.Routers[name]
			if r == nil {
				r = &Router{Name: name}
				cc.Routers[name] = r
			}
			if err := setRouterField(r, field, val); err != nil {
				return nil, fmt.Errorf("label %s: %w", key, err)
			}
		case "services":
			s := cc.Services[name]
			if s == nil {
				s = &Service{Name: name, Scheme: "http", PassHostHeader: true}
				cc.Services[name] = s
			}
			switch field {
			case "loadbalancer.server.port":
				p, err := strconv.Atoi(val)
				if err != nil || p <= 0 || p > 65535 {
					return nil, fmt.Errorf("label %s: bad port %q", key, val)
				}
				s.Port = p
				svcPorts[name] = val
			case "loadbalancer.server.scheme":
				s.Scheme = strings.ToLower(val)
			case "loadbalancer.passhostheader":
				b, err := strconv.ParseBool(val)
				if err != nil {
					return nil, fmt.Errorf("label %s: %w", key, err)
				}
				s.PassHostHeader = b
			default:
				return nil, fmt.Errorf("label %s: field not found (or not supported by this fake)", key)
			}
		case "middlewares":
			m := cc.Middlewares[name]
			if m == nil {
				m = &Middleware{Name: name}
				cc.Middlewares[name] = m
			}
			typ, sub, _ := strings.Cut(field, ".")
			if typ != "basicauth" {
				return nil, fmt.Errorf("label %s: middleware type %q not supported by this fake", key, typ)
			}
			if m.BasicAuth == nil {
				m.BasicAuth = &BasicAuth{}
			}
			switch sub {
			case "users":
				for _, u := range strings.Split(val, ",") {
					if u = strings.TrimSpace(u); u != "" {
						m.BasicAuth.Users = append(m.BasicAuth.Users, u)
					}
				}
			case "realm":
				m.BasicAuth.Realm = val
			case "removeheader":
				b, err := strconv.ParseBool(val)
				if err != nil {
					return nil, fmt.Errorf("label %s: %w", key, err)
				}
				m.BasicAuth.RemoveHeader = b
			case "headerfield":
				m.BasicAuth.HeaderField = val
			default:
				return nil, fmt.Errorf("label %s: basicauth field %q not supported by this fake", key, sub)
			}
		default:
			return nil, fmt.Errorf("label %s: unknown kind %q", key, kind)
		}
	}

	for name, m := range cc.Middlewares {
		if err := m.BasicAuth.init(); err != nil {
			return nil, fmt.Errorf("middleware %s: %w", name, err)
		}
		if len(m.BasicAuth.Users) == 0 {
			return nil, fmt.Errorf("middleware %s: basicauth without users", name)
		}
	}

	if len(cc.Services) == 0 && len(cc.Routers) > 0 {
		n := normalizeName(c.Name)
		cc.Services[n] = &Service{Name: n, Scheme: "http", PassHostHeader: true}
	}
	for name, s := range cc.Services {
		addr, err := serverAddr(c.Addr, svcPorts[name])
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		s.Servers = []string{addr}
	}
	for _, r := range cc.Routers {
		if r.Rule == "" {
			r.Rule = "Host(`" + normalizeName(c.Name) + "`)"
		}
		if r.Service == "" {
			if len(cc.Services) != 1 {
				return nil, fmt.Errorf("router %s has no service and the container defines %d", r.Name, len(cc.Services))
			}
			for n := range cc.Services {
				r.Service = n
			}
		}
	}
	return cc, nil
}

func setRouterField(r *Router, field, val string) error {
	switch {
	case field == "rule":
		r.Rule = val
	case field == "priority":
		p, err := strconv.Atoi(val)
		if err != nil {
			return fmt.Errorf("bad priority %q", val)
		}
		r.Priority = p
	case field == "entrypoints":
		r.EntryPoints = splitList(val)
	case field == "service":
		r.Service = strings.TrimSuffix(val, "@docker")
	case field == "middlewares":
		for _, m := range splitList(val) {
			r.Middlewares = append(r.Middlewares, strings.TrimSuffix(m, "@docker"))
		}
	case field == "tls":
		b, err := strconv.ParseBool(val)
		if err != nil {
			return err
		}
		r.TLS = b
	case strings.HasPrefix(field, "tls."), strings.HasPrefix(field, "observability."), field == "rulesyntax":
		// Certificates and tracing do not change which router answers.
	default:
		return fmt.Errorf("field not found")
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func serverAddr(addr, port string) (string, error) {
	if addr == "" {
		return "", errors.New("container has no address")
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr, nil
	}
	if port == "" {
		return "", errors.New("no loadbalancer.server.port and the container address has no port")
	}
	return net.JoinHostPort(addr, port), nil
}

// normalizeName mirrors Traefik's normalize template function: anything but letters and
// digits becomes a dash.
func normalizeName(name string) string {
	b := []byte(strings.TrimPrefix(name, "/"))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

// LoadLabelFile reads a Docker --label-file: one key=value per line, blank lines and lines
// starting with # ignored, the value taken verbatim (no quotes, no $ expansion, so bcrypt
// hashes survive). A line without "=" is a label with an empty value, as in Docker.
func LoadLabelFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	labels := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimLeft(sc.Text(), " \t")
		line = strings.TrimSuffix(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		if strings.ContainsAny(k, " \t") || k == "" {
			return nil, fmt.Errorf("%s:%d: invalid label name %q", path, n, k)
		}
		labels[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return labels, nil
}
