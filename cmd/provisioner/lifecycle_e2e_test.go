package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"gorm.io/gorm"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns"
	"github.com/n8n-provisioner/n8n-provisioner/internal/dns/cloudflaretest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail/smtptest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// The lifecycle's acceptance tests: every path an instance takes after it first runs,
// driven end to end through run against the sandbox, on SQLite and PostgreSQL. The clock
// is real: grace and retention are a few seconds and the sweep runs every 200 ms, so a
// test waits for the service to act on its own, as it would in production over days. The
// only timing the tests rely on is that a job finishes within those few seconds; every
// "it waited long enough" check is a lower bound on the service's own timestamps.

const (
	lcImageBad  = "docker.n8n.io/n8nio/n8n:2.9.0" // made unhealthy on the host in the upgrade test
	lcImageGood = "docker.n8n.io/n8nio/n8n:2.9.1"
	lcPlanImage = "docker.n8n.io/n8nio/n8n:2.8.4" // e2ePlans' image

	subjSuspended = "Your n8n instance has been suspended"
	subjPastDue   = "Action needed: update your payment method"
	subjResumed   = "Your n8n instance is back"
	subjDeleted   = "Your n8n instance has been deleted"
	subjCreds     = "Your n8n instance is ready"
)

// lifecycle is one test's world: the e2e harness with the provisioner running, one
// sandbox host, and a read-only view of the service's database.
type lifecycle struct {
	*e2e
	host  sandbox.Host
	store *instances.Store
	db    *gorm.DB
	keys  *secret.Keyring
}

// lcEvent and lcView are GET /v1/instances/{id} with the timeline's times.
type lcEvent struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
}

type lcView struct {
	ID       string    `json:"id"`
	Slug     string    `json:"slug"`
	URL      string    `json:"url"`
	Host     *string   `json:"host"`
	Plan     string    `json:"plan"`
	Status   string    `json:"status"`
	Step     string    `json:"step"`
	Timeline []lcEvent `json:"timeline"`
}

// event returns the first timeline entry of kind.
func (v lcView) event(kind string) (lcEvent, bool) {
	for _, ev := range v.Timeline {
		if ev.Kind == kind {
			return ev, true
		}
	}
	return lcEvent{}, false
}

func (v lcView) kinds() string {
	var ks []string
	for _, ev := range v.Timeline {
		ks = append(ks, ev.Kind+": "+ev.Message)
	}
	return strings.Join(ks, "\n")
}

