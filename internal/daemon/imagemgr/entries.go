package imagemgr

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// applyEntry applies one tar entry. Its type, name and owner are checked
// before anything is made.
func (f *Flattener) applyEntry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // PAX global header: defaults for later headers, which the reader applies
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return refuse("unsupported entry type %q", hdr.Typeflag)
	}
	comps, err := splitName(hdr.Name)
	if err != nil {
		return err
	}
	for _, c := range comps[:max(len(comps)-1, 0)] {
		if strings.HasPrefix(c, whiteoutPrefix) {
			return refuse("whiteout name %q used as a directory", c)
		}
	}
	if len(comps) > 0 && strings.HasPrefix(comps[len(comps)-1], whiteoutPrefix) {
		return f.whiteout(comps)
	}
	if err := checkOwner(hdr); err != nil {
		return err
	}
	if len(comps) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return refuse("the image root can only be a directory")
		}
		return f.dirMeta(f.t.rootFd, ".", nil, hdr)
	}
	d, err := f.t.resolve(comps[:len(comps)-1], createMissing, f.madeDir)
	if err != nil {
		return err
	}
	defer d.close()
	base := comps[len(comps)-1]
	f.touch(d.child(base))
	switch hdr.Typeflag {
	case tar.TypeDir:
		return f.directory(d, base, hdr)
	case tar.TypeSymlink:
		return f.symlink(d, base, hdr)
	case tar.TypeLink:
		return f.hardlink(d, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return f.node(d, base, hdr)
	default:
		return f.regular(d, base, hdr, r)
	}
}

// clearAt makes room for a new entry called name in dirfd: whatever is
// there is removed (a directory with all it holds), except that an
// existing directory is kept when keepDir is set. It reports whether it
// kept one.
func clearAt(dirfd int, name string, keepDir bool) (bool, error) {
	st, err := statAt(dirfd, name)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if keepDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return true, nil
	}
	return false, removeAllAt(dirfd, name)
}

func (f *Flattener) regular(d *dir, base string, hdr *tar.Header, r io.Reader) error {
	if _, err := clearAt(d.fd, base, false); err != nil {
		return err
	}
	fd, err := unix.Openat(d.fd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	file := os.NewFile(uintptr(fd), base)
	n, err := copySparse(file, r, f.buf)
	f.cur.Bytes += n
	if err != nil {
		err = fmt.Errorf("write contents: %w", err)
	} else {
		err = f.setMeta(d, base, fd, hdr, false)
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return setTimes(d, base, hdr)
}

func (f *Flattener) directory(d *dir, base string, hdr *tar.Header) error {
	kept, err := clearAt(d.fd, base, true)
	if err != nil {
		return err
	}
	if !kept {
		if err := unix.Mkdirat(d.fd, base, 0o700); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	}
	return f.dirMeta(d.fd, base, d.child(base), hdr)
}

// dirMeta sets a directory's owner, mode and xattrs now and records its
// times for Finish. path is its physical path (nil for the root).
func (f *Flattener) dirMeta(dirfd int, name string, path []string, hdr *tar.Header) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := f.setMeta(nil, "", fd, hdr, false); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	f.dirTimes[strings.Join(path, "/")] = dirTime{atime: hdr.AccessTime, mtime: hdr.ModTime, id: idOf(&st)}
	return nil
}

func (f *Flattener) symlink(d *dir, base string, hdr *tar.Header) error {
	target := hdr.Linkname
	switch {
	case target == "":
		return refuse("symlink with an empty target")
	case strings.IndexByte(target, 0) >= 0:
		return refuse("symlink target holds a NUL byte")
	case len(target) > maxPathLen:
		return refuse("symlink target is longer than %d bytes", maxPathLen)
	}
	if _, err := clearAt(d.fd, base, false); err != nil {
		return err
	}
	if err := unix.Symlinkat(target, d.fd, base); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if err := f.setMeta(d, base, -1, hdr, true); err != nil {
		return err
	}
	return setTimes(d, base, hdr)
}

// hardlink links base to an entry already in the tree. The target is
// resolved like any path (its own last component is not followed: a
// hardlink to a symlink links the symlink) and must exist and not be a
// directory.
func (f *Flattener) hardlink(d *dir, base string, hdr *tar.Header) error {
	tcomps, err := splitName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	}
	if len(tcomps) == 0 {
		return refuse("hardlink to the image root")
	}
	td, err := f.t.resolve(tcomps[:len(tcomps)-1], lookupOnly, nil)
	if isNotExist(err) {
		return refuse("hardlink target %q is not present", hdr.Linkname)
	}
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	}
	defer td.close()
	tbase := tcomps[len(tcomps)-1]
	st, err := statAt(td.fd, tbase)
	switch {
	case errors.Is(err, unix.ENOENT):
		return refuse("hardlink target %q is not present", hdr.Linkname)
	case err != nil:
		return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return refuse("hardlink target %q is a directory", hdr.Linkname)
	}
	if strings.Join(td.child(tbase), "/") == strings.Join(d.child(base), "/") {
		return nil // a link to itself
	}
	if _, err := clearAt(d.fd, base, false); err != nil {
		return err
	}
	if err := unix.Linkat(td.fd, tbase, d.fd, base, 0); err != nil {
		return fmt.Errorf("link to %q: %w", hdr.Linkname, err)
	}
	return nil
}

// node makes a character or block device or a fifo.
func (f *Flattener) node(d *dir, base string, hdr *tar.Header) error {
	var typ uint32
	var dev uint64
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		typ = unix.S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			typ = unix.S_IFBLK
		}
		if hdr.Devmajor < 0 || hdr.Devmajor >= 1<<32 || hdr.Devminor < 0 || hdr.Devminor >= 1<<32 {
			return refuse("device number %d:%d is out of range", hdr.Devmajor, hdr.Devminor)
		}
		dev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	default:
		typ = unix.S_IFIFO
	}
	if _, err := clearAt(d.fd, base, false); err != nil {
		return err
	}
	if err := unix.Mknodat(d.fd, base, typ|0o600, int(dev)); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	if err := f.setMeta(d, base, -1, hdr, false); err != nil {
		return err
	}
	return setTimes(d, base, hdr)
}
