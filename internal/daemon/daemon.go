// Package daemon is banger's composition root: it owns every piece of host
// state and serves the JSON-RPC API on the unix socket. Only internal/cli
// imports it; the surface is Open, (*Daemon).Serve, (*Daemon).Close and
// Doctor. Everything else is reached through the dispatch switch below.
// See docs/architecture.md for the lock order.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/opstate"
	"banger/internal/layout"
	"banger/internal/rpc"
	"banger/internal/store"
	"banger/internal/system"
)

// Options are Open's inputs.
type Options struct {
	Config config.Config
	Logger *slog.Logger  // nil: discard
	Runner system.Runner // nil: system.ExecRunner
	// Executable is the banger binary: injected into images as their
	// init, and run as a caller to read the files they name. Default:
	// this process's own executable.
	Executable string
}

// Daemon is the composition root. Subsystem state and locks live on their
// owning types; see docs/architecture.md for the lock order:
//
//	vmLocks[id] → workspaceLocks[id] → {createVMMu, imageOpsMu} → subsystem-local locks
type Daemon struct {
	layout   layout.Layout
	config   config.Config
	store    *store.Store
	runner   system.Runner
	logger   *slog.Logger
	pid      *pidFile
	listener *net.UnixListener
	// listenerFile is the socket file listener was made on.
	listenerFile fileID
	auth         authorizer
	gid          uint32 // the socket's group
	startedAt    time.Time

	// vmLocks[id] is held across a whole lifecycle op on one VM.
	vmLocks vmLockSet
	// workspaceLocks[id] is held for a workspace's slow guest I/O, never
	// together with vmLocks[id].
	workspaceLocks vmLockSet

	// ops tracks async operations; it owns its own (leaf) lock.
	ops *opstate.Registry[*operation]
	// opsCtx is the daemon's long-lived context: async operations run
	// under it, never under a request's. Cancelled by Serve on shutdown.
	opsCtx    context.Context
	opsCancel context.CancelFunc
	opsWG     sync.WaitGroup

	// images is the image and kernel registry; imageOpsMu lives on it.
	images *imageManager
	// vms runs VMs; createVMMu, the handle cache, the capability hooks
	// (vmCaps) and the VM network live on it.
	vms *vmManager
	// workspaces copies checkouts into guests and their work back;
	// workspaceLocks is its lock set.
	workspaces *workspaceManager
	// files reads paths callers name, with their permissions.
	files callerFiles

	// requestHandler is the injectable seam in front of dispatch; tests
	// replace it to inject slow or failing handlers.
	requestHandler func(ctx context.Context, call *rpc.Call) (any, error)
	// bundleFetch downloads kernel bundles (kernel.fetch); a seam.
	bundleFetch bundleFetcher

	closeOnce sync.Once
	closeErr  error
}

// Open prepares the daemon: takes the root's single-instance lock, creates
// the layout, sweeps staging left by a crash, opens the store (applying
// migrations), marks operations a crash interrupted, recovers images and
// VMs, removes host objects no record owns, and creates the socket. It serves nothing until Serve.
func Open(ctx context.Context, opts Options) (_ *Daemon, err error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	d := &Daemon{
		layout:    layout.New(cfg.Root),
		config:    cfg,
		runner:    opts.Runner,
		logger:    opts.Logger,
		startedAt: time.Now(),
	}
	if d.logger == nil {
		d.logger = slog.New(slog.DiscardHandler)
	}
	if d.runner == nil {
		d.runner = &system.ExecRunner{}
	}
	d.requestHandler = d.dispatch
	exe := opts.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the banger binary: %w", err)
		}
	}
	d.files = callerFiles{exe: exe, procRoot: "/proc"}
	d.bundleFetch = d.files.fetchBundle
	d.opsCtx, d.opsCancel = context.WithCancel(context.Background())
	d.ops = opstate.NewRegistry[*operation](opstate.Options{Retention: cfg.OpRetention.Std()})
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	if err := os.MkdirAll(d.layout.Root, 0o711); err != nil {
		return nil, fmt.Errorf("create state root: %w", err)
	}
	if d.pid, err = acquirePIDFile(d.layout.PIDFile()); err != nil {
		return nil, err
	}
	for _, dir := range d.layout.Dirs() {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	if err := d.sweepStaging(); err != nil {
		return nil, err
	}
	if d.store, err = store.Open(ctx, d.layout.DB()); err != nil {
		return nil, err
	}
	if n, err := d.store.MarkRunningOperationsInterrupted(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		d.logger.Warn("operations were interrupted by a daemon stop", "count", n)
	}
	d.images = newImageManager(d, exe)
	if err := d.images.recover(ctx); err != nil {
		return nil, err
	}
	if err := d.images.sweepOrphanKernels(ctx); err != nil {
		return nil, err
	}
	if err := d.images.sweepOrphanImages(ctx); err != nil {
		return nil, err
	}
	d.vms = newVMManager(d)
	if err := d.vms.recover(ctx); err != nil {
		return nil, err
	}
	d.workspaces = newWorkspaceManager(d)
	// One reconciler sweep before serving: a crash between launching a
	// VMM and recording its PID leaves a VMM no handles.json names, which
	// the rolled-back create cannot find; the ledger finds it by its
	// command line.
	if _, err := d.vms.reconcileHost(ctx, false); err != nil {
		d.logger.Warn("sweep host objects no record owns", "err", err)
	}
	gid, err := ensureGroup(ctx, d.runner, cfg.Group)
	if err != nil {
		return nil, err
	}
	d.gid = gid
	d.auth = authorizer{gid: gid, selfUID: uint32(os.Geteuid()), procRoot: "/proc"}
	if d.listener, err = listen(ctx, cfg.Socket, gid); err != nil {
		return nil, err
	}
	// The socket file's identity is taken now, not when Serve starts: the
	// file may be deleted in between (the socket keeper then recreates it).
	if d.listenerFile, err = statID(cfg.Socket); err != nil {
		return nil, fmt.Errorf("stat the socket: %w", err)
	}
	d.logger.Info("daemon opened", "root", d.layout.Root, "socket", cfg.Socket, "group", cfg.Group, "pid", os.Getpid())
	return d, nil
}

