package daemon

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

const maxBundleBytes = 1 << 30

// bundleFetcher downloads a kernel bundle URL into w, reporting bytes done
// and the total when known. The daemon's seam `bundleFetch` is one of
// these; tests replace it to inject faults.
type bundleFetcher func(ctx context.Context, peer rpc.PeerCred, rawURL string, w io.Writer, progress func(done, total int64)) error

// fetchKernel downloads a vmlinux, or a tar bundle with a vmlinux and an
// optional initrd, verifies its checksum when given, and adds the kernel.
func (m *imageManager) fetchKernel(ctx context.Context, call *rpc.Call, fetch bundleFetcher) (rpc.OpStarted, error) {
	var p rpc.KernelFetchParams
	if err := call.Bind(&p); err != nil {
		return rpc.OpStarted{}, err
	}
	if p.URL == "" || p.Name == "" {
		return rpc.OpStarted{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: url and name are required", call.Method)
	}
	u, err := url.Parse(p.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") {
		return rpc.OpStarted{}, fmt.Errorf("kernel URL %q: want an http, https or file URL: %w", p.URL, errdefs.ErrInvalidArgument)
	}
	if u.Scheme == "file" && ((u.Host != "" && u.Host != "localhost") || !path.IsAbs(u.Path)) {
		return rpc.OpStarted{}, fmt.Errorf("kernel URL %q: a file URL names an absolute path on this host (file:///path/to/vmlinux): %w", p.URL, errdefs.ErrInvalidArgument)
	}
	want := strings.ToLower(strings.TrimPrefix(p.SHA256, "sha256:"))
	if want != "" {
		if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
			return rpc.OpStarted{}, fmt.Errorf("--sha256 %q is not 64 hex digits: %w", p.SHA256, errdefs.ErrInvalidArgument)
		}
	}
	if err := imagemgr.ValidateName(p.Name); err != nil {
		return rpc.OpStarted{}, err
	}
	if _, err := m.store.GetKernelByName(ctx, p.Name); err == nil {
		return rpc.OpStarted{}, fmt.Errorf("kernel name %q is taken: remove that kernel or choose another --name: %w", p.Name, errdefs.ErrAlreadyExists)
	}
	peer := call.Peer
	id, err := m.startOp(ctx, rpc.MethodKernelFetch, p.Name, func(ctx context.Context, report func(opstate.Progress)) (any, error) {
		dl, err := os.CreateTemp(m.layout.StagingDir(), "bundle-*")
		if err != nil {
			return nil, err
		}
		defer os.Remove(dl.Name())
		defer dl.Close()
		h := sha256.New()
		lim := &limitWriter{w: io.MultiWriter(dl, h), max: maxBundleBytes}
		err = fetch(ctx, peer, p.URL, lim, func(done, total int64) {
			report(opstate.Progress{Phase: "download", Done: done, Total: total, Unit: "bytes"})
		})
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", p.URL, err)
		}
		got := hex.EncodeToString(h.Sum(nil))
		if want != "" && got != want {
			return nil, fmt.Errorf("%s has sha256 %s, not %s: %w", p.URL, got, want, errdefs.ErrInvalidArgument)
		}
		report(opstate.Progress{Phase: "unpack"})
		k, err := m.addKernel(ctx, store.Kernel{Name: p.Name, Source: p.URL}, p.Default, func(dir string) (bool, error) {
			hasInitrd, err := unpackBundle(dl.Name(), dir)
			if err != nil {
				return false, fmt.Errorf("%s: %w", p.URL, err)
			}
			return hasInitrd, nil
		})
		if err != nil {
			return nil, err
		}
		return k, nil
	})
	if err != nil {
		return rpc.OpStarted{}, err
	}
	return rpc.OpStarted{OpID: id}, nil
}

// unpackBundle puts vmlinux (and initrd.img) into dir from a download that
// is either a vmlinux itself or a tar (plain, gzip or zstd) holding a file
// named vmlinux and optionally one named initrd, initrd.img or
// initramfs*. Only those regular files are written; everything else in the
// tar is ignored, and names are matched by their last element only.
func unpackBundle(file, dir string) (hasInitrd bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && string(magic[:]) == "\x7fELF" {
		f.Seek(0, io.SeekStart)
		return false, copyBounded(filepath.Join(dir, "vmlinux"), f, maxKernelBytes, "vmlinux")
	}
	f.Seek(0, io.SeekStart)
	r, err := imagemgr.OpenLayer(f)
	if err != nil {
		return false, fmt.Errorf("bundle is neither a vmlinux nor a tar: %w", err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	var haveKernel bool
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, fmt.Errorf("bundle is neither a vmlinux nor a readable tar: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		base := path.Base(hdr.Name)
		switch {
		case base == "vmlinux" && !haveKernel:
			if err := copyBounded(filepath.Join(dir, "vmlinux"), tr, maxKernelBytes, "bundle's vmlinux"); err != nil {
				return false, err
			}
			haveKernel = true
		case (base == "initrd" || base == "initrd.img" || strings.HasPrefix(base, "initramfs")) && !hasInitrd:
			if err := copyBounded(filepath.Join(dir, "initrd.img"), tr, maxInitrdBytes, "bundle's initrd"); err != nil {
				return false, err
			}
			hasInitrd = true
		}
	}
	if !haveKernel {
		return false, fmt.Errorf("bundle has no file named vmlinux: %w", errdefs.ErrInvalidArgument)
	}
	return hasInitrd, nil
}

// limitWriter fails once more than max bytes were written.
type limitWriter struct {
	w   io.Writer
	n   int64
	max int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n+int64(len(p)) > l.max {
		return 0, fmt.Errorf("download is larger than %d MiB: %w", l.max>>20, errdefs.ErrInvalidArgument)
	}
	l.n += int64(len(p))
	return l.w.Write(p)
}

// fetchBundle is the real bundleFetch: http(s) with the daemon's client,
// file:// read with the caller's permissions.
func (files callerFiles) fetchBundle(ctx context.Context, peer rpc.PeerCred, rawURL string, w io.Writer, progress func(done, total int64)) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	var body io.Reader
	var total int64
	switch u.Scheme {
	case "file":
		s, err := files.open(ctx, peer, u.Path)
		if err != nil {
			return err
		}
		defer s.Close()
		if s.IsDir {
			return fmt.Errorf("%s is a directory: %w", u.Path, errdefs.ErrInvalidArgument)
		}
		body = s
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return err
		}
		client := &http.Client{Timeout: 30 * time.Minute}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %s", resp.Status) // the caller names the URL
		}
		body, total = resp.Body, max(resp.ContentLength, 0)
	default:
		return fmt.Errorf("unsupported URL scheme %q: %w", u.Scheme, errdefs.ErrInvalidArgument)
	}
	buf := make([]byte, 256<<10)
	var done int64
	last := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
			if time.Since(last) >= progressInterval {
				progress(done, total)
				last = time.Now()
			}
		}
		if rerr == io.EOF {
			progress(done, total)
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
