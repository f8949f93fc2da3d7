package dbdump

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

func TestDumpFindToolPrefersPathThenNewestVersion(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, v := range []string{"9.6", "12", "16", "17", "notaversion"} {
		dir := filepath.Join(root, v, "bin")
		os.MkdirAll(dir, 0o755)
		mode := os.FileMode(0o755)
		if v == "17" {
			mode = 0o644 // not executable: skipped
		}
		os.WriteFile(filepath.Join(dir, "pg_dump"), []byte("#!/bin/sh\n"), mode)
	}
	notOnPath := func(string) (string, error) { return "", errors.New("not found") }
	got, err := findTool("pg_dump", "", notOnPath, root)
	if want := filepath.Join(root, "16", "bin", "pg_dump"); err != nil || got != want {
		t.Fatalf("findTool = %q, %v; want %q", got, err, want)
	}
	onPath := func(string) (string, error) { return "/opt/pg/bin/pg_dump", nil }
	if got, _ := findTool("pg_dump", "", onPath, root); got != "/opt/pg/bin/pg_dump" {
		t.Fatalf("findTool with pg_dump on PATH = %q", got)
	}
	_, err = findTool("pg_restore", "", notOnPath, root)
	if err == nil || !strings.Contains(err.Error(), "pg_restore is neither on PATH nor in "+root+"/*/bin") {
		t.Fatalf("no pg_restore anywhere: err = %v", err)
	}
	_, err = findTool("pg_dump", t.TempDir(), onPath, root)
	if err == nil || !strings.Contains(err.Error(), "the configured PostgreSQL tools directory") {
		t.Fatalf("an empty PGBinDir: err = %v", err)
	}
	// With no tools at all, the dump fails before it starts, saying so.
	err = Dump(context.Background(), Source{Dialect: database.Postgres, Location: "postgres://x@127.0.0.1/db", PGBinDir: t.TempDir()}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "pg_dump is not in") {
		t.Fatalf("Dump without pg_dump: err = %v", err)
	}
}

func TestDumpPostgresConnectionKeepsThePasswordOutOfArgv(t *testing.T) {
	t.Parallel()
	c, err := pgConnection("postgres://prov:s%40cret@db.internal:5433/provisioner?sslmode=require&search_path=prov&pool_max_conns=4&application_name=x")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.url, "cret") || strings.Contains(c.url, "pool_max_conns") || strings.Contains(c.url, "search_path") {
		t.Fatalf("tool URL = %q", c.url)
	}
	if want := "postgres://prov@db.internal:5433/provisioner?application_name=x&sslmode=require"; c.url != want {
		t.Fatalf("tool URL = %q, want %q", c.url, want)
	}
	if c.schema != "prov" || !slices.Contains(c.env, "PGPASSWORD=s@cret") {
		t.Fatalf("schema %q, env %v", c.schema, c.env)
	}
	if c, _ := pgConnection("postgres://u@h/db?password=p%26w"); !slices.Contains(c.env, "PGPASSWORD=p&w") || strings.Contains(c.url, "p%26w") {
		t.Fatalf("password parameter: url %q env %v", c.url, c.env)
	}
	if _, err := pgConnection("postgres://u@h/db?sslpassword=x"); err == nil {
		t.Fatal("sslpassword was accepted: it would have to go on the command line")
	}
	env := toolEnv([]string{"PATH=/bin", "HOME=/h", "LC_ALL=C", "PGSSLROOTCERT=/ca", "PGPASSWORD=old",
		"PROVISIONER_MASTER_KEY=k", "AWS_SECRET_ACCESS_KEY=s", "STRIPE_KEY=x"}, true)
	if want := []string{"PATH=/bin", "HOME=/h", "LC_ALL=C", "PGSSLROOTCERT=/ca"}; !slices.Equal(env, want) {
		t.Fatalf("toolEnv = %v, want %v", env, want)
	}
}

// TestDumpPostgresToolsSeeNoPasswordInArgv runs Dump and Restore with stand-in tools that
// record their command line and environment, as the real ones would receive them.
func TestDumpPostgresToolsSeeNoPasswordInArgv(t *testing.T) {
	t.Parallel()
	bin, out := t.TempDir(), t.TempDir()
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + out + "/$(basename $0).args\nenv > " + out + "/$(basename $0).env\n"
	os.WriteFile(filepath.Join(bin, "pg_dump"), []byte(script+"printf 'PGDMP-stand-in'\n"), 0o755)
	os.WriteFile(filepath.Join(bin, "pg_restore"), []byte(script+"cat > "+out+"/restored\n"), 0o755)
	src := Source{Dialect: database.Postgres, Location: "postgres://prov:hunter2-secret@127.0.0.1:1/provisioner?sslmode=disable&search_path=prov", PGBinDir: bin}
	var plain bytes.Buffer
	if err := Dump(context.Background(), src, &plain); err != nil {
		t.Fatal(err)
	}
	if plain.String() != "PGDMP-stand-in" {
		t.Fatalf("Dump wrote %q", plain.String())
	}
	if err := restorePostgres(context.Background(), strings.NewReader("archive"), src.Target(true)); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		args, _ := os.ReadFile(filepath.Join(out, tool+".args"))
		env, _ := os.ReadFile(filepath.Join(out, tool+".env"))
		if bytes.Contains(args, []byte("hunter2")) {
			t.Errorf("%s's argv holds the password:\n%s", tool, args)
		}
		if !bytes.Contains(env, []byte("PGPASSWORD=hunter2-secret\n")) {
			t.Errorf("%s's environment lacks PGPASSWORD:\n%s", tool, env)
		}
		if bytes.Contains(env, []byte("PROVISIONER_")) {
			t.Errorf("%s inherited the service's configuration:\n%s", tool, env)
		}
		t.Logf("%s %s", tool, strings.ReplaceAll(strings.TrimSpace(string(args)), "\n", " "))
	}
	args, _ := os.ReadFile(filepath.Join(out, "pg_dump.args"))
	for _, want := range []string{"--format=custom", "--no-owner", "--no-privileges", "--schema=prov", "--dbname=postgres://prov@127.0.0.1:1/provisioner?sslmode=disable"} {
		if !bytes.Contains(args, []byte(want+"\n")) {
			t.Errorf("pg_dump's arguments lack %s:\n%s", want, args)
		}
	}
	args, _ = os.ReadFile(filepath.Join(out, "pg_restore.args"))
	for _, want := range []string{"--clean", "--if-exists", "--no-owner", "--single-transaction"} {
		if !bytes.Contains(args, []byte(want+"\n")) {
			t.Errorf("pg_restore's arguments lack %s:\n%s", want, args)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(out, "restored")); string(got) != "archive" {
		t.Errorf("pg_restore read %q", got)
	}
}
