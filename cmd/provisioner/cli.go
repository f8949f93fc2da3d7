package main

// The operator's command line: `hosts`, `instances` and `doctor` work on the service's own
// database (the same PROVISIONER_* configuration as `serve`), read it directly, and turn
// every action into a job that a running `provisioner serve` executes. Nothing here talks
// to the REST API, so the CLI works while the HTTP side is down, and there is no second
// permission model to keep in step with the first.
//
// Every command parses its flags with its own flag.FlagSet, prints help on --help without
// touching the database, prints for humans by default and JSON (the REST API's field
// names) with --json, and fails through run's error, so the exit status is non-zero.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

// cli is one operator command's context.
type cli struct {
	ctx            context.Context
	getenv         func(string) string
	stdout, stderr io.Writer
}

// command is a subcommand of a group (hosts, instances).
type command struct {
	name    string
	summary string
	run     func(c *cli, path string, args []string) error
}

// runOps runs the operator command cmd (hosts, instances or doctor) with the arguments
// that follow it.
func runOps(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := &cli{ctx: ctx, getenv: getenv, stdout: stdout, stderr: stderr}
	switch cmd {
	case "hosts":
		return c.group("hosts", "the host inventory: the VMs that run customer containers", hostCommands, args)
	case "instances":
		return c.group("instances", "customer n8n instances: read them, and queue lifecycle actions for the workers of `provisioner serve`", instanceCommands, args)
	case "backups":
		return c.group("backups", "every instance's backups", backupCommands, args)
	case "db":
		return c.dbCommand(args, dumpBucket)
	case "doctor":
		return c.doctor("doctor", args)
	case "pool":
		return c.pool("pool", args)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// group dispatches to one of cmds, or prints the group's help.
func (c *cli) group(name, summary string, cmds []command, args []string) error {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: provisioner %s <command> [flags]\n\n%s.\n\ncommands:\n", name, capitalize(summary))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, cmd := range cmds {
			fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
		}
		tw.Flush()
		fmt.Fprintf(w, "\nRun `provisioner %s <command> --help` for a command's flags.\n", name)
	}
	if len(args) == 0 {
		usage(c.stderr)
		return fmt.Errorf("%s needs a command: %s", name, commandNames(cmds))
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(c.stdout)
		return nil
	}
	for _, cmd := range cmds {
		if cmd.name == args[0] {
			return cmd.run(c, name+" "+cmd.name, args[1:])
		}
	}
	return fmt.Errorf("unknown command %q: `provisioner %s` has %s", name+" "+args[0], name, commandNames(cmds))
}

func commandNames(cmds []command) string {
	names := make([]string, 0, len(cmds))
	for _, cmd := range cmds {
		names = append(names, cmd.name)
	}
	return strings.Join(names, ", ")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// flags is a subcommand's flag set and the text of its --help.
type flags struct {
	*flag.FlagSet
	path     string // "hosts add"
	synopsis string // the arguments after the path
	about    string // what the command does, in a paragraph or two
}

func newFlags(path, synopsis, about string) *flags {
	fs := flag.NewFlagSet("provisioner "+path, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors come back as errors; --help is printed by usage
	fs.Usage = func() {}
	return &flags{FlagSet: fs, path: path, synopsis: synopsis, about: about}
}

func (f *flags) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: provisioner %s %s\n\n%s\n", f.path, f.synopsis, wrap(f.about, 90))
	n := 0
	f.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "\nflags:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	f.VisitAll(func(fl *flag.Flag) {
		kind, text := flag.UnquoteUsage(fl)
		name := "--" + fl.Name
		if kind != "" {
			name += " " + kind
		}
		if fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "0" {
			text += " (default " + fl.DefValue + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", name, text)
	})
	tw.Flush()
}

// wrap re-flows each paragraph of text (paragraphs are separated by blank lines) to lines
// of at most width columns.
func wrap(text string, width int) string {
	var out []string
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		var lines []string
		line := ""
		for _, word := range strings.Fields(para) {
			if line != "" && len(line)+1+len(word) > width {
				lines, line = append(lines, line), ""
			}
			if line != "" {
				line += " "
			}
			line += word
		}
		out = append(out, strings.Join(append(lines, line), "\n"))
	}
	return strings.Join(out, "\n\n")
}

// parse parses args, flags and positional arguments in any order (`hosts set nuc1
// --max-instances 8` and `hosts set --max-instances 8 nuc1` both work), and checks that
// between min and max positional arguments (named what) were given. help is true when
// --help was asked for and printed: the command has nothing more to do.
func (c *cli) parse(f *flags, args []string, min, max int, what string) (pos []string, help bool, err error) {
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.usage(c.stdout)
				return nil, true, nil
			}
			return nil, false, fmt.Errorf("%s: %v (see provisioner %s --help)", f.path, strings.Replace(err.Error(), " -", " --", 1), f.path)
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	switch {
	case len(pos) < min:
		return nil, false, fmt.Errorf("%s: %s is missing (usage: provisioner %s %s)", f.path, what, f.path, f.synopsis)
	case len(pos) > max && max == 0:
		return nil, false, fmt.Errorf("%s: unexpected argument %q (usage: provisioner %s %s)", f.path, pos[0], f.path, f.synopsis)
	case len(pos) > max:
		return nil, false, fmt.Errorf("%s: expected one %s, got %d arguments: %s", f.path, what, len(pos), strings.Join(pos, " "))
	}
	return pos, false, nil
}

