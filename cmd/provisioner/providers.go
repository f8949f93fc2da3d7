package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/mail"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/alert"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	mailer "github.com/n8n-provisioner/n8n-provisioner/internal/mail"
	"github.com/n8n-provisioner/n8n-provisioner/internal/metrics"
)

// providers is the configuration of the outside systems the provisioning saga drives.
type providers struct {
	CloudflareToken, CloudflareZone, CloudflareURL string
	CloudflareProxied                              bool

	ProxmoxURL, ProxmoxTokenID, ProxmoxTokenSecret, ProxmoxCAFile string
	ProxmoxInsecureTLS                                            bool
	AgentPath                                                     string

	HealthTimeout time.Duration
	JobTimeout    time.Duration
	// StepDeadline and StepAlertAfter: how long a saga step or an action may stay blocked
	// before it is given up, and before the operator is told.
	StepDeadline   time.Duration
	StepAlertAfter time.Duration
	SMTPURL        string
	MailFrom       string
	OperatorEmail  string
	// AlertWebhookURL, when set, receives every operator alert too (Slack, Discord, ntfy).
	AlertWebhookURL string
	TimeZone        string
	SweepInterval   time.Duration
	PoolInterval    time.Duration
	// DoctorInterval, ProxmoxPoll and HealthPoll tune how often the doctor runs, the
	// guest agent's exec status is polled and n8n's readiness is asked.
	DoctorInterval time.Duration
	ProxmoxPoll    time.Duration
	ProxmoxExec    time.Duration // bounds one n8nctl run on a host
	HealthPoll     time.Duration

	// CrashAfterStep is the crash-safety tests' hook: it kills the process right after a
	// saga step is stored. It changes nothing before the kill.
	CrashAfterStep string

	// deps, when set (the serving process), records every call the adapters make.
	deps *metrics.Dependencies
}

// rescueAfter is how long a job may look running in a live process before River presumes
// it hung: just past the longest a live run may take. A dead process's jobs are taken over
// within seconds through its lease (package queue), not by this.
func (p providers) rescueAfter() time.Duration { return p.JobTimeout + time.Minute }

func loadProviders(getenv func(string) string, c config) (providers, error) {
	env := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	p := providers{
		CloudflareToken: env("PROVISIONER_CLOUDFLARE_API_TOKEN", ""),
		CloudflareZone:  env("PROVISIONER_CLOUDFLARE_ZONE_ID", ""),
		CloudflareURL:   env("PROVISIONER_CLOUDFLARE_API_URL", dns.DefaultBaseURL),

		ProxmoxURL:         env("PROVISIONER_PROXMOX_URL", ""),
		ProxmoxTokenID:     env("PROVISIONER_PROXMOX_TOKEN_ID", ""),
		ProxmoxTokenSecret: env("PROVISIONER_PROXMOX_TOKEN_SECRET", ""),
		ProxmoxCAFile:      env("PROVISIONER_PROXMOX_CA_FILE", ""),
		AgentPath:          env("PROVISIONER_HOST_AGENT_PATH", hosts.AgentDefaultPath),

		SMTPURL:         env("PROVISIONER_SMTP_URL", ""),
		MailFrom:        env("PROVISIONER_MAIL_FROM", "n8n <noreply@"+c.BaseDomain+">"),
		OperatorEmail:   env("PROVISIONER_OPERATOR_EMAIL", ""),
		AlertWebhookURL: env("PROVISIONER_ALERT_WEBHOOK_URL", ""),
		TimeZone:        env("PROVISIONER_TIMEZONE", "UTC"),

		CrashAfterStep: env("PROVISIONER_TEST_CRASH_AFTER_STEP", ""),
	}
	var err error
	if p.CloudflareProxied, err = parseBool(env("PROVISIONER_CLOUDFLARE_PROXIED", "true")); err != nil {
		return p, envError("PROVISIONER_CLOUDFLARE_PROXIED", err)
	}
	if p.ProxmoxInsecureTLS, err = parseBool(env("PROVISIONER_PROXMOX_INSECURE_TLS", "false")); err != nil {
		return p, envError("PROVISIONER_PROXMOX_INSECURE_TLS", err)
	}
	if p.HealthTimeout, err = time.ParseDuration(env("PROVISIONER_HEALTH_TIMEOUT", "3m")); err != nil || p.HealthTimeout <= 0 {
		return p, envError("PROVISIONER_HEALTH_TIMEOUT", errors.New("must be a positive duration such as 3m"))
	}
	for _, d := range []struct {
		name, def string
		dst       *time.Duration
	}{
		{"PROVISIONER_SWEEP_INTERVAL", "1m", &p.SweepInterval},
		{"PROVISIONER_DOCTOR_INTERVAL", "1h", &p.DoctorInterval},
		{"PROVISIONER_POOL_INTERVAL", "30s", &p.PoolInterval},
		{"PROVISIONER_PROXMOX_POLL_INTERVAL", "500ms", &p.ProxmoxPoll},
		{"PROVISIONER_PROXMOX_EXEC_TIMEOUT", "10m", &p.ProxmoxExec},
		{"PROVISIONER_HEALTH_POLL_INTERVAL", "250ms", &p.HealthPoll},
		{"PROVISIONER_STEP_DEADLINE", "30m", &p.StepDeadline},
		{"PROVISIONER_STEP_ALERT_AFTER", "3m", &p.StepAlertAfter},
	} {
		if *d.dst, err = time.ParseDuration(env(d.name, d.def)); err != nil || *d.dst <= 0 {
			return p, envError(d.name, errors.New("must be a positive duration such as "+d.def))
		}
	}
	if p.JobTimeout, err = time.ParseDuration(env("PROVISIONER_JOB_TIMEOUT", (p.HealthTimeout + 15*time.Minute).String())); err != nil || p.JobTimeout <= p.HealthTimeout {
		return p, envError("PROVISIONER_JOB_TIMEOUT", errors.New("must be a duration longer than PROVISIONER_HEALTH_TIMEOUT"))
	}
	if _, err := mail.ParseAddress(p.MailFrom); err != nil {
		return p, envError("PROVISIONER_MAIL_FROM", errors.New("must be an email address, e.g. n8n <noreply@example.com>"))
	}
	if p.OperatorEmail != "" {
		if _, err := mail.ParseAddress(p.OperatorEmail); err != nil {
			return p, envError("PROVISIONER_OPERATOR_EMAIL", errors.New("must be an email address"))
		}
	}
	if p.AlertWebhookURL != "" {
		if _, err := alert.New(alert.Config{URL: p.AlertWebhookURL}); err != nil {
			return p, err // names the variable, never its value: the URL is a credential
		}
	}
	if p.CrashAfterStep != "" && !slices.Contains(instances.Steps, p.CrashAfterStep) {
		return p, envError("PROVISIONER_TEST_CRASH_AFTER_STEP", fmt.Errorf("must be one of %v", instances.Steps))
	}
	if _, err := time.LoadLocation(p.TimeZone); err != nil {
		return p, envError("PROVISIONER_TIMEZONE", errors.New("must be an IANA time zone such as Europe/Madrid"))
	}
	return p, nil
}

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errors.New("must be true or false")
	}
	return b, nil
}

