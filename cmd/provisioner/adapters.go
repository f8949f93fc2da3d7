package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"gorm.io/gorm"

	"github.com/n8n-provisioner/n8n-provisioner/internal/alert"
	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
)

// The adapters below translate the concrete packages' types into the interfaces that
// instances declares; each is checked where it is defined.

var (
	_ instances.Placer   = placer{}
	_ instances.DNS      = dnsRecords{}
	_ instances.Agent    = hostAgent{}
	_ instances.App      = n8nApp{}
	_ instances.Notifier = notifier{}
	_ billing.Reconciler = reconciler{}
	_ billing.Capacity   = capacity{}
)

// reconciler hands billing's authoritative subscription state to the instances, with what
// the billing policy (grace, retention) asks of them.
type reconciler struct {
	instances *instances.Service
	policy    billing.Policy
}

func (r reconciler) Reconcile(ctx context.Context, s billing.Subscription) error {
	intent := s.Intent(r.policy)
	return r.instances.Reconcile(ctx, instances.Subscription{
		ID: s.ID, ClientID: s.ClientID, Email: s.Email, Name: s.Name, Locale: s.Locale, PlanID: s.PlanID,
		Status: string(s.Status), Run: intent.Run, WarnPastDue: intent.WarnPastDue,
		SuspendAt: intent.SuspendAt, DeleteAt: intent.DeleteAt,
	})
}

type dnsRecords struct{ cf *dns.Cloudflare }

func (d dnsRecords) Records(ctx context.Context, suffix string) (map[string]string, error) {
	list, err := d.cf.List(ctx, suffix)
	out := make(map[string]string, len(list))
	for _, r := range list {
		out[r.Name] = r.Content
	}
	return out, err
}

func (d dnsRecords) UpsertA(ctx context.Context, name, ip, comment string) (string, error) {
	r, err := d.cf.UpsertA(ctx, name, ip, comment)
	return r.ID, err
}

func (d dnsRecords) Delete(ctx context.Context, name string) error { return d.cf.Delete(ctx, name) }

// unconfigured stands in for an adapter whose variables are unset: the service still
// starts (development, demo), and the jobs that need it wait with a clear reason.
type unconfigured struct{ what, vars string }

func (u unconfigured) err() error {
	return apperr.New(apperr.Unavailable, "%s is not configured: set %s", u.what, u.vars)
}

func (u unconfigured) UpsertA(context.Context, string, string, string) (string, error) {
	return "", u.err()
}
func (u unconfigured) Delete(context.Context, string) error { return u.err() }
func (u unconfigured) Records(context.Context, string) (map[string]string, error) {
	return nil, u.err()
}
func (u unconfigured) Run(context.Context, string, int, string, string, map[string]string) (json.RawMessage, error) {
	return nil, u.err()
}

// n8nApp reaches customer instances through their host's ingress with the n8n package's
// own HTTP client, which verifies each instance's certificate against its host name.
type n8nApp struct{}

func (a n8nApp) client(ingressURL, fqdn string) *n8n.Client {
	return n8n.New(n8n.Config{IngressURL: ingressURL, Host: fqdn})
}

func (a n8nApp) Ready(ctx context.Context, ingressURL, fqdn string) error {
	return n8nNotYet(a.client(ingressURL, fqdn).CheckReady(ctx))
}

// n8nNotYet tells the saga that an n8n still starting is on its way, not failing.
func n8nNotYet(err error) error {
	if errors.Is(err, n8n.ErrStarting) {
		return fmt.Errorf("%w: %w", instances.ErrNotYet, err)
	}
	return err
}

// hostAgent runs n8nctl through the guest agent, and tells the saga that an agent not
// answering (its VM booting) is on its way back rather than failing.
type hostAgent struct{ agent *hosts.Agent }

func (h hostAgent) Run(ctx context.Context, node string, vmid int, verb, slug string, settings map[string]string) (json.RawMessage, error) {
	out, err := h.agent.Run(ctx, node, vmid, verb, slug, settings)
	if hosts.AgentNotRunning(err) {
		return out, fmt.Errorf("%w: %w", instances.ErrNotYet, err)
	}
	return out, err
}

func (a n8nApp) SetupOwner(ctx context.Context, ingressURL, fqdn string, o instances.Owner, guardUser, guardPassword string) error {
	err := a.client(ingressURL, fqdn).SetupOwner(ctx,
		n8n.Owner{Email: o.Email, FirstName: o.FirstName, LastName: o.LastName, Password: o.Password},
		n8n.BasicAuth{User: guardUser, Password: guardPassword})
	if errors.Is(err, n8n.ErrOwnerAlreadySetup) {
		return fmt.Errorf("%w: %w", instances.ErrOwnerAlreadySetup, err)
	}
	return n8nNotYet(err)
}

