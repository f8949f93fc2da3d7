package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
)

// timelineHas reports whether in's timeline has an event of kind whose message contains text.
func timelineHas(in instanceView, kind, text string) bool {
	for _, ev := range in.Timeline {
		if ev.Kind == kind && strings.Contains(ev.Message, text) {
			return true
		}
	}
	return false
}

// waitTimeline waits until client's first instance has an event of kind mentioning text.
func (e *e2e) waitTimeline(client, kind, text string, timeout time.Duration) instanceView {
	e.t.Helper()
	var got instanceView
	waitFor(e.t, timeout, fmt.Sprintf("a %q event mentioning %q", kind, text), func() bool {
		list := e.instances(client)
		if len(list) == 0 {
			return false
		}
		got = e.instance(list[0].ID)
		return timelineHas(got, kind, text)
	})
	return got
}

// assertOneOfEverything checks a finished purchase left one instance, record, container
// and email.
func (e *e2e) assertOneOfEverything(client, host string) {
	e.t.Helper()
	if list := e.instances(client); len(list) != 1 {
		e.t.Errorf("%d instances, want 1", len(list))
	}
	if records := e.world.Cloudflare.Records(e.world.CloudflareZoneID); len(records) != 1 {
		e.t.Errorf("%d DNS records, want 1: %+v", len(records), records)
	}
	if cs, _ := e.world.Containers(host); len(cs) != 1 || !cs[0].Running {
		e.t.Errorf("containers = %+v, want one running", cs)
	}
	if mails := e.emailsTo(client + "@example.com"); len(mails) != 1 {
		e.t.Errorf("%d emails, want 1", len(mails))
	}
}

// TestTransientFaultsAreRetriedThenCompleted injects each outside failure the saga meets
// and checks the purchase still ends with exactly one of everything once it clears. A
// failure is a failed attempt on the timeline ("retry"); what is on its way (a guest agent
// that does not answer yet) is waited for ("waiting") without spending one.
func TestTransientFaultsAreRetriedThenCompleted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		env        map[string]string
		inject     func(e *e2e, h sandbox.Host) // before the purchase
		kind, text string                       // a timeline entry that appears while failing
		clear      func(e *e2e, h sandbox.Host)
	}{
		{
			name:   "cloudflare rate limit then 500",
			inject: func(e *e2e, _ sandbox.Host) { e.world.Cloudflare.FailNext(2, 429); e.world.Cloudflare.FailNext(2, 500) },
			kind:   "retry", text: "DNS: ",
		},
		{
			name: "proxmox guest agent not running",
			inject: func(e *e2e, h sandbox.Host) {
				e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentRunning = false })
			},
			kind: "waiting", text: "launch: ",
			clear: func(e *e2e, h sandbox.Host) {
				e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.AgentRunning = true })
			},
		},
		{
			name: "agent exec never exits",
			env:  map[string]string{"PROVISIONER_PROXMOX_EXEC_TIMEOUT": "3s"},
			inject: func(e *e2e, h sandbox.Host) {
				e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.Hang = true })
			},
			kind: "retry", text: "launch: ",
			clear: func(e *e2e, h sandbox.Host) {
				e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.Hang = false })
			},
		},
		{
			name:   "smtp down",
			inject: func(e *e2e, _ sandbox.Host) { e.smtp.Down() },
			kind:   "retry", text: "credentials email: ",
			clear: func(e *e2e, _ sandbox.Host) { e.smtp.Up() },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newE2E(t, e2eOptions{env: tt.env})
			e.start()
			h := e.addHost("nuc", 10)
			tt.inject(e, h)
			e.purchase("cus_fault", "starter")
			e.waitTimeline("cus_fault", tt.kind, tt.text, 60*time.Second)
			if tt.clear != nil {
				tt.clear(e, h)
			}
			in := e.waitInstance("cus_fault", "active", 90*time.Second)
			e.assertOneOfEverything("cus_fault", "nuc")
			if tt.kind == "waiting" && timelineHas(in, "retry", "") {
				t.Errorf("waiting for the guest agent spent attempts: %+v", in.Timeline)
			}
		})
	}
}

