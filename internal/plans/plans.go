// Package plans is the catalogue of what customers buy: the resources of each n8n, the
// image it runs and the price ids under which the payment providers sell it. It knows
// nothing of billing or instances, so both can depend on it.
package plans

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Plan is what a customer buys: the resources of their n8n and the pinned image it runs.
type Plan struct {
	ID            string  `yaml:"id" json:"id"`
	Name          string  `yaml:"name" json:"name"`
	CPUs          float64 `yaml:"cpus" json:"cpus"`
	MemoryMB      int     `yaml:"memory_mb" json:"memory_mb"`
	DiskGB        int     `yaml:"disk_gb" json:"disk_gb"` // the data's quota on the host
	Price         string  `yaml:"price" json:"price"`     // for display only; Stripe's price is the truth
	StripePriceID string  `yaml:"stripe_price_id" json:"stripe_price_id"`
	N8nImage      string  `yaml:"n8n_image" json:"n8n_image"`
	// Warm is how many started, ready instances of the plan the fleet keeps for the next
	// payments (the warm pool); WarmPerHost is how many each active host keeps at least.
	Warm        int `yaml:"warm" json:"-"`
	WarmPerHost int `yaml:"warm_per_host" json:"-"`
}

// DefaultDiskGB is a plan's disk quota when the plans file names none.
const DefaultDiskGB = 10

// DefaultN8nImage is the n8n release new plans run when the plans file names none.
const DefaultN8nImage = "docker.n8n.io/n8nio/n8n:2.8.4"

// DefaultPlans is the catalogue used when no plans file is configured.
func DefaultPlans() Plans {
	return Plans{{ID: "starter", Name: "Starter", CPUs: 0.5, MemoryMB: 1024, DiskGB: DefaultDiskGB, Price: "USD 10/month",
		StripePriceID: "price_starter", N8nImage: DefaultN8nImage}}
}

// Plans is the catalogue, in the order the file lists them.
type Plans []Plan

// Find returns the plan with id.
func (ps Plans) Find(id string) (Plan, bool) {
	for _, p := range ps {
		if p.ID == id {
			return p, true
		}
	}
	return Plan{}, false
}

// ByStripePrice returns the plan sold under a Stripe price id.
func (ps Plans) ByStripePrice(priceID string) (Plan, bool) {
	for _, p := range ps {
		if p.StripePriceID != "" && p.StripePriceID == priceID {
			return p, true
		}
	}
	return Plan{}, false
}

var planIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,39}$`)

// An image reference with an explicit tag or digest; "latest" is refused separately.
var imagePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|@sha256:[a-f0-9]{64})$`)

// PinnedImage reports whether image names a version tag or digest (never latest), so that
// what a customer runs never changes behind our back.
func PinnedImage(image string) bool {
	return imagePattern.MatchString(image) && !strings.HasSuffix(image, ":latest")
}

// Validate returns an error naming the first plan and field that is wrong.
func (ps Plans) Validate() error {
	if len(ps) == 0 {
		return fmt.Errorf("no plans")
	}
	seen, prices := map[string]bool{}, map[string]bool{}
	for i, p := range ps {
		where := fmt.Sprintf("plan %d (%q)", i+1, p.ID)
		switch {
		case !planIDPattern.MatchString(p.ID):
			return fmt.Errorf("%s: id must be lowercase letters, digits, - or _", where)
		case seen[p.ID]:
			return fmt.Errorf("%s: duplicate id", where)
		case p.Name == "":
			return fmt.Errorf("%s: name is required", where)
		case p.CPUs < 0.1 || p.CPUs > 64:
			return fmt.Errorf("%s: cpus must be between 0.1 and 64", where)
		case p.MemoryMB < 1024 || p.MemoryMB > 262144:
			// An idle n8n (main + task runner) uses ~600 MB: less than 1 GiB is not a service.
			return fmt.Errorf("%s: memory_mb must be between 1024 and 262144", where)
		case p.DiskGB < 1 || p.DiskGB > 2048:
			return fmt.Errorf("%s: disk_gb must be between 1 and 2048", where)
		case !PinnedImage(p.N8nImage):
			return fmt.Errorf("%s: n8n_image must be pinned to a version tag or digest, never latest", where)
		case p.Warm < 0 || p.Warm > 100 || p.WarmPerHost < 0 || p.WarmPerHost > 20:
			return fmt.Errorf("%s: warm must be between 0 and 100, warm_per_host between 0 and 20", where)
		case p.StripePriceID != "" && prices[p.StripePriceID]:
			return fmt.Errorf("%s: stripe_price_id %s is used by another plan", where, p.StripePriceID)
		}
		seen[p.ID], prices[p.StripePriceID] = true, p.StripePriceID != ""
	}
	return nil
}

// Load reads the plans file at path (YAML: a list under `plans:`), or returns
// DefaultPlans when path is empty. Unknown fields are errors, so a typo never silently
// drops a setting.
func Load(path string) (Plans, error) {
	if path == "" {
		return DefaultPlans(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var doc struct {
		Plans Plans `yaml:"plans"`
	}
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	for i := range doc.Plans {
		if doc.Plans[i].N8nImage == "" {
			doc.Plans[i].N8nImage = DefaultN8nImage
		}
		if doc.Plans[i].DiskGB == 0 {
			doc.Plans[i].DiskGB = DefaultDiskGB
		}
	}
	if err := doc.Plans.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc.Plans, nil
}
