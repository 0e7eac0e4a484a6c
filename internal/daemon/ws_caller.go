package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"banger/internal/daemon/workspace"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/system"
)

// The workspace helpers run git and read or write the caller's checkout AS
// THE CALLER: the daemon is root, the checkout is the user's. The daemon
// runs `banger internal workspace-pack PATH` or
// `banger internal workspace-export REQUEST` with the caller's uid, gid and
// groups (SO_PEERCRED and /proc/PID/status, as callerFiles does), so the
// kernel enforces the user's permissions, git's ownership check passes,
// and whatever export writes into the repository is the user's.
//
// workspace-pack: stdin is wsPackInput (JSON, may be empty); stdout the
// Pack stream for the guest's untar built-in; fd 3 gets wsPackOutput
// (JSON) once the stream is complete.
//
// workspace-export: argv[0] is wsExportRequest (JSON); stdin the guest's
// tree (tar); fd 3, when the request says so, the guest's bundle; stdout
// gets the workspace.ExportResult (JSON).
//
// Failures: the message on stderr, the exit status naming the sentinel.
const (
	wsExitNotFound     = 3
	wsExitInvalid      = 4
	wsExitExists       = 5
	wsExitPrecondition = 6
	wsExitNotGit       = 7 // GitOnly and the path is not in a git checkout
)

// maxWSMeta bounds the JSON a helper hands back (a manifest of ~2 million
// entries).
const maxWSMeta = 512 << 20

// errNotGitCheckout: a prepare that wanted a git checkout (banger run
// without a path) found a plain directory; nothing was sent.
var errNotGitCheckout = fmt.Errorf("not in a git checkout: %w", errdefs.ErrFailedPrecondition)

// wsPackInput is what the daemon tells the pack helper.
type wsPackInput struct {
	// Root and Manifest are the previous prepare's: used only when the
	// checkout at the path has the same root.
	Root string `json:"root,omitempty"`
	// Manifest is the stored JSON as it is: only the helper decodes it
	// (a checkout's manifest is megabytes; the daemon never needs it).
	Manifest json.RawMessage `json:"manifest,omitempty"`
	GitOnly  bool            `json:"git_only,omitempty"`
	// Guest is what the guest's untar understands.
	Guest workspace.PackOptions `json:"guest"`
}

// wsPackOutput is what the pack helper made.
type wsPackOutput struct {
	Repo     *workspace.Repo `json:"repo"`
	Manifest json.RawMessage `json:"manifest"` // a workspace.Manifest, stored as it is
	Base     string          `json:"base"`     // the manifest's base commit
	// Incremental: the previous manifest was used.
	Incremental bool                `json:"incremental"`
	Stats       workspace.PackStats `json:"stats"`
	// WireBytes is the stream's size as the guest reads it.
	WireBytes int64 `json:"wire_bytes"`
}

// wsExportRequest is what the export helper is asked to do.
type wsExportRequest struct {
	Repo    string `json:"repo"`
	Base    string `json:"base"`
	Branch  string `json:"branch"`
	Force   bool   `json:"force,omitempty"`
	Patch   string `json:"patch,omitempty"`
	Message string `json:"message"`
	Bundle  bool   `json:"bundle,omitempty"` // fd 3 holds the guest's bundle
}

// callerCommand is `banger internal ARGS...` run as peer (as root for a
// root caller), with a minimal environment: PATH, LC_ALL and the caller's
// HOME (git reads the user's excludes file and identity from it).
func (cf callerFiles) callerCommand(ctx context.Context, peer rpc.PeerCred, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, cf.exe, append([]string{"internal"}, args...)...)
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if u, err := user.LookupId(strconv.Itoa(int(peer.UID))); err == nil && u.HomeDir != "" {
		cmd.Env = append(cmd.Env, "HOME="+u.HomeDir)
	}
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	if peer.UID != 0 {
		groups, err := peerGroups(filepath.Join(cf.procRoot, strconv.Itoa(int(peer.PID)), "status"))
		if err != nil {
			return nil, fmt.Errorf("read the caller's groups: %w", err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: peer.UID, Gid: peer.GID, Groups: groups}}
	}
	return cmd, nil
}

// helperFailure turns a helper's exit into an error carrying its message
// and the sentinel its exit status names.
func helperFailure(what string, err error, stderr []byte) error {
	msg := string(bytes.TrimSpace(stderr))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || msg == "" {
		return fmt.Errorf("%s: %w", what, err)
	}
	if k := helperKind(ee.ExitCode()); k != nil {
		return &helperError{msg: msg, kind: k}
	}
	if ee.ExitCode() > 0 { // it failed by itself, and said why
		return &helperError{msg: what + ": " + msg}
	}
	return fmt.Errorf("%s: %s", what, msg)
}

