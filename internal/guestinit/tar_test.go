package guestinit

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

type tarEntry struct {
	name      string
	typ       byte
	mode      int64
	body      string
	linkname  string
	deletions bool // a deletion list (DeletionsRecord), body the NUL-separated paths
	gitpack   bool // a git pack in transfer form (GitPackRecord)
}

func makeTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: mode, Linkname: e.linkname, ModTime: mtime, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if e.deletions {
			hdr.Format, hdr.PAXRecords = tar.FormatPAX, map[string]string{DeletionsRecord: "1"}
		}
		if e.gitpack {
			hdr.Format, hdr.PAXRecords = tar.FormatPAX, map[string]string{GitPackRecord: "1"}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func file(name, body string, mode int64) tarEntry {
	return tarEntry{name: name, typ: tar.TypeReg, body: body, mode: mode}
}
func dir(name string, mode int64) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: mode} }
func symlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeSymlink, linkname: target, mode: 0o777}
}
func hardlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeLink, linkname: target}
}

func TestExtractTar(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")                       // made by extractTar
	t.Cleanup(func() { os.Chmod(filepath.Join(dest, "ro"), 0o755) }) // for TempDir's cleanup when not root
	stream := makeTar(t,
		dir("./", 0o755),
		dir("ro/", 0o555),
		file("ro/inside", "in a read-only dir", 0o444),
		file("./bin/tool", "#!/bin/sh\n", 0o4755),
		file("deep/er/file", "no dir entries before me", 0o600),
		symlink("link", "bin/tool"),
		symlink("dangling", "/nowhere/at/all"),
		hardlink("bin/tool-hard", "bin/tool"),
		tarEntry{name: "fifo", typ: tar.TypeFifo},
		file("replaced", "first", 0o644),
		file("replaced", "second", 0o640),
	)
	if err := extractTar(bytes.NewReader(stream), dest, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		path string
		mode fs.FileMode
		body string
		link string
	}{
		{path: "ro", mode: fs.ModeDir | 0o555},
		{path: "ro/inside", mode: 0o444, body: "in a read-only dir"},
		{path: "bin/tool", mode: fs.ModeSetuid | 0o755, body: "#!/bin/sh\n"},
		{path: "deep/er/file", mode: 0o600, body: "no dir entries before me"},
		{path: "link", mode: fs.ModeSymlink | 0o777, link: "bin/tool"},
		{path: "dangling", mode: fs.ModeSymlink | 0o777, link: "/nowhere/at/all"},
		{path: "replaced", mode: 0o640, body: "second"},
	}
	for _, c := range checks {
		p := filepath.Join(dest, c.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
		if c.body != "" {
			if got := readFile(t, p); got != c.body {
				t.Errorf("%s: %q, want %q", c.path, got, c.body)
			}
		}
		if c.link != "" {
			if got, _ := os.Readlink(p); got != c.link {
				t.Errorf("%s -> %q, want %q", c.path, got, c.link)
			}
		}
		if fi.Mode()&fs.ModeSymlink == 0 && !fi.ModTime().Equal(time.Unix(1700000000, 0)) {
			t.Errorf("%s: mtime %v", c.path, fi.ModTime())
		}
	}
	a, _ := os.Stat(filepath.Join(dest, "bin/tool"))
	b, _ := os.Stat(filepath.Join(dest, "bin/tool-hard"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("bin/tool-hard is not a hard link of bin/tool")
	}
	if _, err := os.Lstat(filepath.Join(dest, "fifo")); err == nil {
		t.Errorf("a FIFO was created")
	}
}

func TestExtractTarOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	dest := t.TempDir()
	stream := makeTar(t, dir("d", 0o755), file("d/f", "x", 0o4755), symlink("l", "d/f"))
	if err := extractTar(bytes.NewReader(stream), dest, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"d", "d/f", "l"} {
		fi, err := os.Lstat(filepath.Join(dest, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("%s owned by %d:%d, want 1234:5678", p, st.Uid, st.Gid)
		}
	}
	// Owner first, then mode: chown must not have cleared setuid.
	if fi, _ := os.Stat(filepath.Join(dest, "d/f")); fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("d/f lost its setuid bit: %v", fi.Mode())
	}
}

// TestExtractTarHostile: nothing a stream does lands outside dest.
func TestExtractTarHostile(t *testing.T) {
	runHostile(t, nil, []hostileCase{
		{name: "dotdot", entries: func(string) []tarEntry { return []tarEntry{file("../escaped", "x", 0)} }, wantErr: `".." refused`},
		{name: "inner dotdot", entries: func(string) []tarEntry { return []tarEntry{file("a/../../escaped", "x", 0)} }, wantErr: `".." refused`},
		{name: "absolute", entries: func(base string) []tarEntry { return []tarEntry{file(base+"/escaped", "x", 0)} }, wantErr: "absolute name refused"},
		{name: "write through absolute symlink", entries: func(base string) []tarEntry {
			return []tarEntry{symlink("l", base+"/outside"), file("l/escaped", "x", 0)}
		}, wantErr: "escapes"},
		{name: "write through relative symlink", entries: func(string) []tarEntry {
			return []tarEntry{symlink("l", "../outside"), file("l/escaped", "x", 0)}
		}, wantErr: "escapes"},
		{name: "symlink chain", entries: func(string) []tarEntry {
			return []tarEntry{symlink("a", "b"), symlink("b", "../outside"), file("a/escaped", "x", 0)}
		}, wantErr: "escapes"},
		{name: "mkdir through symlink", entries: func(base string) []tarEntry {
			return []tarEntry{symlink("l", base+"/outside"), dir("l/escaped", 0o755)}
		}, wantErr: "escapes"},
		{name: "hard link out", entries: func(string) []tarEntry {
			return []tarEntry{hardlink("h", "../outside/secret")}
		}, wantErr: "refused"},
		{name: "hard link through symlink", entries: func(base string) []tarEntry {
			return []tarEntry{symlink("l", base+"/outside"), hardlink("h", "l/secret")}
		}, wantErr: "escapes"},
		{name: "file replaces symlink, not its target", entries: func(base string) []tarEntry {
			return []tarEntry{symlink("s", base+"/outside/secret"), file("s", "mine", 0o600)}
		}},
		{name: "dir replaces symlink, not its target", entries: func(base string) []tarEntry {
			return []tarEntry{symlink("s", base+"/outside"), dir("s", 0o700)}
		}},
		{name: "hard link replaces symlink", entries: func(base string) []tarEntry {
			return []tarEntry{file("f", "mine", 0o600), symlink("s", base+"/outside/secret"), hardlink("s", "f")}
		}},
	})
}

// hostileCase is a hostile archive: its entries (which may name paths
// outside, below base) and the error it must end with ("" for a stream
// that must succeed harmlessly).
type hostileCase struct {
	name    string
	entries func(base string) []tarEntry
	wantErr string
}

// runHostile extracts each case's entries, after before, into base/dest
// and checks the error and that nothing outside dest changed.
func runHostile(t *testing.T, before []tarEntry, cases []hostileCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			base := setUpOutside(t)
			dest := filepath.Join(base, "dest")
			err := extractTar(bytes.NewReader(makeTar(t, append(slices.Clone(before), tt.entries(base)...)...)), dest, os.Geteuid(), os.Getegid())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want one holding %q", err, tt.wantErr)
			}
			checkOutside(t, base)
		})
	}
}

