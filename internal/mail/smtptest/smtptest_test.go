package smtptest_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/mail/smtptest"
)

// These tests drive the fake with the standard library's net/smtp, a client independent of
// the go-mail sender the fake exists for, so that the fake is checked against the protocol
// rather than against the code it tests.

const rawMessage = "From: Robot <robot@example.com>\r\n" +
	"To: ana@example.com\r\n" +
	"Subject: =?UTF-8?q?Su_instancia_est=C3=A1_lista?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=\"b1\"\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"Q29udHJhc2XDsWE6IFMzY3JldA==\r\n" + // "Contraseña: S3cret"
	"--b1\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"<p>Contrase=C3=B1a: <code>S3cret</code> and a long line that is soft-=\r\n" +
	"broken</p>\r\n" +
	"--b1--\r\n"

func TestDeliverAndParse(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth("mailer", "pw"))

	err := smtp.SendMail(srv.Addr(), smtp.PlainAuth("", "mailer", "pw", srv.Host()),
		"robot@example.com", []string{"ana@example.com", "ops@example.com"}, []byte(rawMessage))
	if err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	msgs := srv.WaitFor(1, 10*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.ParseErr != nil {
		t.Fatalf("ParseErr: %v", m.ParseErr)
	}
	checks := []struct{ name, got, want string }{
		{"From", m.From, "robot@example.com"},
		{"To", strings.Join(m.To, ","), "ana@example.com,ops@example.com"},
		{"Username", m.Username, "mailer"},
		{"Subject", m.Subject, "Su instancia está lista"},
		{"Text", m.Text, "Contraseña: S3cret"},
		{"HTML", strings.TrimSpace(m.HTML), "<p>Contraseña: <code>S3cret</code> and a long line that is soft-broken</p>"},
		{"Header To", m.Header.Get("To"), "ana@example.com"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if m.TLS {
		t.Error("TLS = true on a plain connection")
	}
	if got := srv.AuthAttempts(); got != 1 {
		t.Errorf("AuthAttempts = %d, want 1", got)
	}
}

func TestAuthRequiredAndChecked(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth("mailer", "pw"))

	err := smtp.SendMail(srv.Addr(), nil, "robot@example.com", []string{"ana@example.com"}, []byte(rawMessage))
	if code := replyCode(err); code != 530 {
		t.Errorf("MAIL without AUTH: %v (code %d), want 530", err, code)
	}
	err = smtp.SendMail(srv.Addr(), smtp.PlainAuth("", "mailer", "wrong", srv.Host()),
		"robot@example.com", []string{"ana@example.com"}, []byte(rawMessage))
	if code := replyCode(err); code != 535 {
		t.Errorf("bad password: %v (code %d), want 535", err, code)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("stored %d messages, want 0", n)
	}
}

func TestFailNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		arm  func(*smtptest.Server)
		want int
	}{
		{"rcpt temporary", func(s *smtptest.Server) { s.FailNext(1, 451) }, 451},
		{"rcpt permanent", func(s *smtptest.Server) { s.FailNext(1, 550) }, 550},
		{"data temporary", func(s *smtptest.Server) { s.FailNextData(1, 452) }, 452},
		{"data permanent", func(s *smtptest.Server) { s.FailNextData(1, 554) }, 554},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t)
			tt.arm(srv)
			send := func() error {
				return smtp.SendMail(srv.Addr(), nil, "robot@example.com", []string{"ana@example.com"}, []byte(rawMessage))
			}
			if code := replyCode(send()); code != tt.want {
				t.Fatalf("first send: code %d, want %d", code, tt.want)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Fatalf("stored %d messages after a rejection, want 0", n)
			}
			if err := send(); err != nil {
				t.Fatalf("second send (knob used up): %v", err)
			}
			if n := len(srv.Messages()); n != 1 {
				t.Fatalf("stored %d messages, want 1", n)
			}
		})
	}
}

func TestDownRefusesUntilUp(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	srv.Down()
	if c, err := net.Dial("tcp", srv.Addr()); err == nil {
		c.Close()
		t.Fatal("dial succeeded while Down")
	}
	srv.Up()
	if err := smtp.SendMail(srv.Addr(), nil, "robot@example.com", []string{"ana@example.com"}, []byte(rawMessage)); err != nil {
		t.Fatalf("send after Up: %v", err)
	}
}

func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithSTARTTLS(), smtptest.WithAuth("mailer", "pw"))
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.localhost"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered before STARTTLS")
	}
	if err := c.StartTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: srv.RootCAs()}); err != nil {
		t.Fatalf("STARTTLS with the server's RootCAs: %v", err)
	}
	if err := c.Auth(smtp.PlainAuth("", "mailer", "pw", "127.0.0.1")); err != nil {
		t.Fatalf("AUTH after STARTTLS: %v", err)
	}
	if err := c.Mail("robot@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("ana@example.com"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(rawMessage)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if m := srv.WaitFor(1, 10*time.Second)[0]; !m.TLS || m.Username != "mailer" {
		t.Errorf("TLS = %v, Username = %q; want true, mailer", m.TLS, m.Username)
	}
}

func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithTLS())
	conn, err := tls.Dial("tcp", srv.Addr(), &tls.Config{ServerName: "127.0.0.1", RootCAs: srv.RootCAs()})
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("robot@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("ana@example.com"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte(rawMessage))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if m := srv.WaitFor(1, 10*time.Second)[0]; !m.TLS {
		t.Error("TLS = false on an implicit TLS connection")
	}
	if !strings.Contains(srv.URL(), "tls=tls") {
		t.Errorf("URL() = %q, want tls=tls", srv.URL())
	}
}

func TestStallNextData(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	stalled, release := srv.StallNextData()
	errc := make(chan error, 1)
	go func() {
		errc <- smtp.SendMail(srv.Addr(), nil, "robot@example.com", []string{"ana@example.com"}, []byte(rawMessage))
	}()
	<-stalled
	select {
	case err := <-errc:
		t.Fatalf("SendMail returned while the server held DATA: %v", err)
	default:
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("stored %d messages while stalled, want 0", n)
	}
	release()
	release() // idempotent
	if err := <-errc; err != nil {
		t.Fatalf("SendMail after release: %v", err)
	}
	srv.WaitFor(1, 10*time.Second)
}

func TestURL(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.WithAuth("mailer", "p@ss:w"))
	want := "smtp://mailer:p%40ss%3Aw@" + srv.Addr() + "?tls=none"
	if got := srv.URL(); got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
}

func TestParseKeepsUnparseableMessage(t *testing.T) {
	t.Parallel()
	m := smtptest.Parse([]byte("no header separator and no colon"))
	if m.ParseErr == nil {
		t.Fatal("ParseErr = nil for garbage")
	}
	if string(m.Data) != "no header separator and no colon" {
		t.Errorf("Data = %q", m.Data)
	}
}

func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}
