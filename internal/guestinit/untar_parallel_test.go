package guestinit

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExtractTarManyFiles: files of many directories, created by the
// writers in parallel, each with its contents, mode, time and owner.
func TestExtractTarManyFiles(t *testing.T) {
	uid, gid := os.Geteuid(), os.Getegid()
	if uid == 0 {
		uid, gid = 1234, 5678 // a writer's fchown, tested when it can be
	}
	modes := []int64{0o644, 0o600, 0o755, 0o664, 0o4755, 0o400, 0o2750}
	type want struct {
		body  string
		mode  fs.FileMode
		mtime time.Time
	}
	wants := map[string]want{}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for d := range 40 {
		if d%2 == 0 { // half the directories implicit
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%02d/", d), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(1700000000, 0)})
		}
		for f := range 50 {
			name := fmt.Sprintf("d%02d/sub/f%02d", d, f)
			if f%3 == 0 {
				name = fmt.Sprintf("d%02d/f%02d", d, f)
			}
			body := strings.Repeat(name+"\n", (d*50+f)%700)
			hdr := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: modes[f%len(modes)], Size: int64(len(body)),
				ModTime: time.Unix(1600000000+int64(d*50+f), 0)}
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(body))
			wants[name] = want{body: body, mode: tarMode(hdr), mtime: hdr.ModTime}
		}
	}
	tw.Close()
	dest := t.TempDir()
	if err := extractTar(&buf, dest, uid, gid); err != nil {
		t.Fatal(err)
	}
	for name, w := range wants {
		p := filepath.Join(dest, name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode() != w.mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), w.mode)
		}
		if !fi.ModTime().Equal(w.mtime) {
			t.Errorf("%s: mtime %v, want %v", name, fi.ModTime(), w.mtime)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
		}
		if got := readFile(t, p); got != w.body {
			t.Errorf("%s: %d bytes, want %d", name, len(got), len(w.body))
		}
	}
}

// TestExtractTarRepeatedNames: a name again in the stream ends as its
// last entry says, whether or not the first was still being written.
func TestExtractTarRepeatedNames(t *testing.T) {
	// filler keeps the writers busy, so that the first of the two is
	// likely still pending when the second comes.
	filler := func() []tarEntry {
		var es []tarEntry
		for i := range 200 {
			es = append(es, file(fmt.Sprintf("filler/%03d", i), strings.Repeat("f", 3000), 0o644))
		}
		return es
	}
	tests := []struct {
		name    string
		entries []tarEntry
		check   func(t *testing.T, dest string)
		wantErr string
	}{
		{name: "file then file", entries: []tarEntry{file("a", "first", 0o600), file("a", "second", 0o755)},
			check: func(t *testing.T, dest string) { wantFile(t, dest, "a", "second", 0o755) }},
		{name: "file then symlink", entries: []tarEntry{file("a", "first", 0o600), symlink("a", "filler/000")},
			check: func(t *testing.T, dest string) { wantLink(t, dest, "a", "filler/000") }},
		{name: "file then directory", entries: []tarEntry{file("a", "first", 0o600), dir("a", 0o750), file("a/b", "below", 0o644)},
			check: func(t *testing.T, dest string) {
				if fi, err := os.Lstat(filepath.Join(dest, "a")); err != nil || fi.Mode() != fs.ModeDir|0o750 {
					t.Errorf("a: %v %v, want a directory", fi, err)
				}
				wantFile(t, dest, "a/b", "below", 0o644)
			}},
		{name: "file then hard link to it", entries: []tarEntry{file("a", "linked", 0o640), hardlink("h", "a")},
			check: func(t *testing.T, dest string) { wantFile(t, dest, "h", "linked", 0o640) }},
		{name: "symlink then file", entries: []tarEntry{symlink("a", "filler/000"), file("a", "mine", 0o600)},
			check: func(t *testing.T, dest string) {
				wantFile(t, dest, "a", "mine", 0o600)
				wantFile(t, dest, "filler/000", strings.Repeat("f", 3000), 0o644)
			}},
		{name: "file then a file below it", entries: []tarEntry{file("a", "first", 0o600), file("a/b", "below", 0o644)},
			wantErr: `"a/b": `},
		// s is opened as a directory through the symlink, then replaced
		// by a file: what was opened through it is forgotten.
		{name: "symlink used as a directory then replaced by a file", entries: []tarEntry{
			dir("d", 0o755), symlink("s", "d"), file("s/x", "through", 0o644), file("s", "mine", 0o600), file("s/y", "below", 0o644)},
			wantErr: `"s/y": `,
			check: func(t *testing.T, dest string) {
				wantFile(t, dest, "d/x", "through", 0o644)
				wantFile(t, dest, "s", "mine", 0o600)
				if _, err := os.Lstat(filepath.Join(dest, "d/y")); err == nil {
					t.Error("s/y was written through the replaced symlink")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := t.TempDir()
			err := extractTar(bytes.NewReader(makeTar(t, append(filler(), tt.entries...)...)), dest, os.Geteuid(), os.Getegid())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one holding %q", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, dest)
			}
		})
	}
}

