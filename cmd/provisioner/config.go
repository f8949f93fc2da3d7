package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

// config is the service's configuration, read from PROVISIONER_* variables. The variable
// names are a contract: operators' deployment files rely on them.
type config struct {
	Addr string
	// MetricsAddr, when set, serves /metrics without a key on a listener of its own.
	MetricsAddr  string
	DataDir      string
	DatabaseURL  string
	MasterKey    []byte
	PreviousKeys [][]byte
	BaseDomain   string
	AdminAPIKey  string
	PortalAPIKey string
	Plans        plans.Plans
	LogLevel     slog.Level
	Providers    providers
	Billing      billing.Config
	Backups      backupConfig
	Uptime       instances.UptimePolicy
	// Overcommit is how far placement may commit the hosts' memory and disk.
	Overcommit hosts.Overcommit
	// generated lists the development secrets that were generated into the data dir
	// because their variable was unset; the caller warns about each.
	generated []string
}

// envError names the variable whose value is wrong.
func envError(name string, err error) error {
	return fmt.Errorf("%s %w", name, err)
}

var domainPattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// loadConfig reads the configuration. In development (variables unset) it generates the
// master key and API keys into the data dir, so a bare `go run ./cmd/provisioner` works and
// keeps working across restarts with the same secrets.
func loadConfig(getenv func(string) string) (config, error) {
	env := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	c := config{
		Addr:       env("PROVISIONER_ADDR", ":8080"),
		DataDir:    env("PROVISIONER_DATA_DIR", "./data"),
		BaseDomain: strings.ToLower(env("PROVISIONER_BASE_DOMAIN", "localhost")),
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return c, envError("PROVISIONER_ADDR", errors.New("must be host:port, e.g. :8080 or 127.0.0.1:8080"))
	}
	if c.MetricsAddr = env("PROVISIONER_METRICS_ADDR", ""); c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return c, envError("PROVISIONER_METRICS_ADDR", errors.New("must be host:port on a private address, e.g. 127.0.0.1:9464"))
		}
	}
	if !domainPattern.MatchString(c.BaseDomain) || len(c.BaseDomain) > 200 {
		return c, envError("PROVISIONER_BASE_DOMAIN", fmt.Errorf("must be a DNS name such as n8n.example.com, got %q", c.BaseDomain))
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return c, envError("PROVISIONER_DATA_DIR", fmt.Errorf("cannot be created: %w", err))
	}
	c.DatabaseURL = env("PROVISIONER_DATABASE_URL", filepath.Join(c.DataDir, "provisioner.db"))
	if _, _, err := database.ParseURL(c.DatabaseURL); err != nil {
		return c, envError("PROVISIONER_DATABASE_URL", err)
	}
	if err := c.loadSecrets(getenv); err != nil {
		return c, err
	}
	plans, err := plans.Load(env("PROVISIONER_PLANS_FILE", ""))
	if err != nil {
		return c, envError("PROVISIONER_PLANS_FILE", fmt.Errorf("is not usable: %w", err))
	}
	c.Plans = plans
	if err := c.LogLevel.UnmarshalText([]byte(env("PROVISIONER_LOG_LEVEL", "info"))); err != nil {
		return c, envError("PROVISIONER_LOG_LEVEL", errors.New("must be debug, info, warn or error"))
	}
	if c.Billing, err = billing.ConfigFromEnv(getenv); err != nil {
		return c, err // its errors start with the variable's name
	}
	if c.Backups, err = loadBackupConfig(getenv); err != nil {
		return c, err
	}
	if c.Uptime, err = loadUptime(getenv); err != nil {
		return c, err
	}
	if c.Overcommit, err = loadOvercommit(getenv); err != nil {
		return c, err
	}
	c.Providers, err = loadProviders(getenv, c)
	return c, err
}

func (c *config) loadSecrets(getenv func(string) string) error {
	raw, err := c.devSecret(getenv, "PROVISIONER_MASTER_KEY", "master.key", secret.NewKey)
	if err != nil {
		return err
	}
	if c.MasterKey, err = secret.ParseKey(raw); err != nil {
		return envError("PROVISIONER_MASTER_KEY", fmt.Errorf("%w (generate one with: openssl rand -base64 32)", err))
	}
	for i, old := range strings.Split(getenv("PROVISIONER_MASTER_KEY_PREVIOUS"), ",") {
		if strings.TrimSpace(old) == "" {
			continue
		}
		key, err := secret.ParseKey(old)
		if err != nil {
			return envError("PROVISIONER_MASTER_KEY_PREVIOUS", fmt.Errorf("key %d %w", i+1, err))
		}
		c.PreviousKeys = append(c.PreviousKeys, key)
	}
	if c.AdminAPIKey, err = c.devSecret(getenv, "PROVISIONER_ADMIN_API_KEY", "admin-api.key", newAPIKey); err != nil {
		return err
	}
	if c.PortalAPIKey, err = c.devSecret(getenv, "PROVISIONER_PORTAL_API_KEY", "portal-api.key", newAPIKey); err != nil {
		return err
	}
	for name, key := range map[string]string{"PROVISIONER_ADMIN_API_KEY": c.AdminAPIKey, "PROVISIONER_PORTAL_API_KEY": c.PortalAPIKey} {
		if len(key) < 16 {
			return envError(name, errors.New("must be at least 16 characters"))
		}
	}
	if c.AdminAPIKey == c.PortalAPIKey {
		return envError("PROVISIONER_PORTAL_API_KEY", errors.New("must differ from PROVISIONER_ADMIN_API_KEY"))
	}
	return nil
}

// devSecret returns the variable's value or, when it is unset, the content of file in the
// data dir, generating it (mode 0600) on first use.
func (c *config) devSecret(getenv func(string) string, name, file string, generate func() (string, error)) (string, error) {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		return v, nil
	}
	path := filepath.Join(c.DataDir, file)
	c.generated = append(c.generated, name+" → "+path)
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", envError(name, fmt.Errorf("is unset and %s cannot be read: %w", path, err))
	}
	v, err := generate()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
		return "", envError(name, fmt.Errorf("is unset and %s cannot be written: %w", path, err))
	}
	return v, nil
}

func newAPIKey() (string, error) {
	k, err := secret.NewKey()
	return strings.NewReplacer("+", "", "/", "", "=", "").Replace(k), err
}
