package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Takeover: a job left running by a dead process goes back in the queue within seconds,
// instead of after River's stuck-job rescue (a minute past the job timeout, ~19 min).
//
// On PostgreSQL every worker process holds a lease: a session advisory lock on a
// connection of its own, whose key its River client id carries. The server drops the lock
// the moment that connection dies, so "the process that took this job holds no lease"
// means it is dead. On SQLite, one process by contract, a lock file proves that every job
// still running was left by a dead process.

const (
	// leaseNamespace is the first key of our two-key advisory locks ("n8np"), so that
	// they never clash with another application's on the same database.
	leaseNamespace = 0x6e386e70
	// takeoverEvery is how often each process looks for a dead process's jobs. It is one
	// indexed query, so it runs in every replica rather than on River's leader only: the
	// leader's death is the common case, and electing a new one takes River ~10 s more.
	takeoverEvery = time.Second
	// takeoverGrace is how long a job's process must have been without a lease before the
	// job is taken over. A live process whose lease connection broke notices within
	// leasePing and cancels its jobs first, so that no job runs twice at once.
	takeoverGrace = 2 * time.Second
	leasePing     = time.Second
)

// pgLease is a worker process's lease on PostgreSQL.
type pgLease struct {
	conn *pgx.Conn // used by the monitor only: a pgx.Conn is not safe for concurrent use
	key  int32
	id   string // River's client id, naming the lease
}

// takePGLease opens the lease's own connection and takes a free lease key.
func takePGLease(ctx context.Context, url string) (*pgLease, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("opening the job queue's lease connection: %w", err)
	}
	// A machine that vanishes closes no socket: with these the server notices in ~11 s
	// (5 s idle, then 3 probes 2 s apart) and drops the lease, rather than after hours.
	for _, set := range []string{"SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2", "SET tcp_keepalives_count = 3"} {
		if _, err := conn.Exec(ctx, set); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("configuring the job queue's lease connection: %w", err)
		}
	}
	host, _ := os.Hostname()
	host = host[:min(len(host), 60)] // River's client ids are at most 100 characters
	for range 20 {
		key := rand.Int32N(math.MaxInt32-1) + 1
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", leaseNamespace, key).Scan(&ok); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("taking the job queue's lease: %w", err)
		}
		if ok {
			return &pgLease{conn: conn, key: key, id: fmt.Sprintf("%s-%d-lease%d", host, os.Getpid(), key)}, nil
		}
	}
	conn.Close(ctx)
	return nil, errors.New("taking the job queue's lease: no free lease key after 20 tries")
}

// watch pings the lease until ctx ends; a failed ping means the lease may be gone, so it
// calls lost once and returns.
func (l *pgLease) watch(ctx context.Context, lost func(error)) {
	t := time.NewTicker(leasePing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*leasePing)
		err := l.conn.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			lost(fmt.Errorf("the job queue's lease connection failed: %w", err))
			return
		}
	}
}

func (l *pgLease) close() { l.conn.Close(context.Background()) }

// deadClientsSQL lists the clients of running jobs that hold no lease. A client id with no
// lease key (a process from before leases) counts as dead.
const deadClientsSQL = `
SELECT DISTINCT attempted_by[cardinality(attempted_by)]
FROM river_job
WHERE state = 'running' AND cardinality(attempted_by) > 0 AND NOT EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = $1::bigint::oid
      AND l.objid::text = substring(attempted_by[cardinality(attempted_by)] FROM '-lease([0-9]+)$'))`

// takeOverSQL puts a dead client's running jobs back in the queue, noting why among the
// job's errors as River's own rescuer does.
const takeOverSQL = `
UPDATE river_job
SET state = 'available',
    errors = array_append(errors, jsonb_build_object('at', now(), 'attempt', attempt, 'error', $2::text, 'trace', ''))
WHERE state = 'running' AND attempted_by[cardinality(attempted_by)] = $1
RETURNING id, kind`

// takeover runs the check every takeoverEvery until ctx ends.
type takeover struct {
	pool *pgxpool.Pool
	self string
	log  *slog.Logger
	seen map[string]time.Time // dead-looking client → when first seen so
}

func (t *takeover) run(ctx context.Context) {
	tick := time.NewTicker(takeoverEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := t.check(ctx, time.Now()); err != nil && ctx.Err() == nil {
			t.log.Warn("queue: looking for a dead process's jobs failed", "error", err.Error())
		}
	}
}

// check takes over the jobs of every client seen without a lease for takeoverGrace.
func (t *takeover) check(ctx context.Context, now time.Time) error {
	rows, err := t.pool.Query(ctx, deadClientsSQL, leaseNamespace)
	if err != nil {
		return err
	}
	dead, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	seen := make(map[string]time.Time, len(dead))
	for _, client := range dead {
		first, ok := t.seen[client]
		if !ok {
			first = now
		}
		seen[client] = first
		if now.Sub(first) < takeoverGrace {
			continue
		}
		if err := t.takeOver(ctx, client); err != nil {
			return err
		}
	}
	t.seen = seen
	return nil
}

func (t *takeover) takeOver(ctx context.Context, client string) error {
	why := fmt.Sprintf("process %s lost its lease (dead): job taken over by %s", client, t.self)
	rows, err := t.pool.Query(ctx, takeOverSQL, client, why)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var kind string
		if err := rows.Scan(&id, &kind); err != nil {
			return err
		}
		t.log.Warn("queue: took over a job left running by a dead process", "job", id, "kind", kind, "dead_client", client)
	}
	return rows.Err()
}

// sqliteLock is the one worker process's lock on a SQLite database.
type sqliteLock struct{ f *os.File }

// lockSQLite takes the lock file beside the database file. Never the database file
// itself: closing any descriptor of it would drop SQLite's own POSIX locks.
func lockSQLite(path string) (*sqliteLock, error) {
	if path == "" || path == ":memory:" || strings.Contains(path, "mode=memory") {
		return &sqliteLock{}, nil
	}
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the SQLite lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another provisioner serve is running on this SQLite database (%s is locked): SQLite supports one serving process; use PostgreSQL for several", name)
		}
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return &sqliteLock{f: f}, nil
}

func (l *sqliteLock) close() {
	if l.f != nil {
		l.f.Close() // closing the descriptor releases the flock
	}
}

// lostSignal reports a lost lease once.
type lostSignal struct {
	once sync.Once
	ch   chan error
}

func (s *lostSignal) fire(err error) {
	s.once.Do(func() { s.ch <- err })
}
