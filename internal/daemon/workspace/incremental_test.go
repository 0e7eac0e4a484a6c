package workspace

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPackIncremental(t *testing.T) {
	g := testGit(t)
	host, guest, m := prepared(t, g)

	// Through JSON, as the daemon stores it: non-UTF-8 names survive.
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var prev Manifest
	if err := json.Unmarshal(b, &prev); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(m.Entries, prev.Entries); d != "" {
		t.Fatalf("manifest JSON round trip (-want +got):\n%s", d)
	}

	write(t, host, "README", "edited again\n", 0o644)
	write(t, host, "brand new", "n\n", 0o644)
	os.Remove(filepath.Join(host, "weird/with space"))
	os.Remove(filepath.Join(host, "untracked file"))
	write(t, host, "untracked file/now a dir", "d\n", 0o644) // file -> directory
	os.Chmod(filepath.Join(host, "weird/--"), 0o755)
	repo, err := Inspect(context.Background(), g, host)
	if err != nil {
		t.Fatal(err)
	}
	m2 := packInto(t, g, repo, guest, &prev)
	// README, brand new, now a dir, weird/--, and the index git rewrote.
	if m2.Stats.Sent > 6 || m2.Stats.Deleted != 2 {
		t.Errorf("incremental pack sent %d entries, deleted %d: %+v", m2.Stats.Sent, m2.Stats.Deleted, m2.Stats)
	}
	args := []string{"status", "--porcelain=v1", "-z", "--untracked-files=all"}
	if d := cmp.Diff(run(t, g, host, args...), run(t, g, guest, args...)); d != "" {
		t.Errorf("guest status after an incremental pack (-host +guest):\n%s", d)
	}
	for _, p := range []string{"weird/with space", "untracked file"} {
		if fi, err := os.Lstat(filepath.Join(guest, p)); err == nil && !fi.IsDir() {
			t.Errorf("%s not deleted in the guest", p)
		}
	}

	// Nothing changed: nothing sent, nothing read.
	m3 := packInto(t, g, repo, guest, m2)
	if m3.Stats.Sent != 0 || m3.Stats.Deleted != 0 || m3.Stats.Hashed != 0 {
		t.Errorf("an unchanged checkout sent %+v", m3.Stats)
	}
}

// TestPackLinkedWorktreeAndSubmodule: a linked worktree becomes a plain
// repository in the guest, and an initialised submodule comes with its
// files and git directory.
func TestPackLinkedWorktreeAndSubmodule(t *testing.T) {
	g := testGit(t)
	sub := newRepo(t, g)
	run(t, g, sub, "add", "--all")
	run(t, g, sub, "commit", "-q", "-m", "sub")
	main := newRepo(t, g)
	run(t, g, main, "-c", "protocol.file.allow=always", "submodule", "add", "-q", "--", sub, "modules/sub")
	run(t, g, main, "commit", "-q", "-m", "with a submodule")
	wt := filepath.Join(t.TempDir(), "wt")
	run(t, g, main, "worktree", "add", "-q", "-b", "feature", "--", wt)
	write(t, wt, "README", "worktree change\n", 0o644)
	for _, dir := range []string{main, wt} {
		repo, err := Inspect(context.Background(), g, dir)
		if err != nil {
			t.Fatal(err)
		}
		guest := filepath.Join(t.TempDir(), "ws")
		packInto(t, g, repo, guest, nil)
		for _, a := range [][]string{{"status", "--porcelain=v1", "-z", "--untracked-files=all"}, {"log", "--format=%H %d %s"}} {
			if d := cmp.Diff(run(t, g, dir, a...), run(t, g, guest, a...)); d != "" {
				t.Errorf("%s: git %v differs in the guest (-host +guest):\n%s", filepath.Base(dir), a, d)
			}
		}
		if dir == main {
			if len(repo.Submodules) != 1 || !repo.Submodules[0].Initialised {
				t.Errorf("submodules: %+v", repo.Submodules)
			}
			if d := cmp.Diff(run(t, g, filepath.Join(dir, "modules/sub"), "log", "--format=%H"), run(t, g, filepath.Join(guest, "modules/sub"), "log", "--format=%H")); d != "" {
				t.Errorf("submodule history differs:\n%s", d)
			}
		}
	}
}
