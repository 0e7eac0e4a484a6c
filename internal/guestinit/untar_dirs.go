package guestinit

import (
	"archive/tar"
	"container/list"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// maxDirFDs bounds the directory descriptors an extraction keeps open. A
// checkout can have thousands of directories and the init serves other
// sessions from the same descriptor table, so the cache is a bounded LRU
// rather than every directory of the extraction; a tar lists a
// directory's files together, so a few hundred are plenty.
const maxDirFDs = 256

// dirFD is an open directory of the extraction, shared by the reader and
// the writers: it is closed when the last reference goes, so a writer's
// descriptor is never closed (and its number reused) under it when the
// reader drops the directory from the cache.
type dirFD struct {
	name string
	fd   int
	f    *os.File // when opened through the root, which owns fd
	refs atomic.Int32
}

func (d *dirFD) acquire() { d.refs.Add(1) }

func (d *dirFD) release() {
	if d.refs.Add(-1) != 0 {
		return
	}
	if d.f != nil {
		d.f.Close()
	} else {
		unix.Close(d.fd)
	}
}

// dirCache holds directory descriptors by name, least recently used
// dropped first. Only the reader goroutine uses it; each entry holds one
// reference.
type dirCache struct {
	byName map[string]*list.Element // of *dirFD
	lru    list.List                // most recently used first
}

func (c *dirCache) get(name string) *dirFD {
	e := c.byName[name]
	if e == nil {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*dirFD)
}

func (c *dirCache) put(d *dirFD) {
	if c.byName == nil {
		c.byName = map[string]*list.Element{}
	}
	d.acquire()
	c.byName[d.name] = c.lru.PushFront(d)
	for c.lru.Len() > maxDirFDs {
		c.remove(c.lru.Back())
	}
}

func (c *dirCache) remove(e *list.Element) {
	d := c.lru.Remove(e).(*dirFD)
	delete(c.byName, d.name)
	d.release()
}

// dropUnder drops name and the directories below it.
func (c *dirCache) dropUnder(name string) {
	for n, e := range c.byName {
		if n == name || strings.HasPrefix(n, name+"/") {
			c.remove(e)
		}
	}
}

func (c *dirCache) closeAll() {
	for e := c.lru.Front(); e != nil; e = c.lru.Front() {
		c.remove(e)
	}
}

// dir returns directory d of the extraction, made (0o755, like MkdirAll)
// if missing, with a reference the caller releases.
func (x *extractor) dir(d string) (*dirFD, error) {
	if f := x.fds.get(d); f != nil {
		f.acquire()
		return f, nil
	}
	f, err := x.openDir(d)
	if err != nil {
		return nil, err
	}
	for n := d; n != "." && !x.made[n]; n = path.Dir(n) {
		x.made[n] = true
	}
	x.fds.put(f)
	return f, nil // the reference openDir returned
}

// openDir opens d one component below its parent's descriptor with
// O_NOFOLLOW, which is what os.Root does at each step, and makes it if
// missing. Anything else on the way — a symlink, a non-directory, an
// error — is left to the root, which follows a symlink only inside dest
// and fails as the extraction always has; the writers are drained first,
// since a pending file may be replacing that very symlink, and only a
// walk through the root can follow one.
func (x *extractor) openDir(d string) (*dirFD, error) {
	if d != "." {
		parent, err := x.dir(path.Dir(d))
		if err != nil {
			return nil, err
		}
		base := path.Base(d)
		fd, err := openDirAt(parent.fd, base)
		if err == unix.ENOENT {
			if err = unix.Mkdirat(parent.fd, base, 0o755); err == nil {
				fd, err = openDirAt(parent.fd, base)
			}
		}
		parent.release()
		if err == nil {
			return newDirFD(d, fd, nil), nil
		}
	}
	if err := x.drain(); err != nil {
		return nil, err
	}
	if err := x.root.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	f, err := x.root.OpenFile(d, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return newDirFD(d, int(f.Fd()), f), nil
}

func openDirAt(dirfd int, base string) (int, error) {
	return unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func newDirFD(name string, fd int, f *os.File) *dirFD {
	d := &dirFD{name: name, fd: fd, f: f}
	d.acquire()
	return d
}

// forget drops name and what is below it from the known and the open
// directories.
func (x *extractor) forget(name string) {
	delete(x.made, name)
	for d := range x.made {
		if strings.HasPrefix(d, name+"/") {
			delete(x.made, d)
		}
	}
	x.fds.dropUnder(name)
}

// mkdir makes directory entry name in parent, replacing a non-directory
// (a symlink is unlinked, never followed) and keeping a directory.
func (x *extractor) mkdir(parent *dirFD, name string, hdr *tar.Header) error {
	base := path.Base(name)
	var st unix.Stat_t
	err := unix.Fstatat(parent.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
	case err == nil:
		x.forget(name) // a symlink the cache may have been opened through
		if err := unix.Unlinkat(parent.fd, base, 0); err != nil {
			return &fs.PathError{Op: "unlinkat", Path: name, Err: err}
		}
		fallthrough
	case err == unix.ENOENT:
		if err := unix.Mkdirat(parent.fd, base, 0o700); err != nil {
			return &fs.PathError{Op: "mkdirat", Path: name, Err: err}
		}
	default:
		return &fs.PathError{Op: "fstatat", Path: name, Err: err}
	}
	x.made[name] = true
	x.dirs = append(x.dirs, withName(hdr, name))
	if !x.chown {
		return nil
	}
	if err := unix.Fchownat(parent.fd, base, x.uid, x.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "fchownat", Path: name, Err: err}
	}
	return nil
}
