// Command fake-n8n serves an n8ntest.Server over HTTP so that end-to-end tests can start one
// fake n8n process per container (a fake docker script runs it where real docker would run
// n8n). It writes the address it listens on to --port-file, atomically, so the script can
// wait for the file and read a complete host:port.
//
//	fake-n8n --addr 127.0.0.1:0 --port-file /tmp/acme.addr --ready-after 2s
//
// It stops cleanly on SIGINT or SIGTERM (docker stop).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fake-n8n:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. ready, when not nil, receives the listening address once the
// port file is written (for tests).
func run(ctx context.Context, args []string, stderr io.Writer) error {
	return serve(ctx, args, stderr, nil)
}

func serve(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("fake-n8n", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	portFile := fs.String("port-file", "", "file to write the chosen host:port to (atomically)")
	readyAfter := fs.Duration("ready-after", 0, "how long /healthz/readiness answers 503 after start")
	restLag := fs.Duration("rest-lag", 0, "how long after readiness the REST routes stay unmounted (404)")
	startingUp := fs.Bool("starting-up-page", false, "answer unmounted routes with n8n's 200 start-up page instead of 404")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	srv := &n8ntest.Server{ReadyAfter: *readyAfter, RESTLag: *restLag, StartingUpPage: *startingUp}
	srv.Start()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	bound := ln.Addr().String()
	if *portFile != "" {
		if err := writeAtomic(*portFile, bound+"\n"); err != nil {
			_ = hs.Close()
			return fmt.Errorf("write port file: %w", err)
		}
	}
	fmt.Fprintf(stderr, "fake-n8n listening on %s (ready after %s)\n", bound, *readyAfter)
	if ready != nil {
		ready <- bound
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// writeAtomic writes data to a temporary file beside path and renames it into place, so a
// reader never sees a partial address.
func writeAtomic(path, data string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
