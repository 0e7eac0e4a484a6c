package workspace

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
)

// GitPackRecord is the PAX record (value "1") marking an archive entry as
// a git pack in transfer form rather than a file: the guest init rebuilds
// the pack, and writes its index, from it (guestinit.GitPackRecord is the
// same key). The transfer form is the pack's entries in order, each either
// as it is in the host's pack or, for an entry (whole or delta) whose
// object is a blob with the content of a work-tree file sent earlier in
// the same archive, a reference to that file:
//
//	'H' header[12]                              the pack's header
//	'R' sha[20] uvarint(n) entry[n]             an entry as it is
//	'F' sha[20] uvarint(n) uvarint(size)        a blob of n bytes in the
//	    uvarint(adler32) uvarint(len) path[len] host's pack: the content
//	                                            of the file at path
//	'E'                                         the end
//
// (n keeps the host's offsets known, which OFS_DELTA entries refer to.)
//
// The guest writes 'F' blobs zlib-stored (uncompressed), so its pack is
// larger than the host's, re-encodes the offsets of OFS_DELTA entries, and
// computes the index (CRC32s, offsets) and the trailing checksum itself;
// the object names come from the host. The pack keeps its host name.
//
// Why: a checkout's HEAD blobs are most of a young repository's pack, and
// the guest has just received every one of them as a work-tree file.
// Sending them twice doubled a first import of a one-commit checkout.
const GitPackRecord = "BANGER.gitpack"

// Record tags of the transfer form.
const (
	packRecHeader = 'H'
	packRecRaw    = 'R'
	packRecFile   = 'F'
	packRecEnd    = 'E'
)

// maxPlannedObjects bounds a pack sent in transfer form: the plan costs
// ~50 bytes an object here and the rebuild ~45 in the guest, whose memory
// is small. A larger pack goes as it is (guestinit's maxPackObjects).
const maxPlannedObjects = 1 << 21

// packName matches the pack files the transfer form may carry.
var packName = regexp.MustCompile(`(^|/)objects/pack/pack-[0-9a-f]{40}\.pack$`)

// blobRef is a work-tree file sent in this archive, by its git blob name.
type blobRef struct {
	path  string
	size  int64
	adler uint32
}

// packEntry is one object of a host pack, in pack order.
type packEntry struct {
	sha    [20]byte
	off    int64
	length int64
	file   *blobRef // non-nil: sent as a reference to this file
}

// packPlan is how one host pack goes into the archive in transfer form.
type packPlan struct {
	header  [12]byte
	entries []packEntry
	size    int64 // of the host's pack file
	encoded int64 // of the transfer form
	files   int   // entries sent as file references
}

// planPack reads the index of the pack at rel (".pack") in root and
// decides, from the object names (and a whole blob's size), which entries
// are blobs the archive already carries as files. It returns nil, nil
// when the pack is better
// sent as it is: no such blob, an index other than version 2, more than
// maxPlannedObjects objects, or a pack and index that do not belong
// together (the pack is then sent verbatim, with its index).
func planPack(root *os.Root, rel string, blobs map[[20]byte]*blobRef) (*packPlan, error) {
	if len(blobs) == 0 {
		return nil, nil
	}
	idx, err := readFileLimited(root, strings.TrimSuffix(rel, ".pack")+".idx", 8+256*4+maxPlannedObjects*36+40)
	if err != nil {
		return nil, nil // no index beside it: send it as it is
	}
	shas, offs, packSum, ok := parseIdxV2(idx)
	if !ok || len(shas) > maxPlannedObjects {
		return nil, nil
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	pl := &packPlan{size: fi.Size()}
	if pl.size < 32 {
		return nil, nil
	}
	var trailer [20]byte
	if _, err := f.ReadAt(pl.header[:], 0); err != nil {
		return nil, err
	}
	if _, err := f.ReadAt(trailer[:], pl.size-20); err != nil {
		return nil, err
	}
	if trailer != packSum || string(pl.header[:4]) != "PACK" || binary.BigEndian.Uint32(pl.header[8:]) != uint32(len(shas)) {
		return nil, nil
	}
	order := make([]int, len(shas))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return int(offs[a] - offs[b]) })
	pl.entries = make([]packEntry, len(shas))
	pl.encoded = 1 + 12 + 1
	var hdr [16]byte
	for i, k := range order {
		e := packEntry{sha: shas[k], off: offs[k]}
		end := pl.size - 20
		if i+1 < len(order) {
			end = offs[order[i+1]]
		}
		e.length = end - e.off
		if e.off < 12 || e.length <= 0 {
			return nil, nil
		}
		n, err := f.ReadAt(hdr[:min(int64(len(hdr)), e.length)], e.off)
		if n == 0 {
			return nil, err
		}
		// A delta whose result is such a blob qualifies too: the guest
		// stores it whole, and deltas based on it still find it.
		typ, size, ok := objectHeader(hdr[:n])
		if ref := blobs[e.sha]; ok && ref != nil && (typ == objOfsDelta || typ == objRefDelta || typ == objBlob && ref.size == size) {
			e.file = ref
			pl.files++
			pl.encoded += 1 + 20 + uvarintLen(uint64(e.length)) + uvarintLen(uint64(ref.size)) + uvarintLen(uint64(ref.adler)) + uvarintLen(uint64(len(ref.path))) + int64(len(ref.path))
		} else {
			pl.encoded += 1 + 20 + uvarintLen(uint64(e.length)) + e.length
		}
		pl.entries[i] = e
	}
	if pl.files == 0 {
		return nil, nil
	}
	return pl, nil
}

