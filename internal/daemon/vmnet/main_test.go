package vmnet

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts (DNS servers, forwarding workers, pool
// refill loops) must be gone when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
