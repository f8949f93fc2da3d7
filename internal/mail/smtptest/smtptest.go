// Package smtptest runs an in-process SMTP server for tests, built on emersion/go-smtp, so
// that senders are tested against the real protocol rather than a mock of their own API.
//
// It covers what the provisioner's mail sender uses: EHLO, optional AUTH PLAIN (allowed
// without TLS, as go-smtp's AllowInsecureAuth, unless the server does TLS), optional
// STARTTLS or implicit TLS with a throwaway self-signed certificate for 127.0.0.1, MAIL,
// RCPT, DATA, RSET, NOOP and QUIT. It keeps every accepted message (envelope, raw data, and
// a parsed view with the subject and the text and HTML parts decoded from quoted-printable
// or base64, assuming UTF-8), counts AUTH attempts, and has knobs to fail: FailNext rejects
// the next RCPT TO commands with a given 4xx/5xx code, FailNextData the next messages after
// DATA, StallNextData holds the reply to the next DATA (a hung server), Down refuses
// connections until Up.
//
// Not covered: other SASL mechanisms, DSN, BDAT/CHUNKING by clients (advertised by go-smtp,
// handled by it), charsets other than UTF-8, and relaying anywhere.
package smtptest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Option configures a Server at Start.
type Option func(*config)

type config struct {
	username, password string
	tlsMode            string // "", "starttls" or "tls"
}

// WithAuth makes the server offer AUTH PLAIN and require it before MAIL FROM, accepting
// only this user and password.
func WithAuth(username, password string) Option {
	return func(c *config) { c.username, c.password = username, password }
}

// WithSTARTTLS makes the server offer STARTTLS with a self-signed certificate (see
// RootCAs). AUTH is then offered only after STARTTLS, as real submission servers do.
func WithSTARTTLS() Option { return func(c *config) { c.tlsMode = "starttls" } }

// WithTLS makes the server speak TLS from the first byte (smtps, implicit TLS).
func WithTLS() Option { return func(c *config) { c.tlsMode = "tls" } }

// Message is one message the server accepted.
type Message struct {
	From     string   // envelope sender (MAIL FROM)
	To       []string // envelope recipients (RCPT TO)
	Data     []byte   // the message as received after DATA, CRLF line ends
	Username string   // who authenticated, "" without AUTH
	TLS      bool     // whether the session was encrypted when it sent this

	Header   mail.Header // the parsed header; nil when the message did not parse
	Subject  string      // decoded from RFC 2047 encoded words
	Text     string      // the first text/plain part, transfer encoding undone
	HTML     string      // the first text/html part, transfer encoding undone
	ParseErr error       // why the parsed view is incomplete, if it is
}

// Server is a running SMTP server on 127.0.0.1. Its methods are safe for concurrent use.
type Server struct {
	t    testing.TB
	cfg  config
	addr string
	tls  *tls.Config // nil without TLS
	pool *x509.CertPool

	mu          sync.Mutex
	messages    []Message
	changed     chan struct{} // closed and replaced whenever a message arrives
	failRcpt    failure
	failData    failure
	stall       *stall
	authTries   int
	closed      chan struct{} // closed when the test ends: releases stalled sessions
	srv         *smtp.Server  // nil while Down
	listener    net.Listener
	served      chan struct{}
	logsStopped bool
}

type failure struct {
	n    int
	code int
}

type stall struct {
	stalled chan struct{}
	release chan struct{}
	once    sync.Once
}

