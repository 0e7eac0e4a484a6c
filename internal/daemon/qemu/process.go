package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"

	"banger/internal/system"
)

// Process is a running QEMU started by Start.
type Process struct {
	id   string
	argv []string
	cmd  *exec.Cmd
	out  *system.TailBuffer // QEMU's stdout and stderr, or their tail

	done     chan struct{} // closed once, when QEMU has exited and been reaped
	exitCode int           // set before done is closed
	exitErr  error         // set before done is closed

	sock string // the QMP socket, for a redial

	mu     sync.Mutex // guards qmp and reaped; never held across a QMP command
	qmp    *QMPClient // guarded by mu: the open QMP connection
	reaped bool       // guarded by mu: QEMU has exited, so qmp stays nil
}

// keepQMP makes c the process's QMP connection, closing the one it
// replaces; false (and c is not kept) once QEMU has exited.
func (p *Process) keepQMP(c *QMPClient) bool {
	p.mu.Lock()
	if p.reaped {
		p.mu.Unlock()
		return false
	}
	old := p.qmp
	p.qmp = c
	p.mu.Unlock()
	if old != nil && old != c {
		old.Close()
	}
	return true
}

// reap waits for QEMU, records how it ended and closes done.
func (p *Process) reap() {
	err := p.cmd.Wait()
	p.exitCode = p.cmd.ProcessState.ExitCode()
	if err != nil {
		p.exitErr = fmt.Errorf("QEMU for VM %s: %w", p.id, err)
	}
	p.mu.Lock()
	qmp := p.qmp
	p.qmp, p.reaped = nil, true
	p.mu.Unlock()
	if qmp != nil {
		qmp.Close()
	}
	close(p.done)
}

// PID is QEMU's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Argv is the command Start ran.
func (p *Process) Argv() []string { return append([]string(nil), p.argv...) }

// Done is closed once QEMU has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until QEMU has exited and returns its exit status (-1 when a
// signal killed it) and, unless it exited with status 0, an error saying
// how it ended. It is safe from any number of goroutines.
func (p *Process) Wait() (exitCode int, err error) {
	<-p.done
	return p.exitCode, p.exitErr
}

// Exited reports whether QEMU has exited, without blocking.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output is the end of QEMU's own stdout and stderr (the last few KiB).
func (p *Process) Output() string { return p.out.Tail() }

// Kill sends QEMU SIGKILL. It does not wait: use Wait or Done. Killing a
// QEMU that has already exited is not an error.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing QEMU for VM %s (pid %d): %w", p.id, p.PID(), err)
	}
	return nil
}

// QMP runs a QMP command on the process's connection (see
// QMPClient.Execute).
func (p *Process) QMP(ctx context.Context, command string, args any) (json.RawMessage, error) {
	c, err := p.qmpClient(ctx)
	if err != nil {
		return nil, err
	}
	return c.Execute(ctx, command, args)
}

// qmpClient returns the open QMP connection, redialling one that ended
// while QEMU still runs.
func (p *Process) qmpClient(ctx context.Context) (*QMPClient, error) {
	if p.Exited() {
		return nil, fmt.Errorf("QEMU for VM %s has exited: %w", p.id, ErrQMPClosed)
	}
	p.mu.Lock()
	c := p.qmp
	p.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
		default:
			return c, nil
		}
	}
	nc, err := DialQMP(ctx, p.sock)
	if err != nil {
		return nil, err
	}
	if !p.keepQMP(nc) {
		nc.Close()
		return nil, fmt.Errorf("QEMU for VM %s has exited: %w", p.id, ErrQMPClosed)
	}
	return nc, nil
}
