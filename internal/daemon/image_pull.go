package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// Limits on what a registry may make the daemon hold or do.
const (
	maxLayers      = 256
	maxConfigBytes = 4 << 20
)

// pullRequest is what a pull needs beyond the image row.
type pullRequest struct {
	Ref  string
	Auth *rpc.RegistryAuth
	// OnFetched, if set, hears of each layer this pull downloaded into
	// the cache (not those it found there). Called from many goroutines.
	OnFetched func(digest string)
}

// pulledImage is what pullAndFlatten learned about the image.
type pulledImage struct {
	Digest string
	Config imagemgr.ImageConfig
}

// pull validates the request, reserves the name and starts the pull as an
// async operation; the caller follows it with op.watch.
func (m *imageManager) pull(ctx context.Context, call *rpc.Call) (rpc.OpStarted, error) {
	var p rpc.ImagePullParams
	if err := call.Bind(&p); err != nil {
		return rpc.OpStarted{}, err
	}
	if p.Ref == "" {
		return rpc.OpStarted{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: ref is required", call.Method)
	}
	ref, err := m.policy.parseRef(p.Ref)
	if err != nil {
		return rpc.OpStarted{}, err
	}
	if p.Name == "" {
		p.Name = imagemgr.DefaultName(ref.String())
	}
	im, err := m.reserve(ctx, store.Image{Name: p.Name, SourceKind: store.SourcePull, SourceRef: ref.String()})
	if err != nil {
		return rpc.OpStarted{}, err
	}
	var fetchedMu sync.Mutex
	var fetched []string // guarded by fetchedMu
	req := pullRequest{Ref: p.Ref, Auth: p.Auth, OnFetched: func(d string) {
		fetchedMu.Lock()
		fetched = append(fetched, d)
		fetchedMu.Unlock()
	}}
	return m.runImageOp(ctx, rpc.MethodImagePull, im, func(ctx context.Context, report func(opstate.Progress)) (_ store.Image, err error) {
		// A pull that filled the disk takes back the layers it added to
		// the cache: kept, they would leave the disk full (and the retry
		// failing the same way).
		defer func() {
			if errors.Is(err, syscall.ENOSPC) {
				fetchedMu.Lock()
				defer fetchedMu.Unlock()
				m.layers.Drop(fetched)
			}
		}()
		root := m.stagingDir(im.ID) + "/rootfs"
		if err := os.Mkdir(root, 0o755); err != nil {
			return store.Image{}, err
		}
		pulled, err := m.pullAndFlatten(ctx, req, root, report)
		if err != nil {
			return store.Image{}, err
		}
		crashPoint("pull.flattened")
		report(opstate.Progress{Phase: "finalize", Message: "building ext4"})
		out := m.stagingDir(im.ID) + "/rootfs.ext4"
		size, err := m.finalizePulledRootfs(ctx, root, pulled.Config, out)
		if err != nil {
			return store.Image{}, err
		}
		crashPoint("pull.built")
		im.ManifestDigest = pulled.Digest
		im.Config = storeConfig(pulled.Config)
		im.SizeBytes = size
		return m.commit(ctx, im, out)
	})
}

func storeConfig(c imagemgr.ImageConfig) store.ImageConfig {
	return store.ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User}
}

