package objstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore/objstoretest"
)

// The tests run against a real S3 server, SeaweedFS (scripts/s3.sh, started by
// scripts/test.sh), with real SigV4 authentication; they skip without one. The tests of
// pure functions and of refusals made before any request need no server.

// minPart is S3's smallest part but the last; parts of this size keep the tests honest.
const minPart = 5 << 20

func newStore(t testing.TB, cfg objstore.Config) *objstore.Store {
	t.Helper()
	s, err := objstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// putPart PUTs part p of data to its URL as a host's plain HTTP client would, with no
// header but Content-Length, and returns the ETag.
func putPart(t testing.TB, data []byte, p objstore.Part) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, p.URL, bytes.NewReader(data[p.Offset:p.Offset+p.Size]))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = p.Size
	if p.Size == 0 {
		req.Body = http.NoBody
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal("PUT part:", scrubURL(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT part %d: %s %s", p.Number, resp.Status, body)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatalf("PUT part %d: no ETag in the answer", p.Number)
	}
	return etag
}

// scrubURL keeps a presigned URL's signature out of test output too.
func scrubURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// checkPresigned asserts that a presigned URL asks nothing of curl but the URL itself: no
// signed header but host, no checksum parameter.
func checkPresigned(t testing.TB, raw string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal("a presigned URL does not parse")
	}
	q := u.Query()
	if got := q.Get("X-Amz-SignedHeaders"); got != "host" {
		t.Errorf("the URL signs headers %q; want only host, so that curl need send nothing else", got)
	}
	for k := range q {
		if lk := strings.ToLower(k); strings.Contains(lk, "checksum") {
			t.Errorf("the URL carries %s; third-party servers and curl would have to match it", k)
		}
	}
	if q.Get("X-Amz-Signature") == "" {
		t.Error("the URL is not signed")
	}
}

func TestPresignedMultipartUpload(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	s := newStore(t, cfg)
	objstore.SetPartSize(s, minPart)
	ctx := ctxFor(t)
	data := randomBytes(t, 2*minPart+123_457) // 3 parts, the last one short
	const key = "instances/in_1/n8n-20250101T020000Z.tar.gz.age"

	u, err := s.StartUpload(ctx, key, int64(len(data)), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if u.Key != key || u.UploadID == "" || u.PartSize != minPart || len(u.Parts) != 3 {
		t.Fatalf("upload = key %q id %q part size %d, %d parts; want %q, an id, %d, 3", u.Key, u.UploadID, u.PartSize, len(u.Parts), key, minPart)
	}
	if d := time.Until(u.Expires); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("expires in %s, want 10m", d)
	}
	var next int64
	for i, p := range u.Parts {
		if p.Number != int32(i+1) || p.Offset != next {
			t.Errorf("part %d = %+v, want number %d at offset %d", i, p.Number, i+1, next)
		}
		checkPresigned(t, p.URL)
		next += p.Size
	}
	if next != int64(len(data)) || u.Parts[2].Size != 123_457 {
		t.Fatalf("the parts cover %d bytes (last %d), want %d", next, u.Parts[2].Size, len(data))
	}

	var done []objstore.Done
	for _, p := range slices.Backward(u.Parts) { // hosts may report in any order
		done = append(done, objstore.Done{Number: p.Number, ETag: putPart(t, data, p)})
	}
	if err := s.CompleteUpload(ctx, u, done[:2]); !apperr.Is(err, apperr.Invalid) || !strings.Contains(err.Error(), "part 1 is missing") {
		t.Errorf("completing without part 1: %v, want Invalid naming the missing part", err)
	}
	if err := s.CompleteUpload(ctx, u, done); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, key, sha(data), int64(len(data))); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	other := sha(append([]byte{1}, data...))
	err = s.Verify(ctx, key, other, int64(len(data)))
	if !errors.Is(err, objstore.ErrMismatch) || !apperr.Is(err, apperr.Conflict) || !strings.Contains(err.Error(), "sha256 differs") {
		t.Errorf("Verify with another sha256: %v, want a mismatch of the sha256", err)
	}
	err = s.Verify(ctx, key, sha(data), int64(len(data))+1)
	if !errors.Is(err, objstore.ErrMismatch) || !strings.Contains(err.Error(), "size differs") {
		t.Errorf("Verify with another size: %v, want a mismatch of the size", err)
	}
	// A truncated upload: the object holds fewer bytes than the archive.
	if err := s.Put(ctx, "truncated", bytes.NewReader(data[:len(data)-1])); err != nil {
		t.Fatal(err)
	}
	err = s.Verify(ctx, "truncated", sha(data), int64(len(data)))
	if !errors.Is(err, objstore.ErrMismatch) || !strings.Contains(err.Error(), "size differs") {
		t.Errorf("Verify of a truncated object: %v, want a mismatch of the size", err)
	}
	if err := s.Verify(ctx, "instances/in_1/absent", sha(data), 1); !errors.Is(err, objstore.ErrNotFound) || !apperr.Is(err, apperr.NotFound) {
		t.Errorf("Verify of a missing key: %v, want ErrNotFound", err)
	}

	// A presigned GET downloads the same bytes (as n8nctl fetch does).
	get, err := s.PresignGet(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	checkPresigned(t, get)
	resp, err := (&http.Client{Timeout: time.Minute}).Get(get)
	if err != nil {
		t.Fatal(scrubURL(err))
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("presigned GET: %s, %d bytes, equal %v", resp.Status, len(got), bytes.Equal(got, data))
	}

	// The upload is done: aborting it again is not an error.
	if err := s.AbortUpload(ctx, u); err != nil {
		t.Errorf("AbortUpload of a completed upload: %v", err)
	}
}

