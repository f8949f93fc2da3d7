// Command provisioner sells n8n as a service on the operator's Proxmox hosts: it takes
// payment webhooks, provisions customer n8n containers, and serves the portal's REST API.
//
//	provisioner [serve]   run the service (the default)
//	provisioner migrate   apply database migrations and exit
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "provisioner:", err)
		os.Exit(1)
	}
}
