// Package deploy_test checks the deployment files against the code: the Prometheus
// configuration and alert rules, the Grafana dashboard and provisioning, the compose
// file's promises, and the build context. Every provisioner_* metric they use must be in
// README's metrics table and registered by the code, so a renamed metric breaks here and
// not on an operator's dashboard.
package deploy_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// root is the repository, one folder up from this test's.
const root = ".."

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var metricName = regexp.MustCompile(`\bprovisioner_[a-z0-9_]+\b`)

// documented returns the metrics of README's table.
func documented(t *testing.T) map[string]bool {
	t.Helper()
	row := regexp.MustCompile("^\\| `(provisioner_[a-z0-9_]+)` \\|")
	out := map[string]bool{}
	for _, line := range strings.Split(string(read(t, "README.md")), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			out[m[1]] = true
		}
	}
	if len(out) < 10 {
		t.Fatalf("README's metrics table lists %d metrics: is it still there?", len(out))
	}
	return out
}

// registered returns every provisioner_* name quoted in the code outside tests: the
// names the service registers.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	quoted := regexp.MustCompile(`"(provisioner_[a-z0-9_]+)"`)
	out := map[string]bool{}
	for _, dir := range []string{"cmd", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			for _, m := range quoted.FindAllStringSubmatch(string(b), -1) {
				out[m[1]] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// base strips a histogram's series suffix.
func base(name string, known map[string]bool) string {
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if b, ok := strings.CutSuffix(name, suffix); ok && known[b] {
			return b
		}
	}
	return name
}

func TestEveryDocumentedMetricIsRegistered(t *testing.T) {
	t.Parallel()
	code := registered(t)
	for name := range documented(t) {
		if !code[name] {
			t.Errorf("README documents %s, which no code registers", name)
		}
	}
}

// checkExpr checks what can be checked of a PromQL expression without Prometheus' parser
// (a large dependency): its brackets balance, its range selectors are durations, and its
// metrics are documented and registered. It returns the metrics used.
func checkExpr(t *testing.T, where, expr string, docs, code map[string]bool) []string {
	t.Helper()
	stack := []rune{}
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inString := false
	for _, c := range expr {
		switch {
		case c == '"':
			inString = !inString
		case inString:
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case pairs[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				t.Errorf("%s: unbalanced %q in %s", where, c, expr)
				return nil
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) != 0 || inString {
		t.Errorf("%s: unclosed brackets or quotes in %s", where, expr)
	}
	for _, m := range regexp.MustCompile(`\[([^\]]+)\]`).FindAllStringSubmatch(expr, -1) {
		if m[1] == "$__rate_interval" {
			continue
		}
		if _, err := model.ParseDuration(m[1]); err != nil {
			t.Errorf("%s: range [%s] is not a duration", where, m[1])
		}
	}
	var used []string
	for _, name := range metricName.FindAllString(expr, -1) {
		b := base(name, docs)
		if !docs[b] || !code[b] {
			t.Errorf("%s uses %s: documented %v, registered %v", where, name, docs[b], code[b])
		}
		used = append(used, b)
	}
	return used
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	var rules ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(read(t, "deploy/prometheus/alerts.yml"))))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatal(err)
	}
	docs, code := documented(t), registered(t)
	names := map[string]bool{}
	used := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || names[r.Alert] {
				t.Errorf("group %s: a rule without a name or expression, or a duplicate: %q", g.Name, r.Alert)
			}
			names[r.Alert] = true
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: needs a severity label and a summary", r.Alert)
			}
			for _, m := range checkExpr(t, r.Alert, r.Expr, docs, code) {
				used[m] = true
			}
		}
	}
	// The alerts the issue asks for, by what they watch.
	for _, m := range []string{
		"provisioner_instance_up", "provisioner_saga_step_duration_seconds", "provisioner_jobs",
		"provisioner_job_oldest_age_seconds", "provisioner_dependency_request_duration_seconds",
		"provisioner_host_memory_committed_bytes", "provisioner_host_disk_committed_bytes",
		"provisioner_webhook_events", "provisioner_billing_webhooks_total",
	} {
		if !used[m] {
			t.Errorf("no alert watches %s", m)
		}
	}
}

