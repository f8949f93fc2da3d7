// Package n8n is the client for one customer's n8n, reached through its host's ingress:
// it waits for the instance to be ready and creates its owner account.
//
// Modern n8n has no basic auth: the owner is created through POST /rest/owner/setup, which
// needs no authentication, so whoever calls it first owns the instance. The host's Traefik
// labels therefore put a basicauth guard in front of that one path, with a per-instance
// credential only the provisioner knows (SetupGuardHTPasswd makes its htpasswd line), and
// SetupOwner sends that credential through the ingress.
//
// A saga step that may run twice should treat ErrOwnerAlreadySetup as "maybe it was us":
// Login with the same email and password succeeds only if the earlier attempt was ours.
package n8n

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// ErrStarting is the sentinel for an instance that is on its way up: readiness not yet
// 200, or readiness 200 but the REST routes not mounted yet (n8n answers 404 for a few
// seconds after readiness) or still behind its start-up page. It reaches callers wrapped
// in an apperr.Unavailable; asking again shortly is the right answer, not a failure.
var ErrStarting = errors.New("n8n: still starting")

// ErrOwnerAlreadySetup is the sentinel for n8n's 400 "Instance owner already setup". It
// reaches callers wrapped in an apperr.Conflict.
var ErrOwnerAlreadySetup = errors.New("n8n: instance owner already set up")

// Config says how to reach one instance.
type Config struct {
	// IngressURL is the host's ingress, e.g. https://host-ingress:443 or http://127.0.0.1:8080.
	IngressURL string
	// Host is <slug>.<base-domain>, sent as the Host header (and, when HTTPClient is nil, as
	// the TLS server name, so that the instance's certificate is the one verified).
	Host string
	// HTTPClient carries the requests. Nil means a client of this package's own with a
	// 30-second timeout that does not follow redirects.
	HTTPClient *http.Client
}

// Owner is the account SetupOwner creates.
type Owner struct {
	Email     string
	FirstName string
	LastName  string
	Password  string
}

// BasicAuth is the ingress guard's credential for the owner-setup path.
type BasicAuth struct {
	User     string
	Password string
}

// Client talks to one n8n instance. It is safe for concurrent use.
type Client struct {
	base *url.URL
	host string
	hc   *http.Client
	err  error // a bad Config, reported by every call
}

// New returns a client for the instance cfg describes. A malformed IngressURL or a missing
// Host is reported as apperr.Invalid by every method.
func New(cfg Config) *Client {
	c := &Client{host: cfg.Host, hc: cfg.HTTPClient}
	u, err := url.Parse(strings.TrimRight(cfg.IngressURL, "/"))
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		c.err = apperr.New(apperr.Invalid, "n8n: ingress URL %q is not an http(s) URL", cfg.IngressURL)
	case cfg.Host == "":
		c.err = apperr.New(apperr.Invalid, "n8n: instance host name is empty")
	}
	c.base = u
	if c.hc == nil {
		c.hc = &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				// The ingress is on the provisioner's own network; an HTTPS_PROXY meant
				// for the internet must not see the guard credential.
				Proxy:               nil,
				DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
				TLSHandshakeTimeout: 10 * time.Second,
				TLSClientConfig:     &tls.Config{ServerName: hostOnly(cfg.Host), MinVersion: tls.VersionTLS12},
			},
			// A redirect (say, web → websecure) would re-send the guard credential to
			// wherever it points; surface it instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return c
}

func hostOnly(h string) string {
	if hp, _, err := net.SplitHostPort(h); err == nil {
		return hp
	}
	return h
}

// errorBody is n8n's error envelope, and also the raw zod issue it sends for a body that
// fails validation (both carry "message").
type errorBody struct {
	Code    any      `json:"code"`
	Message string   `json:"message"`
	Path    []string `json:"path"`
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request to the instance through the ingress. Transport failures come back
// as apperr.Unavailable; the request body never appears in an error.
func (c *Client) do(ctx context.Context, method, path string, body any, guard *BasicAuth) (*response, error) {
	if c.err != nil {
		return nil, c.err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, apperr.Wrap(apperr.Internal, err, "n8n: encode request")
		}
		rd = bytes.NewReader(b)
	}
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, apperr.Wrap(apperr.Internal, err, "n8n: build request")
	}
	req.Host = c.host
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if guard != nil && guard.User != "" {
		req.SetBasicAuth(guard.User, guard.Password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, apperr.Wrap(apperr.Unavailable, ctxErr, "n8n: %s %s on %s", method, path, c.host)
		}
		return nil, apperr.Wrap(apperr.Unavailable, scrubURLError(err), "n8n: %s %s on %s", method, path, c.host)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "n8n: read %s %s answer", method, path)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// scrubURLError drops the URL from a *url.Error: ours never carries a secret, but the
