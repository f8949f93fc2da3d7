package instances

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// stepLog records what a StepObserver is told.
type stepLog struct {
	mu  sync.Mutex
	got []string // "step:ok" or "step:error"
}

func (l *stepLog) ObserveStep(step string, d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	if d < 0 {
		outcome = "negative"
	}
	l.got = append(l.got, step+":"+outcome)
}

func TestStepObserverSeesEveryAttempt(t *testing.T) {
	st := newSagaTest(t)
	log := &stepLog{}
	st.cfg.Steps = log
	// DNS fails twice (Cloudflare down), then works; n8n is on its way once, which is
	// waiting inside the step, not a failed attempt.
	st.world.fail("dns", unavailable("cloudflare: 503"), unavailable("cloudflare: 503"))
	st.world.fail("ready", notYet("n8n is starting"))
	if _, err := st.run(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, step := range Steps {
		if step == stepDNS {
			want = append(want, step+":error", step+":error")
		}
		want = append(want, step+":ok")
	}
	if got := strings.Join(log.got, ","); got != strings.Join(want, ",") {
		t.Errorf("observed %s\nwant     %s", got, strings.Join(want, ","))
	}
}
