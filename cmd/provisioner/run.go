package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/metrics"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

const usage = `usage: provisioner [command]

commands:
  serve      run the service (default): REST API, webhooks, workers
  migrate    apply pending database migrations and exit
  hosts      the host inventory: list, add, drain, enable, disable, set, evacuate
  instances  list, show, suspend, resume, restart, upgrade (one or --all), backup, restore, move, delete, retry
  backups    every instance's backups: list (--status failed)
  db         the provisioner's own database: dump, list, restore (encrypted, in the bucket)
  doctor     compare the database with the hosts and DNS; --fix repairs the safe drift
  pool       the warm pool: ready and starting n8n instances per plan and host
  demo       watch a purchase become a running n8n against in-process fakes (no setup needed)
  healthcheck ask the local service's /healthz (exit status 0 when it answers 200), for Docker
  help       show this help

Each command takes --help, e.g. provisioner hosts add --help.

Configuration comes from PROVISIONER_* environment variables (see README.md).
`

// run is the whole program; main only adds the process's signals, environment and output.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 1 {
		cmd = args[1]
	}
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "serve", "migrate":
	case "hosts", "instances", "backups", "doctor", "pool", "db":
		return runOps(ctx, cmd, args[2:], getenv, stdout, stderr)
	case "demo":
		return runDemo(ctx, args[2:], getenv, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, args[2:], getenv, stdout)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}

	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	for _, g := range cfg.generated {
		log.Warn("DEVELOPMENT SECRET IN USE: the variable is unset, so a generated value from the data dir is used; set it in production", "secret", g)
	}

	db, err := database.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("PROVISIONER_DATABASE_URL: %w", err)
	}
	defer db.Close()
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	if err := queue.Migrate(ctx, db); err != nil {
		return err
	}
	log.Info("database ready", "dialect", db.Dialect, "migrations_applied", applied)
	if cmd == "migrate" {
		fmt.Fprintf(stdout, "applied %d migration(s); the %s schema is current\n", applied, db.Dialect)
		return nil
	}
	return serve(ctx, cfg, db, log)
}

