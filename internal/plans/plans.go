// Package plans is the catalogue of what customers buy: the resources of each n8n, the
// image it runs and the ids under which each payment provider (Stripe, MercadoPago)
// sells it, with each one's price. It knows
// nothing of billing or instances, so both can depend on it.
package plans

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Payment providers a plan can be sold through: the names billing registers them under.
const (
	Stripe      = "stripe"
	MercadoPago = "mercadopago"
)

// Plan is what a customer buys: the resources of their n8n and the pinned image it runs,
// and the ids under which each payment provider sells it. A plan may be sold through
// either provider or both; one with neither is only given out by the operator.
type Plan struct {
	ID       string  `yaml:"id" json:"id"`
	Name     string  `yaml:"name" json:"name"`
	CPUs     float64 `yaml:"cpus" json:"cpus"`
	MemoryMB int     `yaml:"memory_mb" json:"memory_mb"`
	DiskGB   int     `yaml:"disk_gb" json:"disk_gb"` // the data's quota on the host
	// Price is for display ("USD 10/month"), and the default of each provider's price;
	// the provider's own price (Stripe's price, MercadoPago's preapproval plan) is the truth.
	Price         string `yaml:"price" json:"price"`
	StripePriceID string `yaml:"stripe_price_id" json:"stripe_price_id"`
	StripePrice   string `yaml:"stripe_price" json:"-"` // display price on Stripe, if not Price
	// MercadoPagoPlanID is a MercadoPago preapproval plan (its id, 32 hex digits).
	MercadoPagoPlanID string `yaml:"mercadopago_plan_id" json:"mercadopago_plan_id"`
	MercadoPagoPrice  string `yaml:"mercadopago_price" json:"-"` // display price on MercadoPago, if not Price
	N8nImage          string `yaml:"n8n_image" json:"n8n_image"`
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

// ByPrice returns the plan a provider sells under priceID (a Stripe price, a MercadoPago
// preapproval plan).
func (ps Plans) ByPrice(provider, priceID string) (Plan, bool) {
	for _, p := range ps {
		if id := p.PriceID(provider); id != "" && id == priceID {
			return p, true
		}
	}
	return Plan{}, false
}

// PriceID returns the id under which provider sells the plan, or "" when it does not.
func (p Plan) PriceID(provider string) string {
	switch provider {
	case Stripe:
		return p.StripePriceID
	case MercadoPago:
		return p.MercadoPagoPlanID
	}
	return ""
}

// Offer is one provider's sale of a plan, as the portal shows it.
type Offer struct {
	Provider string `json:"provider"`
	PriceID  string `json:"price_id"` // the Stripe price or MercadoPago preapproval plan
	Price    string `json:"price"`    // for display, e.g. "ARS 15000/month"
	Currency string `json:"currency,omitempty"`
	Amount   string `json:"amount,omitempty"` // a decimal, e.g. "15000" or "9.90"
}

// Offers returns the providers that sell the plan, Stripe first, with each one's price.
func (p Plan) Offers() []Offer {
	var out []Offer
	for _, o := range []struct{ provider, id, price string }{
		{Stripe, p.StripePriceID, firstNonEmpty(p.StripePrice, p.Price)},
		{MercadoPago, p.MercadoPagoPlanID, firstNonEmpty(p.MercadoPagoPrice, p.Price)},
	} {
		if o.id == "" {
			continue
		}
		offer := Offer{Provider: o.provider, PriceID: o.id, Price: o.price}
		if m := pricePattern.FindStringSubmatch(o.price); m != nil {
			offer.Currency, offer.Amount = m[1], m[2]
		}
		out = append(out, offer)
	}
	return out
}

// Sells reports whether provider sells the plan.
func (p Plan) Sells(provider string) bool { return p.PriceID(provider) != "" }

// MarshalJSON adds the plan's offers ("providers") to its fields, for GET /v1/plans.
func (p Plan) MarshalJSON() ([]byte, error) {
	type fields Plan // without this method
	offers := p.Offers()
	if offers == nil {
		offers = []Offer{}
	}
	return json.Marshal(struct {
		fields
		Providers []Offer `json:"providers"`
	}{fields(p), offers})
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// pricePattern is a display price with its currency and amount: "USD 10/month".
var pricePattern = regexp.MustCompile(`^([A-Z]{3}) ([0-9]+(?:\.[0-9]{1,2})?)(?:/[a-z]+)?$`)

// mercadoPagoPlanPattern is a preapproval plan id: 32 hex digits in MercadoPago's answers.
var mercadoPagoPlanPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

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
	seen, prices, mpPlans := map[string]bool{}, map[string]bool{}, map[string]bool{}
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
		case p.MercadoPagoPlanID != "" && !mercadoPagoPlanPattern.MatchString(p.MercadoPagoPlanID):
			return fmt.Errorf("%s: mercadopago_plan_id must be a preapproval plan id (letters and digits)", where)
		case p.MercadoPagoPlanID != "" && mpPlans[p.MercadoPagoPlanID]:
			return fmt.Errorf("%s: mercadopago_plan_id %s is used by another plan", where, p.MercadoPagoPlanID)
		case p.StripePrice != "" && !pricePattern.MatchString(p.StripePrice):
			return fmt.Errorf("%s: stripe_price must be a currency and an amount, e.g. USD 10/month", where)
		case p.MercadoPagoPrice != "" && !pricePattern.MatchString(p.MercadoPagoPrice):
			return fmt.Errorf("%s: mercadopago_price must be a currency and an amount, e.g. ARS 15000/month", where)
		case p.StripePrice != "" && p.StripePriceID == "", p.MercadoPagoPrice != "" && p.MercadoPagoPlanID == "":
			return fmt.Errorf("%s: a provider's price needs that provider's id (stripe_price_id, mercadopago_plan_id)", where)
		}
		seen[p.ID], prices[p.StripePriceID], mpPlans[p.MercadoPagoPlanID] = true, p.StripePriceID != "", p.MercadoPagoPlanID != ""
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
