package instances

import (
	"context"
	"fmt"
	"strings"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/plans"
)

// eventPlanRefused is the timeline entry of a plan change that does not fit on the host.
const eventPlanRefused = "plan_change_refused"

// planDoesNotFit checks that moving in, on its host, to plan (with disk GiB of quota)
// keeps the host within what placement may commit. When it does not, the instance keeps
// its resources: the customer's timeline says so, the operator is alerted (once per plan),
// and the returned Unavailable error makes billing retry the event with backoff, so the
// plan is applied once there is room (the instance moved, or room freed on its host). It
// returns nil when the change fits or needs no room.
func (s *Service) planDoesNotFit(ctx context.Context, in *Instance, plan plans.Plan, disk int) (refusal, err error) {
	moreMemory, moreDisk := max(plan.MemoryMB-in.MemoryMB, 0), max(disk-in.DiskGB, 0)
	if in.PlanID == plan.ID || in.Host == nil || (moreMemory == 0 && moreDisk == 0) {
		return nil, nil
	}
	room, err := s.cfg.Placer.Room(ctx, *in.Host)
	if err != nil {
		return nil, err
	}
	if room.Grows(moreMemory, moreDisk) {
		return nil, nil
	}
	short := room.Short(moreMemory, moreDisk)
	message := fmt.Sprintf("plan %s (%d MiB, %d GiB) does not fit on this instance's server yet (%s): it keeps running on plan %s until there is room; our team has been told",
		plan.ID, plan.MemoryMB, disk, short, in.PlanID)
	told, err := s.refusedAlready(ctx, in.ID, plan.ID)
	if err != nil {
		return nil, err
	}
	if !told {
		if err := s.store.AppendEvent(ctx, in.ID, eventPlanRefused, message); err != nil {
			return nil, err
		}
		s.alert(ctx, "plan change does not fit: instance %s (%s) on host %s was moved to plan %s by its subscription, but %s; it keeps plan %s. "+
			"Move it to a host with room (provisioner instances move %s --to HOST) or free room on %s: the billing event is retried and applies the plan then.",
			in.ID, in.Slug, *in.Host, plan.ID, short, in.PlanID, in.ID, *in.Host)
	}
	return apperr.New(apperr.Unavailable, "instance %s: plan %s does not fit on host %s: %s", in.ID, plan.ID, *in.Host, short), nil
}

// refusedAlready reports whether plan was refused for instance id since its plan last
// changed, so that a retried billing event alerts once.
func (s *Service) refusedAlready(ctx context.Context, id, plan string) (bool, error) {
	events, err := s.store.Timeline(ctx, id)
	if err != nil {
		return false, err
	}
	for i := len(events) - 1; i >= 0; i-- {
		switch e := events[i]; {
		case e.Kind == eventPlanRefused && strings.HasPrefix(e.Message, "plan "+plan+" ("):
			return true, nil
		case e.Kind == "resized":
			return false, nil
		}
	}
	return false, nil
}
