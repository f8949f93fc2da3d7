// Package objstore keeps backups in one S3-compatible bucket (AWS S3, Wasabi, Backblaze
// B2, Cloudflare R2, SeaweedFS...), through aws-sdk-go-v2.
//
// Hosts never hold storage credentials. For an instance's archive the provisioner starts a
// multipart upload and hands the host one short-lived presigned PUT URL per part
// (StartUpload); the host streams each part with curl and reports the ETags, and the
// provisioner assembles the object (CompleteUpload) and reads it back (Verify). The
// provisioner's own files go up directly (Put), streamed and split client-side.
//
// Keys given to a Store are relative: the Store puts its Prefix in front and takes it off
// what it lists. Keys that are empty, absolute, climb out with "..", hold control
// characters or are not UTF-8 are refused before any request.
//
// Errors are apperr kinds: Invalid for a refused key, size or configuration (checked before
// any request) and for the bucket's 400s; Unauthorized and Forbidden for bad or
// under-privileged credentials; NotFound for a missing object (the error also wraps
// ErrNotFound) or bucket; Conflict when Verify finds the object differs (it also wraps
// ErrMismatch); Unavailable for 429s, 5xx, network failures and cancelled contexts. No
// error ever holds the secret key or a URL: the SDK's transport errors print the request
// URL, so they are reduced to their cause. The package never logs.
package objstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// ErrNotFound is wrapped by Get and Verify (and every error the bucket answers with 404 for
// an object) when the key does not exist.
var ErrNotFound = errors.New("objstore: no such object")

// ErrMismatch is wrapped by Verify when the stored object's size or SHA-256 is not the
// expected one; the message says which.
var ErrMismatch = errors.New("objstore: the object differs from what was uploaded")

const (
	// DefaultPartSize is the part size of a presigned upload of a file of up to
	// MaxParts × 64 MiB (625 GiB); larger files get larger parts.
	DefaultPartSize = 64 << 20
	// MaxParts is S3's limit on the parts of one multipart upload.
	MaxParts = 10000
	// MaxObjectSize is S3's limit on one object (5 TiB).
	MaxObjectSize = 5 << 40
	// MaxPresignTTL is SigV4's limit on how long a presigned URL is valid.
	MaxPresignTTL = 7 * 24 * time.Hour
	// maxKeyBytes is S3's limit on a key, prefix included.
	maxKeyBytes = 1024
	// putPartSize and putConcurrency size Put's client-side multipart: 3 parts of 16 MiB
	// in flight (about 64 MiB of buffers at most), and objects of up to 156 GiB, far more
	// than the provisioner's database dumps.
	putPartSize    = 16 << 20
	putConcurrency = 3
)

// Config is the bucket and how to reach it (PROVISIONER_BACKUP_S3_*, see ConfigFromEnv).
type Config struct {
	// Endpoint is the S3 API's base URL (https://s3.eu-central-1.wasabisys.com,
	// https://<account>.r2.cloudflarestorage.com...); empty means AWS, by Region.
	Endpoint string
	// Region is the bucket's region; empty means us-east-1 (R2 takes "auto").
	Region string
	Bucket string
	// Prefix goes in front of every key, e.g. "n8n/"; a missing trailing "/" is added.
	Prefix                       string
	AccessKeyID, SecretAccessKey string
	// PathStyle puts the bucket in the path (http://host/bucket/key) rather than in the
	// host name: needed by most self-hosted servers and by IP-address endpoints.
	PathStyle bool
	// HTTPClient carries every request; nil gets a dedicated client with connection and
	// response-header timeouts (and no overall timeout: objects may be large, contexts
	// bound the calls).
	HTTPClient *http.Client
}

// Env variable names read by ConfigFromEnv.
const (
	EnvEndpoint        = "PROVISIONER_BACKUP_S3_ENDPOINT"
	EnvRegion          = "PROVISIONER_BACKUP_S3_REGION"
	EnvBucket          = "PROVISIONER_BACKUP_S3_BUCKET"
	EnvPrefix          = "PROVISIONER_BACKUP_S3_PREFIX"
	EnvAccessKeyID     = "PROVISIONER_BACKUP_S3_ACCESS_KEY_ID"
	EnvSecretAccessKey = "PROVISIONER_BACKUP_S3_SECRET_ACCESS_KEY"
	EnvPathStyle       = "PROVISIONER_BACKUP_S3_PATH_STYLE"
)

