package workspace

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Limits bounds what Export accepts from a guest.
type Limits struct {
	MaxEntries int   // archive entries; 0: DefaultMaxEntries
	MaxBytes   int64 // file content bytes, and the bundle's size; 0: DefaultMaxBytes
}

const (
	DefaultMaxEntries = 2_000_000
	DefaultMaxBytes   = 64 << 30
	maxNameLen        = 4096
)

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// ErrHostileArchive wraps every refusal of a guest's archive.
var ErrHostileArchive = errors.New("refused the guest's archive")

// receiver extracts a guest's tar into a fresh private directory, strictly:
// the guest is not trusted. It refuses (naming the entry) absolute names,
// "..", device nodes, FIFOs and unknown entry types, an entry below a
// symlink or file of the same archive (a write through a symlink), a name
// given twice, a hard link to anything but an earlier regular file, and
// more entries or bytes than its limits. Entries inside any .git
// directory, and those skip names, are read past and not extracted.
// Directories are made 0755 and files 0644 or 0755 (git keeps only the
// executable bit).
type receiver struct {
	root    *os.Root
	lim     Limits
	skip    func(name string) bool
	kinds   map[string]byte // name -> tar type flag of what was extracted
	entries int
	bytes   int64
}

func receiveTree(r io.Reader, dest string, lim Limits, skip func(string) bool) error {
	if err := os.Mkdir(dest, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	x := &receiver{root: root, lim: lim.withDefaults(), skip: skip, kinds: map[string]byte{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: reading it: %v", ErrHostileArchive, err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("%w: entry %q: %v", ErrHostileArchive, hdr.Name, err)
		}
	}
}

func (x *receiver) entry(hdr *tar.Header, body io.Reader) error {
	x.entries++
	if x.entries > x.lim.MaxEntries {
		return fmt.Errorf("more than %d entries", x.lim.MaxEntries)
	}
	name, err := checkName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." || x.skipped(name) {
		return nil
	}
	for _, d := range parents(name) {
		switch k, seen := x.kinds[d]; {
		case seen && k == tar.TypeSymlink:
			return fmt.Errorf("written through the symlink %q", d)
		case seen && k != tar.TypeDir:
			return fmt.Errorf("below %q, which is not a directory", d)
		}
	}
	if k, seen := x.kinds[name]; seen && !(k == tar.TypeDir && hdr.Typeflag == tar.TypeDir) {
		return errors.New("given twice")
	}
	if dir := path.Dir(name); dir != "." {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, d := range parents(name) {
			if _, seen := x.kinds[d]; !seen {
				x.kinds[d] = tar.TypeDir
			}
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.root.Mkdir(name, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	case tar.TypeReg, tar.TypeRegA:
		x.bytes += hdr.Size
		if x.bytes > x.lim.MaxBytes {
			return fmt.Errorf("more than %d bytes of files", x.lim.MaxBytes)
		}
		mode := os.FileMode(0o644)
		if hdr.Mode&0o111 != 0 {
			mode = 0o755
		}
		f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > maxNameLen || strings.ContainsRune(hdr.Linkname, 0) {
			return errors.New("bad symlink target")
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := checkName(hdr.Linkname)
		if err != nil || x.kinds[target] != tar.TypeReg {
			return fmt.Errorf("hard link to %q, not an earlier file of the archive", hdr.Linkname)
		}
		if err := x.root.Link(target, name); err != nil {
			return err
		}
		hdr.Typeflag = tar.TypeReg
	case tar.TypeChar, tar.TypeBlock:
		return errors.New("device node")
	case tar.TypeFifo:
		return errors.New("FIFO")
	default:
		return fmt.Errorf("entry type %q", hdr.Typeflag)
	}
	if hdr.Typeflag == tar.TypeRegA {
		hdr.Typeflag = tar.TypeReg
	}
	x.kinds[name] = hdr.Typeflag
	return nil
}

// skipped: inside a .git directory, or a name the caller skips.
func (x *receiver) skipped(name string) bool {
	return isGitPath(name) || x.skip != nil && x.skip(name)
}

// checkName cleans a member name, refusing empty, absolute, over-long,
// NUL-holding and ".." names.
func checkName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty name")
	case len(name) > maxNameLen:
		return "", errors.New("name too long")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute name")
	case strings.ContainsRune(name, 0):
		return "", errors.New("NUL in name")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errors.New(`".." in name`)
		}
	}
	return path.Clean(name), nil
}
