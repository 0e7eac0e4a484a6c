package fcproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"banger/internal/system"
)

// Process is a running Firecracker started by Start.
type Process struct {
	id     string
	argv   []string
	sock   string // the API socket on the host
	client *Client
	cmd    *exec.Cmd
	out    *system.TailBuffer // Firecracker's stdout and stderr, or their tail

	done     chan struct{} // closed once, when Firecracker has exited and been reaped
	exitCode int           // set before done is closed
	exitErr  error         // set before done is closed
}

// reap waits for Firecracker, records how it ended and closes done.
func (p *Process) reap() {
	err := p.cmd.Wait()
	p.exitCode = p.cmd.ProcessState.ExitCode()
	if err != nil {
		p.exitErr = fmt.Errorf("firecracker for VM %s: %w", p.id, err)
	}
	p.client.Close()
	close(p.done)
}

// PID is the process id Start spawned: Firecracker's own (nsenter and the
// jailer exec it).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Argv is the command Start ran.
func (p *Process) Argv() []string { return append([]string(nil), p.argv...) }

// APISocket is the API socket's path on the host.
func (p *Process) APISocket() string { return p.sock }

// Client is the client of this process's API.
func (p *Process) Client() *Client { return p.client }

// Done is closed once Firecracker has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until Firecracker has exited and returns its exit status (-1
// when a signal killed it) and, unless it exited with status 0, an error
// saying how it ended. It is safe from any number of goroutines.
func (p *Process) Wait() (exitCode int, err error) {
	<-p.done
	return p.exitCode, p.exitErr
}

// Exited reports whether Firecracker has exited, without blocking.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output is the end of Firecracker's stdout and stderr (the guest's serial
// console and Firecracker's own messages): the last few KiB.
func (p *Process) Output() string { return p.out.Tail() }

// Kill sends Firecracker SIGKILL. It does not wait: use Wait or Done.
// Killing a Firecracker that has already exited is not an error.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL) }

func (p *Process) signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling firecracker for VM %s (pid %d) with %v: %w", p.id, p.PID(), sig, err)
	}
	return nil
}

// Info asks Firecracker for its instance information (GET /).
func (p *Process) Info(ctx context.Context) (InstanceInfo, error) {
	return p.client.InstanceInfo(ctx)
}
