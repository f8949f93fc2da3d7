package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/dbdump"
)

// dbDeps is what the `db` commands need. It is made on first use, so that --help needs no
// configuration and no object store.
type dbDeps struct {
	DatabaseURL  string // PROVISIONER_DATABASE_URL: what is dumped, and restored into
	MasterKey    []byte
	PreviousKeys [][]byte
	Bucket       dbdump.Bucket
	PGBinDir     string           // where pg_dump and pg_restore are; empty: PATH, then /usr/lib/postgresql/*/bin
	Now          func() time.Time // nil: time.Now
}

// dbCommand runs `provisioner db ...` on the configuration; bucket makes the object store
// the dumps live in from it.
func (c *cli) dbCommand(args []string, bucket func(config) (dbdump.Bucket, error)) error {
	return c.dbGroup(args, func() (dbDeps, error) {
		cfg, err := loadConfig(c.getenv)
		if err != nil {
			return dbDeps{}, err
		}
		b, err := bucket(cfg)
		if err != nil {
			return dbDeps{}, err
		}
		if b == nil {
			return dbDeps{}, errors.New("db: no object store is configured: the dumps live in the off-site bucket")
		}
		return dbDeps{DatabaseURL: cfg.DatabaseURL, MasterKey: cfg.MasterKey, PreviousKeys: cfg.PreviousKeys, Bucket: b}, nil
	})
}

// dbGroup dispatches the `db` commands, which get their dependencies from deps.
func (c *cli) dbGroup(args []string, deps func() (dbDeps, error)) error {
	cmds := []command{
		{"dump", "dump the database now, encrypted, to the object store", func(c *cli, path string, args []string) error { return c.dbDump(path, args, deps) }},
		{"list", "list the dumps in the object store, newest first", func(c *cli, path string, args []string) error { return c.dbList(path, args, deps) }},
		{"restore", "put a dump back into the configured database (the service stopped)", func(c *cli, path string, args []string) error { return c.dbRestore(path, args, deps) }},
	}
	return c.group("db", "the provisioner's own database: encrypted off-site dumps, and restores from them", cmds, args)
}

// dbDumpJSON is a dump as `db dump --json` and `db list --json` print it.
type dbDumpJSON struct {
	Key     string    `json:"key"`
	Dialect string    `json:"dialect"`
	TakenAt time.Time `json:"taken_at"`
	Bytes   int64     `json:"bytes,omitempty"` // known right after the upload only
}

func (c *cli) dbDump(path string, args []string, deps func() (dbDeps, error)) error {
	f := newFlags(path, "[--json]", `
Dumps the provisioner's database now (SQLite: a VACUUM INTO snapshot; PostgreSQL:
pg_dump), encrypts it as it streams under a key derived from PROVISIONER_MASTER_KEY, and
uploads it to db/<UTC time>.<sqlite|postgres>.age in the object store. The service may keep
running.

The service's daily dump also prunes the older dumps by the retention policy; this one
prunes nothing. The master key alone opens a dump: keep a copy of it off-site.`)
	asJSON := f.Bool("json", false, "print the dump as JSON")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	d, err := deps()
	if err != nil {
		return err
	}
	src, err := dbdump.FromURL(d.DatabaseURL)
	if err != nil {
		return fmt.Errorf("PROVISIONER_DATABASE_URL: %w", err)
	}
	src.PGBinDir = d.PGBinDir
	key, size, err := dbdump.Upload(c.ctx, d.Bucket, src, d.MasterKey, d.now())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	o, _ := dbdump.ParseKey(key)
	if *asJSON {
		return writeJSON(c.stdout, dbDumpJSON{Key: key, Dialect: string(o.Dialect), TakenAt: o.Taken, Bytes: size})
	}
	fmt.Fprintf(c.stdout, "Dumped the %s database to %s (%s encrypted).\n", o.Dialect, key, dbFormatBytes(size))
	return nil
}

