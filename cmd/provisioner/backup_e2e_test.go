package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore/objstoretest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// Backups end to end: the real n8nctl encrypts and uploads through presigned URLs to a
// real S3 server (SeaweedFS, started by scripts/test.sh), and instances move between
// sandbox hosts through it.

// s3Env is the provisioner's bucket configuration for cfg.
func s3Env(t testing.TB, cfg objstore.Config) map[string]string {
	testlog.Secret(t, cfg.SecretAccessKey)
	return map[string]string{
		"PROVISIONER_BACKUP_S3_ENDPOINT":          cfg.Endpoint,
		"PROVISIONER_BACKUP_S3_REGION":            cfg.Region,
		"PROVISIONER_BACKUP_S3_BUCKET":            cfg.Bucket,
		"PROVISIONER_BACKUP_S3_PREFIX":            cfg.Prefix,
		"PROVISIONER_BACKUP_S3_ACCESS_KEY_ID":     cfg.AccessKeyID,
		"PROVISIONER_BACKUP_S3_SECRET_ACCESS_KEY": cfg.SecretAccessKey,
		"PROVISIONER_BACKUP_S3_PATH_STYLE":        strconv.FormatBool(cfg.PathStyle),
		"PROVISIONER_BACKUP_WINDOW":               "off", // the tests ask for their backups
	}
}

type backupView struct {
	ID, Status, Reason, Name, Host, Path, Error string
	ObjectKey                                   string `json:"object_key"`
	OnHost                                      bool   `json:"on_host"`
	Encrypted                                   bool
	SHA256                                      string
	Bytes                                       int64
}

func (e *e2e) backups(id string) []backupView {
	e.t.Helper()
	var out struct{ Backups []backupView }
	e.mustAPI("GET", "/v1/instances/"+id+"/backups", e2eAdminKey, nil, http.StatusOK, &out)
	return out.Backups
}

// waitBackup waits until the instance has a backup of reason in status, and returns it.
func (e *e2e) waitBackup(id, reason, status string) backupView {
	e.t.Helper()
	var got backupView
	waitFor(e.t, 90*time.Second, "a "+reason+" backup "+status, func() bool {
		for _, b := range e.backups(id) {
			if b.Reason == reason && b.Status == status {
				got = b
				return true
			}
		}
		return false
	})
	return got
}

