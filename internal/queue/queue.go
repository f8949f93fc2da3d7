// Package queue runs durable jobs with River on the service's own database: riverpgxv5 on
// PostgreSQL, riversqlite on SQLite. Jobs survive restarts and crashes, retry with backoff,
// and several provisioner replicas on one PostgreSQL share them (River elects a leader for
// periodic jobs and locks each job to one worker).
//
// River's client is generic over the driver's transaction type; Queue hides that so the
// rest of the service inserts and runs jobs the same way on both databases.
//
// A worker queue takes over a dead process's running jobs within seconds (lease.go): on
// PostgreSQL through a lease per process, on SQLite through a lock file that also keeps a
// second serving process off the database.
package queue

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// Config says what the queue runs. Workers nil makes an insert-only queue (the CLI).
type Config struct {
	Workers      *river.Workers
	PeriodicJobs []*river.PeriodicJob
	// MaxWorkers bounds concurrent jobs (default 50: most jobs wait on hosts and n8n).
	MaxWorkers int
	// PollInterval is how often workers look for new jobs when no notification arrives.
	// PostgreSQL notifies workers of new jobs, so its default is one second; SQLite has no
	// notifications, so its default is 250 ms, or a purchase would wait up to a second
	// between each of its jobs.
	PollInterval time.Duration
	// RetryPolicy overrides River's exponential backoff (tests shorten it).
	RetryPolicy river.ClientRetryPolicy
	// RescueAfter is how long a job may stay running before it is presumed lost with a
	// crashed process and run again (default 1h). It must exceed every job's timeout.
	RescueAfter time.Duration
	Logger      *slog.Logger
}

// Queue inserts and runs jobs.
type Queue struct {
	client  client
	closeFn func()

	lease    *pgLease  // PostgreSQL worker queues
	takeover *takeover // PostgreSQL worker queues
	lost     *lostSignal
	stop     context.CancelFunc // ends the lease's loops
	loops    sync.WaitGroup
	log      *slog.Logger
}

// client is the part of *river.Client[TTx] the service uses, whatever TTx is.
type client interface {
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	StopAndCancel(ctx context.Context) error
	ID() string
	JobGet(ctx context.Context, id int64) (*rivertype.JobRow, error)
	JobRetry(ctx context.Context, id int64) (*rivertype.JobRow, error)
	Subscribe(kinds ...river.EventKind) (<-chan *river.Event, func())
	PeriodicJobs() *river.PeriodicJobBundle
}

// Open returns a queue on db. The caller must have migrated River's tables (Migrate).
// A worker queue (cfg.Workers set) on PostgreSQL takes a lease; on SQLite it takes the
// database's lock file, failing when another process holds it, and puts back in the queue
// the jobs a dead process left running.
func Open(ctx context.Context, db *database.DB, cfg Config) (*Queue, error) {
	if cfg.PollInterval == 0 && db.Dialect == database.SQLite {
		cfg.PollInterval = 250 * time.Millisecond
	}
	rc := riverConfig(cfg)
	q := &Queue{log: rc.Logger}
	switch db.Dialect {
	case database.Postgres:
		pool, err := pgxpool.New(ctx, db.URL)
		if err != nil {
			return nil, fmt.Errorf("opening the job queue's PostgreSQL pool: %w", err)
		}
		q.closeFn = pool.Close
		if cfg.Workers != nil {
			if q.lease, err = takePGLease(ctx, db.URL); err != nil {
				pool.Close()
				return nil, err
			}
			rc.ID = q.lease.id
			q.takeover = &takeover{pool: pool, self: q.lease.id, log: rc.Logger}
			q.lost = &lostSignal{ch: make(chan error, 1)}
			q.closeFn = func() { q.lease.close(); pool.Close() }
		}
		if q.client, err = river.NewClient(riverpgxv5.New(pool), rc); err != nil {
			q.closeFn()
			return nil, err
		}
	default:
		q.closeFn = func() {}
		if cfg.Workers != nil {
			if err := q.recoverSQLite(ctx, db); err != nil {
				return nil, err
			}
		}
		c, err := river.NewClient(riversqlite.New(db.SQL), rc)
		if err != nil {
			q.closeFn()
			return nil, err
		}
		q.client = c
	}
	return q, nil
}