// helperKind is the sentinel a helper's exit status names (nil: none).
func helperKind(code int) error {
	return map[int]error{
		wsExitNotFound: errdefs.ErrNotFound, wsExitInvalid: errdefs.ErrInvalidArgument,
		wsExitExists: errdefs.ErrAlreadyExists, wsExitPrecondition: errdefs.ErrFailedPrecondition,
		wsExitNotGit: errNotGitCheckout,
	}[code]
}

// wsPackStream is a running pack helper: read the stream from it, then
// Finish. Close abandons it (kills the helper); safe at any time.
type wsPackStream struct {
	io.Reader
	finish func() (*wsPackOutput, error)
	close  func()
}

// packAsCaller is the workspaceInspectRepo seam's implementation: it
// starts the pack helper as peer on path.
func (cf callerFiles) packAsCaller(ctx context.Context, peer rpc.PeerCred, path string, in wsPackInput) (*wsPackStream, error) {
	cmd, err := cf.callerCommand(ctx, peer, "workspace-pack", "--", path)
	if err != nil {
		return nil, err
	}
	input, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	cmd.Stdin = bytes.NewReader(input)
	stderr := &system.HeadBuffer{Max: 16 << 10}
	cmd.Stderr = stderr
	metaR, metaW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{metaW}
	out, err := cmd.StdoutPipe()
	if err != nil {
		metaR.Close()
		metaW.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		metaR.Close()
		metaW.Close()
		return nil, fmt.Errorf("run the workspace packer as uid %d: %w", peer.UID, err)
	}
	metaW.Close()
	type metaResult struct {
		b   []byte
		err error
	}
	metaC := make(chan metaResult, 1)
	go func() {
		defer metaR.Close()
		b, err := io.ReadAll(io.LimitReader(metaR, maxWSMeta+1))
		metaC <- metaResult{b, err}
	}()
	finish := func() (*wsPackOutput, error) {
		werr := cmd.Wait()
		meta := <-metaC
		if werr != nil {
			return nil, helperFailure("pack the workspace as uid "+strconv.Itoa(int(peer.UID)), werr, stderr.Bytes())
		}
		if meta.err != nil || len(meta.b) > maxWSMeta {
			return nil, fmt.Errorf("read the packer's manifest: %v (%d bytes)", meta.err, len(meta.b))
		}
		var o wsPackOutput
		if err := json.Unmarshal(meta.b, &o); err != nil || o.Repo == nil || len(o.Manifest) == 0 {
			return nil, fmt.Errorf("the packer's manifest is not valid: %v", err)
		}
		return &o, nil
	}
	return &wsPackStream{Reader: out, finish: finish, close: func() {
		cmd.Process.Kill() // harmless once it has exited
	}}, nil
}

// exportAsCaller is the workspaceExport seam's implementation: it runs
// the export helper as peer with the guest's tree on its stdin and the
// bundle (if any) as fd 3.
func (cf callerFiles) exportAsCaller(ctx context.Context, peer rpc.PeerCred, req wsExportRequest, tree io.Reader, bundle *os.File) (*workspace.ExportResult, error) {
	req.Bundle = bundle != nil
	arg, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	cmd, err := cf.callerCommand(ctx, peer, "workspace-export", "--", string(arg))
	if err != nil {
		return nil, err
	}
	cmd.Stdin = tree
	stdout, stderr := &system.HeadBuffer{Max: 64 << 10}, &system.HeadBuffer{Max: 16 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if bundle != nil {
		cmd.ExtraFiles = []*os.File{bundle}
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, helperFailure("export as uid "+strconv.Itoa(int(peer.UID)), err, stderr.Bytes())
	}
	var res workspace.ExportResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("the export helper's result is not valid: %v", err)
	}
	return &res, nil
}

// ServeWorkspacePack is the pack helper (`banger internal workspace-pack
// PATH`), run as the caller: see wsPackInput and wsPackOutput. It returns
// the exit status.
func ServeWorkspacePack(ctx context.Context, path string, stdin io.Reader, stdout, meta, stderr io.Writer) int {
	err := serveWorkspacePack(ctx, path, stdin, stdout, meta)
	return helperExit(err, stderr)
}

