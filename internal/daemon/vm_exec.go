package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"banger/internal/errdefs"
	"banger/internal/guest"
	"banger/internal/guestinit"
	"banger/internal/rpc"
	"banger/internal/store"
)

// exec runs a command in a running VM, streaming stdin, stdout and stderr
// through the daemon's socket. vmLocks[id] is held only to check the state
// and copy the handles out, never across the command.
func (m *vmManager) exec(ctx context.Context, call *rpc.Call) (rpc.VMExecResult, error) {
	var p rpc.VMExecParams
	if err := call.Bind(&p); err != nil {
		return rpc.VMExecResult{}, err
	}
	if p.VM == "" || len(p.Argv) == 0 {
		return rpc.VMExecResult{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: vm and argv are required", call.Method)
	}
	if err := checkExecParams(p); err != nil {
		return rpc.VMExecResult{}, err
	}
	h, err := m.runningHandles(ctx, p.VM)
	if err != nil {
		return rpc.VMExecResult{}, err
	}
	client, err := guest.Dial(ctx, m.target(h))
	if err != nil {
		return rpc.VMExecResult{}, fmt.Errorf("reach the guest: %w", err)
	}
	defer client.Close()

	env := map[string]string{}
	for k, v := range p.Env {
		env[k] = v
	}
	if p.Workdir != "" {
		env["BANGER_WORKDIR"] = p.Workdir
	}
	if p.User != "" {
		env["BANGER_USER"] = p.User
	}
	stdin, stdinW := io.Pipe()
	out := &eventWriter{call: call, kind: rpc.EventStdout}
	errw := &eventWriter{call: call, kind: rpc.EventStderr}
	s, err := guest.Start(client, guest.Command{
		Command: guestinit.EncodeArgv(p.Argv),
		Env:     env,
		Stdin:   stdin,
		Stdout:  out,
		Stderr:  errw,
		TTY:     p.TTY, Term: p.Term, Cols: p.Cols, Rows: p.Rows,
	})
	if err != nil {
		stdinW.Close()
		return rpc.VMExecResult{}, vmmGone(p.VM, h, "before the command started", err)
	}
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		m.pumpInput(ctx, call, s, stdinW)
	}()
	go func() {
		// The caller went away: hang up on the command, as a terminal
		// would, and close the session (a command that ignores SIGHUP
		// outlives it, as under ssh).
		select {
		case <-ctx.Done():
			s.Signal("HUP")
			s.Close()
		case <-inputDone:
		}
	}()
	code, sig, err := s.Wait()
	stdinW.Close()
	if err != nil {
		return rpc.VMExecResult{}, vmmGone(p.VM, h, "while the command ran", err)
	}
	return rpc.VMExecResult{ExitCode: code, Signal: sig}, nil
}

// vmmGone explains a lost guest connection: when the VM's VMM has exited
// (a stop, an rm, a crash: exec holds no lock across the command) the
// error says so, as a failed precondition; otherwise err stands.
func vmmGone(ref string, h *vmHandles, when string, err error) error {
	if h.proc == nil {
		return err
	}
	// The connection may drop a moment before the exit is seen.
	select {
	case <-h.proc.Done():
	case <-time.After(time.Second):
		return err
	}
	return fmt.Errorf("vm %s stopped %s (its VMM exited): %v: %w", ref, when, err, errdefs.ErrFailedPrecondition)
}

// pumpInput forwards the caller's stdin, resizes and signals until the
// call ends.
func (m *vmManager) pumpInput(ctx context.Context, call *rpc.Call, s *guest.Session, stdin *io.PipeWriter) {
	for {
		select {
		case <-ctx.Done():
			stdin.CloseWithError(ctx.Err())
			return
		case ev := <-call.Input():
			switch ev.Kind {
			case rpc.InputStdin:
				var b []byte
				if json.Unmarshal(ev.Data, &b) == nil {
					if _, err := stdin.Write(b); err != nil {
						return
					}
				}
			case rpc.InputEOF:
				stdin.Close()
			case rpc.InputResize:
				var r rpc.ExecResize
				if json.Unmarshal(ev.Data, &r) == nil && r.Cols > 0 && r.Rows > 0 {
					s.Resize(r.Cols, r.Rows)
				}
			case rpc.InputSignal:
				var sig string
				if json.Unmarshal(ev.Data, &sig) == nil && sig != "" {
					s.Signal(sig)
				}
			}
		}
	}
}

// runningHandles checks, under vmLocks[id], that the VM runs, and copies
// its handles out.
func (m *vmManager) runningHandles(ctx context.Context, ref string) (*vmHandles, error) {
	_, h, err := m.runningVM(ctx, ref)
	return h, err
}

// runningVM is runningHandles with the VM's row as it was under the lock.
func (m *vmManager) runningVM(ctx context.Context, ref string) (store.VM, *vmHandles, error) {
	vm, err := m.store.ResolveVM(ctx, ref)
	if err != nil {
		return store.VM{}, nil, err
	}
	unlock, err := m.locks.Lock(ctx, vm.ID)
	if err != nil {
		return store.VM{}, nil, err
	}
	defer unlock()
	if vm, err = m.store.GetVM(ctx, vm.ID); err != nil {
		return store.VM{}, nil, err
	}
	h, ok := m.handles.get(vm.ID)
	if vm.State != store.VMRunning || !ok || h.hostKey == nil {
		return store.VM{}, nil, fmt.Errorf("vm %q is %s, not running: %w", vm.Name, vm.State, errdefs.ErrFailedPrecondition)
	}
	if h.signer == nil {
		if h.signer, err = loadClientKey(m.layout.VMClientKey(vm.ID)); err != nil {
			return store.VM{}, nil, fmt.Errorf("read the client key of vm %q: %w", vm.Name, err)
		}
	}
	c := *h
	return vm, &c, nil
}

// eventWriter sends what is written to it as stream events of one kind.
type eventWriter struct {
	mu   sync.Mutex
	call *rpc.Call
	kind string
}

func (w *eventWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for off := 0; off < len(p); off += 32 << 10 {
		end := min(off+32<<10, len(p))
		if err := w.call.Send(w.kind, p[off:end]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}
