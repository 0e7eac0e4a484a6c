package dmsnap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/system"
)

// noDMRunner runs commands on the host, except dmsetup, which fails
// without running: on a kernel without device-mapper, running dmsetup
// would create /dev/mapper/control.
type noDMRunner struct{ system.ExecRunner }

func (r *noDMRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) > 0 && argv[0] == "dmsetup" {
		return nil, &system.CommandError{Argv: argv, ExitCode: 1, Stderr: "device-mapper: not in this test\n", Err: fmt.Errorf("exit status 1")}
	}
	return r.ExecRunner.Run(ctx, argv...)
}

// TestRealLoops runs the loop-device half of Create, its undo and Cleanup
// against the host's real losetup, which works where device-mapper does
// not: the loops are attached, found by their backing files (reached
// through a symlink) and all detached again. It needs root and loop
// devices.
func TestRealLoops(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches loop devices; not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: it attaches loop devices")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("needs loop devices: %v", err)
	}
	for _, tool := range []string{"losetup", "blockdev"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	r := &noDMRunner{}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "images", "rootfs.ext4")
	if err := MakeCOW(img, 8<<20); err != nil { // any file does as an image here
		t.Fatal(err)
	}
	link := filepath.Join(dir, "image-link")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	cow := filepath.Join(dir, "disk.cow")
	if err := MakeCOW(cow, MinCOWSize(8<<20)); err != nil {
		t.Fatal(err)
	}
	spec := Spec{VMID: fmt.Sprintf("dmsnap-loop-test-%d", os.Getpid()), Image: link, COW: cow}
	t.Cleanup(func() { forceCleanup(t, r, Spec{VMID: spec.VMID, Image: img, COW: cow}) })

	// Create fails at dmsetup and must detach both loops it attached.
	_, err := Create(t.Context(), r, spec)
	if err == nil || !strings.Contains(err.Error(), "create snapshot") {
		t.Fatalf("Create = %v, want a failure at dmsetup", err)
	}
	if left := attachedTo(t, r, img, cow); left != "" {
		t.Fatalf("Create's undo left loops: %s", left)
	}

	// Cleanup detaches loops it finds backed by the right files.
	h := Handles{VMID: spec.VMID, Image: absPath(spec.Image), COW: absPath(spec.COW)}
	if h.OriginLoop, err = attach(t.Context(), r, "--read-only", h.Image); err != nil {
		t.Fatal(err)
	}
	if h.COWLoop, err = attach(t.Context(), r, h.COW); err != nil {
		t.Fatal(err)
	}
	loops, err := listLoops(t.Context(), r)
	if err != nil {
		t.Fatalf("listLoops: %v", err)
	}
	if !stillBacks(loops, h.OriginLoop, img) || !stillBacks(loops, h.COWLoop, cow) {
		t.Fatalf("losetup's listing %+v does not show %s on %s and %s on %s", loops, h.OriginLoop, img, h.COWLoop, cow)
	}
	for _, l := range loops {
		if l.Name == h.OriginLoop && !l.ReadOnly {
			t.Errorf("image loop %s is writable", l.Name)
		}
	}
	if err := Cleanup(t.Context(), r, h); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if left := attachedTo(t, r, img, cow); left != "" {
		t.Fatalf("Cleanup left loops: %s", left)
	}
	if err := Cleanup(t.Context(), r, h); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// attachedTo lists the loops backed by files, "" when there are none.
func attachedTo(t *testing.T, r Runner, files ...string) string {
	t.Helper()
	var left []string
	for _, f := range files {
		out, err := r.Run(t.Context(), "losetup", "--associated", f, "--noheadings", "--output", "NAME", "--list")
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, strings.Fields(string(out))...)
	}
	return strings.Join(left, " ")
}
