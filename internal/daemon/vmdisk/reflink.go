package vmdisk

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// ErrReflinkUnsupported is wrapped by Reflink's error when the file
// system cannot clone (or not between these two files); the
// syscall's errno is wrapped too. It wraps errdefs.ErrUnavailable.
var ErrReflinkUnsupported = fmt.Errorf("no reflink on this file system: %w", errdefs.ErrUnavailable)

// Reflink makes dst, a new file (mode 0600), a clone of src with FICLONE:
// it shares src's blocks until either is written, and takes the same
// time whatever src's size. It does not fall back to copying; on failure
// dst is removed.
func Reflink(src, dst string) (err error) {
	sf, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("reflink: %w", err)
	}
	defer sf.Close()
	df, err := createNew(dst)
	if err != nil {
		return fmt.Errorf("reflink: %w", err)
	}
	defer func() {
		if err != nil {
			df.Close()
			os.Remove(dst)
		}
	}()
	if err := unix.IoctlFileClone(int(df.Fd()), int(sf.Fd())); err != nil {
		if reflinkUnsupported(err) {
			return fmt.Errorf("reflink %s to %s: %w: %w", src, dst, err, ErrReflinkUnsupported)
		}
		return fmt.Errorf("reflink %s to %s: %w", src, dst, err)
	}
	if err := df.Sync(); err != nil {
		return fmt.Errorf("reflink %s to %s: %w", src, dst, err)
	}
	if err := df.Close(); err != nil {
		return fmt.Errorf("reflink %s to %s: %w", src, dst, err)
	}
	return nil
}

// reflinkUnsupported reports whether a FICLONE errno means the file
// system cannot clone these files: no remap support (EOPNOTSUPP, ENOTTY,
// ENOSYS), different file systems (EXDEV) or files it cannot share
// (EINVAL, e.g. btrfs between nodatacow and datacow files).
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// ProbeReflink reports whether files in dir can be reflink-cloned: it
// clones a small temporary file there and removes both files.
func ProbeReflink(dir string) bool {
	src, err := os.CreateTemp(dir, ".banger-reflink-probe-*")
	if err != nil {
		return false
	}
	defer os.Remove(src.Name())
	defer src.Close()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		return false
	}
	dst, err := os.CreateTemp(dir, ".banger-reflink-probe-*")
	if err != nil {
		return false
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) == nil
}

// createNew creates path for writing, failing with
// errdefs.ErrAlreadyExists if it exists.
func createNew(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrAlreadyExists)
	}
	return f, err
}
