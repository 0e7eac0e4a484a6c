package daemon

import (
	"context"
	"fmt"
	"os"

	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

func (m *imageManager) toRPC(ctx context.Context, im store.Image) rpc.Image {
	out := rpc.Image{
		ID:          im.ID,
		Name:        im.Name,
		State:       string(im.State),
		StateReason: im.StateReason,
		Source:      string(im.SourceKind),
		SourceRef:   im.SourceRef,
		Digest:      im.ManifestDigest,
		SizeBytes:   im.SizeBytes,
		Config: rpc.ImageConfig{
			Entrypoint: im.Config.Entrypoint,
			Cmd:        im.Config.Cmd,
			Env:        im.Config.Env,
			WorkingDir: im.Config.WorkingDir,
			User:       im.Config.User,
		},
		CreatedAt: im.CreatedAt,
	}
	if im.State == store.ImageReady {
		out.Path = m.layout.ImageRootfs(im.ID)
	}
	if im.DefaultKernelID != "" {
		if k, err := m.store.GetKernel(ctx, im.DefaultKernelID); err == nil {
			out.DefaultKernel = k.Name
		}
	}
	return out
}

func (m *imageManager) list(ctx context.Context, call *rpc.Call) (rpc.ImageListResult, error) {
	if err := call.Bind(&noParams{}); err != nil {
		return rpc.ImageListResult{}, err
	}
	ims, err := m.store.ListImages(ctx)
	if err != nil {
		return rpc.ImageListResult{}, err
	}
	out := rpc.ImageListResult{Images: make([]rpc.Image, 0, len(ims))}
	for _, im := range ims {
		out.Images = append(out.Images, m.toRPC(ctx, im))
	}
	return out, nil
}

func bindRef(call *rpc.Call) (string, error) {
	var p rpc.NameRef
	if err := call.Bind(&p); err != nil {
		return "", err
	}
	if p.Ref == "" {
		return "", rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: ref is required", call.Method)
	}
	return p.Ref, nil
}

func (m *imageManager) show(ctx context.Context, call *rpc.Call) (rpc.Image, error) {
	ref, err := bindRef(call)
	if err != nil {
		return rpc.Image{}, err
	}
	im, err := m.store.ResolveImage(ctx, ref)
	if err != nil {
		return rpc.Image{}, err
	}
	out := m.toRPC(ctx, im)
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return rpc.Image{}, err
	}
	for _, vm := range vms {
		if vm.ImageID == im.ID {
			out.UsedBy = append(out.UsedBy, vm.Name)
		}
	}
	return out, nil
}

// remove deletes an image: refused while a VM uses it (naming the VMs)
// or while it is still being made.
func (m *imageManager) remove(ctx context.Context, call *rpc.Call) (struct{}, error) {
	ref, err := bindRef(call)
	if err != nil {
		return struct{}{}, err
	}
	m.imageOpsMu.Lock()
	defer m.imageOpsMu.Unlock()
	im, err := m.store.ResolveImage(ctx, ref)
	if err != nil {
		return struct{}{}, err
	}
	if im.State == store.ImagePending {
		return struct{}{}, fmt.Errorf("image %q is still being made: cancel its operation (banger op ls, banger op cancel) first: %w", im.Name, errdefs.ErrFailedPrecondition)
	}
	if err := m.store.DeleteImage(ctx, im.ID); err != nil {
		return struct{}{}, err
	}
	if err := os.RemoveAll(m.layout.ImageDir(im.ID)); err != nil {
		m.logger.Error("remove image files", "image", im.Name, "err", err)
		return struct{}{}, fmt.Errorf("image %q was removed from the store but its files were not: %w", im.Name, err)
	}
	m.logger.Info("image removed", "image", im.Name, "id", im.ID)
	return struct{}{}, nil
}
