// Package objstoretest gives tests a real S3 bucket and a way to make it fail.
//
// Config returns the bucket scripts/test.sh (through scripts/s3.sh) starts: a SeaweedFS
// server on loopback with authenticated S3 identities, named by PROVISIONER_TEST_S3_*.
// Every call gets a fresh prefix, so parallel tests never see each other's objects, and
// the prefix is emptied when the test ends.
//
// Faults is a reverse proxy to put between a Store and that server. It forwards requests
// unchanged (the signed Host header included, so signatures still verify) and, on demand,
// answers the next requests that match with S3's 500 InternalError or 503 SlowDown (in
// S3's XML error shape), hangs them until the client gives up, or resets the connection.
// It counts the requests it sees per method. It covers what a flaky or unreachable bucket
// looks like on the wire; it knows nothing of S3 beyond the error body.
package objstoretest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// The environment scripts/s3.sh prints.
const (
	EnvEndpoint        = "PROVISIONER_TEST_S3_ENDPOINT"
	EnvAccessKeyID     = "PROVISIONER_TEST_S3_ACCESS_KEY_ID"
	EnvSecretAccessKey = "PROVISIONER_TEST_S3_SECRET_ACCESS_KEY"
	EnvBucket          = "PROVISIONER_TEST_S3_BUCKET"
	EnvRegion          = "PROVISIONER_TEST_S3_REGION" // optional, default us-east-1
	// EnvRequire makes a missing S3 environment fail the tests instead of skipping them.
	EnvRequire = "PROVISIONER_TEST_REQUIRE_S3"
)

// Config returns a configuration for the test bucket under a prefix of its own
// ("test/<test name>-<random>/"), path-style as a loopback server needs. It skips t when
// PROVISIONER_TEST_S3_* is unset, or fails it when PROVISIONER_TEST_REQUIRE_S3=1. The
// secret key is declared to testlog, and the prefix is emptied at cleanup.
func Config(t testing.TB) objstore.Config {
	t.Helper()
	cfg := objstore.Config{
		Endpoint:        os.Getenv(EnvEndpoint),
		Region:          os.Getenv(EnvRegion),
		Bucket:          os.Getenv(EnvBucket),
		AccessKeyID:     os.Getenv(EnvAccessKeyID),
		SecretAccessKey: os.Getenv(EnvSecretAccessKey),
		PathStyle:       true,
	}
	if cfg.Endpoint == "" || cfg.Bucket == "" || cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		msg := "no S3 server: set " + EnvEndpoint + ", " + EnvBucket + ", " + EnvAccessKeyID + " and " +
			EnvSecretAccessKey + " (scripts/s3.sh start DIR prints them; scripts/test.sh does it all)"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg + ", or unset " + EnvRequire)
		}
		t.Skip(msg)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	testlog.Secret(t, cfg.SecretAccessKey)
	cfg.Prefix = "test/" + sanitize(t.Name()) + "-" + randomHex(6) + "/"
	t.Cleanup(func() { empty(t, cfg) })
	return cfg
}

