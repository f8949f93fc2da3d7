package mail

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"net/url"
	"strconv"
	"strings"
	"sync"

	gomail "github.com/wneessen/go-mail"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// TLS modes of an SMTP URL's tls parameter.
const (
	TLSStartTLS = "starttls" // plain connect, then STARTTLS, which is mandatory (default, port 587)
	TLSImplicit = "tls"      // TLS from the first byte, "smtps" (port 465)
	TLSNone     = "none"     // no TLS at all (port 25): a local relay or a mail catcher only
)

// SMTP sends messages through an SMTP server with go-mail. Each Send opens its own
// connection: the provisioner sends a handful of emails an hour, and a fresh connection per
// message means no idle connection to lose and nothing shared between concurrent jobs.
type SMTP struct {
	cfg        smtpConfig
	from       *netmail.Address
	fromDomain string
	opts       options
}

// smtpConfig is what an SMTP URL says.
type smtpConfig struct {
	host     string
	port     int
	tls      string // TLSStartTLS, TLSImplicit or TLSNone
	username string
	password string
}

// NewSMTP returns a sender for rawURL, smtp://user:password@host:port?tls=starttls|tls|none
// (smtps://… means tls=tls; the port defaults to 587, 465 or 25 by mode; tls defaults to
// starttls, and STARTTLS is then mandatory: a server that does not offer it gets no mail
// and no password). Escape "@" or ":" in the user or password as %40 and %3A.
//
// It returns an apperr.Invalid error naming PROVISIONER_SMTP_URL for a malformed URL or
// PROVISIONER_MAIL_FROM for a bad from address; the error never contains the password.
func NewSMTP(rawURL, from string, opts ...Option) (*SMTP, error) {
	cfg, err := parseSMTPURL(rawURL)
	if err != nil {
		return nil, err
	}
	addr, domain, err := parseFrom(from)
	if err != nil {
		return nil, err
	}
	return &SMTP{cfg: cfg, from: addr, fromDomain: domain, opts: newOptions(opts)}, nil
}

// String describes the sender without its password, for start-up logs and doctor.
func (s *SMTP) String() string {
	auth := ""
	if s.cfg.username != "" {
		auth = " as " + s.cfg.username
	}
	return fmt.Sprintf("smtp %s (tls=%s)%s from %s", s.addr(), s.cfg.tls, auth, s.from.Address)
}

func (s *SMTP) addr() string { return net.JoinHostPort(s.cfg.host, strconv.Itoa(s.cfg.port)) }

// urlHelp ends every URL error: the operator sees the expected shape, never their input,
// which holds the password.
const urlHelp = "expected smtp://user:password@host:port?tls=starttls|tls|none"

func parseSMTPURL(raw string) (smtpConfig, error) {
	invalid := func(format string, args ...any) (smtpConfig, error) {
		return smtpConfig{}, apperr.New(apperr.Invalid, "PROVISIONER_SMTP_URL "+format+"; "+urlHelp, args...)
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return invalid("is empty")
	}
	// url.Parse's error quotes the whole URL, password included: it is never passed on.
	u, err := url.Parse(raw)
	if err != nil {
		return invalid("is not a valid URL")
	}
	var cfg smtpConfig
	switch strings.ToLower(u.Scheme) {
	case "smtp":
		cfg.tls = TLSStartTLS
	case "smtps":
		cfg.tls = TLSImplicit
	default:
		return invalid("has scheme %q, not smtp or smtps", u.Scheme)
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return invalid("has no host")
	}
	if u.Path != "" && u.Path != "/" {
		return invalid("has a path, which SMTP does not use")
	}
	if u.Fragment != "" {
		return invalid("has a fragment")
	}
	cfg.host = u.Hostname()

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return invalid("has a malformed query")
	}
	for key, values := range q {
		if key != "tls" {
			return invalid("has unknown parameter %q", key)
		}
		if len(values) != 1 {
			return invalid("has tls more than once")
		}
	}
	if mode := strings.ToLower(q.Get("tls")); mode != "" {
		switch mode {
		case TLSStartTLS, TLSImplicit, TLSNone:
		default:
			return invalid("has tls=%q", q.Get("tls"))
		}
		if cfg.tls == TLSImplicit && mode != TLSImplicit {
			return invalid("says smtps:// (implicit TLS) but tls=%s", mode)
		}
		cfg.tls = mode
	}

	switch p := u.Port(); {
	case p != "":
		port, err := strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return invalid("has port %q, not 1-65535", p)
		}
		cfg.port = port
	case cfg.tls == TLSImplicit:
		cfg.port = 465
	case cfg.tls == TLSNone:
		cfg.port = 25
	default:
		cfg.port = 587
	}

	if u.User != nil {
		cfg.username = u.User.Username()
		cfg.password, _ = u.User.Password()
		switch {
		case cfg.username == "" && cfg.password != "":
			return invalid("has a password but no user")
		case cfg.username != "" && cfg.password == "":
			return invalid("has user %q but no password", cfg.username)
		}
	}
	return cfg, nil
}

