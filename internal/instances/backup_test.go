package instances

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/retention"
)

// memBucket is an in-memory Bucket: the objects are names, and Delete can be made to fail.
// The bucket's real behaviour (presigned parts, verification) is tested against a real S3
// server in package objstore and end to end in cmd/provisioner.
type memBucket struct {
	mu        sync.Mutex
	objects   map[string]bool
	failAll   error
	deletions int
}

func (b *memBucket) StartUpload(_ context.Context, key string, size int64) (Upload, error) {
	if b.failAll != nil {
		return Upload{}, b.failAll
	}
	return Upload{Key: key, ID: "u1", Parts: []UploadPart{{Number: 1, Size: size, URL: "https://bucket.test/" + key + "?X-Amz-Signature=s"}}}, nil
}

func (b *memBucket) CompleteUpload(_ context.Context, u Upload, _ []UploadedPart) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[u.Key] = true
	return nil
}

func (b *memBucket) AbortUpload(context.Context, Upload) error { return nil }
func (b *memBucket) PresignGet(_ context.Context, key string) (string, error) {
	return "https://bucket.test/" + key, nil
}
func (b *memBucket) Verify(context.Context, string, string, int64) error { return nil }

func (b *memBucket) Delete(_ context.Context, key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failAll != nil {
		return b.failAll
	}
	b.deletions++
	delete(b.objects, key)
	return nil
}

func (b *memBucket) has(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.objects[key]
}

// seedBackups records one backup a day at 03:00 for days days back from the clock, newest
// first, in status st, and puts the uploaded ones in the bucket.
func seedBackups(t *testing.T, st *sagaTest, b *memBucket, days int, status BackupStatus) []Backup {
	t.Helper()
	var out []Backup
	now := st.clock.Now()
	for d := range days {
		at := time.Date(now.Year(), now.Month(), now.Day(), 3, 0, 0, 0, time.UTC).AddDate(0, 0, -d)
		bk := Backup{ID: NewID(), InstanceID: st.id, Host: "nuc", Path: fmt.Sprintf("/var/backups/n8n/x/%d.tar.gz.age", d),
			Name: fmt.Sprintf("%d.tar.gz.age", d), SHA256: "00", Bytes: 1, Reason: "daily", Status: status, OnHost: true, CreatedAt: at}
		if status == BackupUploaded {
			bk.ObjectKey = objectKey(bk)
			b.objects[bk.ObjectKey] = true
		}
		if err := st.cfg.Store.AddBackup(st.ctx, bk); err != nil {
			t.Fatal(err)
		}
		out = append(out, bk)
	}
	return out
}

func prune(t *testing.T, st *sagaTest) error {
	t.Helper()
	return (&pruneWorker{s: st.service()}).Work(st.ctx, &river.Job[BackupPruneArgs]{JobRow: &rivertype.JobRow{ID: 1, Attempt: 1}})
}

func TestRetentionKeepsDailiesAndWeekliesInTheBucketAndOneArchiveOnTheHost(t *testing.T) {
	st := newSagaTest(t)
	b := &memBucket{objects: map[string]bool{}}
	st.cfg.Bucket = b
	st.cfg.Backups = BackupPolicy{Keep: retention.Policy{Daily: 7, Weekly: 4}}
	seeded := seedBackups(t, st, b, 40, BackupUploaded)
	if err := prune(t, st); err != nil {
		t.Fatal(err)
	}
	keep := st.cfg.Backups.Keep.Keep(createdAts(seeded), st.clock.Now())
	for i, want := range seeded {
		got, err := st.cfg.Store.Backup(st.ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case keep[i] && (got.Status != BackupUploaded || !b.has(want.ObjectKey)):
			t.Errorf("backup of %s: status %s, in bucket %v; retention keeps it", want.CreatedAt.Format(time.DateOnly), got.Status, b.has(want.ObjectKey))
		case !keep[i] && (got.Status != BackupPruned || b.has(want.ObjectKey) || got.OnHost):
			t.Errorf("backup of %s: status %s, in bucket %v, on host %v; retention prunes it", want.CreatedAt.Format(time.DateOnly), got.Status, b.has(want.ObjectKey), got.OnHost)
		case got.OnHost != (i == 0):
			t.Errorf("backup of %s: on host %v; the host keeps only the newest", want.CreatedAt.Format(time.DateOnly), got.OnHost)
		}
	}
	kept := 0
	for _, k := range keep {
		if k {
			kept++
		}
	}
	if kept < 7 || kept > 11 {
		t.Errorf("%d archives kept of 40 daily ones; want 7 dailies and up to 4 weeklies", kept)
	}
	// Every archive pruned or thinned went through n8nctl prune on its host.
	if got := st.world.count("prune"); got != 39 {
		t.Errorf("n8nctl prune ran %d times, want 39 (every archive but the newest leaves the host)", got)
	}
	// A second run changes nothing.
	before := st.world.count("prune")
	if err := prune(t, st); err != nil {
		t.Fatal(err)
	}
	if st.world.count("prune") != before {
		t.Error("a second prune ran n8nctl prune again")
	}
}

func createdAts(list []Backup) []time.Time {
	out := make([]time.Time, len(list))
	for i, b := range list {
		out[i] = b.CreatedAt
	}
	return out
}

