package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// errInterrupted ends a command the user interrupted: exit status 130.
var errInterrupted = exitError{code: 130}

// followOp shows an async operation's progress until it ends. When the
// user interrupts (ctx ends), the operation goes on in the daemon unless
// cancelOnInterrupt, in which case it is cancelled and followed to its
// end. attachHint is the command that follows it again.
func (a *app) followOp(ctx context.Context, c *rpc.Client, opID string, cancelOnInterrupt bool, attachHint string) (rpc.Op, error) {
	p := newProgress(a.stderr, detectProgressMode(os.Stderr, a.jsonOutput()))
	if a.jsonOutput() {
		p = newProgress(a.stdout, progressJSON)
	}
	// Restores the terminal (cursor) on every path; later calls are no-ops.
	defer p.Done(rpc.Op{})
	final, err := c.WatchOp(ctx, opID, p.Update)
	if err != nil && ctx.Err() == nil && connectionLost(err) {
		p.Done(rpc.Op{})
		return a.afterDaemonRestart(ctx, opID)
	}
	if err != nil && ctx.Err() != nil {
		if !cancelOnInterrupt {
			fmt.Fprintf(a.stderr, "\nInterrupted: operation %s goes on in the daemon. Follow it with `%s`, cancel it with `banger op cancel %s`.\n", opID, attachHint, opID)
			return rpc.Op{}, errInterrupted
		}
		fmt.Fprintf(a.stderr, "\nInterrupted: cancelling operation %s…\n", opID)
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if cerr := c.CancelOp(cctx, opID); cerr != nil {
			return rpc.Op{}, fmt.Errorf("cancel operation %s: %w", opID, cerr)
		}
		final, err = c.WatchOp(cctx, opID, p.Update)
		if err != nil {
			return rpc.Op{}, err
		}
		p.Done(final)
		return final, errInterrupted
	}
	if err != nil {
		return rpc.Op{}, err
	}
	p.Done(final)
	switch final.State {
	case "succeeded":
		return final, nil
	case "interrupted":
		return final, fmt.Errorf("operation %s was interrupted by a daemon restart: %s", final.ID, final.Error)
	}
	return final, errors.New(final.Error)
}

// connectionLost reports whether err is the connection to the daemon
// failing, not an error the daemon answered with.
func connectionLost(err error) bool {
	var answered *rpc.Error
	return errdefs.IsUnavailable(err) && !errors.As(err, &answered)
}

// daemonReconnectWait is how long a CLI whose daemon went away while it
// followed an operation waits for the daemon to come back.
const daemonReconnectWait = time.Minute

// afterDaemonRestart is what followOp does when the connection to the
// daemon drops under it (the daemon crashed, or was stopped or
// restarted): wait for a daemon to answer again, then say what became of
// the operation and of its VM, image or kernel. An operation that had
// succeeded is returned as such (the command goes on, as if the
// connection had held); any other outcome fails the command.
func (a *app) afterDaemonRestart(ctx context.Context, opID string) (rpc.Op, error) {
	fmt.Fprintf(a.stderr, "\nThe connection to the daemon was lost while following operation %s (the daemon stopped or restarted); waiting up to %v for it to answer again…\n", opID, daemonReconnectWait)
	wctx, cancel := context.WithTimeout(ctx, daemonReconnectWait)
	defer cancel()
	var c *rpc.Client
	for {
		var err error
		if c, err = a.client(wctx); err == nil {
			if err = c.Call(wctx, rpc.MethodPing, nil, nil); err == nil {
				break
			}
			c.Close()
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return rpc.Op{}, errInterrupted
			}
			return rpc.Op{}, fmt.Errorf("the daemon stopped while operation %s ran and has not come back within %v (last error: %v); once it runs, `banger op show %s` says how the operation ended", opID, daemonReconnectWait, err, opID)
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer c.Close()
	op, err := c.GetOp(ctx, opID)
	if err != nil {
		return rpc.Op{}, fmt.Errorf("the daemon restarted while operation %s ran, and does not know it now: %w", opID, err)
	}
	// The daemon may have only dropped the connection: follow on.
	if !op.Done() {
		fmt.Fprintf(a.stderr, "The daemon is back; operation %s still runs. Follow it with `banger op watch %s`.\n", opID, opID)
		return rpc.Op{}, fmt.Errorf("lost the connection to the daemon while following operation %s, which still runs", opID)
	}
	where := a.describeTarget(ctx, c, op)
	if op.State == "succeeded" {
		fmt.Fprintf(a.stderr, "The daemon is back; operation %s (%s %s) had succeeded before it restarted. %s\n", op.ID, op.Kind, op.Target, where)
		return op, nil
	}
	if op.State == "interrupted" {
		return op, fmt.Errorf("the daemon restarted while operation %s (%s %s) ran: it was interrupted and not finished. %s", op.ID, op.Kind, op.Target, where)
	}
	msg := fmt.Sprintf("the daemon restarted while operation %s (%s %s) was followed; the operation had ended %s", op.ID, op.Kind, op.Target, op.State)
	if op.Error != "" {
		msg += " (" + op.Error + ")"
	}
	return op, fmt.Errorf("%s. %s", msg, where)
}

// describeTarget says where the VM, image or kernel an operation acted on
// is now, as the restarted daemon records it.
func (a *app) describeTarget(ctx context.Context, c *rpc.Client, op rpc.Op) string {
	kind, _, _ := strings.Cut(op.Kind, ".")
	if op.Kind == rpc.MethodImagePromote {
		kind = "image"
	}
	var method string
	var state struct {
		State  string `json:"state"`
		Reason string `json:"state_reason"`
	}
	switch kind {
	case "vm":
		method = rpc.MethodVMShow
	case "image":
		method = rpc.MethodImageShow
	case "kernel":
		method = rpc.MethodKernelShow
	default:
		return fmt.Sprintf("Check %s %s.", op.Kind, op.Target)
	}
	err := c.Call(ctx, method, rpc.NameRef{Ref: op.Target}, &state)
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Sprintf("%s %s does not exist now (what the operation had made was removed).", kind, op.Target)
	case err != nil:
		return fmt.Sprintf("Could not look up %s %s: %v.", kind, op.Target, err)
	case state.State == "":
		return fmt.Sprintf("%s %s exists now.", kind, op.Target)
	case state.Reason != "":
		return fmt.Sprintf("%s %s is now %s (%s).", kind, op.Target, state.State, state.Reason)
	}
	return fmt.Sprintf("%s %s is now %s.", kind, op.Target, state.State)
}
