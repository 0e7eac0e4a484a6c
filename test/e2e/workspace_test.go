package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testing/guestkernel"
)

// setupGitImage imports the kernel and the README's base image: busybox
// plus git from Debian's packages (scripts/base-image.sh).
func (e *env) setupGitImage() {
	e.t.Helper()
	k := guestkernel.Dir(e.t)
	e.ok("kernel", "import", filepath.Join(k, "vmlinux"), "--initrd", filepath.Join(k, "initrd"), "--name", "debian", "--default")
	tree := filepath.Join(e.dir, "gittree")
	if out, err := exec.Command("bash", filepath.Join(guestkernel.RepoRoot(e.t), "scripts", "base-image.sh"), tree).CombinedOutput(); err != nil {
		e.t.Fatalf("base-image.sh (needs apt-get download of busybox-static and git): %v\n%s", err, out)
	}
	e.ok("image", "import", tree, "--name", "gitimg")
}

// hostGit runs git on the host with no user config and no optional locks
// (a status must not refresh the index: the test compares it).
func hostGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_OPTIONAL_LOCKS=0",
		"GIT_AUTHOR_NAME=Host", "GIT_AUTHOR_EMAIL=host@example.invalid", "GIT_COMMITTER_NAME=Host", "GIT_COMMITTER_EMAIL=host@example.invalid")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v in %s: %v\n%s", args, dir, err, out)
	}
	return string(out)
}

