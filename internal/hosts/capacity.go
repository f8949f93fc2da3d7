package hosts

import "math"

// Overcommit is how much of a host's memory and disk placement may commit to instances'
// plans: 1.0 commits what the VM has, 1.5 half as much again (a plan's memory is a cap, and
// most n8n instances idle well below it), 0.9 keeps a tenth for the VM's own system.
type Overcommit struct {
	Memory float64
	Disk   float64
}

// NoOvercommit commits exactly what a host has.
var NoOvercommit = Overcommit{Memory: 1, Disk: 1}

// Need is what an instance takes from its host: its plan's memory cap and disk quota.
type Need struct {
	MemoryMB int
	DiskGB   int
}

// NoLimit is a Room's figure where nothing limits placement: a host without
// max_instances, or whose memory or disk has not been read yet.
const NoLimit = math.MaxInt32

// Room is what placement may still commit on a host.
type Room struct {
	Slots    int // instances max_instances still allows
	MemoryMB int // memory left to commit, overcommit applied (negative when overcommitted)
	DiskGB   int // disk left to commit, likewise
}

// Fits reports whether a new instance needing n may go on the host.
func (r Room) Fits(n Need) bool { return r.Slots > 0 && r.Grows(n) }

// Grows reports whether an instance already on the host may take n more (a plan change):
// it needs no slot of its own.
func (r Room) Grows(n Need) bool { return n.MemoryMB <= r.MemoryMB && n.DiskGB <= r.DiskGB }

// RoomOf computes what placement may still commit on h under the store's overcommit.
//
// A host whose memory is unknown (registered before resources were read, until `hosts
// refresh`) is limited by max_instances alone, and takes nothing without one, so that an
// upgrade never turns a capped host into an unlimited one.
func (s *Store) RoomOf(h Host) Room {
	r := Room{Slots: NoLimit, MemoryMB: NoLimit, DiskGB: NoLimit}
	switch {
	case h.MaxInstances > 0:
		r.Slots = max(h.MaxInstances-h.Instances, 0)
	case h.MemoryMB == 0:
		r.Slots = 0
	}
	memory, disk := s.Limits(h)
	if memory > 0 {
		r.MemoryMB = memory - h.MemoryCommittedMB
	}
	if disk > 0 {
		r.DiskGB = disk - h.DiskCommittedGB
	}
	return r
}

// Limits returns how much memory (MiB) and disk (GiB) placement may commit on h in all:
// its size with the overcommit applied, 0 where the size is not known.
func (s *Store) Limits(h Host) (memoryMB, diskGB int) {
	return int(float64(h.MemoryMB) * s.over.Memory), int(float64(h.DiskGB) * s.over.Disk)
}
