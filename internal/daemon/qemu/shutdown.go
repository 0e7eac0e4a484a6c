package qemu

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Ending says how Shutdown ended QEMU.
type Ending string

const (
	// EndedByGuest: the guest powered off (or restarted, which
	// -no-reboot turns into an exit) after ctrl-alt-delete.
	EndedByGuest Ending = "guest"
	// EndedByQuit: the guest did not stop within the grace period and
	// QMP quit stopped the emulator.
	EndedByQuit Ending = "quit"
	// EndedByKill: QEMU did not quit either and was sent SIGKILL.
	EndedByKill Ending = "killed"
	// EndedBefore: QEMU had already exited when Shutdown was called.
	EndedBefore Ending = "already exited"
)

// Time allowed to the steps after the guest's grace period.
const (
	qmpCommandTimeout = 2 * time.Second // one QMP command while stopping
	quitWait          = 3 * time.Second // QEMU's exit after QMP quit
)

// ctrlAltDel is QMP send-key's argument for ctrl-alt-delete.
var ctrlAltDel = map[string]any{"keys": []map[string]string{
	{"type": "qcode", "data": "ctrl"},
	{"type": "qcode", "data": "alt"},
	{"type": "qcode", "data": "delete"},
}}

// Shutdown stops the VM, gently first: it presses ctrl-alt-delete on the
// guest's keyboard controller (QMP send-key) and waits up to grace for
// QEMU to exit, then sends QMP quit and waits a few seconds, then SIGKILL,
// and returns how QEMU ended once it has been reaped (Wait gives its exit
// status). ctx bounds the whole call: when it ends first Shutdown returns
// its error, with the step it had reached, and leaves QEMU as it is
// (perhaps still powering off), so give ctx more than grace.
func (p *Process) Shutdown(ctx context.Context, grace time.Duration) (Ending, error) {
	if p.Exited() {
		return EndedBefore, nil
	}
	// QEMU refusing the key press (a *QMPError) means the guest will not
	// hear it, so the grace period is skipped; any other failure (a slow
	// QEMU) may still have delivered it.
	var refused *QMPError
	if err := p.qmpWithTimeout(ctx, "send-key", ctrlAltDel); !errors.As(err, &refused) {
		if ended, err := p.waitExit(ctx, grace); err != nil || ended {
			return EndedByGuest, err
		}
	}

	p.qmpWithTimeout(ctx, "quit", nil)
	if ended, err := p.waitExit(ctx, quitWait); ended || err != nil {
		return EndedByQuit, err
	}

	if err := p.Kill(); err != nil {
		return EndedByKill, err
	}
	select {
	case <-p.done:
		return EndedByKill, nil
	case <-ctx.Done():
		return EndedByKill, fmt.Errorf("stopping VM %s: waiting for QEMU after SIGKILL: %w", p.id, context.Cause(ctx))
	}
}

// qmpWithTimeout runs a QMP command bounded by qmpCommandTimeout, for
// steps whose failure Shutdown answers by escalating.
func (p *Process) qmpWithTimeout(ctx context.Context, command string, args any) error {
	cctx, cancel := context.WithTimeout(ctx, qmpCommandTimeout)
	defer cancel()
	_, err := p.QMP(cctx, command, args)
	return err
}

// waitExit waits up to d for QEMU to exit: true when it did, an error when
// ctx ended first.
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

// SendCtrlAltDel presses ctrl-alt-del in the VM whose QMP socket is sock,
// over a connection of its own: how a daemon asks a guest whose QEMU it
// did not start (one it adopted after a restart) to power off.
func SendCtrlAltDel(ctx context.Context, sock string) error {
	c, err := DialQMP(ctx, sock)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Execute(ctx, "send-key", ctrlAltDel)
	return err
}
