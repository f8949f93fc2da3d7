package dbdump_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"hash/fnv"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dbdump"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
	"github.com/n8n-provisioner/n8n-provisioner/internal/retention"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

// The dumps are taken from, and restored into, real databases: SQLite files made by the
// project's migrations, and fresh PostgreSQL databases on the server named by
// PROVISIONER_TEST_POSTGRES_URL. Only the object store is a fake (memBucket).

var now = time.Date(2025, 3, 14, 2, 30, 0, 0, time.UTC)

func newMasterKey(t testing.TB) []byte {
	t.Helper()
	s, err := secret.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := secret.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// migrated opens the database at rawURL, applies the service's and the queue's
// migrations, and adds a host named marker: a row the restore must bring back.
func migrated(t *testing.T, rawURL string) (db *database.DB, marker string) {
	t.Helper()
	ctx := context.Background()
	db, err := database.Open(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := queue.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	marker = "marker-" + randomHex(10)
	addHost(t, db, marker)
	return db, marker
}

func addHost(t *testing.T, db *database.DB, name string) {
	t.Helper()
	vmid := fnv.New32a() // hosts are unique by node and VM id too
	vmid.Write([]byte(name))
	_, err := hosts.NewStore(db.Gorm, nil).Add(context.Background(), hosts.Host{
		Name: name, Node: "pve", VMID: 100 + int(vmid.Sum32()%100000), PublicIP: "192.0.2.10",
		IngressURL: "https://10.0.0.5", MaxInstances: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// hostNames opens rawURL afresh and returns its hosts' names.
func hostNames(t *testing.T, rawURL string) []string {
	t.Helper()
	db, err := database.Open(context.Background(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	list, err := hosts.NewStore(db.Gorm, nil).List(context.Background())
	if err != nil {
		t.Fatalf("listing the hosts of the restored database: %v", err)
	}
	var names []string
	for _, h := range list {
		names = append(names, h.Name)
	}
	return names
}

// sqliteSource returns a migrated SQLite database, open as the service would hold it, in
// a directory of its own.
func sqliteSource(t *testing.T) (src dbdump.Source, marker string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provisioner.db")
	_, marker = migrated(t, path)
	src, err := dbdump.FromURL(path)
	if err != nil {
		t.Fatal(err)
	}
	return src, marker
}

// onlyFiles fails unless dir holds exactly the files named (SQLite's -wal and -shm aside).
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if n := e.Name(); !strings.HasSuffix(n, "-wal") && !strings.HasSuffix(n, "-shm") {
			got = append(got, n)
		}
	}
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %v, want exactly %v (a temporary file was left behind)", dir, got, names)
	}
}

func TestDumpSQLiteRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, marker := sqliteSource(t)
	key := newMasterKey(t)
	b := &memBucket{}

	name, size, err := dbdump.Upload(ctx, b, src, key, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := "db/20250314T023000Z.sqlite.age"; name != want {
		t.Fatalf("key = %q, want %q", name, want)
	}
	stored, _ := b.object(name)
	if size != int64(len(stored)) || size == 0 {
		t.Fatalf("Upload reported %d bytes, the bucket holds %d", size, len(stored))
	}
	if !bytes.HasPrefix(stored, []byte("age-encryption.org/v1\n-> scrypt ")) {
		t.Fatalf("the object is not an age file with one scrypt stanza: %q", stored[:min(60, len(stored))])
	}
	// The plaintext holds the marker, so its absence from the object means something.
	var plain bytes.Buffer
	if err := dbdump.Dump(ctx, src, &plain); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(plain.Bytes(), []byte(marker)) {
		t.Fatal("the plaintext dump lacks the marker row: the ciphertext check below checks nothing")
	}
	if bytes.Contains(stored, []byte(marker)) {
		t.Fatal("the object in the bucket contains a row's plaintext")
	}
	onlyFiles(t, filepath.Dir(src.Location), "provisioner.db")

	latest, err := dbdump.Latest(ctx, b)
	if err != nil || latest != name {
		t.Fatalf("Latest = %q, %v; want %q", latest, err, name)
	}
	dst := filepath.Join(t.TempDir(), "restored", "provisioner.db")
	if err := dbdump.Restore(ctx, b, latest, [][]byte{key}, dbdump.Target{Dialect: database.SQLite, Location: dst}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the restored database's mode is %v, want 0600", fi.Mode().Perm())
	}
	onlyFiles(t, filepath.Dir(dst), "provisioner.db")
	if names := hostNames(t, dst); !slices.Equal(names, []string{marker}) {
		t.Fatalf("restored hosts = %v, want [%s]", names, marker)
	}
	// The restored database is current: the service starts on it without migrating.
	db, err := database.Open(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ready(ctx); err != nil {
		t.Fatalf("the restored database is not ready: %v", err)
	}
}

// TestDumpLeavesNothingInTMPDIR: the only plaintext file a dump or a restore makes is
// beside the database, never in the system's temporary directory.
func TestDumpLeavesNothingInTMPDIR(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx := context.Background()
	src, _ := sqliteSource(t)
	key := newMasterKey(t)
	b := &memBucket{}
	name, _, err := dbdump.Upload(ctx, b, src, key, now)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "restored.db")
	if err := dbdump.Restore(ctx, b, name, [][]byte{key}, dbdump.Target{Dialect: database.SQLite, Location: dst}); err != nil {
		t.Fatal(err)
	}
	onlyFiles(t, tmp)
	onlyFiles(t, filepath.Dir(src.Location), "provisioner.db")
	onlyFiles(t, filepath.Dir(dst), "restored.db")
}

func TestDumpSQLiteRestoreRefusesExistingFileUnlessForced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, marker := sqliteSource(t)
	key := newMasterKey(t)
	b := &memBucket{}
	name, _, err := dbdump.Upload(ctx, b, src, key, now)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "provisioner.db")
	other, otherMarker := migrated(t, dst)
	other.Close() // the service is stopped for a restore

	err = dbdump.Restore(ctx, b, name, [][]byte{key}, dbdump.Target{Dialect: database.SQLite, Location: dst})
	if !errors.Is(err, dbdump.ErrTargetExists) {
		t.Fatalf("restore over an existing file: err = %v, want ErrTargetExists", err)
	}
	if names := hostNames(t, dst); !slices.Equal(names, []string{otherMarker}) {
		t.Fatalf("the refused restore changed the target: hosts %v", names)
	}
	if err := dbdump.Restore(ctx, b, name, [][]byte{key}, dbdump.Target{Dialect: database.SQLite, Location: dst, Force: true}); err != nil {
		t.Fatal(err)
	}
	if names := hostNames(t, dst); !slices.Equal(names, []string{marker}) {
		t.Fatalf("after a forced restore, hosts = %v, want [%s]", names, marker)
	}
	onlyFiles(t, filepath.Dir(dst), "provisioner.db")
}

func TestDumpRestoreRefusesAnotherMasterKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, marker := sqliteSource(t)
	oldKey, newKey, strangerKey := newMasterKey(t), newMasterKey(t), newMasterKey(t)
	b := &memBucket{}
	name, _, err := dbdump.Upload(ctx, b, src, oldKey, now)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "provisioner.db")
	target := dbdump.Target{Dialect: database.SQLite, Location: dst}

	err = dbdump.Restore(ctx, b, name, [][]byte{strangerKey, newKey}, target)
	if !errors.Is(err, dbdump.ErrWrongKey) || !strings.Contains(err.Error(), "not sealed under the configured master key") {
		t.Fatalf("restore under other keys: err = %v, want ErrWrongKey", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore made the target: %v", err)
	}
	onlyFiles(t, filepath.Dir(dst))

	// After a rotation the old key is a previous one: the dump opens with it.
	if err := dbdump.Restore(ctx, b, name, [][]byte{newKey, oldKey}, target); err != nil {
		t.Fatalf("restore with the old key as the previous one: %v", err)
	}
	if names := hostNames(t, dst); !slices.Equal(names, []string{marker}) {
		t.Fatalf("restored hosts = %v", names)
	}
}

func TestDumpRestoreRefusesTruncatedOrCorruptObjects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, _ := sqliteSource(t)
	key := newMasterKey(t)
	b := &memBucket{}
	name, _, err := dbdump.Upload(ctx, b, src, key, now)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := b.object(name)
	// An age file: a header ending in "--- <43 characters of MAC>\n", a 16-byte nonce,
	// then chunks of 64 KiB and a 16-byte tag each, the last one shorter.
	headerEnd := bytes.Index(good, []byte("\n--- ")) + len("\n--- ") + 43 + 1
	lastChunk := (len(good) - headerEnd - 16) % (64<<10 + 16)
	if lastChunk == 0 {
		lastChunk = 64<<10 + 16
	}
	flip := func(at int) []byte {
		o := bytes.Clone(good)
		o[at] ^= 0x40
		return o
	}
	otherSalt := bytes.Clone(good) // a valid base64 character for another
	at := len("age-encryption.org/v1\n-> scrypt ") + 2
	otherSalt[at] = map[bool]byte{true: 'B', false: 'A'}[otherSalt[at] == 'A']
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"last byte missing", good[:len(good)-1], dbdump.ErrCorrupt},
		{"half of it", good[:len(good)/2], dbdump.ErrCorrupt},
		{"the header only", good[:headerEnd], dbdump.ErrCorrupt},
		{"the last chunk missing", good[:len(good)-lastChunk], dbdump.ErrCorrupt},
		{"a flipped byte in the body", flip(len(good) / 2), dbdump.ErrCorrupt},
		{"a flipped byte in the last tag", flip(len(good) - 3), dbdump.ErrCorrupt},
		{"a flipped byte in the header's MAC", flip(headerEnd - 5), dbdump.ErrCorrupt},
		// The scrypt salt is the key derivation's input: changed, no key opens the file.
		{"another salt", otherSalt, dbdump.ErrWrongKey},
		{"empty", nil, dbdump.ErrCorrupt},
		{"not age", []byte("SQLite format 3\x00 hello"), dbdump.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			dst := filepath.Join(dir, "provisioner.db")
			before := []byte("the operator's current database, which must survive")
			if err := os.WriteFile(dst, before, 0o600); err != nil {
				t.Fatal(err)
			}
			bad := &memBucket{}
			bad.set(name, tc.data)
			err := dbdump.Restore(ctx, bad, name, [][]byte{key}, dbdump.Target{Dialect: database.SQLite, Location: dst, Force: true})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			after, _ := os.ReadFile(dst)
			if !bytes.Equal(after, before) {
				t.Fatal("the refused restore changed the target")
			}
			onlyFiles(t, dir, "provisioner.db")
		})
	}
}

