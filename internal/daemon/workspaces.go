package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strings"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/workspace"
	"banger/internal/errdefs"
	"banger/internal/guest"
	"banger/internal/guestinit"
	"banger/internal/rpc"
	"banger/internal/store"
	"banger/internal/system"
)

// workspaceManager serves workspace.prepare and workspace.export. Its own
// type with explicit dependencies; the per-VM lock set is the Daemon's
// workspaceLocks.
//
// Lock discipline (docs/architecture.md): vmLocks[id] only inside
// vms.runningHandles, to check the VM runs and copy its handles out; then,
// with vmLocks[id] released, workspaceLocks[id] across the slow part (the
// caller-side helper and the guest I/O). So stop, restart and rm of the VM
// never wait for an import: they take vmLocks[id], stop the VMM, and the
// import, whose context ends when the VMM exits, fails with
// errWorkspaceVMGone.
type workspaceManager struct {
	store    *store.Store
	vms      *vmManager
	logger   *slog.Logger
	staging  string     // private scratch for the guest's bundle (root only)
	locks    *vmLockSet // &Daemon.workspaceLocks: held for the guest I/O of one VM's workspace, never with vmLocks[id]
	maxBytes int64      // the guest's bundle at most (workspace.Limits)

	// Injectable seams.
	//
	// workspaceInspectRepo inspects and packs the checkout at path as the
	// caller (callerFiles.packAsCaller).
	workspaceInspectRepo func(ctx context.Context, peer rpc.PeerCred, path string, in wsPackInput) (*wsPackStream, error)
	// workspaceImport streams a pack into the guest at dest (the guest
	// init's untar built-in over SSH).
	workspaceImport func(ctx context.Context, client *ssh.Client, argv []string, r io.Reader) error
	// workspaceExport applies the guest's tree and bundle to the caller's
	// repository as the caller (callerFiles.exportAsCaller).
	workspaceExport func(ctx context.Context, peer rpc.PeerCred, req wsExportRequest, tree io.Reader, bundle *os.File) (*workspace.ExportResult, error)
	// guestTreeArgv is the guest command whose stdout is the workspace's
	// tree on export (the guest init's tar built-in); tests put a hostile
	// guest's stream there.
	guestTreeArgv func(dest string, guest workspace.PackOptions) []string
}

func newWorkspaceManager(d *Daemon) *workspaceManager {
	return &workspaceManager{
		store:                d.store,
		vms:                  d.vms,
		logger:               d.logger,
		staging:              d.layout.StagingDir(),
		locks:                &d.workspaceLocks,
		maxBytes:             workspace.DefaultMaxBytes,
		workspaceInspectRepo: d.files.packAsCaller,
		workspaceImport:      guestUntar,
		workspaceExport:      d.files.exportAsCaller,
		guestTreeArgv:        workspace.GuestTreeArgv,
	}
}

// DefaultWorkspaceDest is where a workspace goes in the guest by default.
const DefaultWorkspaceDest = "/workspace"

// errWorkspaceVMGone ends a workspace op whose VM stopped under it.
var errWorkspaceVMGone = fmt.Errorf("the VM stopped during the workspace operation: %w", errdefs.ErrFailedPrecondition)

// vmScoped returns ctx, cancelled with errWorkspaceVMGone when the VM's
// VMM exits (stop, rm --force, a crash): the guest's TCP connection would
// otherwise hang on a vanished TAP.
func vmScoped(ctx context.Context, h *vmHandles) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	if h.proc != nil {
		done := h.proc.Done()
		go func() {
			select {
			case <-done:
				cancel(errWorkspaceVMGone)
			case <-ctx.Done():
			}
		}()
	}
	return ctx, func() { cancel(context.Canceled) }
}

