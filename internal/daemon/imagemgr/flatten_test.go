package imagemgr

import (
	"archive/tar"
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestFlattenKeepsMetadata(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	fileTime := time.Date(2020, 1, 2, 3, 4, 5, 600700800, time.UTC)
	dirTime := time.Date(2019, 9, 8, 7, 6, 5, 432100000, time.UTC)
	linkTime := time.Date(2018, 1, 1, 0, 0, 0, 5, time.UTC)
	dev := func(name string, typ byte, major, minor int64, mode int64) ent {
		e := ent{hdr: hdr(name, typ, mode)}
		e.hdr.Devmajor, e.hdr.Devminor = major, minor
		return e
	}
	l := layer(t,
		dirEnt("usr/").mtime(dirTime),
		dirEnt("usr/bin/"),
		file("usr/bin/su", "su").mode(0o4755),
		file("usr/bin/wall", "wall").mode(0o2755).owner(0, 5),
		file("home/user/notes", "mine").mode(0o600).owner(1000, 1001).mtime(fileTime).xattr("user.banger", "1"),
		dirEnt("tmp/").mode(0o1777).xattr("user.banger", "dir"),
		symlink("usr/bin/sh", "../../bin/busybox").owner(1000, 1000).mtime(linkTime),
		file("bin/busybox", "bb").mode(0o755),
		hardlink("bin/ls", "bin/busybox"),
		dev("dev/null", tar.TypeChar, 1, 3, 0o666),
		dev("dev/loop0", tar.TypeBlock, 7, 0, 0o660).owner(0, 6),
		ent{hdr: hdr("run/fifo", tar.TypeFifo, 0o600)},
		file("usr/later", "added after usr/ got its mtime"),
	)
	stats := mustFlatten(t, s.root, l)
	if stats.Entries != 13 || stats.Bytes != int64(len("su")+len("wall")+len("mine")+len("bb")+len("added after usr/ got its mtime")) {
		t.Errorf("stats = %+v", stats)
	}

	type want struct {
		path       string
		typ        uint32
		perm       uint32
		uid, gid   uint32
		rdev       uint64
		mtime      time.Time
		linkTarget string
	}
	for _, w := range []want{
		{path: "usr/bin/su", typ: unix.S_IFREG, perm: 0o4755},
		{path: "usr/bin/wall", typ: unix.S_IFREG, perm: 0o2755, gid: 5},
		{path: "home/user/notes", typ: unix.S_IFREG, perm: 0o600, uid: 1000, gid: 1001, mtime: fileTime},
		{path: "home/user", typ: unix.S_IFDIR, perm: 0o755}, // made for the file: 0755 root
		{path: "tmp", typ: unix.S_IFDIR, perm: 0o1777},
		{path: "usr", typ: unix.S_IFDIR, perm: 0o755, mtime: dirTime},
		{path: "usr/bin/sh", typ: unix.S_IFLNK, uid: 1000, gid: 1000, mtime: linkTime, linkTarget: "../../bin/busybox"},
		{path: "dev/null", typ: unix.S_IFCHR, perm: 0o666, rdev: unix.Mkdev(1, 3)},
		{path: "dev/loop0", typ: unix.S_IFBLK, perm: 0o660, gid: 6, rdev: unix.Mkdev(7, 0)},
		{path: "run/fifo", typ: unix.S_IFIFO, perm: 0o600},
	} {
		st := lstat(t, s.path(w.path))
		if st.Mode&unix.S_IFMT != w.typ {
			t.Errorf("%s: type %o, want %o", w.path, st.Mode&unix.S_IFMT, w.typ)
		}
		if w.typ != unix.S_IFLNK && st.Mode&0o7777 != w.perm {
			t.Errorf("%s: mode %#o, want %#o", w.path, st.Mode&0o7777, w.perm)
		}
		if st.Uid != w.uid || st.Gid != w.gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", w.path, st.Uid, st.Gid, w.uid, w.gid)
		}
		if w.rdev != 0 && st.Rdev != w.rdev {
			t.Errorf("%s: device %d:%d, want %d:%d", w.path, unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(w.rdev), unix.Minor(w.rdev))
		}
		if !w.mtime.IsZero() && st.Mtim.Nano() != w.mtime.UnixNano() {
			t.Errorf("%s: mtime %v, want %v", w.path, time.Unix(st.Mtim.Unix()).UTC(), w.mtime)
		}
		if w.linkTarget != "" {
			if got, _ := os.Readlink(s.path(w.path)); got != w.linkTarget {
				t.Errorf("%s: link target %q, want %q", w.path, got, w.linkTarget)
			}
		}
	}
	bb, ls := lstat(t, s.path("bin/busybox")), lstat(t, s.path("bin/ls"))
	if bb.Ino != ls.Ino || bb.Nlink != 2 {
		t.Errorf("bin/ls: inode %d nlink %d, want bin/busybox's inode %d and 2 links", ls.Ino, bb.Nlink, bb.Ino)
	}
	for path, want := range map[string]string{"home/user/notes": "1", "tmp": "dir"} {
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(s.path(path), "user.banger", buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("%s: xattr user.banger = %q, %v; want %q", path, buf[:max(n, 0)], err, want)
		}
	}
	if got := readFile(t, s.path("home/user/notes")); got != "mine" {
		t.Errorf("notes = %q", got)
	}
	s.assertUntouched(t, "")
}

