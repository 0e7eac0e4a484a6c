package opstate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"banger/internal/errdefs"
	"go.uber.org/goleak"
)

func TestWatchInOrder(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)
	ch, err := r.Watch(context.Background(), "a")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if st, _ := recv(t, ch); st.Seq != 1 || st.State != StateRunning {
		t.Fatalf("first status = seq %d %s, want the current one", st.Seq, st.State)
	}
	for i := range 5 {
		phase := fmt.Sprint("phase-", i)
		if err := r.Progress("a", Progress{Phase: phase}); err != nil {
			t.Fatalf("Progress: %v", err)
		}
		st, _ := recv(t, ch)
		if st.Progress.Phase != phase || st.Seq != uint64(i+2) {
			t.Errorf("got %q seq %d, want %q seq %d", st.Progress.Phase, st.Seq, phase, i+2)
		}
	}
	r.Complete("a", "vm", nil)
	rest := drain(t, ch)
	if len(rest) != 1 || rest[0].State != StateSucceeded || rest[0].Result != "vm" {
		t.Errorf("after Complete got %+v, want just the final status", rest)
	}
}

func TestWatchCoalescesForSlowWatcher(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)
	ch, err := r.Watch(context.Background(), "a")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	const updates = 1000
	for i := range updates { // nobody is receiving; this must not block
		if err := r.Progress("a", Progress{Done: int64(i)}); err != nil {
			t.Fatalf("Progress: %v", err)
		}
	}
	r.Complete("a", nil, errors.New("failed late"))

	got := drain(t, ch)
	if len(got) == 0 || len(got) > 2 {
		t.Fatalf("slow watcher got %d statuses, want 1 or 2 (coalesced)", len(got))
	}
	checkIncreasing(t, got)
	if last := got[len(got)-1]; last.State != StateFailed || last.Seq != updates+2 {
		t.Errorf("last status = %s seq %d, want failed seq %d", last.State, last.Seq, updates+2)
	}
}

func TestWatchManyWatchers(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)
	const watchers, updates = 20, 200
	results := make([][]Status, watchers)
	var wg sync.WaitGroup
	for i := range watchers {
		ch, err := r.Watch(context.Background(), "a")
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		wg.Go(func() {
			for st := range ch {
				results[i] = append(results[i], st)
				if i%2 == 0 {
					time.Sleep(time.Millisecond) // some are slow
				}
			}
		})
	}
	for i := range updates {
		r.Progress("a", Progress{Done: int64(i + 1), Total: updates})
	}
	r.Complete("a", nil, nil)
	wg.Wait()
	for i, got := range results {
		checkIncreasing(t, got)
		if len(got) == 0 || got[len(got)-1].State != StateSucceeded {
			t.Errorf("watcher %d did not end with the final status: %d statuses", i, len(got))
		}
	}
}

func TestWatchContextCancel(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := r.Watch(ctx, "a")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	recv(t, ch)
	cancel()
	if rest := drain(t, ch); len(rest) > 1 {
		t.Errorf("got %d statuses after cancel, want at most one in flight", len(rest))
	}
	r.mu.Lock()
	n := len(r.ops["a"].watchers)
	r.mu.Unlock()
	if n != 0 {
		t.Errorf("%d watchers still registered after cancel", n)
	}
	if err := r.Progress("a", Progress{}); err != nil {
		t.Errorf("Progress after watcher left: %v", err)
	}
}

func TestWatchFinishedAndUnknown(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)
	r.Complete("a", nil, nil)
	ch, err := r.Watch(context.Background(), "a")
	if err != nil {
		t.Fatalf("Watch(finished): %v", err)
	}
	if got := drain(t, ch); len(got) != 1 || got[0].State != StateSucceeded {
		t.Errorf("Watch(finished) = %+v, want the final status once", got)
	}
	if _, err := r.Watch(context.Background(), "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Watch(unknown): error = %v, want ErrNotFound", err)
	}
}

func TestWait(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Wait(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait(running) with short ctx: error = %v, want DeadlineExceeded", err)
	}

	go func() {
		time.Sleep(10 * time.Millisecond)
		r.Complete("a", 42, nil)
	}()
	st, err := r.Wait(context.Background(), "a")
	if err != nil || st.State != StateSucceeded || st.Result != 42 {
		t.Errorf("Wait = %s %v, %v; want succeeded 42", st.State, st.Result, err)
	}
	if _, err := r.Wait(context.Background(), "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Wait(unknown): error = %v, want ErrNotFound", err)
	}
}

func checkIncreasing(t *testing.T, sts []Status) {
	t.Helper()
	for i := 1; i < len(sts); i++ {
		if sts[i].Seq <= sts[i-1].Seq {
			t.Errorf("status %d has seq %d after %d", i, sts[i].Seq, sts[i-1].Seq)
		}
	}
}