// newLifecycle starts the provisioner with env over the harness's defaults (the sweep
// every 200 ms) and registers host "nuc"; hostEnv are fake-docker knobs set on the host
// before anything runs there.
func newLifecycle(t *testing.T, d database.Dialect, env map[string]string, hostEnv ...string) *lifecycle {
	t.Helper()
	all := map[string]string{"PROVISIONER_SWEEP_INTERVAL": "200ms"}
	for k, v := range env {
		all[k] = v
	}
	e := newE2E(t, e2eOptions{dialect: d, env: all})
	e.start()
	l := &lifecycle{e2e: e, host: e.addHost("nuc", 10)}
	if len(hostEnv) > 0 {
		if err := e.world.SetHostEnv("nuc", hostEnv...); err != nil {
			t.Fatal(err)
		}
	}
	db, err := database.Open(context.Background(), e.env["PROVISIONER_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l.db, l.store = db.Gorm, instances.NewStore(db.Gorm, nil)
	key, err := secret.ParseKey(e.env["PROVISIONER_MASTER_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	if l.keys, err = secret.NewKeyring(key); err != nil {
		t.Fatal(err)
	}
	return l
}

// buy runs a purchase of the starter plan for client and waits for its running instance;
// it returns the Stripe subscription id, the instance and the emailed owner password.
func (l *lifecycle) buy(client string) (sub string, in lcView, password string) {
	l.t.Helper()
	sub = l.purchase(client, "starter")
	id := l.waitInstance(client, "active", 60*time.Second).ID
	mails := l.mailsTo(client+"@example.com", subjCreds)
	if len(mails) != 1 {
		l.t.Fatalf("%d credentials emails, want 1", len(mails))
	}
	password = passwordIn(l.t, mails[0])
	testlog.Secret(l.t, password)
	return sub, l.view(id), password
}

func (l *lifecycle) view(id string) lcView {
	l.t.Helper()
	var v lcView
	l.mustAPI("GET", "/v1/instances/"+id, e2ePortalKey, nil, http.StatusOK, &v)
	return v
}

// waitStatus waits until instance id is in status; it fails at once when the instance
// reaches one of the statuses in past (it went by the state the test wanted to see).
func (l *lifecycle) waitStatus(id, status string, timeout time.Duration, past ...string) lcView {
	l.t.Helper()
	var v lcView
	waitFor(l.t, timeout, "instance "+id+" to be "+status, func() bool {
		v = l.view(id)
		if slices.Contains(past, v.Status) {
			l.t.Fatalf("instance is %s, already past %s: the machine is too slow for this test's durations\n%s", v.Status, status, v.kinds())
		}
		return v.Status == status
	})
	return v
}

// waitEvent waits until instance id's timeline has an entry of kind.
func (l *lifecycle) waitEvent(id, kind string, timeout time.Duration) lcView {
	l.t.Helper()
	var v lcView
	waitFor(l.t, timeout, "a "+kind+" entry on instance "+id+"'s timeline", func() bool {
		v = l.view(id)
		_, ok := v.event(kind)
		return ok
	})
	return v
}

// container returns the host's container of slug, as the fake docker's state has it.
func (l *lifecycle) container(slug string) (sandbox.Container, bool) {
	l.t.Helper()
	cs, err := l.world.Containers(l.host.Name)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, c := range cs {
		if c.Slug == slug {
			return c, true
		}
	}
	return sandbox.Container{}, false
}

func (l *lifecycle) mustContainer(slug string) sandbox.Container {
	l.t.Helper()
	c, ok := l.container(slug)
	if !ok {
		l.t.Fatalf("no container for %s on %s", slug, l.host.Name)
	}
	return c
}

// record returns the zone's A record for slug.
func (l *lifecycle) record(slug string) (cloudflaretest.Record, bool) {
	for _, r := range l.world.Cloudflare.Records(l.world.CloudflareZoneID) {
		if r.Name == l.world.FQDN(slug) {
			return r, true
		}
	}
	return cloudflaretest.Record{}, false
}

// mailsTo returns the distinct messages to addr whose subject starts with prefix.
func (l *lifecycle) mailsTo(addr, prefix string) []smtptest.Message {
	var out []smtptest.Message
	for _, m := range l.emailsTo(addr) {
		if strings.HasPrefix(m.Subject, prefix) {
			out = append(out, m)
		}
	}
	return out
}

// waitMail waits for one message to addr whose subject starts with prefix.
func (l *lifecycle) waitMail(addr, prefix string) smtptest.Message {
	l.t.Helper()
	var ms []smtptest.Message
	waitFor(l.t, 30*time.Second, "an email "+prefix+" to "+addr, func() bool {
		ms = l.mailsTo(addr, prefix)
		return len(ms) > 0
	})
	return ms[0]
}

// lcAgent returns a host agent that runs n8nctl on the sandbox's hosts through its
// Proxmox, as the provisioner does: the tests use it to change a host behind the
// database's back.
func lcAgent(t *testing.T, w *sandbox.World) *hosts.Agent {
	t.Helper()
	pve, err := hosts.NewProxmox(hosts.ProxmoxConfig{BaseURL: w.ProxmoxURL, TokenID: w.ProxmoxTokenID,
		TokenSecret: w.ProxmoxTokenSecret, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := hosts.NewAgent(hosts.AgentConfig{Exec: pve})
	if err != nil {
		t.Fatal(err)
	}
	return agent
}

// runCLI runs `provisioner args...` through run with the service's environment.
func (l *lifecycle) runCLI(args ...string) (string, error) {
	l.t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"provisioner"}, args...), mapEnv(l.env), &out, &errb)
	return out.String(), err
}

// archiveEncryptionKey returns the N8N encryption key that the backup archive's n8n
// settings file (data/config) holds.
// archiveEncryptionKey opens the archive at path with its age identity and returns the
// n8n encryption key in its data/config.
func archiveEncryptionKey(t *testing.T, path, identity string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id, err := age.ParseX25519Identity(identity)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := age.Decrypt(f, id)
	if err != nil {
		t.Fatalf("%s does not decrypt with its sealed key: %v", path, err)
	}
	zr, err := gzip.NewReader(plain)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s holds no data/config", path)
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "data/config" {
			continue
		}
		var settings struct {
			EncryptionKey string `json:"encryptionKey"`
		}
		if err := json.NewDecoder(tr).Decode(&settings); err != nil || settings.EncryptionKey == "" {
			t.Fatalf("%s: data/config without an encryption key (%v)", path, err)
		}
		return settings.EncryptionKey
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestLifecycleCancelSuspendsThenDeletesAfterRetention(t *testing.T) {
	t.Parallel()
	const retention = 5 * time.Second
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			l := newLifecycle(t, d, map[string]string{"PROVISIONER_RETENTION": retention.String()})
			sub, in, _ := l.buy("cus_cancel")
			customer := "cus_cancel@example.com"

			canceledAt := time.Now()
			ev, err := l.stripe.Cancel(sub)
			if err != nil {
				t.Fatal(err)
			}
			l.deliver(ev)

			// Suspended at once: stopped, and kept stopped across a host reboot; the
			// customer can still be reached at the same name.
			v := l.waitStatus(in.ID, "suspended", 30*time.Second, "deleting", "deleted")
			c := l.mustContainer(in.Slug)
			if c.Running || c.RestartPolicy != "no" {
				t.Errorf("suspended container: running %t, restart policy %q; want stopped with policy no", c.Running, c.RestartPolicy)
			}
			if r, ok := l.record(in.Slug); !ok || r.Content != l.host.PublicIP {
				t.Errorf("the DNS record of a suspended instance = %+v, %t; want it kept", r, ok)
			}
			if ev, ok := v.event("canceled"); !ok || !strings.Contains(ev.Message, "deleted on") {
				t.Errorf("no canceled entry announcing the deletion date:\n%s", v.kinds())
			}
			if m := l.waitMail(customer, subjSuspended); !strings.Contains(m.Text, in.URL) || !strings.Contains(m.Text, "https://portal.example.com") {
				t.Errorf("the suspension email does not name the instance and the portal to reactivate it from:\n%s", m.Text)
			}

			// Retention passes: a final backup, then everything is removed.
			v = l.waitStatus(in.ID, "deleted", 60*time.Second)
			deleted, _ := v.event("deleted")
			earliest := canceledAt.Truncate(time.Second).Add(retention)
			if deleted.At.Before(earliest) {
				t.Errorf("deleted at %s, before the retention ended (%s)", deleted.At, earliest)
			}
			suspended, _ := v.event("suspended")
			backedUp, ok := v.event("backup")
			if !ok || backedUp.At.Before(suspended.At) || deleted.At.Before(backedUp.At) {
				t.Errorf("timeline order: want suspended, backup, deleted:\n%s", v.kinds())
			}
			if _, ok := l.container(in.Slug); ok {
				t.Error("the container is still on the host after the delete")
			}
			if r, ok := l.record(in.Slug); ok {
				t.Errorf("the DNS record %+v is still there after the delete", r)
			}
			l.waitMail(customer, subjDeleted)

			// The final backup outlives the instance, with the key to its credentials.
			backups, err := l.store.Backups(context.Background(), in.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(backups) != 1 || backups[0].Reason != "final" {
				t.Fatalf("backups = %+v, want one final backup", backups)
			}
			b := backups[0]
			if want := filepath.Join("hosts", "nuc", "backups", in.Slug) + string(filepath.Separator); !strings.Contains(b.Path, want) {
				t.Errorf("backup path %s is not under the host's backup dir (…/%s)", b.Path, want)
			}
			if got := fileSHA256(t, b.Path); got != b.SHA256 {
				t.Errorf("the archive's sha256 is %s, the backup row says %s", got, b.SHA256)
			}
			if b.ExpiresAt == nil || !b.ExpiresAt.After(b.CreatedAt) {
				t.Errorf("backup expires at %v, want retention after %s", b.ExpiresAt, b.CreatedAt)
			}
			row, err := l.store.Get(context.Background(), in.ID)
			if err != nil {
				t.Fatal(err)
			}
			if b.EncryptionKeySealed == "" || b.EncryptionKeySealed != row.EncryptionKeySealed {
				t.Fatal("the backup row does not keep the instance's sealed encryption key")
			}
			key, err := l.keys.Open(b.EncryptionKeySealed, "instance/"+in.ID+"/encryption_key")
			if err != nil {
				t.Fatalf("the backup's sealed key does not open: %v", err)
			}
			dataKey, err := l.keys.Open(b.DataKeySealed, "backup/"+b.ID+"/data_key")
			if err != nil {
				t.Fatalf("the backup's sealed archive key does not open: %v", err)
			}
			testlog.Secret(t, key, dataKey)
			if archiveEncryptionKey(t, b.Path, dataKey) != key {
				t.Error("the sealed key is not the key the archived n8n data was encrypted with")
			}
			out, err := l.runCLI("instances", "show", in.ID)
			if err != nil || !strings.Contains(out, b.ID) || !strings.Contains(out, "final") {
				t.Errorf("instances show does not list the final backup (%v):\n%s", err, out)
			}
		})
	}
}

func TestLifecyclePastDueGraceSuspendsAndPaymentResumes(t *testing.T) {
	t.Parallel()
	// The grace counts from the event's whole second, so it can be a second short; it must
	// outlast delivering, processing and mailing the warning on a loaded CI machine.
	const grace = 8 * time.Second
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			l := newLifecycle(t, d, map[string]string{"PROVISIONER_PAST_DUE_GRACE": grace.String(), "PROVISIONER_HEALTH_TIMEOUT": "1s"})
			sub, in, password := l.buy("cus_late")
			customer := "cus_late@example.com"

			failedAt := time.Now()
			events, err := l.stripe.PaymentFailed(sub)
			if err != nil {
				t.Fatal(err)
			}
			l.deliver(events...)
			l.waitMail(customer, subjPastDue)
			// The warning is mailed just before its timeline entry is stored.
			v := l.waitEvent(in.ID, "past_due", 30*time.Second)
			if v.Status != "active" {
				t.Errorf("right after the warning the instance is %s, want active until the grace ends", v.Status)
			}

			// The grace ends: suspended for billing by the sweep.
			v = l.waitStatus(in.ID, "suspended", 30*time.Second)
			suspended, _ := v.event("suspended")
			if earliest := failedAt.Truncate(time.Second).Add(grace); suspended.At.Before(earliest) {
				t.Errorf("suspended at %s, before the grace ended (%s)", suspended.At, earliest)
			}
			if !strings.Contains(suspended.Message, "(billing)") {
				t.Errorf("suspension reason: %q, want billing", suspended.Message)
			}
			if c := l.mustContainer(in.Slug); c.Running || c.RestartPolicy != "no" {
				t.Errorf("suspended container: running %t, restart policy %q", c.Running, c.RestartPolicy)
			}
			l.waitMail(customer, subjSuspended)

			// Payment arrives while n8n does not come up: the instance is not active
			// before it is healthy.
			l.world.N8n(in.Slug).SetReady(false)
			events, err = l.stripe.PaymentSucceeded(sub)
			if err != nil {
				t.Fatal(err)
			}
			l.deliver(events...)
			waitFor(t, 30*time.Second, "a failed resume while n8n is not ready", func() bool {
				for _, ev := range l.view(in.ID).Timeline {
					if ev.Kind == "retry" && strings.HasPrefix(ev.Message, "resume: ") {
						return true
					}
				}
				return false
			})
			if v := l.view(in.ID); v.Status != "suspended" {
				t.Errorf("the instance is %s while n8n is not ready, want still suspended", v.Status)
			}
			l.world.N8n(in.Slug).SetReady(true)
			v = l.waitStatus(in.ID, "active", 30*time.Second)
			if ev, ok := v.event("resumed"); !ok || !strings.Contains(ev.Message, "healthy") {
				t.Errorf("no resumed-and-healthy entry:\n%s", v.kinds())
			}
			if c := l.mustContainer(in.Slug); !c.Running || c.RestartPolicy != "unless-stopped" {
				t.Errorf("resumed container: running %t, restart policy %q; want running, unless-stopped", c.Running, c.RestartPolicy)
			}
			l.waitMail(customer, subjResumed)
			if err := l.login(instanceView{Slug: in.Slug, Host: in.Host}, customer, password); err != nil {
				t.Errorf("the customer cannot log in after the resume: %v", err)
			}
		})
	}
}

