package guestinit

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// fileWriters create regular files in parallel: under emulation the
	// kernel's work per file dominates an import, and it scales with the
	// guest's vCPUs (two busybox tars do twice the work in 1.2 times the
	// time on two).
	fileWriters = 4
	// writeBudget bounds the file contents read ahead of the writers.
	writeBudget = 16 << 20
	// streamAbove is the largest file handed to a writer; a larger one is
	// written by the reader as it reads it.
	streamAbove = 1 << 20
	// jobQueue is how many files the reader may get ahead of the writers
	// (writeBudget permitting): enough that a writer finds the next file
	// ready while the reader parses headers.
	jobQueue = 64
)

// fileJob is a regular file for a writer, its contents read already.
type fileJob struct {
	name  string // as in the archive, for the error
	dir   *dirFD // a reference the writer releases
	mode  int64
	mtime time.Time
	buf   *[]byte
	seq   uint64 // its place in the archive among the jobs
}

// file extracts regular entry name into parent: handed to a writer, or
// written here if large.
func (x *extractor) file(parent *dirFD, name string, hdr *tar.Header, body io.Reader) error {
	if x.made[name] {
		// A directory, or a symlink the cache went through: the root
		// unlinks the latter and forgets what was opened through it.
		if err := x.drain(); err != nil {
			return err
		}
		if err := x.unlink(name); err != nil {
			return err
		}
	}
	if hdr.Size > streamAbove {
		buf := x.bufs.get(streamAbove)
		defer x.bufs.put(buf)
		return x.createFile(parent.fd, name, hdr.Mode, hdr.ModTime, func(fd int) error {
			for left := hdr.Size; left > 0; {
				b := (*buf)[:min(left, int64(len(*buf)))]
				if _, err := io.ReadFull(body, b); err != nil {
					return err
				}
				if err := writeAll(fd, b); err != nil {
					return err
				}
				left -= int64(len(b))
			}
			return nil
		})
	}
	buf := x.bufs.get(int(hdr.Size))
	if _, err := io.ReadFull(body, *buf); err != nil {
		x.bufs.put(buf)
		return err
	}
	parent.acquire()
	if x.pending == nil {
		x.pending = map[string]bool{}
	}
	x.pending[name] = true
	x.inflight.Add(1)
	x.seq++
	x.jobs <- fileJob{name: name, dir: parent, mode: hdr.Mode, mtime: hdr.ModTime, buf: buf, seq: x.seq}
	return nil
}

// writer creates the files of the jobs until the channel closes. After
// a failure it still creates the files that come before the failed one in
// the archive (another writer may hold one), and lets the later ones go.
func (x *extractor) writer() {
	defer x.writers.Done()
	for j := range x.jobs {
		if x.before(j.seq) {
			err := x.createFile(j.dir.fd, j.name, j.mode, j.mtime, func(fd int) error { return writeAll(fd, *j.buf) })
			if err != nil {
				x.fail(j.seq, fmt.Errorf("%q: %w", j.name, err))
			}
		}
		j.dir.release()
		x.bufs.put(j.buf)
		x.inflight.Done()
	}
}

// fail records job seq's error, unless an earlier job's is recorded.
func (x *extractor) fail(seq uint64, err error) {
	x.errMu.Lock()
	if x.err == nil || seq < x.errSeq {
		x.err, x.errSeq = err, seq
	}
	x.errMu.Unlock()
	x.failed.Store(true)
}

// before says whether job seq comes before every failed one.
func (x *extractor) before(seq uint64) bool {
	if !x.failed.Load() {
		return true
	}
	x.errMu.Lock()
	defer x.errMu.Unlock()
	return x.err == nil || seq < x.errSeq
}

// drain waits for the pending writes: when it returns nil, everything
// before the current entry is on disk. It returns the error of the
// earliest failed file in the archive, which names its entry.
func (x *extractor) drain() error {
	x.inflight.Wait()
	clear(x.pending)
	x.errMu.Lock()
	defer x.errMu.Unlock()
	return x.err
}

