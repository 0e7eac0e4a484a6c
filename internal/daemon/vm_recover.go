package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"banger/internal/store"
)

// reasonRemoving is the state reason vm.rm records before it touches the
// host: a VM found with it at Open was being removed when the daemon
// died, and its removal is completed.
const reasonRemoving = "being removed"

// recover runs at Open, before the socket listens: it rebuilds the handle
// cache from each VM's handles.json, adopts the VMs whose VMM still runs
// (verified against /proc: see verifyVMM) so that they keep running, and
// completes or rolls back what a daemon crash cut short:
//
//   - running, VMM alive: adopted (the capabilities' postBoot run again:
//     the DNS name), and watched like any other;
//   - running, VMM gone: its TAP and DNS name released, recorded stopped;
//   - being removed (rm recorded reasonRemoving): the removal completed;
//   - created, or starting for the first time (a create cut short): rolled
//     back, every trace removed, as a failed create would;
//   - starting again (a start or restart cut short), or stopping: the VMM,
//     if alive, stopped, its resources released, recorded stopped with
//     the reason;
//   - stopped or error: nothing runs for it (a VMM found alive is
//     stopped).
//
// A VMM that fails the checks is not ours (a recycled PID) and is left
// alone.
func (m *vmManager) recover(ctx context.Context) error {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, vm := range vms {
		if err := m.withVMLockByID(ctx, vm.ID, func(vm store.VM) error { return m.recoverVM(ctx, vm) }); err != nil {
			errs = append(errs, fmt.Errorf("vm %q: %w", vm.Name, err))
		}
	}
	return errors.Join(errs...)
}

// recoverVM settles one VM; the caller holds vmLocks[vm.ID].
func (m *vmManager) recoverVM(ctx context.Context, vm store.VM) error {
	h := &vmHandles{VMM: string(vm.VMM), DiskPath: m.layout.VMDisk(vm.ID), DiskKind: vm.DiskStrategy}
	if data, err := os.ReadFile(m.layout.VMHandles(vm.ID)); err == nil {
		if err := json.Unmarshal(data, h); err != nil {
			m.logger.Warn("unreadable handles.json", "vm", vm.Name, "err", err)
		}
	}
	if h.VMMSocket == "" {
		h.VMMSocket = m.layout.VMMSocket(vm.ID)
	}
	if h.ConsoleLog == "" {
		h.ConsoleLog = m.layout.VMConsoleLog(vm.ID)
	}
	alive := false
	if h.PID > 0 {
		if err := verifyVMM(h, vm.ID); err != nil {
			m.logger.Info("the recorded VMM is gone", "vm", vm.Name, "why", err)
		} else if proc, err := adoptVMM(m.ctx, h.PID, h.VMM, m.controlSocket(vm.ID, h)); err != nil {
			m.logger.Warn("cannot watch the VM's VMM", "vm", vm.Name, "pid", h.PID, "err", err)
		} else {
			h.proc, alive = proc, true
		}
	}
	if !alive {
		h.PID, h.PIDStart, h.VMMExe, h.HostKey = 0, 0, "", ""
	}
	m.handles.put(vm.ID, h)
	if h.TAP != "" || alive {
		// The network's host objects outlive the daemon: this adopts
		// them (the bridge, the rules, the TAPs stay as they are).
		if _, err := m.network(ctx); err != nil {
			return err
		}
	}

	switch {
	case vm.StateReason == reasonRemoving:
		m.logger.Warn("completing the removal a daemon stop interrupted", "vm", vm.Name)
		return m.destroy(ctx, vm.ID, 0)

	case vm.State == store.VMCreated || vm.State == store.VMStarting && vm.StartedAt.IsZero():
		m.logger.Warn("rolling back the create a daemon stop interrupted", "vm", vm.Name)
		return m.destroy(ctx, vm.ID, 0)

	case vm.State == store.VMRunning && alive:
		return m.adopt(ctx, vm, h)

	case vm.State == store.VMRunning:
		return m.settleStopped(ctx, vm, "the VMM exited while the daemon was not running")

	case vm.State == store.VMStarting:
		return m.settleStopped(ctx, vm, "interrupted: the daemon stopped while the VM was starting")

	case vm.State == store.VMStopping:
		return m.settleStopped(ctx, vm, "stopped by request (completed after a daemon restart)")
	}
	// stopped or error: nothing may run for it.
	if alive || h.TAP != "" {
		m.logger.Warn("releasing what a stopped VM still held", "vm", vm.Name, "pid", h.PID, "tap", h.TAP)
		return m.stopGuest(ctx, vm, 0)
	}
	return nil
}

// adopt takes over a running VM whose VMM outlived the previous daemon:
// the daemon's SSH key and the guest's host key come back from the VM's
// files, the capabilities' postBoot run again (the DNS registry is
// in-memory), and the exit watcher starts. The VM is never interrupted.
func (m *vmManager) adopt(ctx context.Context, vm store.VM, h *vmHandles) error {
	signer, kerr := loadClientKey(m.layout.VMClientKey(vm.ID))
	hostKey, herr := parseHostKey(h.HostKey)
	if err := errors.Join(kerr, herr); err != nil {
		// Without the keys the guest cannot be reached: stop it rather
		// than keep a VM nobody can use.
		return m.settleStopped(ctx, vm, fmt.Sprintf("could not be adopted after a daemon restart: %v", err))
	}
	h.signer, h.hostKey = signer, hostKey
	n, err := m.network(ctx)
	if err != nil {
		return err
	}
	if err := m.runPostBoot(ctx, &capBoot{vm: vm, h: h, net: n}); err != nil {
		return m.settleStopped(ctx, vm, fmt.Sprintf("could not be adopted after a daemon restart: %v", err))
	}
	m.watchExit(vm.ID, vm.Name, h.proc)
	m.logger.Info("adopted a running VM", "vm", vm.Name, "pid", h.PID, "tap", h.TAP)
	return writeHandles(m.layout.VMHandles(vm.ID), h)
}

// settleStopped stops whatever still runs for vm (killing the VMM at
// once), releases its TAP and DNS name and records it stopped with
// reason.
func (m *vmManager) settleStopped(ctx context.Context, vm store.VM, reason string) error {
	serr := m.stopGuest(ctx, vm, 0)
	if serr != nil {
		reason = serr.Error()
	}
	state := store.VMStopped
	if serr != nil {
		state = store.VMError
	}
	m.logger.Warn("vm settled after a daemon restart", "vm", vm.Name, "state", state, "reason", reason)
	return errors.Join(serr, m.updateVM(ctx, vm.ID, func(v *store.VM) { v.State, v.StateReason = state, reason }))
}

// controlSocket is where the VM's VMM answers control requests on the
// host: its QMP or API socket, inside the jail for a jailed Firecracker.
func (m *vmManager) controlSocket(id string, h *vmHandles) string {
	if h.VMM == "firecracker" && h.Jail != nil {
		return h.Jail.jailConfig(id).HostAPISocket()
	}
	if h.VMM == "firecracker" && m.config.JailerBinary != "" {
		if cfg, err := m.firecrackerConfig(id); err == nil && cfg.Jailer != nil {
			return cfg.HostAPISocket()
		}
	}
	return h.VMMSocket
}
