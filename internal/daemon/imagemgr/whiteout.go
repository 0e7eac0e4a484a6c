package imagemgr

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// OCI whiteouts: ".wh.NAME" hides NAME of the lower layers; the opaque
// marker ".wh..wh..opq" hides everything the lower layers put in its
// directory. Other ".wh..wh." names are aufs bookkeeping and are skipped.
// Whiteout files themselves never land in the tree.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// whiteout applies a whiteout entry (comps ends in a ".wh." name). A
// whiteout only hides what lower layers made: what this layer writes at
// the same place survives, whether the layer writes it before or after
// the whiteout (after: it is written once the lower one is gone; before:
// hideLower keeps everything touched records).
func (f *Flattener) whiteout(comps []string) error {
	base := comps[len(comps)-1]
	var name string
	switch {
	case base == opaqueMarker:
	case strings.HasPrefix(base, whiteoutMeta):
		return nil
	default:
		name = strings.TrimPrefix(base, whiteoutPrefix)
		if name == "" || name == "." || name == ".." {
			return refuse("whiteout %q names no file", base)
		}
	}
	d, err := f.t.resolve(comps[:len(comps)-1], lookupOnly, nil)
	if isNotExist(err) {
		return nil // the directory isn't there: nothing to hide
	}
	if err != nil {
		return err
	}
	defer d.close()
	f.cur.Whiteouts++
	if name != "" {
		return f.hideLower(d.fd, name, d.child(name))
	}
	f.touch(d.path)
	names, err := readDirNames(d.fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := f.hideLower(d.fd, n, d.child(n)); err != nil {
			return err
		}
	}
	return nil
}

// hideLower removes name (physical path path) in dirfd unless the current
// layer wrote it; a directory the layer wrote or passed through is kept
// and searched for lower-layer entries to remove instead.
func (f *Flattener) hideLower(dirfd int, name string, path []string) error {
	if !f.touched[strings.Join(path, "/")] {
		return removeAllAt(dirfd, name)
	}
	st, err := statAt(dirfd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		child := append(path[:len(path):len(path)], n)
		if err := f.hideLower(fd, n, child); err != nil {
			return err
		}
	}
	return nil
}
