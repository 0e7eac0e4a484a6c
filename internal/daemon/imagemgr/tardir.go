package imagemgr

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DirTar is a directory tree streamed as a tar archive; see TarFromDir.
type DirTar struct {
	pr   *io.PipeReader
	done chan struct{}

	mu    sync.Mutex
	notes []string // guarded by mu
}

var _ io.ReadCloser = (*DirTar)(nil)

// TarFromDir streams the tree at dir as a tar archive that ApplyLayer
// reads, so `image import DIR` goes through the same rules as a pull.
// The root is the entry "./"; every entry keeps its owner, mode, times
// (nanoseconds, PAX) and extended attributes; symlinks are stored as
// symlinks and never followed; files with several links become one file
// and hardlinks to it; devices and fifos are stored, never opened.
// Sockets are left out, and so is what is mounted below dir (the mount
// point itself is kept, empty); Notes lists both.
//
// dir may be a directory a user can still change: everything below it is
// reached from its parent's descriptor with O_NOFOLLOW and each file is
// checked, once open, to be the file that was listed, so a swap makes the
// stream fail rather than leak a file from elsewhere. The stream is made
// by a goroutine that Close stops and waits for.
func TarFromDir(dir string) *DirTar {
	pr, pw := io.Pipe()
	t := &DirTar{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		pw.CloseWithError(t.produce(dir, pw))
	}()
	return t
}

// Read reads the archive.
func (t *DirTar) Read(p []byte) (int, error) { return t.pr.Read(p) }

// Close stops the stream and waits for its goroutine.
func (t *DirTar) Close() error {
	t.pr.Close()
	<-t.done
	return nil
}

// Notes lists what the archive left out and why. It is complete once Read
// has returned io.EOF or Close has returned.
func (t *DirTar) Notes() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.notes...)
}

func (t *DirTar) note(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

// tarProducer is the state of one TarFromDir stream.
type tarProducer struct {
	t       *DirTar
	tw      *tar.Writer
	rootDev uint64
	links   map[fileID]string // first name of each multiply-linked file
}

func (t *DirTar) produce(dir string, w io.Writer) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	p := &tarProducer{t: t, tw: tar.NewWriter(w), rootDev: uint64(st.Dev), links: make(map[fileID]string)}
	hdr := baseHeader("./", &st)
	hdr.Typeflag = tar.TypeDir
	if err := p.addXattrs(hdr, fdXattrs(fd)); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if err := p.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if err := walkAt(fd, "", p.entry); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return p.tw.Close()
}

func baseHeader(name string, st *unix.Stat_t) *tar.Header {
	return &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()),
		Format:  tar.FormatPAX,
	}
}

func (p *tarProducer) entry(dirfd int, name, rel string, st *unix.Stat_t) error {
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFSOCK {
		p.t.note("%s: socket left out", rel)
		return nil
	}
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		id := idOf(st)
		if first, ok := p.links[id]; ok {
			return p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: rel, Linkname: first, Format: tar.FormatPAX})
		}
		p.links[id] = rel
	}
	hdr := baseHeader(rel, st)
	if err := p.addXattrs(hdr, pathXattrs(procPath(dirfd, name))); err != nil {
		return &walkError{rel, err}
	}
	switch typ {
	case unix.S_IFREG:
		return p.file(dirfd, name, rel, st, hdr)
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		if err := p.tw.WriteHeader(hdr); err != nil {
			return err
		}
		if uint64(st.Dev) != p.rootDev {
			p.t.note("%s: another filesystem is mounted here; its contents are left out", rel)
			return errSkipDir
		}
		return nil
	case unix.S_IFLNK:
		target, err := readlinkAt(dirfd, name)
		if err != nil {
			return &walkError{rel, err}
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if typ == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		p.t.note("%s: file type %#o left out", rel, typ)
		return nil
	}
	return p.tw.WriteHeader(hdr)
}

// file streams a regular file. It is opened without following symlinks
// and without blocking (in case it became a fifo), and must still be the
// regular file that was listed.
func (p *tarProducer) file(dirfd int, name, rel string, st *unix.Stat_t, hdr *tar.Header) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &walkError{rel, err}
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return &walkError{rel, err}
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || idOf(&now) != idOf(st) {
		return &walkError{rel, errors.New("file was replaced while being read")}
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, now.Size
	if err := p.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyN(p.tw, f, now.Size)
	if err == io.EOF {
		return &walkError{rel, fmt.Errorf("file shrank while being read (%d of %d bytes)", n, now.Size)}
	}
	return err
}

func (p *tarProducer) addXattrs(hdr *tar.Header, src xattrSource) error {
	xs, err := readXattrs(src)
	if err != nil {
		return fmt.Errorf("read extended attributes: %w", err)
	}
	for k, v := range xs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = make(map[string]string)
		}
		hdr.PAXRecords[xattrPrefix+k] = v
	}
	return nil
}
