// Package guestkernel gives tests a guest kernel (vmlinux, initrd and
// kernel.txt) built by scripts/guest-kernel.sh from Debian's cloud kernel,
// cached under /var/cache/banger-test by the script's hash so a later run
// reuses it. BANGER_TEST_KERNEL_DIR points at a ready one instead.
package guestkernel

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// CacheRoot holds built kernels, one directory per version of the script.
const CacheRoot = "/var/cache/banger-test"

// Files are what scripts/guest-kernel.sh writes.
var Files = []string{"vmlinux", "initrd", "kernel.txt"}

// RepoRoot finds the banger module's root above the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && regexp.MustCompile(`(?m)^module\s+banger\s*$`).Match(data) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the banger module's go.mod above the working dir")
		}
		dir = parent
	}
}

func complete(dir string) bool {
	for _, f := range Files {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
			return false
		}
	}
	return true
}

// CacheDir is where the kernel the current script makes is cached.
func CacheDir(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(RepoRoot(t), "scripts", "guest-kernel.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return filepath.Join(CacheRoot, "guest-kernel-"+hex.EncodeToString(sum[:])[:16])
}

// Existing returns BANGER_TEST_KERNEL_DIR, or the cache directory when it
// holds a complete build; "" when neither: it builds nothing.
func Existing(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("BANGER_TEST_KERNEL_DIR"); dir != "" {
		if !complete(dir) {
			t.Fatalf("BANGER_TEST_KERNEL_DIR=%s lacks one of %v", dir, Files)
		}
		return dir
	}
	if dir := CacheDir(t); complete(dir) {
		return dir
	}
	return ""
}

var buildMu sync.Mutex

// Dir returns a directory holding vmlinux, initrd and kernel.txt, building
// them into the cache when needed (into a temporary directory renamed into
// place only when complete).
func Dir(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if dir := Existing(t); dir != "" {
		return dir
	}
	final := CacheDir(t)
	if err := os.MkdirAll(CacheRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(CacheRoot, ".building-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	out, err := exec.Command("bash", filepath.Join(RepoRoot(t), "scripts", "guest-kernel.sh"), tmp).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/guest-kernel.sh failed: %v\n%s", err, out)
	}
	t.Logf("guest kernel built in %v:\n%s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(string(out)))
	if !complete(tmp) {
		t.Fatalf("scripts/guest-kernel.sh left no complete %v in %s", Files, tmp)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if complete(final) {
			return final
		}
		t.Fatal(err)
	}
	return final
}

// Info parses the key=value lines of dir's kernel.txt (kernel_version,
// package, package_version).
func Info(t testing.TB, dir string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kernel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	info := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			info[k] = v
		}
	}
	return info
}