// fileSums is every file's path, mode and content (symlinks: target) below
// dir, .git excluded: the host's work tree as the test compares it.
func fileSums(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.IsDir() && rel == ".git" {
			return filepath.SkipDir
		}
		b.WriteString(rel + " " + fi.Mode().String() + " ")
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			b.WriteString("-> " + l)
		case fi.Mode().IsRegular():
			c, _ := os.ReadFile(p)
			b.Write(c)
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

// TestWorkspace, in a real guest with git: banger run in a checkout copies
// it (dirty, untracked and ignored files as git sees them; awkward names;
// a symlink pointing outside copied as a symlink) and git status agrees;
// a second prepare sends only what changed; the guest's commit and its
// uncommitted changes come back as branch banger/NAME whose tree is the
// guest's, byte for byte, with the host's work tree, index and HEAD
// untouched; exporting again without --force is refused; --patch writes
// a patch; a plain directory is imported as such, said clearly.
func TestWorkspace(t *testing.T) {
	requireTier3(t)
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git on the host (Debian package git)")
	}
	e := newEnv(t, "vmm = \"qemu\"\n")
	e.setupGitImage()

	repo := filepath.Join(e.dir, "repo")
	os.MkdirAll(filepath.Join(repo, "sub"), 0o755)
	files := map[string]string{
		"README":            "hello\n",
		"a.txt":             "a\n",
		"del.txt":           "to delete\n",
		"old.txt":           "to rename\n",
		"sub/mode.sh":       "#!/bin/sh\necho mode\n",
		"with space.txt":    "space\n",
		"new\nline.txt":     "newline\n",
		"-leading-dash.txt": "dash\n",
		"bad\xff.txt":       "not utf-8\n",
		".gitignore":        "*.o\n/build/\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(repo, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("/etc/passwd", filepath.Join(repo, "outside"))
	hostGit(t, repo, "init", "-q", "-b", "main")
	hostGit(t, repo, "add", "-A")
	hostGit(t, repo, "commit", "-qm", "first")
	// A second commit and gc: HEAD's objects and history in one pack,
	// which the import sends in transfer form (the guest rebuilds HEAD's
	// blobs from the work tree), every ref packed.
	os.WriteFile(filepath.Join(repo, "old.txt"), []byte("to rename\nsecond version\n"), 0o644)
	hostGit(t, repo, "commit", "-qam", "base")
	hostGit(t, repo, "gc", "-q")
	// Dirty (modified, staged), untracked and ignored files.
	os.WriteFile(filepath.Join(repo, "a.txt"), []byte("a dirty\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "README"), []byte("hello staged\n"), 0o644)
	hostGit(t, repo, "add", "README")
	os.WriteFile(filepath.Join(repo, "untracked.txt"), []byte("untracked\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "obj.o"), []byte("ignored\n"), 0o644)
	os.MkdirAll(filepath.Join(repo, "build"), 0o755)
	os.WriteFile(filepath.Join(repo, "build", "out"), []byte("ignored\n"), 0o644)
	hostStatus := hostGit(t, repo, "status", "--porcelain")

	// banger run in the checkout: the command runs in /workspace.
	out, errs, code := e.runIn(filepath.Join(repo, "sub"), "run", "--image", "gitimg", "--name", "ws", "--", "sh", "-c", "pwd; git status --porcelain")
	if code != 0 {
		t.Fatalf("banger run: exit %d\n%s\n%s\ndaemon:\n%s", code, out, errs, tail(e.log.String(), 30))
	}
	if !strings.Contains(errs, "copied "+repo+" into vm ws at /workspace") {
		t.Errorf("run did not say it copied the checkout: %s", errs)
	}
	pwd, guestStatus, _ := strings.Cut(out, "\n")
	if pwd != "/workspace/sub" {
		t.Errorf("the command ran in %q, want /workspace/sub", pwd)
	}
	if guestStatus != hostStatus {
		t.Errorf("git status in the guest:\n%s\non the host:\n%s", guestStatus, hostStatus)
	}
	guest := func(script string) string {
		t.Helper()
		return e.ok("exec", "ws", "--", "sh", "-c", script)
	}
	// The pack went in transfer form (HEAD's clean blobs from the work
	// tree), the stream zstd-compressed; the rebuilt pack is whole and
	// the history the host's.
	if l := e.log.String(); !strings.Contains(l, "packs_rebuilt=1") || !strings.Contains(l, "wire_bytes=") {
		t.Errorf("the import did not rebuild the pack in the guest:\n%s", tail(l, 10))
	}
	if got, want := guest("cd /workspace && git fsck --full --strict --no-dangling 2>&1 && git log --oneline --stat"), hostGit(t, repo, "log", "--oneline", "--stat"); got != want {
		t.Errorf("guest fsck and log:\n%s\nhost log:\n%s", got, want)
	}
	if got := guest("cd /workspace && readlink outside && test ! -e obj.o && test ! -e build && cat ./-leading-dash.txt 'with space.txt'"); got != "/etc/passwd\ndash\nspace\n" {
		t.Errorf("guest files: %q", got)
	}

	// Incremental: two files changed and one removed on the host.
	os.WriteFile(filepath.Join(repo, "a.txt"), []byte("a dirty again\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "with space.txt"), []byte("space changed\n"), 0o644)
	os.Remove(filepath.Join(repo, "untracked.txt"))
	var res struct {
		Incremental bool
		Files, Sent int
		Deleted     int
		SentBytes   int64 `json:"sent_bytes"`
		IsGit       bool  `json:"is_git"`
		HostPath    string
		Notes       []string
	}
	if err := json.Unmarshal([]byte(e.ok("workspace", "prepare", "ws", repo, "-o", "json")), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Incremental || res.Sent != 2 || res.Deleted != 1 || res.Files < 20 {
		t.Errorf("second prepare = %+v, want incremental, 2 sent, 1 deleted", res)
	}
	if got := guest("cd /workspace && cat a.txt 'with space.txt'; if test -e untracked.txt; then echo still there; fi"); got != "a dirty again\nspace changed\n" {
		t.Errorf("after the incremental prepare the guest has %q", got)
	}

	// The guest works: modify, add, delete, rename, chmod, commit; then
	// leaves some changes uncommitted.
	guest(`set -e; cd /workspace
echo guest >> a.txt; echo added > added.txt; rm del.txt; git mv old.txt renamed.txt; chmod +x sub/mode.sh
git add -A; git -c user.name=Guest -c user.email=guest@example.invalid commit -qm "guest commit"
echo uncommitted >> README; echo more > extra.txt; ln -s ../README sub/link; rm 'with space.txt'`)
	guestTree := strings.TrimSpace(guest("cd /workspace && git add -A && git write-tree"))

	head, index := hostGit(t, repo, "rev-parse", "HEAD"), hostGit(t, repo, "ls-files", "-s", "--debug")
	status, work := hostGit(t, repo, "status", "--porcelain"), fileSums(t, repo)
	out = e.ok("workspace", "export", "ws")
	if !strings.Contains(out, "Branch banger/ws") {
		t.Errorf("export said: %s", out)
	}
	if got := strings.TrimSpace(hostGit(t, repo, "rev-parse", "banger/ws^{tree}")); got != guestTree {
		t.Errorf("branch tree %s, guest's files make %s", got, guestTree)
	}
	if log := hostGit(t, repo, "log", "--format=%s", "main..banger/ws"); !strings.Contains(log, "guest commit") || strings.Count(log, "\n") != 2 {
		t.Errorf("branch log:\n%s\nwant the guest's commit and one for its uncommitted changes", log)
	}
	if hostGit(t, repo, "rev-parse", "HEAD") != head || hostGit(t, repo, "ls-files", "-s", "--debug") != index ||
		hostGit(t, repo, "status", "--porcelain") != status || fileSums(t, repo) != work {
		t.Error("export changed the host's HEAD, index or work tree")
	}
	if _, errs, code := e.run("workspace", "export", "ws"); code == 0 || !strings.Contains(errs, "already exists") {
		t.Errorf("second export without --force: exit %d, %s", code, errs)
	}
	e.ok("workspace", "export", "ws", "--force")
	patch := filepath.Join(e.dir, "ws.patch")
	e.ok("workspace", "export", "ws", "--patch", patch)
	if b, err := os.ReadFile(patch); err != nil || !bytes.HasPrefix(b, []byte("diff --git")) || !bytes.Contains(b, []byte("added.txt")) {
		t.Errorf("patch: %v\n%.300s", err, b)
	}

	// A plain directory.
	plain := filepath.Join(e.dir, "plain")
	os.MkdirAll(plain, 0o755)
	os.WriteFile(filepath.Join(plain, "f"), []byte("plain\n"), 0o644)
	out, errs, code = e.run("workspace", "prepare", "ws", plain, "--dest", "/plain")
	if code != 0 || !strings.Contains(out, "plain directory (not a git checkout)") || !strings.Contains(errs, "is not in a git checkout") {
		t.Errorf("plain prepare: exit %d\n%s\n%s", code, out, errs)
	}
	if got := guest("cat /plain/f"); got != "plain\n" {
		t.Errorf("plain file in the guest: %q", got)
	}
	if _, errs, code := e.run("workspace", "export", "ws"); code == 0 || !strings.Contains(errs, "not a git checkout") {
		t.Errorf("export of a plain directory: exit %d, %s", code, errs)
	}

	// banger run outside a checkout copies nothing, says so, and runs.
	out, errs, code = e.runIn(plain, "run", "--rm", "--image", "gitimg", "--", "sh", "-c", "test -e /workspace/f && echo copied || echo none")
	if code != 0 || out != "none\n" || !strings.Contains(errs, "is not in a git checkout: no workspace copied") {
		t.Errorf("run outside a checkout: exit %d, stdout %q\n%s", code, out, errs)
	}
}
