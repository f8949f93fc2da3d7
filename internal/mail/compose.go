package mail

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	netmail "net/mail"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// Option tunes a sender. Options that do not apply to a sender are ignored by it.
type Option func(*options)

type options struct {
	now     func() time.Time
	rootCAs *x509.CertPool
	timeout time.Duration
}

func newOptions(opts []Option) options {
	o := options{now: time.Now, timeout: 15 * time.Second}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// WithClock sets the clock that dates messages and names outbox files.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithRootCAs makes SMTP trust these certificate authorities instead of the system's, for a
// relay with a private CA (and for tests). Outbox ignores it.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(o *options) { o.rootCAs = pool }
}

// WithTimeout bounds each step of an SMTP conversation (dial, each command); default 15s.
// Outbox ignores it.
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// userAgent replaces go-mail's default, which advertises its version and home page.
const userAgent = "n8n-provisioner"

// parseFrom validates the configured sender once, naming the setting an operator must fix.
func parseFrom(from string) (*netmail.Address, string, error) {
	addr, err := netmail.ParseAddress(from)
	if err != nil || strings.ContainsAny(from, "\r\n") {
		return nil, "", apperr.New(apperr.Invalid, "PROVISIONER_MAIL_FROM %q is not a valid email address (want noreply@example.com or \"Name <noreply@example.com>\")", from)
	}
	at := strings.LastIndexByte(addr.Address, '@')
	return addr, strings.ToLower(addr.Address[at+1:]), nil
}

// compose turns m into the go-mail message both senders write: multipart/alternative
// (text, then HTML) in UTF-8 quoted-printable, with m's stable Message-ID and a Date.
func compose(from *netmail.Address, fromDomain string, m Message, now time.Time) (*gomail.Msg, error) {
	if err := firstError(
		checkAddress("recipient", m.To),
		checkRequired("subject", m.Subject),
		checkRequired("text body", m.Text),
	); err != nil {
		return nil, err
	}
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(from)
	if err := msg.To(m.To); err != nil {
		return nil, apperr.New(apperr.Invalid, "recipient %q is not a valid email address", m.To)
	}
	msg.Subject(oneLine(m.Subject))
	msg.SetMessageIDWithValue(headerMessageID(m.ID, fromDomain))
	msg.SetDateWithValue(now)
	msg.SetUserAgent(userAgent)
	// RFC 3834: tells vacation responders and ticket systems not to answer a robot.
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// headerMessageID makes a valid msg-id (RFC 5322 3.6.4) from Message.ID: the id as its left
// part and the From domain as its right part unless the id brings its own; characters a
// msg-id cannot hold are replaced so that a caller's id can never break the header.
func headerMessageID(id, fromDomain string) string {
	id = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(id), "<"), ">")
	left, right := id, fromDomain
	if at := strings.LastIndexByte(id, '@'); at >= 0 {
		left, right = id[:at], id[at+1:]
	}
	left, right = msgIDAtom(left), msgIDAtom(right)
	if left == "" {
		left = randomID()
	}
	if right == "" {
		right = "localhost"
	}
	return left + "@" + right
}

// msgIDAtom keeps the dot-atom characters a msg-id may contain.
func msgIDAtom(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		case strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r):
			return r
		}
		return '_'
	}, s)
	return strings.Trim(s, ".")
}

// randomID names a message the caller gave no ID; such a message cannot be recognised when
// re-sent, which is why the builders always set one.
func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
