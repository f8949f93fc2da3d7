package dbdump

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	_ "github.com/mattn/go-sqlite3" // the driver gorm's SQLite driver uses too
)

// sqliteDSN opens path without creating it (mode=rw), waiting on the service's writers.
func sqliteDSN(path string) string {
	return "file:" + path + "?mode=rw&_busy_timeout=10000"
}

// dumpSQLite writes a consistent copy of the database at path to w. VACUUM INTO makes
// the copy in a read transaction, so the service may keep writing (WAL mode). The copy is
// the one plaintext file the dump makes: 0600, beside the database (so on the same disk
// and under the same permissions), and unlinked as soon as it is open for reading.
func dumpSQLite(ctx context.Context, path string, w io.Writer) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("dbdump: the SQLite database: %w", err)
	}
	dir, pattern := tempPattern(path, "dump")
	tmp, err := os.CreateTemp(dir, pattern) // 0600; VACUUM INTO accepts an empty file
	if err != nil {
		return fmt.Errorf("dbdump: creating the snapshot file: %w", err)
	}
	name := tmp.Name()
	tmp.Close()
	defer removeSQLite(name)
	if err := vacuumInto(ctx, path, name); err != nil {
		return err
	}
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("dbdump: reading the snapshot: %w", err)
	}
	defer f.Close()
	removeSQLite(name) // the open descriptor is enough to stream it
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("dbdump: streaming the snapshot: %w", err)
	}
	return nil
}

func vacuumInto(ctx context.Context, src, dst string) error {
	db, err := sql.Open("sqlite3", sqliteDSN(src))
	if err != nil {
		return fmt.Errorf("dbdump: opening the SQLite database: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", dst); err != nil {
		return fmt.Errorf("dbdump: snapshotting the SQLite database (VACUUM INTO): %w", err)
	}
	return nil
}

// removeSQLite removes a database file and the journals SQLite may have made beside it.
func removeSQLite(path string) {
	for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
}

func checkSQLiteTarget(dst Target) error {
	if dst.Force {
		return nil
	}
	if _, err := os.Lstat(dst.Location); err == nil {
		return fmt.Errorf("%w: %s (force replaces it)", ErrTargetExists, dst.Location)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dbdump: the target: %w", err)
	}
	return nil
}

// restoreSQLite writes the dump to a temporary file beside the target, checks that it is a
// sound SQLite database, and only then moves it into place, so a dump that turns out
// truncated or corrupt leaves the target as it was.
func restoreSQLite(ctx context.Context, plain io.Reader, dst Target) error {
	dir, pattern := tempPattern(dst.Location, "restore")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("dbdump: creating the target's directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return fmt.Errorf("dbdump: creating the restore file: %w", err)
	}
	name := tmp.Name()
	installed := false
	defer func() {
		if !installed {
			removeSQLite(name)
		}
	}()
	ew := &errWriter{w: tmp}
	_, err = io.Copy(ew, plain)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if ew.err == nil && errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("dbdump: writing %s: %w", name, err)
	}
	if err := checkSQLite(ctx, name); err != nil {
		return err
	}
	if err := installSQLite(name, dst); err != nil {
		return err
	}
	installed = true
	return syncDir(dir)
}

// checkSQLite opens the restored file and runs SQLite's full integrity check.
func checkSQLite(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite3", sqliteDSN(path))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	rows, err := db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("%w: not a SQLite database: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], "...")
		}
		return fmt.Errorf("%w: the SQLite integrity check failed: %s", ErrCorrupt, strings.Join(problems, "; "))
	}
	return nil
}

// installSQLite moves the checked file into place. Without Force it links, which fails if
// the target appeared meanwhile; with Force it drops the old database's journals first:
// SQLite would otherwise replay the old database's WAL into the restored one.
func installSQLite(name string, dst Target) error {
	if !dst.Force {
		if err := os.Link(name, dst.Location); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w: %s (force replaces it)", ErrTargetExists, dst.Location)
			}
			return fmt.Errorf("dbdump: moving the restored database into place: %w", err)
		}
		os.Remove(name)
		return nil
	}
	for _, suffix := range []string{"-journal", "-wal", "-shm"} {
		if err := os.Remove(dst.Location + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("dbdump: removing the old database's journal: %w", err)
		}
	}
	if err := os.Rename(name, dst.Location); err != nil {
		return fmt.Errorf("dbdump: moving the restored database into place: %w", err)
	}
	return nil
}

// errWriter remembers the error of the writer, so a failed copy can tell a full disk from
// a corrupt dump.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}
