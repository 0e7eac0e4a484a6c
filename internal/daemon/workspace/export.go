package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ExportOptions says what Export makes of a guest's work.
type ExportOptions struct {
	// Branch is the branch to create ("banger/NAME"), without refs/heads/.
	Branch string
	// Force lets Export move an existing branch (never one checked out
	// in any worktree of the host repository).
	Force bool
	// Bundle, when the guest has git and committed since the base, is the
	// output of GuestBundleArgv: its commits are kept as commits.
	Bundle io.Reader
	// Patch, when set, receives `git diff --binary` from the base to the
	// result instead of a branch being made: the host repository is then
	// only read.
	Patch io.Writer
	// Message of the commit holding the guest's uncommitted changes.
	Message string
	// TempDir holds the scratch repository and the received tree, removed
	// on return ("" for os.TempDir()). It must be private to the caller.
	TempDir string
	Limits  Limits
}

// ExportResult is what Export made.
type ExportResult struct {
	Branch  string // full ref name, "" with Patch
	Commit  string // tip of the result
	Base    string
	Commits int  // commits from the guest's bundle
	Dirty   bool // the guest had uncommitted changes: one more commit on top
}

var (
	// ErrBaseMissing: the host repository no longer has the workspace's base commit.
	ErrBaseMissing = errors.New("base commit not in the host repository")
	// ErrBranchExists: the branch exists and Force was not given.
	ErrBranchExists = errors.New("branch already exists (use force to move it)")
	// ErrBranchCheckedOut: the branch is checked out in a worktree of the host.
	ErrBranchCheckedOut = errors.New("branch is checked out on the host")
)

