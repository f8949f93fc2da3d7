package instances

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// Drift kinds the doctor reports. The fixable ones are safe to repair automatically; the
// rest need the operator's judgement (an orphan may be a customer's only copy of data).
const (
	DriftHostUnreachable  = "host_unreachable"
	DriftMissingContainer = "missing_container"
	DriftStopped          = "stopped_container" // fixable: an active instance's container is stopped
	DriftRunningSuspended = "running_suspended" // fixable: a suspended instance's container runs
	DriftCaps             = "caps_mismatch"     // the container's limits are not the plan's
	DriftImage            = "image_mismatch"    // the container runs another image
	DriftMissingDNS       = "missing_dns"       // fixable
	DriftWrongDNS         = "wrong_dns"         // fixable: the record points elsewhere
	DriftOrphanContainer  = "orphan_container"  // files or a container no instance owns
	DriftOrphanDNS        = "orphan_dns"        // a record under the base domain no instance owns
	DriftDNSUnreachable   = "dns_unreachable"
	DriftEgress           = "egress_policy"  // the host's egress policy is missing or changed
	DriftHostDisk         = "host_disk_full" // the host's data disk is at least 80 % full
	DriftNotAnswering     = "not_answering"  // an active instance's n8n runs but does not answer
)

// hostDiskAlarm is the share of a host's data disk in use that the doctor reports.
const hostDiskAlarm = 0.8

// Finding is one difference between what the database says and what is live.
type Finding struct {
	Kind     string `json:"kind"`
	Instance string `json:"instance,omitempty"`
	Slug     string `json:"slug,omitempty"`
	Host     string `json:"host,omitempty"`
	Detail   string `json:"detail"`
	Fixable  bool   `json:"fixable"`
	Fixed    bool   `json:"fixed"`
	FixError string `json:"fix_error,omitempty"`
}

// Report is the doctor's result.
type Report struct {
	CheckedAt time.Time `json:"checked_at"`
	Instances int       `json:"instances"`
	Hosts     int       `json:"hosts"`
	Findings  []Finding `json:"findings"`
}

// Drift reports whether any finding is left unfixed.
func (r Report) Drift() bool {
	for _, f := range r.Findings {
		if !f.Fixed {
			return true
		}
	}
	return false
}

// Progress is told how many hosts the doctor has checked.
type Progress func(done, total int)

// hostList is the part of `n8nctl list all` the doctor reads.
type hostList struct {
	Instances []containerStatus `json:"instances"`
	Host      struct {
		Egress string `json:"egress"`
		Disk   *struct {
			SizeBytes int64 `json:"size_bytes"`
			UsedBytes int64 `json:"used_bytes"`
		} `json:"disk"`
	} `json:"host"`
}

// Doctor compares every instance with its host and its DNS record, and every host and the
// zone with the instances, and repairs the safe differences when fix is true.
func (s *Service) Doctor(ctx context.Context, fix bool, progress Progress) (Report, error) {
	report := Report{CheckedAt: s.now(), Findings: []Finding{}}
	live, err := s.store.Live(ctx)
	if err != nil {
		return report, err
	}
	hosts, err := s.cfg.Placer.Hosts(ctx)
	if err != nil {
		return report, err
	}
	report.Hosts = len(hosts)
	bySlug := map[string]*Instance{}
	for i := range live {
		bySlug[live[i].Slug] = &live[i]
		if expectsContainer(live[i].Status) {
			report.Instances++
		}
	}
	live = settled(live)
	add := func(f Finding) { report.Findings = append(report.Findings, f) }
	for i, h := range hosts {
		s.checkHost(ctx, h, live, bySlug, fix, add)
		if progress != nil {
			progress(i+1, len(hosts))
		}
	}
	s.checkDNS(ctx, hosts, live, bySlug, fix, add)
	sort.SliceStable(report.Findings, func(i, j int) bool { return report.Findings[i].Kind < report.Findings[j].Kind })
	return report, nil
}

// settled leaves out the instances being moved: their containers and DNS record change
// under the move, which the doctor must not "repair". They are still known by slug, so
// their containers are not taken for orphans.
func settled(live []Instance) []Instance {
	out := live[:0:0]
	for _, in := range live {
		if in.MovingTo == nil {
			out = append(out, in)
		}
	}
	return out
}

// expectsContainer reports whether an instance in st should have a container on its host.
func expectsContainer(st Status) bool { return st == Active || st == Suspended }