// dialScoped dials the guest and closes the connection when ctx ends.
func (w *workspaceManager) dialScoped(ctx context.Context, h *vmHandles) (*ssh.Client, func(), error) {
	client, err := guest.Dial(ctx, w.vms.target(h))
	if err != nil {
		return nil, nil, fmt.Errorf("reach the guest: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { client.Close() })
	return client, func() { stop(); client.Close() }, nil
}

// checkDest refuses a guest destination that is not a clean absolute path
// below /.
func checkDest(dest string) (string, error) {
	if dest == "" {
		return DefaultWorkspaceDest, nil
	}
	if !path.IsAbs(dest) || path.Clean(dest) != dest || dest == "/" || strings.IndexByte(dest, 0) >= 0 {
		return "", fmt.Errorf("dest %q: want a clean absolute path in the guest other than /: %w", dest, errdefs.ErrInvalidArgument)
	}
	return dest, nil
}

// prepare copies the caller's checkout into a running guest. See the
// type's doc for the locks.
func (w *workspaceManager) prepare(ctx context.Context, call *rpc.Call) (rpc.WorkspacePrepareResult, error) {
	var p wsPrepareParams
	if err := call.Bind(&p); err != nil {
		return rpc.WorkspacePrepareResult{}, err
	}
	return w.prepareAs(ctx, call.Peer, p)
}

// wsPrepareParams is workspace.prepare's params with the flag banger run
// sets: a plain directory is refused (nothing sent) rather than imported.
type wsPrepareParams struct {
	rpc.WorkspacePrepareParams
	GitOnly bool `json:"git_only,omitempty"`
}

func (w *workspaceManager) prepareAs(ctx context.Context, peer rpc.PeerCred, p wsPrepareParams) (rpc.WorkspacePrepareResult, error) {
	var res rpc.WorkspacePrepareResult
	if p.VM == "" || p.Path == "" {
		return res, fmt.Errorf("vm and path are required: %w", errdefs.ErrInvalidArgument)
	}
	if !path.IsAbs(p.Path) || strings.IndexByte(p.Path, 0) >= 0 {
		return res, fmt.Errorf("path %q is not absolute: %w", p.Path, errdefs.ErrInvalidArgument)
	}
	dest, err := checkDest(p.Dest)
	if err != nil {
		return res, err
	}
	vm, h, err := w.vms.runningVM(ctx, p.VM) // vmLocks[id], released on return
	if err != nil {
		return res, err
	}
	unlock, err := w.locks.Lock(ctx, vm.ID)
	if err != nil {
		return res, err
	}
	defer unlock()
	ctx, cancel := vmScoped(ctx, h)
	defer cancel()

	in := wsPackInput{GitOnly: p.GitOnly}
	if prev, err := w.store.GetWorkspace(ctx, vm.ID); err == nil && prev.GuestDest == dest && !p.Full && len(prev.Manifest) > 0 {
		in.Root, in.Manifest = prev.HostPath, json.RawMessage(prev.Manifest)
	} else if err != nil && !errdefs.IsNotFound(err) {
		return res, err
	}

	client, hangUp, err := w.dialScoped(ctx, h)
	if err != nil {
		return res, err
	}
	defer hangUp()
	// Asked at every import rather than remembered: it costs one exec,
	// and nothing is kept for a VM that goes away.
	if in.Guest, err = guestUntarFeatures(ctx, client, workspace.GuestFeaturesArgv()); err != nil {
		return res, fmt.Errorf("vm %q: asking its untar what it understands: %w", vm.Name, err)
	}
	ps, err := w.workspaceInspectRepo(ctx, peer, p.Path, in)
	if err != nil {
		return res, err
	}
	defer ps.close()
	ierr := w.workspaceImport(ctx, client, workspace.GuestUntarArgv(dest, in.Guest), ps)
	if ierr != nil {
		ps.close() // the packer may be blocked writing: end it
	}
	out, perr := ps.finish()
	switch {
	case errors.Is(context.Cause(ctx), errWorkspaceVMGone):
		return res, fmt.Errorf("vm %q: %w; its workspace record is unchanged", vm.Name, errWorkspaceVMGone)
	case perr != nil && (ierr == nil || errors.As(perr, new(*helperError))):
		// The packer's own failure says best what went wrong (a
		// truncated stream is all the guest saw of it).
		return res, perr
	case ierr != nil:
		if ctx.Err() != nil {
			return res, context.Cause(ctx)
		}
		return res, fmt.Errorf("import into vm %q at %s: %w", vm.Name, dest, ierr)
	case perr != nil:
		return res, perr
	}

	// Written only once the guest has everything: a failed import keeps
	// the previous record, still a safe base (whatever it sent differs
	// from it, and is sent again next time).
	if _, err := w.store.PutWorkspace(ctx, store.Workspace{
		VMID: vm.ID, HostPath: out.Repo.Root, GuestDest: dest, BaseCommit: out.Base,
		Branch: out.Repo.Branch, Manifest: out.Manifest,
	}); err != nil {
		return res, err
	}
	st := out.Stats
	w.logger.Info("workspace prepared", "vm", vm.Name, "path", out.Repo.Root, "dest", dest,
		"files", st.Files, "sent", st.Sent, "sent_bytes", st.SentBytes, "wire_bytes", out.WireBytes,
		"packs_rebuilt", st.PacksRebuilt, "blobs_rebuilt", st.BlobsRebuilt, "deleted", st.Deleted)
	return rpc.WorkspacePrepareResult{
		VM: vm.Name, HostPath: out.Repo.Root, Dest: dest, IsGit: out.Repo.IsGit,
		Base: out.Base, Branch: out.Repo.Branch, Detached: out.Repo.Detached,
		Incremental: out.Incremental,
		Files:       st.Files, Sent: st.Sent, SentBytes: st.SentBytes, WireBytes: out.WireBytes, Deleted: st.Deleted,
		Dirty: len(out.Repo.Dirty), Untracked: len(out.Repo.Untracked), Notes: out.Repo.Notes,
	}, nil
}

// guestUntarFeatures asks the guest init's untar what it understands
// beyond plain tar (workspace.GuestFeaturesArgv). A VM's init is the one
// its image was built with: an older one fails the question, and gets the
// forms every init understands.
func guestUntarFeatures(_ context.Context, client *ssh.Client, argv []string) (workspace.PackOptions, error) {
	var opt workspace.PackOptions
	stdout := &system.HeadBuffer{Max: 1 << 10}
	s, err := guest.Start(client, guest.Command{
		Command: guestinit.EncodeArgv(argv),
		Stdout:  stdout,
	})
	if err != nil {
		return opt, err
	}
	code, _, err := s.Wait()
	if err != nil || code != 0 {
		return opt, err
	}
	for _, f := range strings.Fields(stdout.String()) {
		switch f {
		case workspace.FeatureGitPack:
			opt.GitPacks = true
		case workspace.FeatureZstd:
			opt.Zstd = true
		case workspace.FeatureTarNoGit:
			opt.TarNoGit = true
		}
	}
	return opt, nil
}

// guestUntar is the workspaceImport seam's implementation: the guest
// init's untar built-in reads r into dest.
func guestUntar(ctx context.Context, client *ssh.Client, argv []string, r io.Reader) error {
	stderr := &system.HeadBuffer{Max: 8 << 10}
	s, err := guest.Start(client, guest.Command{
		Command: guestinit.EncodeArgv(argv),
		Stdin:   r,
		Stderr:  stderr,
	})
	if err != nil {
		return err
	}
	code, _, err := s.Wait()
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("the guest's untar exited %d: %s", code, strings.TrimSpace(stderr.String()))
	}
	return nil
}