func TestPrometheusConfig(t *testing.T) {
	t.Parallel()
	var cfg struct {
		Global        map[string]string `yaml:"global"`
		RuleFiles     []string          `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(read(t, "deploy/prometheus/prometheus.yml"))))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	for _, f := range cfg.RuleFiles {
		read(t, filepath.Join("deploy/prometheus", f))
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "provisioner" || cfg.ScrapeConfigs[0].MetricsPath != "/metrics" {
		t.Fatalf("scrape configs: %+v", cfg.ScrapeConfigs)
	}
	// The target is the compose file's metrics listener.
	compose := composeFile(t)
	addr := compose.Services["provisioner"].Environment["PROVISIONER_METRICS_ADDR"]
	_, port, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(addr, "${PROVISIONER_METRICS_ADDR:-"), "}"), ":")
	if got := cfg.ScrapeConfigs[0].StaticConfigs[0].Targets; !slices.Equal(got, []string{"provisioner:" + port}) {
		t.Errorf("targets %v, want provisioner:%s (PROVISIONER_METRICS_ADDR %q)", got, port, addr)
	}
}

// dashboard is the part of Grafana's dashboard model the check reads.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	var d dashboard
	if err := json.Unmarshal(read(t, "deploy/grafana/dashboards/provisioner.json"), &d); err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Datasources []struct {
			UID, Type, URL string
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(read(t, "deploy/grafana/provisioning/datasources/prometheus.yml"), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Fatalf("data sources: %+v", ds.Datasources)
	}
	var providers struct {
		Providers []struct {
			Options struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(read(t, "deploy/grafana/provisioning/dashboards/provisioner.yml"), &providers); err != nil {
		t.Fatal(err)
	}
	compose := composeFile(t)
	if len(providers.Providers) != 1 || !slices.Contains(compose.Services["grafana"].Volumes, "./deploy/grafana/dashboards:"+providers.Providers[0].Options.Path+":ro") {
		t.Errorf("the dashboards provider reads %+v, which compose does not mount", providers.Providers)
	}

	docs, code := documented(t), registered(t)
	used, ids := map[string]bool{}, map[int]bool{}
	var walk func([]panel)
	walk = func(list []panel) {
		for _, p := range list {
			if ids[p.ID] || p.Title == "" || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %d %q: duplicate id, no title or no size", p.ID, p.Title)
			}
			ids[p.ID] = true
			if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != ds.Datasources[0].UID || len(p.Targets) == 0) {
				t.Errorf("panel %q: not on the provisioned data source, or no query", p.Title)
			}
			for _, q := range p.Targets {
				for _, m := range checkExpr(t, "panel "+p.Title, q.Expr, docs, code) {
					used[m] = true
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	for m := range docs {
		if !used[m] {
			t.Errorf("the dashboard shows nothing of %s", m)
		}
	}
}

type compose struct {
	Services map[string]struct {
		Image           string            `yaml:"image"`
		Profiles        []string          `yaml:"profiles"`
		Environment     map[string]string `yaml:"environment"`
		Volumes         []string          `yaml:"volumes"`
		Ports           []string          `yaml:"ports"`
		StopGracePeriod string            `yaml:"stop_grace_period"`
		Healthcheck     struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

func composeFile(t *testing.T) compose {
	t.Helper()
	var c compose
	if err := yaml.Unmarshal(read(t, "docker-compose.yml"), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestComposeFile checks what docker-compose config cannot: that the file keeps the
// README's promises about the service it runs.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	c := composeFile(t)
	p := c.Services["provisioner"]
	// run.go gives requests and jobs 20 s on SIGTERM.
	if d, err := time.ParseDuration(p.StopGracePeriod); err != nil || d <= 20*time.Second {
		t.Errorf("stop_grace_period %q must exceed the service's 20 s shutdown", p.StopGracePeriod)
	}
	// The healthcheck runs what the image holds: the Dockerfile copies the binary there.
	dockerfile := string(read(t, "Dockerfile"))
	if len(p.Healthcheck.Test) < 3 || p.Healthcheck.Test[0] != "CMD" || p.Healthcheck.Test[2] != "healthcheck" ||
		!strings.Contains(dockerfile, "COPY --from=build /out/provisioner "+p.Healthcheck.Test[1]+"\n") {
		t.Errorf("healthcheck %v does not run the image's provisioner binary", p.Healthcheck.Test)
	}
	if !strings.Contains(dockerfile, `CMD ["`+strings.Join(p.Healthcheck.Test[1:], `", "`)+`"]`) {
		t.Errorf("the Dockerfile's HEALTHCHECK is not compose's %v", p.Healthcheck.Test)
	}
	// Mail reaches the catcher: Mailpit's SMTP port, without TLS (it has none, and
	// STARTTLS is mandatory otherwise).
	if smtp := p.Environment["PROVISIONER_SMTP_URL"]; !strings.Contains(smtp, "smtp://mailcatcher:1025?tls=none") {
		t.Errorf("PROVISIONER_SMTP_URL = %q, want the mail catcher", smtp)
	}
	if !strings.HasPrefix(c.Services["mailcatcher"].Image, "axllent/mailpit:") {
		t.Errorf("the mail catcher is %q; its SMTP port is Mailpit's 1025", c.Services["mailcatcher"].Image)
	}
	for _, name := range []string{"prometheus", "grafana"} {
		s := c.Services[name]
		if !slices.Equal(s.Profiles, []string{"monitoring"}) {
			t.Errorf("%s is not in the monitoring profile: %v", name, s.Profiles)
		}
		if _, tag, ok := strings.Cut(s.Image, ":"); !ok || tag == "latest" || tag == "" {
			t.Errorf("%s's image %q is not pinned", name, s.Image)
		}
		for _, v := range s.Volumes {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			}
		}
		for _, port := range s.Ports {
			if !strings.HasPrefix(port, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond this machine", name, port)
			}
		}
	}
	for name, s := range c.Services {
		if s.Image != "" && (!strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest")) {
			t.Errorf("%s's image %q is not pinned", name, s.Image)
		}
	}
}

// TestDockerignore checks the build context: the secrets and the database stay out, what
// the build compiles and embeds goes in.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	var patterns []string
	for _, line := range strings.Split(string(read(t, ".dockerignore")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	// ignored follows Docker's rule closely enough for these paths: a pattern matches the
	// path or one of its parent folders; "**/" matches any depth; "!" re-includes.
	ignored := func(path string) bool {
		out := false
		for _, p := range patterns {
			neg := strings.HasPrefix(p, "!")
			p = strings.TrimPrefix(p, "!")
			parts := strings.Split(path, "/")
			for i := 1; i <= len(parts); i++ {
				prefix := strings.Join(parts[:i], "/")
				ok, _ := filepath.Match(p, prefix)
				if rest, deep := strings.CutPrefix(p, "**/"); deep {
					ok2, _ := filepath.Match(rest, parts[i-1])
					ok = ok || ok2
				}
				if ok {
					out = !neg
				}
			}
		}
		return out
	}
	for _, path := range []string{".git/config", "data/master.key", "data/provisioner.db", ".env", "provisioner"} {
		if !ignored(path) {
			t.Errorf("%s goes into the build context", path)
		}
	}
	for _, path := range []string{"go.mod", "go.sum", "cmd/provisioner/main.go", "internal/mail/templates/credentials.en.txt",
		"migrations/sqlite/00001_init.sql", "scripts/n8nctl", "scripts/testdata/fake-docker", "internal/httpapi/openapi.yaml"} {
		if ignored(path) {
			t.Errorf("%s, which the build needs, is kept out of the build context", path)
		}
	}
}

// promtool returns Prometheus' own checker when it is installed (on the PATH or in Go's
// bin folder), or "" and the reason it is not.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	bin := os.Getenv("GOBIN")
	if bin == "" {
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			return ""
		}
		bin = filepath.Join(strings.TrimSpace(string(out)), "bin")
	}
	if p := filepath.Join(bin, "promtool"); fileExists(p) {
		return p
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestPromtool runs Prometheus' own checks when promtool is installed: the configuration,
// the rules' PromQL, the rules' unit tests (alerts_test.yml: each alert fires on the
// provisioner's series and stays quiet otherwise) and the dashboard's queries. Without
// promtool the structural tests above still run.
func TestPromtool(t *testing.T) {
	t.Parallel()
	tool := promtool(t)
	if tool == "" {
		t.Skip("promtool is not installed (go install github.com/prometheus/prometheus/cmd/promtool@latest): the PromQL is checked only structurally")
	}
	dir := filepath.Join(root, "deploy/prometheus")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(tool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The dashboard's queries, as recording rules promtool parses.
	var d dashboard
	if err := json.Unmarshal(read(t, "deploy/grafana/dashboards/provisioner.json"), &d); err != nil {
		t.Fatal(err)
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	var walk func([]panel)
	walk = func(list []panel) {
		for _, p := range list {
			for _, q := range p.Targets {
				expr, _ := json.Marshal(strings.ReplaceAll(q.Expr, "$__rate_interval", "5m"))
				fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", n, expr)
				n++
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries: %v\n%s", err, out)
	}
}
