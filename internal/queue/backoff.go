package queue

import (
	"math/rand/v2"
	"time"
)

// Backoff is the retry delay after a job's attempt-th failure: about 1, 2, 4, 8, 16 s,
// then 30 s, each ±20 % (never above 30 s) so that jobs failing together do not retry together. It replaces
// River's attempt⁴ curve (1, 16, 81, 256 s …) wherever a customer waits on the job: a
// dependency that is back after a few seconds costs a few seconds.
func Backoff(attempt int) time.Duration {
	const base, ceiling = time.Second, 30 * time.Second
	d := ceiling
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 5 {
		d = base << (attempt - 1)
	}
	jittered := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(max(jittered, 500*time.Millisecond), ceiling)
}
