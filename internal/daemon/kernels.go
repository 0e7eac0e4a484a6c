package daemon

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"banger/internal/daemon/imagemgr"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// Bounds on what a kernel import accepts.
const (
	maxKernelBytes = 256 << 20
	maxInitrdBytes = 512 << 20
)

// importKernel copies a vmlinux (and optional initrd), read with the
// caller's permissions, into kernels/ID/.
func (m *imageManager) importKernel(ctx context.Context, call *rpc.Call, files callerFiles) (rpc.Kernel, error) {
	var p rpc.KernelImportParams
	if err := call.Bind(&p); err != nil {
		return rpc.Kernel{}, err
	}
	if p.Vmlinux == "" || p.Name == "" {
		return rpc.Kernel{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: vmlinux and name are required", call.Method)
	}
	open := func(path string) (io.ReadCloser, error) {
		s, err := files.open(ctx, call.Peer, path)
		if err != nil {
			return nil, err
		}
		if s.IsDir {
			s.Close()
			return nil, fmt.Errorf("%s is a directory, not a file: %w", path, errdefs.ErrInvalidArgument)
		}
		return s, nil
	}
	k := store.Kernel{Name: p.Name, Source: p.Vmlinux}
	return m.addKernel(ctx, k, p.Default, func(dir string) (bool, error) {
		vm, err := open(p.Vmlinux)
		if err != nil {
			return false, err
		}
		// The copy stops when the request ends (the caller went away).
		err = copyBounded(filepath.Join(dir, "vmlinux"), readerWithContext(ctx, vm), maxKernelBytes, p.Vmlinux)
		if cerr := vm.Close(); err == nil {
			err = cerr
		}
		if err != nil || p.Initrd == "" {
			return false, err
		}
		rd, err := open(p.Initrd)
		if err != nil {
			return false, err
		}
		err = copyBounded(filepath.Join(dir, "initrd.img"), readerWithContext(ctx, rd), maxInitrdBytes, p.Initrd)
		if cerr := rd.Close(); err == nil {
			err = cerr
		}
		return true, err
	})
}

// addKernel fills a staging directory with fill, checks the vmlinux, then
// moves it into kernels/ID and records the kernel (and the default).
func (m *imageManager) addKernel(ctx context.Context, k store.Kernel, makeDefault bool, fill func(dir string) (hasInitrd bool, err error)) (rpc.Kernel, error) {
	if err := imagemgr.ValidateName(k.Name); err != nil {
		return rpc.Kernel{}, err
	}
	if _, err := m.store.GetKernelByName(ctx, k.Name); err == nil {
		return rpc.Kernel{}, fmt.Errorf("kernel name %q is taken: remove that kernel or choose another --name: %w", k.Name, errdefs.ErrAlreadyExists)
	}
	k.ID = store.NewID()
	staging := filepath.Join(m.layout.StagingDir(), "kernel-"+k.ID)
	if err := os.Mkdir(staging, 0o755); err != nil {
		return rpc.Kernel{}, err
	}
	defer os.RemoveAll(staging)
	hasInitrd, err := fill(staging)
	if err != nil {
		return rpc.Kernel{}, err
	}
	k.HasInitrd = hasInitrd
	if k.Version, err = checkVmlinux(filepath.Join(staging, "vmlinux"), k.Source); err != nil {
		return rpc.Kernel{}, err
	}
	for _, f := range []string{"vmlinux", "initrd.img"} {
		if err := os.Chmod(filepath.Join(staging, f), 0o444); err != nil && !errors.Is(err, os.ErrNotExist) {
			return rpc.Kernel{}, err
		}
	}

	m.imageOpsMu.Lock()
	defer m.imageOpsMu.Unlock()
	// Files first, then the row: a crash in between leaves a directory
	// no row owns, which the next start removes (sweepOrphanKernels).
	if err := os.Rename(staging, m.layout.KernelDir(k.ID)); err != nil {
		return rpc.Kernel{}, fmt.Errorf("move kernel into place: %w", err)
	}
	var got store.Kernel
	err = m.store.WithTx(ctx, func(tx *store.Tx) error {
		var err error
		if got, err = tx.CreateKernel(ctx, k); err != nil {
			return err
		}
		if makeDefault {
			if err := tx.SetDefaultKernel(ctx, got.ID); err != nil {
				return err
			}
			got.Default = true
		}
		return nil
	})
	if err != nil {
		os.RemoveAll(m.layout.KernelDir(k.ID))
		return rpc.Kernel{}, err
	}
	m.logger.Info("kernel added", "kernel", got.Name, "id", got.ID, "version", got.Version)
	return m.kernelToRPC(ctx, got, false), nil
}

// copyBounded copies r into a new file at path, refusing more than max
// bytes.
func copyBounded(path string, r io.Reader, max int64, label string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", label, err)
	}
	if n > max {
		return fmt.Errorf("%s is larger than %d MiB: %w", label, max>>20, errdefs.ErrInvalidArgument)
	}
	if n == 0 {
		return fmt.Errorf("%s is empty: %w", label, errdefs.ErrInvalidArgument)
	}
	return nil
}

