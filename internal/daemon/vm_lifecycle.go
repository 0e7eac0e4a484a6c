package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"banger/internal/daemon/opstate"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// The VM state machine: which lifecycle op may run from which state.
// Anything else is a failed precondition that changes nothing.
var allowedFrom = map[string][]store.VMState{
	"start":   {store.VMStopped, store.VMError},
	"stop":    {store.VMRunning},
	"restart": {store.VMRunning},
}

func checkTransition(op string, vm store.VM) error {
	for _, s := range allowedFrom[op] {
		if vm.State == s {
			return nil
		}
	}
	return fmt.Errorf("cannot %s vm %q: it is %s: %w", op, vm.Name, vm.State, errdefs.ErrFailedPrecondition)
}

// withVMLockByRef resolves ref and runs fn holding vmLocks[id] for its
// whole body, with the VM's current row (read under the lock).
func (m *vmManager) withVMLockByRef(ctx context.Context, ref string, fn func(vm store.VM) error) error {
	vm, err := m.store.ResolveVM(ctx, ref)
	if err != nil {
		return err
	}
	return m.withVMLockByID(ctx, vm.ID, fn)
}

// withVMLockByID runs fn holding vmLocks[id] across its whole body.
func (m *vmManager) withVMLockByID(ctx context.Context, id string, fn func(vm store.VM) error) error {
	unlock, err := m.locks.Lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	vm, err := m.store.GetVM(ctx, id)
	if err != nil {
		return err
	}
	return fn(vm)
}

// stopGuest runs the capabilities' preStop (the DNS name goes), asks the
// guest to power off, kills the VMM after grace, and releases the TAP.
// A failing preStop is reported and the release goes on. The disk and the IP stay the VM's.
// The caller holds vmLocks[id].
func (m *vmManager) stopGuest(ctx context.Context, vm store.VM, grace time.Duration) error {
	var errs []error
	h, ok := m.handles.get(vm.ID)
	if !ok {
		return nil
	}
	m.netMu.Lock()
	n := m.net
	m.netMu.Unlock()
	if err := m.runPreStop(ctx, &capBoot{vm: vm, h: h, net: n}); err != nil {
		errs = append(errs, err)
	}
	if h.proc != nil {
		sctx, cancel := context.WithTimeout(ctx, grace+5*time.Second)
		if err := h.proc.Shutdown(sctx, grace); err != nil {
			h.proc.Kill()
		}
		cancel()
		select {
		case <-h.proc.Done():
			// A jailed Firecracker's jail goes with it; one this daemon
			// adopted has no one else to remove it.
			if h.VMM == "firecracker" {
				if err := m.removeVMJail(vm.ID); err != nil {
					errs = append(errs, fmt.Errorf("remove the jail: %w", err))
				}
			}
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("vmm pid %d did not exit", h.proc.PID()))
		}
	}
	if n != nil {
		if h.TAP != "" {
			if err := n.TAPs().Release(h.TAP); err != nil {
				errs = append(errs, fmt.Errorf("release tap %s: %w", h.TAP, err))
			}
		}
	}
	m.handles.set(func() { h.proc, h.PID, h.PIDStart, h.VMMExe, h.TAP, h.hostKey, h.HostKey = nil, 0, 0, "", "", nil, "" })
	// A create that failed early has no directory yet: nothing to record.
	if err := writeHandles(m.layout.VMHandles(vm.ID), h); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// watchExit notices a VMM that exits on its own (the guest powered off,
// crashed, was killed): it releases what the running VM held and records
// the VM stopped. A stop or rm in progress owns the exit instead: the
// watcher finds the process is no longer the VM's and does nothing.
func (m *vmManager) watchExit(id, name string, proc vmProcess) {
	m.watchers.Add(1)
	go func() {
		defer m.watchers.Done()
		select {
		case <-proc.Done():
		case <-m.ctx.Done():
			return
		}
		err := m.withVMLockByID(m.ctx, id, func(vm store.VM) error {
			if h, ok := m.handles.get(id); !ok || h.proc != proc {
				return nil
			}
			reason := "the guest powered off"
			if _, adopted := proc.(*adoptedProc); adopted {
				reason = "the VMM exited (adopted after a daemon restart, its exit status is not known)"
			} else if code, _ := waitCode(proc); code != 0 {
				reason = fmt.Sprintf("the VMM exited with status %d", code)
			}
			serr := m.stopGuest(m.ctx, vm, 0)
			if err := m.updateVM(m.ctx, id, func(v *store.VM) { v.State, v.StateReason = store.VMStopped, reason }); err != nil {
				return errors.Join(serr, err)
			}
			m.logger.Info("vm stopped by itself", "vm", name, "reason", reason)
			return serr
		})
		// A VM removed meanwhile was an rm's, and so was its VMM's exit.
		if err != nil && !errdefs.IsNotFound(err) && m.ctx.Err() == nil {
			m.logger.Warn("record a VM that stopped by itself", "vm", name, "err", err)
		}
	}()
}

