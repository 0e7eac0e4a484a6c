package fcproc

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// Ending says how Shutdown ended Firecracker.
type Ending string

const (
	// EndedByGuest: the guest powered off (or restarted, which ends
	// Firecracker too) after ctrl-alt-delete.
	EndedByGuest Ending = "guest"
	// EndedByTerm: the guest did not stop within the grace period and
	// SIGTERM ended Firecracker.
	EndedByTerm Ending = "terminated"
	// EndedByKill: Firecracker ignored SIGTERM too and was sent SIGKILL.
	EndedByKill Ending = "killed"
	// EndedBefore: Firecracker had already exited when Shutdown was
	// called.
	EndedBefore Ending = "already exited"
)

// Time allowed to the steps around the guest's grace period.
const (
	actionTimeout = 2 * time.Second // the SendCtrlAltDel request
	termWait      = 3 * time.Second // Firecracker's exit after SIGTERM
)

// Shutdown stops the VM, gently first: it sends the SendCtrlAltDel action
// and waits up to grace for Firecracker to exit, then sends SIGTERM and
// waits a few seconds, then SIGKILL, and returns how Firecracker ended once
// it has been reaped (Wait gives its exit status). ctx bounds the whole
// call: when it ends first Shutdown returns its error, with the step it
// had reached, and leaves Firecracker as it is (perhaps still powering
// off), so give ctx more than grace.
func (p *Process) Shutdown(ctx context.Context, grace time.Duration) (Ending, error) {
	if p.Exited() {
		return EndedBefore, nil
	}
	// Firecracker refusing the action (an *APIError, e.g. before
	// InstanceStart) means the guest will not hear it, so the grace period
	// is skipped; a transport failure may still have delivered it.
	actx, cancel := context.WithTimeout(ctx, actionTimeout)
	err := p.client.Action(actx, ActionSendCtrlAltDel)
	cancel()
	if !IsAPIError(err) {
		if ended, err := p.waitExit(ctx, grace); err != nil || ended {
			return EndedByGuest, err
		}
	}

	if err := p.signal(syscall.SIGTERM); err != nil {
		return EndedByTerm, err
	}
	if ended, err := p.waitExit(ctx, termWait); ended || err != nil {
		return EndedByTerm, err
	}

	if err := p.Kill(); err != nil {
		return EndedByKill, err
	}
	select {
	case <-p.done:
		return EndedByKill, nil
	case <-ctx.Done():
		return EndedByKill, fmt.Errorf("stopping VM %s: waiting for firecracker after SIGKILL: %w", p.id, context.Cause(ctx))
	}
}

// waitExit waits up to d for Firecracker to exit: true when it did, an
// error when ctx ended first.
func (p *Process) waitExit(ctx context.Context, d time.Duration) (bool, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true, nil
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, fmt.Errorf("stopping VM %s: %w", p.id, context.Cause(ctx))
	}
}
