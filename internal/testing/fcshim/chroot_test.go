package fcshim

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChrootPaths: with a chroot (as under the jailer shim) every API path
// is inside it; a host path outside it is not found, as it would not be
// in a real jail, and a symbolic link out of it is refused.
func TestChrootPaths(t *testing.T) {
	f := newFiles(t) // host files, outside the chroot
	root := t.TempDir()
	for _, name := range []string{"vmlinux", "rootfs"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(f.kernel, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	b := &fakeBooter{}
	s := NewServer(Options{ID: "vm-1", Booter: b, CheckTAP: fakeTAP, Root: root})
	t.Cleanup(s.Close)

	for _, tt := range []struct {
		name   string
		c      call
		status int
		fault  string
	}{
		{"host kernel path", call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}"}`}, http.StatusBadRequest, "no such file"},
		{"link out of the chroot", call{"PUT", "/boot-source", `{"kernel_image_path": "/escape"}`}, http.StatusBadRequest, "escapes"},
		{"host disk path", call{"PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "{{root}}", "is_root_device": true, "is_read_only": false}`}, http.StatusBadRequest, "no such file"},
		{"host log path", call{"PUT", "/logger", `{"log_path": "{{log}}"}`}, http.StatusBadRequest, "no such file"},
		{"kernel in the chroot, through ..", call{"PUT", "/boot-source", `{"kernel_image_path": "/../../vmlinux"}`}, http.StatusNoContent, ""},
		{"disk in the chroot", call{"PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "/rootfs", "is_root_device": true, "is_read_only": false}`}, http.StatusNoContent, ""},
		{"log created in the chroot", call{"PUT", "/logger", `{"log_path": "/fc.log"}`}, http.StatusNoContent, ""},
	} {
		code, msg, _ := do(t, s, f, tt.c)
		if code != tt.status || !strings.Contains(strings.ToLower(msg), tt.fault) {
			t.Errorf("%s: %d %q; want %d mentioning %q", tt.name, code, msg, tt.status, tt.fault)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "fc.log")); err != nil {
		t.Errorf("the log is not in the chroot: %v", err)
	}
	if _, err := os.Stat(f.log); err == nil {
		t.Error("the log was created on the host path")
	}
	mustDo(t, s, f, putMachine, start)
	got := b.booted()
	if len(got) != 1 {
		t.Fatalf("booted %d times", len(got))
	}
	if got[0].Kernel != filepath.Join(root, "vmlinux") || got[0].Drives[0].Path != filepath.Join(root, "rootfs") {
		t.Errorf("booted kernel %s, disk %s; want the chroot's files", got[0].Kernel, got[0].Drives[0].Path)
	}
}