// waitCode is the VMM's exit status once it has exited.
func waitCode(p vmProcess) (int, error) {
	if w, ok := p.(interface{ Wait() (int, error) }); ok {
		return w.Wait()
	}
	return 0, nil
}

// start boots a stopped VM again (its disk kept) as an async operation.
func (m *vmManager) start(ctx context.Context, call *rpc.Call) (rpc.VMStarted, error) {
	ref, err := bindRef(call)
	if err != nil {
		return rpc.VMStarted{}, err
	}
	vm, err := m.store.ResolveVM(ctx, ref)
	if err != nil {
		return rpc.VMStarted{}, err
	}
	if err := checkTransition("start", vm); err != nil {
		return rpc.VMStarted{}, err
	}
	opID, err := m.startOp(ctx, "vm.start", vm.Name, func(ctx context.Context, report func(opstate.Progress)) (any, error) {
		var out rpc.VM
		err := m.withVMLockByID(ctx, vm.ID, func(vm store.VM) error {
			if err := checkTransition("start", vm); err != nil {
				return err
			}
			if err := m.bootExisting(ctx, vm, report); err != nil {
				return err
			}
			got, err := m.store.GetVM(ctx, vm.ID)
			out = m.toRPC(got)
			return err
		})
		return out, err
	})
	if err != nil {
		return rpc.VMStarted{}, err
	}
	return rpc.VMStarted{OpID: opID, VM: m.toRPC(vm)}, nil
}

// bootExisting starts a VM whose disk exists; on failure it releases what
// it took and records the VM in state error with the reason.
func (m *vmManager) bootExisting(ctx context.Context, vm store.VM, report func(opstate.Progress)) error {
	t0 := time.Now()
	if _, err := m.store.SetVMState(ctx, vm.ID, store.VMStarting, ""); err != nil {
		return err
	}
	fail := func(err error) error {
		m.stopGuest(context.WithoutCancel(ctx), vm, 0)
		m.updateVM(context.WithoutCancel(ctx), vm.ID, func(v *store.VM) { v.State, v.StateReason = store.VMError, err.Error() })
		return fmt.Errorf("start vm %q: %w", vm.Name, err)
	}
	k, err := m.store.GetKernel(ctx, vm.KernelID)
	if err != nil {
		return fail(err)
	}
	n, err := m.network(ctx)
	if err != nil {
		return fail(err)
	}
	a, err := m.store.GetIPAllocation(ctx, vm.ID)
	if err != nil {
		return fail(err)
	}
	h, ok := m.handles.get(vm.ID)
	if !ok {
		h = &vmHandles{VMM: m.vmm, DiskPath: m.layout.VMDisk(vm.ID), DiskKind: vm.DiskStrategy}
		m.handles.put(vm.ID, h)
	}
	h.VMM, h.VMMSocket, h.ConsoleLog = m.vmm, m.layout.VMMSocket(vm.ID), m.layout.VMConsoleLog(vm.ID)
	ip, err := parseAddr(a.IP)
	if err != nil {
		return fail(err)
	}
	m.handles.set(func() { h.IP = ip })
	if err := m.startGuest(ctx, vm, k, n, h, t0, report); err != nil {
		return fail(err)
	}
	return nil
}