func TestDumpRestoreRefusesOtherDialectsAndKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := &memBucket{}
	key := newMasterKey(t)
	target := dbdump.Target{Dialect: database.SQLite, Location: filepath.Join(t.TempDir(), "x.db")}
	b.set("db/20250314T023000Z.postgres.age", []byte("whatever"))
	if err := dbdump.Restore(ctx, b, "db/20250314T023000Z.postgres.age", [][]byte{key}, target); err == nil || !strings.Contains(err.Error(), "postgres dump and the target is a sqlite database") {
		t.Fatalf("a PostgreSQL dump into SQLite: err = %v", err)
	}
	if err := dbdump.Restore(ctx, b, "db/notes.txt", [][]byte{key}, target); err == nil {
		t.Fatal("restoring a key that is not a dump's succeeded")
	}
	if _, err := dbdump.Latest(ctx, &memBucket{}); !errors.Is(err, dbdump.ErrNoDumps) {
		t.Fatalf("Latest of an empty bucket: err = %v, want ErrNoDumps", err)
	}
}

func TestDumpUploadFailuresLeaveNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	key := newMasterKey(t)

	t.Run("the store fails part way", func(t *testing.T) {
		t.Parallel()
		src, _ := sqliteSource(t)
		b := &memBucket{failPutAfter: 1000}
		if _, _, err := dbdump.Upload(ctx, b, src, key, now); !errors.Is(err, errInjected) {
			t.Fatalf("err = %v, want the store's error", err)
		}
		if keys := b.keys(); len(keys) != 0 {
			t.Fatalf("the bucket holds %v", keys)
		}
		onlyFiles(t, filepath.Dir(src.Location), "provisioner.db")
	})
	t.Run("the dump fails and the store keeps the short stream", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		src := dbdump.Source{Dialect: database.SQLite, Location: filepath.Join(dir, "missing.db")}
		b := &memBucket{swallow: true}
		if _, _, err := dbdump.Upload(ctx, b, src, key, now); err == nil {
			t.Fatal("a dump of a missing database succeeded")
		}
		if keys := b.keys(); len(keys) != 0 {
			t.Fatalf("the bucket holds %v after a failed dump", keys)
		}
		onlyFiles(t, dir) // and the missing database was not created by opening it
	})
	t.Run("the store stops reading early and claims success", func(t *testing.T) {
		t.Parallel()
		src, _ := sqliteSource(t)
		b := &shortBucket{}
		if _, _, err := dbdump.Upload(ctx, b, src, key, now); err == nil || !strings.Contains(err.Error(), "stopped reading") {
			t.Fatalf("err = %v, want the short read reported", err)
		}
		if keys := b.keys(); len(keys) != 0 {
			t.Fatalf("the bucket holds %v", keys)
		}
		onlyFiles(t, filepath.Dir(src.Location), "provisioner.db")
	})
	t.Run("the job does not prune after a failed dump", func(t *testing.T) {
		t.Parallel()
		b := &memBucket{}
		old := dbdump.Key(now.AddDate(0, -6, 0), database.SQLite)
		b.set(old, []byte("an old dump"))
		src := dbdump.Source{Dialect: database.SQLite, Location: filepath.Join(t.TempDir(), "missing.db")}
		if _, _, err := dbdump.Run(ctx, b, src, key, retention.Default, now); err == nil {
			t.Fatal("Run of a missing database succeeded")
		}
		if keys := b.keys(); !slices.Equal(keys, []string{old}) {
			t.Fatalf("the bucket holds %v, want the old dump kept", keys)
		}
	})
}

