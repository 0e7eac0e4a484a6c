package guestinit

import (
	"archive/tar"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// extractTar extracts the tar stream r under dest, which is trusted and
// made if missing; the stream is not trusted.
//
// Safety: every file system operation goes through an os.Root opened on
// dest, which resolves each name component by component with openat and
// O_NOFOLLOW and refuses any step — "..", an absolute symlink, a relative
// one that climbs out — that would leave dest. On top of that, entry names
// and hard link targets that are absolute or contain ".." are refused
// outright, and an existing non-directory is unlinked (never written
// through) before an entry replaces it. So an archive can plant a symlink
// pointing anywhere, but nothing is ever created or written outside dest.
//
// Modes (permission, setuid, setgid, sticky bits), symlinks, hard links
// and modification times are kept; every entry is owned by uid:gid when
// running as root (DEST too, when the archive has a "." or "./" entry).
// Devices, FIFOs and sockets are skipped.
//
// A regular entry carrying the PAX record DeletionsRecord is not
// extracted: it lists, NUL-separated, paths to remove under DEST (each
// checked like an entry name, removed through the same os.Root, with a
// directory removed with its contents and parents left empty by the
// removal pruned). Workspace imports send one before the changed files
// of an incremental import. The first
// refused or failed entry stops the extraction with an error naming it;
// entries before it stay extracted.
func extractTar(r io.Reader, dest string, uid, gid int) error {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	x := &extractor{root: root, uid: uid, gid: gid, chown: os.Geteuid() == 0, written: map[string]bool{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
	}
	return x.finishDirs()
}

type extractor struct {
	root     *os.Root
	uid, gid int
	chown    bool
	dirs     []*tar.Header // modes and times applied last, deepest first
	// made holds directories known to exist (made or checked by this
	// extraction), so that a checkout's thousands of files do not each
	// walk their parents again; an entry removed is dropped from it.
	made map[string]bool
	// written holds the regular files this extraction wrote, which a git
	// pack in transfer form may take blobs from (gitPack).
	written map[string]bool
}

// mkdirAll makes dir and its parents through the root unless this
// extraction already knows it exists.
func (x *extractor) mkdirAll(dir string) error {
	if x.made[dir] {
		return nil
	}
	if err := x.root.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if x.made == nil {
		x.made = map[string]bool{}
	}
	for d := dir; d != "." && d != "/"; d = path.Dir(d) {
		x.made[d] = true
	}
	return nil
}

// forget drops name and what is below it from the known directories.
func (x *extractor) forget(name string) {
	delete(x.made, name)
	for d := range x.made {
		if strings.HasPrefix(d, name+"/") {
			delete(x.made, d)
		}
	}
}

func (x *extractor) entry(hdr *tar.Header, body io.Reader) error {
	name, err := entryName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.PAXRecords[DeletionsRecord] != "" && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) {
		return x.deletions(body, hdr.Size)
	}
	if hdr.PAXRecords[GitPackRecord] != "" && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) {
		return x.gitPack(name, hdr, body, hdr.Size)
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			x.dirs = append(x.dirs, withName(hdr, "."))
			return x.own(".")
		}
		return nil
	}
	if dir := path.Dir(name); dir != "." {
		if err := x.mkdirAll(dir); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := x.root.Lstat(name)
		if err == nil && !fi.IsDir() {
			if err := x.root.Remove(name); err != nil {
				return err
			}
		}
		if err != nil || !fi.IsDir() {
			if err := x.root.Mkdir(name, 0o700); err != nil {
				return err
			}
		}
		x.dirs = append(x.dirs, withName(hdr, name))
		return x.own(name)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		// Create first and clear the way only if something is there: a
		// fresh import then costs one path walk per file, and owner, mode
		// and time are set on the open file.
		f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			if err := x.unlink(name); err != nil {
				return err
			}
			f, err = x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
		if err != nil {
			return err
		}
		_, err = io.Copy(f, body)
		if err == nil {
			err = x.finishOpenFile(f, hdr)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			x.written[name] = true
		}
		return err
	case tar.TypeSymlink:
		if err := x.unlink(name); err != nil {
			return err
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		return x.own(name)
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil || target == "." {
			return fmt.Errorf("hard link to %q: refused", hdr.Linkname)
		}
		if err := x.unlink(name); err != nil {
			return err
		}
		return x.root.Link(target, name)
	}
	return nil // devices, FIFOs, sockets: not in a workspace
}