// stop asks the guest to power off (killed after --timeout) and records
// the VM stopped.
func (m *vmManager) stop(ctx context.Context, call *rpc.Call) (rpc.VM, error) {
	var p rpc.VMStopParams
	if err := call.Bind(&p); err != nil {
		return rpc.VM{}, err
	}
	if p.Ref == "" {
		return rpc.VM{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: ref is required", call.Method)
	}
	grace := stopGrace
	if p.TimeoutSeconds > 0 {
		grace = time.Duration(p.TimeoutSeconds) * time.Second
	}
	var out rpc.VM
	err := m.withVMLockByRef(ctx, p.Ref, func(vm store.VM) error {
		if err := checkTransition("stop", vm); err != nil {
			return err
		}
		// Record intent before touching the host.
		if _, err := m.store.SetVMState(ctx, vm.ID, store.VMStopping, ""); err != nil {
			return err
		}
		crashPoint("stop.recorded")
		if err := m.preStopOrResume(ctx, vm); err != nil {
			return err
		}
		serr := m.stopGuest(context.WithoutCancel(ctx), vm, grace)
		crashPoint("stop.released")
		state, reason := store.VMStopped, "stopped by request"
		if serr != nil {
			state, reason = store.VMError, serr.Error()
		}
		if err := m.updateVM(context.WithoutCancel(ctx), vm.ID, func(v *store.VM) { v.State, v.StateReason = state, reason }); err != nil {
			return err
		}
		got, err := m.store.GetVM(ctx, vm.ID)
		out = m.toRPC(got)
		return errors.Join(serr, err)
	})
	return out, err
}

// preStopOrResume runs the capabilities' preStop before a requested stop.
// If one fails the stop changes nothing: the capabilities' postBoot run
// again, so the running VM is whole, and it is recorded running again.
// The caller holds vmLocks[vm.ID] and has recorded "stopping".
func (m *vmManager) preStopOrResume(ctx context.Context, vm store.VM) error {
	h, ok := m.handles.get(vm.ID)
	if !ok {
		return nil
	}
	m.netMu.Lock()
	n := m.net
	m.netMu.Unlock()
	b := &capBoot{vm: vm, h: h, net: n}
	err := m.runPreStop(ctx, b)
	if err == nil {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	if rerr := m.runPostBoot(ctx, b); rerr != nil {
		err = errors.Join(err, fmt.Errorf("resume the running VM: %w", rerr))
	}
	if _, serr := m.store.SetVMState(ctx, vm.ID, store.VMRunning, ""); serr != nil {
		err = errors.Join(err, serr)
	}
	return fmt.Errorf("stop vm %q: %w", vm.Name, err)
}

// restart is stop then start, holding vmLocks[id] across both.
func (m *vmManager) restart(ctx context.Context, call *rpc.Call) (rpc.VMStarted, error) {
	var p rpc.VMStopParams
	if err := call.Bind(&p); err != nil {
		return rpc.VMStarted{}, err
	}
	vm, err := m.store.ResolveVM(ctx, p.Ref)
	if err != nil {
		return rpc.VMStarted{}, err
	}
	if err := checkTransition("restart", vm); err != nil {
		return rpc.VMStarted{}, err
	}
	grace := stopGrace
	if p.TimeoutSeconds > 0 {
		grace = time.Duration(p.TimeoutSeconds) * time.Second
	}
	opID, err := m.startOp(ctx, "vm.restart", vm.Name, func(ctx context.Context, report func(opstate.Progress)) (any, error) {
		var out rpc.VM
		err := m.withVMLockByID(ctx, vm.ID, func(vm store.VM) error {
			if err := checkTransition("restart", vm); err != nil {
				return err
			}
			report(opstate.Progress{Phase: "stop"})
			if _, err := m.store.SetVMState(ctx, vm.ID, store.VMStopping, ""); err != nil {
				return err
			}
			if err := m.preStopOrResume(ctx, vm); err != nil {
				return err
			}
			if err := m.stopGuest(context.WithoutCancel(ctx), vm, grace); err != nil {
				m.updateVM(context.WithoutCancel(ctx), vm.ID, func(v *store.VM) { v.State, v.StateReason = store.VMError, err.Error() })
				return err
			}
			if err := m.bootExisting(ctx, vm, report); err != nil {
				return err
			}
			got, err := m.store.GetVM(ctx, vm.ID)
			out = m.toRPC(got)
			return err
		})
		return out, err
	})
	if err != nil {
		return rpc.VMStarted{}, err
	}
	return rpc.VMStarted{OpID: opID, VM: m.toRPC(vm)}, nil
}
