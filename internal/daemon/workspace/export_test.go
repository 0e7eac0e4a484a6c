package workspace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"banger/internal/guestinit"
	"github.com/google/go-cmp/cmp"
)

// hostState is everything Export must leave alone in a host checkout.
type hostState struct {
	Status, Head, IndexSum, Refs, WorkTree string
	Objects                                []string
}

func snapshot(t *testing.T, g Git, dir string) hostState {
	t.Helper()
	idx, err := os.ReadFile(filepath.Join(dir, ".git", "index"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(idx)
	var objs []string
	filepath.WalkDir(filepath.Join(dir, ".git", "objects"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objs = append(objs, p)
		}
		return nil
	})
	var tree []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		fi, _ := d.Info()
		b, _ := os.ReadFile(p)
		tree = append(tree, p+" "+fi.Mode().String()+" "+string(b))
		return nil
	})
	sort.Strings(objs)
	return hostState{
		Status:   run(t, g, dir, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored"),
		Head:     run(t, g, dir, "rev-parse", "HEAD", "--symbolic-full-name", "HEAD"),
		IndexSum: hex.EncodeToString(sum[:]),
		Refs:     run(t, g, dir, "for-each-ref"),
		WorkTree: strings.Join(tree, "\n"),
		Objects:  objs,
	}
}

// guestWork changes the guest's copy the ways a user would.
func guestWork(t *testing.T, guest string) {
	t.Helper()
	write(t, guest, "README", "changed in the guest\n", 0o644)
	write(t, guest, "added/new file", "new\n", 0o644)
	write(t, guest, "weird/-added\n\xff", "odd\n", 0o755)
	write(t, guest, "ignored.o", "build output\n", 0o644)
	os.Remove(filepath.Join(guest, "src/main.go"))
	if err := os.Rename(filepath.Join(guest, "run.sh"), filepath.Join(guest, "bin-run.sh")); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(guest, "weird/with space"), 0o755)
	os.Remove(filepath.Join(guest, "link"))
	os.Symlink("../../outside", filepath.Join(guest, "link"))
}