func TestLifecycleManualSuspensionIsNotLiftedByPayment(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			l := newLifecycle(t, d, nil)
			sub, in, _ := l.buy("cus_abuse")

			if code, body := l.api("POST", "/v1/instances/"+in.ID+"/suspend", e2ePortalKey, nil); code != http.StatusForbidden {
				t.Errorf("the portal key suspends: %d %s, want 403", code, body)
			}
			l.mustAPI("POST", "/v1/instances/"+in.ID+"/suspend", e2eAdminKey, nil, http.StatusAccepted, nil)
			v := l.waitStatus(in.ID, "suspended", 30*time.Second)
			if ev, _ := v.event("suspended"); !strings.Contains(ev.Message, "(manual)") {
				t.Errorf("suspension reason: %q, want manual", ev.Message)
			}
			if m := l.waitMail("cus_abuse@example.com", subjSuspended); !strings.Contains(m.Text, "our team suspended it") {
				t.Errorf("the manual suspension email does not say why:\n%s", m.Text)
			}

			events, err := l.stripe.PaymentSucceeded(sub)
			if err != nil {
				t.Fatal(err)
			}
			l.deliver(events...)
			v = l.waitEvent(in.ID, "resume_refused", 30*time.Second)
			if v.Status != "suspended" {
				t.Errorf("after a payment the manually suspended instance is %s", v.Status)
			}
			if c := l.mustContainer(in.Slug); c.Running || c.RestartPolicy != "no" {
				t.Errorf("after a payment the container runs %t with policy %q; want it stopped", c.Running, c.RestartPolicy)
			}

			l.mustAPI("POST", "/v1/instances/"+in.ID+"/resume", e2eAdminKey, nil, http.StatusAccepted, nil)
			v = l.waitStatus(in.ID, "active", 30*time.Second)
			if _, ok := v.event("resumed"); !ok {
				t.Errorf("no resumed entry:\n%s", v.kinds())
			}
			if c := l.mustContainer(in.Slug); !c.Running || c.RestartPolicy != "unless-stopped" {
				t.Errorf("resumed container: running %t, restart policy %q", c.Running, c.RestartPolicy)
			}
		})
	}
}

