package traefiktest

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// echo is a backend that reports what reached it.
type echoed struct {
	Backend       string `json:"backend"`
	Host          string `json:"host"`
	Path          string `json:"path"`
	Authorization string `json:"authorization"`
	ForwardedHost string `json:"forwarded_host"`
	ForwardedFor  string `json:"forwarded_for"`
	RemoteUser    string `json:"remote_user"`
}

func echoBackend(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(echoed{
			Backend: name, Host: r.Host, Path: r.URL.Path,
			Authorization: r.Header.Get("Authorization"),
			ForwardedHost: r.Header.Get("X-Forwarded-Host"),
			ForwardedFor:  r.Header.Get("X-Forwarded-For"),
			RemoteUser:    r.Header.Get("X-Remote-User"),
		})
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func htpasswd(t *testing.T, user, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + "$2y$" + string(h[4:])
}

type result struct {
	status int
	header http.Header
	body   string
	echo   echoed
}

func do(t *testing.T, h http.Handler, method, target string, user, pass string) result {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.RemoteAddr = "203.0.113.7:5555"
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := result{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &res.echo); err != nil {
			t.Fatalf("backend answer %q: %v", rec.Body.String(), err)
		}
	}
	return res
}

func TestPrioritySemantics(t *testing.T) {
	t.Parallel()
	short, long, explicit := echoBackend(t, "short"), echoBackend(t, "long"), echoBackend(t, "explicit")
	in := &Ingress{}
	in.SetContainers([]Container{
		{Name: "short", Addr: short, Labels: map[string]string{
			"traefik.enable":                                       "true",
			"traefik.http.routers.short.rule":                      "Host(`a.test`)",
			"traefik.http.services.short.loadbalancer.server.port": "80",
		}},
		{Name: "long", Addr: long, Labels: map[string]string{
			"traefik.enable":                                      "true",
			"traefik.http.routers.long.rule":                      "Host(`a.test`) && PathPrefix(`/api`)",
			"traefik.http.services.long.loadbalancer.server.port": "80",
		}},
		{Name: "explicit", Addr: explicit, Labels: map[string]string{
			"traefik.enable":                                          "true",
			"traefik.http.routers.explicit.rule":                      "Host(`a.test`) && Path(`/api/x`)",
			"traefik.http.routers.explicit.priority":                  "1",
			"traefik.http.services.explicit.loadbalancer.server.port": "80",
		}},
	})
	cfg, err := in.Config()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Routers["short"].Priority, len("Host(`a.test`)"); got != want {
		t.Errorf("default priority = %d, want len(rule) = %d", got, want)
	}
	tests := []struct {
		path, want string
	}{
		{"/", "short"},
		{"/api/y", "long"}, // the longer rule wins by default
		// An explicit low priority loses to the longer default even when more specific.
		{"/api/x", "long"},
	}
	for _, tt := range tests {
		res := do(t, in, "GET", "http://a.test"+tt.path, "", "")
		if res.status != 200 || res.echo.Backend != tt.want {
			t.Errorf("GET %s → %d %s, want backend %s", tt.path, res.status, res.echo.Backend, tt.want)
		}
	}
	if res := do(t, in, "GET", "http://b.test/", "", ""); res.status != 404 || res.body != "404 page not found\n" {
		t.Errorf("unknown host → %d %q, want Traefik's 404", res.status, res.body)
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t, "n8n")
	labels := func(removeHeader string) map[string]string {
		l := map[string]string{
			"traefik.enable":                                       "true",
			"traefik.http.routers.app.rule":                        "Host(`a.test`)",
			"traefik.http.routers.app.service":                     "app",
			"traefik.http.routers.app.middlewares":                 "guard@docker",
			"traefik.http.services.app.loadbalancer.server.port":   "5678",
			"traefik.http.middlewares.guard.basicauth.users":       htpasswd(t, "prov", "Right-Pass1") + "," + htpasswd(t, "ops", "Other-Pass2"),
			"traefik.http.middlewares.guard.basicauth.headerfield": "X-Remote-User",
		}
		if removeHeader != "" {
			l["traefik.http.middlewares.guard.basicauth.removeheader"] = removeHeader
		}
		return l
	}
	keep := &Ingress{}
	keep.SetContainers([]Container{{Name: "app", Addr: backend, Labels: labels("")}})
	strip := &Ingress{}
	strip.SetContainers([]Container{{Name: "app", Addr: backend, Labels: labels("true")}})

	tests := []struct {
		name       string
		user, pass string
		want       int
	}{
		{"no credential", "", "", 401},
		{"wrong password", "prov", "Wrong-Pass1", 401},
		{"unknown user", "mallory", "Right-Pass1", 401},
		{"password of another user", "ops", "Right-Pass1", 401},
		{"right", "prov", "Right-Pass1", 200},
		{"second user", "ops", "Other-Pass2", 200},
	}
	for _, tt := range tests {
		res := do(t, keep, "POST", "http://a.test/rest/owner/setup", tt.user, tt.pass)
		if res.status != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, res.status, tt.want)
			continue
		}
		if tt.want == 401 {
			if got := res.header.Get("WWW-Authenticate"); got != `Basic realm="traefik"` {
				t.Errorf("%s: WWW-Authenticate = %q", tt.name, got)
			}
			if res.body != "401 Unauthorized\n" {
				t.Errorf("%s: body %q", tt.name, res.body)
			}
			continue
		}
		if res.echo.Authorization == "" {
			t.Errorf("%s: removeheader unset must forward Authorization, as Traefik's default does", tt.name)
		}
		if res.echo.RemoteUser != tt.user {
			t.Errorf("%s: headerfield carried %q, want %q", tt.name, res.echo.RemoteUser, tt.user)
		}
	}
	res := do(t, strip, "POST", "http://a.test/rest/owner/setup", "prov", "Right-Pass1")
	if res.status != 200 || res.echo.Authorization != "" {
		t.Errorf("removeheader=true: status %d, Authorization %q forwarded", res.status, res.echo.Authorization)
	}
}

