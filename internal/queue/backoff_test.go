package queue

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		attempt int
		nominal time.Duration
	}{
		{-1, time.Second}, {0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second},
		{5, 16 * time.Second}, {6, 30 * time.Second}, {60, 30 * time.Second}, {1 << 20, 30 * time.Second},
	}
	for _, tt := range tests {
		lo, hi := tt.nominal*8/10, min(tt.nominal*12/10, 30*time.Second)
		for range 200 {
			if d := Backoff(tt.attempt); d < lo || d > hi {
				t.Fatalf("Backoff(%d) = %s, want within [%s, %s]", tt.attempt, d, lo, hi)
			}
		}
	}
}
