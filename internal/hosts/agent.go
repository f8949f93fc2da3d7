package hosts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// AgentDefaultPath is where host bootstrap installs n8nctl on a host VM.
const AgentDefaultPath = "/opt/n8n-provisioner/bin/n8nctl"

// n8nctl's exit status for a request it will never accept (bad slug, bad setting): the
// caller must not retry the same input.
const agentExitInvalid = 2

// Executor runs argv with stdin on VM vmid of a Proxmox node and reports how it ended;
// *Proxmox satisfies it.
type Executor interface {
	Exec(ctx context.Context, node string, vmid int, argv []string, stdin []byte) (ExecResult, error)
}

var _ Executor = (*Proxmox)(nil)

// AgentConfig configures an Agent.
type AgentConfig struct {
	Exec Executor // required
	Path string   // n8nctl's path on the host VM; default AgentDefaultPath
}

// Agent runs `n8nctl <verb> <slug>` on host VMs. Settings (secrets included) travel on
// stdin as KEY=value lines, never in argv.
type Agent struct {
	exec Executor
	path string
}

// NewAgent returns an Agent, or apperr.Invalid when cfg has no Executor or a relative path.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Exec == nil {
		return nil, apperr.New(apperr.Invalid, "agent: no executor configured")
	}
	path := cfg.Path
	if path == "" {
		path = AgentDefaultPath
	}
	if !strings.HasPrefix(path, "/") {
		return nil, apperr.New(apperr.Invalid, "agent: n8nctl path %q is not absolute", path)
	}
	return &Agent{exec: cfg.Exec, path: path}, nil
}

// Path is where the agent runs n8nctl on a host VM.
func (a *Agent) Path() string { return a.path }

