// Tests of n8nctl's archives on their way off a host and back: encrypted with age as
// they are written (backup RECIPIENT), checked whole before anything stops (restore
// SHA256, IDENTITY), an upgrade's encrypted rollback, upload through presigned part
// URLs to fakeS3, fetch from it to a host without the instance, and prune. Keys are
// made the way the provisioner makes them, with filippo.io/age; the host runs the age
// CLI, so each test also checks that the two agree.
package scripts_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
)

// needAge skips a test that needs the age CLI where it is not installed, and fails it
// where the suite must run whole (PROVISIONER_TEST_REQUIRE_POSTGRES=1, set by
// scripts/test.sh in CI).
func needAge(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("age"); err == nil {
		return
	}
	if os.Getenv("PROVISIONER_TEST_REQUIRE_POSTGRES") == "1" {
		t.Fatal("age is not on PATH: n8nctl encrypts backups with it; scripts/install-tools.sh installs it in $(go env GOPATH)/bin")
	}
	t.Skip("age is not on PATH (scripts/install-tools.sh installs it)")
}

func needCurl(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("PROVISIONER_TEST_REQUIRE_POSTGRES") == "1" {
			t.Fatal("curl is not on PATH: n8nctl transfers archives with it")
		}
		t.Skip("curl is not on PATH")
	}
}

// newKey returns an archive's age key pair, as the provisioner generates it.
func newKey(t testing.TB) (recipient, identity string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient().String(), id.String()
}

func readBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeBytes(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// withSidecar writes b as archive name in the backup dir of slug, with an honest
// .sha256: the archive is then refused, if at all, for what it holds.
func (h *host) withSidecar(slug, name string, b []byte) string {
	h.t.Helper()
	p := filepath.Join(h.backups, slug, name)
	writeBytes(h.t, p, b)
	writeBytes(h.t, p+".sha256", []byte(sha256Hex(b)+"  "+name+"\n"))
	return p
}

// decrypt opens an archive with its identity, as the provisioner's Go code would.
func decrypt(t testing.TB, ciphertext []byte, identity string) []byte {
	t.Helper()
	id, err := age.ParseX25519Identity(identity)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.Decrypt(bytes.NewReader(ciphertext), id)
	if err != nil {
		t.Fatalf("age decrypt: %v", err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("age decrypt: %v", err)
	}
	return b
}

// tarFiles returns the regular files of a .tar.gz, by name.
func tarFiles(t testing.TB, tgz []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("not a tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = string(b)
		}
	}
}

func readJSON(t testing.TB, path string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readBytes(t, path), &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// argvRecorder puts a shim of each named program first on PATH; a shim logs its argv
// and environment, what any local user can read of n8nctl's children in ps and /proc,
// then execs the real program. It returns the PATH= setting and the log's path.
func argvRecorder(t testing.TB, names ...string) (pathEnv, log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "argv.log")
	for _, n := range names {
		real, err := exec.LookPath(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		script := fmt.Sprintf("#!/bin/sh\n{ printf '%%s' %s; printf ' %%s' \"$@\"; printf '\\n'; env; } >>'%s'\nexec '%s' \"$@\"\n", n, log, real)
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return "PATH=" + dir + ":" + os.Getenv("PATH"), log
}

// recorded returns what the shims logged, failing if they logged nothing.
func recorded(t testing.TB, log string, program string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("\n"+program+" ")) && !bytes.HasPrefix(b, []byte(program+" ")) {
		t.Fatalf("the %s shim never ran: the test checks nothing", program)
	}
	return string(b)
}

// ---------------------------------------------------------------- fakeS3

// fakeS3 is what n8nctl meets of an S3-compatible bucket: the presigned URLs of a
// multipart upload's parts (PUT /<key>?partNumber=N&uploadId=U&X-Amz-Signature=S) and of
// an object's download (GET /<key>?X-Amz-Signature=S). As S3 does, it refuses a chunked
// PUT (501 NotImplemented: presigned PUTs need a length), one without Content-Length
// (411 MissingContentLength), a body shorter than that (400 IncompleteBody) and a wrong
// signature (403 SignatureDoesNotMatch), answers a part with ETag "<md5 hex>" and keeps
// its bytes, and errors as S3 does, in an XML <Error> with a <Code>. Not covered:
// CreateMultipartUpload, CompleteMultipartUpload, ranges, checksums other than the ETag.
//
// Its zero value accepts any signature. Knobs: Signature (the one every URL must carry),
// FailNext (500
// InternalError for the next n requests of a target), Forbid (403 AccessDenied, an
// expired URL, for every request of a target), HoldPart (keep a part's answer until
// released). Targets are "part N" and an object's path. Tries and Refused show what came.
type fakeS3 struct {
	Signature string

	mu       sync.Mutex
	parts    map[int]fakePart
	objects  map[string][]byte
	fail     map[string]int
	forbid   map[string]bool
	tries    map[string]int
	refused  []string
	hold     string
	arrived  chan struct{}
	released chan struct{}
}

type fakePart struct {
	data []byte
	size int64
	etag string
}

func partTarget(n int) string { return "part " + strconv.Itoa(n) }

func (s *fakeS3) init() {
	if s.parts == nil {
		s.parts, s.objects, s.fail, s.forbid, s.tries = map[int]fakePart{}, map[string][]byte{}, map[string]int{}, map[string]bool{}, map[string]int{}
	}
}

func (s *fakeS3) PutObject(path string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.objects[path] = b
}

func (s *fakeS3) FailNext(target string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.fail[target] = n
}

func (s *fakeS3) Forbid(target string, forbid bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.forbid[target] = forbid
}

// HoldPart keeps part n's answer, once its bytes are in, until release; arrived
// closes when it is held.
func (s *fakeS3) HoldPart(n int) (arrived <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.arrived, s.released = partTarget(n), make(chan struct{}), make(chan struct{})
	var once sync.Once
	ch := s.released
	return s.arrived, func() { once.Do(func() { close(ch) }) }
}

func (s *fakeS3) Tries(target string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tries[target]
}

func (s *fakeS3) Refused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.refused)
}

