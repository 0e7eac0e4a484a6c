package vmdisk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
	"banger/internal/system"
)

// TestReflinkOnExt4 checks the fallback's trigger: ext4 cannot clone,
// Reflink says so with ErrReflinkUnsupported, and Clone copies instead.
func TestReflinkOnExt4(t *testing.T) {
	dir := t.TempDir()
	if !isExt4(t, dir) {
		t.Skipf("needs the test's temporary directory %s on ext4 (set TMPDIR)", dir)
	}
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	makeSparse(t, src, 16<<20, extent{0, 1 << 20}, extent{8 << 20, 1 << 20})

	err := Reflink(src, dst)
	if !errors.Is(err, ErrReflinkUnsupported) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Reflink on ext4 = %v, want ErrReflinkUnsupported wrapping ErrUnavailable", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Reflink left dst: %v", err)
	}
	if ProbeReflink(dir) {
		t.Error("ProbeReflink says ext4 can clone")
	}
	assertNoProbeLeftovers(t, dir)

	got, err := Clone(t.Context(), src, dst)
	if err != nil || got != StrategyCopy {
		t.Fatalf("Clone on ext4 = %q, %v; want %q", got, err, StrategyCopy)
	}
	if !sameContent(t, src, dst) {
		t.Error("Clone's copy differs from the source")
	}
}

func TestReflinkErrors(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	makeSparse(t, src, 1<<20, extent{0, 4096})
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{
		func() error { return Reflink(src, dst) },
		func() error { _, err := Clone(t.Context(), src, dst); return err },
	} {
		if err := f(); !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Errorf("onto an existing file: %v, want ErrAlreadyExists", err)
		}
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("existing dst changed to %q", b)
	}
	if err := Reflink(filepath.Join(dir, "nope"), filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reflink of a missing file = %v, want ErrNotExist", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Clone(ctx, src, filepath.Join(dir, "y")); !errors.Is(err, context.Canceled) {
		t.Errorf("Clone with a cancelled context = %v", err)
	}
	if ProbeReflink(filepath.Join(dir, "no-such-dir")) {
		t.Error("ProbeReflink of a missing directory says yes")
	}
}

// TestReflinkOnXFS clones on a loop-mounted XFS made with reflink=1: the
// clone shares the source's extents (filefrag shows the same physical
// blocks, flagged shared), is instant, and diverges on write.
func TestReflinkOnXFS(t *testing.T) {
	mnt := mountXFS(t, 512<<20)
	src, dst := filepath.Join(mnt, "src"), filepath.Join(mnt, "dst")
	makeSparse(t, src, 64<<20, extent{0, 8 << 20}, extent{32 << 20, 8 << 20})

	freeBefore := freeBytes(t, mnt)
	start := time.Now()
	if err := Reflink(src, dst); err != nil {
		t.Fatalf("Reflink on XFS: %v", err)
	}
	t.Logf("reflink of 64 MiB (16 MiB data) took %v", time.Since(start))
	if used := freeBefore - freeBytes(t, mnt); used > 1<<20 {
		t.Errorf("the clone of 16 MiB of data used %d bytes of the file system", used)
	}
	if !sameContent(t, src, dst) {
		t.Fatal("clone differs from the source")
	}
	srcExt, srcShared := extents(t, src)
	dstExt, dstShared := extents(t, dst)
	if len(srcExt) == 0 || !slices.Equal(srcExt, dstExt) {
		t.Errorf("clone's physical extents %v differ from the source's %v", dstExt, srcExt)
	}
	if !srcShared || !dstShared {
		t.Errorf("extents not flagged shared (src %v, dst %v)", srcShared, dstShared)
	}

	// Copy-on-write: writing the clone leaves the source alone.
	before, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written to the clone"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if after, _ := os.ReadFile(src); !slices.Equal(before, after) {
		t.Error("writing the clone changed the source")
	}

	if !ProbeReflink(mnt) {
		t.Error("ProbeReflink says XFS with reflink=1 cannot clone")
	}
	assertNoProbeLeftovers(t, mnt)
	got, err := Clone(t.Context(), src, filepath.Join(mnt, "clone"))
	if err != nil || got != StrategyReflink {
		t.Errorf("Clone on XFS = %q, %v; want %q", got, err, StrategyReflink)
	}
	// Across file systems FICLONE fails with EXDEV, and Clone copies.
	other := filepath.Join(t.TempDir(), "across")
	if got, err := Clone(t.Context(), src, other); err != nil || got != StrategyCopy {
		t.Errorf("Clone from XFS to another file system = %q, %v; want %q", got, err, StrategyCopy)
	}
}

// filefragLine matches an extent line of `filefrag -v`:
// "   0:        0..    2047:         24..      2071:   2048:             shared".
var filefragLine = regexp.MustCompile(`^\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.\s*(\d+):\s*\d+:.*$`)

// extents returns a file's written extents as "logical@physical+length"
// (blocks) and whether any is flagged shared. Unwritten (preallocated)
// extents are left out: XFS preallocates past writes, and a clone does
// not take those.
func extents(t *testing.T, path string) (exts []string, shared bool) {
	t.Helper()
	out, err := (&system.ExecRunner{}).Run(t.Context(), "filefrag", "-v", path)
	if err != nil {
		t.Skipf("needs filefrag (e2fsprogs): %v", err)
	}
	for line := range strings.Lines(string(out)) {
		line = strings.TrimRight(line, "\n")
		m := filefragLine.FindStringSubmatch(line)
		if m == nil || strings.Contains(line, "unwritten") {
			continue
		}
		lo, _ := strconv.Atoi(m[1])
		hi, _ := strconv.Atoi(m[2])
		exts = append(exts, m[1]+"@"+m[3]+"+"+strconv.Itoa(hi-lo+1))
		shared = shared || strings.Contains(line, "shared")
	}
	return exts, shared
}

func assertNoProbeLeftovers(t *testing.T, dir string) {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(dir, ".banger-reflink-probe-*"))
	if err != nil || len(left) > 0 {
		t.Errorf("ProbeReflink left %v (%v)", left, err)
	}
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	unix.Sync() // XFS accounts delayed allocations at writeback
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * st.Bsize
}
