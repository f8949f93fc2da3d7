package n8n

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"unicode/utf16"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"golang.org/x/crypto/bcrypt"
)

const (
	passwordLength = 24
	// Letters and digits only: the password travels in an email and gets typed by a
	// customer, and every character is safe in JSON, shell and URLs. 62^24 is ~143 bits.
	passwordAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	// guardBcryptCost is htpasswd -B's default. The guarded password is 143 random bits, so
	// a higher cost adds no protection, only CPU the ingress spends on every guarded
	// request (which an attacker can send at will).
	guardBcryptCost = 5
)

// GeneratePassword returns a random 24-character password of letters and digits that
// always satisfies n8n's policy (8–64 characters, a digit, an uppercase letter; it also has
// a lowercase letter). Candidates that miss a class are drawn again, so every valid
// password is equally likely. It fails only when the system's random source does.
func GeneratePassword() (string, error) {
	for {
		p, err := randomString(passwordLength, passwordAlphabet)
		if err != nil {
			return "", err
		}
		if CheckPassword(p) == nil && strings.ContainsAny(p, "abcdefghijklmnopqrstuvwxyz") {
			return p, nil
		}
	}
}

// randomString draws n characters uniformly from alphabet (at most 256 characters) with
// crypto/rand, rejecting bytes past the largest multiple of len(alphabet) to avoid bias.
func randomString(n int, alphabet string) (string, error) {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, n*2)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", apperr.Wrap(apperr.Internal, err, "n8n: random source failed")
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// CheckPassword applies n8n's password policy (api-types password.schema.ts): 8 to 64
// characters as JavaScript counts them, at least one digit and one uppercase letter. It
// returns apperr.Invalid with n8n's own message, and never echoes the password.
func CheckPassword(p string) error {
	n := len(utf16.Encode([]rune(p)))
	switch {
	case n < 8 || n > 64:
		return apperr.New(apperr.Invalid, "Password must be 8 to 64 characters long.")
	case !strings.ContainsAny(p, "0123456789"):
		return apperr.New(apperr.Invalid, "Password must contain at least 1 number.")
	case !strings.ContainsAny(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
		return apperr.New(apperr.Invalid, "Password must contain at least 1 uppercase letter.")
	}
	return nil
}

// GenerateEncryptionKey returns a new N8N_ENCRYPTION_KEY: 32 random bytes as 43 URL-safe
// base64 characters (no padding, so nothing needs quoting in an env file). n8n encrypts
// every saved credential with it, so it must be stored and never regenerated.
func GenerateEncryptionKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", apperr.Wrap(apperr.Internal, err, "n8n: random source failed")
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// SetupGuardHTPasswd returns the htpasswd line "user:$2y$05$…" for Traefik's basicauth
// users label guarding the owner-setup path. The user must be non-empty without ':' or ','
// (Traefik splits the label on both) and the password 1–72 bytes (bcrypt's limit); anything
// else is apperr.Invalid. The line is a hash, safe to put in labels; in a compose file
// each '$' must be written '$$'.
func SetupGuardHTPasswd(user, password string) (string, error) {
	switch {
	case user == "" || strings.ContainsAny(user, ":,\n\r\t "):
		return "", apperr.New(apperr.Invalid, "n8n: guard user must be non-empty without ':', ',' or spaces")
	case password == "" || len(password) > 72:
		return "", apperr.New(apperr.Invalid, "n8n: guard password must be 1 to 72 bytes")
	case strings.ContainsAny(password, "\n\r"):
		return "", apperr.New(apperr.Invalid, "n8n: guard password must be one line")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), guardBcryptCost)
	if err != nil {
		return "", apperr.Wrap(apperr.Internal, err, "n8n: hash guard password")
	}
	// Go writes "$2a$"; htpasswd -B writes "$2y$". Both are the same bcrypt for ASCII
	// passwords and Traefik accepts both; $2y$ matches what an operator would generate.
	return user + ":$2y$" + strings.TrimPrefix(string(h), "$2a$"), nil
}
