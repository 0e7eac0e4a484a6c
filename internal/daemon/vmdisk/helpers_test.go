package vmdisk

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/system"
	"banger/internal/system/systest"
)

var (
	_ Runner = (*system.ExecRunner)(nil)
	_ Runner = (*systest.Fake)(nil)
)

// extent is a run of random data written at off.
type extent struct{ off, len int64 }

// makeSparse creates a file of size bytes holding random data in exts
// and holes elsewhere.
func makeSparse(tb testing.TB, path string, size int64, exts ...extent) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	buf := make([]byte, 1<<20)
	for _, e := range exts {
		for done := int64(0); done < e.len; {
			p := buf[:min(e.len-done, int64(len(buf)))]
			rng.Read(p)
			if _, err := f.WriteAt(p, e.off+done); err != nil {
				tb.Fatal(err)
			}
			done += int64(len(p))
		}
	}
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
}

// sameContent reports whether two files hold the same bytes. Holes read
// as zeros, so it compares each file's data extents with the other's
// bytes there, and sizes: a 2 GiB file with little data compares fast.
func sameContent(tb testing.TB, a, b string) bool {
	tb.Helper()
	fa, err := os.Open(a)
	if err != nil {
		tb.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		tb.Fatal(err)
	}
	defer fb.Close()
	if stat(tb, a).Size != stat(tb, b).Size {
		return false
	}
	return dataMatches(tb, fa, fb) && dataMatches(tb, fb, fa)
}

// dataMatches reports whether every data extent of x holds the same
// bytes as y at the same offsets.
func dataMatches(tb testing.TB, x, y *os.File) bool {
	tb.Helper()
	px, py := make([]byte, 4<<20), make([]byte, 4<<20)
	fd := int(x.Fd())
	for off := int64(0); ; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			return true
		}
		if err != nil {
			tb.Fatal(err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			tb.Fatal(err)
		}
		for o := data; o < hole; {
			n := min(hole-o, int64(len(px)))
			nx, _ := x.ReadAt(px[:n], o)
			ny, _ := y.ReadAt(py[:n], o)
			if nx != int(n) || ny != int(n) || !bytes.Equal(px[:n], py[:n]) {
				return false
			}
			o += n
		}
		off = hole
	}
}

func stat(tb testing.TB, path string) *syscall.Stat_t {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func isExt4(tb testing.TB, dir string) bool {
	tb.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Type == unix.EXT4_SUPER_MAGIC
}

// mountXFS makes a sparse file of size bytes, formats it as XFS with
// reflink, mounts it on a loop device and returns the mount point; it
// unmounts and detaches it when the test ends, even on failure. It skips
// without root or xfsprogs.
func mountXFS(tb testing.TB, size int64) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("mounts a loop device; not in -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root: it mounts an XFS file system on a loop device")
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		tb.Skipf("needs mkfs.xfs (apt-get install xfsprogs): %v", err)
	}
	if !kernelHas("xfs") {
		tb.Skip("needs XFS in the kernel (/proc/filesystems does not list it)")
	}
	r := &system.ExecRunner{}
	ctx := context.Background()
	dir := tb.TempDir()
	img := filepath.Join(dir, "xfs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		tb.Fatal(err)
	}
	if _, err := r.Run(ctx, "mkfs.xfs", "-q", "-m", "reflink=1", img); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if _, err := r.Run(ctx, "umount", mnt); err != nil && !strings.Contains(err.Error(), "not mounted") {
			tb.Errorf("unmount %s: %v", mnt, err)
		}
		// mount -o loop detaches on unmount (autoclear); make sure.
		out, _ := r.Run(ctx, "losetup", "--associated", img, "--noheadings", "--output", "NAME", "--list")
		for _, dev := range strings.Fields(string(out)) {
			if _, err := r.Run(ctx, "losetup", "-d", dev); err != nil {
				tb.Errorf("detach %s: %v", dev, err)
			}
		}
	})
	if _, err := r.Run(ctx, "mount", "-o", "loop", img, mnt); err != nil {
		tb.Fatal(err)
	}
	return mnt
}

func kernelHas(fs string) bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == fs {
			return true
		}
	}
	return false
}
