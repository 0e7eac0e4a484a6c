package imagemgr

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// makeSourceTree builds, under dir, a tree with every kind of entry
// TarFromDir must carry.
func makeSourceTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	w := func(p, data string, mode os.FileMode, uid, gid int) {
		t.Helper()
		p = filepath.Join(dir, p)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(data), 0o600))
		must(os.Lchown(p, uid, gid))
		must(os.Chmod(p, mode))
	}
	w("usr/bin/su", "su binary", 0o755|os.ModeSetuid, 0, 0)
	w("home/u/file", "hello", 0o640, 1000, 1001)
	w("big/sparse", "x"+strings.Repeat("\x00", 1<<20)+"y", 0o644, 0, 0)
	must(os.Link(filepath.Join(dir, "usr/bin/su"), filepath.Join(dir, "usr/bin/su-again")))
	must(os.Link(filepath.Join(dir, "usr/bin/su"), filepath.Join(dir, "home/u/su-link")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "outside")))
	must(os.Symlink("../../../../..", filepath.Join(dir, "home/up")))
	must(os.Symlink("file", filepath.Join(dir, "home/u/rel")))
	must(os.Lchown(filepath.Join(dir, "home/u/rel"), 1000, 1001))
	must(os.MkdirAll(filepath.Join(dir, "dev"), 0o755))
	must(unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(dir, "dev/sda"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 0))))
	must(unix.Mkfifo(filepath.Join(dir, "dev/fifo"), 0o600))
	must(unix.Chmod(filepath.Join(dir, "dev/null"), 0o666))
	must(os.Mkdir(filepath.Join(dir, "tmp"), 0o755))
	must(unix.Chmod(filepath.Join(dir, "tmp"), 0o1777))
	must(unix.Lsetxattr(filepath.Join(dir, "home/u/file"), "user.banger", []byte("1"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "home/u"), "user.dir", []byte("yes"), 0))
	must(os.Mkdir(filepath.Join(dir, "empty"), 0o700))
	// Times last, deepest first, so that making children does not move them.
	var paths []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	})
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for i, p := range paths {
		ts := time.Date(2021, 1, 1, 0, 0, i, 100*i+7, time.UTC)
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{unix.NsecToTimespec(ts.UnixNano()), unix.NsecToTimespec(ts.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// describeTree renders a tree as path → description: type, mode, owner,
// size, device, link target, content, xattrs and mtime. Paths sharing an
// inode are listed by linkGroups.
func describeTree(t *testing.T, root string) (desc map[string]string, linkGroups [][]string) {
	t.Helper()
	desc = map[string]string{}
	byIno := map[uint64][]string{}
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		d := fmt.Sprintf("type=%o mode=%o owner=%d:%d mtime=%d", st.Mode&unix.S_IFMT, st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Nano())
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			d += fmt.Sprintf(" size=%d data=%q", st.Size, b[:min(len(b), 16)])
			if st.Nlink > 1 {
				byIno[st.Ino] = append(byIno[st.Ino], rel)
			}
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			d = fmt.Sprintf("type=%o owner=%d:%d mtime=%d target=%q", st.Mode&unix.S_IFMT, st.Uid, st.Gid, st.Mtim.Nano(), target)
		case unix.S_IFCHR, unix.S_IFBLK:
			d += fmt.Sprintf(" dev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		xs, err := readXattrs(pathXattrs(p))
		if err != nil {
			return err
		}
		if len(xs) > 0 {
			d += fmt.Sprintf(" xattrs=%v", xs)
		}
		desc[rel] = d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range byIno {
		sort.Strings(g)
		linkGroups = append(linkGroups, g)
	}
	sort.Slice(linkGroups, func(i, j int) bool { return linkGroups[i][0] < linkGroups[j][0] })
	return desc, linkGroups
}

func TestTarFromDirRoundTrip(t *testing.T) {
	requireRoot(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o751); err != nil {
		t.Fatal(err)
	}
	makeSourceTree(t, src)
	// A socket is left out, with a note.
	ln, err := net.Listen("unix", filepath.Join(src, "home/sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	s := newStage(t)
	f, err := NewFlattener(s.root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := TarFromDir(src)
	defer tr.Close()
	if _, err := f.ApplyLayer(tr, "import"); err != nil {
		t.Fatal(err)
	}
	if err := f.Finish(); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if notes := tr.Notes(); len(notes) != 1 || !strings.Contains(notes[0], "home/sock: socket left out") {
		t.Errorf("notes = %q, want the socket", notes)
	}

	want, wantLinks := describeTree(t, src)
	delete(want, "home/sock")
	got, gotLinks := describeTree(t, s.root)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree (-src +copy):\n%s", diff)
	}
	if diff := cmp.Diff([][]string{{"home/u/su-link", "usr/bin/su", "usr/bin/su-again"}}, wantLinks); diff != "" {
		t.Fatalf("source hardlinks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantLinks, gotLinks); diff != "" {
		t.Errorf("hardlink groups (-src +copy):\n%s", diff)
	}
	if st := lstat(t, s.path("big/sparse")); st.Blocks*512 >= st.Size {
		t.Errorf("big/sparse copied without holes")
	}
	s.assertUntouched(t, "")
}

func TestTarFromDirCloseEarly(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	for i := range 50 {
		os.WriteFile(filepath.Join(src, fmt.Sprint(i)), make([]byte, 64<<10), 0o644)
	}
	tr := TarFromDir(src)
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(tr, buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { tr.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not stop the producer")
	}
}

func TestTarFromDirMissing(t *testing.T) {
	tr := TarFromDir(filepath.Join(t.TempDir(), "nope"))
	defer tr.Close()
	if _, err := io.ReadAll(tr); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("err = %v, want it to name the directory", err)
	}
}