// TestCloudflareOutageCostsSeconds: Cloudflare answers 500 three times. The DNS step backs
// off 1, 2 and 4 s (jittered), the timeline says when the next try comes, and the
// instance is active within 10 s of the third failure, on the production retry policy.
func TestCloudflareOutageCostsSeconds(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{})
	e.start()
	e.addHost("nuc", 10)
	e.world.Cloudflare.FailNext(3, 500)
	e.purchase("cus_cf", "starter")
	e.waitTimeline("cus_cf", "retry", "(attempt 3)", 60*time.Second)
	in := e.waitInstance("cus_cf", "active", 10*time.Second)
	if !timelineHas(in, "retry", "DNS: ") || !timelineHas(in, "retry", "; next try in ") {
		t.Errorf("the timeline does not say what failed and when the next try comes: %+v", in.Timeline)
	}
	e.assertOneOfEverything("cus_cf", "nuc")
}

// TestRESTRoutesMountingIsWaitedFor: n8n reports ready 3 s before its REST routes stop
// answering 404, as real n8n does. The owner step waits for them: no failed attempt.
func TestRESTRoutesMountingIsWaitedFor(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			e := newE2E(t, e2eOptions{dialect: d, sandbox: sandbox.Config{
				ConfigureN8n: func(_, _ string, srv *n8ntest.Server) { srv.RESTLag = 3 * time.Second },
			}})
			e.start()
			e.addHost("nuc", 10)
			e.purchase("cus_lag", "starter")
			in := e.waitInstance("cus_lag", "active", 60*time.Second)
			if timelineHas(in, "retry", "") {
				t.Errorf("failed attempts while the REST routes mounted: %+v", in.Timeline)
			}
			if !timelineHas(in, "waiting", "owner setup: ") {
				t.Errorf("the timeline does not say the owner setup waited: %+v", in.Timeline)
			}
		})
	}
}

// TestNeverReadyIsCompensated: an n8n that never becomes ready is waited for until the
// step's deadline (3 s here, 30 min by default); then the instance is failed with nothing left behind and the operator is told.
func TestNeverReadyIsCompensated(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{
		env:     map[string]string{"PROVISIONER_STEP_DEADLINE": "3s"},
		sandbox: sandbox.Config{ConfigureN8n: func(_, _ string, srv *n8ntest.Server) { srv.SetReady(false) }},
	})
	e.start()
	e.addHost("nuc", 1)
	e.purchase("cus_stuck", "starter")
	in := e.waitInstance("cus_stuck", "failed", 90*time.Second)
	if !timelineHas(in, "failed", "step healthy failed") {
		t.Errorf("timeline lacks the failure reason: %+v", in.Timeline)
	}
	if cs, _ := e.world.Containers("nuc"); len(cs) != 0 {
		t.Errorf("containers left behind: %+v", cs)
	}
	if records := e.world.Cloudflare.Records(e.world.CloudflareZoneID); len(records) != 0 {
		t.Errorf("DNS records left behind: %+v", records)
	}
	var hosts struct{ Hosts []struct{ Instances int } }
	e.mustAPI("GET", "/v1/hosts", e2eAdminKey, nil, http.StatusOK, &hosts)
	if hosts.Hosts[0].Instances != 0 {
		t.Errorf("the failed instance still holds a slot: %+v", hosts)
	}
	if mails := e.emailsTo("cus_stuck@example.com"); len(mails) != 0 {
		t.Errorf("the customer got %d emails for an instance that never worked", len(mails))
	}
	waitFor(t, 10*time.Second, "an operator alert", func() bool { return len(e.emailsTo(e2eOperator)) > 0 })
}

