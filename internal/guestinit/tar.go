package guestinit

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"syscall"
	"time"
)

// writeTar writes to w a tar of each path, named relative to src, with
// directories recursed. Symlinks are stored as symlinks and never
// followed (neither inside the tree nor in the paths themselves, which
// must stay inside src); a file seen again through another hard link is
// stored as a hard link. Owners are numeric. FIFOs, sockets and devices
// are skipped. The path "." stores src's contents without src itself.
func writeTar(w io.Writer, src string, paths []string, noGit bool) error {
	root, err := os.OpenRoot(src)
	if err != nil {
		return err
	}
	defer root.Close()
	t := &tarWriter{root: root, tw: tar.NewWriter(w), links: make(map[fileID]string), noGit: noGit}
	for _, p := range paths {
		name, err := entryName(p)
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		if err := t.add(name); err != nil {
			return err
		}
	}
	return t.tw.Close()
}

type fileID struct{ dev, ino uint64 }

type tarWriter struct {
	root  *os.Root
	tw    *tar.Writer
	links map[fileID]string // first name of each multiply-linked file
	noGit bool              // leave out anything named .git, and what is below it
}

func (t *tarWriter) add(name string) error {
	if t.noGit && path.Base(name) == ".git" {
		return nil
	}
	fi, err := t.root.Lstat(name)
	if err != nil {
		return err
	}
	if name == "." {
		return t.addChildren(name, "")
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(fi.Mode().Perm()),
		ModTime: fi.ModTime().Truncate(time.Second), // not rounded up by the writer
	}
	if fi.Mode()&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	if fi.Mode()&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st != nil {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	}
	switch {
	case fi.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		if err := t.tw.WriteHeader(hdr); err != nil {
			return err
		}
		return t.addChildren(name, name+"/")
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := t.root.Readlink(name)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		return t.tw.WriteHeader(hdr)
	case fi.Mode().IsRegular():
		if st != nil && st.Nlink > 1 {
			id := fileID{uint64(st.Dev), st.Ino}
			if first, seen := t.links[id]; seen {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				return t.tw.WriteHeader(hdr)
			}
			t.links[id] = name
		}
		return t.addFile(name, hdr, fi.Size())
	}
	return nil
}

func (t *tarWriter) addFile(name string, hdr *tar.Header, size int64) error {
	f, err := t.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr.Typeflag, hdr.Size = tar.TypeReg, size
	if err := t.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.CopyN(t.tw, f, size); err != nil {
		return fmt.Errorf("%s: %w (did it change while being read?)", name, err)
	}
	return nil
}

func (t *tarWriter) addChildren(dir, prefix string) error {
	f, err := t.root.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		if err := t.add(path.Join(prefix, n)); err != nil {
			return err
		}
	}
	return nil
}
