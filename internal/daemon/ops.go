package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"banger/internal/daemon/opstate"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// operation is the daemon's record of one async operation.
type operation struct {
	id, kind, target string
}

var _ opstate.AsyncOp = (*operation)(nil)

func (o *operation) OpID() string     { return o.id }
func (o *operation) OpKind() string   { return o.kind }
func (o *operation) OpTarget() string { return o.target }

// opFunc is an async operation's body. It reports progress through report
// and returns the op's result.
type opFunc func(ctx context.Context, report func(opstate.Progress)) (any, error)

// startOp registers and starts an async operation under the daemon's
// long-lived context (never a request's: the caller may disconnect). The
// store keeps a row per operation so one cut short by a daemon stop is
// reported as interrupted after the restart.
func (d *Daemon) startOp(ctx context.Context, kind, target string, fn opFunc) (string, error) {
	op := &operation{id: store.NewID(), kind: kind, target: target}
	if _, err := d.store.CreateOperation(ctx, store.Operation{ID: op.id, Kind: kind, Target: target, State: store.OpRunning}); err != nil {
		return "", err
	}
	opCtx, cancel := context.WithCancel(d.opsCtx)
	if err := d.ops.Register(op, cancel); err != nil {
		cancel()
		return "", err
	}
	d.opsWG.Add(1)
	go func() {
		defer d.opsWG.Done()
		defer cancel()
		lastPhase := ""
		result, err := fn(opCtx, func(p opstate.Progress) {
			d.ops.Progress(op.id, p)
			if p.Phase != lastPhase {
				lastPhase = p.Phase
				d.recordOp(store.Operation{ID: op.id, Kind: kind, Target: target, State: store.OpRunning, Phase: p.Phase})
			}
		})
		// The store row is final before watchers learn the outcome, so
		// whoever sees it finished finds it finished everywhere.
		row := store.Operation{ID: op.id, Kind: kind, Target: target, State: finalState(opCtx, err), Phase: lastPhase, FinishedAt: time.Now()}
		if err != nil && d.opsCtx.Err() != nil {
			// The daemon is stopping: the op did not fail, it was cut
			// short, and the next start reports it that way.
			row.State = store.OpInterrupted
			err = fmt.Errorf("interrupted: the daemon stopped while it ran: %w", err)
		}
		if err != nil {
			row.Error = err.Error()
			d.logger.Warn("operation failed", "op", op.id, "kind", kind, "target", target, "err", err)
		} else if result != nil {
			if raw, merr := json.Marshal(result); merr == nil {
				row.Result = raw
			}
		}
		d.recordOp(row)
		if err == nil {
			crashPoint("op.finished") // recorded, not yet told to its watchers
		}
		d.ops.Complete(op.id, result, err)
	}()
	return op.id, nil
}

// finalState is how an op body's outcome is recorded (a daemon stop is
// recorded as interrupted by the caller); it agrees with
// opstate's rule: an error after a cancel request (or a cancellation
// error) is "canceled".
func finalState(opCtx context.Context, err error) store.OperationState {
	switch {
	case err == nil:
		return store.OpSucceeded
	case opCtx.Err() != nil, errors.Is(err, context.Canceled), errdefs.IsCanceled(err):
		return store.OpCanceled
	}
	return store.OpFailed
}

// recordOp writes an operation's row. It uses a background context so the
// outcome is recorded even when the op itself was cancelled.
func (d *Daemon) recordOp(row store.Operation) {
	if _, err := d.store.UpdateOperation(context.Background(), row); err != nil {
		d.logger.Warn("record operation state", "op", row.ID, "err", err)
	}
}

func toRPCOp(st opstate.Status) rpc.Op {
	op := rpc.Op{
		ID:         st.ID,
		Kind:       st.Kind,
		Target:     st.Target,
		State:      string(st.State),
		Error:      st.Error,
		StartedAt:  st.StartedAt,
		UpdatedAt:  st.UpdatedAt,
		FinishedAt: st.FinishedAt,
		Seq:        st.Seq,
		Progress: rpc.Progress{
			Phase:   st.Progress.Phase,
			Message: st.Progress.Message,
			Done:    st.Progress.Done,
			Total:   st.Progress.Total,
			Unit:    st.Progress.Unit,
		},
	}
	for _, it := range st.Progress.Items {
		op.Progress.Items = append(op.Progress.Items, rpc.ItemProgress(it))
	}
	if st.Result != nil {
		if raw, err := json.Marshal(st.Result); err == nil {
			op.Result = raw
		}
	}
	return op
}

func opFromRow(row store.Operation) rpc.Op {
	return rpc.Op{
		ID:         row.ID,
		Kind:       row.Kind,
		Target:     row.Target,
		State:      string(row.State),
		Error:      row.Error,
		Progress:   rpc.Progress{Phase: row.Phase},
		Result:     row.Result,
		StartedAt:  row.CreatedAt,
		UpdatedAt:  row.UpdatedAt,
		FinishedAt: row.FinishedAt,
	}
}

func (d *Daemon) listOps(call *rpc.Call) (rpc.OpListResult, error) {
	if err := call.Bind(&noParams{}); err != nil {
		return rpc.OpListResult{}, err
	}
	sts := d.ops.List()
	out := rpc.OpListResult{Ops: make([]rpc.Op, 0, len(sts))}
	for _, st := range sts {
		out.Ops = append(out.Ops, toRPCOp(st))
	}
	return out, nil
}

func (d *Daemon) bindOpRef(call *rpc.Call) (string, error) {
	var ref rpc.OpRef
	if err := call.Bind(&ref); err != nil {
		return "", err
	}
	if ref.ID == "" {
		return "", rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: id is required", call.Method)
	}
	return ref.ID, nil
}

// getOp answers from memory, or from the store for an operation the
// registry no longer holds (finished long ago, or cut short by a restart).
func (d *Daemon) getOp(ctx context.Context, call *rpc.Call) (rpc.Op, error) {
	id, err := d.bindOpRef(call)
	if err != nil {
		return rpc.Op{}, err
	}
	if _, st, err := d.ops.Get(id); err == nil {
		return toRPCOp(st), nil
	}
	row, err := d.store.GetOperation(ctx, id)
	if err != nil {
		return rpc.Op{}, err
	}
	return opFromRow(row), nil
}

// watchOp streams the op's status as progress events until it finishes;
// the final status is the call's result. A watcher going away does not
// cancel the operation.
func (d *Daemon) watchOp(ctx context.Context, call *rpc.Call) (rpc.Op, error) {
	id, err := d.bindOpRef(call)
	if err != nil {
		return rpc.Op{}, err
	}
	ch, err := d.ops.Watch(ctx, id)
	if err != nil {
		// Not in memory: a finished or interrupted op from the store
		// is its own final status.
		row, serr := d.store.GetOperation(ctx, id)
		if serr != nil {
			return rpc.Op{}, err
		}
		return opFromRow(row), nil
	}
	var last rpc.Op
	for st := range ch {
		last = toRPCOp(st)
		if err := call.Send(rpc.EventProgress, last); err != nil {
			return rpc.Op{}, err
		}
	}
	if !last.Done() {
		if ctx.Err() != nil {
			return rpc.Op{}, ctx.Err()
		}
		return rpc.Op{}, fmt.Errorf("operation %s: watch ended before it finished", id)
	}
	return last, nil
}

func (d *Daemon) cancelOp(call *rpc.Call) (struct{}, error) {
	id, err := d.bindOpRef(call)
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, d.ops.Cancel(id)
}