// ConfigFromEnv reads the PROVISIONER_BACKUP_S3_* variables. ok is false (and err nil)
// when PROVISIONER_BACKUP_S3_BUCKET and the credentials and endpoint are all unset:
// backups then stay on the hosts. A half-set configuration (a bucket without keys, keys
// without a bucket, a malformed endpoint, region or prefix, a _PATH_STYLE other than a
// boolean) is an Invalid error that names the variable; it never quotes the secret.
func ConfigFromEnv(getenv func(string) string) (cfg Config, ok bool, err error) {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	cfg = Config{
		Endpoint:        get(EnvEndpoint),
		Region:          get(EnvRegion),
		Bucket:          get(EnvBucket),
		Prefix:          get(EnvPrefix),
		AccessKeyID:     get(EnvAccessKeyID),
		SecretAccessKey: get(EnvSecretAccessKey),
	}
	if cfg.Bucket == "" {
		for _, name := range []string{EnvAccessKeyID, EnvSecretAccessKey, EnvEndpoint} {
			if get(name) != "" {
				return Config{}, false, envError(EnvBucket, fmt.Errorf("is unset while %s is set: set the bucket, or unset every PROVISIONER_BACKUP_S3_* variable to keep backups on the hosts", name))
			}
		}
		return Config{}, false, nil
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if v := get(EnvPathStyle); v != "" {
		if cfg.PathStyle, err = strconv.ParseBool(v); err != nil {
			return Config{}, false, envError(EnvPathStyle, errors.New(`must be "true" or "false"`))
		}
	}
	for _, f := range []struct {
		name string
		err  error
	}{
		{EnvBucket, checkBucket(cfg.Bucket)},
		{EnvEndpoint, checkEndpoint(cfg.Endpoint)},
		{EnvRegion, checkRegion(cfg.Region)},
		{EnvPrefix, checkPrefix(cfg.Prefix)},
		{EnvAccessKeyID, required(cfg.AccessKeyID)},
		{EnvSecretAccessKey, required(cfg.SecretAccessKey)},
	} {
		if f.err != nil {
			return Config{}, false, envError(f.name, f.err)
		}
	}
	return cfg, true, nil
}

func envError(name string, err error) error {
	return apperr.New(apperr.Invalid, "%s %v", name, err)
}

func required(v string) error {
	if v == "" {
		return errors.New("is required with a bucket")
	}
	return nil
}

// bucketName is lenient on purpose: providers differ (B2 allows upper case), and the
// bucket itself is the judge. It only keeps out what would break a URL.
var bucketName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{1,62}$`)

func checkBucket(b string) error {
	if !bucketName.MatchString(b) {
		return errors.New("must be a bucket name: 3 to 63 letters, digits, '.', '-' or '_'")
	}
	return nil
}

var regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func checkRegion(r string) error {
	if !regionName.MatchString(r) {
		return errors.New(`must be a region such as us-east-1 (or "auto" for R2)`)
	}
	return nil
}

func checkEndpoint(e string) error {
	if e == "" {
		return nil
	}
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		// The value is not quoted: an endpoint with credentials in it would leak them.
		return errors.New("must be an http(s) URL with a host and no path, query or user info, e.g. https://s3.eu-central-1.wasabisys.com")
	}
	return nil
}

func checkPrefix(p string) error {
	if p == "" {
		return nil
	}
	if err := checkKey(strings.TrimSuffix(p, "/")); err != nil {
		return fmt.Errorf("must be a relative path such as n8n/: %w", err)
	}
	return nil
}

// checkKey refuses keys that would escape the prefix or confuse a server or a shell.
func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("is empty")
	case !utf8.ValidString(k):
		return errors.New("is not UTF-8")
	case strings.HasPrefix(k, "/"):
		return errors.New("is absolute")
	case len(k) > maxKeyBytes:
		return fmt.Errorf("is longer than %d bytes", maxKeyBytes)
	}
	if strings.ContainsFunc(k, unicode.IsControl) {
		return errors.New("holds a control character")
	}
	if slices.Contains(strings.Split(k, "/"), "..") {
		return errors.New(`holds a ".." segment`)
	}
	return nil
}

// Store is a bucket under a prefix. It is safe for concurrent use.
type Store struct {
	client   *s3.Client
	presign  *s3.PresignClient
	upload   *transfermanager.Client
	bucket   string
	prefix   string
	secret   string
	now      func() time.Time // the presigner's clock; tests move it to make expired URLs
	partSize int64            // StartUpload's base part size; tests lower it to split small files
}

// New returns a Store for cfg. It makes no request (Ping does); its errors are Invalid
// and name the Config field.
func New(cfg Config) (*Store, error) {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	for _, f := range []struct {
		name string
		err  error
	}{
		{"Bucket", checkBucket(cfg.Bucket)},
		{"Endpoint", checkEndpoint(cfg.Endpoint)},
		{"Region", checkRegion(cfg.Region)},
		{"Prefix", checkPrefix(cfg.Prefix)},
		{"AccessKeyID", required(cfg.AccessKeyID)},
		{"SecretAccessKey", required(cfg.SecretAccessKey)},
	} {
		if f.err != nil {
			return nil, apperr.New(apperr.Invalid, "objstore: Config.%s %v", f.name, f.err)
		}
	}
	prefix := cfg.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	s := &Store{bucket: cfg.Bucket, prefix: prefix, secret: cfg.SecretAccessKey, now: time.Now, partSize: DefaultPartSize}
	s.client = s3.New(s3.Options{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		HTTPClient:   hc,
		UsePathStyle: cfg.PathStyle,
		// The SDK's own calls (create, complete, abort, list, get, delete, and Put's
		// parts) retry transient failures (5xx, throttling, resets) with the standard
		// retryer, 3 attempts in all, so one hiccup does not fail a backup while a down
		// bucket still fails fast and the caller's job retries later. Presigned URLs are
		// used by curl on the hosts, not by the SDK, and n8nctl retries those.
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 3 }),
		// Recent SDKs add x-amz-checksum-* and x-amz-sdk-checksum-algorithm to uploads and
		// validate response checksums by default. Third-party servers reject or ignore
		// them, and a presigned part URL must take a plain curl PUT: only when required.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		Logger:                     logging.Nop{},
		DisableLogOutputChecksumValidationSkipped: true,
	}, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(strings.TrimSuffix(cfg.Endpoint, "/"))
		}
	})
	s.presign = s3.NewPresignClient(s.client, func(o *s3.PresignOptions) {
		o.Presigner = clockPresigner{
			signer: v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true }),
			now:    func() time.Time { return s.now() },
		}
	})
	s.upload = transfermanager.New(s.client, func(o *transfermanager.Options) {
		o.PartSizeBytes = putPartSize
		o.MultipartUploadThreshold = putPartSize
		o.Concurrency = putConcurrency
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.FailTimeout = 30 * time.Second // to abort a failed upload even when ctx is done
	})
	return s, nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	// CompleteMultipartUpload of a large object can take a while on some servers before
	// they answer; two minutes still catches a server that accepted and went silent.
	t.ResponseHeaderTimeout = 2 * time.Minute
	t.ExpectContinueTimeout = time.Second
	t.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: t}
}

// clockPresigner signs with the Store's clock rather than the SDK's.
type clockPresigner struct {
	signer *v4.Signer
	now    func() time.Time
}

func (p clockPresigner) PresignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request, payloadHash, service, region string, _ time.Time, optFns ...func(*v4.SignerOptions)) (string, http.Header, error) {
	return p.signer.PresignHTTP(ctx, creds, r, payloadHash, service, region, p.now().UTC(), optFns...)
}

// Object is one stored object.
type Object struct {
	Key          string // relative to the store's prefix
	Size         int64
	LastModified time.Time
}

// Part is one part of a presigned multipart upload: the host PUTs bytes
// [Offset, Offset+Size) of the file to URL, and keeps the ETag header of the answer.
type Part struct {
	Number       int32
	Offset, Size int64
	URL          string
}

// Upload is a started multipart upload. PartSize is the size of every part but the last.
// CompleteUpload and AbortUpload need only Key, UploadID and (to check that no part is
// missing) Parts.
type Upload struct {
	Key, UploadID string
	PartSize      int64
	Parts         []Part
	Expires       time.Time // when the part URLs stop working
}

// Done is a part the host uploaded, with the ETag S3 answered (quotes included or not).
type Done struct {
	Number int32
	ETag   string
}

// PartSize returns the part size StartUpload uses for a file of size bytes with base
// part size base: base, raised (to a whole MiB) so that no file needs more than MaxParts.
func PartSize(size, base int64) int64 {
	if size > base*MaxParts {
		const mib = 1 << 20
		need := (size + MaxParts - 1) / MaxParts
		return (need + mib - 1) / mib * mib
	}
	return base
}

// StartUpload creates a multipart upload for key (relative to the prefix) of a file of
// size bytes, and presigns one PUT URL per part, valid for ttl (at most 7 days). A 0-byte
// file has one 0-byte part. If presigning fails the upload is aborted.
func (s *Store) StartUpload(ctx context.Context, key string, size int64, ttl time.Duration) (Upload, error) {
	full, err := s.key("StartUpload", key)
	if err != nil {
		return Upload{}, err
	}
	if size < 0 || size > MaxObjectSize {
		return Upload{}, apperr.New(apperr.Invalid, "objstore: StartUpload %q: size %d is not from 0 to 5 TiB", key, size)
	}
	if err := checkTTL("StartUpload", ttl); err != nil {
		return Upload{}, err
	}
	partSize := PartSize(size, s.partSize)
	out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &full})
	if err != nil {
		return Upload{}, s.fail("CreateMultipartUpload", key, err)
	}
	u := Upload{Key: key, UploadID: aws.ToString(out.UploadId), PartSize: partSize, Expires: s.now().Add(ttl)}
	n := max(1, (size+partSize-1)/partSize)
	u.Parts = make([]Part, 0, n)
	for i := range n {
		p := Part{Number: int32(i + 1), Offset: i * partSize, Size: min(partSize, size-i*partSize)}
		req, err := s.presign.PresignUploadPart(ctx, &s3.UploadPartInput{
			Bucket: &s.bucket, Key: &full, UploadId: &u.UploadID, PartNumber: aws.Int32(p.Number),
		}, s3.WithPresignExpires(ttl))
		if err != nil {
			err = s.fail("PresignUploadPart", key, err)
			// The upload is useless without its URLs, and would cost storage until
			// aborted: abort it even when ctx is what failed.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_ = s.AbortUpload(actx, u)
			cancel()
			return Upload{}, err
		}
		p.URL = req.URL
		u.Parts = append(u.Parts, p)
	}
	return u, nil
}

func checkTTL(op string, ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxPresignTTL {
		return apperr.New(apperr.Invalid, "objstore: %s: a presigned URL's lifetime must be more than 0 and at most 7 days, not %s", op, ttl)
	}
	return nil
}

// CompleteUpload assembles the parts of u the host uploaded, in part-number order. It
// refuses (Invalid, before any request) a missing, duplicate or unknown part and a part
// without an ETag; u.Parts, when set, says how many parts there must be.
func (s *Store) CompleteUpload(ctx context.Context, u Upload, done []Done) error {
	full, err := s.key("CompleteUpload", u.Key)
	if err != nil {
		return err
	}
	if u.UploadID == "" {
		return apperr.New(apperr.Invalid, "objstore: CompleteUpload %q: no upload id", u.Key)
	}
	done = slices.Clone(done)
	slices.SortFunc(done, func(a, b Done) int { return int(a.Number) - int(b.Number) })
	want := len(done)
	if len(u.Parts) > 0 {
		want = len(u.Parts)
	}
	parts := make([]types.CompletedPart, 0, len(done))
	for i, d := range done {
		switch {
		case int(d.Number) > want || d.Number < 1:
			return apperr.New(apperr.Invalid, "objstore: CompleteUpload %q: part %d is not one of the upload's %d parts", u.Key, d.Number, want)
		case i > 0 && done[i-1].Number == d.Number:
			return apperr.New(apperr.Invalid, "objstore: CompleteUpload %q: part %d is reported twice", u.Key, d.Number)
		case int(d.Number) != i+1:
			return apperr.New(apperr.Invalid, "objstore: CompleteUpload %q: part %d is missing", u.Key, i+1)
		case strings.Trim(d.ETag, `"`) == "":
			return apperr.New(apperr.Invalid, "objstore: CompleteUpload %q: part %d has no ETag", u.Key, d.Number)
		}
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(d.Number), ETag: aws.String(d.ETag)})
	}
	if len(parts) < want || want == 0 {
		return apperr.New(apperr.Invalid, "objstore: CompleteUpload %q: part %d is missing", u.Key, len(parts)+1)
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &full, UploadId: &u.UploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return s.fail("CompleteMultipartUpload", u.Key, err)
	}
	return nil
}

