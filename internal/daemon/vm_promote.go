package daemon

import (
	"context"
	"fmt"

	"banger/internal/daemon/opstate"
	"banger/internal/daemon/vmdisk"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// promote makes a stopped VM's disk an image: set up once, then create many
// VMs from it copy-on-write. The name is reserved at once (a pending row);
// the copy runs as an async operation holding vmLocks[id] so the VM cannot
// start meanwhile, and commits under imageOpsMu (lock order: vmLocks[id],
// then imageOpsMu).
func (m *vmManager) promote(ctx context.Context, call *rpc.Call) (rpc.OpStarted, error) {
	var p rpc.ImagePromoteParams
	if err := call.Bind(&p); err != nil {
		return rpc.OpStarted{}, err
	}
	if p.VM == "" || p.Name == "" {
		return rpc.OpStarted{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: vm and name are required", call.Method)
	}
	vm, err := m.store.ResolveVM(ctx, p.VM)
	if err != nil {
		return rpc.OpStarted{}, err
	}
	if err := checkPromotable(vm); err != nil {
		return rpc.OpStarted{}, err
	}
	parent, err := m.store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return rpc.OpStarted{}, err
	}
	im, err := m.images.reserve(ctx, store.Image{
		Name: p.Name, SourceKind: store.SourcePromote, SourceRef: vm.ID,
		ParentImageID: parent.ID, DefaultKernelID: vm.KernelID, Config: parent.Config,
	})
	if err != nil {
		return rpc.OpStarted{}, err
	}
	return m.images.runImageOp(ctx, rpc.MethodImagePromote, im, func(ctx context.Context, report func(opstate.Progress)) (store.Image, error) {
		var done store.Image
		err := m.withVMLockByID(ctx, vm.ID, func(vm store.VM) error {
			if err := checkPromotable(vm); err != nil {
				return err
			}
			report(opstate.Progress{Phase: "copy", Message: "disk of vm " + vm.Name})
			out := m.images.stagingDir(im.ID) + "/rootfs.ext4"
			if _, err := vmdisk.Clone(ctx, m.layout.VMDisk(vm.ID), out); err != nil {
				return fmt.Errorf("copy the disk of vm %q: %w", vm.Name, err)
			}
			crashPoint("promote.copied")
			im.SizeBytes = vm.DiskBytes
			var err error
			done, err = m.images.commit(ctx, im, out)
			return err
		})
		return done, err
	})
}

// checkPromotable: only a stopped VM's disk is consistent, and only a
// file-backed disk can be copied today.
func checkPromotable(vm store.VM) error {
	if vm.State != store.VMStopped {
		return fmt.Errorf("cannot promote vm %q: it is %s; stop it first: %w", vm.Name, vm.State, errdefs.ErrFailedPrecondition)
	}
	if vm.DiskStrategy == string(vmdisk.StrategyDMSnap) {
		return fmt.Errorf("cannot promote vm %q: promoting a device-mapper snapshot disk is not supported yet: %w", vm.Name, errdefs.ErrFailedPrecondition)
	}
	return nil
}
