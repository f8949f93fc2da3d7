package dbdump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/retention"
)

// Run takes a dump of src, uploads it sealed under masterKey, then deletes the dumps that
// policy no longer keeps (never after a failed dump, and never the new one). It returns the
// new dump's key and stored size; when only the pruning failed, the key and size come with
// the error. It is the daily job's body.
func Run(ctx context.Context, b Bucket, src Source, masterKey []byte, policy retention.Policy, now time.Time) (key string, size int64, err error) {
	if err := policy.Validate(); err != nil {
		return "", 0, fmt.Errorf("dbdump: %w", err)
	}
	key, size, err = Upload(ctx, b, src, masterKey, now)
	if err != nil {
		return "", 0, err
	}
	if _, err := prune(ctx, b, policy, now, key); err != nil {
		return key, size, fmt.Errorf("dbdump: %s is stored, but pruning the older dumps failed: %w", key, err)
	}
	return key, size, nil
}

// Upload takes a dump of src and stores it, sealed under masterKey, at Key(now,
// src.Dialect). It returns the key and the stored (encrypted) size. The dump streams
// through age into the bucket: no plaintext is written anywhere but SQLite's snapshot
// (see Dump).
func Upload(ctx context.Context, b Bucket, src Source, masterKey []byte, now time.Time) (key string, size int64, err error) {
	if _, err := Passphrase(masterKey); err != nil {
		return "", 0, err
	}
	key = Key(now, src.Dialect)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	dumped := make(chan error, 1)
	go func() {
		err := func() error {
			enc, err := Encrypt(pw, masterKey)
			if err != nil {
				return err
			}
			if err := Dump(ctx, src, enc); err != nil {
				return err
			}
			return enc.Close()
		}()
		pw.CloseWithError(err) // nil: the bucket reads io.EOF
		dumped <- err
	}()
	cr := &countingReader{r: pr}
	perr := b.Put(ctx, key, cr)
	// Unblock the dump if the store stopped reading early, failed or not: the dump then
	// fails, and a "stored" short object is deleted below.
	if perr != nil {
		pr.CloseWithError(perr)
		cancel()
	} else {
		pr.CloseWithError(errStoppedReading)
	}
	derr := <-dumped
	switch {
	case derr != nil && perr != nil && !errors.Is(perr, derr):
		return "", 0, fmt.Errorf("dbdump: uploading %s: %w (the dump stopped: %v)", key, perr, derr)
	case derr != nil:
		if perr == nil {
			// The store took a short stream as if it were whole: it would not open, so it goes.
			b.Delete(context.WithoutCancel(ctx), key)
		}
		return "", 0, derr
	case perr != nil:
		return "", 0, fmt.Errorf("dbdump: uploading %s: %w", key, perr)
	}
	return key, cr.n.Load(), nil
}

// Prune deletes the dumps that policy does not keep at now and returns their keys. Keys
// under Prefix that Key did not make are left alone.
func Prune(ctx context.Context, b Bucket, policy retention.Policy, now time.Time) ([]string, error) {
	if err := policy.Validate(); err != nil {
		return nil, fmt.Errorf("dbdump: %w", err)
	}
	return prune(ctx, b, policy, now, "")
}

func prune(ctx context.Context, b Bucket, policy retention.Policy, now time.Time, spare string) ([]string, error) {
	dumps, err := List(ctx, b)
	if err != nil {
		return nil, err
	}
	taken := make([]time.Time, len(dumps))
	for i, d := range dumps {
		taken[i] = d.Taken
	}
	keep := policy.Keep(taken, now)
	var deleted []string
	var errs []error
	for i, d := range dumps {
		if keep[i] || d.Key == spare {
			continue
		}
		if err := b.Delete(ctx, d.Key); err != nil {
			errs = append(errs, fmt.Errorf("deleting %s: %w", d.Key, err))
			continue
		}
		deleted = append(deleted, d.Key)
	}
	return deleted, errors.Join(errs...)
}

var errStoppedReading = errors.New("the object store stopped reading before the end of the dump")

// countingReader counts what the bucket read. Atomic: a store may read from goroutines of
// its own (multipart uploads), done by the time Put returns.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