func TestLifecycleUpgradeRollsBackWhenUnhealthy(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			l := newLifecycle(t, d, map[string]string{"PROVISIONER_HEALTH_TIMEOUT": "1s"})
			_, in, password := l.buy("cus_upgrade")
			customer := "cus_upgrade@example.com"
			image := func() string {
				row, err := l.store.Get(context.Background(), in.ID)
				if err != nil {
					t.Fatal(err)
				}
				return row.N8nImage
			}

			if code, body := l.api("POST", "/v1/instances/"+in.ID+"/upgrade", e2eAdminKey, map[string]string{"image": "docker.n8n.io/n8nio/n8n:latest"}); code != http.StatusBadRequest {
				t.Errorf("upgrade to latest = %d %s, want 400", code, body)
			}

			if err := l.world.SetHostEnv("nuc", "FAKE_DOCKER_UNHEALTHY_IMAGE="+lcImageBad); err != nil {
				t.Fatal(err)
			}
			l.mustAPI("POST", "/v1/instances/"+in.ID+"/upgrade", e2eAdminKey, map[string]string{"image": lcImageBad}, http.StatusAccepted, nil)
			v := l.waitEvent(in.ID, "upgrade_rolled_back", 60*time.Second)
			if v.Status != "active" {
				t.Errorf("after the rollback the instance is %s, want active", v.Status)
			}
			if _, ok := v.event("upgraded"); ok {
				t.Errorf("an unhealthy upgrade is recorded as upgraded:\n%s", v.kinds())
			}
			if got := image(); got != lcPlanImage {
				t.Errorf("the database says image %s, want the old %s", got, lcPlanImage)
			}
			if c := l.mustContainer(in.Slug); !c.Running || c.Image != lcPlanImage || c.RestartPolicy != "unless-stopped" {
				t.Errorf("after the rollback the container = running %t, image %s, policy %q; want the old image running", c.Running, c.Image, c.RestartPolicy)
			}
			alert := l.waitMail(e2eOperator, "[n8n-provisioner] Upgrade rolled back")
			if !strings.Contains(alert.Text, in.Slug) || !strings.Contains(alert.Text, lcImageBad) {
				t.Errorf("the alert does not name the instance and the image:\n%s", alert.Text)
			}
			if err := l.login(instanceView{Slug: in.Slug, Host: in.Host}, customer, password); err != nil {
				t.Errorf("the customer cannot log in after the rollback: %v", err)
			}

			// A healthy image is kept.
			if err := l.world.SetHostEnv("nuc"); err != nil {
				t.Fatal(err)
			}
			l.mustAPI("POST", "/v1/instances/"+in.ID+"/upgrade", e2eAdminKey, map[string]string{"image": lcImageGood}, http.StatusAccepted, nil)
			v = l.waitEvent(in.ID, "upgraded", 60*time.Second)
			if v.Status != "active" || image() != lcImageGood {
				t.Errorf("after the upgrade: status %s, image %s; want active on %s", v.Status, image(), lcImageGood)
			}
			if c := l.mustContainer(in.Slug); !c.Running || c.Image != lcImageGood {
				t.Errorf("after the upgrade the container = running %t, image %s", c.Running, c.Image)
			}
			if err := l.login(instanceView{Slug: in.Slug, Host: in.Host}, customer, password); err != nil {
				t.Errorf("the customer cannot log in after the upgrade: %v", err)
			}
			// The archive the upgrade took first is recorded like any other, encrypted.
			backups, err := l.store.Backups(context.Background(), in.ID)
			if err != nil {
				t.Fatal(err)
			}
			var pre []instances.Backup
			for _, b := range backups {
				if b.Reason == "pre-upgrade" {
					pre = append(pre, b)
				}
			}
			if len(pre) != 1 || pre[0].DataKeySealed == "" || fileSHA256(t, pre[0].Path) != pre[0].SHA256 {
				t.Errorf("pre-upgrade backups = %+v, want the one encrypted archive the healthy upgrade took", pre)
			}
		})
	}
}