// TestPlacementRoundRobin: 30 purchases over three hosts of ten fill each with ten; a
// draining host gets none; a full host gets none, and a purchase waits in pending (the
// operator told) until room appears.
func TestPlacementRoundRobin(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{env: map[string]string{"PROVISIONER_SWEEP_INTERVAL": "200ms"}})
	e.start()
	for _, name := range []string{"host-a", "host-b", "host-c"} {
		e.addHost(name, 10)
	}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() { e.purchase(fmt.Sprintf("cus_p%02d", i), "starter") })
	}
	wg.Wait()
	for i := range 30 {
		e.waitInstance(fmt.Sprintf("cus_p%02d", i), "active", 120*time.Second)
	}
	for _, name := range []string{"host-a", "host-b", "host-c"} {
		if cs, _ := e.world.Containers(name); len(cs) != 10 {
			t.Errorf("%s runs %d containers, want 10", name, len(cs))
		}
	}

	e.mustAPI("PATCH", "/v1/hosts/host-a", e2eAdminKey, map[string]any{"state": "draining", "max_instances": 20}, http.StatusOK, nil)
	e.addHost("host-d", 1)
	e.purchase("cus_next", "starter")
	if in := e.waitInstance("cus_next", "active", 60*time.Second); *in.Host != "host-d" {
		t.Errorf("placed on %s, want host-d (host-a drains, b and c are full)", *in.Host)
	}
	// With every host full or draining, checkout refuses to sell.
	code, body := e.api("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": "cus_waits",
		"email": "cus_waits@example.com", "name": "Wait", "plan": "starter"})
	if code != http.StatusConflict {
		t.Fatalf("checkout with no room = %d %s, want 409", code, body)
	}
	// Room at checkout, gone by the time the payment arrives: the instance waits.
	e.mustAPI("PATCH", "/v1/hosts/host-d", e2eAdminKey, map[string]any{"max_instances": 2}, http.StatusOK, nil)
	var session struct{ ID string }
	e.mustAPI("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": "cus_waits",
		"email": "cus_waits@example.com", "name": "Wait", "plan": "starter"}, http.StatusCreated, &session)
	e.mustAPI("PATCH", "/v1/hosts/host-d", e2eAdminKey, map[string]any{"max_instances": 1}, http.StatusOK, nil)
	events, err := e.stripe.CompleteCheckout(session.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.deliver(events...)
	e.waitTimeline("cus_waits", "waiting_for_host", "waiting for a host", 30*time.Second)
	if got := e.instances("cus_waits")[0].Status; got != "pending" {
		t.Errorf("status while no host has room = %s, want pending", got)
	}
	waitFor(t, 10*time.Second, "an operator alert about room", func() bool {
		for _, m := range e.emailsTo(e2eOperator) {
			if strings.Contains(m.Subject, "No host has room") {
				return true
			}
		}
		return false
	})
	e.mustAPI("PATCH", "/v1/hosts/host-d", e2eAdminKey, map[string]any{"max_instances": 2}, http.StatusOK, nil)
	if in := e.waitInstance("cus_waits", "active", 90*time.Second); *in.Host != "host-d" {
		t.Errorf("placed on %s once room appeared, want host-d", *in.Host)
	}
}

