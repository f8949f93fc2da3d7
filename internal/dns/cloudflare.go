// Package dns keeps each instance's A record (<slug>.<base-domain> → host public IP) in a
// Cloudflare zone, through cloudflare-go. Writes are idempotent by name: an upsert looks the
// name up first, so retries of a provisioning step never create a second record, and drift
// (duplicates made by hand, a changed IP or proxy setting) is repaired on the next upsert.
//
// Errors are apperr kinds: Invalid for bad input (checked before any request) and for
// Cloudflare's validation errors, Unauthorized/Forbidden for a bad or under-scoped token,
// NotFound for an absent record, Unavailable for rate limits, 5xx, network failures and
// cancelled contexts (the caller's job retries those). The API token never appears in an
// error.
package dns

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	cloudflare "github.com/cloudflare/cloudflare-go"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// DefaultBaseURL is Cloudflare's API v4 endpoint.
const DefaultBaseURL = "https://api.cloudflare.com/client/v4"

const (
	defaultPageSize = 100 // Cloudflare's default per_page for dns_records
	// maxPages bounds a listing so that a server that never reports its last page cannot
	// keep a worker busy forever.
	maxPages = 10000
	// autoTTL is Cloudflare's "automatic" TTL; proxied records must use it.
	autoTTL = 1
	// maxComment is the comment limit on Cloudflare's free plan, the smallest of all plans,
	// so a comment that passes here is accepted on every plan.
	maxComment = 100
	// Cloudflare's error codes the adapter acts on.
	codeIdenticalRecord = 81058
)

// authCodes are the error codes Cloudflare answers with HTTP 400 when the credentials
// themselves are unusable (missing or malformed Authorization header), so they mean a bad
// token rather than a bad record.
var authCodes = map[int]bool{6003: true, 6111: true, 9106: true, 9109: true}

var zoneID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Config configures the Cloudflare adapter.
type Config struct {
	APIToken string // a token with Zone.DNS edit on ZoneID; required
	ZoneID   string // the zone's 32-hex-character id; required
	BaseURL  string // default DefaultBaseURL; tests point it at cloudflaretest
	// HTTPClient carries every request; nil gets a dedicated client with a 30 s timeout.
	HTTPClient *http.Client
	Proxied    bool // create and keep records proxied through Cloudflare (orange cloud)
	// MaxRetries is how often cloudflare-go itself retries a 429, 5xx or network failure,
	// with backoff from 1 s. 0 leaves retrying to the caller's job queue (and keeps tests fast).
	MaxRetries int
	// PageSize is the per_page of listings; 0 means 100.
	PageSize int
	// RequestsPerSecond is cloudflare-go's client-side rate limit; 0 means none, because
	// this service makes a handful of calls per instance and a 429 surfaces as Unavailable.
	RequestsPerSecond float64
}

// Record is a DNS record of the zone as Cloudflare reports it. CreatedOn decides which of
// several records for one name is the oldest.
type Record struct {
	ID        string
	Name      string
	Type      string
	Content   string
	Proxied   bool
	Comment   string
	TTL       int
	CreatedOn time.Time
}

// Cloudflare manages A records in one Cloudflare zone. It is safe for concurrent use.
type Cloudflare struct {
	api      *cloudflare.API
	zone     *cloudflare.ResourceContainer
	proxied  bool
	pageSize int
}

