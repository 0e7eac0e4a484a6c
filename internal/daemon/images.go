package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"syscall"

	"banger/internal/config"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/errdefs"
	"banger/internal/layout"
	"banger/internal/rpc"
	"banger/internal/store"
	"banger/internal/system"
)

// imageManager is the image registry: pulls, imports, registrations and
// removals of images, and guest kernels. It is its own type with explicit
// dependencies rather than more methods on Daemon.
type imageManager struct {
	layout     layout.Layout
	config     config.Config
	store      *store.Store
	runner     system.Runner
	logger     *slog.Logger
	policy     registryPolicy
	transport  http.RoundTripper
	initBinary string // the banger binary, injected into every image as its init
	layers     *layerCache
	startOp    func(ctx context.Context, kind, target string, fn opFunc) (string, error)

	// imageOpsMu serialises image-registry mutations: reserving a name
	// (the pending row), committing an image (ready), removing one, and
	// the same for kernels. It is held only for those store and rename
	// steps, never across a download, a flatten or mkfs, so pulls run
	// concurrently. Lock order: after vmLocks[id] and workspaceLocks[id].
	imageOpsMu sync.Mutex

	// Injectable seams (tests replace them).
	//
	// pullAndFlatten fetches ref's layers into the cache and applies them
	// in order into root; it returns the image's manifest digest and
	// config.
	pullAndFlatten func(ctx context.Context, req pullRequest, root string, report func(opstate.Progress)) (pulledImage, error)
	// checkInit vets the init binary before it goes into an image;
	// checkStaticInit unless a test injects a stand-in init.
	checkInit func(path string) error
	// finalizePulledRootfs injects the guest init and the image's config
	// (/.banger/image.json, what the init runs as the entrypoint) into
	// root and builds the ext4 at out; it returns the image's size.
	finalizePulledRootfs func(ctx context.Context, root string, cfg imagemgr.ImageConfig, out string) (int64, error)
}

func newImageManager(d *Daemon, initBinary string) *imageManager {
	m := &imageManager{
		layout:     d.layout,
		config:     d.config,
		store:      d.store,
		runner:     d.runner,
		logger:     d.logger,
		policy:     registryPolicy{insecure: d.config.InsecureRegistries},
		initBinary: initBinary,
		layers:     newLayerCache(d.layout),
		startOp:    d.startOp,
	}
	m.transport = m.policy.transport(http.DefaultTransport)
	m.pullAndFlatten = m.pullAndFlattenRemote
	m.finalizePulledRootfs = m.finalize
	m.checkInit = checkStaticInit
	return m
}

// recover finishes what a crash left: images still pending were being made
// when the daemon stopped. Their staging is already gone (Open sweeps it);
// their rows and directories go too, so no half-made image survives.
func (m *imageManager) recover(ctx context.Context) error {
	ims, err := m.store.ListImages(ctx)
	if err != nil {
		return err
	}
	for _, im := range ims {
		if im.State != store.ImagePending {
			continue
		}
		if err := m.discard(ctx, im.ID); err != nil {
			return fmt.Errorf("clean up image %q interrupted by a daemon stop: %w", im.Name, err)
		}
		m.logger.Warn("removed an image whose making a daemon stop interrupted", "image", im.Name)
	}
	return nil
}

// discard removes an image's directory, staging and row.
func (m *imageManager) discard(ctx context.Context, id string) error {
	errs := []error{
		os.RemoveAll(m.stagingDir(id)),
		os.RemoveAll(m.layout.ImageDir(id)),
	}
	m.imageOpsMu.Lock()
	err := m.store.DeleteImage(ctx, id)
	m.imageOpsMu.Unlock()
	if err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *imageManager) stagingDir(id string) string {
	return m.layout.StagingDir() + "/image-" + id
}

// reserve records a pending image under name, so the name is taken from
// now on and a crash before commit is cleaned up at the next start.
func (m *imageManager) reserve(ctx context.Context, im store.Image) (store.Image, error) {
	if err := imagemgr.ValidateName(im.Name); err != nil {
		return store.Image{}, err
	}
	im.State = store.ImagePending
	m.imageOpsMu.Lock()
	defer m.imageOpsMu.Unlock()
	got, err := m.store.CreateImage(ctx, im)
	if errdefs.IsAlreadyExists(err) {
		return store.Image{}, fmt.Errorf("image name %q is taken: remove that image or choose another --name: %w", im.Name, errdefs.ErrAlreadyExists)
	}
	return got, err
}

// commit moves a finished rootfs into the image's directory and marks the
// image ready.
func (m *imageManager) commit(ctx context.Context, im store.Image, builtExt4 string) (store.Image, error) {
	dir := m.layout.ImageDir(im.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return store.Image{}, fmt.Errorf("create image directory: %w", err)
	}
	if err := writeJSONFile(m.layout.ImageConfig(im.ID), im.Config, 0o444); err != nil {
		return store.Image{}, err
	}
	if err := os.Chmod(builtExt4, 0o444); err != nil {
		return store.Image{}, err
	}
	if err := os.Rename(builtExt4, m.layout.ImageRootfs(im.ID)); err != nil {
		return store.Image{}, fmt.Errorf("move rootfs into place: %w", err)
	}
	crashPoint("image.moved") // the rootfs is in images/ID, the row still pending
	im.State = store.ImageReady
	m.imageOpsMu.Lock()
	defer m.imageOpsMu.Unlock()
	return m.store.UpdateImage(ctx, im)
}

// runImageOp runs make as an async op for a reserved image: on failure
// (or cancel) everything it made is removed, row included.
func (m *imageManager) runImageOp(ctx context.Context, kind string, im store.Image, make func(ctx context.Context, report func(opstate.Progress)) (store.Image, error)) (rpc.OpStarted, error) {
	id, err := m.startOp(ctx, kind, im.Name, func(ctx context.Context, report func(opstate.Progress)) (any, error) {
		if err := os.MkdirAll(m.stagingDir(im.ID), 0o700); err != nil {
			m.discard(context.Background(), im.ID)
			return nil, fmt.Errorf("create staging: %w", err)
		}
		crashPoint("image.staged") // a pending row, its op running, empty staging
		done, err := make(ctx, report)
		os.RemoveAll(m.stagingDir(im.ID))
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("the filesystem of the state root %s is full; free space there and retry: %w", m.layout.Root, err)
		}
		if err != nil {
			if derr := m.discard(context.Background(), im.ID); derr != nil {
				m.logger.Error("clean up failed image", "image", im.Name, "err", derr)
			}
			return nil, err
		}
		report(opstate.Progress{Phase: "done", Message: fmt.Sprintf("image %s ready (%s)", done.Name, done.ID)})
		return m.toRPC(context.Background(), done), nil
	})
	if err != nil {
		m.discard(context.Background(), im.ID)
		return rpc.OpStarted{}, err
	}
	out := m.toRPC(ctx, im)
	return rpc.OpStarted{OpID: id, Image: &out}, nil
}
