package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/billing/stripetest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/proxmoxtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// provisionerBinary builds the provisioner once per test run.
func provisionerBinary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "provisioner-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "provisioner")
		out, err := exec.Command("go", "build", "-o", binaryPath, ".").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// child is the provisioner running as a real process.
type child struct {
	cmd  *exec.Cmd
	done chan error
	url  string
	logs *testlog.Buffer
}

// startChild runs the provisioner binary with e's environment plus extra, and points e at it.
func (e *e2e) startChild(extra ...string) *child {
	e.t.Helper()
	cmd := exec.Command(provisionerBinary(e.t), "serve")
	for k, v := range e.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "PROVISIONER_ADDR=127.0.0.1:0")
	cmd.Env = append(cmd.Env, extra...)
	logs := &testlog.Buffer{}
	testlog.Keep(e.t, logs)
	w := newAddrWatcher(logs)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1), logs: logs}
	go func() { c.done <- cmd.Wait(); w.pw.Close() }()
	e.t.Cleanup(func() { c.cmd.Process.Kill(); <-c.done })
	select {
	case addr := <-w.addr:
		c.url = "http://" + addr
		e.url, e.logs = c.url, logs
	case err := <-c.done:
		e.t.Fatalf("provisioner exited before listening: %v\n%s", err, logs)
	case <-time.After(60 * time.Second):
		e.t.Fatalf("provisioner not listening after 60s:\n%s", logs)
	}
	return c
}

// waitKilled waits for the child to die of SIGKILL (its crash hook).
func (c *child) waitKilled(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-c.done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("provisioner ended with %v, want killed by SIGKILL", err)
		}
		c.done <- err // for the cleanup
	case <-time.After(timeout):
		t.Fatalf("the crash hook did not fire within %s", timeout)
	}
}

// deliverUntilDown posts events until the provisioner stops answering, and returns the
// ones it did not acknowledge: Stripe redelivers those later.
func (e *e2e) deliverUntilDown(events []stripetest.Event) []stripetest.Event {
	for i, ev := range events {
		res, err := http.DefaultClient.Do(ev.Request(e.url+"/webhooks/payments/stripe", e2eWebhookKey))
		if err != nil {
			return events[i:]
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return events[i:]
		}
	}
	return nil
}

// TestCrashAfterEachStepResumesToExactlyOneOfEverything kills the provisioner (a real
// process, SIGKILL) right after each saga step is stored, restarts it, and checks that the
// purchase still ends in exactly one instance, one DNS record, one container, one email.
func TestCrashAfterEachStepResumesToExactlyOneOfEverything(t *testing.T) {
	t.Parallel()
	for _, step := range instances.Steps {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			e := newE2E(t, e2eOptions{})
			first := e.startChild("PROVISIONER_TEST_CRASH_AFTER_STEP=" + step)
			e.addHost("nuc", 10)

			var session struct{ ID string }
			e.mustAPI("POST", "/v1/checkout-sessions", e2ePortalKey, map[string]any{"client_id": "cus_crash",
				"email": "cus_crash@example.com", "name": "Crash Test", "plan": "starter"}, http.StatusCreated, &session)
			events, err := e.stripe.CompleteCheckout(session.ID)
			if err != nil {
				t.Fatal(err)
			}
			pending := e.deliverUntilDown(events)
			first.waitKilled(t, 60*time.Second)

			e.startChild()
			e.deliver(pending...) // Stripe's redelivery of what the dead process never acknowledged
			in := e.waitInstance("cus_crash", "active", 90*time.Second)

			if list := e.instances("cus_crash"); len(list) != 1 {
				t.Errorf("%d instances, want 1: %+v", len(list), list)
			}
			if records := e.world.Cloudflare.Records(e.world.CloudflareZoneID); len(records) != 1 {
				t.Errorf("%d DNS records, want 1: %+v", len(records), records)
			}
			containers, _ := e.world.Containers("nuc")
			if len(containers) != 1 || !containers[0].Running {
				t.Errorf("containers = %+v, want one running", containers)
			}
			mails := e.emailsTo("cus_crash@example.com")
			if len(mails) != 1 {
				var subjects []string
				for _, m := range mails {
					subjects = append(subjects, m.Subject)
				}
				sort.Strings(subjects)
				t.Errorf("%d distinct emails to the customer, want 1: %v", len(mails), subjects)
			} else if err := e.login(in, "cus_crash@example.com", passwordIn(t, mails[0])); err != nil {
				t.Errorf("the emailed password does not log in: %v", err)
			}
		})
	}
}

// kill SIGKILLs the child and waits for it to be gone.
func (c *child) kill(t testing.TB) {
	t.Helper()
	c.cmd.Process.Kill()
	c.waitKilled(t, 30*time.Second)
}

// hangLaunch makes the host's guest-agent commands never exit, buys an instance and waits
// until its `n8nctl provision` runs: the moment a crash hurts most.
func (e *e2e) hangLaunch(h sandbox.Host, client string) {
	e.t.Helper()
	e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.Hang = true })
	e.purchase(client, "starter")
	waitFor(e.t, 60*time.Second, "n8nctl provision to run on the host", func() bool {
		for _, x := range e.world.Proxmox.Execs() {
			if len(x.Argv) > 1 && x.Argv[1] == "provision" {
				return true
			}
		}
		return false
	})
	e.world.Proxmox.UpdateVM(h.Node, h.VMID, func(vm *proxmoxtest.VM) { vm.Hang = false })
}

// TestCrashDuringLaunchResumesWithinSeconds: SIGKILL while n8nctl provision runs, then a
// restart on the same database: the job the dead process held is taken over at once
// (SQLite: at start; PostgreSQL: its lease is gone), not after River's stuck-job rescue.
func TestCrashDuringLaunchResumesWithinSeconds(t *testing.T) {
	t.Parallel()
	for _, d := range dbtest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			e := newE2E(t, e2eOptions{dialect: d})
			first := e.startChild()
			h := e.addHost("nuc", 10)
			e.hangLaunch(h, "cus_launch")
			first.kill(t)

			e.startChild()
			e.waitInstance("cus_launch", "active", 15*time.Second)
			e.assertOneOfEverything("cus_launch", "nuc")
		})
	}
}

// TestReplicaTakesOverADeadOnesJob: two replicas on one PostgreSQL; the one running the
// saga is SIGKILLed during the launch; the other finishes it within seconds.
func TestReplicaTakesOverADeadOnesJob(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{dialect: database.Postgres})
	replicas := []*child{e.startChild(), e.startChild()}
	h := e.addHost("nuc", 10)
	e.hangLaunch(h, "cus_replica")
	id := e.instances("cus_replica")[0].ID
	var holder, survivor *child
	waitFor(t, 30*time.Second, "the replica running the saga", func() bool {
		for i, c := range replicas {
			if strings.Contains(c.logs.String(), `"instance":"`+id+`","step":"placed"`) {
				holder, survivor = c, replicas[1-i]
				return true
			}
		}
		return false
	})
	holder.kill(t)
	e.url = survivor.url
	e.waitInstance("cus_replica", "active", 15*time.Second)
	e.assertOneOfEverything("cus_replica", "nuc")
}
