package fcproc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// JailAPISocket is the API socket banger gives a jailed Firecracker: the
// jailer's own default, in the /run it makes inside the jail.
const JailAPISocket = "/run/firecracker.socket"

// Modes of the directories PrepareJail makes above the jail's root: others
// may pass through (a jailed process never does: it is chrooted below)
// but not list the VM ids.
const jailDirMode = 0o711

// JailFile is a host file the VM needs inside its jail (a kernel, a disk,
// a log), and how it gets there.
type JailFile struct {
	// HostPath is the file on the host; it must be a regular file.
	HostPath string
	// Name is its name in the jail's root: one path element, Firecracker
	// sees it as "/"+Name.
	Name string
	// Writable: the VM writes it (a disk, a log). It is hard-linked, so
	// what the VM writes lands in HostPath and removing the jail loses
	// nothing, and the file is chowned to the jailer's uid and gid. A
	// hard link cannot cross filesystems: the chroot base must be on the
	// same filesystem as HostPath.
	//
	// A read-only file (kernel, initrd) is hard-linked too when it can be
	// and others may read it (it stays root's: it is shared with other
	// VMs); otherwise it is cloned (FICLONE) or copied, and the copy
	// belongs to the jailer's uid and gid, mode 0400.
	Writable bool
}

// JailDir is the directory that holds one VM's jail,
// ChrootBaseDir/<name of Binary>/<ID> (JailRoot is its "root"), or ""
// without a jailer. RemoveJail removes it.
func (cfg Config) JailDir() string {
	cfg = cfg.withDefaults()
	if cfg.Jailer == nil {
		return ""
	}
	return filepath.Join(cfg.Jailer.ChrootBaseDir, filepath.Base(cfg.Binary), cfg.ID)
}

// jailDirs validates cfg and returns the chroot base, the directory for
// this Firecracker binary under it, and the VM's jail directory. It
// refuses what could make the jail land anywhere but there: an id with
// anything but letters, digits and '-' (so no "..", no '/'), a base that
// is not absolute and clean, and, among the parts that exist, any that is
// a symbolic link or not a directory.
func jailDirs(cfg Config) (base, execDir, dir string, err error) {
	cfg = cfg.withDefaults()
	if cfg.Jailer == nil {
		return "", "", "", invalid(cfg.ID, "no jailer configured")
	}
	if err := cfg.validate(); err != nil {
		return "", "", "", err
	}
	base = cfg.Jailer.ChrootBaseDir
	if filepath.Clean(base) != base || base == "/" {
		return "", "", "", invalid(cfg.ID, "jailer chroot base dir %q is not a clean absolute path below /", base)
	}
	execDir = filepath.Join(base, filepath.Base(cfg.Binary))
	dir = filepath.Join(execDir, cfg.ID)
	for _, p := range []string{base, execDir, dir} {
		st, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return "", "", "", fmt.Errorf("jail of VM %s: %w", cfg.ID, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return "", "", "", fmt.Errorf("jail of VM %s: %s is a symbolic link; refusing to follow it: %w", cfg.ID, p, errdefs.ErrInvalidArgument)
		case !st.IsDir():
			return "", "", "", fmt.Errorf("jail of VM %s: %s is not a directory: %w", cfg.ID, p, errdefs.ErrInvalidArgument)
		}
	}
	return base, execDir, dir, nil
}

// PrepareJail makes a fresh jail for cfg before the jailer runs: it removes
// whatever an earlier run left in JailDir (the jailer refuses to start
// over its own pid file), creates JailRoot, and puts files in it (see
// JailFile). It returns the path Firecracker sees for each file, in
// order. The jailer then adds its own part (the Firecracker copy, dev,
// run) and hands the root to its uid and gid. On error nothing of the
// jail is left.
func PrepareJail(cfg Config, files []JailFile) ([]string, error) {
	cfg = cfg.withDefaults()
	base, execDir, dir, err := jailDirs(cfg)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{filepath.Base(cfg.Binary): true, "run": true, "dev": true}
	for _, f := range files {
		if f.Name == "" || f.Name == "." || f.Name == ".." || strings.ContainsRune(f.Name, '/') || seen[f.Name] {
			return nil, invalid(cfg.ID, "jail file name %q: want one path element, used once, not the jailer's own (%s, dev, run)", f.Name, filepath.Base(cfg.Binary))
		}
		seen[f.Name] = true
	}
	if err := RemoveJail(cfg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(base, jailDirMode); err != nil {
		return nil, fmt.Errorf("jail of VM %s: %w", cfg.ID, err)
	}
	if err := os.Mkdir(execDir, jailDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("jail of VM %s: %w", cfg.ID, err)
	}
	// Checked again now that they exist: a symbolic link made meanwhile
	// is refused rather than followed.
	if _, _, _, err := jailDirs(cfg); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, jailDirMode); err != nil {
		return nil, fmt.Errorf("jail of VM %s: %w", cfg.ID, err)
	}
	root := cfg.JailRoot()
	paths, err := fillJail(cfg, root, files)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("jail of VM %s: %w", cfg.ID, err)
	}
	return paths, nil
}

func fillJail(cfg Config, root string, files []JailFile) ([]string, error) {
	if err := os.Mkdir(root, 0o700); err != nil {
		return nil, err
	}
	uid, gid := cfg.Jailer.UID, cfg.Jailer.GID
	var paths []string
	for _, f := range files {
		dst := filepath.Join(root, f.Name)
		st, err := os.Stat(f.HostPath)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file: the jail takes files only: %w", f.HostPath, errdefs.ErrInvalidArgument)
		}
		switch {
		case f.Writable:
			if err := os.Link(f.HostPath, dst); err != nil {
				if errors.Is(err, syscall.EXDEV) {
					return nil, fmt.Errorf("%s cannot be hard-linked into the jail under %s: they are on different filesystems; put jailer_chroot_base on the filesystem of banger's root: %w", f.HostPath, cfg.Jailer.ChrootBaseDir, errdefs.ErrFailedPrecondition)
				}
				return nil, err
			}
			if err := os.Lchown(dst, uid, gid); err != nil {
				return nil, err
			}
		case st.Mode().Perm()&0o004 != 0 && os.Link(f.HostPath, dst) == nil:
			// Shared and readable by anyone: the link is enough.
		default:
			if err := copyInto(f.HostPath, dst, uid, gid); err != nil {
				return nil, err
			}
		}
		paths = append(paths, "/"+f.Name)
	}
	return paths, nil
}

// copyInto makes dst a copy of src (a clone where the filesystem can),
// owned by uid:gid, mode 0400.
func copyInto(src, dst string, uid, gid int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) != nil {
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return fmt.Errorf("copy %s into the jail: %w", src, err)
		}
	}
	if err := out.Chown(uid, gid); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// RemoveJail removes cfg's JailDir and everything in it (the hard links go,
// the files they share stay), after checking that it is what it should
// be: the directory named after the VM id under the chroot base, reached
// through no symbolic link. A jail that does not exist is not an error.
// It never removes the base or the directory for the binary, which other
// VMs' jails share.
func RemoveJail(cfg Config) error {
	_, _, dir, err := jailDirs(cfg)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the jail of VM %s: %w", cfg.ID, err)
	}
	return nil
}
