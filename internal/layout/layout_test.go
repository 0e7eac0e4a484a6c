package layout

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPathsAreUnderRoot(t *testing.T) {
	l := New("/srv/banger/")
	if l.Root != "/srv/banger" {
		t.Fatalf("New cleaned root to %q, want /srv/banger", l.Root)
	}
	paths := map[string]string{
		"DB":           l.DB(),
		"PIDFile":      l.PIDFile(),
		"StagingDir":   l.StagingDir(),
		"LayerBlob":    l.LayerBlob("sha256:00"),
		"ImageRootfs":  l.ImageRootfs("img1"),
		"ImageConfig":  l.ImageConfig("img1"),
		"KernelImage":  l.KernelImage("k1"),
		"KernelInitrd": l.KernelInitrd("k1"),
		"VMDisk":       l.VMDisk("vm1"),
		"VMHandles":    l.VMHandles("vm1"),
		"VMConsoleLog": l.VMConsoleLog("vm1"),
		"VMMSocket":    l.VMMSocket("vm1"),
		"VMMLog":       l.VMMLog("vm1"),
		"VMHostKey":    l.VMHostKey("vm1"),
		"VMClientKey":  l.VMClientKey("vm1"),
	}
	for name, p := range paths {
		if !strings.HasPrefix(p, l.Root+"/") {
			t.Errorf("%s = %q, not under %s", name, p, l.Root)
		}
	}
	for _, d := range l.Dirs() {
		if d != l.Root && !strings.HasPrefix(d, l.Root+"/") {
			t.Errorf("Dirs() has %q, not under %s", d, l.Root)
		}
	}
}

func TestDirsParentsFirst(t *testing.T) {
	dirs := New("/r").Dirs()
	if len(dirs) == 0 || dirs[0] != "/r" {
		t.Fatalf("Dirs() = %v, want the root first", dirs)
	}
	for i, d := range dirs[1:] {
		if !slices.Contains(dirs[:i+1], filepath.Dir(d)) {
			t.Errorf("Dirs() lists %q before (or without) its parent %q", d, filepath.Dir(d))
		}
	}
	if got, want := len(dirs), 6; got != want {
		t.Errorf("Dirs() = %v: %d entries, want %d (root, staging, layers, images, kernels, vms)", dirs, got, want)
	}
}

func TestVMFilesShareOneDir(t *testing.T) {
	l := New("/r")
	got := []string{l.VMDisk("a"), l.VMHandles("a"), l.VMConsoleLog("a"), l.VMMSocket("a"), l.VMMLog("a"), l.VMHostKey("a"), l.VMClientKey("a")}
	want := []string{"/r/vms/a/disk.ext4", "/r/vms/a/handles.json", "/r/vms/a/console.log", "/r/vms/a/vmm.sock", "/r/vms/a/vmm.log", "/r/vms/a/ssh_host_key", "/r/vms/a/id_ed25519"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("VM paths (-want +got):\n%s", diff)
	}
}

func TestLayerBlob(t *testing.T) {
	l := New("/r")
	if got, want := l.LayerBlob("sha256:abc"), "/r/layers/sha256/abc"; got != want {
		t.Errorf("LayerBlob(sha256:abc) = %q, want %q", got, want)
	}
}