// empty deletes what a test left under its prefix, so that the shared server stays small.
func empty(t testing.TB, cfg objstore.Config) {
	s, err := objstore.New(cfg)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := s.Keys(ctx, "")
	if err != nil {
		t.Logf("objstoretest: emptying %s: %v", cfg.Prefix, err)
		return
	}
	for _, k := range keys {
		if err := s.Delete(ctx, k); err != nil {
			t.Logf("objstoretest: emptying %s: %v", cfg.Prefix, err)
			return
		}
	}
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Fault is what Faults does to a request instead of forwarding it.
type Fault int

const (
	// InternalError answers 500 with S3's InternalError body; the SDK retries it.
	InternalError Fault = iota + 1
	// SlowDown answers 503 with S3's SlowDown body (throttling); the SDK retries it.
	SlowDown
	// Hang holds the request until the client gives up (or the Faults is closed).
	Hang
	// Reset closes the connection abruptly (TCP RST) without answering.
	Reset
)

func (f Fault) String() string {
	switch f {
	case InternalError:
		return "500 InternalError"
	case SlowDown:
		return "503 SlowDown"
	case Hang:
		return "hang"
	case Reset:
		return "connection reset"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Match selects the requests a fault applies to; nil matches every request.
type Match func(*http.Request) bool

// Method matches the requests of an HTTP method.
func Method(m string) Match { return func(r *http.Request) bool { return r.Method == m } }

// CompleteUpload matches CompleteMultipartUpload (POST ?uploadId=).
func CompleteUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
}

type rule struct {
	fault Fault
	n     int
	match Match
}

// Faults is an http.Handler that forwards to Target and injects faults. Its zero value
// with Target set is ready; NewFaults also starts it on a loopback port. Safe for
// concurrent use.
type Faults struct {
	Target *url.URL

	mu       sync.Mutex
	rules    []*rule
	seen     map[string]int
	injected int
	proxy    *httputil.ReverseProxy
	closed   chan struct{}
	server   *httptest.Server
}

// NewFaults starts a Faults in front of cfg's endpoint, closed at t's cleanup, and returns
// it with a copy of cfg that goes through it.
func NewFaults(t testing.TB, cfg objstore.Config) (*Faults, objstore.Config) {
	t.Helper()
	target, err := url.Parse(cfg.Endpoint)
	if err != nil || target.Host == "" {
		t.Fatalf("objstoretest: the endpoint is not a URL")
	}
	f := &Faults{Target: target}
	f.server = httptest.NewServer(f)
	t.Cleanup(f.Close)
	cfg.Endpoint = f.server.URL
	cfg.PathStyle = true
	return f, cfg
}

// URL is the proxy's base URL (when started by NewFaults).
func (f *Faults) URL() string {
	if f.server == nil {
		return ""
	}
	return f.server.URL
}

// Close releases hanging requests and stops the server NewFaults started.
func (f *Faults) Close() {
	f.mu.Lock()
	f.init()
	select {
	case <-f.closed:
	default:
		close(f.closed)
	}
	f.mu.Unlock()
	if f.server != nil {
		f.server.CloseClientConnections()
		f.server.Close()
	}
}

// Inject makes the next n requests that match (nil: any) meet fault. Rules apply in the
// order they were injected.
func (f *Faults) Inject(n int, fault Fault, match Match) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{fault: fault, n: n, match: match})
}

// Clear drops every pending fault.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Seen returns how many requests of method arrived (faulted or forwarded); "" counts all.
func (f *Faults) Seen(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if method == "" {
		n := 0
		for _, c := range f.seen {
			n += c
		}
		return n
	}
	return f.seen[method]
}

// Injected returns how many requests met a fault.
func (f *Faults) Injected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

// init sets up the lazily built parts; f.mu is held.
func (f *Faults) init() {
	if f.seen == nil {
		f.seen = map[string]int{}
	}
	if f.closed == nil {
		f.closed = make(chan struct{})
	}
	if f.proxy == nil && f.Target != nil {
		target := f.Target
		f.proxy = &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(target)
				// The client signed the Host it talked to: keep it, and add no
				// X-Forwarded-* that a server might prefer when checking signatures.
				r.Out.Host = r.In.Host
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				writeS3Error(w, http.StatusBadGateway, "BadGateway", "objstoretest: the server behind the proxy failed")
			},
		}
	}
}

func (f *Faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.init()
	f.seen[r.Method]++
	var fault Fault
	for i, rl := range f.rules {
		if rl.match == nil || rl.match(r) {
			fault = rl.fault
			if rl.n--; rl.n <= 0 {
				f.rules = append(f.rules[:i], f.rules[i+1:]...)
			}
			f.injected++
			break
		}
	}
	proxy, closed := f.proxy, f.closed
	f.mu.Unlock()

	switch fault {
	case InternalError:
		writeS3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case SlowDown:
		w.Header().Set("Retry-After", "1")
		writeS3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case Hang:
		select {
		case <-r.Context().Done():
		case <-closed:
		}
	case Reset:
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic(http.ErrAbortHandler)
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST, not FIN
		}
		conn.Close()
	default:
		if proxy == nil {
			writeS3Error(w, http.StatusBadGateway, "BadGateway", "objstoretest: Faults has no Target")
			return
		}
		proxy.ServeHTTP(w, r)
	}
}

// writeS3Error answers in the shape S3 uses for errors.
func writeS3Error(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-amz-request-id", "objstoretest")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><RequestId>objstoretest</RequestId></Error>`, code, message)
}
