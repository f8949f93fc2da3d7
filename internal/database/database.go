// Package database opens the service's database (SQLite by default, PostgreSQL when the
// URL says so), applies the embedded migrations with goose, and answers whether the schema
// is current. It owns the connection, not the tables: each domain package keeps its own
// queries.
package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/migrations"
)

// Dialect names the SQL dialect behind a DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open database: the gorm handle the stores use, the *sql.DB under it, and its
// dialect (River needs the raw handle and the dialect to pick its driver).
type DB struct {
	Gorm    *gorm.DB
	SQL     *sql.DB
	Dialect Dialect
	// URL is the connection string, kept for drivers that open their own pool (River's
	// pgx pool on PostgreSQL). It may hold a password: never log it.
	URL string
}

// ParseURL tells the dialect of a PROVISIONER_DATABASE_URL: postgres:// or postgresql://
// select PostgreSQL; sqlite://path, file:path or a bare path select SQLite.
func ParseURL(raw string) (Dialect, string, error) {
	switch {
	case raw == "":
		return "", "", errors.New("is empty")
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			return "", "", errors.New("is not a valid postgres:// URL")
		}
		return Postgres, raw, nil
	case strings.HasPrefix(raw, "sqlite://"):
		return SQLite, strings.TrimPrefix(raw, "sqlite://"), nil
	case strings.HasPrefix(raw, "file:"):
		return SQLite, strings.TrimPrefix(strings.SplitN(raw, "?", 2)[0], "file:"), nil
	case strings.Contains(raw, "://"):
		return "", "", fmt.Errorf("has unsupported scheme %q (use postgres:// or a SQLite file path)", strings.SplitN(raw, "://", 2)[0])
	default:
		return SQLite, raw, nil
	}
}

// Open connects to the database at rawURL. For SQLite it creates the file's directory and
// enables WAL, foreign keys and a busy timeout, so concurrent writers wait instead of failing.
func Open(ctx context.Context, rawURL string) (*DB, error) {
	dialect, target, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg := &gorm.Config{
		Logger:                 logger.Discard, // queries carry sealed secrets and PII: never log them
		NowFunc:                func() time.Time { return time.Now().UTC() },
		SkipDefaultTransaction: true,
	}
	var g *gorm.DB
	switch dialect {
	case Postgres:
		g, err = gorm.Open(postgres.Open(target), cfg)
	case SQLite:
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			return nil, fmt.Errorf("creating the SQLite directory: %w", err)
		}
		dsn := "file:" + target + "?_foreign_keys=on&_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate&_synchronous=NORMAL"
		g, err = gorm.Open(sqlite.Open(dsn), cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the %s database: %w", dialect, err)
	}
	sqlDB, err := g.DB()
	if err != nil {
		return nil, err
	}
	if dialect == Postgres {
		sqlDB.SetMaxOpenConns(20)
		// As many idle as open: fewer would close and reopen connections under load.
		sqlDB.SetMaxIdleConns(20)
	}
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("connecting to the %s database: %w", dialect, err)
	}
	return &DB{Gorm: g, SQL: sqlDB, Dialect: dialect, URL: rawURL}, nil
}

// Close closes the connection pool.
func (db *DB) Close() error { return db.SQL.Close() }

// Provider returns goose's migration provider for db (tests step the schema down and up with it).
func (db *DB) Provider() (*goose.Provider, error) {
	sub, err := fs.Sub(migrations.FS, string(db.Dialect))
	if err != nil {
		return nil, err
	}
	gooseDialect := goose.DialectSQLite3
	if db.Dialect == Postgres {
		gooseDialect = goose.DialectPostgres
	}
	return goose.NewProvider(gooseDialect, db.SQL, sub)
}

// Migrate applies every pending migration and returns how many it applied.
func (db *DB) Migrate(ctx context.Context) (int, error) {
	p, err := db.Provider()
	if err != nil {
		return 0, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return len(results), fmt.Errorf("applying migrations: %w", err)
	}
	return len(results), nil
}

// Ready returns nil when the database answers and no migration is pending, and an
// Unavailable error saying which is not the case otherwise.
func (db *DB) Ready(ctx context.Context) error {
	if err := db.SQL.PingContext(ctx); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "database unreachable")
	}
	p, err := db.Provider()
	if err != nil {
		return err
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "cannot read the migration state")
	}
	if pending {
		return apperr.New(apperr.Unavailable, "migrations pending: run `provisioner migrate`")
	}
	return nil
}

// IsUniqueViolation recognises a unique-constraint failure on SQLite and PostgreSQL, so
// stores can turn it into a Conflict without importing either driver's error types.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "SQLSTATE 23505") ||
		strings.Contains(msg, "duplicate key value")
}
