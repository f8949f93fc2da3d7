package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/dbdump"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
)

// backupConfig is where archives go and when they are taken: PROVISIONER_BACKUP_*.
type backupConfig struct {
	// S3 is the bucket; Bucket false keeps archives on the hosts only.
	S3     objstore.Config
	Bucket bool
	Policy instances.BackupPolicy
	// DumpDatabase turns the daily dump of the provisioner's own database on (with a bucket).
	DumpDatabase bool
}

// presignTTL bounds how long a host may use the URLs it is given. An hour covers a
// several-GiB archive on a slow uplink; a leaked URL is useless after it.
const presignTTL = time.Hour

func loadBackupConfig(getenv func(string) string) (backupConfig, error) {
	env := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var c backupConfig
	var err error
	if c.S3, c.Bucket, err = objstore.ConfigFromEnv(getenv); err != nil {
		return c, err // its errors name the variable
	}
	window := env("PROVISIONER_BACKUP_WINDOW", "02:00-06:00")
	if window == "off" {
		c.Policy.Off = true
	} else if c.Policy.WindowStart, c.Policy.Window, err = parseWindow(window); err != nil {
		return c, envError("PROVISIONER_BACKUP_WINDOW", err)
	}
	for _, n := range []struct {
		name, def string
		min, max  int
		dst       *int
	}{
		{"PROVISIONER_BACKUP_PER_HOST", "1", 1, 20, &c.Policy.PerHost},
		{"PROVISIONER_BACKUP_KEEP_DAILY", "7", 0, 366, &c.Policy.Keep.Daily},
		{"PROVISIONER_BACKUP_KEEP_WEEKLY", "4", 0, 520, &c.Policy.Keep.Weekly},
	} {
		v, err := strconv.Atoi(env(n.name, n.def))
		if err != nil || v < n.min || v > n.max {
			return c, envError(n.name, fmt.Errorf("must be a whole number from %d to %d", n.min, n.max))
		}
		*n.dst = v
	}
	if err := c.Policy.Keep.Validate(); err != nil {
		return c, envError("PROVISIONER_BACKUP_KEEP_DAILY", err)
	}
	if c.Policy.UploadDeadline, err = time.ParseDuration(env("PROVISIONER_BACKUP_UPLOAD_DEADLINE", "6h")); err != nil || c.Policy.UploadDeadline <= 0 {
		return c, envError("PROVISIONER_BACKUP_UPLOAD_DEADLINE", errors.New("must be a positive duration such as 6h"))
	}
	if c.DumpDatabase, err = parseBool(env("PROVISIONER_BACKUP_DATABASE", "true")); err != nil {
		return c, envError("PROVISIONER_BACKUP_DATABASE", err)
	}
	return c, nil
}

// parseWindow reads "HH:MM-HH:MM" (UTC); the end may be past midnight ("22:00-02:00").
func parseWindow(s string) (start, length time.Duration, err error) {
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, errors.New(`must be "HH:MM-HH:MM" in UTC, e.g. 02:00-06:00, or off`)
	}
	a, err1 := time.Parse("15:04", from)
	b, err2 := time.Parse("15:04", to)
	if err1 != nil || err2 != nil || a.Equal(b) {
		return 0, 0, errors.New(`must be "HH:MM-HH:MM" in UTC, e.g. 02:00-06:00, or off`)
	}
	start = time.Duration(a.Hour())*time.Hour + time.Duration(a.Minute())*time.Minute
	end := time.Duration(b.Hour())*time.Hour + time.Duration(b.Minute())*time.Minute
	if end <= start {
		end += 24 * time.Hour
	}
	return start, end - start, nil
}

// bucket adapts objstore to instances.Bucket.
type bucket struct{ s *objstore.Store }

var _ instances.Bucket = bucket{}

func (b bucket) StartUpload(ctx context.Context, key string, size int64) (instances.Upload, error) {
	u, err := b.s.StartUpload(ctx, key, size, presignTTL)
	if err != nil {
		return instances.Upload{}, err
	}
	out := instances.Upload{Key: u.Key, ID: u.UploadID}
	for _, p := range u.Parts {
		out.Parts = append(out.Parts, instances.UploadPart{Number: p.Number, Offset: p.Offset, Size: p.Size, URL: p.URL})
	}
	return out, nil
}

func (b bucket) upload(u instances.Upload) objstore.Upload {
	out := objstore.Upload{Key: u.Key, UploadID: u.ID}
	for _, p := range u.Parts {
		out.Parts = append(out.Parts, objstore.Part{Number: p.Number, Offset: p.Offset, Size: p.Size, URL: p.URL})
	}
	return out
}

func (b bucket) CompleteUpload(ctx context.Context, u instances.Upload, parts []instances.UploadedPart) error {
	done := make([]objstore.Done, 0, len(parts))
	for _, p := range parts {
		done = append(done, objstore.Done{Number: p.Number, ETag: p.ETag})
	}
	return b.s.CompleteUpload(ctx, b.upload(u), done)
}

func (b bucket) AbortUpload(ctx context.Context, u instances.Upload) error {
	return b.s.AbortUpload(ctx, b.upload(u))
}

func (b bucket) PresignGet(ctx context.Context, key string) (string, error) {
	return b.s.PresignGet(ctx, key, presignTTL)
}

func (b bucket) Verify(ctx context.Context, key, sha256 string, size int64) error {
	return b.s.Verify(ctx, key, sha256, size)
}

func (b bucket) Delete(ctx context.Context, key string) error { return b.s.Delete(ctx, key) }

// archives returns the bucket as the instance service takes it: nil when there is none
// (an interface holding a nil *Store would not be).
func (c backupConfig) archives() (instances.Bucket, error) {
	s, err := c.openBucket()
	if s == nil || err != nil {
		return nil, err
	}
	return bucket{s}, nil
}

// openBucket returns the configured bucket, or nil when there is none.
func (c backupConfig) openBucket() (*objstore.Store, error) {
	if !c.Bucket {
		return nil, nil
	}
	s, err := objstore.New(c.S3)
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_BACKUP_S3_*: %w", err)
	}
	return s, nil
}

// dumpBucket is the bucket the database dumps live in, or nil when none is configured.
func dumpBucket(cfg config) (dbdump.Bucket, error) {
	s, err := cfg.Backups.openBucket()
	if s == nil || err != nil {
		return nil, err
	}
	return s, nil
}