func TestLifecyclePlanChangeResizesTheContainer(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			l := newLifecycle(t, d, nil)
			sub, in, _ := l.buy("cus_grow")
			before := l.mustContainer(in.Slug)

			ev, err := l.stripe.ChangePrice(sub, proPrice)
			if err != nil {
				t.Fatal(err)
			}
			l.deliver(ev)
			v := l.waitEvent(in.ID, "resized", 30*time.Second)
			if v.Plan != "pro" || v.Status != "active" {
				t.Errorf("after the plan change: plan %s, status %s; want pro, active", v.Plan, v.Status)
			}
			c := l.mustContainer(in.Slug)
			if c.CPUs != 1 || c.MemoryMB != 2048 || c.MemorySwapMB != 2048 {
				t.Errorf("container caps = %v CPU, %d MiB (swap %d); want the pro plan's 1 CPU, 2048 MiB", c.CPUs, c.MemoryMB, c.MemorySwapMB)
			}
			if !c.Running || c.ID != before.ID {
				t.Errorf("the resize replaced or stopped the container: %+v, was %s", c, before.ID)
			}
		})
	}
}

func TestLifecycleDoctorFindsAndFixesDrift(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			l := newLifecycle(t, d, nil)
			_, in, _ := l.buy("cus_drift")
			if out, err := l.runCLI("doctor"); err != nil || !strings.Contains(out, "No drift") {
				t.Fatalf("doctor on a clean world: %v\n%s", err, out)
			}

			// Behind the database's back: the instance's container stopped and its record
			// deleted; a container and a record that no instance owns.
			agent := lcAgent(t, l.world)
			if _, err := agent.Run(ctx, l.host.Node, l.host.VMID, "suspend", in.Slug, nil); err != nil {
				t.Fatal(err)
			}
			cf, err := dns.New(dns.Config{APIToken: l.world.CloudflareToken, ZoneID: l.world.CloudflareZoneID, BaseURL: l.world.CloudflareURL})
			if err != nil {
				t.Fatal(err)
			}
			if err := cf.Delete(ctx, l.world.FQDN(in.Slug)); err != nil {
				t.Fatal(err)
			}
			key, _ := n8n.GenerateEncryptionKey()
			guard, _ := n8n.SetupGuardHTPasswd("provisioner", rand.Text())
			if _, err := agent.Run(ctx, l.host.Node, l.host.VMID, "provision", "ghost", map[string]string{
				"IMAGE": lcPlanImage, "CPUS": "0.5", "MEMORY_MB": "1024", "FQDN": l.world.FQDN("ghost"),
				"N8N_ENCRYPTION_KEY": key, "SETUP_AUTH_USERS": guard,
			}); err != nil {
				t.Fatal(err)
			}
			l.world.Cloudflare.AddRecord(l.world.CloudflareZoneID, cloudflaretest.Record{Type: "A", Name: l.world.FQDN("stray"), Content: "203.0.113.99"})

			doctor := func(args ...string) (instances.Report, error) {
				t.Helper()
				out, err := l.runCLI(append([]string{"doctor", "--json"}, args...)...)
				var r instances.Report
				if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
					t.Fatalf("doctor printed no report (%v, %v):\n%s", err, jerr, out)
				}
				return r, err
			}
			type drift struct{ kind, slug string }
			findings := func(r instances.Report) map[drift]instances.Finding {
				m := map[drift]instances.Finding{}
				for _, f := range r.Findings {
					m[drift{f.Kind, f.Slug}] = f
				}
				return m
			}
			want := []drift{
				{instances.DriftStopped, in.Slug}, {instances.DriftMissingDNS, in.Slug},
				{instances.DriftOrphanContainer, "ghost"}, {instances.DriftOrphanDNS, "stray"},
			}

			r, err := doctor()
			if err == nil || !strings.Contains(err.Error(), "drift") {
				t.Errorf("doctor with drift: err = %v, want a non-zero exit", err)
			}
			got := findings(r)
			if len(r.Findings) != len(want) {
				t.Errorf("findings = %+v, want %v", r.Findings, want)
			}
			for _, k := range want {
				if f, ok := got[k]; !ok || f.Fixed {
					t.Errorf("finding %v = %+v, %t; want it reported, not fixed", k, f, ok)
				}
			}
			if c := l.mustContainer(in.Slug); c.Running {
				t.Error("doctor without --fix started the container")
			}

			r, err = doctor("--fix")
			if err == nil {
				t.Error("doctor --fix exits 0 with orphans left")
			}
			got = findings(r)
			for _, k := range want {
				fixable := k.kind == instances.DriftStopped || k.kind == instances.DriftMissingDNS
				if f := got[k]; f.Fixed != fixable || f.FixError != "" {
					t.Errorf("after --fix, finding %v = %+v; want fixed %t", k, f, fixable)
				}
			}
			if c := l.mustContainer(in.Slug); !c.Running || c.RestartPolicy != "unless-stopped" {
				t.Errorf("after --fix the container runs %t with policy %q", c.Running, c.RestartPolicy)
			}
			if rec, ok := l.record(in.Slug); !ok || rec.Content != l.host.PublicIP {
				t.Errorf("after --fix the record = %+v, %t; want it pointing at %s", rec, ok, l.host.PublicIP)
			}
			if _, ok := l.container("ghost"); !ok {
				t.Error("--fix removed the orphan container")
			}
			if _, ok := l.record("stray"); !ok {
				t.Error("--fix removed the orphan record")
			}
			if v := l.view(in.ID); strings.Count(v.kinds(), "doctor: doctor repaired") != 2 {
				t.Errorf("the repairs are not on the timeline:\n%s", v.kinds())
			}

			r, _ = doctor()
			got = findings(r)
			if _, ok := got[drift{instances.DriftOrphanDNS, "stray"}]; len(r.Findings) != 2 || !ok || got[drift{instances.DriftOrphanContainer, "ghost"}].Kind == "" {
				t.Errorf("after --fix the doctor finds %+v, want only the two orphans", r.Findings)
			}
			for _, f := range r.Findings {
				if f.Slug == in.Slug {
					t.Errorf("the repaired instance is still reported: %+v", f)
				}
			}
		})
	}
}

