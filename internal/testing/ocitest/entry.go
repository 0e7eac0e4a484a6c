package ocitest

import (
	"archive/tar"
	"fmt"
	"path"
	"strings"
	"time"
)

// Entry is one tar entry of a layer. Fields are written as given, except:
// a zero Type means tar.TypeReg and a zero ModTime means 2024-01-01 UTC, so
// layers are reproducible.
type Entry struct {
	Name string
	Type byte // tar.TypeReg, tar.TypeDir, tar.TypeSymlink, ...
	// Mode holds the permission bits plus setuid (0o4000), setgid (0o2000)
	// and sticky (0o1000), as tar.Header.Mode does.
	Mode     int64
	UID, GID int
	// Body is a regular file's content. For a large file set BodySize
	// instead: the content is then GeneratedBody(Name, BodySize), streamed
	// into the layer and never held in memory.
	Body               []byte
	BodySize           int64
	Linkname           string // target of a symlink or hard link
	Devmajor, Devminor int64
	ModTime            time.Time
	Xattrs             map[string]string // written as PAX SCHILY.xattr.<key> records
}

var defaultModTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// File is a regular file with the given content.
func File(name string, mode int64, body string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: mode, Body: []byte(body)}
}

// SizedFile is a regular file of size bytes of GeneratedBody(name, size).
func SizedFile(name string, mode int64, size int64) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: mode, BodySize: size}
}

// SetuidFile is a root-owned executable with the setuid bit (mode 04755).
func SetuidFile(name, body string) Entry { return File(name, 0o4755, body) }

// Dir is a directory; its name gets the trailing slash tar tools write.
func Dir(name string, mode int64) Entry {
	return Entry{Name: strings.TrimSuffix(name, "/") + "/", Type: tar.TypeDir, Mode: mode}
}

// Symlink is a symbolic link name → target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// Hardlink is a hard link to target, an earlier entry's name in the same
// layer (or a lower one).
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Linkname: target}
}

// CharDev is a character device node.
func CharDev(name string, major, minor int64) Entry {
	return Entry{Name: name, Type: tar.TypeChar, Mode: 0o666, Devmajor: major, Devminor: minor}
}

// Fifo is a named pipe.
func Fifo(name string) Entry { return Entry{Name: name, Type: tar.TypeFifo, Mode: 0o644} }

// Whiteout deletes p (a file or directory from a lower layer): it is the
// empty file DIR/.wh.BASE.
func Whiteout(p string) Entry {
	dir, base := path.Split(strings.TrimSuffix(p, "/"))
	return Entry{Name: dir + whiteoutPrefix + base, Type: tar.TypeReg, Mode: 0o644}
}

// Opaque hides everything lower layers put in dir: it is the empty file
// DIR/.wh..wh..opq.
func Opaque(dir string) Entry {
	return Entry{Name: path.Join(dir, opaqueWhiteout), Type: tar.TypeReg, Mode: 0o644}
}

// header is e's tar header.
func (e Entry) header() (*tar.Header, error) {
	h := &tar.Header{
		Typeflag: e.Type,
		Name:     e.Name,
		Linkname: e.Linkname,
		Mode:     e.Mode,
		Uid:      e.UID,
		Gid:      e.GID,
		ModTime:  e.ModTime,
		Devmajor: e.Devmajor,
		Devminor: e.Devminor,
	}
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if h.ModTime.IsZero() {
		h.ModTime = defaultModTime
	}
	switch {
	case e.Body != nil && e.BodySize != 0:
		return nil, fmt.Errorf("entry %q: set Body or BodySize, not both", e.Name)
	case (e.Body != nil || e.BodySize != 0) && h.Typeflag != tar.TypeReg:
		return nil, fmt.Errorf("entry %q: only a regular file has a body", e.Name)
	case e.BodySize != 0:
		h.Size = e.BodySize
	default:
		h.Size = int64(len(e.Body))
	}
	for k, v := range e.Xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
	return h, nil
}
