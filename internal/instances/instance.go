// Package instances owns the customer's n8n instance: its record and lifecycle states, the
// client it belongs to, the timeline the portal shows as progress, and the store that keeps
// them. It declares the small interfaces it needs from the adapters (DNS, host agent, mail,
// n8n) and never imports them; cmd/provisioner wires the concrete ones in.
package instances

import (
	"regexp"
	"time"

	"github.com/google/uuid"
)

// Status is where an instance is in its lifecycle.
type Status string

const (
	Warm         Status = "warm"         // a pool member: started and ready, no client yet
	Pending      Status = "pending"      // waiting for a host with room
	Provisioning Status = "provisioning" // the saga is creating it
	Active       Status = "active"       // running and handed to the customer
	Suspended    Status = "suspended"    // stopped for non-payment or by the operator
	Deleting     Status = "deleting"     // backing up and tearing down
	Deleted      Status = "deleted"      // gone; the record and its backups remain
	Failed       Status = "failed"       // provisioning gave up and cleaned up after itself
)

// Statuses lists every status, in lifecycle order.
var Statuses = []Status{Warm, Pending, Provisioning, Active, Suspended, Deleting, Deleted, Failed}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, known := range Statuses {
		if s == known {
			return true
		}
	}
	return false
}

// Instance is one customer n8n. The sealed fields hold secrets encrypted by package secret;
// they never leave the service in an API response.
type Instance struct {
	ID string
	// ClientID is empty (NULL) while the instance is a pool member nobody has paid for.
	ClientID            string `gorm:"default:null"`
	SubscriptionID      *string
	Slug                string
	URL                 string
	Host                *string
	PlanID              string
	CPUs                float64 `gorm:"column:cpus"`
	MemoryMB            int
	DiskGB              int    `gorm:"column:disk_gb"` // the data's quota; 0 for instances made before quotas
	N8nImage            string `gorm:"column:n8n_image"`
	Status              Status
	Step                string
	OwnerEmail          string
	OwnerPasswordSealed string
	EncryptionKeySealed string
	SetupGuardSealed    string
	DNSRecordID         string `gorm:"column:dns_record_id"`
	SuspendReason       string
	FailureReason       string
	SuspendAt           *time.Time
	DeleteAfter         *time.Time
	EmailedAt           *time.Time
	// The saga's retry state for the step after Step: failed attempts, since when the
	// step has been failing or waiting, and whether the operator was told.
	StepAttempts     int
	StepBlockedSince *time.Time
	StepAlerted      bool
	// MovingTo names the host an instance is being moved to, while the move runs.
	MovingTo *string
	// The uptime probe's state: consecutive failed probes, since when the instance has
	// not answered, and since when it is degraded (a health flag billing never reads).
	ProbeFailures int
	DownSince     *time.Time
	DegradedSince *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// TableName tells gorm the table.
func (Instance) TableName() string { return "instances" }

// Client is the portal's customer. Its id is the portal's own.
type Client struct {
	ID        string
	Email     string
	Name      string
	Locale    string
	CreatedAt time.Time
}

// TableName tells gorm the table.
func (Client) TableName() string { return "clients" }

// Event is one entry of an instance's timeline.
type Event struct {
	ID         int64
	InstanceID string
	At         time.Time
	Kind       string
	Message    string
}

// TableName tells gorm the table.
func (Event) TableName() string { return "instance_events" }

// Backup is an archive of an instance's data, taken on its host and copied to the bucket.
// It keeps the instance's sealed encryption key (without it the credentials saved in the
// backup cannot be decrypted) and the archive's own sealed age identity (without it the
// archive cannot be opened).
type Backup struct {
	ID                  string
	InstanceID          string
	Host                string // the host that took it, and holds it while OnHost
	Path                string // on Host
	Name                string // the archive's file name, the same on every host and in the bucket
	SHA256              string `gorm:"column:sha256"` // of the archive as stored (the ciphertext)
	Bytes               int64
	N8nImage            string `gorm:"column:n8n_image"`
	EncryptionKeySealed string
	DataKeySealed       string // empty for an archive taken before encryption
	Reason              string // manual, daily, final, pre-upgrade, move
	Status              BackupStatus
	OnHost              bool
	ObjectKey           string
	Error               string
	CreatedAt           time.Time
	ExpiresAt           *time.Time // the final backup's: kept until then
	UploadedAt          *time.Time
	PrunedAt            *time.Time
}

// BackupStatus is where a backup's archive is.
type BackupStatus string

const (
	BackupLocal    BackupStatus = "local"    // on its host only (no bucket, or the upload is pending)
	BackupUploaded BackupStatus = "uploaded" // in the bucket, its SHA-256 verified there
	BackupFailed   BackupStatus = "failed"   // not taken, or its upload gave up; Error says why
	BackupPruned   BackupStatus = "pruned"   // removed everywhere by retention
)

// TableName tells gorm the table.
func (Backup) TableName() string { return "backups" }

// NewID returns a new instance id: a UUIDv7, so ids sort in creation order and keyset
// pagination on id lists instances oldest first.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// ValidID reports whether id has the shape of an instance id.
func ValidID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil && len(id) == 36
}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// ValidClientID reports whether id can be a portal client id: 1–128 characters of letters,
// digits and _ . : - (the portal's own ids, Stripe-style prefixes included).
func ValidClientID(id string) bool { return clientIDPattern.MatchString(id) }
