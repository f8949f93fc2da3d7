package traefiktest

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseRuleMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule   string
		method string
		target string // absolute URL: its host is the Host header
		want   bool
	}{
		{"Host(`a.example.com`)", "GET", "http://a.example.com/", true},
		{"Host(`a.example.com`)", "GET", "http://A.Example.COM/x", true},
		{"Host(`a.example.com`)", "GET", "http://a.example.com:8443/x", true},
		{"Host(`a.example.com`)", "GET", "http://b.example.com/", false},
		{"Host(`a.example.com`)", "GET", "http://a.example.com.evil/", false},
		{"Host(`A.example.com`)", "GET", "http://a.example.com/", true},
		{"Host(`a.example.com`, `b.example.com`)", "GET", "http://b.example.com/", true},
		{"Host(\"a.example.com\")", "GET", "http://a.example.com/", true},
		{"Path(`/rest/owner/setup`)", "POST", "http://x/rest/owner/setup", true},
		{"Path(`/rest/owner/setup`)", "POST", "http://x/rest/owner/setup/", false},
		{"Path(`/rest/owner/setup`)", "POST", "http://x/REST/owner/setup", false},
		{"Path(`/rest/owner/setup`)", "POST", "http://x/rest/owner/setup?x=1", true},
		{"Path(`/rest/owner/setup`)", "POST", "http://x/rest/owner/%73etup", true},
		{"PathPrefix(`/rest`)", "GET", "http://x/rest/login", true},
		{"PathPrefix(`/rest`)", "GET", "http://x/restful", true},
		{"PathPrefix(`/rest/`)", "GET", "http://x/rest", false},
		{"PathRegexp(`(?i)^/rest/owner/setup/?$`)", "POST", "http://x/REST/Owner/SETUP/", true},
		{"PathRegexp(`(?i)^/rest/owner/setup/?$`)", "POST", "http://x/rest/owner/setupx", false},
		{"HostRegexp(`^[a-z]+\\.example\\.com$`)", "GET", "http://abc.example.com/", true},
		{"Method(`POST`)", "POST", "http://x/", true},
		{"Method(`POST`)", "GET", "http://x/", false},
		{"Host(`a`) && Path(`/p`)", "GET", "http://a/p", true},
		{"Host(`a`) && Path(`/p`)", "GET", "http://a/q", false},
		{"Host(`a`) || Path(`/p`)", "GET", "http://b/p", true},
		{"Host(`a`) && !Path(`/p`)", "GET", "http://a/p", false},
		{"Host(`a`) && !Path(`/p`)", "GET", "http://a/q", true},
		{"!(Host(`a`) || Host(`b`))", "GET", "http://b/", false},
		{"!(Host(`a`) || Host(`b`))", "GET", "http://c/", true},
		// && binds tighter than ||.
		{"Host(`a`) || Host(`b`) && Path(`/p`)", "GET", "http://a/q", true},
		{"Host(`a`) || Host(`b`) && Path(`/p`)", "GET", "http://b/q", false},
		{"(Host(`a`) || Host(`b`)) && Path(`/p`)", "GET", "http://a/q", false},
		{"  Host( `a` )  &&\n Path(`/p`) ", "GET", "http://a/p", true},
	}
	for _, tt := range tests {
		t.Run(tt.rule+" "+tt.target, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRule(tt.rule)
			if err != nil {
				t.Fatalf("ParseRule: %v", err)
			}
			req := httptest.NewRequest(tt.method, tt.target, nil)
			if got := r.Match(req); got != tt.want {
				t.Errorf("Match(%s %s) = %v, want %v", tt.method, tt.target, got, tt.want)
			}
			if r.String() != tt.rule {
				t.Errorf("String() = %q", r.String())
			}
		})
	}
}

func TestParseRuleErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule    string
		wantErr string
	}{
		{"", "empty"},
		{"Host(`a`", "expected ')'"},
		{"Host(a)", "quoted argument"},
		{"Host(`a`) &&", "end of rule"},
		{"Host(`a`) Path(`/p`)", "unexpected"},
		{"Hots(`a`)", "unsupported matcher"},
		{"Path(`p`)", "does not start with /"},
		{"Path(`/a`, `/b`)", "exactly one argument"},
		{"PathRegexp(`(`)", "PathRegexp"},
		{"Host(`a) && Path(`/p`)", "unexpected character"},
		{"Host(`a`) & Path(`/p`)", "unexpected character"},
		{"Host()", "quoted argument"},
		{"Header(`X`)", "name and a value"},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRule(tt.rule)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseRule(%q) error = %v, want it to mention %q", tt.rule, err, tt.wantErr)
			}
		})
	}
}
