package imagemgr

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// maxWarnings bounds the warnings a LayerStats keeps (the counts go on).
const maxWarnings = 20

// LayerStats counts what ApplyLayer did, for progress and logs.
type LayerStats struct {
	Entries       int64    // tar entries read, whiteouts included
	Bytes         int64    // regular-file content written
	Whiteouts     int64    // whiteout files and opaque markers applied
	XattrsSkipped int64    // extended attributes the host refused (see setXattrs)
	Warnings      []string // the first few things skipped, for the log
}

func (s *LayerStats) add(o LayerStats) {
	s.Entries += o.Entries
	s.Bytes += o.Bytes
	s.Whiteouts += o.Whiteouts
	s.XattrsSkipped += o.XattrsSkipped
	for _, w := range o.Warnings {
		if len(s.Warnings) < maxWarnings {
			s.Warnings = append(s.Warnings, w)
		}
	}
}

func (s *LayerStats) warn(format string, args ...any) {
	if len(s.Warnings) < maxWarnings {
		s.Warnings = append(s.Warnings, fmt.Sprintf(format, args...))
	}
}

// Flattener applies OCI layers, in order, into a staging directory:
// whiteouts and opaque directories are honoured, and owners, modes
// (setuid, setgid and sticky included), symlinks, hardlinks, device
// nodes, fifos, extended attributes and times are kept. It refuses every
// entry that would reach outside the root (see ApplyLayer).
//
// A Flattener is not safe for concurrent use. After an error it stops:
// the caller removes the staging directory and starts again.
type Flattener struct {
	t     *tree
	buf   []byte
	layer int
	err   error // sticky: set by the first failure
	done  bool  // Finish ran
	total LayerStats
	cur   LayerStats // the layer being applied

	// touched holds the physical paths the current layer wrote or made,
	// and all their ancestors: what whiteouts and opaque markers of the
	// same layer must keep.
	touched map[string]bool
	// dirTimes are the times of directory entries, applied by Finish
	// (adding a child changes a directory's mtime), keyed by physical
	// path. id guards against the directory having been replaced since.
	dirTimes map[string]dirTime
}

type dirTime struct {
	atime, mtime time.Time
	id           fileID
}

// NewFlattener prepares to flatten layers into root, an empty directory
// the caller made. root must sit below a directory that only its owner,
// this process's user, may enter (mode 0700 or stricter): the tree will
// hold the image's setuid files and device nodes, and no other local user
// may reach them. Defer Close in case neither Finish nor a failing
// ApplyLayer runs (they release the Flattener themselves).
func NewFlattener(root string) (*Flattener, error) {
	if err := checkPrivate(root); err != nil {
		return nil, err
	}
	t, err := openTree(root)
	if err != nil {
		return nil, err
	}
	names, err := readDirNames(t.rootFd)
	if err == nil && len(names) > 0 {
		err = fmt.Errorf("staging root %s is not empty (it holds %q): %w", root, names[0], errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		t.close()
		return nil, err
	}
	return &Flattener{
		t:        t,
		buf:      make([]byte, 256<<10),
		touched:  make(map[string]bool),
		dirTimes: make(map[string]dirTime),
	}, nil
}

// ApplyLayer applies one uncompressed layer tar stream on top of the
// layers applied before it. layerName (usually the layer's digest) only
// labels errors.
//
// It refuses, with an *EntryError naming the layer and the entry and
// wrapping errdefs.ErrInvalidArgument: empty names and names with a NUL
// byte; absolute names and hardlink targets; names whose ".." climbs
// above the root; paths that resolve, through the image's own symlinks,
// to a place above the root (absolute symlink targets are read from the
// image root, as the guest reads them); hardlinks to a directory, to a
// missing file or to a path outside the root; a parent that is not a
// directory; and entry types banger does not know (tar volume labels,
// multi-volume and GNU dump-dir entries, vendor types). A stream that is
// not a valid tar fails with an error naming the layer that also wraps
// errdefs.ErrInvalidArgument. It never performs a filesystem operation
// outside the root.
func (f *Flattener) ApplyLayer(r io.Reader, layerName string) (LayerStats, error) {
	if f.err != nil {
		return LayerStats{}, fmt.Errorf("flattener stopped after an earlier error: %w", f.err)
	}
	if f.done {
		return LayerStats{}, fmt.Errorf("flattener already finished: %w", errdefs.ErrFailedPrecondition)
	}
	f.layer++
	f.cur = LayerStats{}
	f.touched = make(map[string]bool)
	stats, err := f.applyLayer(r, layerName)
	f.total.add(stats)
	if err != nil {
		f.err = err
		f.t.close() // nothing more will be done: release the root now
	}
	return stats, err
}

func (f *Flattener) applyLayer(r io.Reader, layerName string) (LayerStats, error) {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return f.cur, nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			if errors.Is(err, tar.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("malformed tar: %w: %w", err, errdefs.ErrInvalidArgument)
			}
			return f.cur, fmt.Errorf("%s: %w", layerLabel(f.layer, layerName), err)
		}
		// ErrInsecurePath (GODEBUG tarinsecurepath=0) comes with the
		// header; splitName refuses the same names with a better message.
		f.cur.Entries++
		if err := f.applyEntry(hdr, tr); err != nil {
			return f.cur, &EntryError{Layer: f.layer, LayerName: layerName, Entry: hdr.Name, Err: err}
		}
	}
}