func TestCheckSecretFormats(t *testing.T) {
	t.Parallel()
	bc, _ := bcrypt.GenerateFromPassword([]byte("hello"), bcrypt.MinCost)
	tests := []struct {
		password, secret string
		want             bool
	}{
		// Vectors from Apache htpasswd, as used by go-http-auth's tests.
		{"apache", "$apr1$J.w5a/..$IW9y6DR0oO/ADuhlMF5/X1", true},
		{"apache2", "$apr1$J.w5a/..$IW9y6DR0oO/ADuhlMF5/X1", false},
		{"pass", "$1$YeNsbWdH$wvOF8JdqsoiLix754LTW90", true},
		{"hello", "{SHA}qvTGHdzF6KLavt4PO0gs2a6pQ00=", true},
		{"hellO", "{SHA}qvTGHdzF6KLavt4PO0gs2a6pQ00=", false},
		{"hello", string(bc), true},
		{"hello", "$2y$" + string(bc[4:]), true},
		{"hello", "$2b$" + string(bc[4:]), true},
		{"hellx", "$2y$" + string(bc[4:]), false},
		{"hello", "hello", false}, // plain text is not a hash Traefik accepts
		{"", "$apr1$$", false},
	}
	for _, tt := range tests {
		if got := CheckSecret(tt.password, tt.secret); got != tt.want {
			t.Errorf("CheckSecret(%q, %q) = %v, want %v", tt.password, tt.secret, got, tt.want)
		}
	}
}

func TestParseLabelsDropsWhatTraefikDrops(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"traefik.enable":                                    "true",
		"traefik.http.routers.ok.rule":                      "Host(`ok.test`)",
		"traefik.http.services.ok.loadbalancer.server.port": "80",
	}
	tests := []struct {
		name    string
		labels  map[string]string
		wantErr string
		router  string // router expected to be dropped (or the container skipped)
	}{
		{"missing middleware", map[string]string{
			"traefik.enable":                                   "true",
			"traefik.http.routers.g.rule":                      "Host(`g.test`) && Path(`/s`)",
			"traefik.http.routers.g.middlewares":               "nope",
			"traefik.http.services.g.loadbalancer.server.port": "80",
		}, `middleware "nope" does not exist`, "g"},
		{"bad rule", map[string]string{
			"traefik.enable":                                   "true",
			"traefik.http.routers.g.rule":                      "Host(`g.test`) && Path(/s)",
			"traefik.http.services.g.loadbalancer.server.port": "80",
		}, "router g dropped", "g"},
		{"typo in field skips the container", map[string]string{
			"traefik.enable":                                   "true",
			"traefik.http.routers.g.rule":                      "Host(`g.test`)",
			"traefik.http.routers.g.middleware":                "x",
			"traefik.http.services.g.loadbalancer.server.port": "80",
		}, "field not found", "g"},
		{"malformed users", map[string]string{
			"traefik.enable":                                   "true",
			"traefik.http.routers.g.rule":                      "Host(`g.test`)",
			"traefik.http.routers.g.middlewares":               "m",
			"traefik.http.middlewares.m.basicauth.users":       "justauser",
			"traefik.http.services.g.loadbalancer.server.port": "80",
		}, "malformed user entry", "g"},
		{"two services and no router service", map[string]string{
			"traefik.enable":                                   "true",
			"traefik.http.routers.g.rule":                      "Host(`g.test`)",
			"traefik.http.services.a.loadbalancer.server.port": "80",
			"traefik.http.services.b.loadbalancer.server.port": "81",
		}, "has no service", "g"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := ParseLabels([]Container{
				{Name: "ok", Addr: "127.0.0.1:1", Labels: good},
				{Name: "bad", Addr: "127.0.0.1:2", Labels: tt.labels},
			})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, tt.wantErr)
			}
			if _, ok := cfg.Routers[tt.router]; ok {
				t.Errorf("router %s survived", tt.router)
			}
			if _, ok := cfg.Routers["ok"]; !ok {
				t.Errorf("the healthy container's router was lost")
			}
		})
	}
}

