package guestinit

import (
	"archive/tar"
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/adler32"
	"hash/crc32"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// GitPackRecord is the PAX record marking a git pack in transfer form (the
// workspace package writes it under the same key; its doc has the format):
// the pack's entries as they are, except those (whole or delta) whose
// object is a work-tree file of the same archive, which come as a
// reference to that file and are stored whole. gitPack rebuilds the pack
// from it and writes its index.
const GitPackRecord = "BANGER.gitpack"

// Limits on what a transfer form may ask for.
const (
	maxPackObjects = 1 << 21 // objects in one pack (the host sends larger packs as they are)
	maxPackPath    = 1 << 16 // bytes of a referenced file's name
)

// packObject is one object of the pack being rebuilt, for its index.
type packObject struct {
	sha [20]byte
	off int64 // in the rebuilt pack
	crc uint32
}

// packWriter writes a pack's bytes, computing the current entry's CRC32;
// its buffer's flushes go through the trailer's hash (hashedFD).
type packWriter struct {
	w   *bufio.Writer
	crc uint32
	off int64
}

func (pw *packWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.crc = crc32.Update(pw.crc, crc32.IEEETable, b[:n])
	pw.off += int64(n)
	return n, err
}

// hashedFD writes to a descriptor and hashes what it wrote on another
// goroutine: the trailer's SHA-1 is a quarter of a rebuild's time under
// emulation, and the guest's other vCPU is idle while the pack is made.
type hashedFD struct {
	fd     int
	chunks chan []byte
	free   chan []byte
	done   chan struct{}
	sum    hash.Hash
}

func newHashedFD(fd int) *hashedFD {
	h := &hashedFD{fd: fd, chunks: make(chan []byte, 4), free: make(chan []byte, 4), done: make(chan struct{}), sum: sha1.New()}
	go func() {
		defer close(h.done)
		for c := range h.chunks {
			h.sum.Write(c)
			select {
			case h.free <- c[:0]:
			default: // enough spare buffers: let it go (a blocking send deadlocked Sum)
			}
		}
	}()
	return h
}

func (h *hashedFD) Write(b []byte) (int, error) {
	if err := writeAll(h.fd, b); err != nil {
		return 0, err
	}
	var c []byte
	select {
	case c = <-h.free:
	default:
	}
	h.chunks <- append(c, b...)
	return len(b), nil
}

// Sum ends the hashing and returns the SHA-1 of everything written; call
// it once, after the last Write.
func (h *hashedFD) Sum() (out [20]byte) {
	close(h.chunks)
	<-h.done
	h.sum.Sum(out[:0])
	return out
}

// gitPack rebuilds the pack name from its transfer form in body (size
// bytes) and writes its index beside it, both under their final names
// only once complete. Referenced files must be regular files this
// extraction wrote, still holding the content the host sent (their
// Adler-32 is checked as they are read back).
func (x *extractor) gitPack(name string, hdr *tar.Header, body io.Reader, size int64) (err error) {
	if !strings.HasSuffix(name, ".pack") {
		return errors.New("a git pack must be named *.pack")
	}
	dir, err := x.dir(path.Dir(name))
	if err != nil {
		return err
	}
	defer dir.release()
	var rnd [8]byte
	rand.Read(rnd[:])
	tmpPack := "tmp_pack_banger_" + hex.EncodeToString(rnd[:])
	tmpIdx := "tmp_idx_banger_" + hex.EncodeToString(rnd[:])
	defer func() {
		if err != nil {
			unix.Unlinkat(dir.fd, tmpPack, 0)
			unix.Unlinkat(dir.fd, tmpIdx, 0)
		}
	}()
	var objs []packObject
	var trailer [20]byte
	err = x.createFile(dir.fd, tmpPack, hdr.Mode, hdr.ModTime, func(fd int) error {
		hfd := newHashedFD(fd)
		pw := &packWriter{w: bufio.NewWriterSize(hfd, 256<<10)}
		var err error
		objs, err = x.rebuildPack(pw, bufio.NewReaderSize(io.LimitReader(body, size), 256<<10))
		if err == nil {
			err = pw.w.Flush()
		}
		trailer = hfd.Sum() // also ends its goroutine
		if err != nil {
			return err
		}
		return writeAll(fd, trailer[:])
	})
	if err != nil {
		return err
	}
	idx := packIndex(objs, trailer)
	if err := x.createFile(dir.fd, tmpIdx, hdr.Mode, hdr.ModTime, func(fd int) error { return writeAll(fd, idx) }); err != nil {
		return err
	}
	// The pack first: git finds packs by their index. A directory in
	// the way is not replaced.
	base := path.Base(name)
	idxBase := strings.TrimSuffix(base, ".pack") + ".idx"
	if err := unix.Renameat(dir.fd, tmpPack, dir.fd, base); err != nil {
		return &fs.PathError{Op: "rename", Path: name, Err: err}
	}
	if err := unix.Renameat(dir.fd, tmpIdx, dir.fd, idxBase); err != nil {
		return &fs.PathError{Op: "rename", Path: path.Join(path.Dir(name), idxBase), Err: err}
	}
	return nil
}

// rebuildPack copies the transfer form's entries into pw and returns the
// objects for the index.
func (x *extractor) rebuildPack(pw *packWriter, r *bufio.Reader) ([]packObject, error) {
	tag, err := r.ReadByte()
	if err != nil || tag != 'H' {
		return nil, errors.New("transfer form: no pack header")
	}
	var head [12]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, fmt.Errorf("transfer form: %w", err)
	}
	version := binary.BigEndian.Uint32(head[4:])
	count := binary.BigEndian.Uint32(head[8:])
	if string(head[:4]) != "PACK" || (version != 2 && version != 3) || count > maxPackObjects {
		return nil, fmt.Errorf("transfer form: bad pack header %x", head)
	}
	pw.Write(head[:])
	objs := make([]packObject, 0, count)
	// Old (host) offsets of the entries so far, in order, for OFS_DELTA.
	oldOffs := make([]int64, 0, count)
	oldOff := int64(12)
	buf := make([]byte, 5+0xffff) // a stored zlib block and its header
	for {
		tag, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("transfer form: %w", io.ErrUnexpectedEOF)
		}
		if tag == 'E' {
			break
		}
		if tag != 'R' && tag != 'F' {
			return nil, fmt.Errorf("transfer form: unknown record %q", tag)
		}
		if len(objs) == int(count) {
			return nil, fmt.Errorf("transfer form: more than the %d objects of its header", count)
		}
		var o packObject
		if _, err := io.ReadFull(r, o.sha[:]); err != nil {
			return nil, fmt.Errorf("transfer form: %w", err)
		}
		o.off, pw.crc = pw.off, 0
		n, err := binary.ReadUvarint(r)
		if err != nil || n == 0 || n > 1<<40 {
			return nil, errors.New("transfer form: bad entry length")
		}
		oldLen := int64(n)
		switch tag {
		case 'R':
			err = copyEntry(pw, r, oldLen, oldOff, oldOffs, objs, buf)
		case 'F':
			err = x.blobFromFile(pw, r, buf)
		default:
			return nil, fmt.Errorf("transfer form: unknown record %q", tag)
		}
		if err != nil {
			return nil, fmt.Errorf("object %x: %w", o.sha, err)
		}
		o.crc = pw.crc
		objs = append(objs, o)
		oldOffs = append(oldOffs, oldOff)
		oldOff += oldLen
	}
	if len(objs) != int(count) {
		return nil, fmt.Errorf("transfer form: %d objects, its header says %d", len(objs), count)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return nil, errors.New("transfer form: data after its end")
	}
	return objs, nil
}

