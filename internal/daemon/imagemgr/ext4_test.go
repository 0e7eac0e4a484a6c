package imagemgr

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
	"banger/internal/system"
	"banger/internal/system/systest"
)

var _ Runner = (*system.ExecRunner)(nil)

func TestExt4Size(t *testing.T) {
	const mib, gib = 1 << 20, 1 << 30
	tests := []struct {
		name                    string
		content, inodes, margin int64
		want                    int64
	}{
		{"empty tree gets the minimum", 0, 1, 0, MinExt4Size},
		{"small tree gets the minimum", 10 * mib, 500, 0, MinExt4Size},
		// 100 MiB + 10 MiB + (1000+200+1024)×256 B (0.54 MiB) + 4 MiB journal (< 128 MiB) → 114.54 → 115 MiB
		{"small with a 4 MiB journal", 100 * mib, 1000, 0, 115 * mib},
		// 500 MiB + 50 MiB + 100 MiB headroom + (10000+2000+1024+6400)×256 B (4.74 MiB) + 16 MiB journal → 670.74 → 671 MiB
		{"medium with headroom", 500 * mib, 10000, 100 * mib, 671 * mib},
		// 2 GiB + 10% = 2252.8 MiB; inodes (100000+20000+1024)×256 B = 29.54 MiB; 64 MiB journal → 2346.35 → 2347 MiB
		{"large with a 64 MiB journal", 2 * gib, 100000, 0, 2347 * mib},
		{"negative inputs are zero", -5, -5, -5, MinExt4Size},
	}
	for _, tt := range tests {
		if got := Ext4Size(tt.content, tt.inodes, tt.margin); got != tt.want {
			t.Errorf("%s: Ext4Size(%d, %d, %d) = %d (%.2f MiB), want %d MiB", tt.name, tt.content, tt.inodes, tt.margin, got, float64(got)/mib, tt.want/mib)
		}
	}
	// The journal grows with the file system it lives in.
	if a, b := Ext4Size(900*mib, 0, 0), Ext4Size(950*mib, 0, 0); b-a < 50*mib {
		t.Errorf("Ext4Size(950 MiB) - Ext4Size(900 MiB) = %d, want the journal step included", b-a)
	}
}

func TestTreeSize(t *testing.T) {
	requireRoot(t)
	s := newStage(t)
	mustFlatten(t, s.root, layer(t,
		file("a", "x"),                       // 1 block
		file("b", strings.Repeat("y", 5000)), // 2 blocks
		hardlink("c", "b"),                   // counted once
		symlink("short", "a"),                // in the inode
		symlink("long", strings.Repeat("t", 100)),
		dirEnt("d/"),
		file("sparse", "z"+strings.Repeat("\x00", 1<<20)), // 1 allocated block, not 257
	))
	bytes, inodes, err := TreeSize(s.root)
	if err != nil {
		t.Fatal(err)
	}
	// root, a, b(+c), short, long, d, sparse
	if inodes != 7 {
		t.Errorf("inodes = %d, want 7", inodes)
	}
	// a 1 + b 2 + long 1 + sparse 1 file blocks, plus root and d at least one block each.
	if bytes < 7*4096 || bytes > 10*4096 {
		t.Errorf("bytes = %d, want about %d", bytes, 7*4096)
	}
}

func TestBuildExt4Argv(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "rootfs.ext4")
	var fake systest.Fake
	fake.Default(systest.Output(""))
	if err := BuildExt4(context.Background(), &fake, "/staging/root", out, 100<<20+1, 2224); err != nil {
		t.Fatal(err)
	}
	want := "mkfs.ext4 -q -F -t ext4 -d /staging/root -N 2224 -L banger -E root_owner=0:0 " + out + " 102401K\n"
	if diff := cmp.Diff(want, fake.Log()); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 || fi.Size() != 102401*1024 {
		t.Errorf("image mode %v size %d, want 0444 and %d", fi.Mode(), fi.Size(), 102401*1024)
	}

	t.Run("existing output is refused", func(t *testing.T) {
		if err := BuildExt4(context.Background(), &fake, "/src", out, 1<<20, 1); err == nil {
			t.Error("overwrote an existing image")
		}
	})
	t.Run("relative paths are refused", func(t *testing.T) {
		err := BuildExt4(context.Background(), &fake, "-d", filepath.Join(dir, "x"), 1<<20, 1)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("err = %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("a failed mkfs leaves no file", func(t *testing.T) {
		var failing systest.Fake
		failing.Default(systest.Exit(1, "mkfs.ext4: Could not allocate block in ext2 filesystem"))
		out := filepath.Join(dir, "failed.ext4")
		err := BuildExt4(context.Background(), &failing, "/src", out, 1<<20, 1)
		if err == nil || !strings.Contains(err.Error(), "Could not allocate block") {
			t.Errorf("err = %v, want mkfs's message", err)
		}
		assertMissing(t, out)
	})
}

