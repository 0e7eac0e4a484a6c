package vmnet

import (
	"net/netip"
	"testing"
	"time"
)

func netipPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func netipAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

// eventually polls cond every 5ms until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
