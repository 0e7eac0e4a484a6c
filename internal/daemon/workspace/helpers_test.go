package workspace

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guestinit"
)

// testGit is the real git, isolated from the user's and system's config.
func testGit(t testing.TB) ExecGit {
	home := t.TempDir()
	return ExecGit{Env: []string{
		"HOME=" + home, "XDG_CONFIG_HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + filepath.Join(home, "gitconfig"),
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com", "GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
		"GIT_AUTHOR_DATE=2026-11-26T12:00:00Z", "GIT_COMMITTER_DATE=2026-11-26T12:00:00Z",
	}}
}

// run runs git in dir and returns its stdout; a failure fails the test.
func run(t testing.TB, g Git, dir string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := g.Run(context.Background(), dir, nil, nil, &out, args...); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func write(t testing.TB, dir, name, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// weirdNames are file names a checkout may hold.
var weirdNames = []string{"with space", "new\nline", "-leading-dash", "--", "bad-\xff\xfe-utf8", "tab\there", `back\slash`, `"quoted"`, "ünïcode"}

// newRepo makes a checkout with history, a dirty file, a staged one, an
// untracked one, an ignored one, a deleted one, an executable, symlinks
// (one pointing outside) and weird names.
func newRepo(t testing.TB, g Git) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	os.Mkdir(dir, 0o755)
	run(t, g, dir, "init", "-q", "-b", "main")
	write(t, dir, ".gitignore", "*.o\nbuild/\n", 0o644)
	write(t, dir, "README", "hello\n", 0o644)
	write(t, dir, "src/main.go", "package main\n", 0o644)
	write(t, dir, "run.sh", "#!/bin/sh\necho hi\n", 0o755)
	write(t, dir, "to-delete", "bye\n", 0o644)
	write(t, dir, "to-stage", "v1\n", 0o644)
	for i, n := range weirdNames {
		write(t, dir, "weird/"+n, strings.Repeat("w", i+1), 0o644)
	}
	if err := os.Symlink("src/main.go", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "outside-link")); err != nil {
		t.Fatal(err)
	}
	run(t, g, dir, "add", "-A")
	run(t, g, dir, "commit", "-q", "-m", "first")
	write(t, dir, "README", "hello, changed\n", 0o644)
	write(t, dir, "to-stage", "v2\n", 0o644)
	run(t, g, dir, "add", "--", "to-stage")
	write(t, dir, "untracked file", "new\n", 0o644)
	write(t, dir, "obj.o", "ignored\n", 0o644)
	write(t, dir, "build/out", "ignored\n", 0o644)
	os.Remove(filepath.Join(dir, "to-delete"))
	return dir
}

// packInto packs repo into dest through the guest init's receiver.
func packInto(t testing.TB, g Git, repo *Repo, dest string, prev *Manifest) *Manifest {
	t.Helper()
	var buf bytes.Buffer
	m, err := Pack(context.Background(), g, repo, &buf, prev)
	if err != nil {
		t.Fatal(err)
	}
	if err := guestinit.Untar(&buf, dest); err != nil {
		t.Fatal(err)
	}
	return m
}
