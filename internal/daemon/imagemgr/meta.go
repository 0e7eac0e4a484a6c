package imagemgr

import (
	"archive/tar"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// xattrPrefix marks a PAX record carrying an extended attribute.
const xattrPrefix = "SCHILY.xattr."

// checkOwner refuses owners chown cannot set.
func checkOwner(hdr *tar.Header) error {
	// (1<<32)-1 is chown's "leave unchanged"; it can't be an owner.
	if hdr.Uid < 0 || hdr.Uid >= 1<<32-1 || hdr.Gid < 0 || hdr.Gid >= 1<<32-1 {
		return refuse("owner %d:%d is out of range", hdr.Uid, hdr.Gid)
	}
	return nil
}

// setMeta sets owner, then mode, then extended attributes, in that order:
// chown clears setuid/setgid bits and file capabilities
// (security.capability), so each must come after it. When fd >= 0 it is
// the entry itself, open; otherwise the entry is base in d, acted on
// without following it. Symlinks get no mode (Linux ignores it).
func (f *Flattener) setMeta(d *dir, base string, fd int, hdr *tar.Header, isSymlink bool) error {
	uid, gid := hdr.Uid, hdr.Gid
	mode := uint32(hdr.Mode) & 0o7777
	if fd >= 0 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	} else {
		if err := unix.Fchownat(d.fd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		if !isSymlink {
			// fchmodat cannot refuse to follow; base was made by us a
			// moment ago as a node, not a symlink.
			if err := unix.Fchmodat(d.fd, base, mode, 0); err != nil {
				return fmt.Errorf("chmod: %w", err)
			}
		}
	}
	f.setXattrs(d, base, fd, hdr)
	return nil
}

// setXattrs applies the entry's SCHILY.xattr.* PAX records. An attribute
// the host refuses (a filesystem without user xattrs, user.* on a
// symlink or device, a security.* the LSM vetoes, trusted.* without
// CAP_SYS_ADMIN) is skipped and counted, never fatal: xattrs are
// metadata the guest can mostly live without, and what was skipped is in
// LayerStats for the daemon to log. mkfs.ext4 -d copies the ones set.
func (f *Flattener) setXattrs(d *dir, base string, fd int, hdr *tar.Header) {
	var names []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		name, val := strings.TrimPrefix(k, xattrPrefix), []byte(hdr.PAXRecords[k])
		var err error
		if fd >= 0 {
			err = unix.Fsetxattr(fd, name, val, 0)
		} else {
			err = unix.Lsetxattr(procPath(d.fd, base), name, val, 0)
		}
		if err != nil {
			f.cur.XattrsSkipped++
			f.cur.warn("entry %q: extended attribute %q not set: %v", hdr.Name, name, err)
		}
	}
}

// setTimes sets a non-directory's access and modification times.
func setTimes(d *dir, base string, hdr *tar.Header) error {
	if err := unix.UtimesNanoAt(d.fd, base, timespecs(hdr.AccessTime, hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
