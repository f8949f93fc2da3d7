// Package mail renders the emails the provisioner sends (instance credentials, suspension,
// past-due warning, resumption, deletion, operator alerts) in Spanish and English, and
// delivers them: over SMTP with go-mail, or into a directory of .eml files (the outbox)
// when no SMTP server is configured.
//
// Builders (Credentials, Suspended, ...) are pure: they validate their input, render the
// templates embedded under templates/ and return a Message whose ID is stable for the same
// caller key, so that a job that crashed after sending and runs again sends a message with
// the same Message-ID (mail clients and the outbox fold such duplicates together).
//
// Senders (SMTP, Outbox) translate delivery failures into apperr kinds: Unavailable when a
// retry later may succeed (server down, 4xx, bad SMTP credentials, missing STARTTLS) and
// Invalid when the same message will never be accepted (a 5xx on the recipient or the
// content). Neither logs anything; errors never contain the SMTP password, and Message
// prints without its bodies because the credentials email carries a password.
package mail

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// Message is one rendered email, ready for a sender.
type Message struct {
	To      string // one recipient address, "name <addr>" or "addr"
	Subject string // one line, not yet header-encoded
	Text    string // the text/plain body
	HTML    string // the text/html alternative; may be empty
	// ID is the stable Message-ID without angle brackets. Builders derive it from the
	// caller's Key (or from the message's identifying facts) so that a re-send after a crash
	// carries the same Message-ID; when it has no "@", senders append the From domain.
	ID string
}

// String describes m without its bodies: the credentials email holds a password, and a
// Message printed by a log line or a test failure must not leak it.
func (m Message) String() string {
	return fmt.Sprintf("mail.Message{To: %q, Subject: %q, ID: %q}", m.To, m.Subject, m.ID)
}

// GoString keeps %#v from printing the bodies too.
func (m Message) GoString() string { return m.String() }

// LogValue keeps slog from printing the bodies.
func (m Message) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("to", m.To),
		slog.String("subject", m.Subject),
		slog.String("id", m.ID),
	)
}

// Locales the templates exist in. Anything else falls back to English.
const (
	LocaleEN = "en"
	LocaleES = "es"
)

// NormalizeLocale maps a client's locale ("es", "es-AR", "es_MX", "EN-gb", "") to one the
// templates exist in: the primary language subtag if we have it, English otherwise.
func NormalizeLocale(locale string) string {
	primary, _, _ := strings.Cut(strings.TrimSpace(locale), "-")
	primary, _, _ = strings.Cut(primary, "_")
	if strings.EqualFold(primary, LocaleES) {
		return LocaleES
	}
	return LocaleEN
}

// messageID derives a Message-ID left part from the kind of message and a caller key (or,
// without one, the message's identifying facts). Hashing keeps arbitrary keys within the
// characters a msg-id allows and does not expose instance ids to the recipient's server.
func messageID(kind string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return kind + "." + hex.EncodeToString(h.Sum(nil)[:16])
}