// pullAndFlattenRemote resolves ref (linux/amd64 from an index), downloads
// its layers into the cache (pull_concurrency at a time, shared with other
// pulls) and applies each, in order, as soon as it and those before it are
// there.
func (m *imageManager) pullAndFlattenRemote(ctx context.Context, req pullRequest, root string, report func(opstate.Progress)) (pulledImage, error) {
	report(opstate.Progress{Phase: "resolve", Message: req.Ref})
	ref, err := m.policy.parseRef(req.Ref)
	if err != nil {
		return pulledImage{}, err
	}
	// The registry requests run under this context too, so a layer that
	// fails (or a cancelled pull) stops the other layers' downloads at
	// once instead of waiting for them, stalled ones included; the layer
	// goroutines are awaited before returning.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(authFor(req.Auth)),
		remote.WithTransport(m.transport),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return pulledImage{}, fmt.Errorf("resolve %s: %w", req.Ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		return pulledImage{}, fmt.Errorf("%s: no linux/amd64 image: %w", req.Ref, err)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return pulledImage{}, fmt.Errorf("%s: read manifest: %w", req.Ref, err)
	}
	if manifest.Config.Size > maxConfigBytes {
		return pulledImage{}, fmt.Errorf("%s: image config is %d bytes, more than the %d banger accepts: %w", req.Ref, manifest.Config.Size, maxConfigBytes, errdefs.ErrInvalidArgument)
	}
	if n := len(manifest.Layers); n > maxLayers {
		return pulledImage{}, fmt.Errorf("%s: %d layers, more than the %d banger accepts: %w", req.Ref, n, maxLayers, errdefs.ErrInvalidArgument)
	}
	digest, err := img.Digest()
	if err != nil {
		return pulledImage{}, err
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return pulledImage{}, fmt.Errorf("%s: read image config: %w", req.Ref, err)
	}
	cfg, err := imagemgr.ConfigFromOCI(rawCfg)
	if err != nil {
		return pulledImage{}, fmt.Errorf("%s: %w", req.Ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return pulledImage{}, fmt.Errorf("%s: list layers: %w", req.Ref, err)
	}
	for i, l := range manifest.Layers {
		if strings.Contains(string(l.MediaType), "foreign") || len(l.URLs) > 0 {
			return pulledImage{}, fmt.Errorf("%s: layer %d (%s) is a foreign layer, which banger does not fetch: %w", req.Ref, i+1, l.Digest, errdefs.ErrInvalidArgument)
		}
		if err := validDigest(l.Digest.String()); err != nil {
			return pulledImage{}, fmt.Errorf("%s: layer %d: %w", req.Ref, i+1, err)
		}
	}

	tracker := newPullTracker(manifest.Layers, report)
	results := make([]chan error, len(layers))
	sem := make(chan struct{}, m.config.PullConcurrency)
	for i, l := range layers {
		results[i] = make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] <- ctx.Err()
				return
			}
			defer func() { <-sem }()
			d := manifest.Layers[i]
			tracker.set(i, "downloading", 0)
			cached, err := m.layers.Ensure(ctx, d.Digest.String(), d.Size, func(context.Context) (io.ReadCloser, error) {
				return l.Compressed()
			}, func(n int64) { tracker.set(i, "downloading", n) })
			switch {
			case err != nil:
				tracker.set(i, "failed", -1)
			case cached:
				tracker.set(i, "cached", d.Size)
			default:
				tracker.set(i, "downloaded", d.Size)
				if req.OnFetched != nil {
					req.OnFetched(d.Digest.String())
				}
			}
			results[i] <- err
		}()
	}

	fl, err := imagemgr.NewFlattener(root)
	if err != nil {
		return pulledImage{}, err
	}
	// Finish and a failed ApplyLayer release the root; a download that
	// fails or a cancel between layers does not.
	defer fl.Close()
	for i := range layers {
		if err := <-results[i]; err != nil {
			cancel()
			return pulledImage{}, fmt.Errorf("%s: layer %d: %w", req.Ref, i+1, err)
		}
		if i == 0 {
			crashPoint("pull.layers") // the first layer is in the cache
		}
		d := manifest.Layers[i]
		tracker.phase("flatten")
		tracker.set(i, "applying", d.Size)
		if err := m.applyCachedLayer(fl, d.Digest.String(), d.Digest.String()); err != nil {
			cancel()
			return pulledImage{}, fmt.Errorf("%s: %w", req.Ref, err)
		}
		tracker.set(i, "done", d.Size)
		if err := ctx.Err(); err != nil {
			return pulledImage{}, err
		}
	}
	if err := fl.Finish(); err != nil {
		return pulledImage{}, err
	}
	return pulledImage{Digest: digest.String(), Config: cfg}, nil
}