// Start runs a server on 127.0.0.1 on a free port until the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, changed: make(chan struct{}), closed: make(chan struct{})}
	for _, opt := range opts {
		opt(&s.cfg)
	}
	if s.cfg.tlsMode != "" {
		cert, pool, err := selfSigned()
		if err != nil {
			t.Fatalf("smtptest: certificate: %v", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.pool = pool
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	s.addr = l.Addr().String()
	s.serve(l)
	t.Cleanup(s.close)
	return s
}

// Addr returns host:port.
func (s *Server) Addr() string { return s.addr }

// Host returns the address the server listens on, 127.0.0.1.
func (s *Server) Host() string { h, _, _ := net.SplitHostPort(s.addr); return h }

// Port returns the port the server listens on.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// URL returns an smtp:// URL a sender can use as is: credentials when WithAuth was given,
// and the tls parameter matching the server (none, starttls or tls).
func (s *Server) URL() string {
	u := url.URL{Scheme: "smtp", Host: s.addr}
	if s.cfg.username != "" {
		u.User = url.UserPassword(s.cfg.username, s.cfg.password)
	}
	mode := s.cfg.tlsMode
	if mode == "" {
		mode = "none"
	}
	u.RawQuery = url.Values{"tls": {mode}}.Encode()
	return u.String()
}

// RootCAs returns a pool trusting the server's certificate, or nil without TLS.
func (s *Server) RootCAs() *x509.CertPool { return s.pool }

// Messages returns a copy of the messages accepted so far, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// WaitFor returns the messages once at least n have arrived, and fails the test if they
// have not within timeout (a safety net against a hung test, not a timing assertion).
func (s *Server) WaitFor(n int, timeout time.Duration) []Message {
	s.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.messages) >= n {
			msgs := append([]Message(nil), s.messages...)
			s.mu.Unlock()
			return msgs
		}
		changed, have := s.changed, len(s.messages)
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			s.t.Fatalf("smtptest: %d message(s) after %v, want %d", have, timeout, n)
			return nil
		}
	}
}

// AuthAttempts returns how many AUTH commands clients have sent: zero proves a client kept
// its credentials to itself.
func (s *Server) AuthAttempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authTries
}

// StallNextData makes the server hold its reply to the next message's DATA until release is
// called (or the test ends). stalled is closed once the message's data has arrived and the
// server is holding; release is idempotent. The held message is stored when released.
func (s *Server) StallNextData() (stalled <-chan struct{}, release func()) {
	st := &stall{stalled: make(chan struct{}), release: make(chan struct{})}
	s.mu.Lock()
	s.stall = st
	s.mu.Unlock()
	return st.stalled, func() { st.once.Do(func() { close(st.release) }) }
}

// FailNext makes the next n RCPT TO commands fail with code (4xx: try later; 5xx: never).
func (s *Server) FailNext(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failRcpt = failure{n: n, code: s.checkCode(code)}
}

// FailNextData makes the next n messages fail with code after their data was received, as
// a spam filter or a full mailbox does.
func (s *Server) FailNextData(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failData = failure{n: n, code: s.checkCode(code)}
}

func (s *Server) checkCode(code int) int {
	if code < 400 || code > 599 {
		s.t.Fatalf("smtptest: failure code %d is not 4xx or 5xx", code)
	}
	return code
}

// Down closes the listener and every open session: new connections are refused (not
// accepted and dropped) until Up.
func (s *Server) Down() {
	s.mu.Lock()
	srv, l, served := s.srv, s.listener, s.served
	s.srv, s.listener = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	// srv.Close closes only the listeners Serve has registered; Serve may not have started
	// yet, so the listener is closed here as well or Serve would accept forever.
	_ = srv.Close()
	_ = l.Close()
	<-served
}

// Up listens again on the same address after Down.
func (s *Server) Up() {
	s.t.Helper()
	s.mu.Lock()
	up := s.srv != nil
	s.mu.Unlock()
	if up {
		return
	}
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("smtptest: listen again on %s: %v", s.addr, err)
	}
	s.serve(l)
}

func (s *Server) serve(l net.Listener) {
	srv := smtp.NewServer(backend{s})
	srv.Domain = "smtptest.localhost"
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 50
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = testLogger{s}
	switch s.cfg.tlsMode {
	case "starttls":
		srv.TLSConfig = s.tls
	case "tls":
		srv.TLSConfig = s.tls
		l = tls.NewListener(l, s.tls)
	default:
		srv.AllowInsecureAuth = true
	}
	served := make(chan struct{})
	s.mu.Lock()
	s.srv, s.listener, s.served = srv, l, served
	s.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
}