// entryName cleans a member name and refuses absolute names and "..".
func entryName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute name refused")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errors.New(`name with ".." refused`)
		}
	}
	return path.Clean(name), nil
}

// unlink removes a non-directory in the way of a new entry.
func (x *extractor) unlink(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("a directory is in the way")
	}
	x.forget(name)
	return x.root.Remove(name)
}

// own gives name (not what a symlink points to) to uid:gid.
func (x *extractor) own(name string) error {
	if !x.chown {
		return nil
	}
	return x.root.Lchown(name, x.uid, x.gid)
}

// finishOpenFile sets an open regular file's owner, then mode (chown
// clears setuid), then time, through its descriptor.
func (x *extractor) finishOpenFile(f *os.File, hdr *tar.Header) error {
	// A file root creates is root's already.
	if x.chown && (x.uid != 0 || x.gid != 0) {
		if err := f.Chown(x.uid, x.gid); err != nil {
			return err
		}
	}
	if err := f.Chmod(tarMode(hdr)); err != nil {
		return err
	}
	// Through SyscallConn, not Fd, which would switch the file to
	// blocking mode: two more system calls a file.
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	var uerr error
	if err := rc.Control(func(fd uintptr) { uerr = unix.UtimesNanoAt(int(fd), "", ts, unix.AT_EMPTY_PATH) }); err != nil {
		return err
	}
	return uerr
}

// finishFile sets a regular file's owner, then mode (chown clears setuid),
// then time.
func (x *extractor) finishFile(name string, hdr *tar.Header) error {
	if err := x.own(name); err != nil {
		return err
	}
	if err := x.root.Chmod(name, tarMode(hdr)); err != nil {
		return err
	}
	return x.root.Chtimes(name, time.Time{}, hdr.ModTime)
}

// finishDirs applies directory modes and times once their contents are in
// (a read-only directory could not have been filled; adding entries
// changes the time).
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		hdr := x.dirs[i]
		if err := x.root.Chmod(hdr.Name, tarMode(hdr)); err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
		if err := x.root.Chtimes(hdr.Name, time.Time{}, hdr.ModTime); err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
	}
	return nil
}

func withName(hdr *tar.Header, name string) *tar.Header {
	h := *hdr
	h.Name = name
	return &h
}

// tarMode is a header's permission and special bits as an fs.FileMode.
func tarMode(hdr *tar.Header) fs.FileMode {
	m := fs.FileMode(hdr.Mode) & fs.ModePerm
	if hdr.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// DeletionsRecord is the PAX record marking the deletion list of a
// workspace import (the workspace package writes it under the same key).
const DeletionsRecord = "BANGER.delete"

// maxDeletions bounds the deletion list held in memory.
const maxDeletions = 64 << 20

// deletions removes the NUL-separated paths in body.
func (x *extractor) deletions(body io.Reader, size int64) error {
	if size > maxDeletions {
		return fmt.Errorf("deletion list of %d bytes refused (limit %d)", size, maxDeletions)
	}
	list, err := io.ReadAll(io.LimitReader(body, maxDeletions))
	if err != nil {
		return err
	}
	for _, p := range strings.Split(string(list), "\x00") {
		if p == "" {
			continue
		}
		name, err := entryName(p)
		if err != nil || name == "." {
			return fmt.Errorf("deleting %q: refused", p)
		}
		x.forget(name)
		if err := x.root.RemoveAll(name); err != nil {
			return fmt.Errorf("deleting %q: %w", p, err)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if fi, err := x.root.Lstat(d); err != nil || !fi.IsDir() || x.root.Remove(d) != nil {
				break // not empty, or not there: keep it and its parents
			}
			x.forget(d)
		}
	}
	return nil
}