func TestAbortUploadDropsTheParts(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	s := newStore(t, cfg)
	ctx := ctxFor(t)
	data := randomBytes(t, 1000)
	u, err := s.StartUpload(ctx, "aborted", int64(len(data)), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	etag := putPart(t, data, u.Parts[0])
	for range 2 { // idempotent
		if err := s.AbortUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CompleteUpload(ctx, u, []objstore.Done{{Number: 1, ETag: etag}}); !apperr.Is(err, apperr.NotFound) {
		t.Errorf("completing an aborted upload: %v, want NotFound", err)
	}
	if keys, err := s.Keys(ctx, ""); err != nil || len(keys) != 0 {
		t.Errorf("keys after an abort = %q, %v; want none", keys, err)
	}
}

// TestCurlPutsAPart runs the real curl as the host does: the URL comes in a config on
// stdin (so it is in no argv), the ETag comes back in the dumped headers. The second part
// goes the way n8nctl sends parts, streamed by dd with an explicit length.
func TestCurlPutsAPart(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	cfg := objstoretest.Config(t)
	s := newStore(t, cfg)
	objstore.SetPartSize(s, minPart)
	ctx := ctxFor(t)
	data := randomBytes(t, minPart+1000)
	dir := t.TempDir()
	file := filepath.Join(dir, "archive")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := s.StartUpload(ctx, "curl/archive", int64(len(data)), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Parts) != 2 {
		t.Fatalf("%d parts, want 2", len(u.Parts))
	}
	part1 := filepath.Join(dir, "part1")
	if err := os.WriteFile(part1, data[:u.Parts[0].Size], 0o600); err != nil {
		t.Fatal(err)
	}
	etag1 := curlPut(t, exec.CommandContext(ctx, "curl", "-sS", "-f", "-X", "PUT", "-T", part1, "-D", "-", "-K", "-"), u.Parts[0].URL, nil)
	p := u.Parts[1]
	script := fmt.Sprintf(`dd if=%q iflag=skip_bytes,count_bytes skip=%d count=%d bs=1M status=none |
		curl -q -sS -f --http1.1 -X PUT -T - -H "Content-Length: %d" -H "Transfer-Encoding:" -D - -o /dev/null -K "$0"`, file, p.Offset, p.Size, p.Size)
	cfgFile := filepath.Join(dir, "curl.cfg")
	etag2 := curlPut(t, exec.CommandContext(ctx, "bash", "-c", script, cfgFile), p.URL, &cfgFile)
	if err := s.CompleteUpload(ctx, u, []objstore.Done{{Number: 1, ETag: etag1}, {Number: 2, ETag: etag2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, u.Key, sha(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}

	// A 0-byte archive: one 0-byte part.
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	u, err = s.StartUpload(ctx, "curl/empty", 0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Parts) != 1 || u.Parts[0].Size != 0 || u.Parts[0].Offset != 0 {
		t.Fatalf("parts of a 0-byte file = %+v, want one empty part", u.Parts)
	}
	etag := curlPut(t, exec.CommandContext(ctx, "curl", "-sS", "-f", "-X", "PUT", "-T", empty, "-D", "-", "-K", "-"), u.Parts[0].URL, nil)
	if err := s.CompleteUpload(ctx, u, []objstore.Done{{Number: 1, ETag: etag}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, u.Key, sha(nil), 0); err != nil {
		t.Fatal(err)
	}
}

// curlPut runs cmd with a curl config naming url on stdin (or in *cfgFile) and returns the
// ETag from the headers it prints.
func curlPut(t testing.TB, cmd *exec.Cmd, rawURL string, cfgFile *string) string {
	t.Helper()
	config := fmt.Sprintf("url = %q\n", rawURL)
	if cfgFile != nil {
		if err := os.WriteFile(*cfgFile, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		cmd.Stdin = strings.NewReader(config)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, stderr.String())
	}
	for line := range strings.Lines(string(out)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "ETag") {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("curl printed no ETag header:\n%s", out)
	return ""
}

func TestPutGetKeysListDelete(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	s := newStore(t, cfg)
	ctx := ctxFor(t)
	small := []byte("a dump")
	// More than Put's 16 MiB part, from a reader of unknown length: a client-side
	// multipart upload.
	big := randomBytes(t, 17<<20)
	if err := s.Put(ctx, "db/20250102T000000Z.sqlite.age", bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "db/20250101T000000Z.postgres.age", io.MultiReader(bytes.NewReader(big[:1]), bytes.NewReader(big[1:]))); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "instances/x/a.tar.gz", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}

	keys, err := s.Keys(ctx, "db/")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"db/20250101T000000Z.postgres.age", "db/20250102T000000Z.sqlite.age"}; !slices.Equal(keys, want) {
		t.Errorf("Keys(db/) = %q, want %q", keys, want)
	}
	objs, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 3 || objs[0].Size != int64(len(big)) || objs[1].Size != int64(len(small)) || objs[2].Key != "instances/x/a.tar.gz" || objs[2].Size != 0 {
		t.Errorf("List = %+v", objs)
	}
	if age := time.Since(objs[0].LastModified); age < -time.Minute || age > 5*time.Minute {
		t.Errorf("LastModified = %s", objs[0].LastModified)
	}

	r, err := s.Get(ctx, "db/20250101T000000Z.postgres.age")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Get: %d bytes, %v; want the %d put", len(got), err, len(big))
	}
	if err := s.Verify(ctx, "db/20250101T000000Z.postgres.age", sha(big), int64(len(big))); err != nil {
		t.Error(err)
	}
	if _, err := s.Get(ctx, "db/absent"); !errors.Is(err, objstore.ErrNotFound) || !apperr.Is(err, apperr.NotFound) {
		t.Errorf("Get of a missing key: %v, want ErrNotFound", err)
	}

	for range 2 { // the second time the key is missing: not an error
		if err := s.Delete(ctx, "db/20250102T000000Z.sqlite.age"); err != nil {
			t.Fatal(err)
		}
	}
	if keys, _ := s.Keys(ctx, "db/"); !slices.Equal(keys, []string{"db/20250101T000000Z.postgres.age"}) {
		t.Errorf("Keys after Delete = %q", keys)
	}
	if err := s.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}

	// Another prefix of the same bucket sees none of it.
	if keys, err := newStore(t, objstoretest.Config(t)).Keys(ctx, ""); err != nil || len(keys) != 0 {
		t.Errorf("another prefix lists %q, %v", keys, err)
	}
}

func TestExpiredURLsAreRefused(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	s := newStore(t, cfg)
	ctx := ctxFor(t)
	if err := s.Put(ctx, "old", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	// Signed two hours ago for one hour.
	objstore.SetClock(s, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	get, err := s.PresignGet(ctx, "old", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.StartUpload(ctx, "late", 10, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer s.AbortUpload(context.WithoutCancel(ctx), u)
	if !u.Expires.Before(time.Now()) {
		t.Errorf("Expires = %s, want in the past", u.Expires)
	}
	resp, err := http.Get(get)
	if err != nil {
		t.Fatal(scrubURL(err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET with an expired URL: %s, want 403", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodPut, u.Parts[0].URL, strings.NewReader("0123456789"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(scrubURL(err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("PUT with an expired URL: %s, want 403", resp.Status)
	}
}

// offline is a Store whose server does not exist: for refusals made before any request.
func offline(t testing.TB) *objstore.Store {
	return newStore(t, objstore.Config{Endpoint: "http://127.0.0.1:1", Bucket: "b-1", AccessKeyID: "AK", SecretAccessKey: "sk", PathStyle: true})
}

func TestKeysAreChecked(t *testing.T) {
	t.Parallel()
	s := offline(t)
	ctx := context.Background()
	bad := map[string]string{
		"":                        "is empty",
		"/etc/passwd":             "is absolute",
		"..":                      `".." segment`,
		"a/../../b":               `".." segment`,
		"a/..":                    `".." segment`,
		"a\x00b":                  "control character",
		"a\nb":                    "control character",
		"a\x7f":                   "control character",
		"a\u0085b":                "control character",
		"\xff":                    "UTF-8",
		strings.Repeat("k", 1025): "longer than",
	}
	for key, want := range bad {
		for name, call := range map[string]func() error{
			"Get":         func() error { _, err := s.Get(ctx, key); return err },
			"Put":         func() error { return s.Put(ctx, key, strings.NewReader("x")) },
			"Verify":      func() error { return s.Verify(ctx, key, sha(nil), 0) },
			"Delete":      func() error { return s.Delete(ctx, key) },
			"PresignGet":  func() error { _, err := s.PresignGet(ctx, key, time.Minute); return err },
			"StartUpload": func() error { _, err := s.StartUpload(ctx, key, 1, time.Minute); return err },
			"Complete":    func() error { return s.CompleteUpload(ctx, objstore.Upload{Key: key, UploadID: "u"}, nil) },
			"Abort":       func() error { return s.AbortUpload(ctx, objstore.Upload{Key: key, UploadID: "u"}) },
		} {
			if err := call(); !apperr.Is(err, apperr.Invalid) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s(%q) = %v, want Invalid %q", name, key, err, want)
			}
		}
	}
	if _, err := s.List(ctx, "../up"); !apperr.Is(err, apperr.Invalid) {
		t.Errorf("List(../up) = %v, want Invalid", err)
	}
	// Odd but harmless keys pass the check (and then fail to reach the server).
	for _, key := range []string{"a..b", "x/.../y", "instances/in_1/n8n 1.tar.gz.age", "ünïcode"} {
		if _, err := s.PresignGet(ctx, key, time.Minute); err != nil {
			t.Errorf("PresignGet(%q) = %v", key, err)
		}
	}
}

func TestRefusalsBeforeAnyRequest(t *testing.T) {
	t.Parallel()
	s := offline(t)
	ctx := context.Background()
	for name, err := range map[string]error{
		"negative size":    func() error { _, err := s.StartUpload(ctx, "k", -1, time.Minute); return err }(),
		"over 5 TiB":       func() error { _, err := s.StartUpload(ctx, "k", objstore.MaxObjectSize+1, time.Minute); return err }(),
		"no ttl":           func() error { _, err := s.StartUpload(ctx, "k", 1, 0); return err }(),
		"ttl over 7 days":  func() error { _, err := s.PresignGet(ctx, "k", 8*24*time.Hour); return err }(),
		"bad sha256":       s.Verify(ctx, "k", "ABC", 1),
		"no upload id":     s.CompleteUpload(ctx, objstore.Upload{Key: "k"}, []objstore.Done{{Number: 1, ETag: "e"}}),
		"no parts":         s.CompleteUpload(ctx, objstore.Upload{Key: "k", UploadID: "u"}, nil),
		"missing part 2":   s.CompleteUpload(ctx, objstore.Upload{Key: "k", UploadID: "u"}, []objstore.Done{{Number: 1, ETag: "a"}, {Number: 3, ETag: "c"}}),
		"missing last":     s.CompleteUpload(ctx, objstore.Upload{Key: "k", UploadID: "u", Parts: make([]objstore.Part, 3)}, []objstore.Done{{Number: 2, ETag: "b"}, {Number: 1, ETag: "a"}}),
		"duplicate part":   s.CompleteUpload(ctx, objstore.Upload{Key: "k", UploadID: "u"}, []objstore.Done{{Number: 1, ETag: "a"}, {Number: 1, ETag: "a"}}),
		"unknown part":     s.CompleteUpload(ctx, objstore.Upload{Key: "k", UploadID: "u", Parts: make([]objstore.Part, 1)}, []objstore.Done{{Number: 1, ETag: "a"}, {Number: 2, ETag: "b"}}),
		"part without tag": s.CompleteUpload(ctx, objstore.Upload{Key: "k", UploadID: "u"}, []objstore.Done{{Number: 1, ETag: `""`}}),
	} {
		if !apperr.Is(err, apperr.Invalid) {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
}

func TestPartSize(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	for _, tc := range []struct {
		size, want int64
	}{
		{0, 64 * mib},
		{1, 64 * mib},
		{64 * mib * objstore.MaxParts, 64 * mib},
		{64*mib*objstore.MaxParts + 1, 65 * mib},
		{objstore.MaxObjectSize, 525 * mib},
	} {
		got := objstore.PartSize(tc.size, objstore.DefaultPartSize)
		if got != tc.want {
			t.Errorf("PartSize(%d) = %d MiB, want %d MiB", tc.size, got/mib, tc.want/mib)
		}
		if parts := (tc.size + got - 1) / got; parts > objstore.MaxParts {
			t.Errorf("PartSize(%d) needs %d parts", tc.size, parts)
		}
	}
}

// TestLargeUploadsStayUnderTheLimitOnParts starts a real upload of a 1 TiB file: 10,000
// URLs at most, covering the file exactly.
func TestLargeUploadsStayUnderTheLimitOnParts(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	s := newStore(t, cfg)
	ctx := ctxFor(t)
	const size = 1 << 40
	u, err := s.StartUpload(ctx, "huge", size, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer s.AbortUpload(context.WithoutCancel(ctx), u)
	if len(u.Parts) > objstore.MaxParts || u.PartSize%(1<<20) != 0 {
		t.Fatalf("%d parts of %d bytes", len(u.Parts), u.PartSize)
	}
	last := u.Parts[len(u.Parts)-1]
	if last.Offset+last.Size != size || last.Size <= 0 || last.Size > u.PartSize {
		t.Errorf("the last part is %+v; the parts do not cover the file", last)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	full := map[string]string{
		objstore.EnvBucket:          "backups",
		objstore.EnvAccessKeyID:     "AKIDEXAMPLE",
		objstore.EnvSecretAccessKey: "s3cr3t-do-not-print",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    objstore.Config
		ok      bool
		errName string // the variable the error names
	}{
		{name: "unset", env: map[string]string{}},
		{name: "only a region", env: map[string]string{objstore.EnvRegion: "eu-west-1"}},
		{name: "AWS defaults", env: full, ok: true,
			want: objstore.Config{Region: "us-east-1", Bucket: "backups", AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "s3cr3t-do-not-print"}},
		{name: "everything", ok: true,
			env: with(objstore.EnvEndpoint, "https://s3.eu-central-1.wasabisys.com", objstore.EnvRegion, "eu-central-1",
				objstore.EnvPrefix, "n8n/", objstore.EnvPathStyle, "true"),
			want: objstore.Config{Endpoint: "https://s3.eu-central-1.wasabisys.com", Region: "eu-central-1", Bucket: "backups", Prefix: "n8n/",
				AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "s3cr3t-do-not-print", PathStyle: true}},
		{name: "R2", ok: true,
			env:  with(objstore.EnvEndpoint, "https://acc.r2.cloudflarestorage.com/", objstore.EnvRegion, "auto", objstore.EnvPathStyle, "false"),
			want: objstore.Config{Endpoint: "https://acc.r2.cloudflarestorage.com/", Region: "auto", Bucket: "backups", AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "s3cr3t-do-not-print"}},
		{name: "bucket without keys", env: map[string]string{objstore.EnvBucket: "backups"}, errName: objstore.EnvAccessKeyID},
		{name: "bucket without secret", env: with(objstore.EnvSecretAccessKey, ""), errName: objstore.EnvSecretAccessKey},
		{name: "keys without bucket", env: with(objstore.EnvBucket, ""), errName: objstore.EnvBucket},
		{name: "endpoint without bucket", env: map[string]string{objstore.EnvEndpoint: "https://s3.example.com"}, errName: objstore.EnvBucket},
		{name: "endpoint not a URL", env: with(objstore.EnvEndpoint, "s3.example.com"), errName: objstore.EnvEndpoint},
		{name: "endpoint ftp", env: with(objstore.EnvEndpoint, "ftp://s3.example.com"), errName: objstore.EnvEndpoint},
		{name: "endpoint with a path", env: with(objstore.EnvEndpoint, "https://s3.example.com/backups"), errName: objstore.EnvEndpoint},
		{name: "endpoint with user info", env: with(objstore.EnvEndpoint, "https://u:s3cr3t-do-not-print@s3.example.com"), errName: objstore.EnvEndpoint},
		{name: "bad path style", env: with(objstore.EnvPathStyle, "yes"), errName: objstore.EnvPathStyle},
		{name: "bad bucket", env: with(objstore.EnvBucket, "a/b"), errName: objstore.EnvBucket},
		{name: "bad region", env: with(objstore.EnvRegion, "EU West"), errName: objstore.EnvRegion},
		{name: "prefix escapes", env: with(objstore.EnvPrefix, "../other/"), errName: objstore.EnvPrefix},
		{name: "prefix absolute", env: with(objstore.EnvPrefix, "/n8n/"), errName: objstore.EnvPrefix},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, ok, err := objstore.ConfigFromEnv(func(k string) string { return tc.env[k] })
			if tc.errName != "" {
				if err == nil || !apperr.Is(err, apperr.Invalid) || !strings.Contains(err.Error(), tc.errName) {
					t.Fatalf("err = %v, want Invalid naming %s", err, tc.errName)
				}
				if strings.Contains(err.Error(), "s3cr3t") {
					t.Fatalf("the error quotes the secret: %v", err)
				}
				return
			}
			if err != nil || ok != tc.ok || cfg != tc.want {
				t.Fatalf("ConfigFromEnv = %+v, %v, %v; want %+v, %v", cfg, ok, err, tc.want, tc.ok)
			}
			if ok {
				if _, err := objstore.New(cfg); err != nil {
					t.Fatalf("New refuses what ConfigFromEnv accepted: %v", err)
				}
			}
		})
	}
}

func TestNewChecksTheConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]objstore.Config{
		"no bucket": {AccessKeyID: "a", SecretAccessKey: "s"},
		"no secret": {Bucket: "bucket", AccessKeyID: "a"},
		"endpoint":  {Bucket: "bucket", AccessKeyID: "a", SecretAccessKey: "s", Endpoint: "localhost:9000"},
	} {
		if _, err := objstore.New(cfg); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	ctx := ctxFor(t)
	if err := newStore(t, cfg).Ping(ctx); err != nil {
		t.Fatal(err)
	}
	missing := cfg
	missing.Bucket = "no-such-bucket-" + hex.EncodeToString(randomBytes(t, 4))
	if err := newStore(t, missing).Ping(ctx); !apperr.Is(err, apperr.NotFound) || errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Ping of a missing bucket: %v, want NotFound (and not ErrNotFound, which is for objects)", err)
	}
}

// leaks fails t if err's text (or its detailed form) holds any of the secrets, or a URL.
func leaks(t testing.TB, what string, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	t.Logf("%s: %v", what, err)
	for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s: the error holds a secret: %s", what, text)
			}
		}
		for _, bad := range []string{"http://", "https://", "X-Amz-Signature", "X-Amz-Credential"} {
			if strings.Contains(text, bad) {
				t.Errorf("%s: the error holds a URL or a signature (%s): %s", what, bad, text)
			}
		}
	}
}

func TestErrorsHoldNoSecretAndNoURL(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	ctx := ctxFor(t)
	good := newStore(t, cfg)
	get, err := good.PresignGet(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(get)
	signature := u.Query().Get("X-Amz-Signature")

	// Wrong secret: the server refuses the signature.
	wrong := cfg
	wrong.SecretAccessKey = "wrong-" + hex.EncodeToString(randomBytes(t, 16))
	bad := newStore(t, wrong)
	err = bad.Ping(ctx)
	if !apperr.Is(err, apperr.Forbidden) {
		t.Errorf("Ping with a wrong secret: %v, want Forbidden", err)
	}
	leaks(t, "Ping", err, wrong.SecretAccessKey, cfg.SecretAccessKey, signature)
	_, err = bad.Get(ctx, "k")
	leaks(t, "Get", err, wrong.SecretAccessKey, cfg.SecretAccessKey, signature)
	_, err = bad.StartUpload(ctx, "k", 1, time.Minute)
	leaks(t, "StartUpload", err, wrong.SecretAccessKey, signature)

	// Transport failures: the SDK's errors print the request URL.
	f, viaFaults := objstoretest.NewFaults(t, cfg)
	s := newStore(t, viaFaults)
	f.Inject(100, objstoretest.Reset, nil)
	_, err = s.Get(ctx, "k")
	if !apperr.Is(err, apperr.Unavailable) {
		t.Errorf("Get through resets: %v, want Unavailable", err)
	}
	leaks(t, "Get through resets", err, cfg.SecretAccessKey, signature)
	err = s.CompleteUpload(ctx, objstore.Upload{Key: "k", UploadID: "u"}, []objstore.Done{{Number: 1, ETag: "e"}})
	leaks(t, "CompleteUpload through resets", err, cfg.SecretAccessKey, signature)

	// Whatever the SDK says, fail scrubs secrets and signatures from it.
	synthetic := fmt.Errorf("odd failure for %s at %s", cfg.SecretAccessKey, get)
	err = objstore.Fail(good, "GetObject", "k", synthetic)
	if strings.Contains(err.Error(), cfg.SecretAccessKey) || strings.Contains(err.Error(), signature) {
		t.Errorf("fail let through: %v", err)
	}
}

func TestFaultsRetriesAndFailures(t *testing.T) {
	t.Parallel()
	cfg := objstoretest.Config(t)
	ctx := ctxFor(t)
	f, viaFaults := objstoretest.NewFaults(t, cfg)
	s := newStore(t, viaFaults)
	data := randomBytes(t, 100)

	start := func(key string) (objstore.Upload, []objstore.Done) {
		t.Helper()
		u, err := s.StartUpload(ctx, key, int64(len(data)), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return u, []objstore.Done{{Number: 1, ETag: putPart(t, data, u.Parts[0])}}
	}

	// One 500 on CompleteMultipartUpload: the SDK tries again, and it works.
	u, done := start("retried")
	before := f.Seen(http.MethodPost)
	f.Inject(1, objstoretest.InternalError, objstoretest.CompleteUpload)
	if err := s.CompleteUpload(ctx, u, done); err != nil {
		t.Fatalf("CompleteUpload after one 500: %v", err)
	}
	if n := f.Seen(http.MethodPost) - before; n != 2 {
		t.Errorf("%d POSTs for one 500, want 2", n)
	}
	if err := s.Verify(ctx, "retried", sha(data), int64(len(data))); err != nil {
		t.Error(err)
	}

	// 500 every time: 3 attempts, then an Unavailable error that says so.
	u, done = start("failed")
	before = f.Seen(http.MethodPost)
	f.Inject(3, objstoretest.InternalError, objstoretest.CompleteUpload)
	err := s.CompleteUpload(ctx, u, done)
	if !apperr.Is(err, apperr.Unavailable) || !strings.Contains(err.Error(), "500 InternalError") || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Errorf("CompleteUpload after three 500s: %v, want Unavailable, 500 InternalError after 3 attempts", err)
	}
	if n := f.Seen(http.MethodPost) - before; n != 3 {
		t.Errorf("%d POSTs, want 3 (the bounded retry)", n)
	}
	if err := s.CompleteUpload(ctx, u, done); err != nil {
		t.Errorf("the upload did not survive the failures: %v", err)
	}

	// Throttling and a reset connection are retried too.
	f.Inject(1, objstoretest.SlowDown, objstoretest.Method(http.MethodHead))
	f.Inject(1, objstoretest.Reset, objstoretest.Method(http.MethodHead))
	before = f.Seen(http.MethodHead)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after a SlowDown and a reset: %v", err)
	}
	if n := f.Seen(http.MethodHead) - before; n != 3 {
		t.Errorf("%d HEADs, want 3", n)
	}
	// (A HEAD's answer has no body, so the error code shows on a GET.)
	f.Inject(3, objstoretest.SlowDown, nil)
	if _, err := s.Keys(ctx, ""); !apperr.Is(err, apperr.Unavailable) || !strings.Contains(err.Error(), "503 SlowDown") {
		t.Errorf("Keys throttled: %v, want Unavailable 503 SlowDown", err)
	}

	// A bucket that hangs: the caller's deadline ends it.
	f.Inject(10, objstoretest.Hang, nil)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	err = s.Ping(short)
	if !apperr.Is(err, apperr.Unavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping of a hanging bucket: %v, want Unavailable, deadline exceeded", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("Ping of a hanging bucket took %s", d)
	}
	f.Clear()
	if f.Injected() == 0 {
		t.Error("Faults counted no injection")
	}
}

func TestUnreachableBucket(t *testing.T) {
	t.Parallel()
	err := offline(t).Ping(context.Background())
	if !apperr.Is(err, apperr.Unavailable) {
		t.Errorf("Ping of a closed port: %v, want Unavailable", err)
	}
	leaks(t, "Ping of a closed port", err, "sk")
}