// wrapped cause is what operators read, and the bare network error says it all.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// message is n8n's error message from a response, cut to a sane length, or the status.
func (r *response) message() string {
	var eb errorBody
	if json.Unmarshal(r.body, &eb) == nil && eb.Message != "" {
		m := eb.Message
		if len(eb.Path) > 0 {
			m = strings.Join(eb.Path, ".") + ": " + m
		}
		return truncate(m, 300)
	}
	return fmt.Sprintf("HTTP %d", r.status)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Ready reports whether the instance answers 200 on /healthz/readiness through the ingress.
// Not-yet answers — 503 (n8n still migrating), 404 (the ingress has no router for the host
// yet), 502/504 (the container is not listening yet), a refused connection, or a TLS
// certificate not yet issued for the host — are false with a nil error. Anything else is an
// error: apperr.Unauthorized/Forbidden when the ingress guards the path, apperr.Unavailable
// for other transport failures and 5xx, apperr.Internal for answers n8n never gives.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	ok, _, err := c.ready(ctx)
	return ok, err
}

// ready is Ready that also explains a false answer (why), for WaitReady's error.
func (c *Client) ready(ctx context.Context) (ok bool, why, err error) {
	resp, err := c.do(ctx, http.MethodGet, "/healthz/readiness", nil, nil)
	if err != nil {
		if c.err != nil || ctx.Err() != nil {
			return false, nil, err
		}
		if notYet(err) {
			return false, err, nil
		}
		return false, nil, err
	}
	switch resp.status {
	case http.StatusOK:
		var body struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(resp.body, &body) != nil || body.Status != "ok" {
			// An n8n too old to have readiness serves its editor page here.
			return false, nil, apperr.New(apperr.Internal, "n8n: %s answered 200 on /healthz/readiness without {\"status\":\"ok\"}", c.host)
		}
		return true, nil, nil
	case http.StatusServiceUnavailable, http.StatusNotFound, http.StatusBadGateway, http.StatusGatewayTimeout:
		return false, fmt.Errorf("readiness answered HTTP %d", resp.status), nil
	}
	return false, nil, c.statusError(resp, "readiness check")
}

// notYet reports whether a transport error means "not up yet" rather than "broken".
func notYet(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr)
}

// CheckReady asks readiness once: nil when the instance is ready; apperr.Unavailable
// wrapping ErrStarting (with the reason) for a not-yet answer; any other error as Ready.
func (c *Client) CheckReady(ctx context.Context) error {
	ok, why, err := c.ready(ctx)
	switch {
	case err != nil:
		return err
	case !ok:
		return apperr.Wrap(apperr.Unavailable, ErrStarting, "n8n on %s is not ready yet: %s", c.host, why)
	}
	return nil
}

// WaitReady polls Ready every interval until the instance is ready. It keeps polling
// through not-yet answers and transient transport failures, returns at once on any other
// error, and returns apperr.Unavailable "n8n never became ready" (with the last reason as
// its cause) when ctx ends first.
func (c *Client) WaitReady(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, why, err := c.ready(ctx)
		switch {
		case ok:
			return nil
		case err != nil && ctx.Err() != nil:
			// The deadline cut the request short: report the wait, not the request.
		case err != nil && apperr.KindOf(err) != apperr.Unavailable:
			return err
		case err != nil:
			last = err
		default:
			last = why
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return apperr.Wrap(apperr.Unavailable, last, "n8n never became ready")
		case <-t.C:
		}
	}
}

// Unclaimed asks GET /rest/settings whether the instance serves its REST routes and still
// waits for its owner (userManagement.showSetupOnFirstLoad): nil when both hold;
// apperr.Conflict wrapping ErrOwnerAlreadySetup when it has an owner; apperr.Unavailable
// wrapping ErrStarting while the routes are not mounted (404, 502-504, the start-up page).
// A warm pool member is handed out only once this is nil: its owner setup then takes one
// request, and nobody got to it first.
func (c *Client) Unclaimed(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/rest/settings", nil, nil)
	if err != nil {
		if notYet(err) {
			return apperr.Wrap(apperr.Unavailable, ErrStarting, "n8n on %s is not serving yet: %v", c.host, err)
		}
		return err
	}
	var body struct {
		Data *struct {
			UserManagement struct {
				ShowSetupOnFirstLoad *bool `json:"showSetupOnFirstLoad"`
			} `json:"userManagement"`
		} `json:"data"`
	}
	switch {
	case resp.status == http.StatusNotFound || resp.status == http.StatusServiceUnavailable ||
		resp.status == http.StatusBadGateway || resp.status == http.StatusGatewayTimeout:
		return apperr.Wrap(apperr.Unavailable, ErrStarting, "n8n on %s is not serving its REST routes yet (HTTP %d)", c.host, resp.status)
	case resp.status != http.StatusOK:
		return c.statusError(resp, "settings")
	case json.Unmarshal(resp.body, &body) != nil || body.Data == nil || body.Data.UserManagement.ShowSetupOnFirstLoad == nil:
		return apperr.Wrap(apperr.Unavailable, ErrStarting, "n8n on %s is still starting (settings answered 200 without them)", c.host)
	case !*body.Data.UserManagement.ShowSetupOnFirstLoad:
		return apperr.Wrap(apperr.Conflict, ErrOwnerAlreadySetup, "n8n: %s already has an owner", c.host)
	}
	return nil
}