// copyEntry copies one entry of n bytes, re-encoding an OFS_DELTA's
// distance to its base for the rebuilt pack.
func copyEntry(pw *packWriter, r *bufio.Reader, n, oldOff int64, oldOffs []int64, objs []packObject, buf []byte) error {
	newOff := pw.off
	var head [32]byte
	k := 0
	c, err := r.ReadByte()
	if err != nil {
		return err
	}
	head[k], k = c, k+1
	typ := int(c>>4) & 7
	for c&0x80 != 0 {
		if c, err = r.ReadByte(); err != nil {
			return err
		}
		if k == 11 {
			return errors.New("entry header too long")
		}
		head[k], k = c, k+1
	}
	switch typ {
	case 1, 2, 3, 4, 7:
		pw.Write(head[:k])
	case objOfsDelta:
		c, err := r.ReadByte()
		if err != nil {
			return err
		}
		used := k + 1
		dist := int64(c & 0x7f)
		for c&0x80 != 0 {
			if c, err = r.ReadByte(); err != nil {
				return err
			}
			if used++; used > k+10 {
				return errors.New("delta base distance too long")
			}
			dist = (dist+1)<<7 | int64(c&0x7f)
		}
		i, ok := slices.BinarySearch(oldOffs, oldOff-dist)
		if dist <= 0 || !ok {
			return errors.New("delta base is not an earlier entry")
		}
		pw.Write(head[:k])
		pw.Write(ofsDistance(newOff - objs[i].off))
		k = used
	default:
		return fmt.Errorf("entry of unknown type %d", typ)
	}
	if int64(k) > n {
		return errors.New("entry shorter than its header")
	}
	_, err = io.CopyBuffer(pw, io.LimitReader(r, n-int64(k)), buf)
	return err
}