func (s *Server) close() {
	s.mu.Lock()
	s.logsStopped = true // the test is over: t.Logf would panic
	close(s.closed)
	s.mu.Unlock()
	s.Down()
}

// testLogger sends go-smtp's connection errors to the test log while the test runs.
type testLogger struct{ s *Server }

func (l testLogger) Printf(format string, v ...any) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if !l.s.logsStopped {
		l.s.t.Logf("smtptest: "+format, v...)
	}
}

func (l testLogger) Println(v ...any) {
	l.Printf("%s", strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &session{s: b.s, tls: isTLS}, nil
}

// session is one SMTP connection's state; go-smtp makes a new one after STARTTLS.
type session struct {
	s    *Server
	tls  bool
	user string
	from string
	to   []string
}

var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

func (ss *session) AuthMechanisms() []string {
	if ss.s.cfg.username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	ss.s.mu.Lock()
	ss.s.authTries++
	ss.s.mu.Unlock()
	if ss.s.cfg.username == "" || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if (identity != "" && identity != username) || username != ss.s.cfg.username || password != ss.s.cfg.password {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.cfg.username != "" && ss.user == "" {
		return errAuthRequired
	}
	ss.from, ss.to = from, nil
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.s.takeFailure(&ss.s.failRcpt); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := ss.s.takeFailure(&ss.s.failData); err != nil {
		return err
	}
	ss.s.mu.Lock()
	st := ss.s.stall
	ss.s.stall = nil
	ss.s.mu.Unlock()
	if st != nil {
		close(st.stalled)
		select {
		case <-st.release:
		case <-ss.s.closed:
		}
	}
	msg := Parse(data)
	msg.From, msg.To, msg.Username, msg.TLS = ss.from, append([]string(nil), ss.to...), ss.user, ss.tls
	ss.s.store(msg)
	return nil
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

func (s *Server) takeFailure(f *failure) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.n <= 0 {
		return nil
	}
	f.n--
	class := f.code / 100
	text := "Requested action not taken: injected permanent failure"
	if class == 4 {
		text = "Requested action aborted: injected temporary failure, try again later"
	}
	return &smtp.SMTPError{Code: f.code, EnhancedCode: smtp.EnhancedCode{class, 0, 0}, Message: text}
}

func (s *Server) store(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Parse builds the parsed view of a raw RFC 5322 message, as the server does for what it
// receives (useful for .eml files too). Envelope fields stay empty. A message that does not
// parse is still returned, with ParseErr set: the test wants to see what arrived.
func Parse(data []byte) Message {
	m := Message{Data: data}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		m.ParseErr = err
		return m
	}
	m.Header = msg.Header
	if m.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		m.ParseErr = err
	}
	if err := m.walk(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body); err != nil {
		m.ParseErr = errors.Join(m.ParseErr, err)
	}
	return m
}

// walk descends multipart bodies and keeps the first text/plain and text/html leaves.
func (m *Message) walk(contentType, encoding string, body io.Reader) error {
	if contentType == "" {
		contentType = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return err
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			// NextRawPart: NextPart would undo quoted-printable but not base64; decode both
			// here, the same way.
			part, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := m.walk(part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part); err != nil {
				return err
			}
		}
	}
	decoded, err := io.ReadAll(decode(encoding, body))
	if err != nil {
		return err
	}
	switch {
	case mediaType == "text/plain" && m.Text == "":
		m.Text = string(decoded)
	case mediaType == "text/html" && m.HTML == "":
		m.HTML = string(decoded)
	}
	return nil
}

func decode(encoding string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, r) // skips the line breaks
	default:
		return r
	}
}

// selfSigned makes a short-lived certificate for 127.0.0.1 and localhost and a pool that
// trusts it, so TLS is tested with verification on rather than InsecureSkipVerify.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "smtptest"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