func (a n8nApp) Unclaimed(ctx context.Context, ingressURL, fqdn string) error {
	err := a.client(ingressURL, fqdn).Unclaimed(ctx)
	if errors.Is(err, n8n.ErrOwnerAlreadySetup) {
		return fmt.Errorf("%w: %w", instances.ErrOwnerAlreadySetup, err)
	}
	return n8nNotYet(err)
}

func (a n8nApp) Login(ctx context.Context, ingressURL, fqdn, email, password string) error {
	return a.client(ingressURL, fqdn).Login(ctx, email, password)
}

func (n8nApp) GeneratePassword() (string, error)      { return n8n.GeneratePassword() }
func (n8nApp) GenerateEncryptionKey() (string, error) { return n8n.GenerateEncryptionKey() }
func (n8nApp) GuardHTPasswd(user, password string) (string, error) {
	return n8n.SetupGuardHTPasswd(user, password)
}

// sender is what both mail senders (SMTP and the file outbox) do.
type sender interface {
	Send(ctx context.Context, m mail.Message) error
}

type notifier struct {
	mail      sender
	operator  string // the operator's address; alerts are only logged without one
	webhook   webhookAlerter
	portalURL string // where customers fix their payment method
	log       *slog.Logger
}

// alertWebhook returns the webhook that operator alerts are posted to, or nil when
// PROVISIONER_ALERT_WEBHOOK_URL is unset.
func (p providers) alertWebhook() (webhookAlerter, error) {
	if p.AlertWebhookURL == "" {
		return nil, nil
	}
	return alert.New(alert.Config{URL: p.AlertWebhookURL,
		HTTPClient: p.metered(&http.Client{Timeout: 10 * time.Second}, "alert_webhook", alertRoutes)})
}

// webhookAlerter posts an operator alert to a chat or push webhook (alert.Webhook); nil: none.
type webhookAlerter interface {
	Send(ctx context.Context, subject, body string) error
}

func (n notifier) Notify(ctx context.Context, x instances.Notice) error {
	var m mail.Message
	var err error
	switch x.Kind {
	case instances.NoticeSuspended:
		m, err = mail.Suspended(x.Locale, mail.SuspendedData{To: x.To, Name: x.Name, URL: x.URL, Reason: x.Reason,
			PortalURL: n.portalURL, SupportEmail: n.operator, Key: x.Key})
	case instances.NoticeResumed:
		m, err = mail.Resumed(x.Locale, mail.ResumedData{To: x.To, Name: x.Name, URL: x.URL, Key: x.Key})
	case instances.NoticePastDue:
		m, err = mail.PastDueWarning(x.Locale, mail.PastDueData{To: x.To, Name: x.Name, URL: x.URL, GraceEnds: x.Until,
			PortalURL: n.portalURL, Key: x.Key})
	case instances.NoticeDeleted:
		m, err = mail.Deleted(x.Locale, mail.DeletedData{To: x.To, Name: x.Name, URL: x.URL, BackupKeptUntil: x.Until,
			SupportEmail: n.operator, Key: x.Key})
	default:
		return apperr.New(apperr.Invalid, "unknown notice %q", x.Kind)
	}
	if err != nil {
		return err
	}
	return n.mail.Send(ctx, m)
}

func (n notifier) SendCredentials(ctx context.Context, c instances.Credentials) error {
	m, err := mail.Credentials(c.Locale, mail.CredentialsData{To: c.To, Name: c.Name, URL: c.URL,
		LoginEmail: c.LoginEmail, Password: c.Password, Key: c.Key})
	if err != nil {
		return err
	}
	return n.mail.Send(ctx, m)
}

// AlertOperator logs the alert, emails it and posts it to the webhook, each when
// configured; one channel failing does not keep the alert from the other.
func (n notifier) AlertOperator(ctx context.Context, subject, body string) error {
	n.log.Warn("operator alert", "subject", subject, "body", body)
	var errs []error
	if n.operator != "" {
		m, err := mail.OperatorAlert(n.operator, subject, body)
		if err == nil {
			err = n.mail.Send(ctx, m)
		}
		errs = append(errs, err)
	}
	if n.webhook != nil {
		errs = append(errs, n.webhook.Send(ctx, subject, body))
	}
	return errors.Join(errs...)
}

// billingHealth reads the billing inbox: an event that has waited unprocessed for more
// than stallAfter means the billing pipeline is stuck, and deletions must wait.
type billingHealth struct{ db *gorm.DB }

const stallAfter = 48 * time.Hour

func (b billingHealth) Stalled(ctx context.Context) (string, error) {
	var oldest struct{ ReceivedAt *time.Time }
	err := b.db.WithContext(ctx).Table("billing_events").Select("MIN(received_at) AS received_at").
		Where("processed_at IS NULL").Scan(&oldest).Error
	if err != nil {
		return "", err
	}
	if oldest.ReceivedAt != nil && time.Since(*oldest.ReceivedAt) > stallAfter {
		return fmt.Sprintf("a billing event has waited unprocessed since %s", oldest.ReceivedAt.UTC().Format(time.RFC3339)), nil
	}
	return "", nil
}
