package daemon

import (
	"context"
	"sync"
)

// vmLockSet is a keyed mutex: one lock per VM id, taken with a cancellable
// Lock and freed from the map once nobody holds or waits for it.
//
// Each entry is a one-slot channel (holding the slot = holding the lock),
// so a waiter can give up when its context ends without leaking the slot.
type vmLockSet struct {
	// mu guards locks. Leaf lock: held only to find or drop an entry,
	// never while waiting for a VM's lock.
	mu    sync.Mutex
	locks map[string]*vmLock // guarded by mu
}

type vmLock struct {
	slot chan struct{}
	refs int // holders + waiters; guarded by vmLockSet.mu
}

// Lock blocks until it holds id's lock or ctx ends. On success the caller
// must call the returned unlock exactly once.
func (s *vmLockSet) Lock(ctx context.Context, id string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := s.ref(id)
	select {
	case l.slot <- struct{}{}:
	case <-ctx.Done():
		s.release(id, l)
		return nil, ctx.Err()
	}
	return s.unlocker(id, l), nil
}

// ref finds or makes id's entry and counts the caller in it.
func (s *vmLockSet) ref(id string) *vmLock {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks == nil {
		s.locks = make(map[string]*vmLock)
	}
	l := s.locks[id]
	if l == nil {
		l = &vmLock{slot: make(chan struct{}, 1)}
		s.locks[id] = l
	}
	l.refs++
	return l
}

// unlocker frees the slot the caller holds, once.
func (s *vmLockSet) unlocker(id string, l *vmLock) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			<-l.slot
			s.release(id, l)
		})
	}
}

func (s *vmLockSet) release(id string, l *vmLock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l.refs--
	if l.refs == 0 {
		delete(s.locks, id)
	}
}

// len reports how many ids have an entry (held or waited for); tests use it
// to prove entries are freed.
func (s *vmLockSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.locks)
}

// TryLock takes id's lock if nobody holds it, without waiting: the
// reconciler skips a VM an op is busy with and looks again next pass.
func (s *vmLockSet) TryLock(id string) (unlock func(), ok bool) {
	l := s.ref(id)
	select {
	case l.slot <- struct{}{}:
		return s.unlocker(id, l), true
	default:
		s.release(id, l)
		return nil, false
	}
}