// provided reports whether the flag called name was given on the command line.
func (f *flags) provided(name string) bool {
	found := false
	f.Visit(func(fl *flag.Flag) { found = found || fl.Name == name })
	return found
}

// writeJSON prints v indented, for scripts (and for people piping into jq).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// ops is what the commands work on: the service's database, its stores and (on first
// use) an insert-only job queue.
type ops struct {
	cfg       config
	db        *database.DB
	log       *slog.Logger
	hosts     *hosts.Store
	instances *instances.Store

	q *queue.Queue
}

// open loads the configuration and opens (and, like serve, migrates) the database.
func (c *cli) open() (*ops, error) {
	cfg, err := loadConfig(c.getenv)
	if err != nil {
		return nil, err
	}
	// The CLI is quiet: the service's own logging goes to stderr only at error level,
	// unless the operator asks for more with PROVISIONER_LOG_LEVEL.
	level := slog.LevelError
	if strings.TrimSpace(c.getenv("PROVISIONER_LOG_LEVEL")) != "" {
		level = cfg.LogLevel
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
	db, err := database.Open(c.ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_DATABASE_URL: %w", err)
	}
	if _, err := db.Migrate(c.ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := queue.Migrate(c.ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return &ops{cfg: cfg, db: db, log: log, hosts: hosts.NewStore(db.Gorm, nil).WithOvercommit(cfg.Overcommit), instances: instances.NewStore(db.Gorm, nil)}, nil
}

func (o *ops) close() {
	if o.q != nil {
		o.q.Close()
	}
	o.db.Close()
}

// queue returns the insert-only job queue: the CLI enqueues, the server's workers run.
func (o *ops) queue(ctx context.Context) (*queue.Queue, error) {
	if o.q != nil {
		return o.q, nil
	}
	q, err := queue.Open(ctx, o.db, queue.Config{Logger: o.log})
	if err != nil {
		return nil, fmt.Errorf("opening the job queue: %w", err)
	}
	o.q = q
	return q, nil
}

// service returns the instance service wired exactly as serve wires it (the doctor talks
// to the hosts and DNS through the same adapters the workers use).
func (o *ops) service(ctx context.Context) (*instances.Service, error) {
	keys, err := secret.NewKeyring(o.cfg.MasterKey, o.cfg.PreviousKeys...)
	if err != nil {
		return nil, fmt.Errorf("PROVISIONER_MASTER_KEY: %w", err)
	}
	q, err := o.queue(ctx)
	if err != nil {
		return nil, err
	}
	return newInstanceService(o.cfg, o.db, keys, o.instances, o.hosts, q, o.log, nil)
}

// jobRecorder is the queue the CLI's requests go through. instances.Service returns the
// instance, not the job it enqueued; the recorder keeps the job each insert returned (the
// new one, or the pending one an identical request was folded into), so that the CLI can
// name the job and follow it to its end.
type jobRecorder struct {
	q    *queue.Queue
	mu   sync.Mutex
	last *rivertype.JobInsertResult
}

var _ instances.Enqueuer = (*jobRecorder)(nil)

func (r *jobRecorder) Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	res, err := r.q.Insert(ctx, args, opts)
	if err == nil {
		r.mu.Lock()
		r.last = res
		r.mu.Unlock()
	}
	return res, err
}

// request runs one of the service's requests (Suspend, Upgrade, Retry, ...) and returns
// the instance and the job it queued (nil if it queued none). The requests only read and
// write the store and enqueue, so a service of the store and a recording queue is all
// they need; each request gets its own recorder, so concurrent requests never mix jobs.
func (o *ops) request(ctx context.Context, act func(*instances.Service) (instances.Instance, error)) (instances.Instance, *rivertype.JobInsertResult, error) {
	q, err := o.queue(ctx)
	if err != nil {
		return instances.Instance{}, nil, err
	}
	rec := &jobRecorder{q: q}
	archives, err := o.cfg.Backups.archives() // a move is refused without one
	if err != nil {
		return instances.Instance{}, nil, err
	}
	svc := instances.NewService(instances.Config{
		Store: o.instances, Queue: rec, Plans: o.cfg.Plans, Placer: placer{o.hosts}, Bucket: archives,
		BaseDomain: o.cfg.BaseDomain, TimeZone: o.cfg.Providers.TimeZone, Logger: o.log,
	})
	in, err := act(svc)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return in, rec.last, err
}

// flagNames maps the field names that store validation messages start with to the CLI
// flags that set them, so that an error names what the operator typed.
var flagNames = map[string]string{
	"name": "--name", "node": "--node", "vmid": "--vmid", "public_ip": "--public-ip",
	"ingress_url": "--ingress-url", "max_instances": "--max-instances", "limit": "--limit",
	"status": "--status", "image": "--image", "cursor": "--cursor",
}

// flagError rewrites a validation message that starts with a field name ("public_ip must
// be ...") into one that starts with its flag ("--public-ip must be ..."); other errors
// pass unchanged.
func flagError(path string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for field, flagName := range flagNames { // at most one matches: the field and a space
		if strings.HasPrefix(msg, field+" ") {
			return fmt.Errorf("%s: %s%s", path, flagName, strings.TrimPrefix(msg, field))
		}
	}
	return fmt.Errorf("%s: %w", path, err)
}
