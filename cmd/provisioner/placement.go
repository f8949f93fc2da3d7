package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// placer is the host inventory as instances sees it.
type placer struct{ hosts *hosts.Store }

// capacity tells checkout whether a purchase can be served: by room on a host, or by a
// ready pool member (handed over, or giving its slot up to the customer's plan).
type capacity struct {
	hosts *hosts.Store
	pool  interface {
		HasReadyMember(ctx context.Context) (bool, error)
	}
}

// HasRoom applies placement's fit rule to the plan being bought, so that a checkout is
// refused (409) rather than a paid instance left waiting for room.
func (c capacity) HasRoom(ctx context.Context, plan plans.Plan) error {
	err := c.hosts.HasRoom(ctx, hosts.Need{MemoryMB: plan.MemoryMB, DiskGB: plan.DiskGB})
	if !errors.Is(err, hosts.ErrNoRoom) {
		return err
	}
	if ready, perr := c.pool.HasReadyMember(ctx); perr == nil && ready {
		return nil
	}
	return err
}

func hostOf(h hosts.Host) instances.Host {
	return instances.Host{Name: h.Name, Node: h.Node, VMID: h.VMID, PublicIP: h.PublicIP, IngressURL: h.IngressURL}
}

func (p placer) Assign(ctx context.Context, instanceID string) (instances.Host, error) {
	return placed(p.hosts.Assign(ctx, instanceID))
}

func (p placer) AssignTo(ctx context.Context, instanceID, host string) (instances.Host, error) {
	return placed(p.hosts.AssignTo(ctx, instanceID, host))
}

// placed translates a placement's result for instances.
func placed(h hosts.Host, err error) (instances.Host, error) {
	if errors.Is(err, hosts.ErrNoRoom) {
		return instances.Host{}, fmt.Errorf("%w: %w", instances.ErrNoRoom, err)
	}
	return hostOf(h), err
}

// roomOf is h's load and room as instances counts it: the same figures placement uses.
func (p placer) roomOf(h hosts.Host) instances.HostRoom {
	memory, disk := p.hosts.Limits(h)
	return instances.HostRoom{Name: h.Name, Instances: h.Instances, Free: p.hosts.RoomOf(h).Slots,
		MemoryMB: memory, MemoryCommittedMB: h.MemoryCommittedMB, DiskGB: disk, DiskCommittedGB: h.DiskCommittedGB}
}

func (p placer) Capacity(ctx context.Context) ([]instances.HostRoom, error) {
	list, err := p.hosts.Capacity(ctx)
	out := make([]instances.HostRoom, 0, len(list))
	for _, h := range list {
		out = append(out, p.roomOf(h))
	}
	return out, err
}

func (p placer) Room(ctx context.Context, name string) (instances.HostRoom, error) {
	h, err := p.hosts.Get(ctx, name)
	if err != nil {
		return instances.HostRoom{}, err
	}
	return p.roomOf(h), nil
}

func (p placer) RecordDisk(ctx context.Context, host string, gb int) error {
	return p.hosts.SetDisk(ctx, host, gb)
}

func (p placer) Host(ctx context.Context, name string) (instances.Host, error) {
	h, err := p.hosts.Get(ctx, name)
	return hostOf(h), err
}

func (p placer) Hosts(ctx context.Context) ([]instances.Host, error) {
	list, err := p.hosts.List(ctx)
	out := make([]instances.Host, 0, len(list))
	for _, h := range list {
		out = append(out, hostOf(h))
	}
	return out, err
}
