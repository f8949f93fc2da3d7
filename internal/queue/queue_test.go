package queue_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

type echoArgs struct {
	Key string `json:"key" river:"unique"`
}

func (echoArgs) Kind() string { return "test_echo" }

type echoWorker struct {
	river.WorkerDefaults[echoArgs]
	runs  atomic.Int32
	fails int32 // the first fails runs return an error, to prove retries happen
	done  chan string
}

func (w *echoWorker) Work(ctx context.Context, job *river.Job[echoArgs]) error {
	if w.runs.Add(1) <= w.fails {
		return errors.New("transient failure")
	}
	w.done <- job.Args.Key
	return nil
}

type fastRetry struct{}

func (fastRetry) NextRetry(*rivertype.JobRow) time.Time { return time.Now().Add(10 * time.Millisecond) }

func TestJobsRunAndRetryOnBothDatabases(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		if err := queue.Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		if err := queue.Migrate(ctx, db); err != nil {
			t.Fatalf("second migrate: %v", err)
		}
		w := &echoWorker{fails: 2, done: make(chan string, 1)}
		workers := river.NewWorkers()
		river.AddWorker(workers, w)
		q, err := queue.Open(ctx, db, queue.Config{Workers: workers, PollInterval: 20 * time.Millisecond, RetryPolicy: fastRetry{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Stop(context.Background()) })

		first, err := q.Insert(ctx, echoArgs{Key: "a"}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}})
		if err != nil {
			t.Fatal(err)
		}
		dup, err := q.Insert(ctx, echoArgs{Key: "a"}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}})
		if err != nil || !dup.UniqueSkippedAsDuplicate || dup.Job.ID != first.Job.ID {
			t.Fatalf("duplicate insert = %+v, %v; want the first job back", dup, err)
		}
		select {
		case key := <-w.done:
			if key != "a" {
				t.Fatalf("worked %q", key)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("job did not complete")
		}
		if got := w.runs.Load(); got != 3 {
			t.Fatalf("worker ran %d times, want 3 (two failures, one success)", got)
		}
	})
}
