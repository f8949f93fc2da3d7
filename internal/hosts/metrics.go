package hosts

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The fleet's gauges, one series per host (so their cardinality is the fleet's size). A
// dashboard and alert rules use these names.
var (
	metricInstances = prometheus.NewDesc("provisioner_host_instances",
		"Instances holding a slot on the host (warm pool members included).", []string{"host"}, nil)
	metricMemoryCommitted = prometheus.NewDesc("provisioner_host_memory_committed_bytes",
		"Sum of the memory caps of the plans of the host's instances.", []string{"host"}, nil)
	metricMemoryTotal = prometheus.NewDesc("provisioner_host_memory_total_bytes",
		"Memory of the host VM as Proxmox allocates it (absent until read).", []string{"host"}, nil)
	metricDiskCommitted = prometheus.NewDesc("provisioner_host_disk_committed_bytes",
		"Sum of the disk quotas of the host's instances.", []string{"host"}, nil)
	metricDiskTotal = prometheus.NewDesc("provisioner_host_disk_total_bytes",
		"Size of the host's data disk as n8nctl reports it (absent until read).", []string{"host"}, nil)
	// The capacities are the totals times the overcommit: what placement fills the host
	// to. With an overcommit above 1, committed passes total by design; it never passes
	// capacity.
	metricMemoryCapacity = prometheus.NewDesc("provisioner_host_memory_capacity_bytes",
		"Memory placement may commit on the host: its total times PROVISIONER_MEMORY_OVERCOMMIT.", []string{"host"}, nil)
	metricDiskCapacity = prometheus.NewDesc("provisioner_host_disk_capacity_bytes",
		"Disk placement may commit on the host: its total times PROVISIONER_DISK_OVERCOMMIT.", []string{"host"}, nil)
)

// Collector reports the fleet's capacity from the inventory at scrape time, so the figures
// are never staler than the database.
type Collector struct {
	store   *Store
	timeout time.Duration
}

// NewCollector returns the fleet collector over store.
func NewCollector(store *Store) *Collector { return &Collector{store: store, timeout: 5 * time.Second} }

// Describe sends the fleet's metric descriptions.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{metricInstances, metricMemoryCommitted, metricMemoryTotal, metricMemoryCapacity,
		metricDiskCommitted, metricDiskTotal, metricDiskCapacity} {
		ch <- d
	}
}

// Collect reads every host and sends its gauges; a database error is reported as an
// invalid metric, which fails the scrape visibly rather than showing an empty fleet.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	list, err := c.store.List(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(metricInstances, err)
		return
	}
	const mib, gib = 1 << 20, 1 << 30
	for _, h := range list {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, h.Name)
		}
		gauge(metricInstances, float64(h.Instances))
		gauge(metricMemoryCommitted, float64(h.MemoryCommittedMB)*mib)
		gauge(metricDiskCommitted, float64(h.DiskCommittedGB)*gib)
		if h.MemoryMB > 0 {
			gauge(metricMemoryTotal, float64(h.MemoryMB)*mib)
			gauge(metricMemoryCapacity, float64(h.MemoryMB)*c.store.over.Memory*mib)
		}
		if h.DiskGB > 0 {
			gauge(metricDiskTotal, float64(h.DiskGB)*gib)
			gauge(metricDiskCapacity, float64(h.DiskGB)*c.store.over.Disk*gib)
		}
	}
}
