package daemon

// workspace.prepare and workspace.export through the real daemon with the
// fake VMM (vmtest_vmm_test.go): the fake guest runs the real guest
// init SSH server in this process, so the untar and tar built-ins run for
// real, into a directory of the test's. The as-caller helpers are run in
// process (the test binary is not banger): the seams
// workspaceInspectRepo and workspaceExport call the helpers' own code.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"banger/internal/daemon/workspace"
	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// inProcessPack is workspaceInspectRepo running the pack helper's code in
// this process.
func inProcessPack(ctx context.Context, _ rpc.PeerCred, path string, in wsPackInput) (*wsPackStream, error) {
	input, _ := json.Marshal(in)
	pr, pw := io.Pipe()
	var meta bytes.Buffer
	done := make(chan error, 1)
	go func() {
		err := serveWorkspacePack(ctx, path, bytes.NewReader(input), pw, &meta)
		pw.CloseWithError(err)
		done <- err
	}()
	return &wsPackStream{Reader: pr, close: func() { pr.CloseWithError(errors.New("abandoned")) }, finish: func() (*wsPackOutput, error) {
		if err := <-done; err != nil {
			return nil, err
		}
		var o wsPackOutput
		return &o, json.Unmarshal(meta.Bytes(), &o)
	}}, nil
}

// inProcessExport is workspaceExport running the export helper's code.
func inProcessExport(ctx context.Context, _ rpc.PeerCred, req wsExportRequest, tree io.Reader, bundle *os.File) (*workspace.ExportResult, error) {
	req.Bundle = bundle != nil
	b, _ := json.Marshal(req)
	var out bytes.Buffer
	var br io.Reader
	if bundle != nil {
		br = bundle
	}
	if err := serveWorkspaceExport(ctx, string(b), tree, br, &out); err != nil {
		// As helperFailure reads the real helper's exit status.
		return nil, &helperError{msg: err.Error(), kind: helperKind(helperExit(err, io.Discard))}
	}
	var res workspace.ExportResult
	return &res, json.Unmarshal(out.Bytes(), &res)
}

// wsGit runs git in dir with a fixed identity and no user config.
func wsGit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=T", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=T", "GIT_COMMITTER_EMAIL=t@example.invalid")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func wsRepo(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git (the workspace helpers run it)")
	}
	dir := t.TempDir()
	wsGit(t, dir, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("*.o\n"), 0o644)
	wsGit(t, dir, "add", "-A")
	wsGit(t, dir, "commit", "-qm", "base")
	os.WriteFile(filepath.Join(dir, "junk.o"), []byte("ignored"), 0o644)
	os.WriteFile(filepath.Join(dir, "new.txt"), []byte("untracked\n"), 0o644)
	return dir
}

func (e *vmtEnv) prepare(p rpc.WorkspacePrepareParams) (rpc.WorkspacePrepareResult, error) {
	var res rpc.WorkspacePrepareResult
	err := e.c.Call(e.ctx(), rpc.MethodWorkspacePrepare, p, &res)
	return res, err
}

