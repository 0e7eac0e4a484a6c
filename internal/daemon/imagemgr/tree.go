package imagemgr

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits on paths inside an image. They keep every path expressible as a
// Linux path (PATH_MAX) and bound the work one hostile name can cause.
const (
	maxPathLen      = 4095 // bytes in an entry name, a link target or a resolved path
	maxNameLen      = 255  // bytes in one component (NAME_MAX)
	maxSymlinkHops  = 40   // symlinks followed while resolving one path (as Linux)
	maxResolveSteps = 4096 // components visited while resolving one path
)

// tree is an open image root. Every operation below it goes through a
// directory descriptor reached from the root one component at a time with
// O_NOFOLLOW, so no host path outside the root is ever touched, whatever
// symlinks the image planted.
type tree struct {
	root   string
	rootFd int // O_PATH|O_DIRECTORY
}

func openTree(root string) (*tree, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open image root", Path: root, Err: err}
	}
	return &tree{root: root, rootFd: fd}, nil
}

func (t *tree) close() error {
	if t.rootFd < 0 {
		return nil
	}
	err := unix.Close(t.rootFd)
	t.rootFd = -1
	return err
}

// dir is an open directory inside the tree: an O_PATH descriptor and its
// physical path below the root (no symlinks, no dots).
type dir struct {
	fd   int
	path []string
}

func (d *dir) close() { unix.Close(d.fd) }

// child is the physical path of name inside d.
func (d *dir) child(name string) []string {
	return append(append(make([]string, 0, len(d.path)+1), d.path...), name)
}

// walkMode says what resolve does with a missing directory.
type walkMode int

const (
	lookupOnly    walkMode = iota // report errNotExist
	createMissing                 // make it 0755 root:root and go on
)

type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }

// resolve walks comps (clean components: no "", "." or "..") from the root
// and returns the directory they name, following symlinks as the guest
// would: an absolute target restarts at the image root, and a ".." that
// would climb above the root is refused. made, if not nil, is called with
// the physical path of each directory createMissing makes.
func (t *tree) resolve(comps []string, mode walkMode, made func([]string)) (*dir, error) {
	cur, err := unix.Openat(t.rootFd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(cur, &st); err != nil {
		unix.Close(cur)
		return nil, err
	}
	w := walker{t: t, cur: cur, ids: []fileID{idOf(&st)}}
	d, err := w.run(comps, mode, made)
	if err != nil {
		unix.Close(w.cur)
		return nil, err
	}
	return d, nil
}

// walker is the state of one resolve: the open current directory, its
// physical path, and the identity of every directory on that path, so
// that ".." can be checked to land where the walk came from.
type walker struct {
	t        *tree
	cur      int
	path     []string
	pathLen  int
	ids      []fileID
	hops     int
	lastLink string // the last symlink followed, for messages
}

func (w *walker) run(comps []string, mode walkMode, made func([]string)) (*dir, error) {
	queue := append([]string(nil), comps...)
	for steps := 0; len(queue) > 0; steps++ {
		if steps >= maxResolveSteps {
			return nil, refuse("resolving the path visits more than %d components", maxResolveSteps)
		}
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if err := w.up(); err != nil {
				return nil, err
			}
			continue
		}
		var st unix.Stat_t
		err := unix.Fstatat(w.cur, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			if mode == lookupOnly {
				return nil, errNotExist
			}
			if err := mkdirRoot(w.cur, c, 0o755); err != nil {
				return nil, fmt.Errorf("create parent directory %q: %w", strings.Join(append(w.path, c), "/"), err)
			}
			if made != nil {
				made(append(append([]string(nil), w.path...), c))
			}
			err = unix.Fstatat(w.cur, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return nil, fmt.Errorf("stat %q: %w", strings.Join(append(w.path, c), "/"), err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := w.readlink(c)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(target, "/") {
				if err := w.reset(); err != nil {
					return nil, err
				}
			}
			queue = append(strings.Split(target, "/"), queue...)
		case unix.S_IFDIR:
			if err := w.down(c, &st); err != nil {
				return nil, err
			}
		default:
			return nil, refuse("%q is not a directory", strings.Join(append(w.path, c), "/"))
		}
	}
	return &dir{fd: w.cur, path: w.path}, nil
}

// up moves to the parent directory, refusing to climb above the root.
func (w *walker) up() error {
	if len(w.path) == 0 {
		if w.lastLink != "" {
			return refuse("path leaves the image root (through symlink %s)", w.lastLink)
		}
		return refuse("path leaves the image root")
	}
	fd, err := unix.Openat(w.cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	if idOf(&st) != w.ids[len(w.ids)-2] {
		unix.Close(fd)
		return fmt.Errorf("directory %q moved while resolving a path", strings.Join(w.path, "/"))
	}
	unix.Close(w.cur)
	w.cur = fd
	w.pathLen -= len(w.path[len(w.path)-1]) + 1
	w.path = w.path[:len(w.path)-1]
	w.ids = w.ids[:len(w.ids)-1]
	return nil
}

// down enters the directory c of the current one.
func (w *walker) down(c string, st *unix.Stat_t) error {
	if w.pathLen+len(c)+1 > maxPathLen {
		return refuse("path is longer than %d bytes", maxPathLen)
	}
	fd, err := unix.Openat(w.cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", strings.Join(append(w.path, c), "/"), err)
	}
	unix.Close(w.cur)
	w.cur = fd
	w.path = append(w.path, c)
	w.pathLen += len(c) + 1
	w.ids = append(w.ids, idOf(st))
	return nil
}

// reset goes back to the root, for an absolute symlink target.
func (w *walker) reset() error {
	fd, err := unix.Openat(w.t.rootFd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.Close(w.cur)
	w.cur = fd
	w.path, w.pathLen, w.ids = nil, 0, w.ids[:1]
	return nil
}

func (w *walker) readlink(c string) (string, error) {
	w.hops++
	if w.hops > maxSymlinkHops {
		return "", refuse("more than %d symlinks on the path", maxSymlinkHops)
	}
	target, err := readlinkAt(w.cur, c)
	if err != nil {
		return "", fmt.Errorf("read symlink %q: %w", strings.Join(append(w.path, c), "/"), err)
	}
	if target == "" {
		return "", refuse("symlink %q has an empty target", strings.Join(append(w.path, c), "/"))
	}
	w.lastLink = fmt.Sprintf("%q -> %q", strings.Join(append(w.path, c), "/"), target)
	return target, nil
}

// openStrict opens the directory at a physical path without following any
// symlink; it fails if a component is not a directory.
func (t *tree) openStrict(path []string) (int, error) {
	cur, err := unix.Openat(t.rootFd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, c := range path {
		fd, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}
