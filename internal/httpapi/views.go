package httpapi

import (
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
)

// The JSON shapes of the API. They are explicit types, separate from the stored ones, so
// that a new column never leaks into a response (sealed secrets live on the same rows).

type instanceJSON struct {
	ID             string      `json:"id"`
	ClientID       string      `json:"client_id"`
	SubscriptionID *string     `json:"subscription_id"`
	Slug           string      `json:"slug"`
	URL            string      `json:"url"`
	Host           *string     `json:"host"`
	Plan           string      `json:"plan"`
	Status         string      `json:"status"`
	Step           string      `json:"step"`
	CreatedAt      time.Time   `json:"created_at"`
	UpdatedAt      time.Time   `json:"updated_at"`
	Timeline       []eventJSON `json:"timeline,omitempty"`
}

type eventJSON struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
}

type instanceListJSON struct {
	Instances  []instanceJSON `json:"instances"`
	NextCursor *string        `json:"next_cursor"`
}

func viewInstance(in instances.Instance) instanceJSON {
	return instanceJSON{
		ID: in.ID, ClientID: in.ClientID, SubscriptionID: in.SubscriptionID, Slug: in.Slug,
		URL: in.URL, Host: in.Host, Plan: in.PlanID, Status: string(in.Status), Step: in.Step,
		CreatedAt: in.CreatedAt.UTC(), UpdatedAt: in.UpdatedAt.UTC(),
	}
}

func viewInstanceList(list []instances.Instance, next string) instanceListJSON {
	out := instanceListJSON{Instances: make([]instanceJSON, 0, len(list))}
	for _, in := range list {
		out.Instances = append(out.Instances, viewInstance(in))
	}
	if next != "" {
		out.NextCursor = &next
	}
	return out
}

func viewTimeline(events []instances.Event) []eventJSON {
	out := make([]eventJSON, 0, len(events))
	for _, e := range events {
		out = append(out, eventJSON{At: e.At.UTC(), Kind: e.Kind, Message: e.Message})
	}
	return out
}

type hostJSON struct {
	Name         string `json:"name"`
	Node         string `json:"node"`
	VMID         int    `json:"vmid"`
	PublicIP     string `json:"public_ip"`
	IngressURL   string `json:"ingress_url"`
	MaxInstances int    `json:"max_instances"`
	State        string `json:"state"`
	Instances    int    `json:"instances"`
}

func viewHost(h hosts.Host) hostJSON {
	return hostJSON{Name: h.Name, Node: h.Node, VMID: h.VMID, PublicIP: h.PublicIP,
		IngressURL: h.IngressURL, MaxInstances: h.MaxInstances, State: string(h.State), Instances: h.Instances}
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