// New returns an adapter for cfg.ZoneID. It makes no request. Errors: Invalid when the
// token or zone id is missing or malformed, or the base URL is not an http(s) URL.
func New(cfg Config) (*Cloudflare, error) {
	if cfg.APIToken == "" {
		return nil, apperr.New(apperr.Invalid, "cloudflare: API token is required")
	}
	if cfg.ZoneID == "" {
		return nil, apperr.New(apperr.Invalid, "cloudflare: zone id is required")
	}
	if !zoneID.MatchString(cfg.ZoneID) {
		return nil, apperr.New(apperr.Invalid, "cloudflare: zone id must be 32 lowercase hex characters")
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, apperr.New(apperr.Invalid, "cloudflare: base URL must be an absolute http(s) URL")
	}
	if cfg.MaxRetries < 0 {
		return nil, apperr.New(apperr.Invalid, "cloudflare: max retries must not be negative")
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	rps := cfg.RequestsPerSecond
	if rps <= 0 {
		rps = math.Inf(1) // rate.Inf: the limiter never waits
	}
	pageSize := cfg.PageSize
	if pageSize <= 0 {
		pageSize = defaultPageSize
	}
	api, err := cloudflare.NewWithAPIToken(cfg.APIToken,
		cloudflare.BaseURL(strings.TrimSuffix(base, "/")),
		cloudflare.HTTPClient(client),
		cloudflare.UsingRetryPolicy(cfg.MaxRetries, 1, 30),
		cloudflare.UsingRateLimit(rps),
		cloudflare.UserAgent("n8n-provisioner"),
	)
	if err != nil {
		// Only option errors land here, and none of ours fails; keep the token out anyway.
		return nil, apperr.New(apperr.Invalid, "cloudflare: bad configuration")
	}
	return &Cloudflare{
		api:      api,
		zone:     cloudflare.ZoneIdentifier(cfg.ZoneID),
		proxied:  cfg.Proxied,
		pageSize: pageSize,
	}, nil
}

// UpsertA makes name an A record pointing at ip, proxied as configured, with TTL automatic
// and comment (which should name the instance). It looks the name up first: with no record
// it creates one; with one it updates it only if content, proxied or comment differ; with
// several (duplicates made outside this service) it keeps one, deletes the others and
// updates the survivor. Calling it again with the same arguments writes nothing. It
// returns the record as it now is.
//
// Errors: Invalid (bad name, IP or comment, before any request; or Cloudflare refused the
// record), Unauthorized, Forbidden, Unavailable.
func (c *Cloudflare) UpsertA(ctx context.Context, name, ip, comment string) (Record, error) {
	if err := ValidateName(name); err != nil {
		return Record{}, err
	}
	if err := ValidateIPv4(ip); err != nil {
		return Record{}, err
	}
	if len([]rune(comment)) > maxComment {
		return Record{}, apperr.New(apperr.Invalid, "dns comment longer than %d characters", maxComment)
	}

	// A second pass only happens when another writer created the same record between our
	// lookup and our create (Cloudflare then answers 81058); the lookup finds theirs.
	for attempt := 0; ; attempt++ {
		recs, err := c.listA(ctx, name)
		if err != nil {
			return Record{}, err
		}
		if len(recs) == 0 {
			created, err := c.api.CreateDNSRecord(ctx, c.zone, cloudflare.CreateDNSRecordParams{
				Type:    "A",
				Name:    name,
				Content: ip,
				TTL:     autoTTL,
				Proxied: &c.proxied,
				Comment: comment,
			})
			if err != nil {
				if attempt == 0 && hasCode(err, codeIdenticalRecord) {
					continue
				}
				return Record{}, wrap(err, "create dns record %s", name)
			}
			return toRecord(created), nil
		}

		keeper := pickKeeper(recs, ip)
		// Extras go first: updating the keeper to content an extra already has would be
		// refused by Cloudflare as an identical record.
		for _, r := range recs {
			if r.ID == keeper.ID {
				continue
			}
			if err := c.deleteID(ctx, r.ID, name); err != nil {
				return Record{}, err
			}
		}
		if keeper.Content == ip && keeper.Proxied == c.proxied && keeper.Comment == comment {
			return keeper, nil
		}
		ttl := keeper.TTL // an operator's TTL on an unproxied record is theirs to keep
		if c.proxied || ttl == 0 {
			ttl = autoTTL // Cloudflare answers proxied names itself; only "automatic" applies
		}
		updated, err := c.api.UpdateDNSRecord(ctx, c.zone, cloudflare.UpdateDNSRecordParams{
			ID:      keeper.ID,
			Type:    "A",
			Name:    name,
			Content: ip,
			TTL:     ttl,
			Proxied: &c.proxied,
			Comment: &comment,
		})
		if err != nil {
			return Record{}, wrap(err, "update dns record %s", name)
		}
		return toRecord(updated), nil
	}
}

// pickKeeper chooses which of several A records for one name survives: the oldest that
// already points at ip (so the name never points at a stale address and the fewest writes
// are made), else the oldest. recs is sorted oldest first.
func pickKeeper(recs []Record, ip string) Record {
	for _, r := range recs {
		if r.Content == ip {
			return r
		}
	}
	return recs[0]
}

// Lookup returns the A record called name (the oldest, should there be duplicates).
// Errors: Invalid (bad name, before any request), NotFound, Unauthorized, Forbidden,
// Unavailable.
func (c *Cloudflare) Lookup(ctx context.Context, name string) (Record, error) {
	if err := ValidateName(name); err != nil {
		return Record{}, err
	}
	recs, err := c.listA(ctx, name)
	if err != nil {
		return Record{}, err
	}
	if len(recs) == 0 {
		return Record{}, apperr.New(apperr.NotFound, "no dns record %s", name)
	}
	return recs[0], nil
}

// Delete removes every A record called name, duplicates included; records of other types
// are left alone because this adapter never creates them. A name with no record is not an
// error, so Delete can be retried. Errors: Invalid (bad name, before any request),
// Unauthorized, Forbidden, Unavailable.
func (c *Cloudflare) Delete(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	recs, err := c.listA(ctx, name)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := c.deleteID(ctx, r.ID, name); err != nil {
			return err
		}
	}
	return nil
}

