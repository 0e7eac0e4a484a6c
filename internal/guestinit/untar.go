package guestinit

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// extractTar extracts the tar stream r under dest, which is trusted and
// made if missing; the stream is not trusted.
//
// Safety: every path walk goes through an os.Root opened on dest, which
// resolves each name component by component with openat and O_NOFOLLOW
// and refuses any step — "..", an absolute symlink, a relative one that
// climbs out — that would leave dest; the descriptors of directories it
// opened are kept, and below them one more component is opened, made,
// created or unlinked at a time, with O_NOFOLLOW or without following. On
// top of that, entry names and hard link targets that are absolute or
// contain ".." are refused outright, and an existing non-directory is
// unlinked (never written through) before an entry replaces it. So an
// archive can plant a symlink pointing anywhere, but nothing is ever
// created or written outside dest.
//
// Modes (permission, setuid, setgid, sticky bits), symlinks, hard links
// and modification times are kept; every entry is owned by uid:gid when
// running as root (DEST too, when the archive has a "." or "./" entry).
// Devices, FIFOs and sockets are skipped.
//
// Regular files up to streamAbove are read ahead and created by
// fileWriters goroutines in parallel; the reader does the rest in stream
// order, and an entry that could depend on a pending file waits for the
// pending files first (a file or directory at a pending file's name or
// below it, any other kind of entry, the end), so the result is the
// sequential one.
//
// A regular entry carrying the PAX record DeletionsRecord is not
// extracted: it lists, NUL-separated, paths to remove under DEST (each
// checked like an entry name, removed through the same os.Root, with a
// directory removed with its contents and parents left empty by the
// removal pruned). Workspace imports send one before the changed files
// of an incremental import. The first
// refused or failed entry stops the extraction with an error naming it;
// entries before it stay extracted, and a few files and directories
// after it may be too (those read ahead while its write was pending).
func extractTar(r io.Reader, dest string, uid, gid int) error {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	x := &extractor{root: root, uid: uid, gid: gid, chown: os.Geteuid() == 0, umask: processUmask(),
		made: map[string]bool{}, written: map[string]bool{}, jobs: make(chan fileJob, jobQueue)}
	x.writers.Add(fileWriters)
	for range fileWriters {
		go x.writer()
	}
	defer x.close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if werr := x.drain(); werr != nil {
				return werr // an earlier entry's
			}
			return fmt.Errorf("reading the archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			if werr := x.drain(); werr != nil {
				return werr
			}
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
		if x.failed.Load() {
			return x.drain()
		}
	}
	if err := x.drain(); err != nil {
		return err
	}
	return x.finishDirs()
}

type extractor struct {
	root     *os.Root
	uid, gid int
	chown    bool
	umask    int           // of the process, -1 if unknown
	dirs     []*tar.Header // modes and times applied last, deepest first
	// made holds directories known to exist (made or checked by this
	// extraction), with their parents, so that a checkout's thousands of
	// files do not each walk their parents again; an entry removed is
	// dropped from it (forget), and from fds.
	made map[string]bool
	fds  dirCache
	// written holds the regular files this extraction wrote (or handed to
	// a writer), which a git pack in transfer form may take blobs from
	// (gitPack, after a drain).
	written map[string]bool
	// pending holds the files handed to the writers since the last drain.
	// made, fds and pending are the reader's only.
	pending map[string]bool

	jobs     chan fileJob
	bufs     bufPool
	inflight sync.WaitGroup // jobs sent and not done
	writers  sync.WaitGroup

	failed atomic.Bool // err is set
	seq    uint64      // the reader's: jobs handed out so far
	errMu  sync.Mutex
	err    error  // guarded by errMu: the error of the earliest failed job
	errSeq uint64 // guarded by errMu: that job's seq (valid when err != nil)
}

// close stops the writers, once their jobs are done, and closes the
// directories.
func (x *extractor) close() {
	close(x.jobs)
	x.writers.Wait()
	x.fds.closeAll()
}

func (x *extractor) entry(hdr *tar.Header, body io.Reader) error {
	name, err := entryName(hdr.Name)
	if err != nil {
		return err
	}
	regular := hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA || hdr.Typeflag == tar.TypeGNUSparse
	if hdr.PAXRecords[DeletionsRecord] != "" && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) {
		if err := x.drain(); err != nil {
			return err
		}
		return x.deletions(body, hdr.Size)
	}
	if hdr.PAXRecords[GitPackRecord] != "" && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) {
		// The files it takes blobs from must be on disk.
		if err := x.drain(); err != nil {
			return err
		}
		return x.gitPack(name, hdr, body, hdr.Size)
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			x.dirs = append(x.dirs, withName(hdr, "."))
			return x.own(".")
		}
		return nil
	}
	// A file or directory only conflicts with pending files at its name
	// or above: it is made through its parent's descriptor. The others
	// walk through the root, or read what a pending file is making.
	if !(regular || hdr.Typeflag == tar.TypeDir) || x.pendingOn(name) {
		if err := x.drain(); err != nil {
			return err
		}
	}
	parent, err := x.dir(path.Dir(name))
	if err != nil {
		return err
	}
	defer parent.release()
	switch {
	case hdr.Typeflag == tar.TypeDir:
		return x.mkdir(parent, name, hdr)
	case regular:
		if err := x.file(parent, name, hdr, body); err != nil {
			return err
		}
		x.written[name] = true
		return nil
	case hdr.Typeflag == tar.TypeSymlink:
		if err := x.unlink(name); err != nil {
			return err
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		return x.own(name)
	case hdr.Typeflag == tar.TypeLink:
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
