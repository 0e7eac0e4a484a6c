package dmsnap

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/system"
)

// TestRealSnapshot runs Create, Find, Cleanup, Create again and Remove
// against the host's loop devices and device-mapper. It needs root, a
// kernel with device-mapper's snapshot target, and util-linux, dmsetup
// and e2fsprogs; it skips, saying which is missing, elsewhere.
func TestRealSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches loop devices and makes device-mapper devices; not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: it attaches loop devices and makes device-mapper devices")
	}
	r := &system.ExecRunner{}
	if err := Available(t.Context(), r); err != nil {
		t.Skipf("device-mapper snapshots cannot run here: %v", err)
	}
	for _, tool := range []string{"losetup", "dmsetup", "blockdev", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}

	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.ext4")
	cow := filepath.Join(dir, "disk.cow")
	const imgSize = 32 << 20
	mustRun(t, r, "truncate", "-s", fmt.Sprint(imgSize), img)
	mustRun(t, r, "mkfs.ext4", "-q", "-F", img)
	if err := os.Chmod(img, 0o444); err != nil {
		t.Fatal(err)
	}
	imgBytes := mustRead(t, img)
	if err := MakeCOW(cow, MinCOWSize(imgSize)); err != nil {
		t.Fatal(err)
	}
	spec := Spec{VMID: fmt.Sprintf("dmsnap-test-%d", os.Getpid()), Image: img, COW: cow}
	// Whatever happens below, leave no device and no loop behind.
	t.Cleanup(func() { forceCleanup(t, r, spec) })

	h, err := Create(t.Context(), r, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	found, ok, err := Find(t.Context(), r, spec)
	if err != nil || !ok {
		t.Fatalf("Find = %+v, %v, %v", found, ok, err)
	}
	if d := cmp.Diff(h, found); d != "" {
		t.Errorf("Find disagrees with Create (-create +find):\n%s", d)
	}

	// A write lands in the COW file, never in the image.
	pattern := bytes.Repeat([]byte("banger!\n"), 512)
	const off = 8 << 20
	writeAt(t, h.Device, pattern, off)
	if got := readAt(t, h.Device, len(pattern), off); !bytes.Equal(got, pattern) {
		t.Fatal("snapshot does not read back what was written")
	}
	if got := readAt(t, h.Device, 4096, 0); !bytes.Equal(got, imgBytes[:4096]) {
		t.Error("snapshot's unwritten blocks differ from the image")
	}
	if err := Cleanup(t.Context(), r, h); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if err := Cleanup(t.Context(), r, h); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	assertNothingLeft(t, r, spec)
	if !bytes.Equal(mustRead(t, img), imgBytes) {
		t.Fatal("the image changed under its snapshot")
	}

	// Persistent: the same COW file brings the write back.
	h, err = Create(t.Context(), r, spec)
	if err != nil {
		t.Fatalf("Create again: %v", err)
	}
	if got := readAt(t, h.Device, len(pattern), off); !bytes.Equal(got, pattern) {
		t.Error("the write did not survive re-creating the snapshot")
	}
	if err := Remove(t.Context(), r, h, cow); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	assertNothingLeft(t, r, spec)
	if _, err := os.Stat(cow); !os.IsNotExist(err) {
		t.Errorf("COW file still there after Remove: %v", err)
	}
}

func assertNothingLeft(t *testing.T, r Runner, spec Spec) {
	t.Helper()
	h, found, err := Find(t.Context(), r, spec)
	if err != nil || found {
		t.Errorf("after cleanup Find = %+v, %v, %v; want nothing", h, found, err)
	}
}

// forceCleanup removes the test's device and every loop backed by its
// files, ignoring what is already gone.
func forceCleanup(t *testing.T, r Runner, spec Spec) {
	ctx := context.Background()
	r.Run(ctx, "dmsetup", "remove", "--retry", DMName(spec.VMID))
	for _, file := range []string{spec.Image, spec.COW} {
		out, _ := r.Run(ctx, "losetup", "--associated", file, "--noheadings", "--output", "NAME", "--list")
		for _, dev := range strings.Fields(string(out)) {
			if _, err := r.Run(ctx, "losetup", "-d", dev); err != nil {
				t.Errorf("detach leftover %s: %v", dev, err)
			}
		}
	}
}

func mustRun(t *testing.T, r Runner, argv ...string) {
	t.Helper()
	if _, err := r.Run(t.Context(), argv...); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAt(t *testing.T, dev string, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, dev string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, n)
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}
