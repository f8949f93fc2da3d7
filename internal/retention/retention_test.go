package retention

import (
	"testing"
	"time"
)

func TestKeepsNewestPerDayAndWeek(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC) // a Monday
	at := func(daysAgo, hour int) time.Time {
		return time.Date(2026, 12, 7-daysAgo, hour, 0, 0, 0, time.UTC)
	}
	taken := []time.Time{
		at(0, 3),  // 0 today: kept (daily)
		at(0, 1),  // 1 today, older: pruned
		at(1, 3),  // 2 yesterday (Sunday): kept (daily, and the newest of last week)
		at(2, 3),  // 3 kept (daily)
		at(3, 3),  // 4 kept (daily)
		at(9, 3),  // 5 Saturday two weeks back: newest of that week, kept (weekly)
		at(10, 3), // 6 same week, older: pruned
		at(30, 3), // 7 five weeks back: pruned
		now.Add(time.Hour),
	}
	got := Policy{Daily: 4, Weekly: 4}.Keep(taken, now)
	want := []bool{true, false, true, true, true, true, false, false, true}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("backup %d (%s): keep = %v, want %v", i, taken[i].Format(time.DateTime), got[i], want[i])
		}
	}
}

func TestValidate(t *testing.T) {
	if err := (Policy{}).Validate(); err == nil {
		t.Fatal("a policy that keeps nothing was accepted")
	}
	if err := Default.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Policy{Daily: -1, Weekly: 2}).Validate(); err == nil {
		t.Fatal("a negative count was accepted")
	}
}