func TestDumpRetentionPrunesOnlyDumpsItDoesNotKeep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, _ := sqliteSource(t)
	key := newMasterKey(t)
	b := &memBucket{}
	// now is Friday 2025-03-14. Keep 2 days and 2 weeks.
	at := func(s string) string {
		tm, err := time.Parse(time.DateTime, s)
		if err != nil {
			t.Fatal(err)
		}
		return dbdump.Key(tm, database.SQLite)
	}
	kept := []string{
		at("2025-03-13 02:30:00"),                         // yesterday
		at("2025-03-09 02:30:00"),                         // newest of last week (Sunday)
		dbdump.Key(now.Add(time.Hour), database.Postgres), // from the future: a stepped-back clock
	}
	pruned := []string{
		at("2025-03-14 01:00:00"), // today, but not the newest of today (the new dump is)
		at("2025-03-13 01:00:00"), // yesterday, older
		at("2025-03-12 02:30:00"), // this week, but not the newest of it, nor within 2 days
		at("2025-03-08 02:30:00"), // last week, older
		at("2025-02-01 02:30:00"),
	}
	foreign := []string{"db/README.txt", "db/2025-03-01.sqlite.age", "db/20250301T000000Z.mysql.age", "instances/x/20250101T000000Z.sqlite.age"}
	for _, k := range slices.Concat(kept, pruned, foreign) {
		b.set(k, []byte("x"))
	}
	name, _, err := dbdump.Run(ctx, b, src, key, retention.Policy{Daily: 2, Weekly: 2}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(kept, foreign, []string{name})
	slices.Sort(want)
	if got := b.keys(); !slices.Equal(got, want) {
		t.Fatalf("after pruning the bucket holds\n%v\nwant\n%v", got, want)
	}

	// A delete that fails is reported, with the new dump's key; the others still go.
	b.set(pruned[0], []byte("x"))
	b.set(pruned[1], []byte("x"))
	b.failDelete = map[string]error{pruned[0]: errInjected}
	name2, _, err := dbdump.Run(ctx, b, src, key, retention.Policy{Daily: 2, Weekly: 2}, now.Add(time.Minute))
	if !errors.Is(err, errInjected) || name2 == "" {
		t.Fatalf("Run = %q, %v; want the new key and the delete's error", name2, err)
	}
	if _, ok := b.object(pruned[1]); ok {
		t.Fatal("one failed delete stopped the others")
	}
	if _, ok := b.object(name); ok {
		t.Fatal("the previous newest dump of today was kept")
	}
	if _, ok := b.object(name2); !ok {
		t.Fatal("the new dump was pruned")
	}
}

func TestDumpParseKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key     string
		ok      bool
		dialect database.Dialect
	}{
		{"db/20250314T023000Z.sqlite.age", true, database.SQLite},
		{"db/20250314T023000Z.postgres.age", true, database.Postgres},
		{"db/20250314T023000Z.mysql.age", false, ""},
		{"db/20250314T023000Z.sqlite", false, ""},
		{"db/20251314T023000Z.sqlite.age", false, ""},
		{"db/2025-03-14T02:30:00Z.sqlite.age", false, ""},
		{"20250314T023000Z.sqlite.age", false, ""},
		{"db/x/20250314T023000Z.sqlite.age", false, ""},
	} {
		o, ok := dbdump.ParseKey(tc.key)
		if ok != tc.ok || o.Dialect != tc.dialect || (ok && !o.Taken.Equal(now)) {
			t.Errorf("ParseKey(%q) = %+v, %v", tc.key, o, ok)
		}
		if ok && dbdump.Key(o.Taken, o.Dialect) != tc.key {
			t.Errorf("Key does not round-trip %q", tc.key)
		}
	}
}

// TestDumpPassphrase: the dumps' passphrase is a function of the master key, and opens a
// dump with age alone.
func TestDumpPassphrase(t *testing.T) {
	t.Parallel()
	p, err := dbdump.Passphrase(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	q, _ := dbdump.Passphrase(bytes.Repeat([]byte{2}, 32))
	if len(p) != 64 || p == q {
		t.Fatalf("passphrases %q and %q", p, q)
	}
	again, _ := dbdump.Passphrase(bytes.Repeat([]byte{1}, 32))
	if again != p {
		t.Fatal("the passphrase is not a function of the key")
	}
	if _, err := dbdump.Passphrase([]byte("short")); err == nil {
		t.Fatal("a short master key was accepted")
	}

	// The recovery path without the provisioner: age's own passphrase identity, as
	// `age -d` uses it, opens a dump.
	key := newMasterKey(t)
	var sealed bytes.Buffer
	w, err := dbdump.Encrypt(&sealed, key)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "plaintext")
	w.Close()
	pass, _ := dbdump.Passphrase(key)
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.Decrypt(&sealed, id)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err != nil || string(got) != "plaintext" {
		t.Fatalf("age opened %q, %v", got, err)
	}
}