func (s *Service) checkHost(ctx context.Context, h Host, live []Instance, bySlug map[string]*Instance, fix bool, add func(Finding)) {
	raw, err := s.cfg.Agent.Run(ctx, h.Node, h.VMID, "list", "all", nil)
	var list hostList
	if err == nil {
		err = json.Unmarshal(raw, &list)
	}
	if err != nil {
		add(Finding{Kind: DriftHostUnreachable, Host: h.Name, Detail: apperr.Message(err)})
		return
	}
	if list.Host.Egress != "ok" {
		why := list.Host.Egress
		if why == "" {
			why = "not reported: this host's n8nctl predates the egress policy"
		}
		add(Finding{Kind: DriftEgress, Host: h.Name, Detail: "the tenants' egress policy is not in place (" + why +
			"): customers' n8n may reach the LAN, the host or 169.254.169.254; rerun bootstrap-host.sh on the host"})
	}
	if d := list.Host.Disk; d != nil && d.SizeBytes > 0 {
		if err := s.cfg.Placer.RecordDisk(ctx, h.Name, int(d.SizeBytes>>30)); err != nil {
			s.log.Warn("recording a host's disk size failed", "host", h.Name, "error", err.Error())
		}
		if used := float64(d.UsedBytes) / float64(d.SizeBytes); used >= hostDiskAlarm {
			add(Finding{Kind: DriftHostDisk, Host: h.Name, Detail: fmt.Sprintf("the data disk is %.0f %% full (%d of %d GiB): instances may stop writing; grow the disk or move instances",
				used*100, d.UsedBytes>>30, d.SizeBytes>>30)})
		}
	}
	seen := map[string]containerStatus{}
	for _, c := range list.Instances {
		seen[c.Slug] = c
		in := bySlug[c.Slug]
		if in == nil || deref(in.Host) != h.Name || !expectsContainer(in.Status) && in.Status != Provisioning && in.Status != Warm {
			detail := "files of an unknown instance"
			if c.Exists {
				detail = fmt.Sprintf("container n8n-%s (running: %t) that no instance on this host owns", c.Slug, c.Running)
			}
			add(Finding{Kind: DriftOrphanContainer, Slug: c.Slug, Host: h.Name, Detail: detail})
		}
	}
	for i := range live {
		in := &live[i]
		readyMember := in.Status == Warm && in.Step == stepHealthy
		if deref(in.Host) != h.Name || !expectsContainer(in.Status) && !readyMember {
			continue
		}
		c, ok := seen[in.Slug]
		f := Finding{Instance: in.ID, Slug: in.Slug, Host: h.Name}
		switch {
		case !ok || !c.Exists:
			f.Kind, f.Detail = DriftMissingContainer, "the instance is "+string(in.Status)+" but its container does not exist"
		case (in.Status == Active || readyMember) && !c.Running:
			f.Kind, f.Detail, f.Fixable = DriftStopped, "the instance is "+string(in.Status)+" but its container is stopped", true
		case in.Status == Suspended && c.Running:
			f.Kind, f.Detail, f.Fixable = DriftRunningSuspended, "the instance is suspended but its container runs", true
		case math.Abs(c.CPUs-in.CPUs) > 0.001 || c.MemoryMB != in.MemoryMB:
			f.Kind, f.Detail = DriftCaps, fmt.Sprintf("want %s CPU and %d MiB, the container has %s CPU and %d MiB", formatCPUs(in.CPUs), in.MemoryMB, formatCPUs(c.CPUs), c.MemoryMB)
		case in.DiskGB > 0 && (c.DiskGB == nil || *c.DiskGB != in.DiskGB):
			f.Kind, f.Detail = DriftCaps, fmt.Sprintf("want a %d GiB disk quota, the instance has %s", in.DiskGB, diskOf(c.DiskGB))
		case c.Image != in.N8nImage:
			f.Kind, f.Detail = DriftImage, fmt.Sprintf("want %s, the container runs %s", in.N8nImage, c.Image)
		case in.Status == Active:
			// The uptime probe's check: through the ingress, and at the public URL when
			// the policy probes it.
			res := s.probe(ctx, in, h)
			if res.Up {
				continue
			}
			f.Kind, f.Detail = DriftNotAnswering, "its container runs, but n8n does not answer "+res.Why
		default:
			continue
		}
		if fix && f.Fixable {
			verb := map[string]string{DriftStopped: "resume", DriftRunningSuspended: "suspend"}[f.Kind]
			_, err := s.cfg.Agent.Run(ctx, h.Node, h.VMID, verb, in.Slug, nil)
			s.recordFix(ctx, &f, err)
		}
		add(f)
	}
}

