// Package dbdump backs up the provisioner's own database off-site and puts it back: a
// consistent dump (SQLite's VACUUM INTO, PostgreSQL's pg_dump), encrypted with age as it
// streams, uploaded to the object store under db/<UTC time>.<dialect>.age, pruned by the
// same retention policy as instances' archives, and restored into an empty (or, forced,
// an existing) database.
//
// The database holds every customer's sealed n8n encryption key, so a dump is as secret
// as the database itself. It is sealed under a key derived from the master key alone, so
// that the operator's off-site copy of the master key is all a restore needs: no other
// secret has to survive the loss of the machine. See Passphrase for how to open a dump
// with the stock age tool.
package dbdump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// Bucket is the object store the dumps live in (internal/objstore.Store implements it).
type Bucket interface {
	Put(ctx context.Context, key string, r io.Reader) error
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Keys returns the keys that start with prefix, sorted, relative to the store's prefix.
	Keys(ctx context.Context, prefix string) ([]string, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// Prefix is where in the bucket the dumps are.
const Prefix = "db/"

// timeLayout is the UTC time in a dump's key: sortable, and free of ':' (which some
// object stores and most shells treat specially).
const timeLayout = "20060102T150405Z"

// ErrWrongKey means the dump was sealed under a master key that is neither the configured
// one nor one of the previous ones.
var ErrWrongKey = errors.New("dbdump: the dump is not sealed under the configured master key (nor a previous one)")

// ErrCorrupt means the dump is truncated, tampered with, or not a dump at all. Nothing was
// written to the target.
var ErrCorrupt = errors.New("dbdump: the dump is truncated or corrupt")

// ErrTargetExists means a restore was asked into a database that already has data, without
// Force.
var ErrTargetExists = errors.New("dbdump: the target database already exists")

// ErrNoDumps means the bucket holds no dump.
var ErrNoDumps = errors.New("dbdump: the bucket holds no database dump")

// Source is the database a dump is taken from.
type Source struct {
	Dialect database.Dialect
	// Location is the SQLite file's path, or the PostgreSQL connection URL (which may hold
	// a password: never log it).
	Location string
	// PGBinDir is where pg_dump and pg_restore are. Empty: PATH, then the newest
	// /usr/lib/postgresql/*/bin. The tools must be at least the server's version.
	PGBinDir string
}

// FromURL returns the Source of a PROVISIONER_DATABASE_URL (see database.ParseURL).
func FromURL(rawURL string) (Source, error) {
	d, loc, err := database.ParseURL(rawURL)
	if err != nil {
		return Source{}, fmt.Errorf("dbdump: the database URL %w", err)
	}
	return Source{Dialect: d, Location: loc}, nil
}

// Target returns the same database as a restore target; force allows replacing its data.
func (s Source) Target(force bool) Target {
	return Target{Dialect: s.Dialect, Location: s.Location, PGBinDir: s.PGBinDir, Force: force}
}

// String names the database without any password.
func (s Source) String() string { return describe(s.Dialect, s.Location) }

// Target is the database a dump is restored into.
type Target struct {
	Dialect  database.Dialect
	Location string // as in Source
	PGBinDir string // as in Source
	// Force allows replacing an existing SQLite file, or restoring into a PostgreSQL
	// database that has tables (pg_restore --clean drops and recreates the dump's objects;
	// objects the dump does not have are left alone).
	Force bool
}

// String names the database without any password.
func (t Target) String() string { return describe(t.Dialect, t.Location) }

func describe(d database.Dialect, loc string) string {
	if d == database.Postgres {
		if u, err := url.Parse(loc); err == nil {
			return u.Redacted()
		}
		return "(an unparsable PostgreSQL URL)"
	}
	return loc
}

// Object is one dump in the bucket.
type Object struct {
	Key     string
	Taken   time.Time
	Dialect database.Dialect
}

// Key returns the object key of a dump of dialect taken at t.
func Key(t time.Time, d database.Dialect) string {
	return Prefix + t.UTC().Format(timeLayout) + "." + string(d) + ".age"
}

// ParseKey reads a key made by Key. ok is false for any other key.
func ParseKey(key string) (Object, bool) {
	rest, found := strings.CutPrefix(key, Prefix)
	if !found {
		return Object{}, false
	}
	rest, found = strings.CutSuffix(rest, ".age")
	if !found {
		return Object{}, false
	}
	stamp, dialect, found := strings.Cut(rest, ".")
	if !found || (dialect != string(database.SQLite) && dialect != string(database.Postgres)) {
		return Object{}, false
	}
	t, err := time.Parse(timeLayout, stamp)
	if err != nil {
		return Object{}, false
	}
	return Object{Key: key, Taken: t, Dialect: database.Dialect(dialect)}, true
}

// List returns the bucket's dumps, newest first. Keys under Prefix that Key did not make
// are not listed.
func List(ctx context.Context, b Bucket) ([]Object, error) {
	keys, err := b.Keys(ctx, Prefix)
	if err != nil {
		return nil, fmt.Errorf("dbdump: listing the dumps: %w", err)
	}
	var dumps []Object
	for _, k := range keys {
		if d, ok := ParseKey(k); ok {
			dumps = append(dumps, d)
		}
	}
	slices.SortFunc(dumps, func(a, b Object) int {
		if c := b.Taken.Compare(a.Taken); c != 0 {
			return c
		}
		return strings.Compare(b.Key, a.Key)
	})
	return dumps, nil
}

// Latest returns the key of the newest dump, or ErrNoDumps.
func Latest(ctx context.Context, b Bucket) (string, error) {
	dumps, err := List(ctx, b)
	if err != nil {
		return "", err
	}
	if len(dumps) == 0 {
		return "", ErrNoDumps
	}
	return dumps[0].Key, nil
}

// Dump writes a consistent plaintext dump of src to w: a SQLite database file, or a
// pg_dump archive in its custom format. Callers that store it encrypt it: see Upload.
func Dump(ctx context.Context, src Source, w io.Writer) error {
	switch src.Dialect {
	case database.SQLite:
		return dumpSQLite(ctx, src.Location, w)
	case database.Postgres:
		return dumpPostgres(ctx, src, w)
	}
	return fmt.Errorf("dbdump: unknown dialect %q", src.Dialect)
}

// Restore puts the dump at key back into dst. keys are the master keys to try, the
// current one first. It returns ErrWrongKey, ErrCorrupt or ErrTargetExists (dst is
// untouched after each), or the database tools' own error.
func Restore(ctx context.Context, b Bucket, key string, keys [][]byte, dst Target) error {
	d, ok := ParseKey(key)
	if !ok {
		return fmt.Errorf("dbdump: %q is not a database dump's key (db/<YYYYMMDDTHHMMSSZ>.<sqlite|postgres>.age)", key)
	}
	if d.Dialect != dst.Dialect {
		return fmt.Errorf("dbdump: %s is a %s dump and the target is a %s database", key, d.Dialect, dst.Dialect)
	}
	if len(keys) == 0 {
		return errors.New("dbdump: no master key to open the dump with")
	}
	// Refuse before downloading anything.
	switch dst.Dialect {
	case database.SQLite:
		if err := checkSQLiteTarget(dst); err != nil {
			return err
		}
	case database.Postgres:
		if err := checkPostgresTarget(ctx, dst); err != nil {
			return err
		}
	default:
		return fmt.Errorf("dbdump: unknown dialect %q", dst.Dialect)
	}
	rc, err := b.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("dbdump: downloading %s: %w", key, err)
	}
	defer rc.Close()
	plain, err := Decrypt(rc, keys)
	if err != nil {
		return err
	}
	if dst.Dialect == database.SQLite {
		return restoreSQLite(ctx, plain, dst)
	}
	return restorePostgres(ctx, plain, dst)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// tempPattern returns the directory and pattern of the temporary files made beside path: hidden, and named
// after it so an operator who finds one knows what it was.
func tempPattern(path, what string) (dir, pattern string) {
	return filepath.Dir(path), "." + filepath.Base(path) + "." + what + "-*"
}