// TestDumpScryptCost measures what opening a dump costs per master key tried.
// TestDumpScryptWorkFactor reads the scrypt stanza of a dump's age header: its log2(N) is
// the small factor a 256-bit random passphrase needs (an attacker cannot guess it, so
// scrypt's cost buys nothing), which keeps opening a dump fast. BenchmarkDumpOpen measures it.
func TestDumpScryptWorkFactor(t *testing.T) {
	t.Parallel()
	var sealed bytes.Buffer
	w, err := dbdump.Encrypt(&sealed, newMasterKey(t))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	w.Close()
	var stanza []string
	for _, line := range strings.Split(sealed.String(), "\n") {
		if strings.HasPrefix(line, "-> scrypt ") {
			stanza = strings.Fields(line)
		}
	}
	if len(stanza) != 4 || stanza[3] != "12" {
		t.Fatalf("scrypt stanza = %q, want log2(N) 12", stanza)
	}
}

// BenchmarkDumpOpen is the cost of opening a dump: one scrypt at the dump's work factor.
func BenchmarkDumpOpen(b *testing.B) {
	key := newMasterKey(b)
	var sealed bytes.Buffer
	w, err := dbdump.Encrypt(&sealed, key)
	if err != nil {
		b.Fatal(err)
	}
	w.Write([]byte("x"))
	w.Close()
	for b.Loop() {
		if _, err := dbdump.Decrypt(bytes.NewReader(sealed.Bytes()), [][]byte{key}); err != nil {
			b.Fatal(err)
		}
	}
}