// AbortUpload drops an unfinished upload and the parts uploaded so far. An upload that is
// already aborted, completed or unknown is not an error.
func (s *Store) AbortUpload(ctx context.Context, u Upload) error {
	full, err := s.key("AbortUpload", u.Key)
	if err != nil {
		return err
	}
	if u.UploadID == "" {
		return apperr.New(apperr.Invalid, "objstore: AbortUpload %q: no upload id", u.Key)
	}
	_, err = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &full, UploadId: &u.UploadID})
	if err != nil && !isNotFound(err) {
		return s.fail("AbortMultipartUpload", u.Key, err)
	}
	return nil
}

// PresignGet returns a GET URL for key valid for ttl (at most 7 days). It makes no
// request: a missing key shows as a 404 to whoever uses the URL.
func (s *Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	full, err := s.key("PresignGet", key)
	if err != nil {
		return "", err
	}
	if err := checkTTL("PresignGet", ttl); err != nil {
		return "", err
	}
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &full}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", s.fail("PresignGetObject", key, err)
	}
	return req.URL, nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Verify reads key back and checks that it is size bytes long and that its SHA-256 is
// sha256Hex (lower-case hex). A missing key wraps ErrNotFound; a different object is a
// Conflict that wraps ErrMismatch and says whether the size or the checksum differs.
func (s *Store) Verify(ctx context.Context, key, sha256Hex string, size int64) error {
	if !isSHA256(sha256Hex) {
		return apperr.New(apperr.Invalid, "objstore: Verify %q: %q is not a lower-case hex SHA-256", key, sha256Hex)
	}
	body, n, err := s.get(ctx, "Verify", key)
	if err != nil {
		return err
	}
	defer body.Close()
	if n >= 0 && n != size {
		return mismatch(key, "size differs: the bucket holds %d bytes, expected %d", n, size)
	}
	h := sha256.New()
	read, err := io.Copy(h, body)
	if err != nil {
		return s.fail("GetObject", key, err)
	}
	if read != size {
		return mismatch(key, "size differs: read %d bytes from the bucket, expected %d", read, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha256Hex {
		return mismatch(key, "sha256 differs: the bucket holds %s, expected %s", got, sha256Hex)
	}
	return nil
}

func isSHA256(s string) bool { return sha256Hex.MatchString(s) }

func mismatch(key, format string, args ...any) error {
	return &apperr.Error{
		Kind:    apperr.Conflict,
		Message: fmt.Sprintf("objstore: Verify %q", key),
		Err:     &cleanError{msg: fmt.Sprintf(format, args...), causes: []error{ErrMismatch}},
	}
}

// Put uploads r to key, streamed: small bodies in one request, others in 16 MiB parts
// sent three at a time (up to about 156 GiB). A failed upload is aborted.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	full, err := s.key("Put", key)
	if err != nil {
		return err
	}
	if _, err := s.upload.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: &s.bucket, Key: &full, Body: r}); err != nil {
		return s.fail("PutObject", key, err)
	}
	return nil
}

