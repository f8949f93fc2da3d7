package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The demo is run through run exactly as `provisioner demo` runs it: its own sandbox, fake
// Stripe and service, nothing from the test's environment.

func runDemoForTest(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), append([]string{"provisioner", "demo"}, args...), mapEnv(map[string]string{}), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestDemoShowsAPurchaseBecomingAnInstance(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, errOut, err := runDemoForTest(t, "--dir", dir, "--ready-after", "200ms", "--purchases", "2")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"POST /v1/hosts demo-1, demo-2 → 201",
		"POST /v1/checkout-sessions → 201",
		"Ada Lovelace paid",
		"checkout.session.completed (signed) → 200",
		"instance requested",
		"DNS record ",
		"container started on ",
		"resource caps verified: 0.5 CPU, 1024 MiB",
		"n8n is up and ready",
		"owner account created for ada@example.com",
		"login details emailed to ada@example.com",
		"login details emailed to grace@example.com",
		"Subject: Your n8n instance is ready",
		"0.5 CPU, 1024 MB memory",
		"login      works: POST /rest/login as ada@example.com",
		"login      works: POST /rest/login as grace@example.com",
		"placement: demo-1 1, demo-2 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	password := regexp.MustCompile(`(?m)^  \|\s+Password: (\S+)$`).FindStringSubmatch(out)
	if password == nil {
		t.Fatalf("the output shows no email with a password line:\n%s", out)
	}

	placed := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  \[(\w+)\]\s+\+\d+\.\d\ds  placed on host (\S+)$`).FindAllStringSubmatch(out, -1) {
		placed[m[1]] = m[2]
	}
	if len(placed) != 2 || placed["ada"] == placed["grace"] {
		t.Errorf("placements = %v, want ada and grace on two different hosts", placed)
	}

	if strings.Contains(out, `{"time":`) || errOut != "" {
		t.Errorf("log lines reached the output; stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	logs, err := os.ReadFile(filepath.Join(dir, "provisioner.log"))
	if err != nil || !strings.Contains(string(logs), `"msg":"listening"`) {
		t.Errorf("the service's log is not in the demo dir: %v", err)
	}
	if strings.Contains(string(logs), password[1]) {
		t.Error("the owner password was logged")
	}
}

func TestDemoFailsWhenAnInstanceIsNotActiveInTime(t *testing.T) {
	t.Parallel()
	// n8n never gets ready within the demo's timeout: the demo gives up, shows how far the
	// instance got, and fails.
	out, _, err := runDemoForTest(t, "--dir", t.TempDir(), "--ready-after", "10m", "--timeout", "10s", "--hosts", "1")
	if err == nil || !strings.Contains(err.Error(), "not every instance was active and emailed 10s after the payment") {
		t.Fatalf("demo = %v, want a timeout error\n%s", err, out)
	}
	if !regexp.MustCompile(`ada: instance \S+ is provisioning at step "(launched|caps_verified)"; its timeline:\n(.*\n)*.*container started on demo-1`).MatchString(out) {
		t.Errorf("the output does not show the unfinished instance's timeline:\n%s", out)
	}
	if strings.Contains(out, "Summary") {
		t.Errorf("a failed demo printed a summary:\n%s", out)
	}
}

func TestDemoHelp(t *testing.T) {
	t.Parallel()
	out, _, err := runDemoForTest(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"usage: provisioner demo [flags]", "--purchases", "--ready-after", "--keep", "--timeout", "--verbose", "--dir"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo --help lacks %q:\n%s", want, out)
		}
	}
	var usage bytes.Buffer
	if err := run(context.Background(), []string{"provisioner", "help"}, mapEnv(nil), &usage, &usage); err != nil || !strings.Contains(usage.String(), "  demo ") {
		t.Errorf("provisioner help does not list demo: %v\n%s", err, usage.String())
	}
}

func TestDemoRefusesBadInput(t *testing.T) {
	t.Parallel()
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "provisioner.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--hosts", "0"}, "--hosts must be between 1 and 20"},
		{[]string{"--purchases", "51"}, "--purchases must be between 1 and 50"},
		{[]string{"--ready-after", "-1s"}, "--ready-after must be between"},
		{[]string{"--timeout", "0s"}, "--timeout must be a positive duration"},
		{[]string{"--addr", "8080"}, "--addr must be host:port"},
		{[]string{"--bogus"}, "flag provided but not defined: --bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--dir", full}, "is not empty"},
	} {
		_, _, err := runDemoForTest(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("demo %v = %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// With a warm pool smaller than the purchases, the demo shows both paths.
func TestDemoShowsTheWarmAndTheColdPath(t *testing.T) {
	t.Parallel()
	out, _, err := runDemoForTest(t, "--dir", t.TempDir(), "--ready-after", "1s", "--purchases", "2", "--warm", "1", "--hosts", "1")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"GET /v1/pool → 1 of 1 n8n ready for plan starter",
		"assigned: a warm n8n from the pool is yours (warm path)",
		"cold_start: no warm n8n of plan starter was ready",
		"path       warm (a pool member",
		"path       cold (a new container",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
}

// With --provider mercadopago the same purchase is sold through MercadoPago: the checkout
// returns the subscription's init_point, signed notifications reach
// /webhooks/payments/mercadopago, and the customer's cancellation through our endpoint
// suspends the instance.
func TestDemoWithMercadoPago(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, _, err := runDemoForTest(t, "--dir", dir, "--ready-after", "200ms", "--provider", "mercadopago")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"fake MercadoPago  http://127.0.0.1:",
		`POST /v1/checkout-sessions {"provider":"mercadopago"} → 201, init_point https://www.mercadopago.com.ar/subscriptions/checkout?preapproval_id=`,
		`external_reference "client=demo-ada;plan=starter;locale=es", back_url https://portal.example.com/checkout/success?provider=mercadopago`,
		"Ada Lovelace subscribed at the init_point: authorized",
		"&type=subscription_preapproval (created, x-signature) → 200",
		"&type=subscription_preapproval (updated, x-signature) → 200",
		"&type=subscription_authorized_payment (created, x-signature) → 200",
		"&type=payment (payment.created, x-signature) → 200",
		"login details emailed to ada@example.com",
		"Subject: Su instancia de n8n está lista",
		"login      works: POST /rest/login as ada@example.com",
		"/cancel → 202; MercadoPago subscription ",
		" is cancelled",
		"instance suspended",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	logs, err := os.ReadFile(filepath.Join(dir, "provisioner.log"))
	if err != nil {
		t.Fatal(err)
	}
	// The fake's access token and webhook secret are the demo's secrets: never logged.
	token := regexp.MustCompile(`TEST-demo-[A-Za-z0-9_-]+`).FindString(string(logs))
	secret := regexp.MustCompile(`mp-demo-[A-Za-z0-9_-]+`).FindString(string(logs))
	if token != "" || secret != "" {
		t.Errorf("a MercadoPago secret reached the log: %q %q", token, secret)
	}
	if _, _, err := runDemoForTest(t, "--provider", "paypal"); err == nil || !strings.Contains(err.Error(), "--provider") {
		t.Errorf("--provider paypal: %v", err)
	}
}
