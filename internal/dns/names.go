package dns

import (
	"net/netip"
	"strings"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// ValidateName reports whether name is a fully-qualified hostname this adapter will manage:
// at least two dot-separated labels of lowercase letters, digits and inner hyphens, each
// 1–63 characters, 253 characters in all, no trailing dot, no wildcard. Instance names are
// made from slugs, so anything else is a bug upstream and is refused before Cloudflare sees
// it. Errors: Invalid.
func ValidateName(name string) error {
	if name == "" {
		return apperr.New(apperr.Invalid, "dns name is empty")
	}
	if len(name) > 253 {
		return apperr.New(apperr.Invalid, "dns name %q is longer than 253 characters", name)
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return apperr.New(apperr.Invalid, "dns name %q is not fully qualified", name)
	}
	for _, l := range labels {
		if !validLabel(l) {
			return apperr.New(apperr.Invalid, "dns name %q has an invalid label %q (want lowercase letters, digits and inner hyphens, 1-63 characters)", name, l)
		}
	}
	return nil
}

func validLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// ValidateIPv4 reports whether ip is a dotted-quad IPv4 address an A record can point at
// (not 0.0.0.0, not multicast or broadcast). Errors: Invalid.
func ValidateIPv4(ip string) error {
	a, err := netip.ParseAddr(ip)
	switch {
	case err != nil || !a.Is4():
		return apperr.New(apperr.Invalid, "%q is not an IPv4 address", ip)
	case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return apperr.New(apperr.Invalid, "%s cannot be the address of a host", ip)
	}
	return nil
}