// recoverSQLite takes the database's lock file and puts back in the queue every job a
// dead process left running: holding the lock proves no live process runs them.
func (q *Queue) recoverSQLite(ctx context.Context, db *database.DB) error {
	_, path, err := database.ParseURL(db.URL)
	if err != nil {
		return err
	}
	lock, err := lockSQLite(path)
	if err != nil {
		return err
	}
	q.closeFn = lock.close
	res, err := db.SQL.ExecContext(ctx, "UPDATE river_job SET state = 'available' WHERE state = 'running'")
	if err != nil {
		lock.close()
		return fmt.Errorf("putting back the jobs a dead process left running: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		q.log.Warn("queue: put back the jobs an earlier process left running", "jobs", n)
	}
	return nil
}

func riverConfig(cfg Config) *river.Config {
	rc := &river.Config{
		Logger:       cfg.Logger,
		PeriodicJobs: cfg.PeriodicJobs,
		RetryPolicy:  cfg.RetryPolicy,
		JobTimeout:   15 * time.Minute, // an n8nctl upgrade with its backup is the longest job
		// A job left running by a crashed process is picked up again after this.
		RescueStuckJobsAfter: cmp.Or(cfg.RescueAfter, time.Hour),
	}
	rc.JobTimeout = min(rc.JobTimeout, rc.RescueStuckJobsAfter)
	if rc.Logger == nil {
		rc.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Workers != nil {
		max := cfg.MaxWorkers
		if max == 0 {
			max = 50
		}
		rc.Workers = cfg.Workers
		rc.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: max}}
		rc.FetchPollInterval = cfg.PollInterval
		if rc.FetchPollInterval == 0 {
			rc.FetchPollInterval = time.Second
		}
		rc.FetchCooldown = min(rc.FetchPollInterval, 100*time.Millisecond)
	}
	return rc
}

// Migrate creates or updates River's own tables on db.
func Migrate(ctx context.Context, db *database.DB) error {
	switch db.Dialect {
	case database.Postgres:
		pool, err := pgxpool.New(ctx, db.URL)
		if err != nil {
			return err
		}
		defer pool.Close()
		return migrate(ctx, riverpgxv5.New(pool))
	default:
		return migrate(ctx, riversqlite.New(db.SQL))
	}
}

func migrate[TTx any](ctx context.Context, driver riverdriver.Driver[TTx]) error {
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrating the job queue's tables: %w", err)
	}
	return nil
}

// Insert enqueues a job. With opts' UniqueOpts an identical pending job is not duplicated.
func (q *Queue) Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	return q.client.Insert(ctx, args, opts)
}

// Job returns a job by id.
func (q *Queue) Job(ctx context.Context, id int64) (*rivertype.JobRow, error) {
	return q.client.JobGet(ctx, id)
}

// Retry makes a job (failed, cancelled or waiting for a retry) run again now.
func (q *Queue) Retry(ctx context.Context, id int64) (*rivertype.JobRow, error) {
	return q.client.JobRetry(ctx, id)
}

// Subscribe returns a channel of job events of the given kinds (tests, the demo).
func (q *Queue) Subscribe(kinds ...river.EventKind) (<-chan *river.Event, func()) {
	return q.client.Subscribe(kinds...)
}

// AddPeriodic schedules clock-driven jobs; River runs them on the elected leader only.
func (q *Queue) AddPeriodic(jobs ...*river.PeriodicJob) { q.client.PeriodicJobs().AddMany(jobs) }

// Start starts the workers; they run until Stop. On PostgreSQL it also starts watching
// the queue's own lease and looking for a dead process's jobs.
func (q *Queue) Start(ctx context.Context) error {
	if err := q.client.Start(ctx); err != nil {
		return err
	}
	if q.lease == nil {
		return nil
	}
	loops, stop := context.WithCancel(context.WithoutCancel(ctx))
	q.stop = stop
	q.loops.Add(2)
	go func() { defer q.loops.Done(); q.takeover.run(loops) }()
	go func() { defer q.loops.Done(); q.lease.watch(loops, q.leaseLost) }()
	return nil
}

// leaseLost stops running jobs at once: another process will take them over, and a job
// must never run twice at the same time. The caller learns it on Lost.
func (q *Queue) leaseLost(err error) {
	q.log.Error("queue: lost the lease; cancelling running jobs", "error", err.Error())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q.client.StopAndCancel(ctx)
	q.lost.fire(err)
}

// ClientID is the River client id of this queue's workers; on PostgreSQL it names the
// queue's lease ("<host>-<pid>-lease<key>").
func (q *Queue) ClientID() string { return q.client.ID() }

// Lost reports that the queue lost its lease and stopped working: the process should
// exit and be restarted. It never fires on SQLite or on an insert-only queue.
func (q *Queue) Lost() <-chan error {
	if q.lost == nil {
		return nil
	}
	return q.lost.ch
}

// Stop waits for running jobs to finish (or ctx to end) and closes the queue's resources,
// the lease last, so that no other process takes over a job still finishing here.
func (q *Queue) Stop(ctx context.Context) error {
	err := q.client.Stop(ctx)
	if q.stop != nil {
		q.stop()
		q.loops.Wait()
	}
	q.closeFn()
	return err
}

// Close releases the queue's resources without stopping workers (insert-only queues).
func (q *Queue) Close() { q.closeFn() }