func (s *fakeS3) Part(n int) (fakePart, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.parts[n]
	return p, ok
}

// Assembled is the object CompleteMultipartUpload would make of parts 1..n.
func (s *fakeS3) Assembled(n int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	for i := 1; i <= n; i++ {
		b = append(b, s.parts[i].data...)
	}
	return b
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s</Message><RequestId>FAKE</RequestId></Error>", code, msg)
}

func (s *fakeS3) refuse(w http.ResponseWriter, status int, code, msg string) {
	s.mu.Lock()
	s.refused = append(s.refused, code)
	s.mu.Unlock()
	s3Error(w, status, code, msg)
}

// attempt counts a try of target and says whether it is to fail, and how.
func (s *fakeS3) attempt(target string) (status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.tries[target]++
	switch {
	case s.forbid[target]:
		return http.StatusForbidden
	case s.fail[target] > 0:
		s.fail[target]--
		return http.StatusInternalServerError
	}
	return 0
}

func (s *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Signature != "" && r.URL.Query().Get("X-Amz-Signature") != s.Signature {
		s.refuse(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	switch r.Method {
	case http.MethodPut:
		s.putPart(w, r)
	case http.MethodGet:
		s.getObject(w, r)
	default:
		s.refuse(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
	}
}

func (s *fakeS3) putPart(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := strconv.Atoi(q.Get("partNumber"))
	if err != nil || n < 1 || n > 10000 || q.Get("uploadId") == "" {
		s.refuse(w, http.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
		return
	}
	if slices.Contains(r.TransferEncoding, "chunked") {
		s.refuse(w, http.StatusNotImplemented, "NotImplemented", "A header you provided implies functionality that is not implemented")
		return
	}
	if r.ContentLength < 0 {
		s.refuse(w, http.StatusLengthRequired, "MissingContentLength", "You must provide the Content-Length HTTP header.")
		return
	}
	target := partTarget(n)
	switch s.attempt(target) {
	case http.StatusForbidden:
		s3Error(w, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	case http.StatusInternalServerError:
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	sum := md5.New()
	var data bytes.Buffer
	got, err := io.Copy(io.MultiWriter(sum, &data), r.Body)
	if err != nil || got != r.ContentLength {
		s.refuse(w, http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
		return
	}
	etag := `"` + hex.EncodeToString(sum.Sum(nil)) + `"`
	s.mu.Lock()
	s.parts[n] = fakePart{data: data.Bytes(), size: got, etag: etag}
	var arrived, released chan struct{}
	if s.hold == target {
		arrived, released, s.hold = s.arrived, s.released, ""
	}
	s.mu.Unlock()
	if arrived != nil {
		close(arrived)
		<-released
	}
	w.Header().Set("ETag", etag)
	w.WriteHeader(http.StatusOK)
}

func (s *fakeS3) getObject(w http.ResponseWriter, r *http.Request) {
	switch s.attempt(r.URL.Path) {
	case http.StatusForbidden:
		s3Error(w, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	case http.StatusInternalServerError:
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	s.mu.Lock()
	b, ok := s.objects[r.URL.Path]
	s.mu.Unlock()
	if !ok {
		s.refuse(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	sum := md5.Sum(b)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// startS3 serves s on a loopback port for the test's lifetime.
func startS3(t testing.TB, s *fakeS3) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// uploadInput is upload's stdin for archive name of size bytes in parts of partSize
// (the last one shorter), with presigned-looking URLs on base.
func uploadInput(base, sig, name string, size, partSize int64) string {
	var b strings.Builder
	parts := int((size + partSize - 1) / partSize)
	fmt.Fprintf(&b, "ARCHIVE=%s\nPARTS=%d\n", name, parts)
	for n := 1; n <= parts; n++ {
		off := int64(n-1) * partSize
		fmt.Fprintf(&b, "PART_%d_URL=%s/n8n-backups/instances/i1/%s?partNumber=%d&uploadId=U1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAFAKE%%2F20261207%%2Fauto%%2Fs3%%2Faws4_request&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=%s\n",
			n, base, name, n, sig)
		fmt.Fprintf(&b, "PART_%d_OFFSET=%d\nPART_%d_SIZE=%d\n", n, off, n, min(partSize, size-off))
	}
	return b.String()
}

func randomSignature() string {
	var b [32]byte
	for i := range b {
		b[i] = byte(rand.IntN(256))
	}
	return hex.EncodeToString(b[:])
}

// TestFakeS3RefusesWhatS3Refuses keeps fakeS3 honest about the refusals n8nctl's
// upload must avoid, and shows why n8nctl turns curl's chunked upload off.
func TestFakeS3RefusesWhatS3Refuses(t *testing.T) {
	t.Parallel()
	needCurl(t)
	s3 := &fakeS3{Signature: "sig"}
	srv := startS3(t, s3)
	url := srv.URL + "/b/k?partNumber=1&uploadId=U&X-Amz-Signature=sig"
	put := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("curl", append([]string{"-q", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-T", "-"}, args...)...)
		cmd.Stdin = strings.NewReader("0123456789")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl %q: %v", args, err)
		}
		return string(out)
	}
	// curl streams a body of unknown length chunked, even with a Content-Length header.
	if got := put("-H", "Content-Length: 10", url); got != "501" {
		t.Errorf("chunked PUT: HTTP %s, want 501", got)
	}
	if got := put("-H", "Content-Length: 10", "-H", "Transfer-Encoding:", url); got != "200" {
		t.Errorf("PUT with a length: HTTP %s, want 200", got)
	}
	if p, _ := s3.Part(1); string(p.data) != "0123456789" || p.etag != `"781e5e245d69b566979b86e28d23f2c7"` {
		t.Errorf("part 1 = %q %s", p.data, p.etag)
	}
	if got := put("-H", "Content-Length: 10", "-H", "Transfer-Encoding:", strings.Replace(url, "=sig", "=forged", 1)); got != "403" {
		t.Errorf("forged signature: HTTP %s, want 403", got)
	}
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader("abc"))
	req.ContentLength = 10 // promises more than it sends
	if resp, err := http.DefaultTransport.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Errorf("short body: HTTP %d, want the request to fail", resp.StatusCode)
	}
	if got := s3.Refused(); !slices.Contains(got, "NotImplemented") || !slices.Contains(got, "SignatureDoesNotMatch") {
		t.Errorf("refused = %q", got)
	}
}

// ---------------------------------------------------------------- backup, restore

func TestEncryptedBackup(t *testing.T) {
	t.Parallel()
	needAge(t)
	h := setup(t)
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "version one: the customer's workflows")
	h.writeFile("acme/data/binaryData/a.bin", "attachment")
	recipient, identity := newKey(t)

	for _, bad := range []string{"age1short", "AGE-SECRET-KEY-1" + strings.Repeat("Q", 58), "age1" + strings.Repeat("Q", 58), "age1" + strings.Repeat("q", 58) + " x"} {
		if res := h.run("backup", "acme", "RECIPIENT="+bad+"\n"); res.code != 2 {
			t.Errorf("RECIPIENT=%q: exit %d, want 2", bad, res.code)
		}
	}
	if n := len(h.callsOf("stop")); n != 0 {
		t.Errorf("an invalid RECIPIENT stopped the container (%d stops)", n)
	}

	out := h.must("backup", "acme", "RECIPIENT="+recipient+"\n")
	path, name := out["path"].(string), out["name"].(string)
	if filepath.Dir(path) != filepath.Join(h.backups, "acme") || filepath.Base(path) != name || !strings.HasSuffix(name, ".tar.gz.age") {
		t.Fatalf("path %q, name %q", path, name)
	}
	ciphertext := readBytes(t, path)
	want(t, out, map[string]any{"encrypted": true, "sha256": sha256Hex(ciphertext), "bytes": float64(len(ciphertext)), "files": 2.0})
	if !bytes.HasPrefix(ciphertext, []byte("age-encryption.org/v1\n")) || bytes.HasPrefix(ciphertext, []byte{0x1f, 0x8b}) ||
		bytes.Contains(ciphertext, []byte("workflows")) {
		t.Errorf("the archive is not age ciphertext: %q...", ciphertext[:min(40, len(ciphertext))])
	}
	if got := string(readBytes(t, path+".sha256")); got != sha256Hex(ciphertext)+"  "+name+"\n" {
		t.Errorf("sidecar = %q, want the ciphertext's hash", got)
	}
	manifest := readJSON(t, strings.TrimSuffix(path, ".tar.gz.age")+".json")
	want(t, manifest, map[string]any{"slug": "acme", "archive": name, "encrypted": true, "sha256": sha256Hex(ciphertext),
		"bytes": float64(len(ciphertext)), "image": imageV1, "created_at": out["created_at"]})

	files := tarFiles(t, decrypt(t, ciphertext, identity))
	if files["data/database.sqlite"] != "version one: the customer's workflows" || files["data/binaryData/a.bin"] != "attachment" {
		t.Errorf("decrypted archive holds %v", files)
	}
	// No plaintext copy, finished or temporary, is left beside it.
	entries, _ := os.ReadDir(filepath.Join(h.backups, "acme"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	base := strings.TrimSuffix(name, ".tar.gz.age")
	if !slices.Equal(names, []string{base + ".json", name, name + ".sha256"}) {
		t.Errorf("backup dir holds %q", names)
	}
	calls := h.calls()
	stop, start := slices.Index(calls, "docker stop n8n-acme"), slices.Index(calls, "docker start n8n-acme")
	if stop < 0 || start < stop {
		t.Errorf("want stop then start around the backup: %q", calls)
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true})

	// A second one in the same second gets a base of its own; a plain one stays plain.
	second := h.must("backup", "acme", "RECIPIENT="+recipient+"\n")
	plain := h.must("backup", "acme", "")
	if second["name"] == name || strings.TrimSuffix(plain["name"].(string), ".tar.gz") == base {
		t.Errorf("names %v %v %v share a base", name, second["name"], plain["name"])
	}
	want(t, plain, map[string]any{"encrypted": false})
	if !strings.HasSuffix(plain["name"].(string), ".tar.gz") || tarFiles(t, readBytes(t, plain["path"].(string)))["data/database.sqlite"] == "" {
		t.Errorf("plain backup %v", plain)
	}
}

func TestEncryptedRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	needAge(t)
	h := setup(t)
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "version one")
	recipient, identity := newKey(t)
	out := h.must("backup", "acme", "RECIPIENT="+recipient+"\n")
	path, sum := out["path"].(string), out["sha256"].(string)

	h.writeFile("acme/data/database.sqlite", "version two")
	h.writeFile("acme/data/new.txt", "later")
	res := h.must("restore", "acme", "BACKUP="+path+"\nSHA256="+sum+"\nIDENTITY="+identity+"\n")
	want(t, res, map[string]any{"restored_from": path, "sha256": sum, "running": true})
	if got := h.readFile("acme/data/database.sqlite"); got != "version one" {
		t.Errorf("database after restore = %q", got)
	}
	if _, err := os.Stat(filepath.Join(h.root, "acme/data/new.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Error("restore kept a file the backup did not have")
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true})
	// Without SHA256 the sidecar alone vouches for it.
	h.must("restore", "acme", "BACKUP="+path+"\nIDENTITY="+identity+"\n")
	if strings.Contains(h.outputs.String(), identity) {
		t.Error("the identity is in n8nctl's output")
	}
	entries, _ := os.ReadDir(filepath.Join(h.root, "acme"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("restore left %s behind", e.Name())
		}
	}
}

func TestEncryptedRestoreRefusesAndTouchesNothing(t *testing.T) {
	t.Parallel()
	needAge(t)
	h := setup(t)
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "version one")
	recipient, identity := newKey(t)
	out := h.must("backup", "acme", "RECIPIENT="+recipient+"\n")
	path, sum := out["path"].(string), out["sha256"].(string)
	h.writeFile("acme/data/database.sqlite", "version two")
	ciphertext := readBytes(t, path)
	_, otherIdentity := newKey(t)

	// Damaged copies, each with an honest sidecar, so that only decrypting finds it out.
	truncated := h.withSidecar("acme", "truncated.tar.gz.age", ciphertext[:len(ciphertext)-20])
	flipped := slices.Clone(ciphertext)
	flipped[len(flipped)-30] ^= 0x01
	flippedPath := h.withSidecar("acme", "flipped.tar.gz.age", flipped)
	// And one whose sidecar was not updated.
	stale := h.withSidecar("acme", "stale.tar.gz.age", flipped)
	writeBytes(t, stale+".sha256", readBytes(t, path+".sha256"))
	notGzip := func() []byte {
		var b bytes.Buffer
		w, err := age.Encrypt(&b, mustRecipient(t, recipient))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "not a tar.gz at all")
		w.Close()
		return b.Bytes()
	}()
	notGzipPath := h.withSidecar("acme", "notgzip.tar.gz.age", notGzip)

	for _, tc := range []struct {
		name, stdin string
		code        int
		says        []string
	}{
		{"wrong identity", "BACKUP=" + path + "\nIDENTITY=" + otherIdentity + "\n", 1, []string{"does not decrypt", "no identity matched"}},
		{"truncated", "BACKUP=" + truncated + "\nIDENTITY=" + identity + "\n", 1, []string{"is truncated or corrupt"}},
		{"one flipped byte", "BACKUP=" + flippedPath + "\nIDENTITY=" + identity + "\n", 1, []string{"is truncated or corrupt", "authenticate"}},
		{"flipped byte, stale sidecar", "BACKUP=" + stale + "\nIDENTITY=" + identity + "\n", 1, []string{"checksum mismatch"}},
		{"plaintext not a tar.gz", "BACKUP=" + notGzipPath + "\nIDENTITY=" + identity + "\n", 1, []string{"is truncated or corrupt"}},
		{"SHA256 is not the record", "BACKUP=" + path + "\nSHA256=" + strings.Repeat("0", 64) + "\nIDENTITY=" + identity + "\n", 1,
			[]string{"checksum mismatch", "expected " + strings.Repeat("0", 64) + " (the provisioner's record), got " + sum}},
		// The provisioner's record wins even when the file and its sidecar agree.
		{"SHA256 of the undamaged file", "BACKUP=" + flippedPath + "\nSHA256=" + sum + "\nIDENTITY=" + identity + "\n", 1,
			[]string{"checksum mismatch", "expected " + sum}},
		{"no IDENTITY", "BACKUP=" + path + "\n", 2, []string{"IDENTITY is required"}},
		{"malformed IDENTITY", "BACKUP=" + path + "\nIDENTITY=AGE-SECRET-KEY-1nope\n", 2, []string{"IDENTITY must be"}},
		{"malformed SHA256", "BACKUP=" + path + "\nSHA256=ABC\nIDENTITY=" + identity + "\n", 2, []string{"SHA256"}},
		{"wrong suffix", "BACKUP=" + path + ".bak\nIDENTITY=" + identity + "\n", 2, []string{".tar.gz.age"}},
	} {
		before := len(h.calls())
		res := h.run("restore", "acme", tc.stdin)
		if res.code != tc.code {
			t.Errorf("%s: exit %d, want %d: %v", tc.name, res.code, tc.code, res.out)
		}
		msg, _ := res.out["error"].(string)
		for _, s := range tc.says {
			if !strings.Contains(msg, s) {
				t.Errorf("%s: error %q does not say %q", tc.name, msg, s)
			}
		}
		if got := h.readFile("acme/data/database.sqlite"); got != "version two" {
			t.Errorf("%s: data touched: %q", tc.name, got)
		}
		for _, c := range h.calls()[before:] {
			if !strings.HasPrefix(c, "docker inspect ") {
				t.Errorf("%s: docker %s", tc.name, c)
			}
		}
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true})
	if strings.Contains(h.outputs.String(), identity) || strings.Contains(h.outputs.String(), otherIdentity) {
		t.Error("an identity is in n8nctl's output")
	}
	entries, _ := os.ReadDir(filepath.Join(h.root, "acme"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("a refused restore left %s behind", e.Name())
		}
	}
	// The genuine archive still restores.
	h.must("restore", "acme", "BACKUP="+path+"\nSHA256="+sum+"\nIDENTITY="+identity+"\n")
	if got := h.readFile("acme/data/database.sqlite"); got != "version one" {
		t.Errorf("after the good restore: %q", got)
	}
}

func mustRecipient(t testing.TB, s string) age.Recipient {
	t.Helper()
	r, err := age.ParseX25519Recipient(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ---------------------------------------------------------------- upgrade

func TestUpgradeEncryptsItsBackupAndRollsBackFromIt(t *testing.T) {
	t.Parallel()
	needAge(t)
	dir := t.TempDir()
	hook := filepath.Join(dir, "on-start")
	// The new image "migrates" the database as it starts, so the rollback must restore it.
	script := `#!/usr/bin/env bash
set -euo pipefail
image=$(jq -r .Config.Image "$2/container.json")
data=$(jq -r '.Mounts[0].Source' "$2/container.json")
if [[ $image == n8nio/n8n:9.9.9 ]]; then echo migrated >"$data/database.sqlite"; fi
`
	if err := os.WriteFile(hook, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	h := setup(t, "FAKE_DOCKER_UNHEALTHY_IMAGE=n8nio/n8n:9.9.9", "FAKE_DOCKER_ON_START="+hook)
	h.must("provision", "acme", provisionInput())
	h.writeFile("acme/data/database.sqlite", "workflows")
	recipient, identity := newKey(t)
	_, otherIdentity := newKey(t)
	keys := "RECIPIENT=" + recipient + "\nIDENTITY=" + identity + "\n"

	for _, bad := range []string{
		"RECIPIENT=" + recipient + "\n",                                 // no way to decrypt for a rollback
		"RECIPIENT=" + recipient + "\nIDENTITY=" + otherIdentity + "\n", // not a key pair
		"IDENTITY=" + identity + "\n",                                   // nothing to decrypt
		"RECIPIENT=age1nope\nIDENTITY=" + identity + "\n",
	} {
		if res := h.run("upgrade", "acme", "IMAGE="+imageV2+"\nHEALTH_TIMEOUT=0\n"+bad); res.code != 2 {
			t.Errorf("upgrade with %q: exit %d, want 2: %v", bad, res.code, res.out)
		}
	}
	if n := len(h.callsOf("stop")); n != 0 {
		t.Errorf("a refused upgrade stopped the container (%d stops)", n)
	}

	checkBackup := func(out map[string]any) {
		t.Helper()
		path, _ := out["backup"].(string)
		if !strings.HasSuffix(path, ".tar.gz.age") || out["backup_name"] != filepath.Base(path) {
			t.Fatalf("backup %q, backup_name %v", path, out["backup_name"])
		}
		ciphertext := readBytes(t, path)
		want(t, out, map[string]any{"backup_sha256": sha256Hex(ciphertext), "backup_bytes": float64(len(ciphertext))})
		if at, _ := out["backup_created_at"].(string); len(at) != len("2026-12-07T03:00:00Z") {
			t.Errorf("backup_created_at = %v", out["backup_created_at"])
		}
		if got := tarFiles(t, decrypt(t, ciphertext, identity))["data/database.sqlite"]; got != "workflows" {
			t.Errorf("the pre-upgrade backup holds %q", got)
		}
	}

	out := h.must("upgrade", "acme", "IMAGE="+imageV2+"\nHEALTH_TIMEOUT=0\n"+keys)
	want(t, out, map[string]any{"image": imageV2, "changed": true, "rolled_back": false})
	checkBackup(out)

	res := h.run("upgrade", "acme", "IMAGE=n8nio/n8n:9.9.9\nHEALTH_TIMEOUT=0\n"+keys)
	if res.code != 1 {
		t.Fatalf("unhealthy upgrade: exit %d, want 1: %v", res.code, res.out)
	}
	want(t, res.out, map[string]any{"rolled_back": true, "image": imageV2})
	checkBackup(res.out)
	if got := h.readFile("acme/data/database.sqlite"); got != "workflows" {
		t.Errorf("data after rollback = %q, want the pre-upgrade data", got)
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true, "image": imageV2})
	var sawNew bool
	for _, c := range h.callsOf("run") {
		sawNew = sawNew || strings.HasSuffix(c, " n8nio/n8n:9.9.9")
	}
	if !sawNew {
		t.Error("the new image never ran")
	}
	// To the running image: nothing happens, no archive is taken.
	same := h.must("upgrade", "acme", "IMAGE="+imageV2+"\n"+keys)
	if _, ok := same["backup"]; ok || same["changed"] != false {
		t.Errorf("an upgrade to the running image: %v", same)
	}
	if strings.Contains(h.outputs.String(), identity) {
		t.Error("the identity is in n8nctl's output")
	}
}

// ---------------------------------------------------------------- upload

// archiveOf backs slug up encrypted with 250 kB of incompressible data: three parts
// of 100 kB.
func archiveOf(h *host, slug string) (path string, b []byte) {
	h.t.Helper()
	noise := make([]byte, 250_000)
	for i := range noise {
		noise[i] = byte(rand.IntN(256))
	}
	h.writeFile(slug+"/data/binaryData/noise.bin", string(noise))
	recipient, _ := newKey(h.t)
	out := h.must("backup", slug, "RECIPIENT="+recipient+"\n")
	path = out["path"].(string)
	return path, readBytes(h.t, path)
}

func TestUploadPutsThePartsThroughPresignedURLs(t *testing.T) {
	t.Parallel()
	needAge(t)
	needCurl(t)
	sig := randomSignature()
	s3 := &fakeS3{Signature: sig}
	srv := startS3(t, s3)
	pathEnv, argvLog := argvRecorder(t, "curl", "dd")
	h := setup(t, "N8N_RETRY_DELAYS=0 0 0", pathEnv)
	h.must("provision", "acme", provisionInput())
	path, archive := archiveOf(h, "acme")
	name, size := filepath.Base(path), int64(len(archive))
	const partSize = 100_000
	parts := int((size + partSize - 1) / partSize)
	if parts < 3 {
		t.Fatalf("archive of %d bytes: want at least 3 parts", size)
	}

	// Part 2 fails twice with a 500 and gets through on the third try.
	s3.FailNext(partTarget(2), 2)
	out := h.must("upload", "acme", uploadInput(srv.URL, sig, name, size, partSize))
	want(t, out, map[string]any{"slug": "acme", "archive": name, "bytes": float64(size), "sha256": sha256Hex(archive)})
	if got := s3.Assembled(parts); !bytes.Equal(got, archive) {
		t.Errorf("the parts reassemble to %d bytes, not the archive's %d", len(got), size)
	}
	gotParts, _ := out["parts"].([]any)
	if len(gotParts) != parts {
		t.Fatalf("parts = %v, want %d", out["parts"], parts)
	}
	for i, p := range gotParts {
		sum := md5.Sum(archive[int64(i)*partSize : min(size, int64(i+1)*partSize)])
		if w := map[string]any{"number": float64(i + 1), "etag": `"` + hex.EncodeToString(sum[:]) + `"`}; jsonString(t, p) != jsonString(t, w) {
			t.Errorf("part %d = %v, want %v", i+1, p, w)
		}
	}
	if n := s3.Tries(partTarget(2)); n != 3 {
		t.Errorf("part 2 tried %d times, want 3", n)
	}
	if n := s3.Tries(partTarget(1)); n != 1 {
		t.Errorf("part 1 tried %d times, want 1", n)
	}
	if got := s3.Refused(); len(got) != 0 {
		t.Errorf("the store refused %q (chunked? no length? short body?)", got)
	}
	want(t, h.must("status", "acme", ""), map[string]any{"running": true})
	if n := len(h.callsOf("stop")); n != 1 {
		t.Errorf("docker stop called %d times, want 1 (the backup's): an upload must not stop n8n", n)
	}

	// An expired URL is final: one try.
	s3.Forbid(partTarget(1), true)
	res := h.run("upload", "acme", uploadInput(srv.URL, sig, name, size, partSize))
	if msg, _ := res.out["error"].(string); res.code != 1 || !strings.Contains(msg, "part 1 ") || !strings.Contains(msg, "HTTP 403 AccessDenied") {
		t.Errorf("403: exit %d %v", res.code, res.out)
	}
	if n := s3.Tries(partTarget(1)); n != 2 {
		t.Errorf("part 1 tried %d times after a 403, want 1 more", n)
	}
	s3.Forbid(partTarget(1), false)

	// A store that keeps failing: 4 tries, then the part and the status.
	s3.FailNext(partTarget(3), 10)
	before := s3.Tries(partTarget(3))
	res = h.run("upload", "acme", uploadInput(srv.URL, sig, name, size, partSize))
	if msg, _ := res.out["error"].(string); res.code != 1 || !strings.Contains(msg, "part 3 ") || !strings.Contains(msg, "HTTP 500 InternalError") ||
		!strings.Contains(msg, "after 4 tries") {
		t.Errorf("500s: exit %d %v", res.code, res.out)
	}
	if n := s3.Tries(partTarget(3)) - before; n != 4 {
		t.Errorf("part 3 tried %d times, want 4", n)
	}
	s3.FailNext(partTarget(3), 0)

	// Nobody listening: curl's message names host and port, never the query.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	res = h.run("upload", "acme", uploadInput(closed.URL, sig, name, size, size))
	if msg, _ := res.out["error"].(string); res.code != 1 || !strings.Contains(msg, "part 1 ") || !strings.Contains(msg, "Failed to connect") {
		t.Errorf("connection refused: exit %d %v", res.code, res.out)
	}

	for where, text := range map[string]string{
		"n8nctl's output":           h.outputs.String(),
		"the argv of curl and dd":   recorded(t, argvLog, "curl"),
		"the argv of docker (fake)": strings.Join(h.calls(), "\n"),
	} {
		if strings.Contains(text, sig) || strings.Contains(text, "X-Amz-Credential") {
			t.Errorf("the presigned URL's query is in %s", where)
		}
	}
}

func TestUploadRefusesBadInputAndDamagedArchives(t *testing.T) {
	t.Parallel()
	needAge(t)
	needCurl(t)
	s3 := &fakeS3{}
	srv := startS3(t, s3)
	h := setup(t, "N8N_RETRY_DELAYS=0")
	h.must("provision", "acme", provisionInput())
	path, archive := archiveOf(h, "acme")
	name, size := filepath.Base(path), int64(len(archive))
	good := uploadInput(srv.URL, "s", name, size, 100_000)
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("%q is not in the input", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	for _, tc := range []struct{ name, stdin string }{
		{"slash in ARCHIVE", replace("ARCHIVE="+name, "ARCHIVE=../other/"+name)},
		{"dot-dot in ARCHIVE", replace("ARCHIVE="+name, "ARCHIVE=x..y.tar.gz")},
		{"not an archive", replace("ARCHIVE="+name, "ARCHIVE=acme.json")},
		{"hidden temp file", replace("ARCHIVE="+name, "ARCHIVE=.x.tar.gz")},
		{"no ARCHIVE", replace("ARCHIVE="+name+"\n", "")},
		{"zero parts", replace("PARTS=3", "PARTS=0")},
		{"too many parts", replace("PARTS=3", "PARTS=10001")},
		{"fewer parts than the file", replace("PARTS=3", "PARTS=2")},
		{"a gap", replace("PART_2_OFFSET=100000", "PART_2_OFFSET=100001")},
		{"an overlap", replace("PART_2_OFFSET=100000", "PART_2_OFFSET=99999")},
		{"longer than the file", replace("PART_3_SIZE=", "PART_3_SIZE=1")},
		{"empty part", replace("PART_1_SIZE=100000", "PART_1_SIZE=0")},
		{"no URL", replace("PART_2_URL=", "PART_2_URX=")},
		{"not http", replace("PART_2_URL=http://", "PART_2_URL=file://")},
		{"quote in URL", replace("PART_2_URL=http://", `PART_2_URL=http://"`)},
		{"a part past PARTS", good + "PART_4_SIZE=1\n"},
		{"a misspelt part key", good + "PART_1_URI=http://x/\n"},
		{"a part number with a leading zero", good + "PART_01_SIZE=1\n"},
	} {
		if res := h.run("upload", "acme", tc.stdin); res.code != 2 {
			t.Errorf("%s: exit %d, want 2: %v", tc.name, res.code, res.out)
		}
	}
	if res := h.run("upload", "acme", replace("ARCHIVE="+name, "ARCHIVE=nope.tar.gz")); res.code != 1 {
		t.Errorf("missing archive: exit %d, want 1", res.code)
	}
	// A damaged archive is not sent: the bucket would keep the damage.
	flipped := slices.Clone(archive)
	flipped[1000] ^= 0x01
	writeBytes(t, path, flipped)
	res := h.run("upload", "acme", good)
	if msg, _ := res.out["error"].(string); res.code != 1 || !strings.Contains(msg, "checksum mismatch") {
		t.Errorf("damaged archive: exit %d %v", res.code, res.out)
	}
	if n := s3.Tries(partTarget(1)); n != 0 {
		t.Errorf("the store got %d requests", n)
	}
}

// The lock is the slug's only while upload opens the archive: suspend goes ahead while
// the parts go out, and a prune meanwhile does not change what is sent.
func TestUploadDoesNotHoldUpTheInstance(t *testing.T) {
	t.Parallel()
	needAge(t)
	needCurl(t)
	s3 := &fakeS3{}
	srv := startS3(t, s3)
	h := setup(t, "N8N_LOCK_TIMEOUT=0")
	h.must("provision", "acme", provisionInput())
	path, archive := archiveOf(h, "acme")
	name, size := filepath.Base(path), int64(len(archive))

	arrived, release := s3.HoldPart(1)
	t.Cleanup(release)
	p := h.start(uploadInput(srv.URL, "s", name, size, 100_000), nil, "upload", "acme")
	<-arrived
	want(t, h.must("suspend", "acme", ""), map[string]any{"running": false})
	if out := h.must("prune", "acme", "ARCHIVES="+name+"\n"); jsonString(t, out["removed"]) != jsonString(t, []string{name}) {
		t.Errorf("prune during the upload = %v", out)
	}
	release()
	res := h.wait(p)
	if res.code != 0 {
		t.Fatalf("upload: exit %d %v\n%s", res.code, res.out, res.stderr)
	}
	if got := s3.Assembled(len(res.out["parts"].([]any))); !bytes.Equal(got, archive) {
		t.Error("the upload sent something else than the archive it opened")
	}
}

// ---------------------------------------------------------------- fetch

func TestFetchToAHostWithoutTheInstance(t *testing.T) {
	t.Parallel()
	needAge(t)
	needCurl(t)
	sig := randomSignature()
	s3 := &fakeS3{Signature: sig}
	srv := startS3(t, s3)

	// The archive, taken on another host.
	from := setup(t)
	from.must("provision", "acme", provisionInput())
	from.writeFile("acme/data/database.sqlite", "moved workflows")
	recipient, identity := newKey(t)
	out := from.must("backup", "acme", "RECIPIENT="+recipient+"\n")
	name, archive := out["name"].(string), readBytes(t, out["path"].(string))
	key := "/n8n-backups/instances/i1/" + name
	s3.PutObject(key, archive)

	pathEnv, argvLog := argvRecorder(t, "curl")
	h := setup(t, "N8N_RETRY_DELAYS=0 0 0", pathEnv)
	url := srv.URL + key + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=" + sig
	input := func(name, url, sum string, n int) string {
		return fmt.Sprintf("NAME=%s\nURL=%s\nSHA256=%s\nBYTES=%d\nIMAGE=%s\nCREATED_AT=2026-12-07T03:00:00Z\n", name, url, sum, n, imageV1)
	}
	good := input(name, url, sha256Hex(archive), len(archive))

	s3.FailNext(key, 2)
	res := h.must("fetch", "acme", good)
	dest := filepath.Join(h.backups, "acme", name)
	want(t, res, map[string]any{"path": dest, "name": name, "sha256": sha256Hex(archive), "bytes": float64(len(archive)), "downloaded": true})
	if n := s3.Tries(key); n != 3 {
		t.Errorf("download tried %d times, want 3 (two 500s)", n)
	}
	if !bytes.Equal(readBytes(t, dest), archive) {
		t.Error("the fetched archive differs")
	}
	if got := string(readBytes(t, dest+".sha256")); got != sha256Hex(archive)+"  "+name+"\n" {
		t.Errorf("sidecar = %q", got)
	}
	manifest := readJSON(t, strings.TrimSuffix(dest, ".tar.gz.age")+".json")
	want(t, manifest, map[string]any{"slug": "acme", "archive": name, "sha256": sha256Hex(archive), "bytes": float64(len(archive)),
		"encrypted": true, "image": imageV1, "created_at": "2026-12-07T03:00:00Z"})
	for p, mode := range map[string]os.FileMode{dest: 0o600, dest + ".sha256": 0o600, filepath.Dir(dest): 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, mode)
		}
	}
	if _, err := os.Stat(filepath.Join(h.root, "acme")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fetch made the instance's dir (err %v)", err)
	}

	// Already here and intact: nothing is downloaded.
	tries := s3.Tries(key)
	want(t, h.must("fetch", "acme", good), map[string]any{"path": dest, "downloaded": false})
	if s3.Tries(key) != tries {
		t.Error("a second fetch downloaded again")
	}
	// Here but damaged: downloaded again.
	writeBytes(t, dest, append(slices.Clone(archive[:100]), 'x'))
	want(t, h.must("fetch", "acme", good), map[string]any{"downloaded": true})
	if !bytes.Equal(readBytes(t, dest), archive) {
		t.Error("the damaged copy was not replaced")
	}

	// Refusals leave nothing behind.
	listing := func() []string {
		entries, _ := os.ReadDir(filepath.Join(h.backups, "acme"))
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	before := listing()
	other := strings.Replace(name, ".tar.gz.age", "-2.tar.gz.age", 1)
	s3.PutObject("/n8n-backups/instances/i1/"+other, append(slices.Clone(archive[:len(archive)-1]), archive[len(archive)-1]^1))
	otherURL := strings.Replace(url, name, other, 1)
	for _, tc := range []struct {
		name, stdin, says string
		code              int
	}{
		{"checksum mismatch", input(other, otherURL, sha256Hex(archive), len(archive)), "downloaded archive " + other + " checksum mismatch: expected " + sha256Hex(archive), 1},
		{"size mismatch", input(other, otherURL, sha256Hex(archive), len(archive)-1), "bytes", 1},
		{"not in the bucket", input(other, strings.Replace(otherURL, other, "gone.tar.gz.age", 1), sha256Hex(archive), len(archive)), "HTTP 404 NoSuchKey", 1},
		{"bad NAME", input("../"+other, otherURL, sha256Hex(archive), len(archive)), "NAME", 2},
		{"bad SHA256", input(other, otherURL, "nope", len(archive)), "SHA256", 2},
		{"bad BYTES", input(other, otherURL, sha256Hex(archive), 0), "BYTES", 2},
		{"bad URL", input(other, "ftp://x/y", sha256Hex(archive), len(archive)), "URL", 2},
	} {
		res := h.run("fetch", "acme", tc.stdin)
		if msg, _ := res.out["error"].(string); res.code != tc.code || !strings.Contains(msg, tc.says) {
			t.Errorf("%s: exit %d %v, want %d saying %q", tc.name, res.code, res.out, tc.code, tc.says)
		}
		if got := listing(); !slices.Equal(got, before) {
			t.Errorf("%s: the backup dir went from %q to %q", tc.name, before, got)
		}
	}
	if n := s3.Tries("/n8n-backups/instances/i1/gone.tar.gz.age"); n != 1 {
		t.Errorf("a 404 was tried %d times, want 1", n)
	}

	// The fetched archive restores on its new host.
	h.must("restore", "acme", "BACKUP="+dest+"\nSHA256="+sha256Hex(archive)+"\nIDENTITY="+identity+"\n")
	if got := h.readFile("acme/data/database.sqlite"); got != "moved workflows" {
		t.Errorf("restored data = %q", got)
	}
	for where, text := range map[string]string{"n8nctl's output": h.outputs.String(), "curl's argv": recorded(t, argvLog, "curl")} {
		if strings.Contains(text, sig) {
			t.Errorf("the presigned URL's signature is in %s", where)
		}
	}
}

// ---------------------------------------------------------------- prune

func TestPruneRemovesArchivesWithTheirSidecars(t *testing.T) {
	t.Parallel()
	needAge(t)
	h := setup(t)
	h.must("provision", "acme", provisionInput())
	recipient, _ := newKey(t)
	enc := h.must("backup", "acme", "RECIPIENT="+recipient+"\n")["name"].(string)
	plain := h.must("backup", "acme", "")["name"].(string)
	kept := h.must("backup", "acme", "RECIPIENT="+recipient+"\n")["name"].(string)
	dir := filepath.Join(h.backups, "acme")

	for _, bad := range []string{"", "../x.tar.gz", "x.json", enc + " /etc/passwd", "a/b.tar.gz"} {
		if res := h.run("prune", "acme", "ARCHIVES="+bad+"\n"); res.code != 2 {
			t.Errorf("ARCHIVES=%q: exit %d, want 2", bad, res.code)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, enc)); err != nil {
		t.Fatalf("a refused prune removed %s: %v", enc, err)
	}

	out := h.must("prune", "acme", "ARCHIVES="+enc+" "+plain+" never.tar.gz "+enc+"\n")
	if got := jsonString(t, out["removed"]); got != jsonString(t, []string{enc, plain}) {
		t.Errorf("removed = %s", got)
	}
	if got := jsonString(t, out["missing"]); got != jsonString(t, []string{"never.tar.gz"}) {
		t.Errorf("missing = %s", got)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	base := strings.TrimSuffix(kept, ".tar.gz.age")
	if !slices.Equal(names, []string{base + ".json", kept, kept + ".sha256"}) {
		t.Errorf("left in the backup dir: %q", names)
	}
	// Again: nothing to do, and says so.
	out = h.must("prune", "acme", "ARCHIVES="+enc+" "+plain+"\n")
	if jsonString(t, out["removed"]) != "[]" || jsonString(t, out["missing"]) != jsonString(t, []string{enc, plain}) {
		t.Errorf("second prune = %v", out)
	}
	// A slug with no backup dir at all.
	want(t, h.must("prune", "other", "ARCHIVES="+enc+"\n"), map[string]any{"slug": "other"})
}

// ---------------------------------------------------------------- the whole way

// TestArchiveSecretsStayOffArgvAndOutput takes an archive off one host and onto another
// the way a move does, with every program n8nctl hands archives to recorded: neither
// the identity nor a presigned URL's signature may appear in any argv or environment,
// nor in anything n8nctl prints.
func TestArchiveSecretsStayOffArgvAndOutput(t *testing.T) {
	t.Parallel()
	needAge(t)
	needCurl(t)
	sig := randomSignature()
	s3 := &fakeS3{Signature: sig}
	srv := startS3(t, s3)
	pathEnv, argvLog := argvRecorder(t, "curl", "age", "dd", "tar", "jq", "sha256sum", "mv", "rm", "flock", "stat", "mktemp")
	recipient, identity := newKey(t)

	from := setup(t, pathEnv, "FAKE_DOCKER_UNHEALTHY_IMAGE=n8nio/n8n:9.9.9")
	from.must("provision", "acme", provisionInput())
	from.writeFile("acme/data/database.sqlite", "workflows")
	b := from.must("backup", "acme", "RECIPIENT="+recipient+"\n")
	name, size := b["name"].(string), int64(b["bytes"].(float64))
	up := from.must("upload", "acme", uploadInput(srv.URL, sig, name, size, size))
	if len(up["parts"].([]any)) != 1 {
		t.Fatalf("upload = %v", up)
	}
	key := "/n8n-backups/instances/i1/" + name
	s3.PutObject(key, s3.Assembled(1))
	from.run("upgrade", "acme", "IMAGE=n8nio/n8n:9.9.9\nHEALTH_TIMEOUT=0\nRECIPIENT="+recipient+"\nIDENTITY="+identity+"\n")

	to := setup(t, pathEnv)
	f := to.must("fetch", "acme", fmt.Sprintf("NAME=%s\nURL=%s%s?X-Amz-Signature=%s\nSHA256=%s\nBYTES=%d\n", name, srv.URL, key, sig, b["sha256"], size))
	to.must("restore", "acme", "BACKUP="+f["path"].(string)+"\nIDENTITY="+identity+"\n")
	if got := to.readFile("acme/data/database.sqlite"); got != "workflows" {
		t.Errorf("restored data = %q", got)
	}
	to.must("prune", "acme", "ARCHIVES="+name+"\n")

	log := recorded(t, argvLog, "age")
	recorded(t, argvLog, "curl")
	for where, text := range map[string]string{
		"the argv or environment of n8nctl's children": log,
		"n8nctl's output":      from.outputs.String() + to.outputs.String(),
		"docker's argv (fake)": strings.Join(append(from.calls(), to.calls()...), "\n"),
	} {
		if strings.Contains(text, identity) {
			t.Errorf("the identity is in %s", where)
		}
		if strings.Contains(text, sig) {
			t.Errorf("a presigned URL's signature is in %s", where)
		}
	}
}
