package imagemgr

import (
	"bytes"
	"io"
	"os"
)

// sparseBlock is the unit copySparse skips when it is all zeros.
const sparseBlock = 4096

var zeroBlock [sparseBlock]byte

// copySparse streams r into the empty file f through buf (a multiple of
// sparseBlock), seeking over all-zero blocks instead of writing them, and
// sets the file's size at the end. It returns the bytes read.
func copySparse(f *os.File, r io.Reader, buf []byte) (int64, error) {
	var off int64
	for eof := false; !eof; {
		n := 0
		for n < len(buf) {
			m, err := r.Read(buf[n:])
			n += m
			if err == io.EOF {
				eof = true
				break
			}
			if err != nil {
				return off + int64(n), err
			}
		}
		if err := writeNonZero(f, buf[:n], off); err != nil {
			return off, err
		}
		off += int64(n)
	}
	return off, f.Truncate(off)
}

// writeNonZero writes the runs of p that are not whole zero blocks at off.
func writeNonZero(f *os.File, p []byte, off int64) error {
	start := -1 // start of the current run of data, or -1
	for i := 0; i < len(p); i += sparseBlock {
		end := min(i+sparseBlock, len(p))
		zero := bytes.Equal(p[i:end], zeroBlock[:end-i])
		switch {
		case !zero && start < 0:
			start = i
		case zero && start >= 0:
			if _, err := f.WriteAt(p[start:i], off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
	}
	if start >= 0 {
		_, err := f.WriteAt(p[start:], off+int64(start))
		return err
	}
	return nil
}