// Export turns the guest's work into commits on top of base in the git
// checkout at repoDir: tree is a tar of the guest's workspace (the guest
// init's tar built-in, see GuestTreeArgv), opt.Bundle the guest's new
// commits when it has git. The result becomes branch opt.Branch, or a
// patch.
//
// Nothing of the guest is trusted: the archive is extracted, strictly
// (see receiver), into a private temporary directory; the bundle is
// fetched with object checking into a scratch bare repository there
// (which borrows the host's objects through alternates and has no config,
// hooks or attributes of the host's); the commit is built in that scratch
// repository with a temporary index. Only once all of that succeeded are
// the new objects fetched into the host repository and the branch
// created, with `git update-ref` given the expected old value. The host's
// work tree, index, HEAD and other branches are never written; a refused
// archive or bundle leaves the host repository as it was.
func Export(ctx context.Context, g Git, repoDir, base string, tree io.Reader, opt ExportOptions) (*ExportResult, error) {
	if base == "" {
		return nil, errors.New("the workspace has no base commit (a plain directory or an unborn branch): nothing to export onto")
	}
	host, err := line(ctx, g, repoDir, nil, "rev-parse", "--git-common-dir", "--show-object-format")
	if err != nil {
		return nil, err
	}
	commonDir, format, _ := strings.Cut(host, "\n")
	if !filepath.IsAbs(commonDir) {
		commonDir = filepath.Join(repoDir, commonDir)
	}
	if _, err := output(ctx, g, repoDir, nil, "cat-file", "-e", base+"^{commit}"); err != nil {
		return nil, fmt.Errorf("%s: %w (was it garbage-collected, or is this another repository?)", base, ErrBaseMissing)
	}
	ref := ""
	if opt.Patch == nil {
		if ref, err = checkBranch(ctx, g, repoDir, opt.Branch); err != nil {
			return nil, err
		}
		if _, err := oldValue(ctx, g, repoDir, ref, opt.Force, format); err != nil {
			return nil, err
		}
	}

	tmp, err := os.MkdirTemp(opt.TempDir, "banger-export-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	s, err := newScratch(ctx, g, tmp, commonDir, format)
	if err != nil {
		return nil, err
	}
	res := &ExportResult{Base: base}
	parent := base
	if opt.Bundle != nil {
		head, n, err := s.fetchBundle(ctx, opt.Bundle, base, opt.Limits.withDefaults().MaxBytes)
		if err != nil {
			return nil, err
		}
		parent, res.Commits = head, n
	}
	gitlinks, err := s.gitlinks(ctx, parent)
	if err != nil {
		return nil, err
	}
	work := filepath.Join(tmp, "tree")
	skip := func(name string) bool {
		for _, l := range gitlinks {
			if name == l || strings.HasPrefix(name, l+"/") {
				return true
			}
		}
		return false
	}
	if err := receiveTree(tree, work, opt.Limits, skip); err != nil {
		return nil, err
	}
	for _, l := range gitlinks { // an empty directory: git leaves the gitlink as it is
		os.MkdirAll(filepath.Join(work, l), 0o755)
	}
	commit, dirty, err := s.commitTree(ctx, work, parent, opt.Message, identity(ctx, g, repoDir))
	if err != nil {
		return nil, err
	}
	res.Commit, res.Dirty = commit, dirty
	if opt.Patch != nil {
		return res, s.git(ctx, nil, opt.Patch, "diff", "--binary", "--full-index", base, commit)
	}
	if err := s.git(ctx, nil, nil, "update-ref", "refs/heads/export", commit); err != nil {
		return nil, err
	}
	// From here on the host repository is written: objects, then the ref.
	if err := g.Run(ctx, repoDir, nil, nil, nil, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--", s.dir, "refs/heads/export"); err != nil {
		return nil, err
	}
	old, err := oldValue(ctx, g, repoDir, ref, opt.Force, format)
	if err != nil {
		return nil, err
	}
	if err := g.Run(ctx, repoDir, nil, nil, nil, "update-ref", "-m", "banger workspace export", ref, commit, old); err != nil {
		return nil, err
	}
	res.Branch = ref
	return res, nil
}

// checkBranch validates a branch name and returns its ref, refusing one
// checked out in any worktree.
func checkBranch(ctx context.Context, g Git, repoDir, branch string) (string, error) {
	if branch == "" || strings.HasPrefix(branch, "-") {
		return "", fmt.Errorf("branch name %q: invalid", branch)
	}
	ref := "refs/heads/" + branch
	if err := g.Run(ctx, repoDir, nil, nil, nil, "check-ref-format", ref); err != nil {
		return "", fmt.Errorf("branch name %q: invalid", branch)
	}
	out, err := output(ctx, g, repoDir, nil, "worktree", "list", "--porcelain", "-z")
	if err != nil {
		return "", err
	}
	for _, l := range splitNUL(out) {
		if l == "branch "+ref {
			return "", fmt.Errorf("%s: %w", branch, ErrBranchCheckedOut)
		}
	}
	return ref, nil
}

// oldValue is the value update-ref must find at ref: none (the zero id)
// unless force allows moving it.
func oldValue(ctx context.Context, g Git, repoDir, ref string, force bool, format string) (string, error) {
	zero := strings.Repeat("0", 40)
	if format == "sha256" {
		zero = strings.Repeat("0", 64)
	}
	cur, err := line(ctx, g, repoDir, nil, "rev-parse", "-q", "--verify", ref)
	if err != nil {
		if exitCode(err) == 1 {
			return zero, nil
		}
		return "", err
	}
	if !force {
		return "", fmt.Errorf("%s at %s: %w", strings.TrimPrefix(ref, "refs/heads/"), cur, ErrBranchExists)
	}
	return cur, nil
}

// scratch is a private bare repository borrowing the host's objects.
type scratch struct {
	g   Git
	dir string
	env []string
}

func newScratch(ctx context.Context, g Git, tmp, hostCommon, format string) (*scratch, error) {
	s := &scratch{g: g, dir: filepath.Join(tmp, "scratch.git")}
	s.env = []string{
		"GIT_DIR=" + s.dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_INDEX_FILE=" + filepath.Join(tmp, "index"), "GIT_ATTR_NOSYSTEM=1",
	}
	if err := g.Run(ctx, tmp, []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull}, nil, nil,
		"init", "--quiet", "--bare", "--object-format="+format, "--", s.dir); err != nil {
		return nil, err
	}
	hostObjects := filepath.Join(hostCommon, "objects")
	if err := os.WriteFile(filepath.Join(s.dir, "objects", "info", "alternates"), []byte(hostObjects+"\n"), 0o600); err != nil {
		return nil, err
	}
	// The host's own exclude rules are the user's: they apply as on the host.
	if b, err := os.ReadFile(filepath.Join(hostCommon, "info", "exclude")); err == nil {
		os.WriteFile(filepath.Join(s.dir, "info", "exclude"), b, 0o600)
	}
	for _, kv := range [][2]string{{"transfer.fsckObjects", "true"}, {"core.hooksPath", os.DevNull}, {"core.fsmonitor", "false"}} {
		if err := s.git(ctx, nil, nil, "config", kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *scratch) git(ctx context.Context, env []string, stdout io.Writer, args ...string) error {
	return s.g.Run(ctx, filepath.Dir(s.dir), append(s.env[:len(s.env):len(s.env)], env...), nil, stdout, args...)
}

func (s *scratch) line(ctx context.Context, env []string, args ...string) (string, error) {
	var out bytes.Buffer
	err := s.git(ctx, env, &out, args...)
	return strings.TrimRight(out.String(), "\n"), err
}

// fetchBundle saves the guest's bundle, fetches its head into the scratch
// repository (objects checked) and returns it, with the number of commits
// it adds to base; the head must descend from base.
func (s *scratch) fetchBundle(ctx context.Context, r io.Reader, base string, max int64) (string, int, error) {
	p := filepath.Join(filepath.Dir(s.dir), "guest.bundle")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, err
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("reading the guest's bundle: %w", err)
	}
	if n > max {
		return "", 0, fmt.Errorf("%w: the guest's bundle is over %d bytes", ErrHostileArchive, max)
	}
	heads, err := s.line(ctx, nil, "bundle", "list-heads", "--", p)
	if err != nil {
		return "", 0, fmt.Errorf("%w: the guest's bundle: %v", ErrHostileArchive, err)
	}
	var head, name string
	for _, l := range strings.Split(heads, "\n") {
		if id, n, ok := strings.Cut(l, " "); ok && (n == "HEAD" || head == "") {
			head, name = id, n
		}
	}
	if head == "" || strings.HasPrefix(name, "-") || strings.ContainsAny(name, ": \t*^~?[\\") {
		return "", 0, fmt.Errorf("%w: the guest's bundle has no usable head", ErrHostileArchive)
	}
	if err := s.git(ctx, nil, nil, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", p, "+"+name+":refs/guest/head"); err != nil {
		return "", 0, fmt.Errorf("%w: fetching the guest's bundle: %v", ErrHostileArchive, err)
	}
	if got, err := s.line(ctx, nil, "rev-parse", "--verify", "refs/guest/head^{commit}"); err != nil || got != head {
		return "", 0, fmt.Errorf("%w: the guest's bundle head %s is not a commit", ErrHostileArchive, name)
	}
	if err := s.git(ctx, nil, nil, "merge-base", "--is-ancestor", base, head); err != nil {
		return "", 0, fmt.Errorf("%w: the guest's commits do not descend from the base %s", ErrHostileArchive, base)
	}
	count, err := s.line(ctx, nil, "rev-list", "--count", base+".."+head)
	if err != nil {
		return "", 0, err
	}
	var c int
	fmt.Sscan(count, &c)
	return head, c, nil
}

// gitlinks lists the submodule paths of commit's tree.
func (s *scratch) gitlinks(ctx context.Context, commit string) ([]string, error) {
	var out bytes.Buffer
	if err := s.git(ctx, nil, &out, "ls-tree", "-r", "-z", "--full-tree", commit); err != nil {
		return nil, err
	}
	var links []string
	for _, rec := range splitNUL(out.Bytes()) {
		if meta, p, ok := strings.Cut(rec, "\t"); ok && strings.HasPrefix(meta, "160000 ") {
			links = append(links, p)
		}
	}
	return links, nil
}

// commitTree records the work tree over parent's tree in a temporary
// index (git add -A: .gitignore'd files stay out, tracked ones stay in)
// and commits it on parent when it differs.
func (s *scratch) commitTree(ctx context.Context, work, parent, msg string, ident []string) (string, bool, error) {
	wt := []string{"GIT_WORK_TREE=" + work}
	if err := s.git(ctx, wt, nil, "read-tree", parent); err != nil {
		return "", false, err
	}
	if err := s.git(ctx, wt, nil, "-C", work, "add", "--all", "--", "."); err != nil {
		return "", false, err
	}
	tree, err := s.line(ctx, wt, "write-tree")
	if err != nil {
		return "", false, err
	}
	ptree, err := s.line(ctx, nil, "rev-parse", parent+"^{tree}")
	if err != nil {
		return "", false, err
	}
	if tree == ptree {
		return parent, false, nil
	}
	if msg == "" {
		msg = "banger: uncommitted changes from the guest"
	}
	c, err := s.line(ctx, ident, "commit-tree", tree, "-p", parent, "-m", msg)
	return c, true, err
}

// identity is the host user's git identity (from the host repository's
// config at every level) as the scratch repository's commit environment,
// or banger's own when the user has none. Environment already set by the
// caller's Git (GIT_AUTHOR_NAME...) wins over the config, as in git.
func identity(ctx context.Context, g Git, repoDir string) []string {
	name, _ := line(ctx, g, repoDir, nil, "config", "--get", "user.name")
	email, _ := line(ctx, g, repoDir, nil, "config", "--get", "user.email")
	if name == "" {
		name = "banger"
	}
	if email == "" {
		email = "banger@localhost"
	}
	var env []string
	for _, k := range []string{"GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"} {
		if os.Getenv(k) == "" {
			env = append(env, k+"="+name)
		}
	}
	for _, k := range []string{"GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"} {
		if os.Getenv(k) == "" {
			env = append(env, k+"="+email)
		}
	}
	return env
}
