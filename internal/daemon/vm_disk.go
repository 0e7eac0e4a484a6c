package daemon

import (
	"context"
	"fmt"
	"os"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/vmdisk"
	"banger/internal/errdefs"
	"banger/internal/store"
)

// diskStrategy is the config's disk choice applied to this host: dmsnap
// where device-mapper snapshots work (auto or asked for), else a reflink
// clone or a sparse copy, whichever vmdisk.Clone manages.
func (m *vmManager) diskStrategy(ctx context.Context) (vmdisk.Strategy, error) {
	switch m.config.Disk {
	case "dmsnap":
		if err := dmsnap.Available(ctx, m.runner); err != nil {
			return "", fmt.Errorf("disk = \"dmsnap\" but %v: %w", err, errdefs.ErrUnavailable)
		}
		return vmdisk.StrategyDMSnap, nil
	case "auto":
		if dmsnap.Available(ctx, m.runner) == nil {
			return vmdisk.StrategyDMSnap, nil
		}
	}
	return "", nil // Clone decides between reflink and copy
}

// makeDisk gives the VM its copy-on-write disk and records where it is.
func (m *vmManager) makeDisk(ctx context.Context, id string, im store.Image, h *vmHandles) error {
	s, err := m.diskStrategy(ctx)
	if err != nil {
		return err
	}
	if s == vmdisk.StrategyDMSnap {
		cow := m.layout.VMCOW(id)
		if err := dmsnap.MakeCOW(cow, dmsnap.MinCOWSize(im.SizeBytes)); err != nil {
			return err
		}
		dh, err := dmsnap.Create(ctx, m.runner, dmsnap.Spec{VMID: id, Image: m.layout.ImageRootfs(im.ID), COW: cow})
		if err != nil {
			os.Remove(cow)
			return err
		}
		h.DiskPath, h.DiskKind, h.DMSnap = dh.Device, string(vmdisk.StrategyDMSnap), &dh
		return nil
	}
	if config := m.config.Disk; config == "reflink" {
		if err := vmdisk.Reflink(m.layout.ImageRootfs(im.ID), h.DiskPath); err != nil {
			return fmt.Errorf("disk = \"reflink\": %w", err)
		}
		h.DiskKind = string(vmdisk.StrategyReflink)
		return nil
	}
	got, err := vmdisk.Clone(ctx, m.layout.ImageRootfs(im.ID), h.DiskPath)
	if err != nil {
		return err
	}
	h.DiskKind = string(got)
	return nil
}

// releaseDisk undoes makeDisk's device-mapper objects; files go with the
// VM's directory.
func (m *vmManager) releaseDisk(ctx context.Context, id string, h *vmHandles) error {
	if h == nil || h.DMSnap == nil {
		return nil
	}
	return dmsnap.Remove(ctx, m.runner, *h.DMSnap, m.layout.VMCOW(id))
}