// waitEvents waits until the instance's timeline has n events of kind; on a timeout the
// failure shows the timeline.
func (e *e2e) waitEvents(id, kind string, n int, timeout time.Duration) instanceView {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		in := e.instance(id)
		if strings.Count(" "+timelineKinds(in)+" ", " "+kind+" ") >= n {
			return in
		}
		if time.Now().After(deadline) {
			var lines []string
			for _, ev := range in.Timeline {
				lines = append(lines, ev.Kind+": "+ev.Message)
			}
			e.t.Fatalf("timed out after %s waiting for %d %s event(s); timeline:\n%s", timeout, n, kind, strings.Join(lines, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasEvent reports whether the instance's timeline has an event of kind; its message.
func hasEvent(in instanceView, kind string) (string, bool) {
	for _, ev := range in.Timeline {
		if ev.Kind == kind {
			return ev.Message, true
		}
	}
	return "", false
}

func TestBackupsLeaveTheHostEncryptedAndInstancesMoveWithTheirLogin(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := objstoretest.Config(t)
			e := newE2E(t, e2eOptions{dialect: d, env: s3Env(t, cfg)})
			e.start()
			e.addHost("nuc1", 10)
			e.purchase("cus_bk", "starter")
			in := e.waitInstance("cus_bk", "active", 60*time.Second)
			password := passwordIn(t, e.emailsTo("cus_bk@example.com")[0])
			testlog.Secret(t, password)
			e.addHost("nuc2", 10) // after the purchase, so that the instance is on nuc1

			// A backup: encrypted on the host, uploaded, verified in the bucket.
			e.mustAPI("POST", "/v1/instances/"+in.ID+"/backup", e2eAdminKey, nil, http.StatusAccepted, nil)
			b := e.waitBackup(in.ID, "manual", "uploaded")
			if !b.Encrypted || !strings.HasSuffix(b.Name, ".tar.gz.age") || b.ObjectKey == "" {
				t.Fatalf("backup = %+v, want an encrypted archive in the bucket", b)
			}
			store, err := objstore.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := store.Get(context.Background(), b.ObjectKey)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(obj)
			obj.Close()
			if int64(len(raw)) != b.Bytes || !bytes.HasPrefix(raw, []byte("age-encryption.org/v1")) {
				t.Fatalf("the bucket holds %d bytes starting %q; want the %d-byte age ciphertext", len(raw), raw[:min(len(raw), 24)], b.Bytes)
			}
			if bytes.Contains(raw, []byte("cus_bk@example.com")) || bytes.Contains(raw, []byte("database.json")) {
				t.Fatal("the archive in the bucket carries the customer's data in the clear")
			}

			// A move to nuc2: same URL, same login, same key; the old container goes.
			e.mustAPI("POST", "/v1/instances/"+in.ID+"/move", e2eAdminKey, map[string]any{"host": "nuc2"}, http.StatusAccepted, nil)
			moved := e.waitEvents(in.ID, "move_done", 1, 120*time.Second)
			if *moved.Host != "nuc2" || moved.Status != "active" || moved.URL != in.URL {
				t.Fatalf("after the move: %+v", moved)
			}
			msg, _ := hasEvent(moved, "moved")
			t.Logf("timeline: %s", msg)
			if !strings.Contains(msg, "unavailable for") {
				t.Errorf("the moved event does not give the downtime: %q", msg)
			}
			if err := e.login(moved, "cus_bk@example.com", password); err != nil {
				t.Errorf("the customer's password does not log in on nuc2: %v", err)
			}
			h2, _ := e.world.Host("nuc2")
			records := e.world.Cloudflare.Records(e.world.CloudflareZoneID)
			if len(records) != 1 || records[0].Content != h2.PublicIP {
				t.Errorf("DNS records after the move = %+v, want one → %s", records, h2.PublicIP)
			}
			if old, _ := e.world.Containers("nuc1"); len(old) != 0 {
				t.Errorf("nuc1 still has %d container(s) after the move", len(old))
			}
			e.waitBackup(in.ID, "move", "uploaded")

			// Restore the first backup on nuc1: the instance goes back there with that data,
			// fetched from the bucket (nuc1's copy is not needed).
			e.mustAPI("POST", "/v1/instances/"+in.ID+"/restore", e2eAdminKey, map[string]any{"backup_id": b.ID, "host": "nuc1"}, http.StatusAccepted, nil)
			back := e.waitEvents(in.ID, "move_done", 2, 120*time.Second)
			if *back.Host != "nuc1" {
				t.Fatalf("restored on %s, want nuc1", *back.Host)
			}
			if err := e.login(back, "cus_bk@example.com", password); err != nil {
				t.Errorf("the customer's password does not log in after the restore on nuc1: %v", err)
			}

			var failed struct{ Backups []backupView }
			e.mustAPI("GET", "/v1/backups?status=failed", e2eAdminKey, nil, http.StatusOK, &failed)
			if len(failed.Backups) != 0 {
				t.Errorf("failed backups after a clean run: %+v", failed.Backups)
			}

			// A corrupted archive in the bucket is refused with the reason before anything
			// stops: the instance goes on running where it is.
			e.mustAPI("POST", "/v1/instances/"+in.ID+"/backup", e2eAdminKey, nil, http.StatusAccepted, nil)
			var fresh backupView
			waitFor(t, 60*time.Second, "a second manual backup", func() bool {
				for _, x := range e.backups(in.ID) {
					if x.Reason == "manual" && x.Status == "uploaded" && x.ID != b.ID {
						fresh = x
						return true
					}
				}
				return false
			})
			obj, err = store.Get(context.Background(), fresh.ObjectKey)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ = io.ReadAll(obj)
			obj.Close()
			raw[len(raw)/2] ^= 0xff
			if err := store.Put(context.Background(), fresh.ObjectKey, bytes.NewReader(raw)); err != nil {
				t.Fatal(err)
			}
			e.mustAPI("POST", "/v1/instances/"+in.ID+"/restore", e2eAdminKey, map[string]any{"backup_id": fresh.ID, "host": "nuc2"}, http.StatusAccepted, nil)
			waitFor(t, 60*time.Second, "the corrupted archive to be refused", func() bool {
				for _, ev := range e.instance(in.ID).Timeline {
					if ev.Kind == "retry" && strings.Contains(ev.Message, "checksum mismatch") {
						return true
					}
				}
				return false
			})
			now := e.instance(in.ID)
			if *now.Host != "nuc1" {
				t.Errorf("the instance is on %s after a refused restore, want nuc1", *now.Host)
			}
			if err := e.login(now, "cus_bk@example.com", password); err != nil {
				t.Errorf("the instance does not log in after a refused restore: %v", err)
			}
			if cs, _ := e.world.Containers("nuc1"); len(cs) != 1 || !cs[0].Running {
				t.Errorf("nuc1's containers after a refused restore: %+v", cs)
			}
			if cs, _ := e.world.Containers("nuc2"); len(cs) != 0 {
				t.Errorf("nuc2 has containers after a refused restore: %+v", cs)
			}
		})
	}
}

func timelineKinds(in instanceView) string {
	var kinds []string
	for _, ev := range in.Timeline {
		kinds = append(kinds, ev.Kind)
	}
	return strings.Join(kinds, " ")
}

// The disaster-recovery drill of docs/disaster-recovery.md: the provisioner's data dir and
// the instance's host are lost; a new provisioner, given only the master key and the
// bucket, restores its database from the latest dump and brings the instance back on a
// fresh host, with its URL, login and encryption key.
func TestDisasterRecoveryFromTheBucketAndTheMasterKeyAlone(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	e := newE2E(t, e2eOptions{env: s3Env(t, cfg)})
	e.start()
	h1 := e.addHost("nuc1", 10)
	e.purchase("cus_dr", "starter")
	in := e.waitInstance("cus_dr", "active", 60*time.Second)
	password := passwordIn(t, e.emailsTo("cus_dr@example.com")[0])
	testlog.Secret(t, password)
	e.mustAPI("POST", "/v1/instances/"+in.ID+"/backup", e2eAdminKey, nil, http.StatusAccepted, nil)
	b := e.waitBackup(in.ID, "manual", "uploaded")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"provisioner", "db", "dump"}, mapEnv(e.env), &out, io.Discard); err != nil {
		t.Fatalf("db dump: %v", err)
	}

	// The disaster: nuc1's VM is gone, and so is the provisioner's data dir.
	e.world.Proxmox.UpdateVM(h1.Node, h1.VMID, func(vm *proxmoxtest.VM) { vm.Running, vm.AgentRunning = false, false })
	fresh := map[string]string{}
	for k, v := range e.env {
		fresh[k] = v
	}
	dir := t.TempDir()
	fresh["PROVISIONER_DATA_DIR"] = dir
	fresh["PROVISIONER_DATABASE_URL"] = filepath.Join(dir, "provisioner.db")
	out.Reset()
	if err := run(context.Background(), []string{"provisioner", "db", "restore", "--latest"}, mapEnv(fresh), &out, io.Discard); err != nil {
		t.Fatalf("db restore: %v", err)
	}
	dr := &e2e{t: t, world: e.world, stripe: e.stripe, smtp: e.smtp, env: fresh}
	dr.start()
	dr.addHost("nuc3", 10)
	dr.mustAPI("POST", "/v1/instances/"+in.ID+"/restore", e2eAdminKey, map[string]any{"backup_id": b.ID, "host": "nuc3"}, http.StatusAccepted, nil)
	back := dr.waitEvents(in.ID, "move_done", 1, 120*time.Second)
	if *back.Host != "nuc3" || back.Status != "active" || back.URL != in.URL {
		t.Fatalf("after the recovery: %+v", back)
	}
	if err := dr.login(back, "cus_dr@example.com", password); err != nil {
		t.Errorf("the customer's password does not log in on the fresh host: %v", err)
	}
	h3, _ := e.world.Host("nuc3")
	if records := e.world.Cloudflare.Records(e.world.CloudflareZoneID); len(records) != 1 || records[0].Content != h3.PublicIP {
		t.Errorf("DNS records after the recovery = %+v, want one → %s", records, h3.PublicIP)
	}
}

