package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// healthcheckTimeout bounds the whole check: Docker's own timeout should be longer.
const healthcheckTimeout = 5 * time.Second

const healthcheckUsage = `usage: provisioner healthcheck

Asks GET /healthz of the service listening at PROVISIONER_ADDR (on the loopback address
when it listens on all of them) and exits 0 on a 200, for Docker's HEALTHCHECK.
`

// runHealthcheck asks the local service's GET /healthz, so that a container image with no
// curl can still be health-checked (docker-compose.yml runs `provisioner healthcheck`).
// It reads only PROVISIONER_ADDR, so it generates nothing and touches no database.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	switch {
	case len(args) == 1 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help"):
		fmt.Fprint(stdout, healthcheckUsage)
		return nil
	case len(args) > 0:
		return fmt.Errorf("healthcheck takes no arguments, got %q", args)
	}
	addr := strings.TrimSpace(getenv("PROVISIONER_ADDR"))
	if addr == "" {
		addr = ":8080"
	}
	url, err := healthzURL(addr)
	if err != nil {
		return envError("PROVISIONER_ADDR", err)
	}
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", url, res.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// healthzURL turns the listen address into the URL to ask: a wildcard host (":8080",
// "0.0.0.0:8080", "[::]:8080") is asked on the loopback address.
func healthzURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", errors.New("must be host:port, e.g. :8080")
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}
