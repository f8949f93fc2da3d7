package traefiktest

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// BasicAuth is a basicauth middleware as Traefik builds it from
// traefik.http.middlewares.<name>.basicauth.* labels.
type BasicAuth struct {
	Users []string // htpasswd lines, "user:hash"
	Realm string   // defaults to "traefik"
	// RemoveHeader drops the Authorization header before forwarding. Traefik's default is
	// false: the backend receives the credential unless the labels say removeheader=true.
	RemoveHeader bool
	HeaderField  string // when set, the authenticated user name is forwarded in this header

	secrets map[string]string
}

func (b *BasicAuth) init() error {
	b.secrets = make(map[string]string, len(b.Users))
	for _, line := range b.Users {
		// Traefik's parser splits on every colon and wants exactly two parts.
		parts := strings.Split(line, ":")
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return fmt.Errorf("basicauth: malformed user entry (want user:hash)")
		}
		b.secrets[parts[0]] = parts[1]
	}
	if b.Realm == "" {
		b.Realm = "traefik"
	}
	return nil
}

// Check reports whether req carries a Basic credential that matches one of the users, and
// returns the user name when it does.
func (b *BasicAuth) Check(req *http.Request) (string, bool) {
	user, password, ok := req.BasicAuth()
	if !ok {
		return "", false
	}
	secret, ok := b.secrets[user]
	if !ok || secret == "" {
		return "", false
	}
	return user, CheckSecret(password, secret)
}

// RequireAuth writes the answer Traefik gives when the credential is missing or wrong
// (go-http-auth's RequireAuth): 401, a Basic challenge naming the realm, and a short
// plain-text body.
func (b *BasicAuth) RequireAuth(w http.ResponseWriter) {
	realm := b.Realm
	if realm == "" {
		realm = "traefik"
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`"`)
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte("401 Unauthorized\n"))
}

// CheckSecret reports whether password matches an htpasswd hash in one of the formats
// Traefik accepts: bcrypt ($2a$, $2b$, $2x$, $2y$), SHA1 ({SHA}) and MD5-crypt ($apr1$, $1$).
// Plain-text secrets never match, as in Traefik.
func CheckSecret(password, secret string) bool {
	switch {
	case strings.HasPrefix(secret, "{SHA}"):
		sum := sha1.Sum([]byte(password))
		want := base64.StdEncoding.EncodeToString(sum[:])
		return subtle.ConstantTimeCompare([]byte(secret[len("{SHA}"):]), []byte(want)) == 1
	case strings.HasPrefix(secret, "$2a$"), strings.HasPrefix(secret, "$2b$"),
		strings.HasPrefix(secret, "$2x$"), strings.HasPrefix(secret, "$2y$"):
		return bcrypt.CompareHashAndPassword([]byte(secret), []byte(password)) == nil
	default:
		parts := strings.SplitN(secret, "$", 4)
		if len(parts) != 4 || parts[0] != "" {
			return false
		}
		magic, salt := "$"+parts[1]+"$", parts[2]
		if magic != "$apr1$" && magic != "$1$" {
			return false
		}
		got := md5Crypt([]byte(password), []byte(salt), []byte(magic))
		return subtle.ConstantTimeCompare(got, []byte(secret)) == 1
	}
}

const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// md5Crypt is Poul-Henning Kamp's MD5-crypt, which Apache's "$apr1$" shares with "$1$"
// (only the magic differs). It returns magic + salt + "$" + hash.
func md5Crypt(password, salt, magic []byte) []byte {
	if len(salt) > 8 {
		salt = salt[:8]
	}
	d := md5.New()
	d.Write(password)
	d.Write(magic)
	d.Write(salt)

	alt := md5.New()
	alt.Write(password)
	alt.Write(salt)
	alt.Write(password)
	mix := alt.Sum(nil)
	for i := 0; i < len(password); i++ {
		d.Write([]byte{mix[i%16]})
	}
	for i := len(password); i != 0; i >>= 1 {
		if i&1 == 0 {
			d.Write(password[:1])
		} else {
			d.Write([]byte{0})
		}
	}
	final := d.Sum(nil)

	for i := 0; i < 1000; i++ {
		r := md5.New()
		if i&1 == 0 {
			r.Write(final)
		} else {
			r.Write(password)
		}
		if i%3 != 0 {
			r.Write(salt)
		}
		if i%7 != 0 {
			r.Write(password)
		}
		if i&1 == 0 {
			r.Write(password)
		} else {
			r.Write(final)
		}
		final = r.Sum(nil)
	}

	// The output permutes the digest bytes in groups of three.
	order := [16]int{12, 6, 0, 13, 7, 1, 14, 8, 2, 15, 9, 3, 5, 10, 4, 11}
	out := make([]byte, 0, 22)
	var v uint
	var bits uint
	for _, i := range order {
		v |= uint(final[i]) << bits
		for bits += 8; bits > 6; bits -= 6 {
			out = append(out, cryptAlphabet[v&0x3f])
			v >>= 6
		}
	}
	out = append(out, cryptAlphabet[v&0x3f])

	var buf bytes.Buffer
	buf.Write(magic)
	buf.Write(salt)
	buf.WriteByte('$')
	buf.Write(out)
	return buf.Bytes()
}