// debugfs runs one debugfs request against an image, read-only.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := (&system.ExecRunner{}).Run(context.Background(), "debugfs", "-R", req, img)
	if err != nil {
		t.Fatalf("debugfs %s: %v", req, err)
	}
	return string(out)
}

func TestFlattenToExt4EndToEnd(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (e2fsprogs): %v", tool, err)
		}
	}
	s := newStage(t)
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	null := ent{hdr: hdr("dev/null", tar.TypeChar, 0o666)}
	null.hdr.Devmajor, null.hdr.Devminor = 1, 3
	mustFlatten(t, s.root,
		layer(t,
			file("usr/bin/su", "su binary").mode(0o4755).mtime(mtime),
			file("home/u/notes", "hello from the image\n").mode(0o640).owner(1000, 1001).xattr("user.banger", "1"),
			symlink("usr/bin/sh", "/bin/busybox"),
			file("bin/busybox", "busybox"),
			null,
		),
		layer(t, hardlink("bin/ls", "bin/busybox")),
	)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := PrepareGuestRoot(s.root, self); err != nil {
		t.Fatal(err)
	}
	bytes, inodes, err := TreeSize(s.root)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(s.base, "rootfs.ext4")
	size := Ext4Size(bytes, inodes, 16<<20)
	if err := BuildExt4(context.Background(), &system.ExecRunner{}, s.root, img, size, Ext4Inodes(inodes, 16<<20)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 || fi.Size() != size {
		t.Errorf("image: mode %v size %d, want 0444 and %d", fi.Mode(), fi.Size(), size)
	}

	// The headroom comes with inodes: one per 16 KiB of it, on top of
	// the tree's (a guest must be able to create files, not only bytes).
	stats := debugfs(t, img, "stats")
	m := regexp.MustCompile(`Inode count:\s+(\d+)`).FindStringSubmatch(stats)
	if m == nil {
		t.Fatalf("debugfs stats: no inode count in:\n%s", stats)
	}
	if n, _ := strconv.ParseInt(m[1], 10, 64); n < inodes+(16<<20)/(16<<10) {
		t.Errorf("image has %d inodes, want at least the tree's %d plus %d for 16 MiB of headroom", n, inodes, (16<<20)/(16<<10))
	}

	checks := []struct {
		req  string
		want []string // regexps
	}{
		{"stat /usr/bin/su", []string{`Type: regular\s+Mode:\s+04755`, `User:\s+0\s+Group:\s+0`, `mtime: 0x[0-9a-f]+:[0-9a-f]+ -- Sat Feb  3 04:05:06 2001`}},
		{"stat /home/u/notes", []string{`Mode:\s+0640`, `User:\s+1000\s+Group:\s+1001`, `user.banger \(1\) = "1"`}},
		{"ea_list /home/u/notes", []string{`user.banger \(1\) = "1"`}},
		{"cat /home/u/notes", []string{`^hello from the image\n$`}},
		{"stat /usr/bin/sh", []string{`Type: symlink`, `Fast link dest: "/bin/busybox"`}},
		{"stat /bin/busybox", []string{`Links: 2`}},
		{"stat /dev/null", []string{`Type: character special\s+Mode:\s+0666`, `Device major/minor number: 01:03`}},
		{"stat " + GuestInitPath, []string{`Type: regular\s+Mode:\s+0755`, `User:\s+0\s+Group:\s+0`}},
		{"stat /tmp", []string{`Type: directory\s+Mode:\s+01777`}},
		{"stat /", []string{`User:\s+0\s+Group:\s+0`}},
	}
	for _, c := range checks {
		out := debugfs(t, img, c.req)
		for _, w := range c.want {
			if !regexp.MustCompile(w).MatchString(out) {
				t.Errorf("debugfs -R %q: no match for %s in:\n%s", c.req, w, out)
			}
		}
	}
	// Both names of the hardlink show the same inode.
	ls := debugfs(t, img, "ls -l /bin")
	inode := regexp.MustCompile(`(?m)^\s*(\d+)\s+100644\s+\(1\)\s+0\s+0\s+7\s.*\b(busybox|ls)\s*$`)
	ms := inode.FindAllStringSubmatch(ls, -1)
	if len(ms) != 2 || ms[0][1] != ms[1][1] {
		t.Errorf("ls -l /bin: want busybox and ls on one inode, got %q in:\n%s", ms, ls)
	}
}