// An unreachable bucket: the upload is retried, the operator is told, the archive stays on
// its host, and once the bucket answers again the backup is uploaded.
func TestAnUnreachableBucketIsRetriedAlertedAndLosesNothing(t *testing.T) {
	t.Parallel()
	faults, cfg := objstoretest.NewFaults(t, objstoretest.Config(t))
	env := s3Env(t, cfg)
	env["PROVISIONER_STEP_ALERT_AFTER"] = "2s" // the operator's setting: tell me after 2 s
	e := newE2E(t, e2eOptions{env: env})
	e.start()
	e.addHost("nuc1", 10)
	e.purchase("cus_down", "starter")
	in := e.waitInstance("cus_down", "active", 60*time.Second)

	faults.Inject(1_000_000, objstoretest.InternalError, nil) // every request, until cleared
	e.mustAPI("POST", "/v1/instances/"+in.ID+"/backup", e2eAdminKey, nil, http.StatusAccepted, nil)
	var b backupView
	waitFor(t, 60*time.Second, "the failing upload to alert the operator", func() bool {
		for _, m := range e.emailsTo(e2eOperator) {
			if strings.Contains(m.Subject, "Backup upload failing") {
				return true
			}
		}
		return false
	})
	for _, x := range e.backups(in.ID) {
		if x.Reason == "manual" {
			b = x
		}
	}
	if b.Status != "local" || !b.OnHost || b.Error == "" {
		t.Fatalf("while the bucket is down the backup is %+v; want local, on the host, with the error", b)
	}
	if _, err := os.Stat(b.Path); err != nil {
		t.Fatalf("the archive is not on the host while the bucket is down: %v", err)
	}
	if faults.Injected() < 2 {
		t.Errorf("the bucket saw %d failed requests; the upload was not retried", faults.Injected())
	}
	faults.Clear()
	e.waitBackup(in.ID, "manual", "uploaded")
}