// fdReader reads a raw descriptor.
type fdReader int

func (r fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(r), b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// objOfsDelta is the pack type of a delta naming its base by distance.
const objOfsDelta = 6

// ofsDistance encodes an OFS_DELTA base distance as git does.
func ofsDistance(d int64) []byte {
	var b [10]byte
	i := len(b) - 1
	b[i] = byte(d & 0x7f)
	for d >>= 7; d != 0; d >>= 7 {
		d--
		i--
		b[i] = 0x80 | byte(d&0x7f)
	}
	return b[i:]
}

// blobFromFile writes a blob entry whose content is a file this extraction
// wrote, zlib-stored (no compression: the guest's CPU is the scarce part).
func (x *extractor) blobFromFile(pw *packWriter, r *bufio.Reader, buf []byte) error {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return errors.New("transfer form: bad blob size")
	}
	want, err := binary.ReadUvarint(r)
	if err != nil || want > 0xffffffff {
		return errors.New("transfer form: bad blob checksum")
	}
	plen, err := binary.ReadUvarint(r)
	if err != nil || plen == 0 || plen > maxPackPath {
		return errors.New("transfer form: bad file name")
	}
	pb := make([]byte, plen)
	if _, err := io.ReadFull(r, pb); err != nil {
		return err
	}
	name, err := entryName(string(pb))
	if err != nil || !x.written[name] {
		return fmt.Errorf("blob from %q: not a file of this archive", pb)
	}
	dir, err := x.dir(path.Dir(name))
	if err != nil {
		return err
	}
	fd, err := openat(dir.fd, path.Base(name), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	dir.release()
	if err != nil {
		return &fs.PathError{Op: "openat", Path: name, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(size) {
		return fmt.Errorf("blob from %q: the file changed in the guest during the import", name)
	}
	f := fdReader(fd)
	// Header: type blob, size.
	var head [16]byte
	k := 0
	c := byte(3<<4) | byte(size&15)
	for s := size >> 4; s != 0; s >>= 7 {
		head[k], k = c|0x80, k+1
		c = byte(s & 0x7f)
	}
	head[k], k = c, k+1
	pw.Write(head[:k])
	pw.Write([]byte{0x78, 0x01}) // zlib, no compression
	sum := adler32.New()
	left := int64(size)
	for first := true; first || left > 0; first = false {
		chunk := min(left, 0xffff)
		blk := buf[:5+chunk]
		if _, err := io.ReadFull(f, blk[5:]); err != nil {
			return fmt.Errorf("blob from %q: the file changed in the guest during the import", name)
		}
		left -= chunk
		blk[0] = 0
		if left == 0 {
			blk[0] = 1 // the final block
		}
		binary.LittleEndian.PutUint16(blk[1:], uint16(chunk))
		binary.LittleEndian.PutUint16(blk[3:], ^uint16(chunk))
		sum.Write(blk[5:])
		pw.Write(blk)
	}
	if sum.Sum32() != uint32(want) {
		return fmt.Errorf("blob from %q: the file changed in the guest during the import", name)
	}
	var tail [4]byte
	binary.BigEndian.PutUint32(tail[:], sum.Sum32())
	pw.Write(tail[:])
	return nil
}

// packIndex is a version 2 index of objs for the pack whose checksum is
// packSum.
func packIndex(objs []packObject, packSum [20]byte) []byte {
	slices.SortFunc(objs, func(a, b packObject) int { return strings.Compare(string(a.sha[:]), string(b.sha[:])) })
	n := len(objs)
	out := make([]byte, 0, 8+256*4+n*28+40+20)
	out = append(out, 0xff, 't', 'O', 'c', 0, 0, 0, 2)
	var fan [256]uint32
	for _, o := range objs {
		fan[o.sha[0]]++
	}
	total := uint32(0)
	for i := range fan {
		total += fan[i]
		out = binary.BigEndian.AppendUint32(out, total)
	}
	for _, o := range objs {
		out = append(out, o.sha[:]...)
	}
	for _, o := range objs {
		out = binary.BigEndian.AppendUint32(out, o.crc)
	}
	var large []int64
	for _, o := range objs {
		if o.off < 0x80000000 {
			out = binary.BigEndian.AppendUint32(out, uint32(o.off))
			continue
		}
		out = binary.BigEndian.AppendUint32(out, 0x80000000|uint32(len(large)))
		large = append(large, o.off)
	}
	for _, off := range large {
		out = binary.BigEndian.AppendUint64(out, uint64(off))
	}
	out = append(out, packSum[:]...)
	sum := sha1.Sum(out)
	return append(out, sum[:]...)
}
