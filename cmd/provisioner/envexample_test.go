package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// readmeVariables returns the variables of README's configuration tables: the names in
// the first cell of each row of the Configuration section.
func readmeVariables(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	name := regexp.MustCompile("`(PROVISIONER_[A-Z0-9_]+)`")
	var out []string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `PROVISIONER_") {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		for _, m := range name.FindAllStringSubmatch(first, -1) {
			out = append(out, m[1])
		}
	}
	if len(out) < 40 {
		t.Fatalf("found %d variables in README's tables: has their shape changed?", len(out))
	}
	return out
}

// envExample returns .env.example's variables, set or commented out ("# NAME=").
func envExample(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^(?:#\s*)?([A-Z][A-Z0-9_]*)=(.*)$`)
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if m := line.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}

// TestEnvExampleListsEveryVariable: the README says .env.example lists every variable
// for docker compose; this keeps it true both ways.
func TestEnvExampleListsEveryVariable(t *testing.T) {
	t.Parallel()
	example := envExample(t)
	documented := map[string]bool{}
	for _, name := range readmeVariables(t) {
		documented[name] = true
		if _, ok := example[name]; !ok {
			t.Errorf("%s is in README's configuration tables but not in .env.example: add it there", name)
		}
	}
	compose, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for name := range example {
		switch {
		case strings.HasPrefix(name, "PROVISIONER_") && !documented[name]:
			t.Errorf(".env.example lists %s, which README's configuration tables do not document", name)
		case !strings.HasPrefix(name, "PROVISIONER_") && !strings.Contains(string(compose), "${"+name):
			t.Errorf(".env.example lists %s, which docker-compose.yml does not use", name)
		}
	}
}

// TestEnvExampleStarts: the example file, as docker compose passes it (every line set,
// empty ones as empty strings), is a configuration the service accepts.
func TestEnvExampleStarts(t *testing.T) {
	t.Parallel()
	env := map[string]string{}
	b, _ := os.ReadFile("../../.env.example")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			env[k] = v
		}
	}
	env["PROVISIONER_DATA_DIR"] = t.TempDir() // compose's volume
	cfg, err := loadConfig(mapEnv(env))
	if err != nil {
		t.Fatalf(".env.example is refused: %v", err)
	}
	if cfg.Providers.SMTPURL != "" || cfg.Providers.AlertWebhookURL != "" {
		t.Errorf("the example configures mail or alerts by itself: %+v", cfg.Providers)
	}
}