func (s *Service) checkDNS(ctx context.Context, hosts []Host, live []Instance, bySlug map[string]*Instance, fix bool, add func(Finding)) {
	records, err := s.cfg.DNS.Records(ctx, s.cfg.BaseDomain)
	if err != nil {
		add(Finding{Kind: DriftDNSUnreachable, Detail: apperr.Message(err)})
		return
	}
	ipOf := map[string]string{}
	for _, h := range hosts {
		ipOf[h.Name] = h.PublicIP
	}
	owned := map[string]bool{}
	for i := range live {
		in := &live[i]
		if !expectsContainer(in.Status) {
			continue
		}
		name, want := s.fqdn(in), ipOf[deref(in.Host)]
		owned[name] = true
		got, ok := records[name]
		f := Finding{Instance: in.ID, Slug: in.Slug, Host: deref(in.Host), Fixable: true}
		switch {
		case !ok:
			f.Kind, f.Detail = DriftMissingDNS, "no A record "+name
		case got != want:
			f.Kind, f.Detail = DriftWrongDNS, fmt.Sprintf("%s points at %s, its host is at %s", name, got, want)
		default:
			continue
		}
		if fix {
			_, err := s.cfg.DNS.UpsertA(ctx, name, want, "n8n-provisioner instance "+in.ID)
			s.recordFix(ctx, &f, err)
		}
		add(f)
	}
	for name := range records {
		slug := strings.TrimSuffix(name, "."+s.cfg.BaseDomain)
		if owned[name] || slug == name || strings.Contains(slug, ".") {
			continue
		}
		if in := bySlug[slug]; in != nil && (in.Status == Pending || in.Status == Provisioning) {
			continue // being provisioned: the record is the saga's
		}
		add(Finding{Kind: DriftOrphanDNS, Slug: slug, Detail: "A record " + name + " → " + records[name] + " that no live instance owns"})
	}
}

func (s *Service) recordFix(ctx context.Context, f *Finding, err error) {
	if err != nil {
		f.FixError = apperr.Message(err)
		return
	}
	f.Fixed = true
	if f.Instance != "" {
		s.store.Apply(ctx, f.Instance, nil, "doctor", "doctor repaired "+f.Kind+": "+f.Detail)
	}
}

// driftAlertPrefix keys the doctor's findings among the remembered alerts.
const driftAlertPrefix = "drift|"

// DoctorArgs is the periodic doctor run; it alerts the operator about new drift.
type DoctorArgs struct{}

// Kind names the job.
func (DoctorArgs) Kind() string { return "doctor" }

type doctorWorker struct {
	river.WorkerDefaults[DoctorArgs]
	s *Service
}

func (w *doctorWorker) Work(ctx context.Context, _ *river.Job[DoctorArgs]) error {
	s := w.s
	report, err := s.Doctor(ctx, false, nil)
	if err != nil {
		return err
	}
	// What was already alerted is in the store, so that a restart does not alert again.
	known, err := s.store.AlertedKeys(ctx, driftAlertPrefix)
	if err != nil {
		return err
	}
	var fresh []string
	current, details := map[string]bool{}, map[string]string{}
	for _, f := range report.Findings {
		key := driftAlertPrefix + f.Kind + "|" + f.Host + "|" + f.Slug
		current[key] = true
		if !known[key] {
			fresh = append(fresh, fmt.Sprintf("- %s %s %s: %s", f.Kind, f.Host, f.Slug, f.Detail))
			details[key] = f.Detail
		}
	}
	if len(fresh) > 0 {
		s.alert(ctx, "Drift: the doctor found %d new difference(s) between the database and the hosts or DNS:\n%s\nRun `provisioner doctor --fix` to repair the safe ones.",
			len(fresh), strings.Join(fresh, "\n"))
	}
	for key, detail := range details {
		if err := s.store.MarkAlerted(ctx, key, detail, report.CheckedAt); err != nil {
			return err
		}
	}
	return s.store.ForgetAlerts(ctx, driftAlertPrefix, current)
}
