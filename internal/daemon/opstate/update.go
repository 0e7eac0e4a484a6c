package opstate

import (
	"context"
	"errors"
	"fmt"

	"banger/internal/errdefs"
)

// Progress records p as the operation's latest progress and wakes its
// watchers. It fails with errdefs.ErrNotFound for an unknown id and
// errdefs.ErrFailedPrecondition once the operation has finished.
func (r *Registry[T]) Progress(id string, p Progress) error {
	p = p.clone() // the caller may reuse p.Items
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.lookupLocked(id, now)
	if !ok {
		return notFound(id)
	}
	if e.status.State.Finished() {
		return fmt.Errorf("progress for operation %s: already %s: %w", id, e.status.State, errdefs.ErrFailedPrecondition)
	}
	e.status.Progress = p
	e.status.UpdatedAt = now
	e.status.Seq++
	e.notifyLocked()
	return nil
}

// Complete finishes the operation: succeeded when err is nil; canceled
// when err is (or wraps) context.Canceled or errdefs.ErrCanceled, or when
// Cancel was called and err is non-nil; failed otherwise. It then calls
// the cancel func to release the operation's context. Completing an
// unknown or finished operation does nothing, so a second Complete is
// harmless.
func (r *Registry[T]) Complete(id string, result any, err error) {
	now := r.now()
	r.mu.Lock()
	e, ok := r.ops[id]
	if !ok || e.status.State.Finished() {
		r.mu.Unlock()
		return
	}
	st := &e.status
	switch {
	case err == nil:
		st.State = StateSucceeded
	case e.canceled, errors.Is(err, context.Canceled), errors.Is(err, errdefs.ErrCanceled):
		st.State = StateCanceled
	default:
		st.State = StateFailed
	}
	if err != nil {
		st.Error, st.Err = err.Error(), err
	}
	st.Result = result
	st.UpdatedAt, st.FinishedAt = now, now
	st.Seq++
	e.notifyLocked()
	e.watchers = nil // they read the final status from the entry
	close(e.done)
	cancel := e.cancel
	e.cancel = nil
	r.mu.Unlock()

	if cancel != nil {
		cancel()
	}
}

// notifyLocked wakes every watcher of e without blocking.
func (e *entry[T]) notifyLocked() {
	for w := range e.watchers {
		w.wake()
	}
}