// A move interrupted by a restart resumes to exactly one container and one DNS record per
// instance; `hosts evacuate` empties a host through the same moves.
func TestAMoveResumesAfterARestartAndAHostIsEvacuated(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{env: s3Env(t, objstoretest.Config(t))})
	e.start()
	e.addHost("nuc1", 10)
	var ins []instanceView
	var passwords []string
	for _, c := range []string{"cus_ev1", "cus_ev2"} {
		e.purchase(c, "starter")
		ins = append(ins, e.waitInstance(c, "active", 60*time.Second))
		passwords = append(passwords, passwordIn(t, e.emailsTo(c + "@example.com")[0]))
	}
	testlog.Secret(t, passwords...)
	e.addHost("nuc2", 10)

	// The process stops while the move has taken its archive.
	e.mustAPI("POST", "/v1/instances/"+ins[0].ID+"/move", e2eAdminKey, map[string]any{"host": "nuc2"}, http.StatusAccepted, nil)
	waitFor(t, 60*time.Second, "the move's archive", func() bool {
		return strings.Contains(timelineKinds(e.instance(ins[0].ID)), "move_requested backup")
	})
	if err := e.svc.Stop(); err != nil {
		t.Fatalf("stopping mid-move: %v", err)
	}
	e.start()
	moved := e.waitEvents(ins[0].ID, "move_done", 1, 120*time.Second)
	if *moved.Host != "nuc2" {
		t.Fatalf("after the restart the instance is on %s", *moved.Host)
	}

	// Evacuate nuc1: the other instance follows.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"provisioner", "hosts", "evacuate", "nuc1"}, mapEnv(e.env), &out, io.Discard); err != nil {
		t.Fatalf("hosts evacuate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "[1/1] "+ins[1].Slug+": moved from nuc1 to nuc2") || !strings.Contains(out.String(), "unavailable for") {
		t.Errorf("evacuate printed:\n%s", out.String())
	}
	if cs, _ := e.world.Containers("nuc1"); len(cs) != 0 {
		t.Errorf("nuc1 still runs %d container(s)", len(cs))
	}
	cs, _ := e.world.Containers("nuc2")
	records := e.world.Cloudflare.Records(e.world.CloudflareZoneID)
	if len(cs) != 2 || len(records) != 2 {
		t.Fatalf("nuc2 runs %d containers and the zone has %d records; want 2 and 2", len(cs), len(records))
	}
	for i, in := range ins {
		in = e.instance(in.ID)
		if err := e.login(in, in.ClientID+"@example.com", passwords[i]); err != nil {
			t.Errorf("%s does not log in on nuc2: %v", in.Slug, err)
		}
	}
}
