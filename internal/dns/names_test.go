package dns

import (
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"acme.n8n.example.com", true},
		{"a.b", true},
		{"x-1.example.com", true},
		{"123.example.com", true},
		{strings.Repeat("a", 63) + ".example.com", true},
		{strings.Repeat("a", 64) + ".example.com", false},
		{strings.Repeat("abcdefghi.", 25) + "com", true}, // 253 characters
		{strings.Repeat("abcdefghi.", 25) + "comx", false},
		{"", false},
		{"localhost", false},
		{"Acme.example.com", false},
		{"acme.example.com.", false},
		{".acme.example.com", false},
		{"acme..example.com", false},
		{"-acme.example.com", false},
		{"acme-.example.com", false},
		{"ac_me.example.com", false},
		{"*.example.com", false},
		{"ac me.example.com", false},
		{"acmé.example.com", false},
		{"xn--acm-bma.example.com", true}, // punycode is plain ASCII
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !apperr.Is(err, apperr.Invalid) {
			t.Errorf("ValidateName(%q) kind %s, want invalid", tt.name, apperr.KindOf(err))
		}
	}
}

func TestValidateIPv4(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ip string
		ok bool
	}{
		{"203.0.113.10", true},
		{"10.0.0.5", true}, // a lab host behind NAT is still a host
		{"1.1.1.1", true},
		{"", false},
		{"0.0.0.0", false},
		{"255.255.255.255", false},
		{"224.0.0.1", false},
		{"203.0.113", false},
		{"203.0.113.256", false},
		{"203.000.113.10", false},
		{" 203.0.113.10", false},
		{"::1", false},
		{"::ffff:203.0.113.10", false},
		{"2001:db8::1", false},
		{"example.com", false},
	}
	for _, tt := range tests {
		err := ValidateIPv4(tt.ip)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateIPv4(%q) = %v, want ok=%v", tt.ip, err, tt.ok)
		}
		if err != nil && !apperr.Is(err, apperr.Invalid) {
			t.Errorf("ValidateIPv4(%q) kind %s, want invalid", tt.ip, apperr.KindOf(err))
		}
	}
}
