package vmdisk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

const (
	// copyChunk is how much one copy_file_range or read moves between
	// checks of the context.
	copyChunk = 8 << 20
	// rwBuffer is the read/write fallback's buffer.
	rwBuffer = 1 << 20
	// zeroBlock is the unit the read/write fallback leaves as a hole when
	// it reads all zeros.
	zeroBlock = 4096
)

// SparseCopy makes dst, a new file (mode 0600), a copy of src that is as
// sparse as src: it walks src's data extents with SEEK_DATA/SEEK_HOLE and
// copies only those (with copy_file_range, or read and write where the
// kernel cannot), then sets dst's size to src's and syncs it. A 2 GiB
// image holding 200 MiB of data costs 200 MiB of I/O. ctx is checked
// between chunks of 8 MiB; on any failure, cancellation included, dst is
// removed.
func SparseCopy(ctx context.Context, src, dst string) (err error) {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	sf, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer sf.Close()
	fi, err := sf.Stat()
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("copy %s: not a regular file", src)
	}
	df, err := createNew(dst)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer func() {
		if err != nil {
			df.Close()
			os.Remove(dst)
		}
	}()
	c := &copier{ctx: ctx, src: sf, dst: df, cfr: true}
	if err := c.copyExtents(fi.Size()); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := df.Truncate(fi.Size()); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := df.Sync(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := df.Close(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// copier copies byte ranges from src to the same offsets in dst.
type copier struct {
	ctx      context.Context
	src, dst *os.File
	cfr      bool   // copy_file_range still worth trying
	buf      []byte // the read/write fallback's buffer, made on first use
}

// copyExtents copies every data extent of src's first size bytes. A file
// system without SEEK_DATA is read whole, leaving all-zero blocks as holes.
func (c *copier) copyExtents(size int64) error {
	fd := int(c.src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO): // only a hole is left
			return nil
		case errors.Is(err, unix.EINVAL) && off == 0: // no SEEK_DATA here
			c.cfr = false
			return c.copyRange(0, size)
		case err != nil:
			return fmt.Errorf("seek data at %d: %w", off, err)
		}
		if data >= size {
			return nil
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole at %d: %w", data, err)
		}
		hole = min(hole, size)
		if err := c.copyRange(data, hole); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies [off, end) of src to the same range of dst.
func (c *copier) copyRange(off, end int64) error {
	for off < end {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n := min(end-off, copyChunk)
		if c.cfr {
			roff, woff := off, off
			w, err := unix.CopyFileRange(int(c.src.Fd()), &roff, int(c.dst.Fd()), &woff, int(n), 0)
			switch {
			case err == nil && w > 0:
				off += int64(w)
				continue
			case err == nil:
				return fmt.Errorf("source ends at %d, before its size %d: it changed during the copy", off, end)
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EXDEV), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS),
				errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EBADF):
				c.cfr = false // this kernel or file system pair cannot; read and write instead
			default:
				return fmt.Errorf("copy_file_range at %d: %w", off, err)
			}
		}
		w, err := c.readWrite(off, n)
		if err != nil {
			return err
		}
		off += w
	}
	return nil
}

// readWrite copies up to n bytes at off through a buffer, skipping
// aligned all-zero blocks so they stay holes in dst.
func (c *copier) readWrite(off, n int64) (int64, error) {
	if c.buf == nil {
		c.buf = make([]byte, rwBuffer)
	}
	var done int64
	for done < n {
		p := c.buf[:min(n-done, int64(len(c.buf)))]
		r, err := c.src.ReadAt(p, off+done)
		if r == 0 && err != nil {
			if err == io.EOF {
				return done, fmt.Errorf("source ends at %d: it changed during the copy", off+done)
			}
			return done, fmt.Errorf("read at %d: %w", off+done, err)
		}
		if err := writeNonZero(c.dst, p[:r], off+done); err != nil {
			return done, fmt.Errorf("write at %d: %w", off+done, err)
		}
		done += int64(r)
	}
	return done, nil
}

var zeros [zeroBlock]byte

// writeNonZero writes p at off except its all-zero zeroBlock-sized
// blocks (aligned within p, which starts on a block boundary when off
// does).
func writeNonZero(f *os.File, p []byte, off int64) error {
	for i := 0; i < len(p); {
		j := min(i+zeroBlock, len(p))
		if bytes.Equal(p[i:j], zeros[:j-i]) {
			i = j
			continue
		}
		// Extend the run of data to the next zero block.
		for j < len(p) {
			k := min(j+zeroBlock, len(p))
			if bytes.Equal(p[j:k], zeros[:k-j]) {
				break
			}
			j = k
		}
		if _, err := f.WriteAt(p[i:j], off+int64(i)); err != nil {
			return err
		}
		i = j
	}
	return nil
}