// Send delivers m. It returns nil once the server accepted the message (250 after DATA);
// an apperr.Invalid error when m is malformed or the server rejected the recipient or the
// content for good (5xx); and an apperr.Unavailable error when a retry may succeed: the
// server is unreachable, answered 4xx, refused the sender or our credentials, does not
// offer the STARTTLS the URL asks for, or ctx ended (the error then wraps ctx.Err()).
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg, err := compose(s.from, s.fromDomain, m, s.opts.now())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "sending email %s", m.ID)
	}
	client, release, err := s.client(ctx)
	if err != nil {
		return err
	}
	defer release()

	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return s.dialError(ctx, err)
	}
	sendErr := client.SendWithSMTPClient(conn, msg)
	// QUIT failing after the message was accepted changes nothing for the caller.
	_ = client.CloseWithSMTPClient(conn)
	if sendErr == nil || msg.IsDelivered() {
		// IsDelivered: go-mail reports the RSET after an accepted DATA as a failure;
		// reporting it would make the caller send the email twice.
		return nil
	}
	return s.sendError(ctx, m, sendErr)
}

// Check connects, greets, negotiates TLS and authenticates, then quits without sending:
// the doctor's "can we send mail" probe. It returns nil or an apperr.Unavailable error.
func (s *SMTP) Check(ctx context.Context) error {
	client, release, err := s.client(ctx)
	if err != nil {
		return err
	}
	defer release()
	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return s.dialError(ctx, err)
	}
	_ = client.CloseWithSMTPClient(conn)
	return nil
}

// client builds a go-mail client for one conversation. Its connection closes when ctx
// ends, so a cancelled job does not wait out go-mail's per-command timeout; release stops
// that watch once the conversation is over.
func (s *SMTP) client(ctx context.Context) (*gomail.Client, func(), error) {
	tlsConfig := &tls.Config{ServerName: s.cfg.host, MinVersion: tls.VersionTLS12, RootCAs: s.opts.rootCAs}

	var (
		mu    sync.Mutex
		stops []func() bool
	)
	release := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, stop := range stops {
			stop()
		}
	}
	// go-mail formats host:port itself, which breaks IPv6 literals; we dial our own address
	// and, for implicit TLS, do the handshake here (go-mail skips its own TLS dialer when
	// given a dial function).
	dial := func(dialCtx context.Context, network, _ string) (net.Conn, error) {
		dialer := &net.Dialer{}
		var (
			conn net.Conn
			err  error
		)
		if s.cfg.tls == TLSImplicit {
			conn, err = (&tls.Dialer{NetDialer: dialer, Config: tlsConfig}).DialContext(dialCtx, network, s.addr())
		} else {
			conn, err = dialer.DialContext(dialCtx, network, s.addr())
		}
		if err != nil {
			return nil, err
		}
		mu.Lock()
		stops = append(stops, context.AfterFunc(ctx, func() { _ = conn.Close() }))
		mu.Unlock()
		return conn, nil
	}

	opts := []gomail.Option{
		gomail.WithPort(s.cfg.port),
		gomail.WithTimeout(s.opts.timeout),
		gomail.WithTLSConfig(tlsConfig),
		gomail.WithDialContextFunc(dial),
	}
	switch s.cfg.tls {
	case TLSNone:
		// go-mail's default is mandatory STARTTLS; "none" must really mean none, or a
		// mail catcher without TLS would reject every message.
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if s.cfg.username != "" {
		// PLAIN and LOGIN refuse to run on a connection that is neither TLS nor to localhost,
		// so tls=none never puts the password on the wire to a remote host.
		opts = append(opts,
			gomail.WithUsername(s.cfg.username),
			gomail.WithPassword(s.cfg.password),
			gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthSCRAMSHA256, gomail.SMTPAuthSCRAMSHA1, gomail.SMTPAuthPlain, gomail.SMTPAuthLogin),
		)
	}
	client, err := gomail.NewClient(s.cfg.host, opts...)
	if err != nil {
		return nil, release, apperr.Wrap(apperr.Internal, s.redact(err), "configuring the SMTP client")
	}
	return client, release, nil
}

