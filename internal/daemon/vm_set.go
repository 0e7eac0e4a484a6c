package daemon

import (
	"context"
	"fmt"

	"banger/internal/daemon/vmdisk"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// set changes a VM's vCPUs, memory or disk size; they take effect at its
// next start. Growing the disk grows its filesystem and needs the VM
// stopped; shrinking is refused. Holds vmLocks[id] across the change.
func (m *vmManager) set(ctx context.Context, call *rpc.Call) (rpc.VM, error) {
	var p rpc.VMSetParams
	if err := call.Bind(&p); err != nil {
		return rpc.VM{}, err
	}
	if p.Ref == "" {
		return rpc.VM{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: ref is required", call.Method)
	}
	if p.VCPUs == 0 && p.MemoryMiB == 0 && p.DiskGiB == 0 {
		return rpc.VM{}, fmt.Errorf("nothing to set: give --cpus, --mem or --disk: %w", errdefs.ErrInvalidArgument)
	}
	if p.VCPUs < 0 || p.VCPUs > 64 || (p.MemoryMiB != 0 && (p.MemoryMiB < 64 || p.MemoryMiB > 1<<20)) || p.DiskGiB < 0 || p.DiskGiB > 16<<10 {
		return rpc.VM{}, fmt.Errorf("vcpus %d, memory %d MiB, disk %d GiB: want 1-64 vCPUs, 64 MiB-1 TiB of memory, a disk of at most 16 TiB: %w", p.VCPUs, p.MemoryMiB, p.DiskGiB, errdefs.ErrInvalidArgument)
	}
	if err := m.checkHostFits(p.MemoryMiB, p.DiskGiB); err != nil {
		return rpc.VM{}, err
	}
	var out rpc.VM
	err := m.withVMLockByRef(ctx, p.Ref, func(vm store.VM) error {
		if vm.State == store.VMStarting || vm.State == store.VMStopping {
			return fmt.Errorf("vm %q is %s: try again when it is done: %w", vm.Name, vm.State, errdefs.ErrFailedPrecondition)
		}
		if p.DiskGiB != 0 {
			size := int64(p.DiskGiB) << 30
			switch {
			case size < vm.DiskBytes:
				return fmt.Errorf("vm %q: --disk %d GiB is smaller than its disk (%d MiB): disks only grow: %w", vm.Name, p.DiskGiB, vm.DiskBytes>>20, errdefs.ErrFailedPrecondition)
			case size > vm.DiskBytes && vm.State == store.VMRunning:
				return fmt.Errorf("vm %q is running: stop it to grow its disk: %w", vm.Name, errdefs.ErrFailedPrecondition)
			case size > vm.DiskBytes && vm.DiskStrategy == string(vmdisk.StrategyDMSnap):
				return fmt.Errorf("vm %q: growing a device-mapper snapshot disk is not supported yet: %w", vm.Name, errdefs.ErrFailedPrecondition)
			case size > vm.DiskBytes:
				if err := vmdisk.Grow(ctx, m.runner, m.layout.VMDisk(vm.ID), size); err != nil {
					return fmt.Errorf("grow the disk of vm %q: %w", vm.Name, err)
				}
				vm.DiskBytes = size
			}
		}
		if p.VCPUs != 0 {
			vm.VCPUs = p.VCPUs
		}
		if p.MemoryMiB != 0 {
			vm.MemoryMiB = p.MemoryMiB
		}
		got, err := m.store.UpdateVM(ctx, vm)
		if err != nil {
			return err
		}
		out = m.toRPC(got)
		return nil
	})
	return out, err
}
