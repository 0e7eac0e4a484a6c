package imagemgr

import (
	"errors"
	"sort"

	"golang.org/x/sys/unix"
)

// errSkipDir, returned by a walkAt callback for a directory, keeps the
// walk out of it.
var errSkipDir = errors.New("skip directory")

// walkFunc is called for each entry below the walked directory: dirfd is
// the directory holding it, name its name there, rel its path below the
// walk's start and st its lstat.
type walkFunc func(dirfd int, name, rel string, st *unix.Stat_t) error

// walkAt calls fn for every entry below the directory open as dirfd,
// parents before children and names in order, never following a symlink:
// each directory is entered with O_NOFOLLOW from its parent's descriptor,
// so a directory swapped for a symlink mid-walk stops the walk instead of
// leading it elsewhere.
func walkAt(dirfd int, prefix string, fn walkFunc) error {
	names, err := readDirNames(dirfd)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		rel := prefix + name
		st, err := statAt(dirfd, name)
		if errors.Is(err, unix.ENOENT) {
			continue // gone since the listing
		}
		if err != nil {
			return &walkError{rel, err}
		}
		err = fn(dirfd, name, rel, &st)
		if err == errSkipDir {
			continue
		}
		if err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &walkError{rel, err}
		}
		err = walkAt(fd, rel+"/", fn)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

type walkError struct {
	rel string
	err error
}

func (e *walkError) Error() string { return e.rel + ": " + e.err.Error() }
func (e *walkError) Unwrap() error { return e.err }
