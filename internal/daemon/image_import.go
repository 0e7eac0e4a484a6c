package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/rpc"
	"banger/internal/store"
)

// importImage makes an image from a rootfs tarball (plain, gzip or zstd)
// or a directory, read with the caller's permissions and applied with the
// same safety rules as a pulled layer.
func (m *imageManager) importImage(ctx context.Context, call *rpc.Call, files callerFiles) (rpc.OpStarted, error) {
	var p rpc.ImageImportParams
	if err := call.Bind(&p); err != nil {
		return rpc.OpStarted{}, err
	}
	if p.Path == "" || p.Name == "" {
		return rpc.OpStarted{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: path and name are required", call.Method)
	}
	// Open before reserving the name, so a missing or unreadable path
	// fails the call itself and leaves no trace.
	src, err := files.open(ctx, call.Peer, p.Path)
	if err != nil {
		return rpc.OpStarted{}, err
	}
	im, err := m.reserve(ctx, store.Image{Name: p.Name, SourceKind: store.SourceImport, SourceRef: p.Path})
	if err != nil {
		src.Close()
		return rpc.OpStarted{}, err
	}
	started, err := m.runImageOp(ctx, rpc.MethodImageImport, im, func(ctx context.Context, report func(opstate.Progress)) (store.Image, error) {
		defer src.Close()
		root := m.stagingDir(im.ID) + "/rootfs"
		if err := os.Mkdir(root, 0o755); err != nil {
			return store.Image{}, err
		}
		var n atomic.Int64
		counted := &countingReader{r: src, n: &n, report: func(done int64) {
			report(opstate.Progress{Phase: "unpack", Done: done, Unit: "bytes"})
		}}
		var stream io.Reader = counted
		if !src.IsDir {
			layer, err := imagemgr.OpenLayer(counted)
			if err != nil {
				return store.Image{}, fmt.Errorf("%s: %w", p.Path, err)
			}
			defer layer.Close()
			stream = layer
		}
		fl, err := imagemgr.NewFlattener(root)
		if err != nil {
			return store.Image{}, err
		}
		if _, err := fl.ApplyLayer(readerWithContext(ctx, stream), p.Path); err != nil {
			// A stream its source cut short (the caller's reader met a
			// file in the directory it may not read) is explained by
			// the source's error, not by the truncated tar.
			if cerr := src.Close(); cerr != nil {
				return store.Image{}, cerr
			}
			return store.Image{}, err
		}
		if err := fl.Finish(); err != nil {
			return store.Image{}, err
		}
		if err := src.Close(); err != nil {
			return store.Image{}, err
		}
		report(opstate.Progress{Phase: "finalize", Message: "building ext4"})
		out := m.stagingDir(im.ID) + "/rootfs.ext4"
		size, err := m.finalizePulledRootfs(ctx, root, imagemgr.ImageConfig{}, out)
		if err != nil {
			return store.Image{}, err
		}
		crashPoint("import.built")
		im.SizeBytes = size
		return m.commit(ctx, im, out)
	})
	if err != nil {
		src.Close()
	}
	return started, err
}

// countingReader reports bytes read, at most every progressInterval.
type countingReader struct {
	r      io.Reader
	n      *atomic.Int64
	report func(int64)
	ticks  int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	total := c.n.Add(int64(n))
	if c.ticks++; c.ticks%256 == 0 || err != nil {
		c.report(total)
	}
	return n, err
}

// readerWithContext fails reads once ctx ends, so a cancelled op stops
// consuming its input.
func readerWithContext(ctx context.Context, r io.Reader) io.Reader {
	return ctxReader{ctx: ctx, r: r}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
