package queue_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

type slowArgs struct {
	Key string `json:"key"`
}

func (slowArgs) Kind() string { return "test_slow" }

// slowWorker takes d per run and counts runs, finished runs and cancelled ones.
type slowWorker struct {
	river.WorkerDefaults[slowArgs]
	d                         time.Duration
	runs, finished, cancelled atomic.Int32
}

func (w *slowWorker) Work(ctx context.Context, _ *river.Job[slowArgs]) error {
	w.runs.Add(1)
	select {
	case <-time.After(w.d):
		w.finished.Add(1)
		return nil
	case <-ctx.Done():
		w.cancelled.Add(1)
		return ctx.Err()
	}
}

func openWorkers(t *testing.T, db *database.DB, w *slowWorker) *queue.Queue {
	t.Helper()
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	q, err := queue.Open(context.Background(), db, queue.Config{Workers: workers, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Stop(context.Background()) })
	return q
}

func migrated(t *testing.T, d database.Dialect) *database.DB {
	t.Helper()
	db := dbtest.Open(t, d)
	if err := queue.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// leftRunning inserts a job as a process that then died would have left it.
func leftRunning(t *testing.T, db *database.DB, client string) int64 {
	t.Helper()
	q, err := queue.Open(context.Background(), db, queue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	res, err := q.Insert(context.Background(), slowArgs{Key: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	set := "UPDATE river_job SET state = 'running', attempt = 1, attempted_at = CURRENT_TIMESTAMP, attempted_by = ARRAY[?] WHERE id = ?"
	if db.Dialect == database.SQLite {
		set = "UPDATE river_job SET state = 'running', attempt = 1, attempted_at = CURRENT_TIMESTAMP, attempted_by = json_array(?) WHERE id = ?"
	}
	if err := db.Gorm.Exec(set, client, res.Job.ID).Error; err != nil {
		t.Fatal(err)
	}
	return res.Job.ID
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // "it never happened", not a measurement
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDeadProcessJobIsTakenOver(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			db := migrated(t, d)
			id := leftRunning(t, db, "gone-4242-lease12345")
			w := &slowWorker{d: 10 * time.Millisecond}
			openWorkers(t, db, w)
			waitUntil(t, "the dead process's job to complete here", func() bool { return w.finished.Load() == 1 })
			if d != database.Postgres {
				return
			}
			var errs string
			db.Gorm.Raw("SELECT array_to_string(errors, ' ') FROM river_job WHERE id = ?", id).Scan(&errs)
			if !strings.Contains(errs, "gone-4242-lease12345 lost its lease") {
				t.Errorf("the job's errors do not say why it was taken over: %q", errs)
			}
		})
	}
}

// A job running in a live process is never taken over, however long it runs.
func TestLiveProcessJobIsNeverTakenOver(t *testing.T) {
	t.Parallel()
	db := migrated(t, database.Postgres)
	a := &slowWorker{d: 6 * time.Second}
	qa := openWorkers(t, db, a)
	if _, err := qa.Insert(context.Background(), slowArgs{Key: "long"}, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the long job to start", func() bool { return a.runs.Load() == 1 })
	b := &slowWorker{d: time.Millisecond}
	openWorkers(t, db, b) // runs the takeover check beside it
	waitUntil(t, "the long job to finish", func() bool { return a.finished.Load() == 1 })
	if a.runs.Load() != 1 || b.runs.Load() != 0 {
		t.Errorf("runs: %d in the first process, %d in the second; want exactly one", a.runs.Load(), b.runs.Load())
	}
}

// A process whose lease connection dies stops its jobs and says so.
func TestLostLeaseStopsTheJobs(t *testing.T) {
	t.Parallel()
	db := migrated(t, database.Postgres)
	w := &slowWorker{d: time.Minute}
	q := openWorkers(t, db, w)
	if _, err := q.Insert(context.Background(), slowArgs{Key: "doomed"}, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the job to start", func() bool { return w.runs.Load() == 1 })
	key := q.ClientID()[strings.LastIndex(q.ClientID(), "-lease")+len("-lease"):]
	err := db.Gorm.Exec(`SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 2 AND objid::text = ?`, key).Error
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-q.Lost():
		if err == nil {
			t.Error("Lost fired with no reason")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the queue never reported its lost lease")
	}
	if w.cancelled.Load() != 1 {
		t.Errorf("the running job was not cancelled: %d cancelled", w.cancelled.Load())
	}
}

func TestSQLiteHasOneWorkerProcess(t *testing.T) {
	t.Parallel()
	db := migrated(t, database.SQLite)
	openWorkers(t, db, &slowWorker{})
	workers := river.NewWorkers()
	river.AddWorker(workers, &slowWorker{})
	_, err := queue.Open(context.Background(), db, queue.Config{Workers: workers})
	if err == nil || !strings.Contains(err.Error(), "another provisioner serve is running") {
		t.Fatalf("a second worker queue on one SQLite file: %v, want refused", err)
	}
	insertOnly, err := queue.Open(context.Background(), db, queue.Config{})
	if err != nil {
		t.Fatalf("an insert-only queue (the CLI) beside the server: %v", err)
	}
	insertOnly.Close()
}
