package imagemgr

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"banger/internal/errdefs"
	"banger/internal/system"
)

// buildImage flattens ents into a fresh stage and builds an ext4 from it.
func buildImage(t *testing.T, ents ...ent) (*stage, string) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (e2fsprogs): %v", tool, err)
		}
	}
	s := newStage(t)
	mustFlatten(t, s.root, layer(t, ents...))
	bytes, inodes, err := TreeSize(s.root)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(s.base, "rootfs.ext4")
	if err := BuildExt4(context.Background(), &system.ExecRunner{}, s.root, img, Ext4Size(bytes, inodes, 0), Ext4Inodes(inodes, 0)); err != nil {
		t.Fatal(err)
	}
	// register copies the image into staging writable.
	if err := os.Chmod(img, 0o600); err != nil {
		t.Fatal(err)
	}
	return s, img
}

func TestInjectInitExt4(t *testing.T) {
	requireRoot(t)
	initBin := fakeInit(t)
	tests := []struct {
		name string
		ents []ent
	}{
		{"no /.banger", []ent{file("etc/os-release", "x")}},
		{"an old init", []ent{dirEnt(".banger/").mode(0o700).owner(5, 5), file(".banger/init", "old init, longer than the new one").mode(0o4777).owner(1000, 1000)}},
		{"/.banger a file", []ent{file(".banger", "not a directory")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, img := buildImage(t, tt.ents...)
			if err := InjectInitExt4(context.Background(), &system.ExecRunner{}, img, initBin); err != nil {
				t.Fatal(err)
			}
			if got := debugfs(t, img, "cat "+GuestInitPath); got != "#!banger init" {
				t.Errorf("init = %q", got)
			}
			if out := debugfs(t, img, "stat /.banger"); !regexp.MustCompile(`Type: directory\s+Mode:\s+0755[\s\S]*User:\s+0\s+Group:\s+0`).MatchString(out) {
				t.Errorf("/.banger:\n%s", out)
			}
			out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
			if err != nil {
				t.Errorf("e2fsck -fn: %v\n%s", err, out)
			}
		})
	}
}

func TestInjectInitExt4RefusesSymlink(t *testing.T) {
	requireRoot(t)
	_, img := buildImage(t, dirEnt("etc/"), symlink(".banger", "/etc"))
	err := InjectInitExt4(context.Background(), &system.ExecRunner{}, img, fakeInit(t))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err = %v, want ErrInvalidArgument", err)
	}
	if out := debugfs(t, img, "stat /etc/init"); regexp.MustCompile(`Type:`).MatchString(out) {
		t.Errorf("init written through the symlink:\n%s", out)
	}
}
