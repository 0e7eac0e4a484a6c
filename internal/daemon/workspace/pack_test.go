package workspace

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestInspect(t *testing.T) {
	g := testGit(t)
	dir := newRepo(t, g)
	r, err := Inspect(context.Background(), g, filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Root != dir || !r.IsGit || r.Branch != "main" || r.Detached || len(r.Head) != 40 || r.ObjectFormat != "sha1" {
		t.Errorf("repo = %+v", r)
	}
	if d := cmp.Diff([]string{"README", "to-delete", "to-stage"}, r.Dirty); d != "" {
		t.Errorf("dirty (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"untracked file"}, r.Untracked); d != "" {
		t.Errorf("untracked (-want +got):\n%s", d)
	}

	plain := t.TempDir()
	r, err = Inspect(context.Background(), g, plain)
	if err != nil {
		t.Fatal(err)
	}
	if r.IsGit || r.Root != plain || len(r.Notes) != 1 {
		t.Errorf("plain dir = %+v", r)
	}

	run(t, g, dir, "checkout", "-q", "--detach")
	r, err = Inspect(context.Background(), g, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Detached || r.Branch != "" {
		t.Errorf("detached: %+v", r)
	}
}

// TestPackGuestStatus: the guest's git sees what the host's sees.
func TestPackGuestStatus(t *testing.T) {
	g := testGit(t)
	dir := newRepo(t, g)
	repo, err := Inspect(context.Background(), g, dir)
	if err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(t.TempDir(), "workspace")
	m := packInto(t, g, repo, guest, nil)
	if m.Base != repo.Head {
		t.Errorf("base %s, want %s", m.Base, repo.Head)
	}
	for _, a := range [][]string{
		{"status", "--porcelain=v1", "-z", "--untracked-files=all"},
		{"log", "--format=%H %s"},
		{"diff", "--binary"},
		{"diff", "--cached", "--binary"},
		{"branch", "-vv"},
	} {
		if d := cmp.Diff(run(t, g, dir, a...), run(t, g, guest, a...)); d != "" {
			t.Errorf("git %v differs in the guest (-host +guest):\n%s", a, d)
		}
	}
	for _, p := range []string{"obj.o", "build", ".git/hooks", "to-delete"} {
		if _, err := os.Lstat(filepath.Join(guest, p)); err == nil {
			t.Errorf("%s was imported", p)
		}
	}
	if l, _ := os.Readlink(filepath.Join(guest, "outside-link")); l != "/etc/passwd" {
		t.Errorf("outside-link -> %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(guest, "run.sh")); fi == nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("run.sh lost its exec bit")
	}
	var names []string
	for _, e := range m.Entries {
		names = append(names, e.Path)
	}
	for _, n := range weirdNames {
		if !slices.Contains(names, "weird/"+n) {
			t.Errorf("manifest lacks %q", "weird/"+n)
		}
	}
}
