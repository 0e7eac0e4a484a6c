package daemon

import (
	"context"

	"banger/internal/rpc"
)

func (d *Daemon) listVMs(ctx context.Context, call *rpc.Call) (rpc.VMListResult, error) {
	if err := call.Bind(&noParams{}); err != nil {
		return rpc.VMListResult{}, err
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return rpc.VMListResult{}, err
	}
	out := rpc.VMListResult{VMs: make([]rpc.VM, 0, len(vms))}
	for _, vm := range vms {
		out.VMs = append(out.VMs, rpc.VM{
			ID:        vm.ID,
			Name:      vm.Name,
			State:     string(vm.State),
			Image:     vm.ImageID,
			VCPUs:     vm.VCPUs,
			MemoryMiB: vm.MemoryMiB,
			DiskBytes: vm.DiskBytes,
			CreatedAt: vm.CreatedAt,
		})
	}
	return out, nil
}
