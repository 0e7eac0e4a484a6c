package workspace

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Repo is what Inspect found at a path.
type Repo struct {
	// Root is the absolute top of the checkout, or the directory itself
	// when IsGit is false.
	Root string
	// IsGit is false for a directory that is not inside a git work tree:
	// it is imported as a plain directory (every file, no .git, no base).
	IsGit bool
	// GitDir is the checkout's git directory, CommonDir the one holding
	// objects and refs; they differ in a linked worktree.
	GitDir, CommonDir string
	// ObjectFormat is "sha1" or "sha256".
	ObjectFormat string
	// Head is the checked-out commit, "" on an unborn branch.
	Head string
	// Branch is the short branch name; "" with Detached set when HEAD is
	// detached.
	Branch   string
	Detached bool
	// Dirty lists tracked paths whose work tree or index differs from
	// HEAD; Untracked the untracked, not ignored files (as git status
	// --porcelain reports both).
	Dirty, Untracked []string
	// Submodules lists the gitlinks of the index.
	Submodules []Submodule
	// Notes says what will not be copied, or copied with a caveat, in
	// words for the user.
	Notes []string
}

// Submodule is one gitlink of the index.
type Submodule struct {
	Path   string
	Commit string // recorded in the superproject's index
	// Initialised: the submodule's work tree is checked out (it has a
	// .git); its files are then imported like the superproject's.
	Initialised bool
	Head        string // its checked-out commit, when initialised
}

// ErrBareRepo: the path is a bare repository, which has no files to copy.
var ErrBareRepo = errors.New("a bare repository has no work tree to import")

// Inspect looks at path: the git checkout it is in, or a plain directory.
func Inspect(ctx context.Context, g Git, path string) (*Repo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s: not a directory", abs)
	}
	out, err := output(ctx, g, abs, nil, "rev-parse", "--is-bare-repository", "--is-inside-work-tree")
	if err != nil {
		if strings.Contains(err.Error(), "not a git repository") {
			return &Repo{Root: abs, Notes: []string{abs + " is not in a git checkout: imported as a plain directory (every file, no history; export needs a git checkout)"}}, nil
		}
		return nil, err
	}
	if f := strings.Fields(string(out)); len(f) != 2 || f[0] == "true" || f[1] != "true" {
		if len(f) == 2 && f[0] == "true" {
			return nil, fmt.Errorf("%s: %w", abs, ErrBareRepo)
		}
		return nil, fmt.Errorf("%s: inside a git directory, not a work tree", abs)
	}
	r := &Repo{IsGit: true}
	out, err = output(ctx, g, abs, nil, "rev-parse", "--show-toplevel", "--absolute-git-dir", "--git-common-dir", "--show-object-format")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 4 {
		return nil, fmt.Errorf("git rev-parse: unexpected output %q", out)
	}
	r.Root, r.GitDir, r.CommonDir, r.ObjectFormat = lines[0], lines[1], lines[2], lines[3]
	if !filepath.IsAbs(r.CommonDir) {
		r.CommonDir = filepath.Join(abs, r.CommonDir)
	}
	r.CommonDir = filepath.Clean(r.CommonDir)
	if r.Head, err = line(ctx, g, r.Root, nil, "rev-parse", "-q", "--verify", "HEAD^{commit}"); err != nil {
		if exitCode(err) != 1 {
			return nil, err
		}
		r.Head = "" // unborn branch
	}
	if r.Branch, err = line(ctx, g, r.Root, nil, "symbolic-ref", "-q", "--short", "HEAD"); err != nil {
		if exitCode(err) != 1 {
			return nil, err
		}
		r.Branch, r.Detached = "", true
	}
	if err := r.status(ctx, g); err != nil {
		return nil, err
	}
	if err := r.submodules(ctx, g); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(r.CommonDir, "objects", "info", "alternates")); err == nil {
		r.Notes = append(r.Notes, "the repository borrows objects from another one (objects/info/alternates): that file is not copied, so history the guest needs from it is missing; run `git repack -a -d` to make the repository self-contained")
	}
	return r, nil
}

// status fills Dirty and Untracked from git status --porcelain -z.
func (r *Repo) status(ctx context.Context, g Git) error {
	out, err := output(ctx, g, r.Root, nil, "status", "--porcelain=v1", "-z", "--untracked-files=all")
	if err != nil {
		return err
	}
	recs := splitNUL(out)
	for i := 0; i < len(recs); i++ {
		rec := recs[i]
		if len(rec) < 4 {
			return fmt.Errorf("git status: unexpected record %q", rec)
		}
		xy, p := rec[:2], rec[3:]
		switch {
		case xy == "??":
			r.Untracked = append(r.Untracked, p)
		case xy == "!!":
		default:
			r.Dirty = append(r.Dirty, p)
			if xy[0] == 'R' || xy[0] == 'C' {
				i++ // the rename's source follows
			}
		}
	}
	return nil
}

// submodules fills Submodules from the index's gitlinks.
func (r *Repo) submodules(ctx context.Context, g Git) error {
	out, err := output(ctx, g, r.Root, nil, "ls-files", "-z", "--stage")
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, rec := range splitNUL(out) {
		meta, p, ok := strings.Cut(rec, "\t")
		f := strings.Fields(meta)
		if !ok || len(f) != 3 || f[0] != "160000" || seen[p] {
			continue
		}
		seen[p] = true
		s := Submodule{Path: p, Commit: f[1]}
		if _, err := os.Lstat(filepath.Join(r.Root, p, ".git")); err == nil {
			head, err := line(ctx, g, filepath.Join(r.Root, p), nil, "rev-parse", "-q", "--verify", "HEAD^{commit}")
			if err == nil {
				s.Initialised, s.Head = true, head
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if !s.Initialised {
			r.Notes = append(r.Notes, fmt.Sprintf("submodule %q is not initialised: only its empty directory is imported", p))
		}
		r.Submodules = append(r.Submodules, s)
	}
	if len(r.Submodules) > 0 {
		r.Notes = append(r.Notes, "submodules are imported as checked out (their files and git directories); export brings back the superproject's changes only, never a submodule's")
	}
	return nil
}