// Prepare copies the checkout (ignored files left out), a second prepare
// sends only what changed and deletes what went, and export makes the
// branch from the guest's files without touching the host's work tree.
func TestWorkspacePrepareIncrementalExport(t *testing.T) {
	e := vmtSetup(t, nil)
	e.d.workspaces.workspaceInspectRepo = inProcessPack
	e.d.workspaces.workspaceExport = inProcessExport
	repo := wsRepo(t)
	vm := e.mustCreate(t, "ws1")
	dest := filepath.Join(t.TempDir(), "guest", "workspace")

	res, err := e.prepare(rpc.WorkspacePrepareParams{VM: vm.Name, Path: repo, Dest: dest})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsGit || res.Incremental || res.Sent != res.Files || res.Untracked != 1 {
		t.Errorf("first prepare = %+v, want a full git import with 1 untracked file", res)
	}
	for name, want := range map[string]string{"a.txt": "a\n", "new.txt": "untracked\n"} {
		if b, err := os.ReadFile(filepath.Join(dest, name)); err != nil || string(b) != want {
			t.Errorf("guest %s = %q, %v; want %q", name, b, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "junk.o")); !os.IsNotExist(err) {
		t.Errorf("ignored junk.o reached the guest: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "run.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("run.sh lost its executable bit: %v %v", fi, err)
	}
	rec, err := e.d.store.GetWorkspace(context.Background(), vm.ID)
	if err != nil || rec.HostPath != repo || rec.GuestDest != dest || rec.BaseCommit != res.Base || len(rec.Manifest) == 0 {
		t.Fatalf("record = %+v, %v", rec, err)
	}

	// Incremental: one file changed, one removed.
	os.WriteFile(filepath.Join(repo, "a.txt"), []byte("a changed\n"), 0o644)
	os.Remove(filepath.Join(repo, "new.txt"))
	res, err = e.prepare(rpc.WorkspacePrepareParams{VM: vm.Name, Path: repo, Dest: dest})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Incremental || res.Sent != 1 || res.Deleted != 1 {
		t.Errorf("second prepare = %+v, want incremental, 1 sent, 1 deleted", res)
	}
	if _, err := os.Stat(filepath.Join(dest, "new.txt")); !os.IsNotExist(err) {
		t.Errorf("new.txt survived in the guest: %v", err)
	}

	// A stored manifest that cannot be read means a full import, said in
	// a note, not a failed one (the daemon passes it to the helper as is).
	rec, _ = e.d.store.GetWorkspace(context.Background(), vm.ID)
	rec.Manifest = []byte(`{"entries": "not a list"}`)
	if _, err := e.d.store.PutWorkspace(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	res, err = e.prepare(rpc.WorkspacePrepareParams{VM: vm.Name, Path: repo, Dest: dest})
	if err != nil || res.Incremental || res.Sent != res.Files || !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "manifest is unreadable") }) {
		t.Errorf("prepare over an unreadable manifest = %+v, %v; want a full import with a note", res, err)
	}

	// The "guest" changes its copy; export makes the branch.
	os.WriteFile(filepath.Join(dest, "guest.txt"), []byte("from the guest\n"), 0o644)
	head := wsGit(t, repo, "rev-parse", "HEAD")
	status := wsGit(t, repo, "status", "--porcelain")
	var xr rpc.WorkspaceExportResult
	if err := e.c.Call(e.ctx(), rpc.MethodWorkspaceExport, rpc.WorkspaceExportParams{VM: vm.Name}, &xr); err != nil {
		t.Fatal(err)
	}
	if xr.Branch != "refs/heads/banger/ws1" || !xr.Dirty {
		t.Errorf("export = %+v", xr)
	}
	if got := wsGit(t, repo, "show", "banger/ws1:guest.txt"); got != "from the guest\n" {
		t.Errorf("branch guest.txt = %q", got)
	}
	if wsGit(t, repo, "rev-parse", "HEAD") != head || wsGit(t, repo, "status", "--porcelain") != status {
		t.Error("export changed the host's HEAD or work tree")
	}
	err = e.c.Call(e.ctx(), rpc.MethodWorkspaceExport, rpc.WorkspaceExportParams{VM: vm.Name}, &xr)
	if !errdefs.IsAlreadyExists(err) {
		t.Errorf("second export without force = %v, want already exists", err)
	}
}

// slowPack is a workspaceInspectRepo whose stream never ends: a tar header
// announcing 1 GiB, then a trickle. It records that it was started and
// abandoned.
type slowPack struct {
	started chan struct{}
	once    sync.Once
	closed  atomic.Bool
}

func (s *slowPack) inspect(ctx context.Context, _ rpc.PeerCred, _ string, in wsPackInput) (*wsPackStream, error) {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var w io.Writer = pw
		flush := func() error { return nil }
		if in.Guest.Zstd { // as the helper would send it
			zw, err := zstd.NewWriter(pw)
			if err != nil {
				return
			}
			w, flush = zw, zw.Flush
		}
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: 1 << 30, Typeflag: tar.TypeReg}); err != nil {
			return
		}
		chunk := make([]byte, 4096)
		for {
			if _, err := tw.Write(chunk); err != nil {
				return
			}
			if err := flush(); err != nil {
				return
			}
			s.once.Do(func() { close(s.started) })
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return &wsPackStream{Reader: pr,
		close: func() { s.closed.Store(true); pr.CloseWithError(errors.New("abandoned")) },
		finish: func() (*wsPackOutput, error) {
			<-done
			return nil, errors.New("the slow pack was abandoned")
		}}, nil
}

