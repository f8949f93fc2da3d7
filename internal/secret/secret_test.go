package secret

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	k, err := NewKeyring(key(1))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal("n8n-encryption-key", "instance/a/encryption_key")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "n8n-encryption-key") {
		t.Fatalf("sealed value contains the plaintext: %s", sealed)
	}
	got, err := k.Open(sealed, "instance/a/encryption_key")
	if err != nil || got != "n8n-encryption-key" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	again, _ := k.Seal("n8n-encryption-key", "instance/a/encryption_key")
	if again == sealed {
		t.Fatal("two seals of the same value are identical: nonce reused")
	}
}

func TestOpenRefusesOtherContextAndTampering(t *testing.T) {
	t.Parallel()
	k, _ := NewKeyring(key(1))
	sealed, _ := k.Seal("pw", "instance/a/owner_password")
	if _, err := k.Open(sealed, "instance/b/owner_password"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("other context: err = %v, want ErrCorrupt", err)
	}
	tampered := sealed[:len(sealed)-2] + "AA"
	if _, err := k.Open(tampered, "instance/a/owner_password"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered: err = %v, want ErrCorrupt", err)
	}
	for _, bad := range []string{"", "v1", "v2.x.y", "v1." + k.CurrentKeyID() + ".!!"} {
		if _, err := k.Open(bad, "c"); err == nil {
			t.Fatalf("Open(%q) succeeded", bad)
		}
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	old, _ := NewKeyring(key(1))
	sealed, _ := old.Seal("secret", "ctx")

	rotated, err := NewKeyring(key(2), key(1))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(sealed, "ctx"); err != nil || got != "secret" {
		t.Fatalf("rotated keyring cannot open old value: %q, %v", got, err)
	}
	if !rotated.NeedsReseal(sealed) {
		t.Fatal("value sealed with the old key should need resealing")
	}
	fresh, _ := rotated.Seal("secret", "ctx")
	if rotated.NeedsReseal(fresh) {
		t.Fatal("value sealed with the current key should not need resealing")
	}
	withoutOld, _ := NewKeyring(key(2))
	if _, err := withoutOld.Open(sealed, "ctx"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	good, _ := NewKey()
	tests := []struct {
		in     string
		wantOK bool
	}{
		{good, true},
		{" " + good + "\n", true},
		{"", false},
		{"not base64 at all!", false},
		{"c2hvcnQ=", false}, // "short"
	}
	for _, tt := range tests {
		_, err := ParseKey(tt.in)
		if (err == nil) != tt.wantOK {
			t.Errorf("ParseKey(%q) err = %v, want ok=%v", tt.in, err, tt.wantOK)
		}
	}
}

func TestNewKeyringRejectsShortKey(t *testing.T) {
	t.Parallel()
	if _, err := NewKeyring([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
}
