package httpapi

import (
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

// The JSON shapes of the API. They are explicit types, separate from the stored ones, so
// that a new column never leaks into a response (sealed secrets live on the same rows).
// The CLI's --json output uses them too, so scripts see the same field names.

// InstanceJSON is an instance as the API shows it.
type InstanceJSON struct {
	ID             string  `json:"id"`
	ClientID       string  `json:"client_id"`
	SubscriptionID *string `json:"subscription_id"`
	Slug           string  `json:"slug"`
	URL            string  `json:"url"`
	Host           *string `json:"host"`
	Plan           string  `json:"plan"`
	Status         string  `json:"status"`
	Step           string  `json:"step"`
	// DegradedSince is when the uptime probe found the instance not answering (null:
	// healthy). A health flag, not a status: billing never reads it.
	DegradedSince *time.Time  `json:"degraded_since"`
	CreatedAt     time.Time   `json:"created_at"`
	UpdatedAt     time.Time   `json:"updated_at"`
	Timeline      []EventJSON `json:"timeline,omitempty"`
}

// EventJSON is one timeline entry.
type EventJSON struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
}

// InstanceListJSON is one page of instances.
type InstanceListJSON struct {
	Instances  []InstanceJSON `json:"instances"`
	NextCursor *string        `json:"next_cursor"`
}

// ViewInstance returns in as the API shows it, without secrets.
func ViewInstance(in instances.Instance) InstanceJSON {
	return InstanceJSON{
		ID: in.ID, ClientID: in.ClientID, SubscriptionID: in.SubscriptionID, Slug: in.Slug,
		URL: in.URL, Host: in.Host, Plan: in.PlanID, Status: string(in.Status), Step: in.Step,
		DegradedSince: utc(in.DegradedSince), CreatedAt: in.CreatedAt.UTC(), UpdatedAt: in.UpdatedAt.UTC(),
	}
}

// utc returns t in UTC, or nil.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// ViewInstanceList returns a page of instances and its next cursor as the API shows them.
func ViewInstanceList(list []instances.Instance, next string) InstanceListJSON {
	out := InstanceListJSON{Instances: make([]InstanceJSON, 0, len(list))}
	for _, in := range list {
		out.Instances = append(out.Instances, ViewInstance(in))
	}
	if next != "" {
		out.NextCursor = &next
	}
	return out
}

// ViewTimeline returns a timeline as the API shows it.
func ViewTimeline(events []instances.Event) []EventJSON {
	out := make([]EventJSON, 0, len(events))
	for _, e := range events {
		out = append(out, EventJSON{At: e.At.UTC(), Kind: e.Kind, Message: e.Message})
	}
	return out
}

// HostJSON is a host as the API shows it.
type HostJSON struct {
	Name       string `json:"name"`
	Node       string `json:"node"`
	VMID       int    `json:"vmid"`
	PublicIP   string `json:"public_ip"`
	IngressURL string `json:"ingress_url"`
	// MaxInstances caps the instances (0: no cap).
	MaxInstances int    `json:"max_instances"`
	State        string `json:"state"`
	Instances    int    `json:"instances"`
	// MemoryMB, CPUs and DiskGB are what the VM has (0: not read yet); the Committed
	// figures are what its instances' plans take.
	MemoryMB          int `json:"memory_mb"`
	MemoryCommittedMB int `json:"memory_committed_mb"`
	CPUs              int `json:"cpus"`
	DiskGB            int `json:"disk_gb"`
	DiskCommittedGB   int `json:"disk_committed_gb"`
}

// ViewHost returns h as the API shows it.
func ViewHost(h hosts.Host) HostJSON {
	return HostJSON{Name: h.Name, Node: h.Node, VMID: h.VMID, PublicIP: h.PublicIP,
		IngressURL: h.IngressURL, MaxInstances: h.MaxInstances, State: string(h.State), Instances: h.Instances,
		MemoryMB: h.MemoryMB, MemoryCommittedMB: h.MemoryCommittedMB, CPUs: h.CPUs,
		DiskGB: h.DiskGB, DiskCommittedGB: h.DiskCommittedGB}
}

// newHostJSON is the body of POST /v1/hosts.
type newHostJSON struct {
	Name         string `json:"name"`
	Node         string `json:"node"`
	VMID         int    `json:"vmid"`
	PublicIP     string `json:"public_ip"`
	IngressURL   string `json:"ingress_url"`
	MaxInstances int    `json:"max_instances"`
}

// hostPatchJSON is the body of PATCH /v1/hosts/{name}.
type hostPatchJSON struct {
	State        *hosts.State `json:"state"`
	MaxInstances *int         `json:"max_instances"`
}

// BackupJSON is a backup as the API shows it; the sealed keys it keeps are not.
type BackupJSON struct {
	ID         string     `json:"id"`
	InstanceID string     `json:"instance_id"`
	Status     string     `json:"status"`
	Reason     string     `json:"reason"`
	Name       string     `json:"name"`
	Host       string     `json:"host"`
	OnHost     bool       `json:"on_host"`
	Path       string     `json:"path"`
	ObjectKey  string     `json:"object_key"`
	Encrypted  bool       `json:"encrypted"`
	SHA256     string     `json:"sha256"`
	Bytes      int64      `json:"bytes"`
	N8nImage   string     `json:"n8n_image"`
	Error      string     `json:"error"`
	CreatedAt  time.Time  `json:"created_at"`
	UploadedAt *time.Time `json:"uploaded_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	PrunedAt   *time.Time `json:"pruned_at"`
}

// ViewBackups returns list as the API shows it (never null).
func ViewBackups(list []instances.Backup) []BackupJSON {
	out := make([]BackupJSON, 0, len(list))
	for _, b := range list {
		out = append(out, ViewBackup(b))
	}
	return out
}

// ViewBackup returns b as the API shows it.
func ViewBackup(b instances.Backup) BackupJSON {
	return BackupJSON{ID: b.ID, InstanceID: b.InstanceID, Status: string(b.Status), Reason: b.Reason, Name: b.Name,
		Host: b.Host, OnHost: b.OnHost, Path: b.Path, ObjectKey: b.ObjectKey, Encrypted: b.DataKeySealed != "",
		SHA256: b.SHA256, Bytes: b.Bytes, N8nImage: b.N8nImage, Error: b.Error, CreatedAt: b.CreatedAt.UTC(),
		UploadedAt: b.UploadedAt, ExpiresAt: b.ExpiresAt, PrunedAt: b.PrunedAt}
}