// Get returns key's content; the caller closes it. A missing key wraps ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	body, _, err := s.get(ctx, "Get", key)
	return body, err
}

// get returns key's body and its length (-1 when the server did not say).
func (s *Store) get(ctx context.Context, op, key string) (io.ReadCloser, int64, error) {
	full, err := s.key(op, key)
	if err != nil {
		return nil, 0, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &full})
	if err != nil {
		return nil, 0, s.fail("GetObject", key, err)
	}
	n := int64(-1)
	if out.ContentLength != nil {
		n = *out.ContentLength
	}
	return &cleanBody{ReadCloser: out.Body, s: s, key: key}, n, nil
}

// cleanBody passes read errors through fail, so that they too hold no URL.
type cleanBody struct {
	io.ReadCloser
	s   *Store
	key string
}

func (b *cleanBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = b.s.fail("GetObject", b.key, err)
	}
	return n, err
}

// Keys returns the keys that start with prefix (relative to the store's prefix, as the
// result is), sorted. An empty prefix lists the whole store.
func (s *Store) Keys(ctx context.Context, prefix string) ([]string, error) {
	objs, err := s.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return keys, nil
}

// List returns the objects whose keys start with prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]Object, error) {
	if prefix != "" {
		if err := checkKey(prefix); err != nil {
			return nil, apperr.New(apperr.Invalid, "objstore: List: the prefix %q %v", prefix, err)
		}
	}
	full := s.prefix + prefix
	var objs []Object
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &full})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, s.fail("ListObjectsV2", prefix, err)
		}
		for _, o := range page.Contents {
			k, ok := strings.CutPrefix(aws.ToString(o.Key), s.prefix)
			if !ok {
				continue
			}
			objs = append(objs, Object{Key: k, Size: aws.ToInt64(o.Size), LastModified: aws.ToTime(o.LastModified)})
		}
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	full, err := s.key("Delete", key)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &full}); err != nil && !isNotFound(err) {
		return s.fail("DeleteObject", key, err)
	}
	return nil
}

