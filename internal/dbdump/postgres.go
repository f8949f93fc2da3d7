package dbdump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// pgRoot is where Debian and Ubuntu install each PostgreSQL version's binaries.
const pgRoot = "/usr/lib/postgresql"

// pgTool finds pg_dump or pg_restore: in binDir when it is set, else on PATH, else in the
// newest of /usr/lib/postgresql/*/bin.
func pgTool(name, binDir string) (string, error) {
	return findTool(name, binDir, exec.LookPath, pgRoot)
}

func findTool(name, binDir string, lookPath func(string) (string, error), root string) (string, error) {
	if binDir != "" {
		p := filepath.Join(binDir, name)
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("dbdump: %s is not in %s, the configured PostgreSQL tools directory", name, binDir)
	}
	if p, err := lookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob(filepath.Join(root, "*", "bin", name))
	best, bestVersion := "", []int(nil)
	for _, m := range matches {
		v, ok := parseVersion(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if ok && isExecutable(m) && compareVersions(v, bestVersion) > 0 {
			best, bestVersion = m, v
		}
	}
	if best == "" {
		return "", fmt.Errorf("dbdump: %s is neither on PATH nor in %s/*/bin: install the PostgreSQL client tools of the server's version or newer (e.g. postgresql-client-15)", name, root)
	}
	return best, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// parseVersion reads a directory name such as "15" or "9.6".
func parseVersion(s string) ([]int, bool) {
	var v []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

func compareVersions(a, b []int) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}

// libpqParams are the URI parameters libpq accepts. pgx takes any other as a run-time
// setting; libpq refuses them, so they are left out of the tools' URL.
var libpqParams = map[string]bool{
	"host": true, "hostaddr": true, "port": true, "dbname": true, "user": true, "passfile": true,
	"channel_binding": true, "connect_timeout": true, "client_encoding": true, "options": true,
	"application_name": true, "fallback_application_name": true, "keepalives": true,
	"keepalives_idle": true, "keepalives_interval": true, "keepalives_count": true,
	"tcp_user_timeout": true, "replication": true, "gssencmode": true, "sslmode": true,
	"requiressl": true, "sslcompression": true, "sslcert": true, "sslkey": true, "sslrootcert": true,
	"sslcrl": true, "sslcrldir": true, "sslsni": true, "requirepeer": true, "require_auth": true,
	"ssl_min_protocol_version": true, "ssl_max_protocol_version": true, "krbsrvname": true,
	"gsslib": true, "gssdelegation": true, "service": true, "target_session_attrs": true,
	"load_balance_hosts": true,
}

// pgConn is how the PostgreSQL tools reach a database: a URL without the password for
// their argv (which every user of the machine can read), and an environment that carries
// the password.
type pgConn struct {
	url    string
	env    []string
	schema string // the URL's search_path, when it names one schema: the dump is limited to it
}

func pgConnection(raw string) (pgConn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return pgConn{}, errors.New("dbdump: the PostgreSQL URL does not parse")
	}
	var c pgConn
	password, hasPassword := "", false
	if u.User != nil {
		password, hasPassword = u.User.Password()
		u.User = url.User(u.User.Username())
	}
	q := u.Query()
	if p := q.Get("password"); q.Has("password") {
		password, hasPassword = p, true
	}
	if q.Has("sslpassword") {
		return pgConn{}, errors.New("dbdump: sslpassword in the PostgreSQL URL cannot be passed to pg_dump without putting it on its command line; use an unencrypted client key file (0600)")
	}
	if sp := strings.TrimSpace(q.Get("search_path")); sp != "" && !strings.Contains(sp, ",") {
		c.schema = strings.Trim(sp, `"`)
	}
	for k := range q {
		if !libpqParams[k] {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	c.url = u.String()
	c.env = toolEnv(os.Environ(), hasPassword)
	if hasPassword {
		c.env = append(c.env, "PGPASSWORD="+password)
	}
	return c, nil
}

// toolEnv is the part of the service's environment the tools get: what locates programs,
// files and locales, and libpq's own PG* settings. Everything else, the master key first,
// stays in the service.
func toolEnv(environ []string, dropPassword bool) []string {
	keep := map[string]bool{"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "LANG": true, "LANGUAGE": true, "TZ": true, "TMPDIR": true}
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case dropPassword && (k == "PGPASSWORD" || k == "PGPASSFILE"):
		case keep[k], strings.HasPrefix(k, "LC_"), strings.HasPrefix(k, "PG"):
			env = append(env, kv)
		}
	}
	return env
}

// dumpPostgres streams pg_dump's custom-format archive of src to w. --no-owner and
// --no-privileges make the archive restorable as any role that may create the objects.
func dumpPostgres(ctx context.Context, src Source, w io.Writer) error {
	tool, err := pgTool("pg_dump", src.PGBinDir)
	if err != nil {
		return err
	}
	conn, err := pgConnection(src.Location)
	if err != nil {
		return err
	}
	args := []string{"--format=custom", "--no-owner", "--no-privileges", "--no-password"}
	if conn.schema != "" {
		args = append(args, "--schema="+conn.schema)
	}
	args = append(args, "--dbname="+conn.url)
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = conn.env
	cmd.Stdout = w
	stderr := &headBuffer{max: 8 << 10}
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("dbdump: pg_dump: %w", ctx.Err())
		}
		return fmt.Errorf("dbdump: pg_dump of %s failed (%v): %s", src, err, stderr)
	}
	return nil
}

