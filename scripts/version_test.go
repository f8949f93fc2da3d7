package scripts_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/scripts"
)

// TestVersionIsTheContentHash checks that n8nctl's version is the hash of its own bytes,
// the one the provisioner embeds, and that a copy from another release reports another.
func TestVersionIsTheContentHash(t *testing.T) {
	t.Parallel()
	h := setup(t)
	want(t, h.must("version", "all", ""), map[string]any{"ok": true, "version": scripts.N8nctlVersion})
	if res := h.run("version", "acme", ""); res.code != 2 {
		t.Fatalf("version with a slug: exit %d, want 2 (%v)", res.code, res.out)
	}

	other := *h
	other.script = filepath.Join(t.TempDir(), "n8nctl")
	if err := os.WriteFile(other.script, []byte(scripts.N8nctl+"# a later release\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := other.must("version", "all", "")["version"]; got == scripts.N8nctlVersion || got == "" {
		t.Fatalf("a changed n8nctl reports version %v, want one of its own", got)
	}
}
