package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/mail"
)

func TestAlertWebhookURLIsCheckedAtStart(t *testing.T) {
	t.Parallel()
	env := map[string]string{"PROVISIONER_DATA_DIR": t.TempDir(), "PROVISIONER_ALERT_WEBHOOK_URL": "hooks.slack.com/services/T0/B0/s3cr3t-token"}
	err := run(context.Background(), []string{"provisioner", "migrate"}, mapEnv(env), io.Discard, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "PROVISIONER_ALERT_WEBHOOK_URL") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v, want one naming the variable and not its value", err)
	}
}

type mailbox struct {
	sent []mail.Message
	err  error
}

func (m *mailbox) Send(_ context.Context, msg mail.Message) error {
	m.sent = append(m.sent, msg)
	return m.err
}

type hookFunc func(ctx context.Context, subject, body string) error

func (f hookFunc) Send(ctx context.Context, subject, body string) error { return f(ctx, subject, body) }

// One channel failing does not keep the alert from the other, and the caller hears of it.
func TestAlertOperatorUsesBothChannels(t *testing.T) {
	t.Parallel()
	var posted []string
	box := &mailbox{}
	n := notifier{mail: box, operator: "ops@example.com", log: slog.New(slog.DiscardHandler),
		webhook: hookFunc(func(_ context.Context, subject, _ string) error {
			posted = append(posted, subject)
			return errors.New("webhook down")
		})}
	err := n.AlertOperator(context.Background(), "No room", "no host has room")
	if len(box.sent) != 1 || len(posted) != 1 || err == nil || !strings.Contains(err.Error(), "webhook down") {
		t.Fatalf("mailed %d, posted %v, err %v", len(box.sent), posted, err)
	}
	box.err = errors.New("smtp down")
	err = (notifier{mail: box, operator: "ops@example.com", log: n.log, webhook: hookFunc(func(context.Context, string, string) error {
		posted = append(posted, "again")
		return nil
	})}).AlertOperator(context.Background(), "No room", "again")
	if len(posted) != 2 || err == nil || !strings.Contains(err.Error(), "smtp down") {
		t.Fatalf("posted %v, err %v", posted, err)
	}
	if err := (notifier{mail: box, log: n.log}).AlertOperator(context.Background(), "s", "b"); err != nil || len(box.sent) != 2 {
		t.Fatalf("no channel configured: %v, mailed %d", err, len(box.sent))
	}
}
