package opstate

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testOp struct{ id, kind, target string }

func (o *testOp) OpID() string     { return o.id }
func (o *testOp) OpKind() string   { return o.kind }
func (o *testOp) OpTarget() string { return o.target }

func newOp(id string) *testOp { return &testOp{id: id, kind: "vm.create", target: "vm-" + id} }

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingCancel returns a cancel func that counts its calls.
func countingCancel() (func(), func() int) {
	var mu sync.Mutex
	n := 0
	return func() {
			mu.Lock()
			defer mu.Unlock()
			n++
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return n
		}
}

func mustRegister(t *testing.T, r *Registry[*testOp], op *testOp, cancel func()) {
	t.Helper()
	if err := r.Register(op, cancel); err != nil {
		t.Fatalf("Register(%s): %v", op.id, err)
	}
}

// recv receives one status or fails the test after a timeout. ok is
// false when the channel was closed.
func recv(t *testing.T, ch <-chan Status) (Status, bool) {
	t.Helper()
	select {
	case st, ok := <-ch:
		return st, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no status from Watch within 5s")
		return Status{}, false
	}
}

// drain receives until the channel is closed.
func drain(t *testing.T, ch <-chan Status) []Status {
	t.Helper()
	var all []Status
	for {
		st, ok := recv(t, ch)
		if !ok {
			return all
		}
		all = append(all, st)
	}
}
