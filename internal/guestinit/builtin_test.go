package guestinit

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestUntarOutOfInodes: a file system that runs out of inodes, with bytes
// to spare, says so in untar's error (a bare "no space left on device"
// next to a half-empty disk looked wrong).
func TestUntarOutOfInodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs with few inodes")
	}
	dest := t.TempDir()
	if err := syscall.Mount("tmpfs", dest, "tmpfs", 0, "size=64m,nr_inodes=32"); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dest, syscall.MNT_DETACH) })
	var entries []tarEntry
	for i := range 64 {
		entries = append(entries, file(fmt.Sprintf("f%02d", i), "x", 0o644))
	}
	var stderr bytes.Buffer
	code, _ := runBuiltin([]string{BuiltinUntar, dest}, builtinIO{stdin: bytes.NewReader(makeTar(t, entries...)), stdout: &stderr, stderr: &stderr, dir: "/", uid: 0, gid: 0})
	if code != 1 || !strings.Contains(stderr.String(), "no space left on device") || !strings.Contains(stderr.String(), " of 32 inodes and ") {
		t.Errorf("untar into a tmpfs of 32 inodes: exit %d, %q; want the inodes left said", code, stderr.String())
	}
}