func TestLifecycleRestartFromThePortal(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			l := newLifecycle(t, d, nil)
			_, in, _ := l.buy("cus_restart")
			before := l.mustContainer(in.Slug)

			l.mustAPI("POST", "/v1/instances/"+in.ID+"/restart", e2ePortalKey, nil, http.StatusAccepted, nil)
			v := l.waitEvent(in.ID, "restarted", 30*time.Second)
			if v.Status != "active" {
				t.Errorf("after the restart the instance is %s", v.Status)
			}
			c := l.mustContainer(in.Slug)
			if !c.Running || !c.StartedAt.After(before.StartedAt) || c.ID != before.ID {
				t.Errorf("container after the restart: running %t, started %s (was %s), id %s (was %s); want the same container started again",
					c.Running, c.StartedAt, before.StartedAt, c.ID, before.ID)
			}
		})
	}
}

// An instance whose provisioning failed and whose subscription is then canceled is due
// for deletion like a suspended one (Reconcile sets its delete_after; the sweep lists
// failed instances among the expired).
func TestLifecycleCanceledFailedInstanceIsDeletedAfterRetention(t *testing.T) {
	t.Parallel()
	const retention = 2 * time.Second
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			// Caps that do not take effect fail provisioning at once (never retried).
			l := newLifecycle(t, d, map[string]string{"PROVISIONER_RETENTION": retention.String()}, "FAKE_DOCKER_IGNORE_LIMITS=1")
			sub := l.purchase("cus_failed", "starter")
			in := l.waitInstance("cus_failed", "failed", 60*time.Second)

			ev, err := l.stripe.Cancel(sub)
			if err != nil {
				t.Fatal(err)
			}
			l.deliver(ev)
			l.waitEvent(in.ID, "canceled", 30*time.Second)
			// Retention is 2 s and the sweep runs every 200 ms: 10 s is plenty.
			deadline := time.Now().Add(10 * time.Second)
			for v := l.view(in.ID); v.Status != "deleted"; v = l.view(in.ID) {
				if time.Now().After(deadline) {
					t.Fatalf("BUG: a canceled failed instance is still %s 10 s after its retention ended "+
						"(instances sweepWorker.Work returns when no suspended instance is due, before it looks at failed ones):\n%s", v.Status, v.kinds())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// A delete whose job gave up (here: the host's docker refuses to remove the container,
// after the final backup was taken) leaves the instance deleting. Once the host is
// repaired the operator must be able to finish it: deleting is a state the delete job
// itself resumes from.
func TestLifecycleGivenUpDeleteCanBeFinished(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			// The delete is given up once it has failed for the step deadline.
			l := newLifecycle(t, d, map[string]string{"PROVISIONER_STEP_DEADLINE": "5s"})
			_, in, _ := l.buy("cus_stuck")

			if err := l.world.SetHostEnv("nuc", "FAKE_DOCKER_FAIL=rm"); err != nil {
				t.Fatal(err)
			}
			l.mustAPI("DELETE", "/v1/instances/"+in.ID, e2eAdminKey, nil, http.StatusAccepted, nil)
			v := l.waitEvent(in.ID, "action_failed", 60*time.Second)
			if v.Status != "deleting" {
				t.Fatalf("after the delete gave up the instance is %s, want deleting", v.Status)
			}
			l.waitMail(e2eOperator, "[n8n-provisioner] Action failed")
			// The job is finalized (cancelled) just after it records its failure; until
			// then a new identical job would be a duplicate of it.
			waitFor(t, 10*time.Second, "the given-up delete job to be finalized", func() bool {
				var open int64
				if err := l.db.Raw("SELECT COUNT(*) FROM river_job WHERE kind = ? AND finalized_at IS NULL", instances.ActionArgs{}.Kind()).Scan(&open).Error; err != nil {
					t.Fatal(err)
				}
				return open == 0
			})

			if err := l.world.SetHostEnv("nuc"); err != nil {
				t.Fatal(err)
			}
			if code, body := l.api("DELETE", "/v1/instances/"+in.ID, e2eAdminKey, nil); code != http.StatusAccepted {
				t.Fatalf("BUG: the operator cannot finish a delete that gave up: DELETE = %d %s, want 202 "+
					"(instances.Service.Delete accepts only active, suspended and failed; nothing else re-enqueues a deleting instance)", code, body)
			}
			l.waitStatus(in.ID, "deleted", 30*time.Second)
			if _, ok := l.container(in.Slug); ok {
				t.Error("the container is still on the host after the delete")
			}
			if backups, err := l.store.Backups(context.Background(), in.ID); err != nil || len(backups) != 1 {
				t.Errorf("backups = %+v, %v; want the one final backup, not a second", backups, err)
			}
		})
	}
}
