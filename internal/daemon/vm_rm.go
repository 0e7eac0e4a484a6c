package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// stopGrace is how long a guest gets to power off before its VMM is killed.
const stopGrace = 10 * time.Second

// remove deletes a VM: refused while it runs unless force, which stops it
// first. Holds vmLocks[id] across the whole op.
func (m *vmManager) remove(ctx context.Context, call *rpc.Call) (struct{}, error) {
	var p rpc.VMRemoveParams
	if err := call.Bind(&p); err != nil {
		return struct{}{}, err
	}
	if p.Ref == "" {
		return struct{}{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: ref is required", call.Method)
	}
	vm, err := m.store.ResolveVM(ctx, p.Ref)
	if err != nil {
		return struct{}{}, err
	}
	unlock, err := m.locks.Lock(ctx, vm.ID)
	if err != nil {
		return struct{}{}, err
	}
	defer unlock()
	if vm, err = m.store.GetVM(ctx, vm.ID); err != nil {
		return struct{}{}, err
	}
	if vm.State == store.VMRunning && !p.Force {
		return struct{}{}, fmt.Errorf("vm %q is running: stop it first or use --force: %w", vm.Name, errdefs.ErrFailedPrecondition)
	}
	// Record intent before touching the host: a daemon that dies during
	// the removal completes it at its next start (recover).
	state := vm.State
	if state == store.VMRunning || state == store.VMStarting {
		state = store.VMStopping
	}
	if _, err := m.store.SetVMState(ctx, vm.ID, state, reasonRemoving); err != nil {
		return struct{}{}, err
	}
	crashPoint("rm.recorded")
	if err := m.destroy(context.WithoutCancel(ctx), vm.ID, stopGrace); err != nil {
		return struct{}{}, err
	}
	m.logger.Info("vm removed", "vm", vm.Name, "id", vm.ID)
	return struct{}{}, nil
}

// destroy stops a VM's VMM (asking the guest to power off, killing it after
// grace) and releases everything it holds: DNS name, TAP, files, IP and
// row, and the VM's jail when Firecracker runs under the jailer. Each
// step runs even when an earlier one failed; the errors are joined. A
// failed create passes no grace: the disk goes with the VM, so a guest
// that hung while booting is not waited for.
func (m *vmManager) destroy(ctx context.Context, id string, grace time.Duration) error {
	var errs []error
	vm, err := m.store.GetVM(ctx, id)
	if err != nil {
		vm = store.VM{ID: id} // no row: still release the host objects
	}
	if err := m.stopGuest(ctx, vm, grace); err != nil {
		errs = append(errs, err)
	}
	crashPoint("rm.stopped")
	if h, ok := m.handles.get(id); ok {
		if err := m.releaseDisk(ctx, id, h); err != nil {
			errs = append(errs, fmt.Errorf("release the disk: %w", err))
		}
	}
	if err := m.removeVMJail(id); err != nil {
		errs = append(errs, fmt.Errorf("remove the jail: %w", err))
	}
	if err := os.RemoveAll(m.layout.VMDir(id)); err != nil {
		errs = append(errs, err)
	}
	crashPoint("rm.files")
	m.handles.drop(id)
	if err := m.store.DeleteVM(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *vmManager) toRPC(vm store.VM) rpc.VM {
	out := rpc.VM{
		ID: vm.ID, Name: vm.Name, State: string(vm.State), StateReason: vm.StateReason,
		Image: vm.ImageID, Kernel: vm.KernelID, VMM: string(vm.VMM), Disk: vm.DiskStrategy,
		VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes,
		CreatedAt: vm.CreatedAt, StartedAt: vm.StartedAt,
		DNSName: vm.Name + "." + m.config.Domain,
	}
	if ip, hostKey, ok := m.handles.view(vm.ID); ok {
		if ip.IsValid() {
			out.IP = ip.String()
		}
		out.HostKey = hostKey
	}
	return out
}
