package mail_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail/smtptest"
)

const (
	smtpUser     = "mailer@example.com"
	smtpPassword = "Sm7p-pa55:w0rd@x" // has the characters that need escaping in a URL
	from         = `"n8n Cloud" <noreply@example.com>`
	// Found in every error: a fragment that no legitimate message contains.
	passwordFragment = "pa55:w0rd"
)

var sentAt = time.Date(2026, 2, 1, 9, 30, 0, 0, time.UTC)

func fixedClock() time.Time { return sentAt }

func credentialsMessage(t *testing.T) mail.Message {
	t.Helper()
	m, err := mail.Credentials("es-AR", mail.CredentialsData{
		To: "ana@example.com", Name: `Ana <script>`, URL: "https://ana.n8n.example.com",
		LoginEmail: "ana@example.com", Password: "Xk9-pQ2v", Key: "inst_1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// smtpURL builds a URL for srv with our credentials and the given tls mode ("" = default).
func smtpURL(srv *smtptest.Server, password, mode string) string {
	u := url.URL{Scheme: "smtp", Host: srv.Addr(), User: url.UserPassword(smtpUser, password)}
	if mode != "" {
		u.RawQuery = "tls=" + mode
	}
	return u.String()
}

func newSMTP(t *testing.T, rawURL string, opts ...mail.Option) *mail.SMTP {
	t.Helper()
	s, err := mail.NewSMTP(rawURL, from, append([]mail.Option{mail.WithClock(fixedClock), mail.WithTimeout(10 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("NewSMTP: %v", err)
	}
	return s
}

func assertNoPassword(t *testing.T, err error) {
	t.Helper()
	if err != nil && (strings.Contains(err.Error(), passwordFragment) || strings.Contains(apperr.Message(err), passwordFragment)) {
		t.Errorf("error leaks the SMTP password: %v", err)
	}
}

func TestNewSMTPParsesURL(t *testing.T) {
	t.Parallel()
	const f = " from noreply@example.com"
	tests := []struct{ url, want string }{
		{"smtp://mail.example.com", "smtp mail.example.com:587 (tls=starttls)" + f},
		{"smtp://mail.example.com?tls=starttls", "smtp mail.example.com:587 (tls=starttls)" + f},
		{"SMTP://mail.example.com?tls=STARTTLS", "smtp mail.example.com:587 (tls=starttls)" + f},
		{"smtp://u:p@mail.example.com?tls=none", "smtp mail.example.com:25 (tls=none) as u" + f},
		{"smtp://mail.example.com?tls=tls", "smtp mail.example.com:465 (tls=tls)" + f},
		{"smtps://u:p@mail.example.com", "smtp mail.example.com:465 (tls=tls) as u" + f},
		{"smtps://mail.example.com:2465?tls=tls", "smtp mail.example.com:2465 (tls=tls)" + f},
		{"smtp://mail.example.com:2525/", "smtp mail.example.com:2525 (tls=starttls)" + f},
		{"smtp://user%40example.com:p%3Ass%40@[::1]:1025?tls=none", "smtp [::1]:1025 (tls=none) as user@example.com" + f},
	}
	for _, tt := range tests {
		s, err := mail.NewSMTP(tt.url, from)
		if err != nil {
			t.Errorf("NewSMTP(%q): %v", tt.url, err)
			continue
		}
		if got := s.String(); got != tt.want {
			t.Errorf("NewSMTP(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestNewSMTPRejectsBadURL(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-" + passwordFragment
	bad := []string{
		"",
		"mail.example.com",
		"http://u:" + pw + "@mail.example.com",
		"smtp://u:" + pw + "@mail.example.com:99999",
		"smtp://u:" + pw + "@mail.example.com:0",
		"smtp://u:" + pw + "@mail.example.com:abc",
		"smtp://u:" + pw + "%zz@mail.example.com",
		"smtp://u:" + pw + "@mail.example.com?tls=ssl",
		"smtp://u:" + pw + "@mail.example.com?tls=none&tls=tls",
		"smtp://u:" + pw + "@mail.example.com?tsl=none",
		"smtps://u:" + pw + "@mail.example.com?tls=starttls",
		"smtps://u:" + pw + "@mail.example.com?tls=none",
		"smtp://u:" + pw + "@mail.example.com/inbox",
		"smtp://u@mail.example.com",
		"smtp://:" + pw + "@mail.example.com",
		"smtp:///nohost",
		"smtp:" + pw,
	}
	for _, raw := range bad {
		_, err := mail.NewSMTP(raw, from)
		if !apperr.Is(err, apperr.Invalid) {
			t.Errorf("NewSMTP(%q): err = %v, want invalid", raw, err)
			continue
		}
		if !strings.Contains(apperr.Message(err), "PROVISIONER_SMTP_URL") {
			t.Errorf("NewSMTP(%q): %v does not name PROVISIONER_SMTP_URL", raw, err)
		}
		assertNoPassword(t, err)
	}
}

func TestNewSMTPRejectsBadFrom(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"", "noreply", "noreply@example.com\r\nBcc: x@example.com", "<>"} {
		_, err := mail.NewSMTP("smtp://mail.example.com", f)
		if !apperr.Is(err, apperr.Invalid) || !strings.Contains(apperr.Message(err), "PROVISIONER_MAIL_FROM") {
			t.Errorf("NewSMTP(from %q): err = %v, want invalid naming PROVISIONER_MAIL_FROM", f, err)
		}
	}
}

func TestSMTPDeliversWithAuthWithoutTLS(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth(smtpUser, smtpPassword))
	s := newSMTP(t, smtpURL(srv, smtpPassword, "none"))
	m := credentialsMessage(t)

	if err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("server has %d messages, want 1", len(got))
	}
	r := got[0]
	if r.ParseErr != nil {
		t.Fatalf("received message does not parse: %v\n%s", r.ParseErr, r.Data)
	}
	crlf := strings.NewReplacer("\r\n", "\n")
	checks := []struct{ name, got, want string }{
		{"envelope from", r.From, "noreply@example.com"},
		{"envelope to", strings.Join(r.To, ","), "ana@example.com"},
		{"authenticated as", r.Username, smtpUser},
		{"Subject", r.Subject, m.Subject},
		{"Message-ID", r.Header.Get("Message-ID"), "<" + m.ID + "@example.com>"},
		{"Date", r.Header.Get("Date"), sentAt.Format(time.RFC1123Z)},
		{"MIME-Version", r.Header.Get("MIME-Version"), "1.0"},
		{"Auto-Submitted", r.Header.Get("Auto-Submitted"), "auto-generated"},
		{"text", crlf.Replace(r.Text), m.Text},
		{"HTML", crlf.Replace(r.HTML), crlf.Replace(m.HTML)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/alternative") {
		t.Errorf("Content-Type = %q, want multipart/alternative", ct)
	}
	if !strings.Contains(string(r.Data), "charset=UTF-8") {
		t.Error("parts are not declared UTF-8")
	}
	if !strings.Contains(r.HTML, "Ana &lt;script&gt;") {
		t.Error("hostile name arrived unescaped in the HTML part")
	}
	if !strings.Contains(r.Subject, "está lista") {
		t.Errorf("Spanish subject mangled: %q", r.Subject)
	}
}

func TestSMTPWithoutAuth(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSMTP(t, srv.URL()) // smtp://127.0.0.1:port?tls=none
	if err := s.Send(context.Background(), credentialsMessage(t)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r := srv.Messages(); len(r) != 1 || r[0].Username != "" {
		t.Fatalf("messages = %d (%+v), want 1 unauthenticated", len(r), r)
	}
}

// The default (and tls=starttls) must refuse a server that offers no STARTTLS rather than
// sending the email, and the password, in clear.
func TestSMTPStartTLSIsMandatory(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", "starttls"} {
		t.Run("tls="+mode, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.WithAuth(smtpUser, smtpPassword))
			s := newSMTP(t, smtpURL(srv, smtpPassword, mode))
			err := s.Send(context.Background(), credentialsMessage(t))
			if !apperr.Is(err, apperr.Unavailable) {
				t.Fatalf("err = %v, want unavailable", err)
			}
			if !strings.Contains(err.Error(), "STARTTLS") {
				t.Errorf("error does not say why: %v", err)
			}
			assertNoPassword(t, err)
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("server received %d messages in clear", n)
			}
			if n := srv.AuthAttempts(); n != 0 {
				t.Errorf("client sent AUTH %d times in clear", n)
			}
		})
	}
}

func TestSMTPStartTLS(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithSTARTTLS(), smtptest.WithAuth(smtpUser, smtpPassword))
	s := newSMTP(t, srv.URL(), mail.WithRootCAs(srv.RootCAs()))
	if err := s.Send(context.Background(), credentialsMessage(t)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := srv.Messages()
	if len(r) != 1 || !r[0].TLS || r[0].Username != smtpUser {
		t.Fatalf("got %d messages (%+v), want 1 over TLS, authenticated", len(r), r)
	}

	// Certificates are verified: without the test CA the same server is refused.
	untrusting := newSMTP(t, srv.URL())
	err := untrusting.Send(context.Background(), credentialsMessage(t))
	if !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("untrusted certificate: err = %v, want unavailable", err)
	}
	assertNoPassword(t, err)
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("server has %d messages after the refused send, want 1", n)
	}
}

func TestSMTPImplicitTLS(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithTLS(), smtptest.WithAuth(smtpUser, smtpPassword))
	s := newSMTP(t, strings.Replace(srv.URL(), "smtp://", "smtps://", 1), mail.WithRootCAs(srv.RootCAs()))
	if err := s.Send(context.Background(), credentialsMessage(t)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r := srv.Messages(); len(r) != 1 || !r[0].TLS {
		t.Fatalf("got %d messages, want 1 over TLS", len(r))
	}
}

func TestSMTPFailureKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		password string
		arm      func(*smtptest.Server)
		heal     func(*smtptest.Server)
		want     apperr.Kind
	}{
		{name: "rcpt 451", arm: func(s *smtptest.Server) { s.FailNext(1, 451) }, want: apperr.Unavailable},
		{name: "rcpt 550", arm: func(s *smtptest.Server) { s.FailNext(1, 550) }, want: apperr.Invalid},
		{name: "data 452", arm: func(s *smtptest.Server) { s.FailNextData(1, 452) }, want: apperr.Unavailable},
		{name: "data 554", arm: func(s *smtptest.Server) { s.FailNextData(1, 554) }, want: apperr.Invalid},
		{name: "server down", arm: (*smtptest.Server).Down, heal: (*smtptest.Server).Up, want: apperr.Unavailable},
		{name: "wrong password", password: "wrong-" + passwordFragment, want: apperr.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.WithAuth(smtpUser, smtpPassword))
			password := smtpPassword
			if tt.password != "" {
				password = tt.password
			}
			s := newSMTP(t, smtpURL(srv, password, "none"))
			if tt.arm != nil {
				tt.arm(srv)
			}
			err := s.Send(context.Background(), credentialsMessage(t))
			if got := apperr.KindOf(err); got != tt.want {
				t.Fatalf("err = %v (kind %s), want %s", err, got, tt.want)
			}
			assertNoPassword(t, err)
			if n := len(srv.Messages()); n != 0 {
				t.Fatalf("server stored %d messages despite the failure", n)
			}
			if tt.password != "" {
				return
			}
			// A retry after a temporary failure goes through, with the same Message-ID.
			if tt.heal != nil {
				tt.heal(srv)
			}
			if err := s.Send(context.Background(), credentialsMessage(t)); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if n := len(srv.Messages()); n != 1 {
				t.Fatalf("server has %d messages after the retry, want 1", n)
			}
		})
	}
}