// pendingOn says whether a pending file is at name or at one of its
// parents: an entry there must wait for it.
func (x *extractor) pendingOn(name string) bool {
	if len(x.pending) == 0 {
		return false
	}
	for n := name; n != "."; n = path.Dir(n) {
		if x.pending[n] {
			return true
		}
	}
	return false
}

// createFile creates name (its last component, in directory dirfd), has
// fill write its contents, then sets owner, mode (chown clears setuid)
// and time, on the raw descriptor: an os.File would cost three fcntl and
// a failing epoll_ctl a file.
func (x *extractor) createFile(dirfd int, name string, mode int64, mtime time.Time, fill func(fd int) error) error {
	base := path.Base(name)
	perm := uint32(mode & 0o777)
	// O_EXCL and O_NOFOLLOW: never written through whatever is there, a
	// symlink least of all; it is unlinked and the file made again.
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := openat(dirfd, base, flags, perm)
	if err == unix.EEXIST {
		if err := unix.Unlinkat(dirfd, base, 0); err == unix.EISDIR {
			return errors.New("a directory is in the way")
		} else if err != nil {
			return &fs.PathError{Op: "unlinkat", Path: name, Err: err}
		}
		fd, err = openat(dirfd, base, flags, perm)
	}
	if err != nil {
		return &fs.PathError{Op: "openat", Path: name, Err: err}
	}
	err = fill(fd)
	// A file root creates is root's already.
	if err == nil && x.chown && (x.uid != 0 || x.gid != 0) {
		err = fserr("fchown", name, unix.Fchown(fd, x.uid, x.gid))
	}
	// Created with perm less the umask (default ACLs aside, which a
	// workspace does not have): no chmod when that is the mode wanted.
	if err == nil && (mode&0o7000 != 0 || x.umask < 0 || perm&^uint32(x.umask) != perm) {
		err = fserr("fchmod", name, unix.Fchmod(fd, uint32(mode&0o7777)))
	}
	if err == nil {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(mtime.UnixNano())}
		err = fserr("utimensat", name, unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH))
	}
	if cerr := unix.Close(fd); err == nil {
		err = fserr("close", name, cerr)
	}
	return err
}

func openat(dirfd int, base string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, base, flags, perm)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

func fserr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// processUmask is the process's umask from /proc (Linux 4.7 on), or -1:
// reading it with umask(2) would set it, racing the other goroutines
// that spawn processes.
var processUmask = sync.OnceValue(func() int {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range bytes.Lines(status) {
		if v, ok := bytes.CutPrefix(line, []byte("Umask:")); ok {
			m, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 8, 32)
			if err != nil {
				return -1
			}
			return int(m)
		}
	}
	return -1
})

// bufPool hands out content buffers in power-of-two classes from 4 KiB
// to streamAbove, blocking while writeBudget bytes of them are out.
type bufPool struct {
	mu   sync.Mutex
	cond sync.Cond // on mu
	out  int       // guarded by mu: bytes of class size handed out
	free [bufClasses]sync.Pool
}

const (
	minBufShift = 12
	bufClasses  = 9 // 4 KiB << 8 is streamAbove
)

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// get returns a buffer of length n (at most streamAbove).
func (p *bufPool) get(n int) *[]byte {
	c := bufClass(n)
	size := 1 << (c + minBufShift)
	p.mu.Lock()
	if p.cond.L == nil {
		p.cond.L = &p.mu
	}
	for p.out > 0 && p.out+size > writeBudget {
		p.cond.Wait()
	}
	p.out += size
	p.mu.Unlock()
	b, _ := p.free[c].Get().(*[]byte)
	if b == nil {
		s := make([]byte, size)
		b = &s
	}
	*b = (*b)[:n]
	return b
}

func (p *bufPool) put(b *[]byte) {
	size := cap(*b)
	p.free[bufClass(size)].Put(b)
	p.mu.Lock()
	p.out -= size
	p.mu.Unlock()
	p.cond.Broadcast()
}
