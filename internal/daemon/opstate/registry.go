// Package opstate keeps the daemon's long-running operations (VM create,
// image pull) so clients can watch their progress after the request that
// started them returned. It is a leaf: it imports nothing from the daemon.
//
// A worker registers its operation with a cancel func, reports Progress,
// and ends with Complete. Clients Get, List, Watch, Wait or Cancel it by
// id. Finished operations are kept for a retention time, then dropped.
package opstate

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"banger/internal/errdefs"
)

// AsyncOp is the daemon's own record of an operation.
type AsyncOp interface {
	OpID() string
	OpKind() string   // "vm.create", "image.pull", ...
	OpTarget() string // the VM or image the operation acts on
}

// DefaultRetention is how long a finished operation stays visible when
// Options.Retention is not set.
const DefaultRetention = 10 * time.Minute

// Options configure a Registry.
type Options struct {
	// Retention is how long finished operations stay visible; zero or
	// less means DefaultRetention.
	Retention time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Registry tracks operations of type T. Create one with NewRegistry.
type Registry[T AsyncOp] struct {
	retention time.Duration
	now       func() time.Time

	// mu is a leaf lock: nothing else is locked, no user code is called
	// and nothing blocks while it is held.
	mu  sync.Mutex
	ops map[string]*entry[T] // guarded by mu
}

// entry is one operation. op and done never change; the rest is guarded
// by Registry.mu.
type entry[T AsyncOp] struct {
	op       T
	cancel   context.CancelFunc    // guarded by mu; nil once finished
	status   Status                // guarded by mu
	canceled bool                  // guarded by mu; Cancel was called
	watchers map[*watcher]struct{} // guarded by mu; nil once finished
	done     chan struct{}         // closed by Complete, under mu
}

// NewRegistry returns an empty Registry.
func NewRegistry[T AsyncOp](opts Options) *Registry[T] {
	r := &Registry[T]{retention: opts.Retention, now: opts.Now, ops: map[string]*entry[T]{}}
	if r.retention <= 0 {
		r.retention = DefaultRetention
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// Register starts tracking op as running. cancel, which may be nil if the
// operation cannot be cancelled, is called by Cancel and once more by
// Complete to release the operation's context. An id already in use
// fails with errdefs.ErrAlreadyExists.
func (r *Registry[T]) Register(op T, cancel context.CancelFunc) error {
	id, kind, target := op.OpID(), op.OpKind(), op.OpTarget()
	if id == "" {
		return fmt.Errorf("register %s operation: empty id: %w", kind, errdefs.ErrInvalidArgument)
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.lookupLocked(id, now); ok {
		return fmt.Errorf("operation %s: %w", id, errdefs.ErrAlreadyExists)
	}
	r.ops[id] = &entry[T]{
		op:     op,
		cancel: cancel,
		status: Status{
			ID: id, Kind: kind, Target: target, State: StateRunning,
			StartedAt: now, UpdatedAt: now, Seq: 1,
		},
		watchers: map[*watcher]struct{}{},
		done:     make(chan struct{}),
	}
	return nil
}

// Get returns the operation and a snapshot of its status. An unknown or
// expired id fails with errdefs.ErrNotFound.
func (r *Registry[T]) Get(id string) (T, Status, error) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.lookupLocked(id, now)
	if !ok {
		var zero T
		return zero, Status{}, notFound(id)
	}
	return e.op, e.status.clone(), nil
}

// List returns a snapshot of every visible operation, oldest first.
func (r *Registry[T]) List() []Status {
	now := r.now()
	r.mu.Lock()
	r.sweepLocked(now)
	out := make([]Status, 0, len(r.ops))
	for _, e := range r.ops {
		out = append(out, e.status.clone())
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(a.StartedAt.Compare(b.StartedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Cancel asks a running operation to stop by calling its cancel func;
// the operation ends once its worker calls Complete. It fails with
// errdefs.ErrNotFound for an unknown id and errdefs.ErrFailedPrecondition
// when the operation has finished or cannot be cancelled.
func (r *Registry[T]) Cancel(id string) error {
	now := r.now()
	r.mu.Lock()
	e, ok := r.lookupLocked(id, now)
	if !ok {
		r.mu.Unlock()
		return notFound(id)
	}
	state, cancel := e.status.State, e.cancel
	if cancel != nil && !state.Finished() {
		e.canceled = true
	}
	r.mu.Unlock()

	switch {
	case state.Finished():
		return fmt.Errorf("cancel operation %s: already %s: %w", id, state, errdefs.ErrFailedPrecondition)
	case cancel == nil:
		return fmt.Errorf("cancel operation %s: it cannot be cancelled: %w", id, errdefs.ErrFailedPrecondition)
	}
	cancel()
	return nil
}

// Sweep drops the operations that finished at least the retention time
// before now and returns how many it dropped. The daemon calls it
// periodically; lookups also drop expired operations on their own.
func (r *Registry[T]) Sweep(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sweepLocked(now)
}

func (r *Registry[T]) sweepLocked(now time.Time) int {
	n := 0
	for id, e := range r.ops {
		if r.expiredLocked(e, now) {
			delete(r.ops, id)
			n++
		}
	}
	return n
}

// lookupLocked returns the entry for id, dropping it if it has expired.
func (r *Registry[T]) lookupLocked(id string, now time.Time) (*entry[T], bool) {
	e, ok := r.ops[id]
	if !ok {
		return nil, false
	}
	if r.expiredLocked(e, now) {
		delete(r.ops, id)
		return nil, false
	}
	return e, true
}

func (r *Registry[T]) expiredLocked(e *entry[T], now time.Time) bool {
	return e.status.State.Finished() && now.Sub(e.status.FinishedAt) >= r.retention
}

func notFound(id string) error {
	return fmt.Errorf("operation %s: %w", id, errdefs.ErrNotFound)
}