// sweepStaging removes what interrupted pulls and imports left in the
// staging directory. Nothing there survives a restart by design.
func (d *Daemon) sweepStaging() error {
	entries, err := os.ReadDir(d.layout.StagingDir())
	if err != nil {
		return fmt.Errorf("read staging dir: %w", err)
	}
	for _, e := range entries {
		p := d.layout.StagingDir() + "/" + e.Name()
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove stale staging %s: %w", p, err)
		}
		d.logger.Info("removed stale staging left by an interrupted operation", "path", p)
	}
	return nil
}

// Serve answers requests until ctx ends, then shuts down gracefully:
// in-flight requests get the config's shutdown_timeout to finish before
// their contexts are cancelled; then running async operations are
// cancelled and awaited.
func (d *Daemon) Serve(ctx context.Context) error {
	srv := &rpc.Server{
		Handler:         rpc.HandlerFunc(d.handle),
		Authorize:       d.auth.authorize,
		MapError:        d.mapError,
		MaxMessageBytes: d.config.MaxRequestBytes,
		Logger:          d.logger,
	}
	// The background loops end when ctx does or when serving fails.
	ctx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	keeper := newSocketKeeper(d.config.Socket, d.gid, d.listener, d.listenerFile, srv, d.logger)
	keeper.start()
	var err error

	bgDone := make(chan struct{}, 3)
	go func() {
		defer func() { bgDone <- struct{}{} }()
		every(ctx, socketCheckInterval, func(time.Time) { keeper.tick(ctx) })
	}()
	go func() {
		defer func() { bgDone <- struct{}{} }()
		every(ctx, 30*time.Second, func(now time.Time) { d.sweep(ctx, now) })
	}()
	go func() {
		defer func() { bgDone <- struct{}{} }()
		every(ctx, d.config.ReconcileInterval.Std(), func(time.Time) { d.vms.reconcilePass(ctx) })
	}()
	d.logger.Info("daemon ready", "socket", d.config.Socket)

	select {
	case <-ctx.Done():
	case err = <-keeper.errs:
		err = fmt.Errorf("serve: %w", err)
	}
	stopLoops()
	d.logger.Info("daemon shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), d.config.ShutdownTimeout.Std())
	if serr := srv.Shutdown(sctx); serr != nil {
		d.logger.Warn("in-flight requests were cancelled at the shutdown timeout", "timeout", d.config.ShutdownTimeout.Std())
	}
	cancel()
	keeper.wait()
	d.opsCancel()
	d.opsWG.Wait()
	<-bgDone
	<-bgDone
	<-bgDone
	if cerr := d.vms.close(); cerr != nil {
		d.logger.Warn("stop the VM network's services", "err", cerr)
	}
	if errors.Is(err, rpc.ErrServerClosed) {
		err = nil
	}
	return err
}

// sweep expires finished operations from memory and the store.
func (d *Daemon) sweep(ctx context.Context, now time.Time) {
	d.ops.Sweep(now)
	if _, err := d.store.DeleteOperationsFinishedBefore(ctx, now.Add(-d.config.OpRetention.Std())); err != nil && ctx.Err() == nil {
		d.logger.Warn("expire finished operations", "err", err)
	}
}

// every calls fn at each tick of interval until ctx ends: the daemon's
// background loops (socket check, sweep, reconciler).
func every(ctx context.Context, interval time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}

// Close releases everything Open took: the socket file, the store, the pid
// file and its lock. Safe to call more than once.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.opsCancel != nil {
			d.opsCancel()
			d.opsWG.Wait()
		}
		if d.listener != nil {
			d.listener.Close()
			if err := os.Remove(d.config.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove socket: %w", err))
			}
		}
		if d.store != nil {
			if err := d.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close store: %w", err))
			}
		}
		if err := d.pid.release(); err != nil {
			errs = append(errs, fmt.Errorf("release pid file: %w", err))
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

func (d *Daemon) handle(ctx context.Context, call *rpc.Call) (any, error) {
	return d.requestHandler(ctx, call)
}

// dispatch is the RPC dispatch switch: the one place method names map to
// code. Errors are mapped to wire codes by mapError, at this edge only.
func (d *Daemon) dispatch(ctx context.Context, call *rpc.Call) (any, error) {
	switch call.Method {
	case rpc.MethodPing:
		return d.ping(call)
	case rpc.MethodInfo:
		return d.info(ctx, call)
	case rpc.MethodVMList:
		return d.vms.list(ctx, call)
	case rpc.MethodVMCreate:
		return d.vms.create(ctx, call)
	case rpc.MethodVMExec:
		return d.vms.exec(ctx, call)
	case rpc.MethodVMRemove:
		return d.vms.remove(ctx, call)
	case rpc.MethodVMShow:
		return d.vms.show(ctx, call)
	case rpc.MethodVMStart:
		return d.vms.start(ctx, call)
	case rpc.MethodVMStop:
		return d.vms.stop(ctx, call)
	case rpc.MethodVMRestart:
		return d.vms.restart(ctx, call)
	case rpc.MethodVMLogs:
		return d.vms.logs(ctx, call)
	case rpc.MethodVMSet:
		return d.vms.set(ctx, call)
	case rpc.MethodImagePromote:
		return d.vms.promote(ctx, call)
	case rpc.MethodVMProxy:
		return d.vms.proxy(ctx, call)
	case rpc.MethodReconcile:
		return d.vms.reconcile(ctx, call)
	case rpc.MethodOpList:
		return d.listOps(call)
	case rpc.MethodOpGet:
		return d.getOp(ctx, call)
	case rpc.MethodOpWatch:
		return d.watchOp(ctx, call)
	case rpc.MethodOpCancel:
		return d.cancelOp(call)

	case rpc.MethodImagePull:
		return d.images.pull(ctx, call)
	case rpc.MethodImageImport:
		return d.images.importImage(ctx, call, d.files)
	case rpc.MethodImageRegister:
		return d.images.registerImage(ctx, call, d.files)
	case rpc.MethodImageList:
		return d.images.list(ctx, call)
	case rpc.MethodImageShow:
		return d.images.show(ctx, call)
	case rpc.MethodImageRemove:
		return d.images.remove(ctx, call)

	case rpc.MethodWorkspacePrepare:
		return d.workspaces.prepare(ctx, call)
	case rpc.MethodWorkspaceExport:
		return d.workspaces.export(ctx, call)

	case rpc.MethodKernelImport:
		return d.images.importKernel(ctx, call, d.files)
	case rpc.MethodKernelFetch:
		return d.images.fetchKernel(ctx, call, d.bundleFetch)
	case rpc.MethodKernelList:
		return d.images.listKernels(ctx, call)
	case rpc.MethodKernelShow:
		return d.images.showKernel(ctx, call)
	case rpc.MethodKernelRemove:
		return d.images.removeKernel(ctx, call)
	}
	return nil, rpc.Errorf(rpc.CodeMethodNotFound, "method %q not found", call.Method)
}

// mapError is the dispatch edge's error mapping: sentinels become banger's
// codes; anything unmapped is logged and sent as an internal error.
func (d *Daemon) mapError(err error) *rpc.Error {
	e := rpc.ErrorFromErr(err)
	if e.Code == rpc.CodeInternalError {
		d.logger.Error("request failed", "err", err)
	}
	return e
}
