package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

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
