// Package retention decides which of a series of backups to keep: the newest of each of
// the last N days and the newest of each of the last W weeks (grandfather-father-son
// without the grandfather). Instances' archives and the provisioner's own database dumps
// share it, so one setting means the same thing for both.
package retention

import (
	"fmt"
	"time"
)

// Policy is how many daily and weekly backups to keep. Days and weeks are UTC calendar
// days and ISO weeks, counted back from now, the current one included.
type Policy struct {
	Daily  int
	Weekly int
}

// Default keeps a week of dailies and a month of weeklies.
var Default = Policy{Daily: 7, Weekly: 4}

// Validate refuses a policy that would keep nothing.
func (p Policy) Validate() error {
	if p.Daily < 0 || p.Weekly < 0 || p.Daily > 366 || p.Weekly > 520 {
		return fmt.Errorf("retention: daily must be 0-366 and weekly 0-520, got %d and %d", p.Daily, p.Weekly)
	}
	if p.Daily+p.Weekly == 0 {
		return fmt.Errorf("retention: keeping no daily and no weekly backup would prune every backup")
	}
	return nil
}

// Keep reports, for each time in taken, whether that backup is kept at now. A backup from
// the future (a clock that stepped back) is kept: pruning it would be guessing.
func (p Policy) Keep(taken []time.Time, now time.Time) []bool {
	keep := make([]bool, len(taken))
	newestOfDay := map[string]int{}
	newestOfWeek := map[string]int{}
	today := day(now)
	for i, t := range taken {
		if t.After(now) {
			keep[i] = true
			continue
		}
		if age := int(today.Sub(day(t)).Hours() / 24); age < p.Daily {
			newestOfDay[day(t).Format(time.DateOnly)] = newer(taken, newestOfDay, day(t).Format(time.DateOnly), i)
		}
		if weeksBetween(t, now) < p.Weekly {
			y, w := t.UTC().ISOWeek()
			k := fmt.Sprintf("%d-W%02d", y, w)
			newestOfWeek[k] = newer(taken, newestOfWeek, k, i)
		}
	}
	for _, i := range newestOfDay {
		keep[i] = true
	}
	for _, i := range newestOfWeek {
		keep[i] = true
	}
	return keep
}

// newer returns the index of the newer of taken[i] and the one already chosen under k.
func newer(taken []time.Time, chosen map[string]int, k string, i int) int {
	if j, ok := chosen[k]; ok && !taken[i].After(taken[j]) {
		return j
	}
	return i
}

func day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// weeksBetween counts ISO weeks from t's to now's: 0 in the same week.
func weeksBetween(t, now time.Time) int {
	monday := func(x time.Time) time.Time {
		d := day(x)
		return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
	}
	return int(monday(now).Sub(monday(t)).Hours() / (24 * 7))
}
