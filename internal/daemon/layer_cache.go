package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"banger/internal/errdefs"
	"banger/internal/layout"
)

// layerCache keeps compressed layer blobs under ROOT/layers/ALG/HEX, shared
// by every image. Concurrent requests for one digest share one download.
type layerCache struct {
	layout layout.Layout

	// mu guards inflight. Leaf lock: held only to look for the cached
	// blob (one stat) and to find, add or drop an entry.
	mu       sync.Mutex
	inflight map[string]*layerFetch // by digest; guarded by mu
}

// layerFetch is one download in progress.
type layerFetch struct {
	done    chan struct{} // closed when err is set
	err     error
	written atomic.Int64 // bytes so far, for waiters' progress
}

func newLayerCache(l layout.Layout) *layerCache {
	return &layerCache{layout: l, inflight: make(map[string]*layerFetch)}
}

// validDigest accepts only "sha256:" and 64 lowercase hex digits: digests
// come from registries and become file names.
func validDigest(d string) error {
	alg, h, ok := cutDigest(d)
	if !ok || alg != "sha256" || len(h) != 64 {
		return fmt.Errorf("digest %q is not sha256:<64 hex>: %w", d, errdefs.ErrInvalidArgument)
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("digest %q is not sha256:<64 hex>: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func cutDigest(d string) (alg, hex string, ok bool) {
	for i := 0; i < len(d); i++ {
		if d[i] == ':' {
			return d[:i], d[i+1:], true
		}
	}
	return "", "", false
}

// Path is where digest's blob lives once cached.
func (c *layerCache) Path(digest string) string { return c.layout.LayerBlob(digest) }

// Ensure makes sure the blob is cached, downloading it with open when it
// is not. progress sees the bytes downloaded so far (for a download another
// pull started, too). It reports whether the blob was already cached.
func (c *layerCache) Ensure(ctx context.Context, digest string, size int64, open func(context.Context) (io.ReadCloser, error), progress func(int64)) (cached bool, err error) {
	if err := validDigest(digest); err != nil {
		return false, err
	}
	if size < 0 {
		return false, fmt.Errorf("layer %s has negative size %d: %w", digest, size, errdefs.ErrInvalidArgument)
	}
	for {
		c.mu.Lock()
		// Checked under mu: a download renames its blob into place before
		// it drops its inflight entry, so a blob that is not there yet has
		// a download running, or none. (Checked before taking mu, a
		// download could finish in between and this call start another.)
		if fi, err := os.Stat(c.Path(digest)); err == nil && fi.Size() == size {
			c.mu.Unlock()
			return true, nil
		}
		f, running := c.inflight[digest]
		if !running {
			f = &layerFetch{done: make(chan struct{})}
			c.inflight[digest] = f
		}
		c.mu.Unlock()

		if !running {
			f.err = c.download(ctx, digest, size, open, func(n int64) {
				f.written.Store(n)
				progress(n)
			})
			c.mu.Lock()
			delete(c.inflight, digest)
			c.mu.Unlock()
			close(f.done)
			return false, f.err
		}
		if err := c.wait(ctx, f, progress); err != nil {
			return false, err
		}
		if f.err == nil {
			return false, nil
		}
		// The other download failed; if it was only cancelled (its pull
		// went away) and we still want the blob, try again ourselves.
		if !errors.Is(f.err, context.Canceled) {
			return false, f.err
		}
	}
}

func (c *layerCache) wait(ctx context.Context, f *layerFetch, progress func(int64)) error {
	tick := newTicker()
	defer tick.Stop()
	for {
		select {
		case <-f.done:
			progress(f.written.Load())
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			progress(f.written.Load())
		}
	}
}

// download streams the blob into a temporary file in staging (swept at
// start-up, so a crash leaves nothing), checks its size and digest, and
// renames it into place. A registry that sends more or other bytes than
// the manifest promised is refused.
func (c *layerCache) download(ctx context.Context, digest string, size int64, open func(context.Context) (io.ReadCloser, error), progress func(int64)) (err error) {
	rc, err := open(ctx)
	if err != nil {
		return fmt.Errorf("fetch layer %s: %w", digest, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(c.layout.StagingDir(), "layer-*")
	if err != nil {
		return fmt.Errorf("cache layer %s: %w", digest, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(tmp, h)
	buf := make([]byte, 256<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, rerr := rc.Read(buf)
		if m > 0 {
			n += int64(m)
			if n > size {
				return fmt.Errorf("layer %s: registry sent more than the %d bytes the manifest declares: %w", digest, size, errdefs.ErrInvalidArgument)
			}
			if _, err := w.Write(buf[:m]); err != nil {
				return fmt.Errorf("cache layer %s: %w", digest, err)
			}
			progress(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("download layer %s: %w", digest, rerr)
		}
	}
	if n != size {
		return fmt.Errorf("layer %s: got %d bytes, the manifest declares %d: %w", digest, n, size, errdefs.ErrInvalidArgument)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("layer %s: content has digest %s: %w", digest, got, errdefs.ErrInvalidArgument)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cache layer %s: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cache layer %s: %w", digest, err)
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return err
	}
	dst := c.Path(digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o711); err != nil {
		return fmt.Errorf("cache layer %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("cache layer %s: %w", digest, err)
	}
	return nil
}

// Drop removes the cached blobs of digests (those not there are skipped).
// A pull that has one open reads on; one about to open it fails and can
// be retried, which downloads it again.
func (c *layerCache) Drop(digests []string) {
	for _, d := range digests {
		if validDigest(d) != nil {
			continue
		}
		c.mu.Lock()
		os.Remove(c.Path(d))
		c.mu.Unlock()
	}
}
