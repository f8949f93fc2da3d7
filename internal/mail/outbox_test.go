package mail_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail/smtptest"
)

// clock is a settable clock for tests that move time between sends.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

func outboxFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readEML(t *testing.T, path string) smtptest.Message {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := smtptest.Parse(data)
	if m.ParseErr != nil {
		t.Fatalf("%s does not parse: %v", path, m.ParseErr)
	}
	return m
}

func TestOutboxWritesACompleteMessage(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "outbox")
	box := mail.NewOutbox(dir, from, mail.WithClock(fixedClock))
	m := credentialsMessage(t)
	if err := box.Send(context.Background(), m); err != nil {
		t.Fatalf("Send: %v", err)
	}

	names := outboxFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("outbox holds %v, want one file", names)
	}
	if want := "20260201T093000Z-" + m.ID + ".eml"; names[0] != want {
		t.Errorf("file name %q, want %q", names[0], want)
	}
	path := filepath.Join(dir, names[0])
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v (%v), want 0600: it holds a password", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}

	got := readEML(t, path)
	crlf := strings.NewReplacer("\r\n", "\n")
	checks := []struct{ name, got, want string }{
		{"From", got.Header.Get("From"), `"n8n Cloud" <noreply@example.com>`},
		{"To", got.Header.Get("To"), "<ana@example.com>"},
		{"Subject", got.Subject, m.Subject},
		{"Message-ID", got.Header.Get("Message-ID"), "<" + m.ID + "@example.com>"},
		{"Date", got.Header.Get("Date"), sentAt.Format(time.RFC1123Z)},
		{"text", crlf.Replace(got.Text), m.Text},
		{"HTML", crlf.Replace(got.HTML), crlf.Replace(m.HTML)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if !strings.Contains(got.Text, "Xk9-pQ2v") {
		t.Error("the credentials email in the outbox lacks the password")
	}
}

// The outbox must hold what SMTP would have sent, so that a file opened by a newcomer is
// the email a customer gets.
func TestOutboxMatchesSMTP(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t)
	m := credentialsMessage(t)
	if err := newSMTP(t, srv.URL()).Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := mail.NewOutbox(dir, from, mail.WithClock(fixedClock)).Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	sent := srv.Messages()[0]
	filed := readEML(t, filepath.Join(dir, outboxFiles(t, dir)[0]))
	for _, h := range []string{"From", "To", "Subject", "Message-ID", "Date", "MIME-Version", "Auto-Submitted", "User-Agent"} {
		if a, b := sent.Header.Get(h), filed.Header.Get(h); a != b {
			t.Errorf("%s: SMTP sent %q, outbox has %q", h, a, b)
		}
	}
	if sent.Text != filed.Text || sent.HTML != filed.HTML {
		t.Error("bodies differ between SMTP and the outbox")
	}
}

func TestOutboxSameIDOverwrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := &clock{now: sentAt}
	box := mail.NewOutbox(dir, from, mail.WithClock(clk.Now))
	first := credentialsMessage(t)
	if err := box.Send(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	name := outboxFiles(t, dir)[0]

	// The job crashed after sending and runs again an hour later: same ID, one file.
	clk.Advance(time.Hour)
	again := first
	again.Subject = "re-sent"
	if err := box.Send(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	names := outboxFiles(t, dir)
	if len(names) != 1 || names[0] != name {
		t.Fatalf("outbox holds %v, want only %s", names, name)
	}
	got := readEML(t, filepath.Join(dir, name))
	if got.Subject != "re-sent" {
		t.Errorf("Subject = %q: the second send did not replace the first", got.Subject)
	}
	if got.Header.Get("Date") != sentAt.Add(time.Hour).Format(time.RFC1123Z) {
		t.Errorf("Date = %q, want the re-send's", got.Header.Get("Date"))
	}

	// Another ID, even one that ends like the first, is another file.
	other := first
	other.ID = "x-" + first.ID
	if err := box.Send(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if names := outboxFiles(t, dir); len(names) != 2 {
		t.Fatalf("outbox holds %v, want two files", names)
	}
	if err := box.Send(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if names := outboxFiles(t, dir); len(names) != 2 {
		t.Fatalf("outbox holds %v after re-sending the first ID, want two files", names)
	}
}

func TestOutboxConcurrentSameID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := &clock{now: sentAt}
	box := mail.NewOutbox(dir, from, mail.WithClock(clk.Now))
	m := credentialsMessage(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clk.Advance(time.Second) // each send would otherwise get the same file name
			if err := box.Send(context.Background(), m); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if names := outboxFiles(t, dir); len(names) != 1 {
		t.Fatalf("outbox holds %v, want one file", names)
	}
}

func TestOutboxNamesAreSafe(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "outbox")
	box := mail.NewOutbox(dir, from, mail.WithClock(fixedClock))
	base := credentialsMessage(t)
	for _, id := range []string{"../../escape", "a/b", "a_b", "", strings.Repeat("long", 100)} {
		m := base
		m.ID = id
		if err := box.Send(context.Background(), m); err != nil {
			t.Fatalf("Send(ID %q): %v", id, err)
		}
	}
	names := outboxFiles(t, dir)
	if len(names) != 5 {
		t.Fatalf("outbox holds %d files %v, want 5 (a/b and a_b must not collide)", len(names), names)
	}
	valid := regexp.MustCompile(`^20260201T093000Z-[A-Za-z0-9_.-]{1,140}\.eml$`)
	for _, n := range names {
		if !valid.MatchString(n) {
			t.Errorf("unsafe or malformed file name %q", n)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape.eml")); !errors.Is(err, os.ErrNotExist) {
		t.Error("an ID with ../ wrote outside the outbox")
	}
}

// A failed write leaves no file behind: neither a half message nor a temporary file.
func TestOutboxFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	blocker := filepath.Join(parent, "outbox")
	if err := os.WriteFile(blocker, []byte("a file where the directory should be"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := mail.NewOutbox(blocker, from).Send(context.Background(), credentialsMessage(t))
	if !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if names := outboxFiles(t, parent); len(names) != 1 {
		t.Errorf("parent holds %v, want only the blocker", names)
	}

	dir := t.TempDir()
	box := mail.NewOutbox(dir, from)
	bad := credentialsMessage(t)
	bad.To = "not an address"
	if err := box.Send(context.Background(), bad); !apperr.Is(err, apperr.Invalid) {
		t.Fatalf("bad recipient: err = %v, want invalid", err)
	}
	if err := box.Send(context.Background(), credentialsMessage(t)); err != nil {
		t.Fatal(err)
	}
	for _, n := range outboxFiles(t, dir) {
		if strings.HasPrefix(n, ".") {
			t.Errorf("temporary file %q left behind", n)
		}
	}
}

func TestOutboxErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	err := mail.NewOutbox(dir, "not-an-address").Send(context.Background(), credentialsMessage(t))
	if !apperr.Is(err, apperr.Invalid) || !strings.Contains(apperr.Message(err), "PROVISIONER_MAIL_FROM") {
		t.Errorf("bad from: err = %v, want invalid naming PROVISIONER_MAIL_FROM", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = mail.NewOutbox(dir, from).Send(ctx, credentialsMessage(t))
	if !apperr.Is(err, apperr.Unavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v, want unavailable wrapping context.Canceled", err)
	}
	if names := outboxFiles(t, dir); len(names) != 0 {
		t.Errorf("outbox holds %v after failed sends", names)
	}
	if err := mail.NewOutbox(filepath.Join(dir, "new"), from).Check(context.Background()); err != nil {
		t.Errorf("Check: %v", err)
	}
}