func (c *cli) dbList(path string, args []string, deps func() (dbDeps, error)) error {
	f := newFlags(path, "[--json]", "Lists the database dumps in the object store, newest first: their key, when they were taken, and which database they are of.")
	asJSON := f.Bool("json", false, "print JSON ({\"dumps\": [...]}) instead of a table")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	d, err := deps()
	if err != nil {
		return err
	}
	list, err := dbdump.List(c.ctx, d.Bucket)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if *asJSON {
		out := struct {
			Dumps []dbDumpJSON `json:"dumps"`
		}{Dumps: make([]dbDumpJSON, 0, len(list))}
		for _, o := range list {
			out.Dumps = append(out.Dumps, dbDumpJSON{Key: o.Key, Dialect: string(o.Dialect), TakenAt: o.Taken})
		}
		return writeJSON(c.stdout, out)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "No database dumps yet: take one with `provisioner db dump`.")
		return nil
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "KEY\tTAKEN (UTC)\tDATABASE")
	for _, o := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", o.Key, o.Taken.Format(time.DateTime), o.Dialect)
	}
	tw.Flush()
	return nil
}

func (c *cli) dbRestore(path string, args []string, deps func() (dbDeps, error)) error {
	f := newFlags(path, "--key KEY | --latest [--force]", `
Restores a dump into the configured database (PROVISIONER_DATABASE_URL: the SQLite file in
the data dir, or the PostgreSQL database). Stop every `+"`provisioner serve`"+` first, and
start it again after: it applies the migrations newer than the dump.

The dump is opened with PROVISIONER_MASTER_KEY, or one of PROVISIONER_MASTER_KEY_PREVIOUS.
It is checked whole before the database changes: a SQLite dump is written beside the
file, integrity-checked, then moved into place; a PostgreSQL dump is restored by pg_restore
in one transaction, rolled back if the dump turns out truncated or corrupt.

Without --force the restore refuses a database that has data: a SQLite file that exists,
a PostgreSQL database with tables. With it, the SQLite file is replaced, and PostgreSQL's
objects that the dump has are dropped and recreated (objects it lacks stay).`)
	key := f.String("key", "", "the dump to restore (see provisioner db list)")
	latest := f.Bool("latest", false, "restore the newest dump")
	force := f.Bool("force", false, "replace the data the configured database has")
	if _, help, err := c.parse(f, args, 0, 0, ""); help || err != nil {
		return err
	}
	if (*key != "") == *latest { // neither, or both
		return fmt.Errorf("%s: give either --key KEY or --latest (see provisioner db list)", path)
	}
	if *key != "" {
		if _, ok := dbdump.ParseKey(*key); !ok {
			return fmt.Errorf("%s: --key must be a dump's key, db/<YYYYMMDDTHHMMSSZ>.<sqlite|postgres>.age, got %q", path, *key)
		}
	}
	d, err := deps()
	if err != nil {
		return err
	}
	src, err := dbdump.FromURL(d.DatabaseURL)
	if err != nil {
		return fmt.Errorf("PROVISIONER_DATABASE_URL: %w", err)
	}
	src.PGBinDir = d.PGBinDir
	if *latest {
		if *key, err = dbdump.Latest(c.ctx, d.Bucket); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	target := src.Target(*force)
	fmt.Fprintf(c.stderr, "warning: restoring %s into the %s database %s. Every `provisioner serve` using it must be stopped.\n", *key, target.Dialect, target)
	keys := append([][]byte{d.MasterKey}, d.PreviousKeys...)
	if err := dbdump.Restore(c.ctx, d.Bucket, *key, keys, target); err != nil {
		if errors.Is(err, dbdump.ErrTargetExists) {
			return fmt.Errorf("%s: the %s database %s already has data; nothing was changed: pass --force to replace it", path, target.Dialect, target)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(c.stdout, "Restored %s into the %s database %s. Start `provisioner serve`: it applies the migrations newer than the dump.\n", *key, target.Dialect, target)
	return nil
}

func (d dbDeps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// dbFormatBytes says a size for people: 512 B, 3.4 MiB.
func dbFormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