func TestTarBuiltinsOverSSH(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t)
	base := t.TempDir()

	// A tree to send: every kind the built-ins keep.
	src := filepath.Join(base, "src")
	for _, d := range []string{"src/dir/sub", "src/empty"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTestFile(t, filepath.Join(src, "dir/sub/file"), "contents\n")
	writeTestFile(t, filepath.Join(src, "exe"), "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(src, "exe"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../etc/passwd", filepath.Join(src, "dir/escaping-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "exe"), filepath.Join(src, "dir/exe-hard")); err != nil {
		t.Fatal(err)
	}

	// tar in the "guest", untar here.
	got := run(t, c, EncodeArgv([]string{InitPath, "tar", src, "."}), "")
	if got.code != 0 {
		t.Fatalf("tar: %+v", got)
	}
	dst := filepath.Join(base, "roundtrip")
	if err := extractTar(strings.NewReader(got.stdout), dst, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, dst)

	// tar --no-git leaves out every .git, directory or file, at any depth.
	for _, p := range []string{".git/objects", "dir/sub/.git/HEAD"} {
		if err := os.MkdirAll(filepath.Join(src, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTestFile(t, filepath.Join(src, "dir/.git"), "gitdir: ../.git/modules/dir\n")
	got = run(t, c, EncodeArgv([]string{InitPath, "tar", "--no-git", src, "."}), "")
	if got.code != 0 {
		t.Fatalf("tar --no-git: %+v", got)
	}
	tr := tar.NewReader(strings.NewReader(got.stdout))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if slices.ContainsFunc(names, func(n string) bool { return strings.Contains("/"+n, "/.git") }) || !slices.Contains(names, "dir/sub/file") {
		t.Errorf("tar --no-git wrote %q", names)
	}
	for _, p := range []string{".git", "dir/sub/.git", "dir/.git"} {
		os.RemoveAll(filepath.Join(src, p))
	}

	// untar in the "guest", relative DEST resolved against the workdir.
	var stream bytes.Buffer
	if err := writeTar(&stream, src, []string{"dir", "exe"}, false); err != nil {
		t.Fatal(err)
	}
	got = run(t, c, EncodeArgv([]string{InitPath, "untar", "in/guest"}), stream.String(), "BANGER_WORKDIR="+base)
	if got != (result{}) {
		t.Fatalf("untar: %+v", got)
	}
	if readFile(t, filepath.Join(base, "in/guest/dir/sub/file")) != "contents\n" {
		t.Error("untar over SSH did not extract dir/sub/file")
	}

	// untar --zstd reads a compressed stream; a corrupt one fails naming
	// the decoder's complaint, and a truncated one does too.
	zenc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	z := zenc.EncodeAll(stream.Bytes(), nil)
	got = run(t, c, EncodeArgv([]string{InitPath, "untar", "--zstd", "in/zstd"}), string(z), "BANGER_WORKDIR="+base)
	if got != (result{}) || readFile(t, filepath.Join(base, "in/zstd/dir/sub/file")) != "contents\n" {
		t.Fatalf("untar --zstd: %+v", got)
	}
	var wide bytes.Buffer // a frame asking for a 32 MiB window
	ww, err := zstd.NewWriter(&wide, zstd.WithWindowSize(32<<20), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	ww.Write(makeTar(t, file("zeros", strings.Repeat("\x00", 20<<20), 0o644))) // more than 16 MiB, so the window is kept
	ww.Close()
	for name, bad := range map[string][]byte{"corrupt": append([]byte("not zstd at all"), z...), "truncated": z[:len(z)/2], "too wide": wide.Bytes()} {
		got = run(t, c, EncodeArgv([]string{InitPath, "untar", "--zstd", "in/" + name}), string(bad), "BANGER_WORKDIR="+base)
		if got.code != 1 || !strings.Contains(got.stderr, "banger-init: untar:") {
			t.Errorf("untar --zstd of a %s stream: %+v", name, got)
		}
	}

	// A hostile stream is refused with exit status 1.
	got = run(t, c, EncodeArgv([]string{InitPath, "untar", filepath.Join(base, "hostile")}),
		string(makeTar(t, symlink("l", base), file("l/pwned", "x", 0))))
	if got.code != 1 || !strings.Contains(got.stderr, "banger-init: untar: \"l/pwned\":") {
		t.Errorf("hostile untar: %+v", got)
	}
	if _, err := os.Lstat(filepath.Join(base, "pwned")); err == nil {
		t.Error("hostile untar wrote outside DEST")
	}

	// tar refuses paths that leave SRC, by name or through a symlink.
	for _, p := range []string{"../x", "/etc", "dir/escaping-link/x"} {
		if got := run(t, c, EncodeArgv([]string{InitPath, "tar", src, p}), ""); got.code != 1 {
			t.Errorf("tar %s: %+v", p, got)
		}
	}
	if got := run(t, c, EncodeArgv([]string{InitPath, "untar"}), ""); got.code != 2 {
		t.Errorf("untar without DEST: %+v", got)
	}
}

// compareTrees checks that b mirrors a: kinds, modes, contents, link
// targets, hard links, mtimes (to the second).
func compareTrees(t *testing.T, a, b string) {
	t.Helper()
	inodes := map[uint64]string{}
	err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		if rel == "." {
			return nil
		}
		fa, _ := os.Lstat(p)
		fb, err := os.Lstat(filepath.Join(b, rel))
		if err != nil {
			t.Errorf("%s missing: %v", rel, err)
			return nil
		}
		if fa.Mode() != fb.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, fb.Mode(), fa.Mode())
		}
		if fa.Mode()&fs.ModeSymlink == 0 && fa.ModTime().Unix() != fb.ModTime().Unix() {
			t.Errorf("%s: mtime %v, want %v", rel, fb.ModTime(), fa.ModTime())
		}
		switch {
		case fa.Mode()&fs.ModeSymlink != 0:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(filepath.Join(b, rel))
			if la != lb {
				t.Errorf("%s -> %q, want %q", rel, lb, la)
			}
		case fa.Mode().IsRegular():
			if readFile(t, p) != readFile(t, filepath.Join(b, rel)) {
				t.Errorf("%s: contents differ", rel)
			}
			sa := fa.Sys().(*syscall.Stat_t)
			if sa.Nlink > 1 {
				if first, ok := inodes[sa.Ino]; ok {
					if fi, _ := os.Lstat(filepath.Join(b, first)); fi == nil || !os.SameFile(fi, fb) {
						t.Errorf("%s is not a hard link of %s", rel, first)
					}
				} else {
					inodes[sa.Ino] = rel
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