// List returns every A record of the zone whose name ends in "."+suffix (the suffix itself
// excluded), following all pages, sorted by name and then age: the doctor compares it with
// the instances it knows to find orphans. Errors: Invalid (bad suffix, before any request),
// Unauthorized, Forbidden, Unavailable.
func (c *Cloudflare) List(ctx context.Context, suffix string) ([]Record, error) {
	if err := ValidateName(suffix); err != nil {
		return nil, err
	}
	// cloudflare-go v0 filters by exact name only, so the suffix is matched here.
	all, err := c.listA(ctx, "")
	if err != nil {
		return nil, err
	}
	out := []Record{}
	for _, r := range all {
		if strings.HasSuffix(r.Name, "."+suffix) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// listA returns the zone's A records called name (all of them when name is empty), every
// page, oldest first. Pages are offsets: a record deleted or added while the pages are
// read shifts the rest, and one would be skipped or read twice. Such a listing is noticed
// (the total changed, or the pages did not add up to it) and read again.
func (c *Cloudflare) listA(ctx context.Context, name string) ([]Record, error) {
	for range listAttempts {
		out, consistent, err := c.listPages(ctx, name)
		if err != nil || consistent {
			return out, err
		}
	}
	return nil, apperr.New(apperr.Unavailable, "the zone's records kept changing while they were listed (%d tries)", listAttempts)
}

// listAttempts is how many times a listing that changed under it is read again.
const listAttempts = 3

// listPages reads every page once and says whether they agree with each other.
func (c *Cloudflare) listPages(ctx context.Context, name string) (out []Record, consistent bool, err error) {
	total, seen := -1, 0
	consistent = true
	for page := 1; page <= maxPages; page++ {
		recs, info, err := c.api.ListDNSRecords(ctx, c.zone, cloudflare.ListDNSRecordsParams{
			Type:       "A",
			Name:       name,
			ResultInfo: cloudflare.ResultInfo{Page: page, PerPage: c.pageSize},
		})
		if err != nil {
			return nil, false, wrap(err, "list dns records")
		}
		seen += len(recs)
		for _, r := range recs {
			// Defensive: a filter the server ignored must not make us touch other names.
			if name != "" && !strings.EqualFold(r.Name, name) {
				continue
			}
			out = append(out, toRecord(r))
		}
		if info != nil {
			if total >= 0 && info.Total != total {
				consistent = false
			}
			total = info.Total
		}
		if info == nil || len(recs) == 0 || page >= info.TotalPages {
			break
		}
	}
	if total >= 0 && seen != total {
		consistent = false
	}
	// Stable, so records created in the same instant keep the server's order.
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedOn.Before(out[j].CreatedOn) })
	return out, consistent, nil
}

// deleteID deletes one record; one that is already gone (another worker, an operator) is
// what we wanted.
func (c *Cloudflare) deleteID(ctx context.Context, id, name string) error {
	err := c.api.DeleteDNSRecord(ctx, c.zone, id)
	if err == nil || statusOf(err) == http.StatusNotFound {
		return nil
	}
	return wrap(err, "delete dns record %s", name)
}

func toRecord(r cloudflare.DNSRecord) Record {
	return Record{
		ID:        r.ID,
		Name:      r.Name,
		Type:      r.Type,
		Content:   r.Content,
		Proxied:   r.Proxied != nil && *r.Proxied,
		Comment:   r.Comment,
		TTL:       r.TTL,
		CreatedOn: r.CreatedOn,
	}
}

// wrap translates a cloudflare-go error into an apperr kind. cloudflare-go returns typed
// errors (all unwrapping to *cloudflare.Error with the HTTP status) for 4xx answers; 429,
// 5xx and network failures come out of its retry loop as plain errors once its retries are
// spent, so everything untyped is the dependency failing: Unavailable.
func wrap(err error, format string, args ...any) error {
	op := "cloudflare: " + fmt.Sprintf(format, args...)
	var cfErr *cloudflare.Error
	if !errors.As(err, &cfErr) {
		return apperr.Wrap(apperr.Unavailable, err, "%s: cloudflare is unavailable", op)
	}
	msg := strings.Join(cfErr.ErrorMessages, "; ")
	switch status := cfErr.StatusCode; {
	case status == http.StatusUnauthorized:
		return apperr.Wrap(apperr.Unauthorized, err, "%s: the API token was refused", op)
	case status == http.StatusForbidden:
		return apperr.Wrap(apperr.Forbidden, err, "%s: the API token may not do this on the zone", op)
	case status == http.StatusBadRequest && anyCode(cfErr.ErrorCodes, authCodes):
		return apperr.Wrap(apperr.Unauthorized, err, "%s: the API token was refused (%s)", op, msg)
	case status == http.StatusNotFound:
		return apperr.Wrap(apperr.NotFound, err, "%s: not found", op)
	case status == http.StatusTooManyRequests || status >= 500:
		return apperr.Wrap(apperr.Unavailable, err, "%s: cloudflare is unavailable", op)
	case status >= 400 && status < 500:
		if msg == "" {
			msg = "request refused"
		}
		return apperr.Wrap(apperr.Invalid, err, "%s: %s", op, msg)
	default:
		return apperr.Wrap(apperr.Internal, err, "%s", op)
	}
}

func statusOf(err error) int {
	var cfErr *cloudflare.Error
	if errors.As(err, &cfErr) {
		return cfErr.StatusCode
	}
	return 0
}

func hasCode(err error, code int) bool {
	var cfErr *cloudflare.Error
	return errors.As(err, &cfErr) && cfErr.InternalErrorCodeIs(code)
}

func anyCode(codes []int, set map[int]bool) bool {
	for _, c := range codes {
		if set[c] {
			return true
		}
	}
	return false
}
