package instances

import (
	"fmt"
	"regexp"
	"testing"
)

func TestNewSlug(t *testing.T) {
	t.Parallel()
	label := regexp.MustCompile(`^[a-z][a-z0-9]{9}$`)
	seen := map[string]bool{}
	for range 2000 {
		s, err := newSlug()
		if err != nil {
			t.Fatal(err)
		}
		if !label.MatchString(s) {
			t.Fatalf("slug %q is not a DNS label of 10 characters starting with a letter", s)
		}
		if seen[s] {
			t.Fatalf("slug %q generated twice in 2000 draws", s)
		}
		seen[s] = true
	}
}

func TestStepsAfter(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"":             fmt.Sprint(Steps),
		stepPlaced:     fmt.Sprint(Steps[1:]),
		stepOwner:      "[active emailed]",
		stepEmailed:    "[]",
		"unknown-step": fmt.Sprint(Steps),
	}
	for done, want := range tests {
		var names []string
		for _, st := range stepsAfter(done) {
			names = append(names, st.name)
		}
		if got := fmt.Sprint(names); got != want {
			t.Errorf("stepsAfter(%q) = %s, want %s", done, got, want)
		}
	}
}

func TestOwnerNamesAndCPUs(t *testing.T) {
	t.Parallel()
	names := map[string][2]string{
		"":                    {"n8n", "Owner"},
		"Ada":                 {"Ada", "-"},
		"Ada Lovelace":        {"Ada", "Lovelace"},
		"  María José  Pérez": {"María", "José Pérez"},
	}
	for in, want := range names {
		if f, l := ownerNames(in); f != want[0] || l != want[1] {
			t.Errorf("ownerNames(%q) = %q, %q; want %q", in, f, l, want)
		}
	}
	cpus := map[float64]string{0.5: "0.5", 1: "1", 2.25: "2.25", 0.125: "0.125"}
	for in, want := range cpus {
		if got := formatCPUs(in); got != want {
			t.Errorf("formatCPUs(%v) = %q, want %q", in, got, want)
		}
	}
}
