package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// The small interfaces instances needs from the world. cmd/provisioner wires the concrete
// adapters (hosts, dns, n8n, mail) into them; instances imports none of those packages.

// Host is where an instance runs, as placement reports it.
type Host struct {
	Name       string
	Node       string // Proxmox node
	VMID       int    // the VM running the containers
	PublicIP   string // what the DNS record points at
	IngressURL string // where the provisioner reaches the VM's Traefik
}

// Placer places instances on hosts.
type Placer interface {
	// Assign places the instance on a host (or returns the one it has) and records it.
	// It returns an error for which errors.Is(err, ErrNoRoom) when no host has room.
	Assign(ctx context.Context, instanceID string) (Host, error)
	// Host returns the host called name.
	Host(ctx context.Context, name string) (Host, error)
	// Hosts returns every host of the inventory.
	Hosts(ctx context.Context) ([]Host, error)
	// Capacity returns the active hosts in placement order (fewest instances first).
	Capacity(ctx context.Context) ([]HostRoom, error)
	// Room returns the load and room of the host called name, whatever its state.
	Room(ctx context.Context, host string) (HostRoom, error)
	// AssignTo places the instance on the named host, atomically, if the host is active
	// and the instance's plan fits there; errors.Is(err, ErrNoRoom) otherwise.
	AssignTo(ctx context.Context, instanceID, host string) (Host, error)
	// RecordDisk stores the size of a host's data disk in GiB, which placement keeps
	// the instances' disk quotas within.
	RecordDisk(ctx context.Context, host string, gb int) error
}

// HostRoom is a host's load (its instances, pool members included) and what placement
// may still commit on it.
type HostRoom struct {
	Name      string
	Instances int
	// Free is how many more instances the host's max_instances allows (a large number
	// when it sets none).
	Free int
	// MemoryMB and DiskGB are what placement may commit on the host in all: its VM's size
	// with the overcommit applied, 0 when not limited (the size is not known). The
	// Committed figures are what its instances' plans take already.
	MemoryMB, MemoryCommittedMB int
	DiskGB, DiskCommittedGB     int
}

// Grows reports whether an instance already on the host may take memoryMB and diskGB more
// (a plan change): memory and disk must fit, no slot is needed.
func (r HostRoom) Grows(memoryMB, diskGB int) bool {
	return (r.MemoryMB == 0 || r.MemoryCommittedMB+memoryMB <= r.MemoryMB) &&
		(r.DiskGB == 0 || r.DiskCommittedGB+diskGB <= r.DiskGB)
}

// Fits reports whether a new instance of memoryMB and diskGB may go on the host.
func (r HostRoom) Fits(memoryMB, diskGB int) bool { return r.Free > 0 && r.Grows(memoryMB, diskGB) }

// Take counts an instance of memoryMB and diskGB on the host, for a caller planning
// several placements at once.
func (r *HostRoom) Take(memoryMB, diskGB int) {
	r.Instances++
	r.Free--
	r.MemoryCommittedMB += memoryMB
	r.DiskCommittedGB += diskGB
}

// Short says what of memoryMB and diskGB more does not fit, for messages.
func (r HostRoom) Short(memoryMB, diskGB int) string {
	if r.MemoryMB > 0 && r.MemoryCommittedMB+memoryMB > r.MemoryMB {
		return fmt.Sprintf("%d MiB more memory are needed and %d MiB are free", memoryMB, max(r.MemoryMB-r.MemoryCommittedMB, 0))
	}
	if r.DiskGB > 0 && r.DiskCommittedGB+diskGB > r.DiskGB {
		return fmt.Sprintf("%d GiB more disk are needed and %d GiB are free", diskGB, max(r.DiskGB-r.DiskCommittedGB, 0))
	}
	return ""
}

// ErrNoRoom is what a Placer returns when no active host has room for the instance.
var ErrNoRoom = errors.New("no active host has room")

// DNS keeps the instance's A record.
type DNS interface {
	// UpsertA makes name point at ip (creating or updating one record) and returns its id.
	UpsertA(ctx context.Context, name, ip, comment string) (string, error)
	// Delete removes every A record of name; absent is not an error.
	Delete(ctx context.Context, name string) error
	// Records returns the A records under suffix, name → address.
	Records(ctx context.Context, suffix string) (map[string]string, error)
}

// Agent runs n8nctl on a host VM: `n8nctl <verb> <slug>` with settings on stdin. It
// returns the JSON object n8nctl printed; an apperr.Invalid error is permanent, one for
// which errors.Is(err, ErrNotYet) means the guest agent is not answering yet, any other
// kind may succeed on a retry.
type Agent interface {
	Run(ctx context.Context, node string, vmid int, verb, slug string, settings map[string]string) (json.RawMessage, error)
}

// ErrNotYet marks an adapter error meaning "what you need is on its way": n8n still
// starting or mounting its REST routes, a guest agent not answering while its VM boots.
// The saga asks again within the step instead of spending an attempt.
var ErrNotYet = errors.New("not there yet")