// TestCompromisedInstanceIsReplaced: someone claimed the owner of the fresh n8n before us
// (here, from behind the ingress). Its credentials would not work, so they are never sent;
// the instance is destroyed (data kept), the operator alerted, and a fresh instance with a
// new slug is delivered instead.
func TestCompromisedInstanceIsReplaced(t *testing.T) {
	t.Parallel()
	var once sync.Once
	var claimed string
	e := newE2E(t, e2eOptions{sandbox: sandbox.Config{ConfigureN8n: func(_, slug string, srv *n8ntest.Server) {
		once.Do(func() {
			claimed = slug
			srv.Start()
			body := `{"email":"attacker@evil.example","firstName":"Mal","lastName":"Lory","password":"Attack3rPassw0rd"}`
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequest("POST", "/rest/owner/setup", strings.NewReader(body)))
			if rec.Code != http.StatusOK {
				panic(fmt.Sprintf("the attacker's setup failed: %d %s", rec.Code, rec.Body))
			}
		})
	}}})
	e.start()
	e.addHost("nuc", 10)
	e.purchase("cus_victim", "starter")
	fresh := e.waitInstance("cus_victim", "active", 60*time.Second)
	if fresh.Slug == claimed {
		t.Fatalf("the claimed instance %s was delivered", claimed)
	}
	list := e.instances("cus_victim")
	if len(list) != 2 || list[0].Slug != claimed || list[0].Status != "failed" {
		t.Fatalf("instances = %+v, want the claimed one failed and a fresh one", list)
	}
	old := e.instance(list[0].ID)
	if !timelineHas(old, "failed", "compromised") || !timelineHas(old, "replaced", fresh.ID) {
		t.Errorf("the claimed instance's timeline = %+v", old.Timeline)
	}
	mails := e.emailsTo("cus_victim@example.com")
	if len(mails) != 1 || !strings.Contains(mails[0].Text, fresh.URL) || strings.Contains(mails[0].Text, claimed) {
		t.Fatalf("customer emails = %d, want one for the fresh instance only", len(mails))
	}
	if err := e.login(fresh, "cus_victim@example.com", passwordIn(t, mails[0])); err != nil {
		t.Errorf("the fresh instance's password does not log in: %v", err)
	}
	cs, _ := e.world.Containers("nuc")
	if len(cs) != 1 || cs[0].Slug != fresh.Slug {
		t.Errorf("containers = %+v, want only the fresh one", cs)
	}
	records := e.world.Cloudflare.Records(e.world.CloudflareZoneID)
	if len(records) != 1 || records[0].Name != e.world.FQDN(fresh.Slug) {
		t.Errorf("DNS records = %+v, want only the fresh one's", records)
	}
	waitFor(t, 10*time.Second, "a security alert", func() bool {
		for _, m := range e.emailsTo(e2eOperator) {
			if strings.Contains(m.Text, claimed) && strings.Contains(m.Text, "claimed by someone else") {
				return true
			}
		}
		return false
	})
}

// TestRestorePutsABackupBack: a backup taken now, then data changed on the host, then the
// restore: the data is the backup's again and the instance is healthy.
func TestRestorePutsABackupBack(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{})
	e.start()
	e.addHost("nuc", 10)
	e.purchase("cus_restore", "starter")
	in := e.waitInstance("cus_restore", "active", 60*time.Second)

	e.mustAPI("POST", "/v1/instances/"+in.ID+"/backup", e2eAdminKey, nil, http.StatusAccepted, nil)
	e.waitTimeline("cus_restore", "backup", "taken", 30*time.Second)
	var list struct {
		Backups []struct{ ID, Host, SHA256 string }
	}
	e.mustAPI("GET", "/v1/instances/"+in.ID+"/backups", e2eAdminKey, nil, http.StatusOK, &list)
	if len(list.Backups) != 1 || list.Backups[0].Host != "nuc" || len(list.Backups[0].SHA256) != 64 {
		t.Fatalf("backups = %+v", list.Backups)
	}

	cs, _ := e.world.Containers("nuc")
	marker := filepath.Join(cs[0].DataDir, "written-after-the-backup")
	if err := os.WriteFile(marker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustAPI("POST", "/v1/instances/"+in.ID+"/restore", e2eAdminKey, map[string]any{"backup_id": list.Backups[0].ID}, http.StatusAccepted, nil)
	e.waitTimeline("cus_restore", "restored", "data restored", 30*time.Second)
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("a file written after the backup survived the restore: %v", err)
	}
	if got := e.instance(in.ID); got.Status != "active" {
		t.Errorf("status after restore = %s", got.Status)
	}
	code, body := e.api("POST", "/v1/instances/"+in.ID+"/restore", e2eAdminKey, map[string]any{"backup_id": instances.NewID()})
	if code != http.StatusNotFound {
		t.Errorf("restore of an unknown backup = %d %s, want 404", code, body)
	}
}
