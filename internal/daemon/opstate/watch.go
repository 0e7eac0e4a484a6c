package opstate

import (
	"context"
	"fmt"
)

// watcher is one Watch call. notify holds at most one pending wake-up, so
// any number of changes while the watcher is busy coalesce into one.
type watcher struct {
	notify chan struct{}
}

func (w *watcher) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Watch streams the operation's status: the current one at once, then
// each change. A watcher slow to receive never holds up the operation;
// it skips to the latest status instead, but always gets the final one.
// The channel is closed after the final status is delivered, or when ctx
// ends. An unknown or expired id fails with errdefs.ErrNotFound.
func (r *Registry[T]) Watch(ctx context.Context, id string) (<-chan Status, error) {
	now := r.now()
	w := &watcher{notify: make(chan struct{}, 1)}
	r.mu.Lock()
	e, ok := r.lookupLocked(id, now)
	if ok && e.watchers != nil {
		e.watchers[w] = struct{}{}
	}
	r.mu.Unlock()
	if !ok {
		return nil, notFound(id)
	}
	out := make(chan Status)
	go r.watch(ctx, e, w, out)
	return out, nil
}

// watch sends e's status to out whenever it has changed since the last
// send, until the final status is sent or ctx ends.
func (r *Registry[T]) watch(ctx context.Context, e *entry[T], w *watcher, out chan<- Status) {
	defer close(out)
	defer r.unwatch(e, w)
	var sent uint64
	for {
		r.mu.Lock()
		st := e.status.clone()
		r.mu.Unlock()
		if st.Seq > sent {
			select {
			case out <- st:
				sent = st.Seq
			case <-ctx.Done():
				return
			}
			if st.State.Finished() {
				return
			}
		}
		select {
		case <-w.notify:
		case <-ctx.Done():
			return
		}
	}
}

func (r *Registry[T]) unwatch(e *entry[T], w *watcher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(e.watchers, w)
}

// Wait blocks until the operation finishes or ctx ends, and returns its
// final status. The operation's own failure is reported in the Status
// (State, Error, Err), not as Wait's error: that is only for an unknown
// or expired id (errdefs.ErrNotFound) or ctx ending.
func (r *Registry[T]) Wait(ctx context.Context, id string) (Status, error) {
	now := r.now()
	r.mu.Lock()
	e, ok := r.lookupLocked(id, now)
	r.mu.Unlock()
	if !ok {
		return Status{}, notFound(id)
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		return Status{}, fmt.Errorf("wait for operation %s: %w", id, ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return e.status.clone(), nil
}
