package queue

import (
	"context"
	"database/sql"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// Collector exports the job queue's depth and its oldest waiting job, read from River's
// river_job table at scrape time: the table is shared by every replica, so each one
// reports the whole queue, and a process that cannot keep up shows as a backlog whoever
// scrapes it.
type Collector struct {
	db     *database.DB
	log    *slog.Logger
	jobs   *prometheus.Desc
	oldest *prometheus.Desc
}

// NewCollector returns the queue's collector on db; log (nil: discarded) hears about a
// scrape whose query failed, which then reports no queue metrics rather than wrong ones.
func NewCollector(db *database.DB, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{
		db:  db,
		log: log,
		jobs: prometheus.NewDesc("provisioner_jobs",
			"Jobs in River's table by kind and state (available, scheduled, running, retryable, completed, cancelled, discarded, pending); completed and discarded jobs are kept for River's retention (a day, a week).",
			[]string{"kind", "state"}, nil),
		oldest: prometheus.NewDesc("provisioner_job_oldest_age_seconds",
			"Seconds since the oldest job of the kind still waiting to run (available, or retryable after a failure) was inserted; 0 when none waits.",
			[]string{"kind"}, nil),
	}
}

// scrapeTimeout bounds the two queries, so a stuck database never hangs a scrape.
const scrapeTimeout = 5 * time.Second

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.jobs
	ch <- c.oldest
}

// Collect implements prometheus.Collector. Every state of every kind present in the table
// is reported, zeros included, so that an alert on a state has a series to look at.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	counts, err := c.counts(ctx)
	if err != nil {
		c.log.Warn("queue metrics: reading river_job failed", "error", err.Error())
		return
	}
	ages, err := c.ages(ctx)
	if err != nil {
		c.log.Warn("queue metrics: reading river_job failed", "error", err.Error())
		return
	}
	for kind, byState := range counts {
		for _, state := range rivertype.JobStates() {
			ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(byState[string(state)]), kind, string(state))
		}
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, max(ages[kind], 0), kind)
	}
}

func (c *Collector) counts(ctx context.Context) (map[string]map[string]int, error) {
	rows, err := c.db.SQL.QueryContext(ctx, "SELECT kind, CAST(state AS TEXT), COUNT(*) FROM river_job GROUP BY kind, state")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]map[string]int{}
	for rows.Next() {
		var kind, state string
		var n int
		if err := rows.Scan(&kind, &state, &n); err != nil {
			return nil, err
		}
		if out[kind] == nil {
			out[kind] = map[string]int{}
		}
		out[kind][state] = n
	}
	return out, rows.Err()
}

// ages computes the age in the database, with its own clock and its own timestamp format
// (riversqlite stores text).
func (c *Collector) ages(ctx context.Context) (map[string]float64, error) {
	query := `SELECT kind, (julianday('now') - MIN(julianday(created_at))) * 86400.0 FROM river_job
		WHERE state IN ('available', 'retryable') GROUP BY kind`
	if c.db.Dialect == database.Postgres {
		query = `SELECT kind, CAST(EXTRACT(EPOCH FROM now() - MIN(created_at)) AS DOUBLE PRECISION) FROM river_job
			WHERE state IN ('available', 'retryable') GROUP BY kind`
	}
	rows, err := c.db.SQL.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var kind string
		var age sql.NullFloat64
		if err := rows.Scan(&kind, &age); err != nil {
			return nil, err
		}
		out[kind] = age.Float64
	}
	return out, rows.Err()
}