func serveWorkspacePack(ctx context.Context, path string, stdin io.Reader, stdout, meta io.Writer) error {
	var in wsPackInput
	b, err := io.ReadAll(io.LimitReader(stdin, maxWSMeta))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &in); err != nil {
			return fmt.Errorf("the daemon's input: %w", err)
		}
	}
	g := workspace.ExecGit{}
	repo, err := workspace.Inspect(ctx, g, path)
	if err != nil {
		return err
	}
	if in.GitOnly && !repo.IsGit {
		return fmt.Errorf("%s is %w", repo.Root, errNotGitCheckout)
	}
	var prev *workspace.Manifest
	if in.Root == repo.Root && len(in.Manifest) > 0 {
		prev = new(workspace.Manifest)
		if err := json.Unmarshal(in.Manifest, prev); err != nil {
			prev = nil
			repo.Notes = append(repo.Notes, "the previous import's manifest is unreadable: everything is sent again")
		}
	}
	wire := &countingWriter{w: stdout}
	w := bufio.NewWriterSize(wire, 256<<10)
	var tw io.Writer = w
	var zw *zstd.Encoder
	if in.Guest.Zstd {
		// The fastest level: the host compresses several times faster
		// than the guest's SSH decrypts, and a checkout's text shrinks
		// 3-4x; incompressible content (packs, media) goes as raw blocks.
		// A 4 MiB window bounds the guest's decoder.
		zw, err = zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(4<<20))
		if err != nil {
			return err
		}
		tw = zw
	}
	m, err := workspace.PackWith(ctx, g, repo, tw, prev, in.Guest)
	if err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return json.NewEncoder(meta).Encode(wsPackOutput{Repo: repo, Manifest: manifest, Base: m.Base, Incremental: prev != nil, Stats: m.Stats, WireBytes: wire.n})
}

// ServeWorkspaceExport is the export helper (`banger internal
// workspace-export REQUEST`), run as the caller. bundle is fd 3 when the
// request says there is one. It returns the exit status.
func ServeWorkspaceExport(ctx context.Context, reqJSON string, tree io.Reader, bundle io.Reader, stdout, stderr io.Writer) int {
	err := serveWorkspaceExport(ctx, reqJSON, tree, bundle, stdout)
	return helperExit(err, stderr)
}

func serveWorkspaceExport(ctx context.Context, reqJSON string, tree io.Reader, bundle io.Reader, stdout io.Writer) (err error) {
	var req wsExportRequest
	if err := json.Unmarshal([]byte(reqJSON), &req); err != nil {
		return fmt.Errorf("the daemon's request: %w", err)
	}
	opt := workspace.ExportOptions{Branch: req.Branch, Force: req.Force, Message: req.Message}
	if req.Bundle {
		opt.Bundle = bundle
	}
	var patch *os.File
	if req.Patch != "" {
		// Written next to its final name and renamed on success, so a
		// failed export leaves no partial patch.
		if patch, err = os.CreateTemp(filepath.Dir(req.Patch), ".banger-patch-"); err != nil {
			return err
		}
		defer func() {
			patch.Close()
			if err != nil {
				os.Remove(patch.Name())
			}
		}()
		opt.Patch = patch
	}
	res, err := workspace.Export(ctx, workspace.ExecGit{}, req.Repo, req.Base, tree, opt)
	if err != nil {
		return err
	}
	if patch != nil {
		if err := patch.Chmod(0o644); err != nil {
			return err
		}
		if err := patch.Close(); err != nil {
			return err
		}
		if err := os.Rename(patch.Name(), req.Patch); err != nil {
			return err
		}
	}
	return json.NewEncoder(stdout).Encode(res)
}

// helperExit writes err to stderr and returns the exit status naming its
// sentinel (0 for nil).
func helperExit(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, err)
	switch {
	case errors.Is(err, errNotGitCheckout):
		return wsExitNotGit
	case errors.Is(err, os.ErrNotExist), errdefs.IsNotFound(err):
		return wsExitNotFound
	case errors.Is(err, workspace.ErrBranchExists):
		return wsExitExists
	case errors.Is(err, workspace.ErrBaseMissing), errors.Is(err, workspace.ErrBranchCheckedOut):
		return wsExitPrecondition
	case errors.Is(err, workspace.ErrHostileArchive), errors.Is(err, workspace.ErrBareRepo), errors.Is(err, os.ErrPermission):
		return wsExitInvalid
	}
	return 1
}

// countingWriter counts what goes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