// dialError classifies a failure before MAIL FROM: refused connection, greeting, TLS,
// authentication. All of them may heal (the server comes back, the operator fixes the URL)
// and none says anything about the message, so the caller retries.
func (s *SMTP) dialError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return apperr.Wrap(apperr.Unavailable, ctxErr, "connecting to SMTP server %s", s.addr())
	}
	return apperr.Wrap(apperr.Unavailable, s.redact(err), "connecting to SMTP server %s (tls=%s)", s.addr(), s.cfg.tls)
}

// sendError classifies a failure during the transaction by the server's reply code.
func (s *SMTP) sendError(ctx context.Context, m Message, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return apperr.Wrap(apperr.Unavailable, ctxErr, "sending email %s", m.ID)
	}
	cause := s.redact(err)
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return apperr.Wrap(apperr.Unavailable, cause, "sending email %s", m.ID)
	}
	code := se.ErrorCode()
	switch {
	case code >= 500 && se.Reason == gomail.ErrSMTPMailFrom:
		// A 5xx on MAIL FROM is about us (sender not allowed, authentication required),
		// not about this message: fix the configuration and the retry goes through.
		return apperr.Wrap(apperr.Unavailable, cause, "SMTP server %s refused sender %s (%d); check PROVISIONER_MAIL_FROM and the SMTP account", s.addr(), s.from.Address, code)
	case code >= 500:
		return apperr.Wrap(apperr.Invalid, cause, "SMTP server %s permanently rejected email %s to %s (%d)", s.addr(), m.ID, m.To, code)
	case code >= 400:
		return apperr.Wrap(apperr.Unavailable, cause, "SMTP server %s deferred email %s (%d)", s.addr(), m.ID, code)
	default:
		return apperr.Wrap(apperr.Unavailable, cause, "SMTP connection to %s failed while sending email %s", s.addr(), m.ID)
	}
}

// redact flattens err to its text with the password taken out, in the forms it travels on
// the wire (raw, base64 alone for LOGIN, base64 with the user for PLAIN): a server that
// echoes a bad command line back would otherwise put it in our error. The chain below is
// dropped on purpose; callers classify by apperr kind, not by go-mail's types.
func (s *SMTP) redact(err error) error {
	text := err.Error()
	if p := s.cfg.password; p != "" {
		for _, secret := range []string{
			base64.StdEncoding.EncodeToString([]byte("\x00" + s.cfg.username + "\x00" + p)),
			base64.StdEncoding.EncodeToString([]byte(p)),
			url.UserPassword(s.cfg.username, p).String(),
			p,
		} {
			text = strings.ReplaceAll(text, secret, "[redacted]")
		}
	}
	return errors.New(text)
}