// write writes the transfer form, reading the host pack from f (the file
// planPack read), and returns the SHA-256 of the whole host pack for the
// manifest. f must still be the pack planPack saw: its size is checked.
func (pl *packPlan) write(w io.Writer, f *os.File) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if fi.Size() != pl.size {
		return "", errors.New("changed while being read")
	}
	h := sha256.New()
	r := bufio.NewReaderSize(io.TeeReader(f, h), 1<<20)
	bw := bufio.NewWriterSize(w, 64<<10)
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", err
	}
	if hdr != pl.header {
		return "", errors.New("changed while being read")
	}
	bw.WriteByte(packRecHeader)
	bw.Write(hdr[:])
	var num [4 * binary.MaxVarintLen64]byte
	for _, e := range pl.entries {
		if e.file != nil {
			bw.WriteByte(packRecFile)
			bw.Write(e.sha[:])
			n := binary.PutUvarint(num[:], uint64(e.length))
			n += binary.PutUvarint(num[n:], uint64(e.file.size))
			n += binary.PutUvarint(num[n:], uint64(e.file.adler))
			n += binary.PutUvarint(num[n:], uint64(len(e.file.path)))
			bw.Write(num[:n])
			bw.WriteString(e.file.path)
			if _, err := r.Discard(int(e.length)); err != nil {
				return "", fmt.Errorf("%w (did it shrink while being read?)", err)
			}
			continue
		}
		bw.WriteByte(packRecRaw)
		bw.Write(e.sha[:])
		n := binary.PutUvarint(num[:], uint64(e.length))
		bw.Write(num[:n])
		if _, err := io.CopyN(bw, r, e.length); err != nil {
			return "", fmt.Errorf("%w (did it shrink while being read?)", err)
		}
	}
	bw.WriteByte(packRecEnd)
	if _, err := io.Copy(io.Discard, r); err != nil { // the trailer, for the hash
		return "", err
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Git object types in a pack entry's header.
const (
	objBlob     = 3
	objOfsDelta = 6
	objRefDelta = 7
)

// objectHeader parses a pack entry's type and size.
func objectHeader(b []byte) (typ int, size int64, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	c := b[0]
	typ, size = int(c>>4)&7, int64(c&15)
	shift := 4
	for i := 1; c&0x80 != 0; i++ {
		if i >= len(b) || shift > 56 {
			return 0, 0, false
		}
		c = b[i]
		size |= int64(c&0x7f) << shift
		shift += 7
	}
	return typ, size, true
}

// parseIdxV2 reads a version 2 pack index: object names, their offsets,
// and the pack's checksum.
func parseIdxV2(b []byte) (shas [][20]byte, offs []int64, packSum [20]byte, ok bool) {
	const head = 8 + 256*4
	if len(b) < head+40 || !bytes.Equal(b[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		return nil, nil, packSum, false
	}
	n := int(binary.BigEndian.Uint32(b[8+255*4:]))
	small := head + n*(20+4+4)
	if n < 0 || len(b) < small+40 {
		return nil, nil, packSum, false
	}
	large := (len(b) - small - 40) / 8
	shas = make([][20]byte, n)
	offs = make([]int64, n)
	for i := range n {
		copy(shas[i][:], b[head+i*20:])
		o := binary.BigEndian.Uint32(b[head+n*24+i*4:])
		if o&0x80000000 == 0 {
			offs[i] = int64(o)
			continue
		}
		k := int(o &^ 0x80000000)
		if k >= large {
			return nil, nil, packSum, false
		}
		offs[i] = int64(binary.BigEndian.Uint64(b[small+k*8:]))
	}
	copy(packSum[:], b[len(b)-40:])
	return shas, offs, packSum, true
}

func uvarintLen(v uint64) int64 {
	var b [binary.MaxVarintLen64]byte
	return int64(binary.PutUvarint(b[:], v))
}

// readFileLimited reads a whole file of at most max bytes, not following
// a symlink.
func readFileLimited(root *os.Root, rel string, max int64) ([]byte, error) {
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}

// packSibling is the pack a file beside it belongs to (pack-X.idx →
// pack-X.pack), or "".
func packSibling(name string) string {
	if strings.HasSuffix(name, ".idx") && packName.MatchString(strings.TrimSuffix(name, ".idx")+".pack") {
		return strings.TrimSuffix(name, ".idx") + ".pack"
	}
	return ""
}

// isGitPath says whether an archive name is a .git or inside one (the top
// one or a submodule's): Pack writes those after the work tree, and
// Export's receiver ignores them.
func isGitPath(name string) bool {
	return slices.Contains(strings.Split(name, "/"), ".git")
}