// guestTree is what the guest init's tar built-in sends for dir.
func guestTree(t *testing.T, dir string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	if err := guestinit.Tar(&buf, dir, "."); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// treeOf is the tree git would record for dir's work tree (its own .git).
func treeOf(t *testing.T, g Git, dir string) string {
	t.Helper()
	run(t, g, dir, "add", "--all")
	return strings.TrimSpace(run(t, g, dir, "write-tree"))
}

func prepared(t *testing.T, g Git) (host, guest string, m *Manifest) {
	t.Helper()
	host = newRepo(t, g)
	repo, err := Inspect(context.Background(), g, host)
	if err != nil {
		t.Fatal(err)
	}
	guest = filepath.Join(t.TempDir(), "workspace")
	return host, guest, packInto(t, g, repo, guest, nil)
}

func TestExportWithoutGuestGit(t *testing.T) {
	g := testGit(t)
	host, guest, m := prepared(t, g)
	before := snapshot(t, g, host)
	guestWork(t, guest)
	res, err := Export(context.Background(), g, host, m.Base, guestTree(t, guest), ExportOptions{Branch: "banger/t1"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Dirty || res.Commits != 0 || res.Branch != "refs/heads/banger/t1" {
		t.Errorf("result %+v", res)
	}
	after := snapshot(t, g, host)
	if d := cmp.Diff(before.Status, after.Status); d != "" {
		t.Errorf("host status changed:\n%s", d)
	}
	if before.Head != after.Head || before.IndexSum != after.IndexSum || before.WorkTree != after.WorkTree {
		t.Errorf("host HEAD, index or work tree changed")
	}
	if got, want := strings.TrimSpace(run(t, g, host, "rev-parse", "banger/t1^{tree}")), treeOf(t, g, guest); got != want {
		t.Errorf("branch tree %s, guest's work tree %s:\n%s", got, want, run(t, g, host, "diff", "--stat", "banger/t1", want))
	}
	if p := strings.TrimSpace(run(t, g, host, "rev-parse", "banger/t1^")); p != m.Base {
		t.Errorf("parent %s, want base %s", p, m.Base)
	}
	diff := run(t, g, host, "diff", "--name-status", "-M", m.Base, "banger/t1")
	for _, want := range []string{"R100\trun.sh\tbin-run.sh", "D\tsrc/main.go", "A\tadded/new file", "M\tlink", "M\tREADME"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}
	if strings.Contains(diff, "ignored.o") {
		t.Errorf("an ignored file was exported:\n%s", diff)
	}
	if mode := run(t, g, host, "ls-tree", "banger/t1", "--", "weird/with space"); !strings.HasPrefix(mode, "100755") {
		t.Errorf("mode change lost: %s", mode)
	}

	// The branch now exists: refused, then moved with force.
	_, err = Export(context.Background(), g, host, m.Base, guestTree(t, guest), ExportOptions{Branch: "banger/t1"})
	if !errors.Is(err, ErrBranchExists) {
		t.Errorf("second export: %v, want ErrBranchExists", err)
	}
	write(t, guest, "README", "again\n", 0o644)
	res2, err := Export(context.Background(), g, host, m.Base, guestTree(t, guest), ExportOptions{Branch: "banger/t1", Force: true})
	if err != nil || res2.Commit == res.Commit {
		t.Errorf("forced export: %v %+v", err, res2)
	}
	_, err = Export(context.Background(), g, host, m.Base, guestTree(t, guest), ExportOptions{Branch: "main", Force: true})
	if !errors.Is(err, ErrBranchCheckedOut) {
		t.Errorf("export onto the checked-out branch: %v", err)
	}
	_, err = Export(context.Background(), g, host, strings.Repeat("1", 40), guestTree(t, guest), ExportOptions{Branch: "banger/t2"})
	if !errors.Is(err, ErrBaseMissing) {
		t.Errorf("missing base: %v", err)
	}
}

func TestExportWithGuestGit(t *testing.T) {
	g := testGit(t)
	host, guest, m := prepared(t, g)
	before := snapshot(t, g, host)
	guestWork(t, guest)
	run(t, g, guest, "add", "--all")
	run(t, g, guest, "commit", "-q", "-m", "guest commit 1")
	write(t, guest, "second", "2\n", 0o644)
	run(t, g, guest, "add", "second")
	run(t, g, guest, "commit", "-q", "-m", "guest commit 2")
	guestHead := strings.TrimSpace(run(t, g, guest, "rev-parse", "HEAD"))
	write(t, guest, "uncommitted", "u\n", 0o644)

	bundle := runArgv(t, g, GuestBundleArgv(guest, m.Base))
	res, err := Export(context.Background(), g, host, m.Base, guestTree(t, guest), ExportOptions{Branch: "banger/t", Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	if res.Commits != 2 || !res.Dirty {
		t.Errorf("result %+v", res)
	}
	if p := strings.TrimSpace(run(t, g, host, "rev-parse", "banger/t^")); p != guestHead {
		t.Errorf("the guest's commits were not kept: parent %s, guest HEAD %s", p, guestHead)
	}
	if got, want := strings.TrimSpace(run(t, g, host, "rev-parse", "banger/t^{tree}")), treeOf(t, g, guest); got != want {
		t.Errorf("branch tree %s, guest's %s", got, want)
	}
	after := snapshot(t, g, host)
	if before.Status != after.Status || before.Head != after.Head || before.IndexSum != after.IndexSum || before.WorkTree != after.WorkTree {
		t.Errorf("host changed")
	}
}

func TestExportPatch(t *testing.T) {
	g := testGit(t)
	host, guest, m := prepared(t, g)
	before := snapshot(t, g, host)
	guestWork(t, guest)
	var patch bytes.Buffer
	if _, err := Export(context.Background(), g, host, m.Base, guestTree(t, guest), ExportOptions{Patch: &patch}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, snapshot(t, g, host)); d != "" {
		t.Errorf("a patch export changed the host:\n%s", d)
	}
	// The patch applied to the base gives the guest's tree.
	clone := filepath.Join(t.TempDir(), "clone")
	run(t, g, "/", "clone", "-q", "--", host, clone)
	run(t, g, clone, "checkout", "-q", m.Base)
	p := filepath.Join(t.TempDir(), "p")
	os.WriteFile(p, patch.Bytes(), 0o600)
	run(t, g, clone, "apply", "--index", "--", p)
	if got, want := strings.TrimSpace(run(t, g, clone, "write-tree")), treeOf(t, g, guest); got != want {
		t.Errorf("patched tree %s, guest's %s", got, want)
	}
}

func runArgv(t *testing.T, g ExecGit, argv []string) *bytes.Buffer {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), g.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return &out
}