var linuxVersion = regexp.MustCompile(`Linux version ([0-9][^ \x00]{0,63})`)

// needVmlinux says what checkVmlinux wants and how to get it.
const needVmlinux = "banger needs an uncompressed x86-64 vmlinux (an ELF executable, not a bzImage or a compressed kernel; scripts/guest-kernel.sh makes one)"

// checkVmlinux requires an uncompressed x86-64 ELF executable (the format
// Firecracker boots; QEMU microvm boots it too) and returns the kernel
// version it finds in it, if any. source names the file in errors.
func checkVmlinux(path, source string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s is not an ELF file: %s: %w", source, needVmlinux, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return "", fmt.Errorf("%s is an ELF %s %s %s: %s: %w", source, f.Class, f.Machine, f.Type, needVmlinux, errdefs.ErrInvalidArgument)
	}
	for _, s := range f.Sections {
		if s.Name != ".rodata" {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(s.Open(), 64<<20))
		if err != nil {
			break
		}
		if i := bytes.Index(data, []byte("Linux version ")); i >= 0 {
			if mm := linuxVersion.FindSubmatch(data[i:min(len(data), i+128)]); mm != nil {
				return string(mm[1]), nil
			}
		}
	}
	return "", nil
}

// sweepOrphanKernels removes kernel directories no row owns (a crash
// between moving the files and recording the row).
func (m *imageManager) sweepOrphanKernels(ctx context.Context) error {
	entries, err := os.ReadDir(m.layout.KernelsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := m.store.GetKernel(ctx, e.Name()); errdefs.IsNotFound(err) {
			if err := os.RemoveAll(m.layout.KernelDir(e.Name())); err != nil {
				return err
			}
			m.logger.Warn("removed a kernel directory no record owns", "dir", e.Name())
		}
	}
	return nil
}

func (m *imageManager) kernelToRPC(ctx context.Context, k store.Kernel, withUsers bool) rpc.Kernel {
	out := rpc.Kernel{ID: k.ID, Name: k.Name, Version: k.Version, Source: k.Source, HasInitrd: k.HasInitrd, Default: k.Default, CreatedAt: k.CreatedAt}
	if fi, err := os.Stat(m.layout.KernelImage(k.ID)); err == nil {
		out.SizeBytes = fi.Size()
	}
	if !withUsers {
		return out
	}
	if ims, err := m.store.ListImages(ctx); err == nil {
		for _, im := range ims {
			if im.DefaultKernelID == k.ID {
				out.UsedBy = append(out.UsedBy, "image "+im.Name)
			}
		}
	}
	if vms, err := m.store.ListVMs(ctx); err == nil {
		for _, vm := range vms {
			if vm.KernelID == k.ID {
				out.UsedBy = append(out.UsedBy, "vm "+vm.Name)
			}
		}
	}
	return out
}

func (m *imageManager) listKernels(ctx context.Context, call *rpc.Call) (rpc.KernelListResult, error) {
	if err := call.Bind(&noParams{}); err != nil {
		return rpc.KernelListResult{}, err
	}
	ks, err := m.store.ListKernels(ctx)
	if err != nil {
		return rpc.KernelListResult{}, err
	}
	out := rpc.KernelListResult{Kernels: make([]rpc.Kernel, 0, len(ks))}
	for _, k := range ks {
		out.Kernels = append(out.Kernels, m.kernelToRPC(ctx, k, false))
	}
	return out, nil
}

func (m *imageManager) showKernel(ctx context.Context, call *rpc.Call) (rpc.Kernel, error) {
	ref, err := bindRef(call)
	if err != nil {
		return rpc.Kernel{}, err
	}
	k, err := m.store.ResolveKernel(ctx, ref)
	if err != nil {
		return rpc.Kernel{}, err
	}
	return m.kernelToRPC(ctx, k, true), nil
}

// removeKernel deletes a kernel: refused while an image or VM uses it.
func (m *imageManager) removeKernel(ctx context.Context, call *rpc.Call) (struct{}, error) {
	ref, err := bindRef(call)
	if err != nil {
		return struct{}{}, err
	}
	m.imageOpsMu.Lock()
	defer m.imageOpsMu.Unlock()
	k, err := m.store.ResolveKernel(ctx, ref)
	if err != nil {
		return struct{}{}, err
	}
	if err := m.store.DeleteKernel(ctx, k.ID); err != nil {
		return struct{}{}, err
	}
	if err := os.RemoveAll(m.layout.KernelDir(k.ID)); err != nil {
		return struct{}{}, fmt.Errorf("kernel %q was removed from the store but its files were not: %w", k.Name, err)
	}
	return struct{}{}, nil
}
