package main

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dbdump"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore/objstoretest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

// The `db` commands' tests dump real databases (SQLite, and PostgreSQL when
// PROVISIONER_TEST_POSTGRES_URL is set) into the real test S3 server and restore them.

// dbTestBucket is a fresh prefix of the test S3 server (scripts/s3.sh), emptied at cleanup.
func dbTestBucket(t *testing.T) *objstore.Store {
	t.Helper()
	s, err := objstore.New(objstoretest.Config(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dbTestHosts adds the hosts named add to the database at rawURL and returns the names
// of all its hosts, sorted. It closes the database again: a restore wants no connection
// of the test's held across it, as the service is stopped.
func dbTestHosts(t *testing.T, rawURL string, add ...string) []string {
	t.Helper()
	ctx := context.Background()
	db, err := database.Open(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := hosts.NewStore(db.Gorm, nil)
	for _, name := range add {
		vmid := fnv.New32a()
		vmid.Write([]byte(name))
		if _, err := store.Add(ctx, hosts.Host{Name: name, Node: "pve", VMID: 100 + int(vmid.Sum32()%100000), PublicIP: "192.0.2.10",
			IngressURL: "https://10.0.0.5", MaxInstances: 4}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range list {
		names = append(names, h.Name)
	}
	sort.Strings(names)
	return names
}

func dbTestKey(t *testing.T) []byte {
	t.Helper()
	s, err := secret.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, _ := secret.ParseKey(s)
	return k
}

func TestCLIDBDumpListRestore(t *testing.T) {
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dbURL := dbtest.URL(t, d)
			migrated, err := database.Open(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := migrated.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			migrated.Close()
			dbTestHosts(t, dbURL, "nuc1")

			b := dbTestBucket(t)
			masterKey := dbTestKey(t)
			clock := time.Date(2025, 3, 14, 2, 30, 0, 0, time.UTC)
			calls := 0
			deps := dbDeps{DatabaseURL: dbURL, MasterKey: masterKey, Bucket: b, Now: func() time.Time { return clock }}
			runDB := func(deps dbDeps, args ...string) (string, string, error) {
				var out, errOut bytes.Buffer
				c := &cli{ctx: ctx, stdout: &out, stderr: &errOut}
				err := c.dbGroup(args, func() (dbDeps, error) { calls++; return deps, nil })
				return out.String(), errOut.String(), err
			}
			must := func(args ...string) (string, string) {
				t.Helper()
				out, errOut, err := runDB(deps, args...)
				if err != nil {
					t.Fatalf("provisioner db %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
				}
				return out, errOut
			}

			for _, args := range [][]string{{"--help"}, {"dump", "--help"}, {"list", "--help"}, {"restore", "--help"}} {
				if out, _ := must(args...); !strings.Contains(out, "usage: provisioner db") {
					t.Fatalf("db %s printed no usage:\n%s", strings.Join(args, " "), out)
				}
			}
			if calls != 0 {
				t.Fatal("--help read the configuration")
			}

			out, _ := must("dump")
			first := "db/20250314T023000Z." + string(d) + ".age"
			if !strings.Contains(out, "Dumped the "+string(d)+" database to "+first+" (") {
				t.Fatalf("db dump printed:\n%s", out)
			}
			dbTestHosts(t, dbURL, "nuc2")
			clock = clock.Add(time.Hour)
			var dumped dbDumpJSON
			out, _ = must("dump", "--json")
			if err := json.Unmarshal([]byte(out), &dumped); err != nil || dumped.Bytes == 0 || dumped.Dialect != string(d) || !dumped.TakenAt.Equal(clock) {
				t.Fatalf("db dump --json printed %s (%v)", out, err)
			}
			second := dumped.Key

			out, _ = must("list")
			if i, j := strings.Index(out, second), strings.Index(out, first); i < 0 || j < 0 || i > j || !strings.Contains(out, "2025-03-14 03:30:00") {
				t.Fatalf("db list is not newest first:\n%s", out)
			}
			var listed struct{ Dumps []dbDumpJSON }
			out, _ = must("list", "--json")
			if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Dumps) != 2 || listed.Dumps[0].Key != second || listed.Dumps[1].Key != first {
				t.Fatalf("db list --json printed %s (%v)", out, err)
			}

			for _, bad := range [][]string{{"restore"}, {"restore", "--latest", "--key", first}, {"restore", "--key", "db/latest"}, {"restore", "--force"}} {
				if _, _, err := runDB(deps, bad...); err == nil {
					t.Fatalf("db %s succeeded", strings.Join(bad, " "))
				}
			}
			_, _, err = runDB(deps, "restore", "--latest")
			if err == nil || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("db restore --latest over a database with data: err = %v, want a refusal naming --force", err)
			}
			if names := dbTestHosts(t, dbURL); !slices.Equal(names, []string{"nuc1", "nuc2"}) {
				t.Fatalf("the refused restore changed the database: hosts %v", names)
			}

			out, errOut := must("restore", "--key", first, "--force")
			if !strings.Contains(errOut, "must be stopped") || !strings.Contains(out, "Restored "+first) {
				t.Fatalf("db restore printed:\n%s\nstderr:\n%s", out, errOut)
			}
			if strings.Contains(out+errOut, "password") {
				t.Fatalf("db restore printed a password:\n%s%s", out, errOut)
			}
			if names := dbTestHosts(t, dbURL); !slices.Equal(names, []string{"nuc1"}) {
				t.Fatalf("after restoring the first dump, hosts = %v, want [nuc1]", names)
			}
			must("restore", "--latest", "--force")
			if names := dbTestHosts(t, dbURL); !slices.Equal(names, []string{"nuc1", "nuc2"}) {
				t.Fatalf("after restoring the latest dump, hosts = %v, want [nuc1 nuc2]", names)
			}

			// After a rotation, the old master key is a previous one.
			rotated := deps
			rotated.MasterKey, rotated.PreviousKeys = dbTestKey(t), [][]byte{masterKey}
			if _, _, err := runDB(rotated, "restore", "--key", first, "--force"); err != nil {
				t.Fatalf("restore with the dump's key as a previous one: %v", err)
			}
			rotated.PreviousKeys = nil
			_, _, err = runDB(rotated, "restore", "--latest", "--force")
			if err == nil || !strings.Contains(err.Error(), "not sealed under the configured master key") {
				t.Fatalf("restore under another master key: err = %v", err)
			}
		})
	}
}

// TestCLIDBReadsTheConfiguration runs the commands as run wires them: the database and
// the master key come from the PROVISIONER_* variables.
func TestCLIDBReadsTheConfiguration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	masterKey, err := secret.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	env := map[string]string{
		"PROVISIONER_DATA_DIR":       dataDir,
		"PROVISIONER_MASTER_KEY":     masterKey,
		"PROVISIONER_ADMIN_API_KEY":  "admin-" + strings.Repeat("a", 20),
		"PROVISIONER_PORTAL_API_KEY": "portal-" + strings.Repeat("p", 20),
	}
	dbPath := dataDir + "/provisioner.db"
	db, err := database.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()
	dbTestHosts(t, dbPath, "nuc1")
	b := dbTestBucket(t)
	runDB := func(bucket dbdump.Bucket, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		c := &cli{ctx: ctx, getenv: func(k string) string { return env[k] }, stdout: &out, stderr: &errOut}
		err := c.dbCommand(args, func(config) (dbdump.Bucket, error) { return bucket, nil })
		return out.String() + errOut.String(), err
	}
	if out, err := runDB(b, "dump"); err != nil {
		t.Fatalf("db dump: %v\n%s", err, out)
	}
	keys, _ := b.Keys(ctx, dbdump.Prefix)
	if len(keys) != 1 || !strings.HasSuffix(keys[0], ".sqlite.age") {
		t.Fatalf("the bucket holds %v", keys)
	}
	if out, err := runDB(b, "restore", "--latest", "--force"); err != nil || !strings.Contains(out, dbPath) {
		t.Fatalf("db restore: %v\n%s", err, out)
	}
	if names := dbTestHosts(t, dbPath); !slices.Equal(names, []string{"nuc1"}) {
		t.Fatalf("hosts = %v", names)
	}
	if _, err := runDB(nil, "list"); err == nil || !strings.Contains(err.Error(), "no object store") {
		t.Fatalf("db list without a bucket: err = %v", err)
	}
}

func TestCLIDBFormatBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := dbFormatBytes(n); got != want {
			t.Errorf("dbFormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
