package daemon

import (
	"context"

	"banger/internal/rpc"
	"banger/internal/store"
)

// reconcilePass is one pass of the background reconciler:
//
//  1. each VM recorded running whose VMM is no longer the process the
//     daemon launched (checked against /proc: verifyVMM) is released and
//     recorded stopped — a backstop behind the exit watchers, which see
//     an exit at once;
//  2. the host objects no record owns (the ledger's orphans) are removed.
//
// VMs an op holds are skipped (TryLock) and looked at next pass.
func (m *vmManager) reconcilePass(ctx context.Context) {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.logger.Warn("reconcile: list VMs", "err", err)
		}
		return
	}
	for _, vm := range vms {
		if vm.State != store.VMRunning {
			continue
		}
		unlock, ok := m.locks.TryLock(vm.ID)
		if !ok {
			continue
		}
		m.checkRunning(ctx, vm.ID)
		unlock()
	}
	if _, err := m.reconcileHost(ctx, false); err != nil && ctx.Err() == nil {
		m.logger.Warn("reconcile: sweep host objects", "err", err)
	}
}

// checkRunning settles a VM recorded running whose VMM is gone. The
// caller holds vmLocks[id].
func (m *vmManager) checkRunning(ctx context.Context, id string) {
	vm, err := m.store.GetVM(ctx, id)
	if err != nil || vm.State != store.VMRunning {
		return
	}
	h, ok := m.handles.get(id)
	if ok && h.proc != nil {
		select {
		case <-h.proc.Done():
		default:
			if verifyVMM(h, id) == nil {
				return
			}
		}
	}
	if err := m.settleStopped(ctx, vm, "the VMM is gone (found by the reconciler)"); err != nil {
		m.logger.Warn("reconcile: release a VM whose VMM is gone", "vm", vm.Name, "err", err)
	}
}

// reconcile serves daemon.reconcile (`banger doctor --fix [--dry-run]`).
func (m *vmManager) reconcile(ctx context.Context, call *rpc.Call) (rpc.ReconcileResult, error) {
	var p rpc.ReconcileParams
	if err := call.Bind(&p); err != nil {
		return rpc.ReconcileResult{}, err
	}
	objs, err := m.reconcileHost(ctx, p.DryRun)
	return rpc.ReconcileResult{Objects: objs, DryRun: p.DryRun}, err
}