// Stats returns the totals over every layer applied so far.
func (f *Flattener) Stats() LayerStats {
	s := f.total
	s.Warnings = append([]string(nil), s.Warnings...)
	return s
}

// Finish applies the directories' times, deepest first, now that no more
// children will be added to them. Call it once, after the last layer. It
// releases the Flattener's descriptor, as a failed ApplyLayer does.
func (f *Flattener) Finish() error {
	if f.err != nil {
		return fmt.Errorf("flattener stopped after an earlier error: %w", f.err)
	}
	if f.done {
		return nil
	}
	keys := make([]string, 0, len(f.dirTimes))
	for k := range f.dirTimes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		di, dj := depth(keys[i]), depth(keys[j])
		if di != dj {
			return di > dj
		}
		return keys[i] < keys[j]
	})
	defer f.t.close()
	for _, k := range keys {
		if err := f.setDirTime(k, f.dirTimes[k]); err != nil {
			f.err = fmt.Errorf("set times of directory %q: %w", k, err)
			return f.err
		}
	}
	f.done = true
	return nil
}

func (f *Flattener) setDirTime(key string, dt dirTime) error {
	var path []string
	if key != "" {
		path = strings.Split(key, "/")
	}
	fd, err := f.t.openStrict(path)
	if err != nil {
		// Removed or replaced by a later layer: nothing to do.
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil
		}
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if idOf(&st) != dt.id {
		return nil // a different directory now lives there
	}
	return unix.UtimesNanoAt(fd, ".", timespecs(dt.atime, dt.mtime), 0)
}

// Close releases the Flattener's descriptor on the root if Finish or a
// failed ApplyLayer has not already; it may be called more than once.
// It removes nothing: on error the caller removes the staging directory.
func (f *Flattener) Close() error { return f.t.close() }

// madeDir records a directory resolve made for a path's missing parent:
// this layer wrote it, and it has no entry of its own, so no time of an
// earlier directory that was removed from there applies to it.
func (f *Flattener) madeDir(path []string) {
	f.touch(path)
	delete(f.dirTimes, strings.Join(path, "/"))
}

// touch records that the current layer wrote path (and so, its parents).
func (f *Flattener) touch(path []string) {
	for i := len(path); i > 0; i-- {
		k := strings.Join(path[:i], "/")
		if f.touched[k] {
			return
		}
		f.touched[k] = true
	}
}

func depth(key string) int {
	if key == "" {
		return 0
	}
	return strings.Count(key, "/") + 1
}

func timespecs(atime, mtime time.Time) []unix.Timespec {
	if atime.IsZero() {
		atime = mtime
	}
	return []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
}
