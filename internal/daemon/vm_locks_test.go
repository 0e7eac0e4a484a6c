package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestVMLockSetSerialisesOneID(t *testing.T) {
	var s vmLockSet
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := s.Lock(context.Background(), "vm1")
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			unlock()
		}()
	}
	wg.Wait()
	if got := maxInside.Load(); got != 1 {
		t.Fatalf("max holders of one id at once = %d, want 1", got)
	}
	if n := s.len(); n != 0 {
		t.Fatalf("entries left after all unlocked = %d, want 0", n)
	}
}

func TestVMLockSetDistinctIDsDoNotBlock(t *testing.T) {
	var s vmLockSet
	unlockA, err := s.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockA()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	unlockB, err := s.Lock(ctx, "b")
	if err != nil {
		t.Fatalf("lock b while a is held: %v", err)
	}
	unlockB()
	if n := s.len(); n != 1 {
		t.Fatalf("entries = %d, want 1 (a still held)", n)
	}
}

func TestVMLockSetCancelWhileWaiting(t *testing.T) {
	var s vmLockSet
	unlock, err := s.Lock(context.Background(), "vm")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Lock(ctx, "vm")
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("second Lock returned %v while the lock was held", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Lock returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled Lock did not return")
	}
	// The cancelled waiter must not have taken or leaked the slot.
	unlock()
	if n := s.len(); n != 0 {
		t.Fatalf("entries after unlock = %d, want 0", n)
	}
	unlock2, err := s.Lock(context.Background(), "vm")
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

func TestVMLockSetAlreadyCancelledContext(t *testing.T) {
	var s vmLockSet
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 100 {
		if _, err := s.Lock(ctx, "vm"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock with a cancelled context = %v, want context.Canceled", err)
		}
	}
	if n := s.len(); n != 0 {
		t.Fatalf("entries = %d, want 0", n)
	}
}

func TestVMLockSetUnlockTwiceIsHarmless(t *testing.T) {
	var s vmLockSet
	unlock, err := s.Lock(context.Background(), "vm")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	unlock()
	if n := s.len(); n != 0 {
		t.Fatalf("entries = %d, want 0", n)
	}
}

// TryLock takes a free lock, refuses a held one at once, and leaves no
// entry behind either way.
func TestVMLockTryLock(t *testing.T) {
	var s vmLockSet
	unlock, err := s.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.TryLock("a"); ok {
		t.Fatal("TryLock took a held lock")
	}
	if u, ok := s.TryLock("b"); !ok {
		t.Fatal("TryLock refused a free lock")
	} else {
		u()
	}
	unlock()
	if u, ok := s.TryLock("a"); !ok {
		t.Fatal("TryLock refused a lock just released")
	} else {
		u()
	}
	if n := s.len(); n != 0 {
		t.Errorf("%d entries left", n)
	}
}
