package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

// gauges scrapes reg and returns name{label values} → value, e.g. "provisioner_jobs{test_echo,available}".
func gauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetValue()
			}
			out[key+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestCollectorReportsDepthAndOldestJob(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		if err := queue.Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(queue.NewCollector(db, nil))
		if got := gauges(t, reg); len(got) != 0 {
			t.Fatalf("an empty queue reports %v", got)
		}

		inserter, err := queue.Open(ctx, db, queue.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer inserter.Close()
		for _, key := range []string{"old", "new"} {
			if _, err := inserter.Insert(ctx, echoArgs{Key: key}, nil); err != nil {
				t.Fatal(err)
			}
		}
		backdate := `UPDATE river_job SET created_at = datetime('now', '-1 hour', 'subsec') WHERE args LIKE '%old%'`
		if db.Dialect == database.Postgres {
			backdate = `UPDATE river_job SET created_at = now() - interval '1 hour' WHERE args->>'key' = 'old'`
		}
		if err := db.Gorm.Exec(backdate).Error; err != nil {
			t.Fatal(err)
		}
		got := gauges(t, reg)
		if got["provisioner_jobs{test_echo,available}"] != 2 || got["provisioner_jobs{test_echo,running}"] != 0 {
			t.Errorf("waiting jobs: %v", got)
		}
		// Generous bounds: the hour plus however long a loaded machine took to get here.
		if age := got["provisioner_job_oldest_age_seconds{test_echo}"]; age < 3590 || age > 3600+600 {
			t.Errorf("oldest age = %v s, want about an hour", age)
		}

		w := &echoWorker{done: make(chan string, 2)}
		workers := river.NewWorkers()
		river.AddWorker(workers, w)
		q, err := queue.Open(ctx, db, queue.Config{Workers: workers, PollInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer q.Stop(context.Background())
		deadline := time.Now().Add(30 * time.Second)
		for {
			got = gauges(t, reg)
			if got["provisioner_jobs{test_echo,completed}"] == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the jobs never completed: %v", got)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got["provisioner_jobs{test_echo,available}"] != 0 || got["provisioner_job_oldest_age_seconds{test_echo}"] != 0 {
			t.Errorf("after the run: %v", got)
		}
	})
}
