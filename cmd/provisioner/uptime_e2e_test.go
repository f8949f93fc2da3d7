package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An instance whose n8n dies (its container stops behind our back): the uptime probe marks
// it degraded, alerts the operator once, starts the container again, and notices the
// recovery; the customer's timeline says each; /metrics shows it down, then up. It runs
// production's policy, a probe a minute and two failures in a row, so it takes about
// three minutes (the unit tests walk the same policy on a fake clock in milliseconds).
func TestDeadN8nIsDegradedAlertedOnceRestartedAndRecovered(t *testing.T) {
	t.Parallel()
	e := newE2E(t, e2eOptions{})
	e.start()
	e.addHost("nuc", 10)
	e.purchase("cus_uptime", "starter")
	in := e.waitInstance("cus_uptime", "active", 60*time.Second)
	if err := e.world.StopContainer(context.Background(), "nuc", in.Slug); err != nil {
		t.Fatal(err)
	}
	// Probes a minute apart: the first failure, then the second marks it degraded.
	e.waitTimeline("cus_uptime", "health", "not answering", 3*time.Minute)
	// The pass tells the metrics once all its probes are in: a moment after the timeline.
	down := `provisioner_instance_up{host="nuc",slug="` + in.Slug + `"} 0`
	waitFor(t, 15*time.Second, "the instance down in /metrics", func() bool { return strings.Contains(e.metrics(), down) })
	e.waitTimeline("cus_uptime", "health", "started again automatically", 30*time.Second)
	in = e.waitTimeline("cus_uptime", "health", "answering again", 2*time.Minute)
	cs, _ := e.world.Containers("nuc")
	if len(cs) != 1 || !cs[0].Running {
		t.Errorf("containers = %+v, want the instance's running again", cs)
	}
	up := `provisioner_instance_up{host="nuc",slug="` + in.Slug + `"} 1`
	waitFor(t, 15*time.Second, "the instance up again in /metrics", func() bool { return strings.Contains(e.metrics(), up) })
	waitFor(t, 10*time.Second, "the recovery alert", func() bool { return e.alertsAbout("Recovered", in.Slug) == 1 })
	if n := e.alertsAbout("Degraded", in.Slug); n != 1 {
		t.Errorf("%d Degraded alerts, want 1", n)
	}
	if in.Status != "active" {
		t.Errorf("status = %s: degraded must never change the status", in.Status)
	}
}

// metrics returns the provisioner's /metrics text, read with the admin key.
func (e *e2e) metrics() string {
	e.t.Helper()
	code, body := e.api("GET", "/metrics", e2eAdminKey, nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /metrics = %d", code)
	}
	return string(body)
}

// alertsAbout counts the operator's emails whose subject starts with subject and whose
// text names what.
func (e *e2e) alertsAbout(subject, what string) int {
	n := 0
	for _, m := range e.emailsTo(e2eOperator) {
		if strings.Contains(m.Subject, subject) && strings.Contains(m.Text, what) {
			n++
		}
	}
	return n
}