// TestExtractTarWriterError: a writer's failure stops the extraction,
// named by its entry, though the reader has gone on meanwhile.
func TestExtractTarWriterError(t *testing.T) {
	dest := t.TempDir()
	// A directory the extraction has not seen is where a file goes: the
	// writer finds it when creating the file.
	if err := os.MkdirAll(filepath.Join(dest, "busy/x/y"), 0o755); err != nil {
		t.Fatal(err)
	}
	var entries []tarEntry
	for i := range 20 {
		entries = append(entries, file(fmt.Sprintf("a/%02d", i), "a", 0o644))
	}
	entries = append(entries, file("busy/x", "mine", 0o644))
	const after = 1000
	for i := range after {
		entries = append(entries, file(fmt.Sprintf("z/%04d", i), "z", 0o644))
	}
	err := extractTar(bytes.NewReader(makeTar(t, entries...)), dest, os.Geteuid(), os.Getegid())
	if err == nil || !strings.Contains(err.Error(), `"busy/x": a directory is in the way`) {
		t.Fatalf("err = %v, want one naming busy/x", err)
	}
	// The reader gets at most jobQueue files (and a few) ahead of the
	// writers before it sees the failure.
	z, _ := os.ReadDir(filepath.Join(dest, "z"))
	if len(z) > jobQueue+fileWriters+2 {
		t.Errorf("%d files after the failed one extracted, want at most %d", len(z), jobQueue+fileWriters+2)
	}
	wantFile(t, dest, "a/19", "a", 0o644)
}

// TestExtractTarParallelHostile: with writers pending, nothing lands
// outside dest, and a directory opened through a symlink is not used
// after the symlink is replaced.
func TestExtractTarParallelHostile(t *testing.T) {
	var busy []tarEntry // pending files when the hostile entries come
	for i := range 100 {
		busy = append(busy, file(fmt.Sprintf("busy/%03d", i), strings.Repeat("b", 2000), 0o644))
	}
	runHostile(t, busy, []hostileCase{
		{name: "files through an absolute symlink", entries: func(base string) []tarEntry {
			es := []tarEntry{symlink("l", base+"/outside")}
			for i := range 20 {
				es = append(es, file(fmt.Sprintf("l/%02d", i), "x", 0o644))
			}
			return es
		}, wantErr: "escapes"},
		{name: "file through a symlink replacing a pending file", entries: func(base string) []tarEntry {
			return []tarEntry{file("p", "pending", 0o644), symlink("p", base+"/outside"), file("p/escaped", "x", 0o644)}
		}, wantErr: "escapes"},
		{name: "files replace symlinks to a secret", entries: func(base string) []tarEntry {
			var es []tarEntry
			for i := range 20 {
				es = append(es, symlink(fmt.Sprintf("s%02d", i), base+"/outside/secret"))
			}
			for i := range 20 {
				es = append(es, file(fmt.Sprintf("s%02d", i), "mine", 0o600))
			}
			return es
		}},
		{name: "directory opened through a symlink since repointed out", entries: func(base string) []tarEntry {
			return []tarEntry{dir("real", 0o755), symlink("c", "real"), file("c/a", "in real", 0o644),
				symlink("c", base+"/outside"), file("c/b", "x", 0o644)}
		}, wantErr: "escapes"},
		{name: "directory deleted and replaced by a symlink out", entries: func(base string) []tarEntry {
			return []tarEntry{dir("c", 0o755), file("c/a", "x", 0o644), deletions("c"),
				symlink("c", base+"/outside"), file("c/b", "x", 0o644)}
		}, wantErr: "escapes"},
	})
}

