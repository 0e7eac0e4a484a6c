package workspace

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// source is one entry Pack may write: read from root/rel, or generated.
type source struct {
	name string   // in the archive and the manifest
	root *os.Root // nil: data is the content
	rel  string
	data []byte // generated content (a sanitised git config)
	dirs bool   // parents are checked for symlinks in root (work tree files)
	dir  bool   // an empty directory (an uninitialised submodule)
}

// workFiles lists the work tree's files to import, relative to dir, each
// prefixed with prefix: tracked plus untracked-not-ignored (git ls-files
// -z --cached --others --exclude-standard), and for each initialised
// submodule its own files and git directory; an uninitialised one is
// listed as its directory, with a trailing "/". A tracked file deleted from
// the work tree is listed here and skipped by Pack when it is not found.
func workFiles(ctx context.Context, g Git, dir, prefix string, notes *[]string) ([]string, error) {
	out, err := output(ctx, g, dir, nil, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		return nil, err
	}
	stage, err := output(ctx, g, dir, nil, "ls-files", "-z", "--stage")
	if err != nil {
		return nil, err
	}
	gitlinks := map[string]bool{}
	for _, rec := range splitNUL(stage) {
		if meta, p, ok := strings.Cut(rec, "\t"); ok && strings.HasPrefix(meta, "160000 ") {
			gitlinks[p] = true
		}
	}
	var files []string
	for _, p := range splitNUL(out) {
		switch {
		case gitlinks[p]:
			sub := filepath.Join(dir, p)
			if _, err := os.Lstat(filepath.Join(sub, ".git")); err != nil {
				files = append(files, prefix+p+"/") // not initialised: its empty directory
				continue
			}
			inner, err := workFiles(ctx, g, sub, prefix+p+"/", notes)
			if err != nil {
				return nil, err
			}
			files = append(files, inner...)
			files = append(files, prefix+p+"/.git") // a gitdir file, or a directory (walked by gitFiles)
		case strings.HasSuffix(p, "/"):
			*notes = append(*notes, "untracked "+prefix+p+" holds its own git repository and is not imported")
		default:
			files = append(files, prefix+p)
		}
	}
	slices.Sort(files)
	return slices.Compact(files), nil
}

// plainFiles lists every file and symlink below root (a plain directory).
func plainFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	return files, err
}

// gitDirRule says what becomes of a path inside a git directory.
type gitDirRule int

const (
	gitKeep gitDirRule = iota
	gitSkip
	gitConfig // replaced by a sanitised copy
)

// ruleFor is the rule for rel (slash-separated) inside a git directory.
//
// Skipped: hooks (code), worktrees (other checkouts' state), lfs (a cache
// of what is checked out), fsmonitor state, lock files, gc state,
// objects/info/alternates (a host path), config.worktree. The config is
// rewritten to the settings that make git read the repository and the work
// tree as the host does (see sanitizeConfig).
func ruleFor(rel string) gitDirRule {
	top, _, _ := strings.Cut(rel, "/")
	switch {
	case top == "hooks", top == "worktrees", top == "lfs", strings.HasPrefix(top, "fsmonitor"):
		return gitSkip
	case rel == "objects/info/alternates", rel == "config.worktree", rel == "gc.pid", rel == "gc.log":
		return gitSkip
	case strings.HasSuffix(rel, ".lock"):
		return gitSkip
	case strings.HasPrefix(rel, "objects/pack/") && (strings.HasPrefix(path.Base(rel), "multi-pack-index") ||
		strings.HasSuffix(rel, ".rev") || strings.HasSuffix(rel, ".bitmap")):
		// Offsets into packs, which the guest may rebuild (GitPackRecord);
		// git does without them: it computes reverse indexes when it needs
		// them, and bitmaps and the multi-pack index only speed it up.
		return gitSkip
	case rel == "config":
		return gitConfig
	}
	return gitKeep
}

// gitSkeleton are the directories of a git directory sent even when
// empty: git does not take a directory without refs/ and objects/ for a
// repository, and a gc'd one often has every ref packed.
var gitSkeleton = []string{"refs", "refs/heads", "refs/tags", "objects", "objects/info", "objects/pack"}

// perWorktree names the files of a linked worktree's own git directory
// that the guest's .git takes from it rather than from the common one.
var perWorktree = []string{"HEAD", "index", "ORIG_HEAD", "MERGE_HEAD", "MERGE_MSG", "CHERRY_PICK_HEAD", "REVERT_HEAD", "FETCH_HEAD", "logs/HEAD"}

// gitFiles lists the sources of the guest's .git for the checkout whose
// git directory is gitDir (common objects and refs in commonDir), as
// archive names under prefix (".git/").
func gitFiles(ctx context.Context, g Git, gitDir, commonDir, prefix string, userConf bool, workDir string) ([]source, error) {
	var srcs []source
	own := gitDir != commonDir
	if own {
		root, err := os.OpenRoot(gitDir)
		if err != nil {
			return nil, err
		}
		for _, rel := range perWorktree {
			if fi, err := root.Lstat(rel); err == nil && fi.Mode().IsRegular() {
				srcs = append(srcs, source{name: prefix + rel, root: root, rel: rel})
			}
		}
		// sharedindex.* of a split index sit beside the index.
		ents, err := os.ReadDir(gitDir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "sharedindex.") && e.Type().IsRegular() {
				srcs = append(srcs, source{name: prefix + e.Name(), root: root, rel: e.Name()})
			}
		}
	}
	root, err := os.OpenRoot(commonDir)
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(commonDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == commonDir {
			return nil
		}
		rel, err := filepath.Rel(commonDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if own && (slices.Contains(perWorktree, rel) || strings.HasPrefix(rel, "sharedindex.")) {
			return nil
		}
		if rel == "modules" && d.IsDir() {
			return filepath.SkipDir // below
		}
		switch ruleFor(rel) {
		case gitSkip:
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case gitConfig:
			data, err := sanitizeConfig(ctx, g, p, userConf, workDir)
			if err != nil {
				return err
			}
			srcs = append(srcs, source{name: prefix + rel, data: data})
			return nil
		}
		if d.Type().IsRegular() {
			srcs = append(srcs, source{name: prefix + rel, root: root, rel: rel})
		}
		if d.IsDir() && slices.Contains(gitSkeleton, rel) {
			srcs = append(srcs, source{name: prefix + rel, root: root, rel: rel, dir: true})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	mods, err := moduleDirs(filepath.Join(commonDir, "modules"))
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		rel, _ := filepath.Rel(commonDir, m)
		sub, err := gitFiles(ctx, g, m, m, prefix+filepath.ToSlash(rel)+"/", false, "")
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, sub...)
	}
	return srcs, nil
}

// moduleDirs finds the submodule git directories below dir (a directory
// holding HEAD; names may have slashes, so search).
func moduleDirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if fi, err := os.Lstat(filepath.Join(p, "HEAD")); err == nil && fi.Mode().IsRegular() {
			out = append(out, p)
			continue
		}
		sub, err := moduleDirs(p)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

// parents lists name's parent directories, outermost first.
func parents(name string) []string {
	var out []string
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		out = append(out, d)
	}
	slices.Reverse(out)
	return out
}