func TestAnArchiveTheBucketDoesNotHoldIsNeverPruned(t *testing.T) {
	st := newSagaTest(t)
	b := &memBucket{objects: map[string]bool{}}
	st.cfg.Bucket = b
	seeded := seedBackups(t, st, b, 20, BackupLocal) // their uploads keep failing
	if err := prune(t, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range seeded {
		got, _ := st.cfg.Store.Backup(st.ctx, want.ID)
		if got.Status != BackupLocal || !got.OnHost {
			t.Errorf("backup of %s not in the bucket: status %s, on host %v; it must stay", want.CreatedAt.Format(time.DateOnly), got.Status, got.OnHost)
		}
	}
	if st.world.count("prune") != 0 {
		t.Error("n8nctl prune ran on archives that exist nowhere else")
	}
}

func TestPruningStopsWhenTheBucketCannotDelete(t *testing.T) {
	st := newSagaTest(t)
	b := &memBucket{objects: map[string]bool{}}
	st.cfg.Bucket = b
	seedBackups(t, st, b, 30, BackupUploaded)
	b.failAll = errors.New("dial tcp: connection refused")
	if err := prune(t, st); err == nil {
		t.Fatal("pruning with an unreachable bucket reported success")
	}
	list, _ := st.cfg.Store.ListBackups(st.ctx, BackupFilter{Status: BackupPruned})
	if len(list) != 0 {
		t.Errorf("%d backups marked pruned while the bucket refused every delete", len(list))
	}
}

func TestTheFinalBackupIsKeptUntilItExpires(t *testing.T) {
	st := newSagaTest(t)
	b := &memBucket{objects: map[string]bool{}}
	st.cfg.Bucket = b
	expires := st.clock.Now().Add(30 * 24 * time.Hour)
	final := Backup{ID: NewID(), InstanceID: st.id, Host: "nuc", Path: "/var/backups/n8n/x/f.tar.gz.age", Name: "f.tar.gz.age",
		Reason: "final", Status: BackupUploaded, OnHost: true, CreatedAt: st.clock.Now().AddDate(0, 0, -60), ExpiresAt: &expires}
	final.ObjectKey = objectKey(final)
	b.objects[final.ObjectKey] = true
	if err := st.cfg.Store.AddBackup(st.ctx, final); err != nil {
		t.Fatal(err)
	}
	if err := prune(t, st); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.cfg.Store.Backup(st.ctx, final.ID); got.Status != BackupUploaded || !b.has(final.ObjectKey) {
		t.Fatalf("a final backup 60 days old, kept until %s, was pruned: %s", expires.Format(time.DateOnly), got.Status)
	}
	st.clock.Advance(31 * 24 * time.Hour)
	if err := prune(t, st); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.cfg.Store.Backup(st.ctx, final.ID); got.Status != BackupPruned || b.has(final.ObjectKey) {
		t.Fatalf("an expired final backup was kept: %s", got.Status)
	}
}

func TestDailyWindowAndSlots(t *testing.T) {
	t.Parallel()
	p := BackupPolicy{WindowStart: 22 * time.Hour, Window: 4 * time.Hour}.withDefaults() // 22:00-02:00 UTC
	at := func(h, m int) time.Time { return time.Date(2026, 12, 7, h, m, 0, 0, time.UTC) }
	for _, tc := range []struct {
		now   time.Time
		open  bool
		start time.Time
	}{
		{at(21, 59), false, at(22, 0).Add(-24 * time.Hour)},
		{at(22, 0), true, at(22, 0)},
		{at(1, 30), true, at(22, 0).Add(-24 * time.Hour)},
		{at(2, 0), false, at(22, 0).Add(-24 * time.Hour)},
	} {
		start, open := p.window(tc.now)
		if open != tc.open || !start.Equal(tc.start) {
			t.Errorf("window at %s = %s open %v, want %s open %v", tc.now.Format(time.TimeOnly), start, open, tc.start, tc.open)
		}
	}
	// Slots spread over the window and stay put from one day to the next.
	start := at(22, 0)
	seen := map[int]bool{}
	for range 200 {
		id := NewID()
		s := p.slot(start, id)
		if s.Before(start) || !s.Before(start.Add(p.Window)) {
			t.Fatalf("slot %s outside the window", s)
		}
		if !p.slot(start.Add(24*time.Hour), id).Equal(s.Add(24 * time.Hour)) {
			t.Fatal("an instance's slot moved from one day to the next")
		}
		seen[int(s.Sub(start)/time.Hour)] = true
	}
	if len(seen) != 4 {
		t.Errorf("200 slots fell in %d of the window's 4 hours", len(seen))
	}
}

func TestADailyBackupIsDueOncePerWindowAndRetriedAfterAFailure(t *testing.T) {
	st := newSagaTest(t)
	if _, err := st.run(); err != nil {
		t.Fatal(err)
	}
	// A one-hour window that opened at the minute the saga ended (the saga moves the fake
	// clock), and the clock at its last nanosecond: past every instance's slot.
	now := st.clock.Now()
	start := now.Truncate(time.Minute)
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	st.cfg.Backups = BackupPolicy{WindowStart: start.Sub(midnight), Window: time.Hour}
	st.clock.Advance(start.Add(time.Hour - time.Nanosecond).Sub(now))
	due := func() int {
		list, err := st.service().dueDaily(st.ctx, "nuc")
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	if due() != 1 {
		t.Fatal("the active instance is not due in its window")
	}
	in := st.instance()
	s := st.service()
	s.dailyFailed(st.ctx, &in, st.world.host, errors.New("n8nctl: docker stop failed"))
	if due() != 0 {
		t.Fatal("an instance whose daily backup just failed is due again at once")
	}
	if st.world.alertsWith("Backup failed") != 1 {
		t.Errorf("alerts: %v", st.world.alerts)
	}
	failed, _ := st.cfg.Store.ListBackups(st.ctx, BackupFilter{Status: BackupFailed})
	if len(failed) != 1 || failed[0].Error == "" {
		t.Fatalf("failed backups listed: %+v", failed)
	}
	st.clock.Advance(time.Nanosecond) // the window is over
	if due() != 0 {
		t.Fatal("due outside the window")
	}
}