// Owner is the n8n owner account the provisioner creates for the customer.
type Owner struct {
	Email, FirstName, LastName, Password string
}

// App talks to one customer n8n through its host's ingress (ingressURL, with fqdn as the
// Host header), and knows n8n's rules for the secrets it needs.
type App interface {
	// Ready asks n8n's readiness once: nil when ready, an error for which
	// errors.Is(err, ErrNotYet) while it is starting.
	Ready(ctx context.Context, ingressURL, fqdn string) error
	// SetupOwner creates the owner, sending the ingress guard's credential. It returns an
	// error for which errors.Is(err, ErrOwnerAlreadySetup) when n8n has an owner already,
	// and one for which errors.Is(err, ErrNotYet) while n8n's REST routes are not mounted.
	SetupOwner(ctx context.Context, ingressURL, fqdn string, owner Owner, guardUser, guardPassword string) error
	// Unclaimed returns nil once n8n serves its REST routes and has no owner yet; an error
	// for which errors.Is(err, ErrOwnerAlreadySetup) when it has one, and one for which
	// errors.Is(err, ErrNotYet) while its routes are not mounted.
	Unclaimed(ctx context.Context, ingressURL, fqdn string) error
	// Login checks that email and password open the instance (apperr.Unauthorized if not).
	Login(ctx context.Context, ingressURL, fqdn, email, password string) error
	GeneratePassword() (string, error)
	GenerateEncryptionKey() (string, error)
	// GuardHTPasswd returns the htpasswd line for the owner-setup guard's credential.
	GuardHTPasswd(user, password string) (string, error)
}

// ErrOwnerAlreadySetup is what App.SetupOwner returns when the instance has an owner.
var ErrOwnerAlreadySetup = errors.New("n8n owner already set up")

// Credentials is what the customer's welcome email carries.
type Credentials struct {
	To, Name, Locale string
	URL              string
	LoginEmail       string
	Password         string
	// Key identifies the email (the instance id), so a re-send after a crash carries the
	// same Message-ID and can be recognised as the same message.
	Key string
}

// NoticeKind names a lifecycle email to the customer.
type NoticeKind string

const (
	NoticeSuspended NoticeKind = "suspended" // Reason says why: billing or manual
	NoticeResumed   NoticeKind = "resumed"
	NoticePastDue   NoticeKind = "past_due" // Until is when the grace period ends
	NoticeDeleted   NoticeKind = "deleted"  // Until is how long the final backup is kept
)

// Notice is a lifecycle email to the customer.
type Notice struct {
	Kind             NoticeKind
	To, Name, Locale string
	URL              string
	Reason           string
	Until            time.Time
	Key              string // stable per event, so a re-send carries the same Message-ID
}

// Notifier sends the customer's and the operator's emails.
type Notifier interface {
	SendCredentials(ctx context.Context, c Credentials) error
	Notify(ctx context.Context, n Notice) error
	AlertOperator(ctx context.Context, subject, body string) error
}

// BillingHealth tells whether billing events are being processed: deleting customers for
// non-payment while the billing pipeline is stuck could delete paying customers.
type BillingHealth interface {
	// Stalled returns a reason when billing events have waited unprocessed too long.
	Stalled(ctx context.Context) (reason string, err error)
}

// Enqueuer inserts jobs (satisfied by *queue.Queue).
type Enqueuer interface {
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// Bucket is the off-site object store for archives (S3 or compatible). Hosts never hold its
// credentials: they are given presigned URLs for their parts and downloads.
type Bucket interface {
	// StartUpload begins a multipart upload of size bytes to key and presigns its parts.
	StartUpload(ctx context.Context, key string, size int64) (Upload, error)
	// CompleteUpload assembles the parts the host uploaded.
	CompleteUpload(ctx context.Context, u Upload, parts []UploadedPart) error
	// AbortUpload drops an unfinished upload's parts; absent is not an error.
	AbortUpload(ctx context.Context, u Upload) error
	// PresignGet returns a short-lived download URL for key.
	PresignGet(ctx context.Context, key string) (string, error)
	// Verify reads key back and checks its size and SHA-256.
	Verify(ctx context.Context, key, sha256 string, size int64) error
	// Delete removes key; absent is not an error.
	Delete(ctx context.Context, key string) error
}

// Upload is a started multipart upload: the host PUTs each part's bytes to its URL.
type Upload struct {
	Key, ID string
	Parts   []UploadPart
}

// UploadPart is bytes [Offset, Offset+Size) of the archive, to be PUT to URL.
type UploadPart struct {
	Number       int32
	Offset, Size int64
	URL          string
}

// UploadedPart is a part the host uploaded, with the ETag the bucket answered.
type UploadedPart struct {
	Number int32  `json:"number"`
	ETag   string `json:"etag"`
}