func TestSMTPSendContext(t *testing.T) {
	t.Parallel()
	t.Run("cancelled before", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		s := newSMTP(t, srv.URL())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := s.Send(ctx, credentialsMessage(t))
		if !apperr.Is(err, apperr.Unavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want unavailable wrapping context.Canceled", err)
		}
	})
	t.Run("cancelled while the server holds DATA", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t)
		// An hour: if cancellation did not close the connection, the test would hang
		// instead of passing.
		s := newSMTP(t, srv.URL(), mail.WithTimeout(time.Hour))
		stalled, release := srv.StallNextData()
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- s.Send(ctx, credentialsMessage(t)) }()
		<-stalled
		cancel()
		err := <-errc
		if !apperr.Is(err, apperr.Unavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want unavailable wrapping context.Canceled", err)
		}
	})
}

func TestSMTPRejectsMalformedMessage(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	s := newSMTP(t, srv.URL())
	good := credentialsMessage(t)
	for name, m := range map[string]mail.Message{
		"no recipient":  {Subject: good.Subject, Text: good.Text, ID: good.ID},
		"bad recipient": {To: "ana@example.com>\r\nBcc: <x@example.com", Subject: good.Subject, Text: good.Text},
		"no subject":    {To: good.To, Text: good.Text},
		"no text":       {To: good.To, Subject: good.Subject, HTML: good.HTML},
	} {
		if err := s.Send(context.Background(), m); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("%s: err = %v, want invalid", name, err)
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server received %d malformed messages", n)
	}
}

func TestSMTPCheck(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth(smtpUser, smtpPassword))
	if err := newSMTP(t, smtpURL(srv, smtpPassword, "none")).Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	err := newSMTP(t, smtpURL(srv, "bad-"+passwordFragment, "none")).Check(context.Background())
	if !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("Check with a bad password: err = %v, want unavailable", err)
	}
	assertNoPassword(t, err)
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("Check sent %d messages", n)
	}
}

func TestSMTPConcurrentSends(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth(smtpUser, smtpPassword))
	s := newSMTP(t, smtpURL(srv, smtpPassword, "none"))
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := mail.Resumed("en", mail.ResumedData{To: fmt.Sprintf("c%d@example.com", i), URL: "https://x.example.com", Key: fmt.Sprint(i)})
			if err == nil {
				err = s.Send(context.Background(), m)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := len(srv.WaitFor(n, 10*time.Second)); got != n {
		t.Errorf("server has %d messages, want %d", got, n)
	}
}
