package imagemgr

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// fakeInit writes a stand-in for the banger binary.
func fakeInit(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "banger")
	if err := os.WriteFile(p, []byte("#!banger init"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrepareGuestRoot(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	mustFlatten(t, s.root, layer(t,
		dirEnt("usr/etc/"),
		symlink("etc", "usr/etc"),    // kept: it leads to a directory in the image
		symlink("root", "../canary"), // replaced: it leads outside
		file("etc/hostname", "image-host"),
		symlink("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
		symlink("etc/hosts", "/"+escapee),
		symlink("dev", "../canary"), // the init mounts /dev: must become a real directory
		dirEnt(".banger/").mode(0o777).owner(1000, 1000),
		file(".banger/init", "the image's own").mode(0o4777).owner(1000, 1000),
		dirEnt("tmp/").mode(0o700), // an existing directory is left as the image made it
	))
	init := fakeInit(t)
	if err := PrepareGuestRoot(s.root, init); err != nil {
		t.Fatal(err)
	}
	st := lstat(t, s.path(GuestInitPath))
	if st.Mode != unix.S_IFREG|0o755 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("init: mode %o owner %d:%d, want regular 0755 root:root", st.Mode, st.Uid, st.Gid)
	}
	if got := readFile(t, s.path(GuestInitPath)); got != "#!banger init" {
		t.Errorf("init = %q", got)
	}
	if st := lstat(t, s.path(".banger")); st.Mode != unix.S_IFDIR|0o755 || st.Uid != 0 {
		t.Errorf("/.banger: mode %o owner %d, want 0755 root", st.Mode, st.Uid)
	}
	if got, _ := os.Readlink(s.path("etc")); got != "usr/etc" {
		t.Errorf("/etc -> %q, want the image's usr/etc kept", got)
	}
	if got := readFile(t, s.path("usr/etc/hostname")); got != "image-host" {
		t.Errorf("/usr/etc/hostname = %q", got)
	}
	for p, mode := range map[string]uint32{
		"proc": 0o555, "sys": 0o555, "dev": 0o755, "dev/pts": 0o755, "run": 0o755,
		"tmp": 0o700, "usr/etc": 0o755, "root": 0o700,
	} {
		st := lstat(t, s.path(p))
		if st.Mode != unix.S_IFDIR|mode || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("/%s: mode %o owner %d:%d, want directory %#o root:root", p, st.Mode, st.Uid, st.Gid, mode)
		}
	}
	for p, data := range map[string]string{"etc/hostname": "image-host", "etc/resolv.conf": "", "etc/hosts": ""} {
		st := lstat(t, s.path(p))
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Errorf("/%s is %o, want a regular file", p, st.Mode&unix.S_IFMT)
			continue
		}
		if got := readFile(t, s.path(p)); got != data {
			t.Errorf("/%s = %q, want %q", p, got, data)
		}
	}
	s.assertUntouched(t, escapee)
}

func TestPrepareGuestRootFreshTmp(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	if err := PrepareGuestRoot(s.root, fakeInit(t)); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, s.path("tmp")); st.Mode != unix.S_IFDIR|0o1777 {
		t.Errorf("/tmp mode %o, want 01777", st.Mode)
	}
	for _, p := range []string{"etc/hostname", "etc/resolv.conf", "etc/hosts"} {
		if st := lstat(t, s.path(p)); st.Mode != unix.S_IFREG|0o644 || st.Size != 0 {
			t.Errorf("/%s: mode %o size %d, want empty 0644", p, st.Mode, st.Size)
		}
	}
}

func TestPrepareGuestRootRefusesBangerSymlink(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	mustFlatten(t, s.root, layer(t, symlink(".banger", "../canary")))
	err := PrepareGuestRoot(s.root, fakeInit(t))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err = %v, want ErrInvalidArgument", err)
	}
	assertMissing(t, filepath.Join(s.canary, "init"))
	s.assertUntouched(t, "")
}
