package fcproc

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"

	"banger/internal/errdefs"
)

// jailConfig is a jailed Config whose chroot base is a fresh directory.
func jailConfig(t *testing.T, id string) Config {
	t.Helper()
	base := filepath.Join(t.TempDir(), "jail")
	return Config{ID: id, Binary: "/usr/bin/firecracker", APISocket: JailAPISocket,
		Jailer: &Jailer{UID: os.Getuid(), GID: os.Getgid(), ChrootBaseDir: base}}
}

func writeFile(t *testing.T, path, body string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

func TestPrepareAndRemoveJail(t *testing.T) {
	cfg := jailConfig(t, "vm-1")
	src := t.TempDir()
	kernel, private, disk := filepath.Join(src, "vmlinux"), filepath.Join(src, "initrd"), filepath.Join(src, "disk.img")
	writeFile(t, kernel, "kernel", 0o644)
	writeFile(t, private, "initrd", 0o600) // not readable by others: copied
	writeFile(t, disk, "disk", 0o600)

	paths, err := PrepareJail(cfg, []JailFile{
		{HostPath: kernel, Name: "vmlinux"},
		{HostPath: private, Name: "initrd"},
		{HostPath: disk, Name: "rootfs", Writable: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/vmlinux", "/initrd", "/rootfs"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("paths = %q, want %q", paths, want)
	}
	root := cfg.JailRoot()
	if got, want := root, filepath.Join(cfg.Jailer.ChrootBaseDir, "firecracker", "vm-1", "root"); got != want {
		t.Fatalf("JailRoot = %s, want %s", got, want)
	}
	if inode(t, filepath.Join(root, "vmlinux")) != inode(t, kernel) {
		t.Error("the world-readable kernel was not hard-linked")
	}
	if inode(t, filepath.Join(root, "rootfs")) != inode(t, disk) {
		t.Error("the disk was not hard-linked (the VM's writes would be lost with the jail)")
	}
	if inode(t, filepath.Join(root, "initrd")) == inode(t, private) {
		t.Error("the private initrd was hard-linked, not copied")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "initrd")); string(b) != "initrd" {
		t.Errorf("the initrd copy reads %q", b)
	}
	if st, _ := os.Stat(filepath.Join(root, "initrd")); st.Mode().Perm() != 0o400 {
		t.Errorf("the initrd copy has mode %v, want 0400", st.Mode().Perm())
	}
	if st, _ := os.Stat(root); st.Mode().Perm() != 0o700 {
		t.Errorf("the jail root has mode %v, want 0700", st.Mode().Perm())
	}

	// A second prepare starts from scratch (the jailer would refuse the
	// pid file an earlier run left).
	os.WriteFile(filepath.Join(root, "firecracker.pid"), []byte("1"), 0o600)
	if _, err := PrepareJail(cfg, []JailFile{{HostPath: disk, Name: "rootfs", Writable: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "firecracker.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an earlier run's file survived a new prepare: %v", err)
	}

	// Another VM's jail beside it is left alone by the removal.
	other := cfg
	other.ID = "vm-2"
	if _, err := PrepareJail(other, nil); err != nil {
		t.Fatal(err)
	}
	if err := RemoveJail(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.JailDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("jail dir after RemoveJail: %v", err)
	}
	if b, err := os.ReadFile(disk); err != nil || string(b) != "disk" {
		t.Errorf("the VM's disk after RemoveJail: %q, %v", b, err)
	}
	if _, err := os.Stat(other.JailRoot()); err != nil {
		t.Errorf("another VM's jail after RemoveJail: %v", err)
	}
	if err := RemoveJail(cfg); err != nil {
		t.Errorf("RemoveJail of a jail already gone: %v", err)
	}
}

func TestJailRefusesBadPaths(t *testing.T) {
	t.Run("ids that would leave the base", func(t *testing.T) {
		for _, id := range []string{"..", "../x", "a/b", "", "vm_1", "/etc"} {
			cfg := jailConfig(t, id)
			if _, err := PrepareJail(cfg, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("PrepareJail with id %q: %v, want an invalid argument", id, err)
			}
			if err := RemoveJail(cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("RemoveJail with id %q: %v, want an invalid argument", id, err)
			}
		}
	})
	t.Run("base not clean", func(t *testing.T) {
		cfg := jailConfig(t, "vm-1")
		cfg.Jailer.ChrootBaseDir += "/../jail"
		if err := RemoveJail(cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("RemoveJail: %v, want an invalid argument", err)
		}
	})
	t.Run("bad file names", func(t *testing.T) {
		cfg := jailConfig(t, "vm-1")
		f := filepath.Join(t.TempDir(), "f")
		writeFile(t, f, "x", 0o644)
		for _, name := range []string{"", "..", "a/b", "firecracker", "run", "dev"} {
			if _, err := PrepareJail(cfg, []JailFile{{HostPath: f, Name: name}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("file name %q: %v, want an invalid argument", name, err)
			}
		}
		if _, err := PrepareJail(cfg, []JailFile{{HostPath: f, Name: "a"}, {HostPath: f, Name: "a"}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("a name used twice: %v, want an invalid argument", err)
		}
		if _, err := os.Stat(cfg.Jailer.ChrootBaseDir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a refused prepare made %s", cfg.Jailer.ChrootBaseDir)
		}
	})
	t.Run("not a regular file", func(t *testing.T) {
		cfg := jailConfig(t, "vm-1")
		if _, err := PrepareJail(cfg, []JailFile{{HostPath: t.TempDir(), Name: "d"}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("a directory as a file: %v", err)
		}
		if _, err := os.Stat(cfg.JailDir()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failed prepare left %s", cfg.JailDir())
		}
	})
	// A symbolic link anywhere from the base down to the VM's directory is
	// refused: following it would put the jail (and chowned files) or the
	// removal somewhere else.
	for _, where := range []string{"base", "binary dir", "vm dir"} {
		t.Run("symlink as the "+where, func(t *testing.T) {
			cfg := jailConfig(t, "vm-1")
			victim := t.TempDir()
			writeFile(t, filepath.Join(victim, "precious"), "keep", 0o644)
			link := map[string]string{"base": cfg.Jailer.ChrootBaseDir, "binary dir": filepath.Dir(cfg.JailDir()), "vm dir": cfg.JailDir()}[where]
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, link); err != nil {
				t.Fatal(err)
			}
			if _, err := PrepareJail(cfg, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("PrepareJail: %v, want an invalid argument", err)
			}
			if err := RemoveJail(cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("RemoveJail: %v, want an invalid argument", err)
			}
			if b, err := os.ReadFile(filepath.Join(victim, "precious")); err != nil || string(b) != "keep" {
				t.Errorf("the link's target was touched: %q, %v", b, err)
			}
			if entries, _ := os.ReadDir(victim); len(entries) != 1 {
				t.Errorf("the link's target holds %d entries, want 1", len(entries))
			}
		})
	}
}

// TestPrepareJailOwnership needs root: the writable files go to the
// jailer's uid and gid, the shared read-only ones stay root's.
func TestPrepareJailOwnership(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("skipping: chown to another uid needs root")
	}
	cfg := jailConfig(t, "vm-1")
	cfg.Jailer.UID, cfg.Jailer.GID = 4321, 4322
	src := t.TempDir()
	kernel, disk := filepath.Join(src, "vmlinux"), filepath.Join(src, "disk")
	writeFile(t, kernel, "k", 0o644)
	writeFile(t, disk, "d", 0o600)
	if _, err := PrepareJail(cfg, []JailFile{{HostPath: kernel, Name: "vmlinux"}, {HostPath: disk, Name: "rootfs", Writable: true}}); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) [2]uint32 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		s := st.Sys().(*syscall.Stat_t)
		return [2]uint32{s.Uid, s.Gid}
	}
	if got := owner(filepath.Join(cfg.JailRoot(), "rootfs")); got != [2]uint32{4321, 4322} {
		t.Errorf("disk owner %v, want 4321:4322", got)
	}
	if got := owner(filepath.Join(cfg.JailRoot(), "vmlinux")); got != [2]uint32{0, 0} {
		t.Errorf("shared kernel owner %v, want root's", got)
	}
}