// Ping checks that the bucket exists and the credentials reach it (HeadBucket). A missing
// bucket is NotFound, refused credentials Unauthorized or Forbidden, an unreachable server
// Unavailable.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket}); err != nil {
		return s.fail("HeadBucket", "", err)
	}
	return nil
}

// key returns the full key of a caller's key, or an Invalid error.
func (s *Store) key(op, key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", apperr.New(apperr.Invalid, "objstore: %s: the key %q %v", op, key, err)
	}
	if len(s.prefix)+len(key) > maxKeyBytes {
		return "", apperr.New(apperr.Invalid, "objstore: %s: the key %q is longer than %d bytes with the prefix", op, key, maxKeyBytes)
	}
	return s.prefix + key, nil
}

// isNotFound reports whether the bucket answered 404 (NoSuchKey, NoSuchUpload, NotFound).
func isNotFound(err error) bool {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NoSuchUpload", "NotFound":
			return true
		}
	}
	return false
}

// cleanError is an SDK error reduced to text that holds no URL and no secret. It unwraps
// to the sentinel of its kind and to the cause (the API error, or the network or context
// error under the SDK's *url.Error), so errors.Is(err, context.Canceled) still works.
type cleanError struct {
	msg    string
	causes []error
}

func (e *cleanError) Error() string   { return e.msg }
func (e *cleanError) Unwrap() []error { return e.causes }

