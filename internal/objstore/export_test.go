package objstore

import "time"

// SetPartSize lowers StartUpload's base part size, only so that a small test file spans
// several parts; nothing else changes.
func SetPartSize(s *Store, n int64) { s.partSize = n }

// SetClock sets the presigner's clock, to make URLs that are already expired.
func SetClock(s *Store, now func() time.Time) { s.now = now }

// Fail is the error translation of the Store's calls.
func Fail(s *Store, op, key string, err error) error { return s.fail(op, key, err) }
