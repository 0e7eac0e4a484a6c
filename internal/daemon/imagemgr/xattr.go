package imagemgr

import (
	"bytes"
	"errors"

	"golang.org/x/sys/unix"
)

// xattrSource reads one file's extended attributes: list fills a buffer
// with NUL-separated names, get one value; both follow the
// getxattr(2) convention of a nil buffer asking for the size.
type xattrSource struct {
	list func(buf []byte) (int, error)
	get  func(name string, buf []byte) (int, error)
}

// fdXattrs reads the attributes of the file open as fd.
func fdXattrs(fd int) xattrSource {
	return xattrSource{
		list: func(b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		get:  func(n string, b []byte) (int, error) { return unix.Fgetxattr(fd, n, b) },
	}
}

// pathXattrs reads the attributes of path itself, not following it if it
// is a symlink.
func pathXattrs(path string) xattrSource {
	return xattrSource{
		list: func(b []byte) (int, error) { return unix.Llistxattr(path, b) },
		get:  func(n string, b []byte) (int, error) { return unix.Lgetxattr(path, n, b) },
	}
}

// readXattrs returns the attributes as name → value. A filesystem without
// xattr support has none.
func readXattrs(src xattrSource) (map[string]string, error) {
	names, err := sized(src.list)
	if errors.Is(err, unix.ENOTSUP) || len(names) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for _, n := range bytes.Split(bytes.TrimRight(names, "\x00"), []byte{0}) {
		name := string(n)
		val, err := sized(func(b []byte) (int, error) { return src.get(name, b) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, err
		}
		out[name] = string(val)
	}
	return out, nil
}

// sized calls f once for the size and again for the data, retrying when
// the data grew in between.
func sized(f func([]byte) (int, error)) ([]byte, error) {
	for range 5 {
		n, err := f(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = f(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		return buf[:n], err
	}
	return nil, unix.ERANGE
}