var (
	agentVerbRE = regexp.MustCompile(`^[a-z][a-z-]{0,31}$`)
	agentSlugRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	agentKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// Run executes `n8nctl verb slug` on VM vmid of node with settings on stdin and returns the
// JSON object n8nctl printed ({"ok":true,...}).
//
// Errors: Invalid when verb, slug or a setting is malformed, or when n8nctl exits 2 (it
// rejected the request; retrying the same input never helps); Unavailable when n8nctl
// exits with any other failure or the host cannot be reached (retry later); NotFound,
// Unauthorized, Forbidden from Proxmox; Internal when n8nctl's output is not its one JSON
// object. Error texts come from n8nctl's output with every setting value redacted.
func (a *Agent) Run(ctx context.Context, node string, vmid int, verb, slug string, settings map[string]string) (json.RawMessage, error) {
	if !agentVerbRE.MatchString(verb) {
		return nil, apperr.New(apperr.Invalid, "n8nctl verb %q is not valid", verb)
	}
	if !agentSlugRE.MatchString(slug) {
		return nil, apperr.New(apperr.Invalid, "instance slug %q is not valid", slug)
	}
	stdin, err := AgentEncodeSettings(settings)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("n8nctl %s %s on %s/%d", verb, slug, node, vmid)
	redact := agentRedactor(settings)

	res, err := a.exec.Exec(ctx, node, vmid, []string{a.path, verb, slug}, stdin)
	if err != nil {
		return nil, agentRewrap(err, what, redact)
	}
	if res.StdoutTruncated {
		return nil, apperr.New(apperr.Internal, "%s: output truncated", what)
	}
	out, parseErr := agentParseOutput(res.Stdout)

	var failure string // n8nctl's own words, best first
	if out.Error != "" {
		failure = out.Error
	} else if e := strings.TrimSpace(string(res.Stderr)); e != "" {
		failure = agentLastLines(e, 5)
	}
	failure = redact(failure)

	switch {
	case res.Signal != 0:
		return nil, apperr.New(apperr.Unavailable, "%s: killed by signal %d%s", what, res.Signal, agentSuffix(failure))
	case res.ExitCode == agentExitInvalid:
		if failure == "" {
			failure = "rejected the request"
		}
		return nil, apperr.New(apperr.Invalid, "%s: %s", what, failure)
	case res.ExitCode != 0:
		return nil, apperr.New(apperr.Unavailable, "%s: exit status %d%s", what, res.ExitCode, agentSuffix(failure))
	case parseErr != nil:
		return nil, apperr.Wrap(apperr.Internal, parseErr, "%s: output is not one JSON object: %q", what, redact(proxmoxExcerpt(res.Stdout, 300)))
	case !out.OK:
		return nil, apperr.New(apperr.Internal, "%s: exit status 0 but ok is not true%s", what, agentSuffix(failure))
	}
	return out.Raw, nil
}

// AgentEncodeSettings renders settings as n8nctl reads them on stdin: one KEY=value line
// per setting, sorted by key so that the same settings always produce the same bytes.
// A key must look like an environment variable name and a value must not contain a
// newline, carriage return or NUL; otherwise apperr.Invalid names the key (never the value).
func AgentEncodeSettings(settings map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for _, k := range keys {
		if !agentKeyRE.MatchString(k) {
			return nil, apperr.New(apperr.Invalid, "setting name %q is not a valid variable name", k)
		}
		v := settings[k]
		if strings.ContainsAny(v, "\n\r\x00") {
			return nil, apperr.New(apperr.Invalid, "setting %s has a line break or NUL in its value", k)
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

type agentOutput struct {
	OK    bool
	Error string
	Raw   json.RawMessage
}

// agentParseOutput finds the JSON object n8nctl printed: all of stdout, or else its last
// non-empty line (a stray line from a tool n8nctl ran must not hide the answer).
func agentParseOutput(stdout []byte) (agentOutput, error) {
	candidates := [][]byte{bytes.TrimSpace(stdout)}
	lines := bytes.Split(candidates[0], []byte("\n"))
	if last := bytes.TrimSpace(lines[len(lines)-1]); len(lines) > 1 {
		candidates = append(candidates, last)
	}
	var lastErr error = errors.New("empty output")
	for _, c := range candidates {
		if len(c) == 0 || c[0] != '{' {
			continue
		}
		var fields struct {
			OK    *bool           `json:"ok"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(c, &fields); err != nil {
			lastErr = err
			continue
		}
		if fields.OK == nil {
			lastErr = errors.New(`no "ok" field`)
			continue
		}
		out := agentOutput{OK: *fields.OK, Raw: json.RawMessage(slices.Clone(c))}
		// "error" is a string in n8nctl's contract; keep any other shape readable.
		var s string
		if json.Unmarshal(fields.Error, &s) == nil {
			out.Error = s
		} else if len(fields.Error) > 0 && string(fields.Error) != "null" {
			out.Error = string(fields.Error)
		}
		return out, nil
	}
	return agentOutput{}, lastErr
}

// agentRedactor returns a function that blanks every setting value long enough to be
// recognised (and every value of a secret-looking key) out of a text, so that an n8nctl
// error message echoing its input cannot leak a secret into a job error or timeline.
func agentRedactor(settings map[string]string) func(string) string {
	var values []string
	for k, v := range settings {
		upper := strings.ToUpper(k)
		secretKey := strings.Contains(upper, "PASS") || strings.Contains(upper, "SECRET") ||
			strings.Contains(upper, "TOKEN") || strings.Contains(upper, "KEY")
		if len(v) >= 6 || (secretKey && len(v) >= 3) {
			values = append(values, v)
		}
	}
	// Longest first, so that a value containing another is blanked whole.
	slices.SortFunc(values, func(a, b string) int { return len(b) - len(a) })
	return func(s string) string {
		for _, v := range values {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
		return s
	}
}

// agentRewrap prefixes an Executor error's public message with what was being run, keeping
// its kind and cause.
func agentRewrap(err error, what string, redact func(string) string) error {
	var ae *apperr.Error
	if errors.As(err, &ae) {
		return &apperr.Error{Kind: ae.Kind, Message: what + ": " + redact(ae.Message), Err: ae.Err}
	}
	return apperr.Wrap(apperr.Internal, err, "%s", what)
}

func agentLastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return proxmoxExcerpt([]byte(strings.Join(lines, "\n")), 500)
}

func agentSuffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}