func TestFlattenSkipsRefusedXattr(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	// Linux refuses user.* attributes on symlinks: skipped and counted.
	stats := mustFlatten(t, s.root, layer(t, symlink("l", "target").xattr("user.x", "1")))
	if stats.XattrsSkipped != 1 || len(stats.Warnings) != 1 || !strings.Contains(stats.Warnings[0], `"user.x"`) {
		t.Errorf("stats = %+v, want one skipped xattr named in a warning", stats)
	}
	if got, _ := os.Readlink(s.path("l")); got != "target" {
		t.Errorf("l -> %q", got)
	}
}

func TestFlattenWhiteouts(t *testing.T) {
	requireRoot(t)
	lower := func(t *testing.T) []byte {
		return layer(t,
			file("a/keep", "k"), file("a/gone", "g"), file("a/gonedir/x", "x"),
			file("d/old", "o"), file("d/sub/oldchild", "o"), file("d/sub2/y", "y"),
			file("w", "lower"),
		)
	}
	tests := []struct {
		name  string
		upper []ent
		want  map[string][]string // dir → names
		data  map[string]string
	}{{
		name:  "whiteout removes lower files and directories",
		upper: []ent{whiteout("a/.wh.gone"), whiteout("a/.wh.gonedir"), whiteout("a/.wh.never-there"), whiteout("nodir/.wh.x")},
		want:  map[string][]string{"a": {"keep"}, "": {"a", "d", "w"}},
	}, {
		name: "opaque marker first hides lower children, keeps this layer's",
		upper: []ent{
			dirEnt("d/"), whiteout("d/.wh..wh..opq"),
			file("d/new", "n"), file("d/sub/newchild", "n"),
		},
		want: map[string][]string{"d": {"new", "sub"}, "d/sub": {"newchild"}},
	}, {
		name: "opaque marker last hides lower children, keeps this layer's",
		upper: []ent{
			dirEnt("d/"), file("d/new", "n"), file("d/sub/newchild", "n"),
			whiteout("d/.wh..wh..opq"),
		},
		want: map[string][]string{"d": {"new", "sub"}, "d/sub": {"newchild"}},
	}, {
		name:  "whiteout after this layer's own file keeps it",
		upper: []ent{file("w", "upper"), whiteout(".wh.w")},
		data:  map[string]string{"w": "upper"},
	}, {
		name:  "whiteout before this layer's own file keeps it",
		upper: []ent{whiteout(".wh.w"), file("w", "upper")},
		data:  map[string]string{"w": "upper"},
	}, {
		name:  "aufs metadata is skipped",
		upper: []ent{whiteout(".wh..wh.plnk"), dirEnt(".wh..wh.orph/")},
		want:  map[string][]string{"": {"a", "d", "w"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStage(t)
			stats := mustFlatten(t, s.root, lower(t), layer(t, tt.upper...))
			for d, names := range tt.want {
				if diff := cmp.Diff(names, listDir(t, s.path(d))); diff != "" {
					t.Errorf("/%s (-want +got):\n%s", d, diff)
				}
			}
			for p, data := range tt.data {
				if got := readFile(t, s.path(p)); got != data {
					t.Errorf("%s = %q, want %q", p, got, data)
				}
			}
			if stats.Whiteouts == 0 && !strings.Contains(tt.name, "aufs") {
				t.Errorf("stats.Whiteouts = 0")
			}
			s.assertUntouched(t, "")
		})
	}
}

func TestFlattenReplacesTypes(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	mustFlatten(t, s.root,
		layer(t, file("x/child", "c"), file("y", "file"), dirEnt("etc/"), symlink("s", "/etc"), file("f", "f")),
		layer(t, file("x", "now a file"), dirEnt("y/"), file("y/z", "y is a dir now"), dirEnt("s/"), symlink("f", "x")),
	)
	if got := readFile(t, s.path("x")); got != "now a file" {
		t.Errorf("x = %q", got)
	}
	if st := lstat(t, s.path("y")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("y is %o, want a directory", st.Mode&unix.S_IFMT)
	}
	if st := lstat(t, s.path("s")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("s is %o, want a real directory, not the symlink followed", st.Mode&unix.S_IFMT)
	}
	if got, _ := os.Readlink(s.path("f")); got != "x" {
		t.Errorf("f -> %q, want x", got)
	}
}

func TestFlattenFollowsSymlinksInsideRoot(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	mustFlatten(t, s.root,
		layer(t, dirEnt("etc/"), symlink("evil", "/etc"), symlink("rel", "etc/../etc"), symlink("usr/lib64", "../lib")),
		layer(t, file("evil/banger-passwd", "root:x:0:0"), file("rel/group", "g"), file("usr/lib64/ld.so", "ld"), file("./dot/./name", "d")),
	)
	// An absolute target is read from the image root, as the guest does.
	if got := readFile(t, s.path("etc/banger-passwd")); got != "root:x:0:0" {
		t.Errorf("etc/banger-passwd = %q", got)
	}
	for p, want := range map[string]string{"etc/group": "g", "lib/ld.so": "ld", "dot/name": "d"} {
		if got := readFile(t, s.path(p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if st := lstat(t, s.path("evil")); st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("evil is no longer a symlink")
	}
	s.assertUntouched(t, "banger-passwd")
}

func TestFlattenRootEntryAndDirTimes(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	rootTime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	mustFlatten(t, s.root,
		layer(t, dirEnt("./").mode(0o750).mtime(rootTime), dirEnt("a/").mtime(rootTime)),
		layer(t, file("a/new", "x"), file("top", "y")), // children added by a later layer
	)
	for _, p := range []string{"", "a"} {
		st := lstat(t, s.path(p))
		if st.Mtim.Nano() != rootTime.UnixNano() {
			t.Errorf("/%s mtime = %v, want %v", p, time.Unix(st.Mtim.Unix()).UTC(), rootTime)
		}
	}
	if st := lstat(t, s.root); st.Mode&0o7777 != 0o750 {
		t.Errorf("root mode %#o, want 0750", st.Mode&0o7777)
	}
}

func TestFlattenSparseFile(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	body := "head" + strings.Repeat("\x00", 4<<20) + "tail"
	mustFlatten(t, s.root, layer(t, file("big", body)))
	if got := readFile(t, s.path("big")); got != body {
		t.Fatalf("big: %d bytes, content differs", len(got))
	}
	if st := lstat(t, s.path("big")); st.Blocks*512 >= st.Size {
		t.Errorf("big: %d bytes allocated for %d, want holes", st.Blocks*512, st.Size)
	}
}

func TestFlattenStopsAfterError(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	f, err := NewFlattener(s.root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ApplyLayer(bytes.NewReader(layer(t, file("../x", ""))), "bad"); err == nil {
		t.Fatal("bad layer applied")
	}
	if _, err := f.ApplyLayer(bytes.NewReader(layer(t, file("ok", ""))), "good"); err == nil {
		t.Error("ApplyLayer after an error succeeded")
	}
	if err := f.Finish(); err == nil {
		t.Error("Finish after an error succeeded")
	}
	assertMissing(t, s.path("ok"))
}

func TestNewFlattenerPreconditions(t *testing.T) {
	requireRoot(t)
	t.Run("not empty", func(t *testing.T) {
		s := newStage(t)
		os.WriteFile(s.path("leftover"), nil, 0o644)
		if _, err := NewFlattener(s.root); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("err = %v, want not empty", err)
		}
	})
	t.Run("reachable by others", func(t *testing.T) {
		s := newStage(t)
		// Open every directory above the root to others. t.TempDir's
		// parents are root-owned 0700 (its own) or world-writable
		// sticky (/tmp), so only s.base and its parent matter.
		parent := s.base[:strings.LastIndexByte(s.base, '/')]
		for _, d := range []string{s.base, parent} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var st unix.Stat_t
		unix.Stat(parent[:strings.LastIndexByte(parent, '/')], &st)
		if st.Mode&0o011 == 0 {
			t.Skip("a directory further up is private; cannot build the case")
		}
		if _, err := NewFlattener(s.root); err == nil || !strings.Contains(err.Error(), "other users") {
			t.Errorf("err = %v, want refusal", err)
		}
	})
}

// The daemon may not call Close: Finish and a failed ApplyLayer release
// the root's descriptor themselves.
func TestFlattenReleasesDescriptor(t *testing.T) {
	requireRoot(t)
	for _, tt := range []struct {
		name  string
		layer []ent
	}{{"finished", []ent{file("a/b", "x")}}, {"failed", []ent{file("../x", "x")}}} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStage(t)
			before := countFDs(t)
			f, err := NewFlattener(s.root)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.ApplyLayer(bytes.NewReader(layer(t, tt.layer...)), "l"); err == nil {
				if err := f.Finish(); err != nil {
					t.Fatal(err)
				}
			}
			if after := countFDs(t); after != before {
				t.Errorf("%d descriptors open after, %d before", after, before)
			}
			if err := f.Close(); err != nil {
				t.Errorf("Close after release: %v", err)
			}
		})
	}
}