// TestExtractTarLargeFiles: files above streamAbove are written by the
// reader as it reads them, among files handed to the writers.
func TestExtractTarLargeFiles(t *testing.T) {
	big := make([]byte, 3*streamAbove+7)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	big2 := append([]byte("again"), big[:streamAbove]...) // just above, a name again
	var entries []tarEntry
	for i := range 30 {
		entries = append(entries, file(fmt.Sprintf("small/%02d", i), "s", 0o644))
	}
	entries = append(entries, file("big", string(big), 0o640), file("small/00", "replaced", 0o600),
		file("big2", "first", 0o644), file("big2", string(big2), 0o4755))
	dest := t.TempDir()
	if err := extractTar(bytes.NewReader(makeTar(t, entries...)), dest, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	wantFile(t, dest, "big", string(big), 0o640)
	wantFile(t, dest, "big2", string(big2), fs.ModeSetuid|0o755)
	wantFile(t, dest, "small/00", "replaced", 0o600)
	wantFile(t, dest, "small/29", "s", 0o644)
	if fi, err := os.Stat(filepath.Join(dest, "big")); err != nil || !fi.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("big: %v %v", fi, err)
	}
}

func deletions(paths ...string) tarEntry {
	return tarEntry{name: ".banger-deletions", typ: tar.TypeReg, body: strings.Join(paths, "\x00"), mode: 0o600, deletions: true}
}

func wantFile(t *testing.T, dest, name, body string, mode fs.FileMode) {
	t.Helper()
	p := filepath.Join(dest, name)
	fi, err := os.Lstat(p)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
	}
	if got := readFile(t, p); got != body {
		t.Errorf("%s: %d bytes %.20q, want %d bytes %.20q", name, len(got), got, len(body), body)
	}
}

func wantLink(t *testing.T, dest, name, target string) {
	t.Helper()
	if got, err := os.Readlink(filepath.Join(dest, name)); err != nil || got != target {
		t.Errorf("%s -> %q (%v), want %q", name, got, err, target)
	}
}

// setUpOutside makes base/outside/secret, which the hostile streams
// extracted to base/dest aim at.
func setUpOutside(t *testing.T) (base string) {
	t.Helper()
	base = t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(outside, "secret"), "secret")
	if err := os.Chmod(filepath.Join(outside, "secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	return base
}

// checkOutside checks that nothing changed in base but dest.
func checkOutside(t *testing.T, base string) {
	t.Helper()
	outside := filepath.Join(base, "outside")
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if e.Name() != "outside" && e.Name() != "dest" {
			t.Errorf("%s created next to dest", e.Name())
		}
	}
	entries, _ = os.ReadDir(outside)
	if len(entries) != 1 {
		t.Errorf("outside holds %v, want only secret", entries)
	}
	fi, err := os.Stat(filepath.Join(outside, "secret"))
	if err != nil || fi.Mode() != 0o644 || readFile(t, filepath.Join(outside, "secret")) != "secret" {
		t.Errorf("outside/secret changed: %v %v", fi, err)
	}
	if fi, err := os.Stat(outside); err != nil || fi.Mode() != fs.ModeDir|0o755 {
		t.Errorf("outside changed: %v %v", fi, err)
	}
}