// pgDatabase creates a fresh database on the test server and returns its URL; it is
// dropped at cleanup.
func pgDatabase(t *testing.T) string {
	t.Helper()
	base := os.Getenv("PROVISIONER_TEST_POSTGRES_URL")
	if base == "" {
		dbtest.URL(t, database.Postgres) // skips, or fails when PostgreSQL is required
	}
	name := "dbdump_" + randomHex(6)
	admin, err := database.Open(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.SQL.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin, err := database.Open(context.Background(), base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.SQL.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func TestDumpPostgresRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srcURL, dstURL := pgDatabase(t), pgDatabase(t)
	_, marker := migrated(t, srcURL)
	src, err := dbdump.FromURL(srcURL)
	if err != nil {
		t.Fatal(err)
	}
	key := newMasterKey(t)
	b := &memBucket{}
	name, size, err := dbdump.Upload(ctx, b, src, key, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := "db/20250314T023000Z.postgres.age"; name != want || size == 0 {
		t.Fatalf("Upload = %q, %d bytes; want %q", name, size, want)
	}
	stored, _ := b.object(name)
	if bytes.Contains(stored, []byte(marker)) || bytes.Contains(stored, []byte("PGDMP")) {
		t.Fatal("the object in the bucket contains plaintext")
	}

	target := dbdump.Target{Dialect: database.Postgres, Location: dstURL}
	if err := dbdump.Restore(ctx, b, name, [][]byte{key}, target); err != nil {
		t.Fatal(err)
	}
	if names := hostNames(t, dstURL); !slices.Equal(names, []string{marker}) {
		t.Fatalf("restored hosts = %v, want [%s]", names, marker)
	}
	restored, err := database.Open(ctx, dstURL)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if err := restored.Ready(ctx); err != nil {
		t.Fatalf("the restored database is not ready: %v", err)
	}
	if err := queue.Migrate(ctx, restored); err != nil {
		t.Fatalf("the queue's tables did not come back usable: %v", err)
	}

	// Now the target has tables: a restore needs Force.
	if err := dbdump.Restore(ctx, b, name, [][]byte{key}, target); !errors.Is(err, dbdump.ErrTargetExists) {
		t.Fatalf("restore into a database with tables: err = %v, want ErrTargetExists", err)
	}
	later := "later-" + randomHex(6)
	addHost(t, restored, later)

	// A corrupt dump, forced, leaves the target as it was: pg_restore's one transaction
	// never commits.
	target.Force = true
	good := bytes.Clone(stored)
	for _, bad := range [][]byte{good[:len(good)-100], append(bytes.Clone(good[:len(good)-40]), bytes.Repeat([]byte{0}, 40)...)} {
		b.set(name, bad)
		if err := dbdump.Restore(ctx, b, name, [][]byte{key}, target); !errors.Is(err, dbdump.ErrCorrupt) {
			t.Fatalf("restore of a corrupt dump: err = %v, want ErrCorrupt", err)
		}
		if names := hostNames(t, dstURL); !slices.Equal(sorted(names), sorted([]string{marker, later})) {
			t.Fatalf("after a refused restore the target's hosts are %v, want %s and %s", names, marker, later)
		}
	}
	b.set(name, good)
	other := newMasterKey(t)
	if err := dbdump.Restore(ctx, b, name, [][]byte{other}, target); !errors.Is(err, dbdump.ErrWrongKey) {
		t.Fatalf("restore under another key: err = %v, want ErrWrongKey", err)
	}

	// Forced, the restore puts the dump's rows back over the newer ones.
	if err := dbdump.Restore(ctx, b, name, [][]byte{key}, target); err != nil {
		t.Fatal(err)
	}
	if names := hostNames(t, dstURL); !slices.Equal(names, []string{marker}) {
		t.Fatalf("after a forced restore hosts = %v, want [%s]", names, marker)
	}
}

// TestDumpPostgresSchemaURL covers a URL whose search_path names the provisioner's schema
// in a shared database (as the test helpers make them): the dump holds that schema only.
func TestDumpPostgresSchemaURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srcURL := dbtest.URL(t, database.Postgres)
	_, marker := migrated(t, srcURL)
	src, err := dbdump.FromURL(srcURL)
	if err != nil {
		t.Fatal(err)
	}
	key := newMasterKey(t)
	b := &memBucket{}
	name, _, err := dbdump.Upload(ctx, b, src, key, now)
	if err != nil {
		t.Fatal(err)
	}
	dstURL := pgDatabase(t)
	if err := dbdump.Restore(ctx, b, name, [][]byte{key}, dbdump.Target{Dialect: database.Postgres, Location: dstURL}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srcURL)
	schema := u.Query().Get("search_path")
	d, _ := url.Parse(dstURL)
	q := d.Query()
	q.Set("search_path", schema)
	d.RawQuery = q.Encode()
	if names := hostNames(t, d.String()); !slices.Equal(names, []string{marker}) {
		t.Fatalf("restored hosts in schema %s = %v, want [%s]", schema, names, marker)
	}
	db, err := database.Open(ctx, dstURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var schemas int
	if err := db.SQL.QueryRowContext(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_%'`).Scan(&schemas); err != nil || schemas != 1 {
		t.Fatalf("the target has %d test schemas (%v); want only the dumped one", schemas, err)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