// SetupOwner creates the instance owner through POST /rest/owner/setup, sending guard as
// Basic credentials for the ingress. It returns nil when this call created the owner;
// apperr.Conflict wrapping ErrOwnerAlreadySetup when an owner exists (ours from an earlier
// attempt, or someone else's: check with Login); apperr.Invalid with n8n's message when n8n
// rejects the fields (bad email, empty name, weak password); apperr.Unauthorized when the
// ingress refuses the guard credential; apperr.Unavailable when n8n is not serving its REST
// routes yet (404, its start-up page, 5xx, 429) or cannot be reached — retry those later.
// No password appears in any error.
func (c *Client) SetupOwner(ctx context.Context, o Owner, guard BasicAuth) error {
	body := map[string]string{
		"email": o.Email, "firstName": o.FirstName, "lastName": o.LastName, "password": o.Password,
	}
	resp, err := c.do(ctx, http.MethodPost, "/rest/owner/setup", body, &guard)
	if err != nil {
		return err
	}
	switch resp.status {
	case http.StatusOK:
		// n8n's start-up gate answers 200 with a text page: that is not an owner.
		var ok struct {
			Data *struct {
				Email string `json:"email"`
			} `json:"data"`
		}
		if json.Unmarshal(resp.body, &ok) != nil || ok.Data == nil {
			return apperr.Wrap(apperr.Unavailable, ErrStarting, "n8n: %s is still starting (owner setup answered 200 without a user)", c.host)
		}
		if !strings.EqualFold(ok.Data.Email, o.Email) {
			return apperr.New(apperr.Internal, "n8n: %s answered owner setup with another user's email", c.host)
		}
		return nil
	case http.StatusBadRequest:
		msg := redact(resp.message(), o.Password, guard.Password)
		if strings.Contains(strings.ToLower(msg), "already setup") || strings.Contains(strings.ToLower(msg), "already set up") {
			return apperr.Wrap(apperr.Conflict, ErrOwnerAlreadySetup, "n8n: %s already has an owner", c.host)
		}
		return apperr.New(apperr.Invalid, "n8n: owner setup rejected: %s", msg)
	case http.StatusUnauthorized:
		return apperr.New(apperr.Unauthorized, "n8n: the ingress of %s refused the owner-setup guard credential", c.host)
	}
	return c.statusError(resp, "owner setup", o.Password, guard.Password)
}

// Login checks an email and password against the instance with POST /rest/login. It
// returns nil on 200, apperr.Unauthorized when n8n refuses them, apperr.Invalid for a
// request n8n cannot parse, and apperr.Unavailable when the instance cannot answer yet.
func (c *Client) Login(ctx context.Context, email, password string) error {
	body := map[string]string{"emailOrLdapLoginId": email, "password": password}
	resp, err := c.do(ctx, http.MethodPost, "/rest/login", body, nil)
	if err != nil {
		return err
	}
	switch resp.status {
	case http.StatusOK:
		var ok struct {
			Data *json.RawMessage `json:"data"`
		}
		if json.Unmarshal(resp.body, &ok) != nil || ok.Data == nil {
			return apperr.Wrap(apperr.Unavailable, ErrStarting, "n8n: %s is still starting (login answered 200 without a user)", c.host)
		}
		return nil
	case http.StatusUnauthorized:
		return apperr.New(apperr.Unauthorized, "n8n: %s refused the login: %s", c.host, redact(resp.message(), password))
	case http.StatusBadRequest:
		return apperr.New(apperr.Invalid, "n8n: login rejected: %s", redact(resp.message(), password))
	}
	return c.statusError(resp, "login", password)
}

// statusError maps the statuses every call shares.
func (c *Client) statusError(resp *response, what string, secrets ...string) error {
	msg := redact(resp.message(), secrets...)
	switch {
	case resp.status == http.StatusNotFound:
		return apperr.Wrap(apperr.Unavailable, ErrStarting, "n8n: %s on %s: REST routes not mounted yet (404)", what, c.host)
	case resp.status == http.StatusTooManyRequests || resp.status >= 500:
		return apperr.New(apperr.Unavailable, "n8n: %s on %s: %s", what, c.host, msg)
	case resp.status == http.StatusUnauthorized:
		return apperr.New(apperr.Unauthorized, "n8n: %s on %s: %s", what, c.host, msg)
	case resp.status == http.StatusForbidden:
		return apperr.New(apperr.Forbidden, "n8n: %s on %s: %s", what, c.host, msg)
	case resp.status >= 300 && resp.status < 400:
		return apperr.New(apperr.Internal, "n8n: %s on %s: redirected to %q; point the ingress URL at the entry point that serves it",
			what, c.host, resp.header.Get("Location"))
	}
	return apperr.New(apperr.Internal, "n8n: %s on %s: unexpected HTTP %d: %s", what, c.host, resp.status, msg)
}

// redact removes secrets from a message that came from the wire.
func redact(msg string, secrets ...string) string {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}