// checkPostgresTarget refuses, before anything is downloaded, a target that cannot take
// the restore: no pg_restore, or tables already there and no Force.
func checkPostgresTarget(ctx context.Context, dst Target) error {
	if _, err := pgTool("pg_restore", dst.PGBinDir); err != nil {
		return err
	}
	if dst.Force {
		return nil
	}
	conn, err := pgConnection(dst.Location)
	if err != nil {
		return err
	}
	db, err := database.Open(ctx, dst.Location)
	if err != nil {
		return fmt.Errorf("dbdump: the target: %w", err)
	}
	defer db.Close()
	var tables int
	err = db.SQL.QueryRowContext(ctx, `
		SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND n.nspname NOT LIKE 'pg\_%' AND ($1 = '' OR n.nspname = $1)`, conn.schema).Scan(&tables)
	if err != nil {
		return fmt.Errorf("dbdump: reading the target's tables: %w", err)
	}
	if tables > 0 {
		return fmt.Errorf("%w: %s has %d tables (force restores over them)", ErrTargetExists, dst, tables)
	}
	return nil
}

// restorePostgres feeds the archive to pg_restore, which applies it in one transaction.
// The plaintext reaches pg_restore only chunk by authenticated chunk, and its input is
// closed only once the whole dump has authenticated: a dump that fails part way kills
// pg_restore before it can commit, and the server rolls the transaction back, so the
// target is as it was.
func restorePostgres(ctx context.Context, plain io.Reader, dst Target) error {
	tool, err := pgTool("pg_restore", dst.PGBinDir)
	if err != nil {
		return err
	}
	conn, err := pgConnection(dst.Location)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, tool, "--clean", "--if-exists", "--no-owner", "--no-privileges",
		"--single-transaction", "--exit-on-error", "--no-password", "--dbname="+conn.url)
	cmd.Env = conn.env
	stderr := &headBuffer{max: 8 << 10}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dbdump: starting pg_restore: %w", err)
	}
	ew := &errWriter{w: stdin}
	_, cerr := io.Copy(ew, plain)
	if cerr != nil && ew.err == nil { // the dump, not pg_restore, failed
		cmd.Process.Kill()
		stdin.Close()
		cmd.Wait()
		return cerr
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("dbdump: pg_restore: %w", ctx.Err())
		}
		return fmt.Errorf("dbdump: pg_restore into %s failed (%v); its transaction was rolled back: %s", dst, err, stderr)
	}
	return nil
}

// headBuffer keeps the first max bytes written to it: enough of a tool's stderr to say
// what went wrong.
type headBuffer struct {
	b   []byte
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuffer) String() string { return strings.TrimSpace(string(h.b)) }