func serve(ctx context.Context, cfg config, db *database.DB, log *slog.Logger) error {
	keys, err := secret.NewKeyring(cfg.MasterKey, cfg.PreviousKeys...)
	if err != nil {
		return fmt.Errorf("PROVISIONER_MASTER_KEY: %w", err)
	}
	hostStore := hosts.NewStore(db.Gorm, nil).WithOvercommit(cfg.Overcommit)
	inventory, err := newInventory(cfg, hostStore)
	if err != nil {
		return err
	}
	instanceStore := instances.NewStore(db.Gorm, nil)
	workers := river.NewWorkers()
	q, err := queue.Open(ctx, db, queue.Config{Workers: workers, Logger: log, RescueAfter: cfg.Providers.rescueAfter()})
	if err != nil {
		return err
	}
	registry := prometheus.NewRegistry()
	svc, err := newInstanceService(cfg, db, keys, instanceStore, hostStore, q, log, registry)
	if err != nil {
		return err
	}
	svc.Register(workers)
	q.AddPeriodic(svc.PeriodicJobs()...)
	if err := addDatabaseDump(workers, q, cfg, svc, log); err != nil {
		return err
	}

	bill, err := billing.New(cfg.Billing, billing.Deps{
		DB: db.Gorm, Queue: q, Reconciler: reconciler{svc, cfg.Billing.Policy}, Capacity: capacity{hostStore, svc},
		Plans: cfg.Plans, Logger: log, Metrics: registry,
		HTTPClient: paymentsHTTPClient(metrics.NewDependencies(registry), cfg.Billing),
	})
	if err != nil {
		return err
	}
	bill.Register(workers)
	registry.MustRegister(queue.NewCollector(db, log), billing.NewInboxCollector(db.Gorm))
	registry.MustRegister(hosts.NewCollector(hostStore)) // provisioner_host_*: one series per host
	q.AddPeriodic(bill.PeriodicJobs()...)

	api := httpapi.New(httpapi.Config{
		Instances: instanceStore,
		Actions:   svc,
		Doctor:    svc,
		Pool:      svc,
		Hosts:     inventory,
		Billing:   bill,
		Plans:     cfg.Plans,
		Ready:     db.Ready,
		AdminKey:  cfg.AdminAPIKey,
		PortalKey: cfg.PortalAPIKey,
		Logger:    log,
		Registry:  registry,
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("PROVISIONER_ADDR: %w", err)
	}
	if err := q.Start(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("starting the job workers: %w", err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			srv.Close()
			q.Stop(ctx)
			return fmt.Errorf("PROVISIONER_METRICS_ADDR: %w", err)
		}
		metrics := &http.Server{Handler: api.Metrics(), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- metrics.Serve(mln) }()
		defer metrics.Close()
		log.Info("metrics listening", "addr", mln.Addr().String())
	}
	go bill.Run(ctx) // enqueues stored webhook events as soon as they arrive
	log.Info("listening", "addr", ln.Addr().String(), "base_domain", cfg.BaseDomain, "plans", len(cfg.Plans))

	select {
	case err = <-errc:
	case err = <-q.Lost(): // its jobs are being taken over: exit, and let the supervisor restart us
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutdownCtx); serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	// Running jobs get the same grace; an unfinished one is retried by the next process.
	if qerr := q.Stop(shutdownCtx); qerr != nil && err == nil && !errors.Is(qerr, context.DeadlineExceeded) {
		err = qerr
	}
	return err
}

// newInstanceService wires the adapters into the instance service. reg, when not nil (the
// serving process), receives the service's metrics.
func newInstanceService(cfg config, db *database.DB, keys *secret.Keyring, store *instances.Store, hostStore *hosts.Store, q *queue.Queue, log *slog.Logger, reg prometheus.Registerer) (*instances.Service, error) {
	p := cfg.Providers
	var steps instances.StepObserver
	if reg != nil {
		p.deps = metrics.NewDependencies(reg)
		steps = metrics.NewSaga(reg)
	}
	dnsAdapter, err := p.dnsAdapter()
	if err != nil {
		return nil, err
	}
	agent, err := p.agent()
	if err != nil {
		return nil, err
	}
	mailSender, err := p.mailSender(cfg.DataDir, log)
	if err != nil {
		return nil, err
	}
	webhook, err := p.alertWebhook()
	if err != nil {
		return nil, err
	}
	archives, err := cfg.Backups.archives()
	if err != nil {
		return nil, err
	}
	var probes instances.UptimeMetrics
	if reg != nil {
		m := newProbeMetrics()
		reg.MustRegister(m)
		probes = m
	}
	return instances.NewService(instances.Config{
		Bucket: archives, Backups: cfg.Backups.Policy,
		Uptime: cfg.Uptime, UptimeMetrics: probes,
		Store: store, Keys: keys, Queue: q, Plans: cfg.Plans,
		Placer: placer{hostStore}, DNS: dnsAdapter, Agent: agent,
		App:      n8nApp{},
		Notifier: notifier{mail: mailSender, operator: p.OperatorEmail, webhook: webhook, portalURL: cfg.Billing.PortalURL, log: log},
		Billing:  billingHealth{db.Gorm},

		BaseDomain: cfg.BaseDomain, HealthTimeout: p.HealthTimeout, JobTimeout: p.JobTimeout, TimeZone: p.TimeZone,
		StepDeadline: p.StepDeadline, AlertAfter: p.StepAlertAfter, PollInterval: p.HealthPoll,
		Retention:     cfg.Billing.Policy.Retention,
		SweepInterval: p.SweepInterval, DoctorInterval: p.DoctorInterval, PoolInterval: p.PoolInterval,
		Logger: log, AfterStep: crashAfter(p.CrashAfterStep, log), Steps: steps,
	}), nil
}

// crashAfter returns the crash-safety tests' hook: SIGKILL the process right after step
// is stored, so that a real process dies at each step in turn. nil when step is empty.
func crashAfter(step string, log *slog.Logger) func(string) {
	if step == "" {
		return nil
	}
	return func(done string) {
		if done != step {
			return
		}
		log.Warn("crash hook: killing the process after step", "step", step)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal arrives asynchronously; never go on to the next step
	}
}
