package n8n_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
)

func TestGeneratePasswordAlwaysMeetsPolicy(t *testing.T) {
	t.Parallel()
	const runs = 5000
	seen := make(map[string]bool, runs)
	counts := map[byte]int{}
	for range runs {
		p, err := n8n.GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 24 {
			t.Fatalf("len(%q) = %d, want 24", p, len(p))
		}
		if err := n8n.CheckPassword(p); err != nil {
			t.Fatalf("generated password fails n8n's policy: %v", err)
		}
		if !strings.ContainsAny(p, "abcdefghijklmnopqrstuvwxyz") {
			t.Fatalf("%q has no lowercase letter", p)
		}
		for i := range len(p) {
			c := p[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				t.Fatalf("%q has %q outside the alphabet", p, c)
			}
			counts[c]++
		}
		if seen[p] {
			t.Fatalf("password %q generated twice", p)
		}
		seen[p] = true
	}
	// 120,000 characters over 62 symbols: each appears ~1935 times. A symbol never drawn,
	// or drawn twice as often as it should be, means a broken draw.
	if len(counts) != 62 {
		t.Fatalf("only %d distinct characters drawn", len(counts))
	}
	for c, n := range counts {
		if n < 1400 || n > 2500 {
			t.Errorf("character %q drawn %d times, want ~1935", c, n)
		}
	}
}

func TestGeneratedPasswordIsAcceptedByN8n(t *testing.T) {
	t.Parallel()
	c := setup(t, &n8ntest.Server{})
	p, err := n8n.GeneratePassword()
	if err != nil {
		t.Fatal(err)
	}
	o := ours
	o.Password = p
	if err := c.SetupOwner(t.Context(), o, n8n.BasicAuth{}); err != nil {
		t.Fatalf("n8n refused a generated password: %v", err)
	}
}

func TestCheckPassword(t *testing.T) {
	t.Parallel()
	tests := []struct {
		password string
		wantMsg  string // "" means valid
	}{
		{"abcd1234X", ""},
		{"Abcdefg1", ""},
		{strings.Repeat("A1", 32), ""},
		{"Abcdef1", "8 to 64"},
		{strings.Repeat("A1", 32) + "x", "8 to 64"},
		{"abcd1234", "uppercase"},
		{"abcdEFGH", "number"},
		{"ÀBCDEFGH1", ""},          // an ASCII uppercase letter is still there
		{"àbcdéfgh1", "uppercase"}, // JavaScript's [A-Z] is ASCII-only
		{"Abcdefg١", "number"},     // so is \d
		{"", "8 to 64"},
	}
	for _, tt := range tests {
		err := n8n.CheckPassword(tt.password)
		if tt.wantMsg == "" {
			if err != nil {
				t.Errorf("CheckPassword(%q) = %v, want nil", tt.password, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("CheckPassword(%q) = %v, want Invalid mentioning %q", tt.password, err, tt.wantMsg)
		}
		if tt.password != "" && err != nil && strings.Contains(err.Error(), tt.password) {
			t.Errorf("error %q echoes the password", err)
		}
	}
}

func TestGenerateEncryptionKey(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		k, err := n8n.GenerateEncryptionKey()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(k)
		if err != nil || len(raw) != 32 || len(k) < 32 {
			t.Fatalf("key %q: %d bytes, %v", k, len(raw), err)
		}
		if seen[k] {
			t.Fatal("key repeated")
		}
		seen[k] = true
	}
}

func TestSetupGuardHTPasswd(t *testing.T) {
	t.Parallel()
	line, err := n8n.SetupGuardHTPasswd("provisioner", "Guard-Pass-123")
	if err != nil {
		t.Fatal(err)
	}
	user, hash, ok := strings.Cut(line, ":")
	if !ok || user != "provisioner" || !strings.HasPrefix(hash, "$2y$05$") || strings.Contains(hash, ":") {
		t.Fatalf("line %q is not user:$2y$05$…", line)
	}
	if strings.Contains(line, "Guard-Pass-123") {
		t.Fatal("the line carries the password in clear")
	}
	// Checked the way Traefik checks it.
	if !traefiktest.CheckSecret("Guard-Pass-123", hash) {
		t.Error("Traefik would refuse the right password")
	}
	if traefiktest.CheckSecret("Guard-Pass-124", hash) {
		t.Error("Traefik would accept a wrong password")
	}

	bad := []struct{ user, password string }{
		{"", "x"},
		{"a:b", "x"},
		{"a,b", "x"},
		{"prov", ""},
		{"prov", strings.Repeat("x", 73)},
		{"prov", "two\nlines"},
	}
	for _, b := range bad {
		_, err := n8n.SetupGuardHTPasswd(b.user, b.password)
		if apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("SetupGuardHTPasswd(%q, …) = %v, want Invalid", b.user, err)
		}
		if err != nil && b.password != "" && strings.Contains(err.Error(), b.password) {
			t.Errorf("error %q leaks the password", err)
		}
	}
}
