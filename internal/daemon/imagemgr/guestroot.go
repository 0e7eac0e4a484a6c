package imagemgr

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// GuestInitPath is where PrepareGuestRoot puts banger's guest init; the
// kernel command line names it as init=.
const GuestInitPath = "/.banger/init"

// guestDirs are the directories the guest init needs, parents first, with
// the mode each gets when it is missing. The init mounts file systems on
// the mount points, so those must be real directories; /etc and /root
// may be symlinks to directories inside the image.
var guestDirs = []struct {
	path  string
	mode  uint32
	mount bool
}{
	{".banger", 0o755, false},
	{"proc", 0o555, true},
	{"sys", 0o555, true},
	{"dev", 0o755, true},
	{"dev/pts", 0o755, true},
	{"run", 0o755, true},
	{"tmp", 0o1777, true},
	{"etc", 0o755, false},
	{"root", 0o700, false},
}

// guestFiles are the files the guest init writes at boot.
var guestFiles = []string{"etc/hostname", "etc/resolv.conf", "etc/hosts"}

// PrepareGuestRoot readies a flattened tree for booting with banger's
// init:
//
//   - initBinary (the banger binary itself; the daemon passes
//     os.Executable()) is copied to GuestInitPath, root:root 0755,
//     replacing whatever the image had there. If the image has /.banger
//     as a symlink the call fails (ErrInvalidArgument); if it has
//     /.banger as another non-directory, that is replaced.
//   - The directories the init mounts on (/proc, /sys, /dev, /dev/pts,
//     /run, /tmp 1777) or needs (/etc, /root 0700) are made root:root if
//     missing. An existing directory is left as the image made it. An
//     existing non-directory is replaced by a directory, a symlink
//     included, except that /etc and /root may stay symlinks when they
//     lead to a directory inside the image.
//   - /etc/hostname, /etc/resolv.conf and /etc/hosts are made empty,
//     root:root 0644, if missing. If one is a symlink (resolv.conf often
//     points into /run/systemd/resolve, which is empty at boot) or any
//     other non-regular file, it is replaced by an empty regular file so
//     the init can write it. Existing regular files are kept.
//
// Every step goes through the same in-root resolution as the Flattener.
func PrepareGuestRoot(root, initBinary string) error {
	t, err := openTree(root)
	if err != nil {
		return err
	}
	defer t.close()
	st, err := statAt(t.rootFd, ".banger")
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return refuse("the image has /.banger as a symlink; banger needs that directory for its init")
	}
	for _, d := range guestDirs {
		if err := ensureDir(t, d.path, d.mode, !d.mount); err != nil {
			return fmt.Errorf("prepare /%s: %w", d.path, err)
		}
	}
	for _, f := range guestFiles {
		if err := ensureFile(t, f); err != nil {
			return fmt.Errorf("prepare /%s: %w", f, err)
		}
	}
	if err := installInit(t, initBinary); err != nil {
		return fmt.Errorf("install the guest init at %s: %w", GuestInitPath, err)
	}
	return nil
}

// parentOf resolves the directory holding the slash-separated path p.
func parentOf(t *tree, p string) (*dir, string, error) {
	comps := strings.Split(p, "/")
	d, err := t.resolve(comps[:len(comps)-1], createMissing, nil)
	if err != nil {
		return nil, "", err
	}
	return d, comps[len(comps)-1], nil
}

// ensureDir makes p a directory unless it is one (or, with linkOK, a
// symlink that leads to one inside the tree).
func ensureDir(t *tree, p string, mode uint32, linkOK bool) error {
	d, base, err := parentOf(t, p)
	if err != nil {
		return err
	}
	defer d.close()
	if st, err := statAt(d.fd, base); linkOK && err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		if target, err := t.resolve(strings.Split(p, "/"), lookupOnly, nil); err == nil {
			target.close()
			return nil
		}
	}
	kept, err := clearAt(d.fd, base, true)
	if err != nil || kept {
		return err
	}
	return mkdirRoot(d.fd, base, mode)
}

func ensureFile(t *tree, p string) error {
	d, base, err := parentOf(t, p)
	if err != nil {
		return err
	}
	defer d.close()
	st, err := statAt(d.fd, base)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		return nil
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := removeAllAt(d.fd, base); err != nil {
		return err
	}
	fd, err := createRoot(d.fd, base, 0o644)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// createRoot creates the regular file name in dirfd, root:root with mode,
// and returns it open for writing.
func createRoot(dirfd int, name string, mode uint32) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, err
	}
	if err := unix.Fchown(fd, 0, 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func installInit(t *tree, initBinary string) error {
	src, err := os.Open(initBinary)
	if err != nil {
		return err
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil {
		return err
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", initBinary)
	}
	d, base, err := parentOf(t, strings.TrimPrefix(GuestInitPath, "/"))
	if err != nil {
		return err
	}
	defer d.close()
	// /.banger was just made a real directory; it is ours, whatever
	// owner and mode the image gave it.
	if err := unix.Fchownat(t.rootFd, ".banger", 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if err := unix.Fchmodat(t.rootFd, ".banger", 0o755, 0); err != nil {
		return err
	}
	if err := removeAllAt(d.fd, base); err != nil {
		return err
	}
	fd, err := createRoot(d.fd, base, 0o755)
	if err != nil {
		return err
	}
	dst := os.NewFile(uintptr(fd), GuestInitPath)
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}
