package imagemgr

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireRoot skips tests that make device nodes, chown files and read
// other users' files: the daemon does these as root, and so must they.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: flattening chowns files and makes device nodes, as the daemon does")
	}
}

// stage is a staging layout: base (0700, from t.TempDir) holds the image
// root and a canary directory beside it that nothing may touch.
type stage struct {
	base, root, canary string
	before             map[string]string // snapshot of base outside root
}

func newStage(t *testing.T) *stage {
	t.Helper()
	base := t.TempDir()
	s := &stage{base: base, root: filepath.Join(base, "root"), canary: filepath.Join(base, "canary")}
	for _, d := range []string{s.root, s.canary} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.canary, "keep"), []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.before = snapshotOutside(t, s)
	return s
}

func (s *stage) path(rel string) string { return filepath.Join(s.root, rel) }

// snapshotOutside describes every entry under base except the image root.
func snapshotOutside(t *testing.T, s *stage) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(s.base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == s.root {
			return fs.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d nlink=%d size=%d mtime=%d", st.Mode, st.Uid, st.Nlink, st.Size, st.Mtim.Nano())
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " data=" + string(b)
		}
		out[strings.TrimPrefix(p, s.base)] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertUntouched fails if anything beside the root changed, or if a
// file called name exists in any directory above or beside the root.
func (s *stage) assertUntouched(t *testing.T, name string) {
	t.Helper()
	after := snapshotOutside(t, s)
	for k, v := range s.before {
		if after[k] != v {
			t.Errorf("outside the root, %s changed: %q -> %q", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := s.before[k]; !ok {
			t.Errorf("outside the root, %s appeared", k)
		}
	}
	if name == "" {
		return
	}
	for _, d := range []string{s.base, s.canary, filepath.Dir(s.base), filepath.Dir(filepath.Dir(s.base)), "/", "/etc", "/tmp"} {
		if _, err := os.Lstat(filepath.Join(d, name)); err == nil {
			t.Errorf("%s was written outside the root", filepath.Join(d, name))
		}
	}
}

// ent is one tar entry for a crafted layer.
type ent struct {
	hdr  tar.Header
	body string
}

var epoch = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func hdr(name string, typ byte, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: epoch, Format: tar.FormatPAX}
}

func file(name, body string) ent { return ent{hdr: hdr(name, tar.TypeReg, 0o644), body: body} }
func dirEnt(name string) ent     { return ent{hdr: hdr(name, tar.TypeDir, 0o755)} }
func whiteout(name string) ent   { return file(name, "") }

func symlink(name, target string) ent {
	e := ent{hdr: hdr(name, tar.TypeSymlink, 0o777)}
	e.hdr.Linkname = target
	return e
}

func hardlink(name, target string) ent {
	e := ent{hdr: hdr(name, tar.TypeLink, 0)}
	e.hdr.Linkname = target
	return e
}

func (e ent) mode(m int64) ent       { e.hdr.Mode = m; return e }
func (e ent) owner(uid, gid int) ent { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }
func (e ent) mtime(t time.Time) ent  { e.hdr.ModTime = t; return e }
func (e ent) xattr(k, v string) ent {
	recs := map[string]string{}
	for kk, vv := range e.hdr.PAXRecords {
		recs[kk] = vv
	}
	recs[xattrPrefix+k] = v
	e.hdr.PAXRecords = recs
	return e
}

// layer encodes entries as an uncompressed tar.
func layer(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// flatten applies layers in order into root, then finishes. It returns
// the first error.
func flatten(t *testing.T, root string, layers ...[]byte) (LayerStats, error) {
	t.Helper()
	f, err := NewFlattener(root)
	if err != nil {
		t.Fatalf("NewFlattener: %v", err)
	}
	defer f.Close()
	for i, l := range layers {
		if _, err := f.ApplyLayer(bytes.NewReader(l), fmt.Sprintf("sha256:layer%d", i+1)); err != nil {
			return f.Stats(), err
		}
	}
	return f.Stats(), f.Finish()
}

func mustFlatten(t *testing.T, root string, layers ...[]byte) LayerStats {
	t.Helper()
	stats, err := flatten(t, root, layers...)
	if err != nil {
		t.Fatalf("flatten: %v", err)
	}
	return stats
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat: %v", err)
	}
	return st
}

func assertMissing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Errorf("%s exists (err %v), want it absent", p, err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// listDir returns the sorted names in a directory.
func listDir(t *testing.T, p string) []string {
	t.Helper()
	es, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}
