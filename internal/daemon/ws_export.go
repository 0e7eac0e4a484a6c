package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/workspace"
	"banger/internal/errdefs"
	"banger/internal/guest"
	"banger/internal/guestinit"
	"banger/internal/rpc"
	"banger/internal/system"
)

// export brings the guest's work back into the caller's checkout as a
// branch (or a patch): the guest's tree (tar built-in) and, when it has
// git and committed, a bundle of its commits are handed to the export
// helper, which runs as the caller and trusts neither (workspace.Export).
// Locks as prepare's.
func (w *workspaceManager) export(ctx context.Context, call *rpc.Call) (rpc.WorkspaceExportResult, error) {
	var p rpc.WorkspaceExportParams
	if err := call.Bind(&p); err != nil {
		return rpc.WorkspaceExportResult{}, err
	}
	return w.exportAs(ctx, call.Peer, p)
}

func (w *workspaceManager) exportAs(ctx context.Context, peer rpc.PeerCred, p rpc.WorkspaceExportParams) (rpc.WorkspaceExportResult, error) {
	var res rpc.WorkspaceExportResult
	if p.VM == "" {
		return res, fmt.Errorf("vm is required: %w", errdefs.ErrInvalidArgument)
	}
	if p.Patch != "" && (!filepath.IsAbs(p.Patch) || strings.IndexByte(p.Patch, 0) >= 0) {
		return res, fmt.Errorf("patch %q is not an absolute path: %w", p.Patch, errdefs.ErrInvalidArgument)
	}
	vm, h, err := w.vms.runningVM(ctx, p.VM) // vmLocks[id], released on return
	if err != nil {
		return res, err
	}
	rec, err := w.store.GetWorkspace(ctx, vm.ID)
	if errdefs.IsNotFound(err) {
		return res, fmt.Errorf("vm %q has no workspace: run `banger workspace prepare %s` (or `banger run` in a checkout) first: %w", vm.Name, vm.Name, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return res, err
	}
	if rec.BaseCommit == "" {
		return res, fmt.Errorf("vm %q's workspace came from %s, which was not a git checkout with a commit: nothing to export onto: %w", vm.Name, rec.HostPath, errdefs.ErrFailedPrecondition)
	}
	branch := p.Branch
	if branch == "" {
		branch = "banger/" + vm.Name
	}
	unlock, err := w.locks.Lock(ctx, vm.ID)
	if err != nil {
		return res, err
	}
	defer unlock()
	ctx, cancel := vmScoped(ctx, h)
	defer cancel()
	client, hangUp, err := w.dialScoped(ctx, h)
	if err != nil {
		return res, err
	}
	defer hangUp()
	features, err := guestUntarFeatures(ctx, client, workspace.GuestFeaturesArgv())
	if err != nil {
		return res, w.vmGone(ctx, vm.Name, err)
	}

	bundle, err := w.guestBundle(ctx, client, rec.GuestDest, rec.BaseCommit)
	if err != nil {
		return res, w.vmGone(ctx, vm.Name, err)
	}
	if bundle != nil {
		defer bundle.Close()
	}

	// The guest's tree streams straight into the helper's stdin.
	pr, pw := io.Pipe()
	gerr := &system.HeadBuffer{Max: 8 << 10}
	s, err := guest.Start(client, guest.Command{
		Command: guestinit.EncodeArgv(w.guestTreeArgv(rec.GuestDest, features)),
		Stdout:  pw,
		Stderr:  gerr,
	})
	if err != nil {
		return res, w.vmGone(ctx, vm.Name, err)
	}
	type waited struct {
		code int
		err  error
	}
	tarDone := make(chan waited, 1)
	go func() {
		code, _, err := s.Wait()
		switch {
		case err != nil:
			pw.CloseWithError(err)
		case code != 0:
			pw.CloseWithError(fmt.Errorf("the guest's tar exited %d", code))
		default:
			pw.Close()
		}
		tarDone <- waited{code, err}
	}()
	req := wsExportRequest{
		Repo: rec.HostPath, Base: rec.BaseCommit, Branch: branch, Force: p.Force, Patch: p.Patch,
		Message: "banger: uncommitted changes in vm " + vm.Name,
	}
	r, xerr := w.workspaceExport(ctx, peer, req, pr, bundle)
	pr.CloseWithError(errors.New("the export helper is done"))
	if xerr != nil {
		s.Close() // stop the guest's tar if the helper gave up first
	}
	tw := <-tarDone
	switch {
	case errors.Is(context.Cause(ctx), errWorkspaceVMGone):
		return res, fmt.Errorf("vm %q: %w; nothing was exported", vm.Name, errWorkspaceVMGone)
	case tw.err == nil && tw.code != 0:
		return res, fmt.Errorf("vm %q: the guest's tar of %s failed (exit %d): %s; nothing was exported", vm.Name, rec.GuestDest, tw.code, strings.TrimSpace(gerr.String()))
	case xerr != nil:
		return res, xerr
	case tw.err != nil:
		return res, fmt.Errorf("vm %q: read the guest's tree: %w", vm.Name, tw.err)
	}
	w.logger.Info("workspace exported", "vm", vm.Name, "repo", rec.HostPath, "branch", r.Branch, "commit", r.Commit, "commits", r.Commits, "dirty", r.Dirty)
	return rpc.WorkspaceExportResult{
		VM: vm.Name, HostPath: rec.HostPath, Branch: r.Branch, Patch: p.Patch,
		Commit: r.Commit, Base: r.Base, Commits: r.Commits, Dirty: r.Dirty,
	}, nil
}

// vmGone prefers errWorkspaceVMGone to whatever error the hang-up caused.
func (w *workspaceManager) vmGone(ctx context.Context, name string, err error) error {
	if errors.Is(context.Cause(ctx), errWorkspaceVMGone) {
		return fmt.Errorf("vm %q: %w; nothing was exported", name, errWorkspaceVMGone)
	}
	return err
}

// guestBundle asks the guest for its commits since base: nil when the
// guest has no git, no repository, or no new commit. The bundle is kept in
// an unlinked file in the daemon's staging directory (bounded by
// maxBytes), handed to the helper as a descriptor.
func (w *workspaceManager) guestBundle(ctx context.Context, client *ssh.Client, dest, base string) (*os.File, error) {
	head := &system.HeadBuffer{Max: 8 << 10}
	s, err := guest.Start(client, guest.Command{Command: guestinit.EncodeArgv(workspace.GuestHeadArgv(dest)), Stdout: head, Stderr: io.Discard})
	if err != nil {
		return nil, err
	}
	code, _, err := s.Wait()
	if err != nil {
		return nil, err
	}
	h := strings.TrimSpace(head.String())
	if code != 0 || h == base || h == "" {
		return nil, nil // no git, no repository, or nothing committed
	}
	f, err := os.CreateTemp(w.staging, "ws-bundle-")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	stderr := &system.HeadBuffer{Max: 8 << 10}
	lw := &cappedWriter{w: f, left: w.maxBytes}
	s, err = guest.Start(client, guest.Command{Command: guestinit.EncodeArgv(workspace.GuestBundleArgv(dest, base)), Stdout: lw, Stderr: stderr})
	if err != nil {
		f.Close()
		return nil, err
	}
	code, _, err = s.Wait()
	switch {
	case err != nil:
		f.Close()
		if lw.over {
			return nil, fmt.Errorf("%w: the guest's bundle is over %d bytes: %w", workspace.ErrHostileArchive, w.maxBytes, errdefs.ErrInvalidArgument)
		}
		return nil, err
	case code != 0:
		f.Close()
		return nil, fmt.Errorf("the guest's git bundle exited %d: %s", code, bytes.TrimSpace(stderr.Bytes()))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// cappedWriter writes at most left bytes to w, then fails.
type cappedWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		c.over = true
		return 0, errors.New("over the size limit")
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}