// stop and rm --force of a VM are not blocked behind a running import: they
// take vmLocks[id] (the import holds only workspaceLocks[id]), stop the
// VMM, and the import ends with a clear error, its stream abandoned, its
// locks freed and no record written.
func TestWorkspaceImportDoesNotBlockStopOrRemove(t *testing.T) {
	e := vmtSetup(t, nil)
	for _, op := range []string{"stop", "rm"} {
		t.Run(op, func(t *testing.T) {
			slow := &slowPack{started: make(chan struct{})}
			e.d.workspaces.workspaceInspectRepo = slow.inspect
			vm := e.mustCreate(t, "slow-"+op)
			dest := filepath.Join(t.TempDir(), "ws")
			errc := make(chan error, 1)
			go func() {
				_, err := e.prepare(rpc.WorkspacePrepareParams{VM: vm.Name, Path: "/nonexistent-not-read", Dest: dest})
				errc <- err
			}()
			select {
			case <-slow.started:
			case err := <-errc:
				t.Fatalf("prepare ended before streaming: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the import never started streaming")
			}
			time.Sleep(200 * time.Millisecond) // well inside the import

			begin := time.Now()
			var err error
			if op == "stop" {
				_, err = e.stop(vm.Name, 2)
			} else {
				err = e.rm(vm.Name, true)
			}
			took := time.Since(begin)
			if err != nil {
				t.Fatalf("%s during an import: %v", op, err)
			}
			if took > 5*time.Second {
				t.Errorf("%s took %v behind a running import, want it prompt", op, took)
			}
			select {
			case err := <-errc:
				if err == nil || !strings.Contains(err.Error(), "stopped during the workspace operation") || !errdefs.IsFailedPrecondition(err) {
					t.Errorf("import ended with %v, want the VM-stopped failed precondition", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the import did not end after the VM stopped")
			}
			if !slow.closed.Load() {
				t.Error("the pack stream was not abandoned")
			}
			if !vmtWaitFor(2*time.Second, func() bool { return e.d.workspaceLocks.len() == 0 && e.d.vmLocks.len() == 0 }) {
				t.Errorf("locks left: workspace %d, vm %d", e.d.workspaceLocks.len(), e.d.vmLocks.len())
			}
			if _, err := e.d.store.GetWorkspace(context.Background(), vm.ID); !errdefs.IsNotFound(err) {
				t.Errorf("a workspace record was written for the interrupted import: %v", err)
			}
			if op == "stop" {
				e.rm(vm.Name, true)
			}
		})
	}
}

// A guest that returns a malicious stream on export (its init subverted:
// the stream here comes from a file instead of the tar built-in) is
// refused with a clear error, and nothing is written on the host: no
// branch, no file outside the target, HEAD and work tree as they were.
func TestWorkspaceExportRefusesHostileGuest(t *testing.T) {
	e := vmtSetup(t, nil)
	e.d.workspaces.workspaceInspectRepo = inProcessPack
	e.d.workspaces.workspaceExport = inProcessExport
	repo := wsRepo(t)
	vm := e.mustCreate(t, "wsbad")
	dest := filepath.Join(t.TempDir(), "guest", "workspace")
	if _, err := e.prepare(rpc.WorkspacePrepareParams{VM: vm.Name, Path: repo, Dest: dest}); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "pwned")
	streams := map[string][]*tar.Header{
		"parent escape":      {{Name: "../../pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}},
		"absolute path":      {{Name: outside, Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}},
		"device node":        {{Name: "dev", Typeflag: tar.TypeChar, Mode: 0o600, Devmajor: 1, Devminor: 1}},
		"write through link": {{Name: "out", Typeflag: tar.TypeSymlink, Linkname: filepath.Dir(outside)}, {Name: "out/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}},
	}
	head := wsGit(t, repo, "rev-parse", "HEAD")
	status := wsGit(t, repo, "status", "--porcelain")
	refs := wsGit(t, repo, "for-each-ref")
	for name, hdrs := range streams {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range hdrs {
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if h.Size > 0 {
					tw.Write([]byte("evil"))
				}
			}
			tw.Close()
			stream := filepath.Join(t.TempDir(), "hostile.tar")
			if err := os.WriteFile(stream, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			// The fake guest runs commands on this host: cat stands in for
			// a subverted init's tar.
			e.d.workspaces.guestTreeArgv = func(string, workspace.PackOptions) []string { return []string{"/bin/cat", stream} }
			var xr rpc.WorkspaceExportResult
			err := e.c.Call(e.ctx(), rpc.MethodWorkspaceExport, rpc.WorkspaceExportParams{VM: vm.Name}, &xr)
			if err == nil || !strings.Contains(err.Error(), "refused the guest's archive: entry") {
				t.Fatalf("export of a %s stream = %+v, %v; want a refusal naming the entry", name, xr, err)
			}
			if _, err := os.Lstat(outside); !os.IsNotExist(err) {
				t.Errorf("%s was written (%v)", outside, err)
			}
			if wsGit(t, repo, "rev-parse", "HEAD") != head || wsGit(t, repo, "status", "--porcelain") != status || wsGit(t, repo, "for-each-ref") != refs {
				t.Error("the refused export changed the host repo's HEAD, work tree or refs")
			}
		})
	}
	e.d.workspaces.guestTreeArgv = workspace.GuestTreeArgv
}
