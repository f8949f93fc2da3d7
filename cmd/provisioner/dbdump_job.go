package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/dbdump"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
	"github.com/n8n-provisioner/n8n-provisioner/internal/retention"
)

// The provisioner's own database is dumped every day at the opening of the backup window,
// sealed under the master key and uploaded to the bucket (package dbdump). It holds every
// customer's sealed encryption key: with the master key, the dump and the bucket, a new
// provisioner brings the fleet back (docs/disaster-recovery.md).

// alerter tells the operator (instances.Service).
type alerter interface {
	Alert(ctx context.Context, format string, args ...any)
}

// dbDumpArgs is the daily dump's job.
type dbDumpArgs struct{}

// Kind names the job.
func (dbDumpArgs) Kind() string { return "database_dump" }

type dbDumpWorker struct {
	river.WorkerDefaults[dbDumpArgs]
	bucket    dbdump.Bucket
	src       dbdump.Source
	masterKey []byte
	keep      retention.Policy
	alerts    alerter
	log       *slog.Logger
}

func (w *dbDumpWorker) NextRetry(job *river.Job[dbDumpArgs]) time.Time {
	return time.Now().Add(queue.Backoff(job.Attempt))
}

// dbDumpFresh is how recent a dump may be for the start-up run to skip a new one.
const dbDumpFresh = 20 * time.Hour

func (w *dbDumpWorker) Work(ctx context.Context, job *river.Job[dbDumpArgs]) error {
	now := time.Now().UTC()
	if dumps, err := dbdump.List(ctx, w.bucket); err == nil && len(dumps) > 0 && now.Sub(dumps[0].Taken) < dbDumpFresh {
		return nil // the start-up run after a dump today (a restart)
	}
	key, size, err := dbdump.Run(ctx, w.bucket, w.src, w.masterKey, w.keep, now)
	if err != nil {
		if job.Attempt >= job.MaxAttempts {
			w.alerts.Alert(ctx, "Database dump failed: the daily dump of the provisioner's database gave up after %d attempts: %v", job.Attempt, err)
		}
		return err
	}
	w.log.Info("database dumped to the bucket", "key", key, "bytes", size)
	return nil
}

// dailyAt is a river.PeriodicSchedule: every day at offset after 00:00 UTC.
type dailyAt time.Duration

func (d dailyAt) Next(t time.Time) time.Time {
	t = t.UTC()
	next := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).Add(time.Duration(d))
	for !next.After(t) {
		next = next.Add(24 * time.Hour)
	}
	return next
}

// addDatabaseDump registers the daily dump when a bucket is configured and dumps are on.
func addDatabaseDump(workers *river.Workers, q *queue.Queue, cfg config, alerts alerter, log *slog.Logger) error {
	if !cfg.Backups.Bucket || !cfg.Backups.DumpDatabase {
		return nil
	}
	store, err := cfg.Backups.openBucket()
	if err != nil {
		return err
	}
	src, err := dbdump.FromURL(cfg.DatabaseURL)
	if err != nil {
		return err
	}
	river.AddWorker(workers, &dbDumpWorker{bucket: store, src: src, masterKey: cfg.MasterKey, keep: cfg.Backups.Policy.Keep, alerts: alerts, log: log})
	q.AddPeriodic(river.NewPeriodicJob(dailyAt(cfg.Backups.Policy.WindowStart), func() (river.JobArgs, *river.InsertOpts) {
		return dbDumpArgs{}, &river.InsertOpts{MaxAttempts: 5}
	}, &river.PeriodicJobOpts{RunOnStart: true}))
	return nil
}