// signature catches what a stray URL would carry, should an error ever print one.
var signature = regexp.MustCompile(`(?i)(X-Amz-(Signature|Credential|Security-Token))=[^&\s"]*`)

// fail translates an SDK error into an apperr kind with a clean cause.
func (s *Store) fail(op, key string, err error) error {
	if ae, ok := errors.AsType[*apperr.Error](err); ok {
		return ae // already ours (cleanBody)
	}
	kind, msg, cause := apperr.Internal, "", err
	status := 0
	if re, ok := errors.AsType[*awshttp.ResponseError](err); ok {
		status = re.HTTPStatusCode()
	}
	var notFound bool
	if ae, ok := errors.AsType[smithy.APIError](err); ok {
		cause = ae
		msg = fmt.Sprintf("the bucket answered %s", ae.ErrorCode())
		if status != 0 {
			msg = fmt.Sprintf("the bucket answered %d %s", status, ae.ErrorCode())
		}
		if m := ae.ErrorMessage(); m != "" {
			msg += ": " + m
		}
		// A missing bucket is not a missing object: only object calls wrap ErrNotFound.
		notFound = isNotFound(err) && ae.ErrorCode() != "NoSuchBucket" && op != "HeadBucket"
		switch {
		case status == http.StatusNotFound || ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NoSuchBucket":
			kind = apperr.NotFound
		case status == http.StatusUnauthorized:
			kind = apperr.Unauthorized
		case status == http.StatusForbidden:
			kind = apperr.Forbidden
		case status == http.StatusConflict:
			kind = apperr.Conflict
		case status == http.StatusTooManyRequests || status >= 500 || ae.ErrorCode() == "SlowDown":
			kind = apperr.Unavailable
		case status >= 400:
			kind = apperr.Invalid
		}
	} else if ue, ok := errors.AsType[*url.Error](err); ok {
		// ue prints the request URL; keep only what went wrong.
		kind, cause = apperr.Unavailable, ue.Err
		msg = "the request failed: " + ue.Err.Error()
	} else {
		msg = err.Error()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || isNetError(err) {
			kind = apperr.Unavailable
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		kind = apperr.Unavailable
	}
	if ma, ok := errors.AsType[*retry.MaxAttemptsError](err); ok {
		msg += fmt.Sprintf(" (after %d attempts)", ma.Attempt)
	}
	if s.secret != "" {
		msg = strings.ReplaceAll(msg, s.secret, "[secret]")
	}
	msg = signature.ReplaceAllString(msg, "$1=[redacted]")
	causes := []error{cause}
	if notFound {
		causes = []error{ErrNotFound, cause}
	}
	where := "objstore: " + op
	if key != "" {
		where += " " + strconv.Quote(key)
	}
	return &apperr.Error{Kind: kind, Message: where, Err: &cleanError{msg: msg, causes: causes}}
}

func isNetError(err error) bool {
	_, ok := errors.AsType[net.Error](err)
	return ok || errors.Is(err, io.ErrUnexpectedEOF)
}