func TestParseLabelsDefaultsAndMerging(t *testing.T) {
	t.Parallel()
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	replica := func(addr string) Container {
		return Container{Name: "web-" + addr, Addr: addr, Labels: map[string]string{
			"traefik.enable":                                     "true",
			"traefik.http.routers.web.rule":                      "Host(`web.test`)",
			"traefik.http.routers.web.service":                   "web",
			"traefik.http.services.web.loadbalancer.server.port": "80",
		}}
	}
	host, port, _ := net.SplitHostPort(a)
	in := &Ingress{}
	in.SetContainers([]Container{
		replica(a), replica(b),
		// No service labels and no rule: the defaults Traefik derives from the name.
		{Name: "/solo_app", Addr: host, Labels: map[string]string{
			"traefik.enable":                                          "true",
			"traefik.http.routers.solo.entrypoints":                   "websecure",
			"traefik.http.services.solo-app.loadbalancer.server.port": port,
		}},
		// Not enabled: invisible.
		{Name: "hidden", Addr: a, Labels: map[string]string{
			"traefik.http.routers.hidden.rule": "Host(`hidden.test`)",
		}},
	})
	cfg, err := in.Config()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.Services["web"].Servers); got != 2 {
		t.Fatalf("web servers = %d, want both replicas", got)
	}
	seen := map[string]bool{}
	for range 4 {
		seen[do(t, in, "GET", "http://web.test/", "", "").echo.Backend] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("round robin reached %v, want a and b", seen)
	}
	if r := cfg.Routers["solo"]; r == nil || r.Rule != "Host(`solo-app`)" || r.Service != "solo-app" {
		t.Errorf("default rule/service: %+v", r)
	}
	if res := do(t, in, "GET", "http://solo-app/", "", ""); res.status != 200 {
		t.Errorf("default-rule router → %d", res.status)
	}
	web := &Ingress{EntryPoint: "web", Backends: in.currentContainers}
	if res := do(t, web, "GET", "http://solo-app/", "", ""); res.status != 404 {
		t.Errorf("router on websecure answered on entry point web: %d", res.status)
	}
	if res := do(t, in, "GET", "http://hidden.test/", "", ""); res.status != 404 {
		t.Errorf("container without traefik.enable was routed: %d", res.status)
	}
}

func TestProxyBehaviour(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t, "n8n")
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := dead.Listener.Addr().String()
	dead.Close()

	in := &Ingress{}
	in.SetContainers([]Container{
		{Name: "up", Addr: backend, Labels: map[string]string{
			"traefik.enable":                                    "true",
			"traefik.http.routers.up.rule":                      "Host(`up.test`)",
			"traefik.http.services.up.loadbalancer.server.port": "5678",
		}},
		{Name: "down", Addr: deadAddr, Labels: map[string]string{
			"traefik.enable":                                      "true",
			"traefik.http.routers.down.rule":                      "Host(`down.test`)",
			"traefik.http.services.down.loadbalancer.server.port": "5678",
		}},
	})
	res := do(t, in, "GET", "http://UP.test:443//rest/./login", "", "")
	if res.status != 200 {
		t.Fatalf("status %d %q", res.status, res.body)
	}
	if res.echo.Host != "UP.test:443" || res.echo.ForwardedHost != "UP.test:443" {
		t.Errorf("Host %q, X-Forwarded-Host %q: the Host header must pass through", res.echo.Host, res.echo.ForwardedHost)
	}
	if res.echo.Path != "/rest/login" {
		t.Errorf("path %q, want the sanitized /rest/login", res.echo.Path)
	}
	if res.echo.ForwardedFor != "203.0.113.7" {
		t.Errorf("X-Forwarded-For %q", res.echo.ForwardedFor)
	}
	if res := do(t, in, "GET", "http://down.test/", "", ""); res.status != 502 || res.body != "Bad Gateway" {
		t.Errorf("dead backend → %d %q, want 502 Bad Gateway", res.status, res.body)
	}
	var zero Ingress
	if res := do(t, &zero, "GET", "http://up.test/", "", ""); res.status != 404 {
		t.Errorf("zero Ingress → %d, want 404", res.status)
	}
}

func TestLoadLabelFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "labels")
	content := "# written by n8nctl\n" +
		"traefik.enable=true\n" +
		"\n" +
		"  traefik.http.routers.n8n-acme-setup.rule=Host(`acme.example.com`) && Path(`/rest/owner/setup`)\r\n" +
		"traefik.http.middlewares.n8n-acme-setup-auth.basicauth.users=provisioner:$2y$05$abc=def\n" +
		"flag\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadLabelFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"traefik.enable": "true",
		"traefik.http.routers.n8n-acme-setup.rule":                     "Host(`acme.example.com`) && Path(`/rest/owner/setup`)",
		"traefik.http.middlewares.n8n-acme-setup-auth.basicauth.users": "provisioner:$2y$05$abc=def",
		"flag": "",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d labels %v, want %d", len(got), got, len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := LoadLabelFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
