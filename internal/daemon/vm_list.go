package daemon

import (
	"context"

	"banger/internal/rpc"
)

func (m *vmManager) list(ctx context.Context, call *rpc.Call) (rpc.VMListResult, error) {
	if err := call.Bind(&noParams{}); err != nil {
		return rpc.VMListResult{}, err
	}
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return rpc.VMListResult{}, err
	}
	out := rpc.VMListResult{VMs: make([]rpc.VM, 0, len(vms))}
	for _, vm := range vms {
		out.VMs = append(out.VMs, m.toRPCNamed(ctx, m.toRPC(vm)))
	}
	return out, nil
}

func (m *vmManager) show(ctx context.Context, call *rpc.Call) (rpc.VM, error) {
	ref, err := bindRef(call)
	if err != nil {
		return rpc.VM{}, err
	}
	vm, err := m.store.ResolveVM(ctx, ref)
	if err != nil {
		return rpc.VM{}, err
	}
	return m.toRPCNamed(ctx, m.toRPC(vm)), nil
}

// toRPCNamed replaces image and kernel ids by their names, and fills the
// IP from the store when no handles are cached.
func (m *vmManager) toRPCNamed(ctx context.Context, v rpc.VM) rpc.VM {
	if im, err := m.store.GetImage(ctx, v.Image); err == nil {
		v.Image = im.Name
	}
	if v.Kernel != "" {
		if k, err := m.store.GetKernel(ctx, v.Kernel); err == nil {
			v.Kernel = k.Name
		}
	}
	if v.IP == "" {
		if a, err := m.store.GetIPAllocation(ctx, v.ID); err == nil {
			v.IP = a.IP
		}
	}
	return v
}