// applyCachedLayer applies the cached blob of digest, checking as it reads
// that the content still has that digest: the cache only ever renames a
// verified download into place, so a mismatch means the file changed on
// disk since. Such a blob is removed (the next pull downloads it again)
// and the pull fails saying so, rather than build an image from it.
func (m *imageManager) applyCachedLayer(fl *imagemgr.Flattener, digest, label string) error {
	path := m.layers.Path(digest)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open cached %s: %w", label, err)
	}
	defer f.Close()
	h := sha256.New()
	src := io.TeeReader(f, h)
	applyErr := func() error {
		r, err := imagemgr.OpenLayer(src)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		defer r.Close()
		_, err = fl.ApplyLayer(r, label)
		return err
	}()
	if _, err := io.Copy(io.Discard, src); err != nil {
		return fmt.Errorf("read cached %s: %w", label, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		rmErr := os.Remove(path)
		m.logger.Error("a cached layer no longer matches its digest; removed it", "layer", digest, "content", got, "remove_err", rmErr)
		return fmt.Errorf("cached layer %s is corrupt (its content has digest %s): removed it from the cache; pull again to download it: %w", digest, got, errdefs.ErrFailedPrecondition)
	}
	return applyErr
}

func shortDigest(d string) string {
	_, h, _ := cutDigest(d)
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// finalize injects the guest init and the files it needs, then builds the
// ext4 at out sized to the content plus the configured headroom.
func (m *imageManager) finalize(ctx context.Context, root string, cfg imagemgr.ImageConfig, out string) (int64, error) {
	t0 := time.Now()
	if err := m.checkInit(m.initBinary); err != nil {
		return 0, err
	}
	if err := imagemgr.PrepareGuestRoot(root, m.initBinary); err != nil {
		return 0, err
	}
	if err := imagemgr.WriteGuestConfig(root, cfg); err != nil {
		return 0, err
	}
	t1 := time.Now()
	content, inodes, err := imagemgr.TreeSize(root)
	if err != nil {
		return 0, err
	}
	headroom := int64(m.config.ImageHeadroomMiB) << 20
	size := imagemgr.Ext4Size(content, inodes, headroom)
	t2 := time.Now()
	if err := imagemgr.BuildExt4(ctx, m.runner, root, out, size, imagemgr.Ext4Inodes(inodes, headroom)); err != nil {
		return 0, err
	}
	m.logger.Debug("rootfs finalized", "guest_root", t1.Sub(t0), "size_walk", t2.Sub(t1), "mkfs", time.Since(t2),
		"content_bytes", content, "inodes", inodes, "ext4_bytes", size)
	return size, nil
}

// pullTracker turns per-layer byte counts into the op's progress, at most
// every progressInterval (and at each change of layer state). Every
// layer's goroutine calls set; the op's report function is not safe for
// concurrent use, so reports go out one at a time, and one made after a
// newer snapshot went out is dropped, so progress never goes backwards.
type pullTracker struct {
	report func(opstate.Progress)

	// reportMu is held across report, and so taken before whatever locks
	// report takes (opstate's); never while holding mu.
	reportMu sync.Mutex
	reported uint64 // guarded by reportMu: seq of the last snapshot reported

	mu    sync.Mutex // guards the fields below; leaf lock
	ph    string
	items []opstate.ItemProgress
	last  time.Time
	seq   uint64 // snapshots taken
}

func newPullTracker(layers []v1.Descriptor, report func(opstate.Progress)) *pullTracker {
	t := &pullTracker{report: report, ph: "download"}
	for _, l := range layers {
		t.items = append(t.items, opstate.ItemProgress{Name: shortDigest(l.Digest.String()), State: "waiting", Total: l.Size})
	}
	return t
}

func (t *pullTracker) phase(p string) {
	t.mu.Lock()
	t.ph = p
	t.mu.Unlock()
}

// set records layer i's state and bytes (n < 0 keeps the count).
func (t *pullTracker) set(i int, state string, n int64) {
	t.mu.Lock()
	changed := t.items[i].State != state
	t.items[i].State = state
	if n >= 0 {
		t.items[i].Done = n
	}
	now := time.Now()
	if !changed && now.Sub(t.last) < progressInterval {
		t.mu.Unlock()
		return
	}
	t.last = now
	t.seq++
	seq := t.seq
	p := opstate.Progress{Phase: t.ph, Unit: "bytes", Items: append([]opstate.ItemProgress(nil), t.items...)}
	for _, it := range t.items {
		p.Done += it.Done
		p.Total += it.Total
	}
	t.mu.Unlock()

	t.reportMu.Lock()
	defer t.reportMu.Unlock()
	if seq < t.reported {
		return // a newer snapshot already went out
	}
	t.reported = seq
	t.report(p)
}
