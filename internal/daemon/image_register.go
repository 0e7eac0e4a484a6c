package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// registerImage copies an existing ext4 into banger's root (with the
// caller's permissions) and injects the guest init into it without
// mounting it.
func (m *imageManager) registerImage(ctx context.Context, call *rpc.Call, files callerFiles) (rpc.OpStarted, error) {
	var p rpc.ImageRegisterParams
	if err := call.Bind(&p); err != nil {
		return rpc.OpStarted{}, err
	}
	if p.Rootfs == "" || p.Name == "" {
		return rpc.OpStarted{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: rootfs and name are required", call.Method)
	}
	im := store.Image{Name: p.Name, SourceKind: store.SourceRegister, SourceRef: p.Rootfs}
	if p.Kernel != "" {
		k, err := m.store.ResolveKernel(ctx, p.Kernel)
		if err != nil {
			return rpc.OpStarted{}, err
		}
		im.DefaultKernelID = k.ID
	}
	src, err := files.open(ctx, call.Peer, p.Rootfs)
	if err != nil {
		return rpc.OpStarted{}, err
	}
	if src.IsDir {
		src.Close()
		return rpc.OpStarted{}, fmt.Errorf("%s is a directory; register takes an ext4 file (use `banger image import` for a directory): %w", p.Rootfs, errdefs.ErrInvalidArgument)
	}
	im, err = m.reserve(ctx, im)
	if err != nil {
		src.Close()
		return rpc.OpStarted{}, err
	}
	started, err := m.runImageOp(ctx, rpc.MethodImageRegister, im, func(ctx context.Context, report func(opstate.Progress)) (store.Image, error) {
		defer src.Close()
		out := m.stagingDir(im.ID) + "/rootfs.ext4"
		size, err := copySparse(ctx, out, src, func(n int64) {
			report(opstate.Progress{Phase: "copy", Done: n, Unit: "bytes"})
		})
		if err != nil {
			return store.Image{}, err
		}
		if err := src.Close(); err != nil {
			return store.Image{}, err
		}
		if err := checkExt4(out); err != nil {
			return store.Image{}, fmt.Errorf("%s: %w", p.Rootfs, err)
		}
		report(opstate.Progress{Phase: "finalize", Message: "injecting the guest init"})
		if err := m.checkInit(m.initBinary); err != nil {
			return store.Image{}, err
		}
		if err := imagemgr.InjectInitExt4(ctx, m.runner, out, m.initBinary); err != nil {
			return store.Image{}, err
		}
		im.SizeBytes = size
		return m.commit(ctx, im, out)
	})
	if err != nil {
		src.Close()
	}
	return started, err
}

// checkExt4 looks for the ext2/3/4 superblock magic (0xEF53 at byte 1080).
func checkExt4(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1080); err != nil {
		return fmt.Errorf("not an ext4 filesystem (too short): %w", errdefs.ErrInvalidArgument)
	}
	if binary.LittleEndian.Uint16(magic[:]) != 0xEF53 {
		return fmt.Errorf("not an ext4 filesystem (no ext superblock magic): %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// copySparse copies r into a new file at path, leaving all-zero 64 KiB
// blocks as holes, and returns the bytes copied.
func copySparse(ctx context.Context, path string, r io.Reader, progress func(int64)) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := io.ReadFull(r, buf)
		if m > 0 {
			if isZero(buf[:m]) {
				if _, err := f.Seek(int64(m), io.SeekCurrent); err != nil {
					return n, err
				}
			} else if _, err := f.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
			if n%(16<<20) == 0 {
				progress(n)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return n, rerr
		}
	}
	if err := f.Truncate(n); err != nil {
		return n, err
	}
	progress(n)
	return n, f.Close()
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