// dnsAdapter returns the Cloudflare adapter, or a stand-in that says what to configure.
func (p providers) dnsAdapter() (instances.DNS, error) {
	if p.CloudflareToken == "" && p.CloudflareZone == "" {
		return unconfigured{"Cloudflare DNS", "PROVISIONER_CLOUDFLARE_API_TOKEN and PROVISIONER_CLOUDFLARE_ZONE_ID"}, nil
	}
	cf, err := dns.New(dns.Config{APIToken: p.CloudflareToken, ZoneID: p.CloudflareZone, BaseURL: p.CloudflareURL, Proxied: p.CloudflareProxied,
		HTTPClient: p.metered(&http.Client{Timeout: 30 * time.Second}, "cloudflare", cloudflareRoutes)})
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_CLOUDFLARE_*: %w", err)
	}
	return dnsRecords{cf}, nil
}

// agent returns the Proxmox guest-agent runner, or a stand-in that says what to configure.
func (p providers) agent() (instances.Agent, error) {
	if p.ProxmoxURL == "" {
		return unconfigured{"Proxmox", "PROVISIONER_PROXMOX_URL, PROVISIONER_PROXMOX_TOKEN_ID and PROVISIONER_PROXMOX_TOKEN_SECRET"}, nil
	}
	hc, err := hosts.ProxmoxHTTPClient(p.ProxmoxCAFile, p.ProxmoxInsecureTLS)
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_PROXMOX_CA_FILE: %w", err)
	}
	hc = p.metered(hc, "proxmox", proxmoxRoutes)
	pve, err := hosts.NewProxmox(hosts.ProxmoxConfig{BaseURL: p.ProxmoxURL, TokenID: p.ProxmoxTokenID,
		TokenSecret: p.ProxmoxTokenSecret, HTTPClient: hc, PollInterval: p.ProxmoxPoll, ExecTimeout: p.ProxmoxExec})
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_PROXMOX_*: %w", err)
	}
	agent, err := hosts.NewAgent(hosts.AgentConfig{Exec: pve, Path: p.AgentPath})
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_HOST_AGENT_PATH: %w", err)
	}
	return hostAgent{agent}, nil
}

// mailSender returns the SMTP sender, or the file outbox in the data dir when no SMTP
// server is configured, so that no email is lost in development.
func (p providers) mailSender(dataDir string, log *slog.Logger) (sender, error) {
	if p.SMTPURL == "" {
		dir := filepath.Join(dataDir, "outbox")
		log.Warn("PROVISIONER_SMTP_URL is unset: emails are written to the outbox directory instead of sent", "dir", dir)
		return mailer.NewOutbox(dir, p.MailFrom), nil
	}
	s, err := mailer.NewSMTP(p.SMTPURL, p.MailFrom)
	if err != nil {
		return nil, err
	}
	if p.deps != nil {
		return meteredSender{s, p.deps}, nil
	}
	return s, nil
}
