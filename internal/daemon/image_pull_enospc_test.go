package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"banger/internal/rpc"
	"banger/internal/testing/ocitest"
)

// smallFilesystem makes a size-byte ext4 on a loop device and mounts it
// at a new directory it returns; the mount, the loop device and the
// backing file go at cleanup, whatever the test's outcome.
func smallFilesystem(t *testing.T, size int64) string {
	t.Helper()
	for _, tool := range []string{"losetup", "mount", "umount", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to make a small filesystem on a loop device", tool)
		}
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("mkfs.ext4", "-q", "-F", img)
	dev := run("losetup", "--find", "--show", img)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
		}
	})
	run("mount", dev, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}

func freeBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// TestPullFillsTheRootFilesystem pulls an image bigger than the free space
// of the daemon's state root (a 32 MiB ext4 on a loop device): the pull
// fails saying the disk is full, leaves no image row, nothing in staging
// and no layer (what it cached is dropped again; any blob left has its
// digest), gives the space back, and the daemon goes on: a small pull succeeds after.
func TestPullFillsTheRootFilesystem(t *testing.T) {
	needRoot(t)
	pullNeedTools(t)
	mnt := smallFilesystem(t, 32<<20)
	reg := ocitest.StartRegistry(t)
	cfg := pullTestConfig(t)
	cfg.Root = filepath.Join(mnt, "root")
	// A stand-in init of a few bytes: the test binary (tens of MiB, more
	// under -race) would not fit with the small image in 32 MiB.
	init := filepath.Join(t.TempDir(), "init")
	if err := os.WriteFile(init, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := startDaemonWith(t, Options{Config: cfg, Executable: init})
	e := &pullEnv{cfg: cfg, r: r, c: dialDaemon(t, cfg), reg: reg}
	free := freeBytes(t, mnt)

	big := ocitest.Image(t, ocitest.ImageConfig{},
		ocitest.Layer(t, ocitest.Dir("usr", 0o755), ocitest.SizedFile("usr/one.bin", 0o644, 20<<20)),
		ocitest.Layer(t, ocitest.Dir("usr", 0o755), ocitest.SizedFile("usr/two.bin", 0o644, 20<<20)))
	ocitest.Push(t, reg.Ref("big:1"), big)
	small := ocitest.Image(t, ocitest.ImageConfig{}, ocitest.Layer(t, ocitest.File("hello", 0o644, "hi\n")))
	ocitest.Push(t, reg.Ref("small:1"), small)
	t.Logf("%d MiB free on the state root; the image holds 40 MiB", free>>20)

	final := e.pullFails(t, rpc.ImagePullParams{Ref: reg.Ref("big:1"), Name: "big"})
	t.Logf("the pull failed with: %s", final.Error)
	if !strings.Contains(final.Error, "no space left on device") {
		t.Errorf("pull onto a full filesystem failed with %q, want it to say no space is left", final.Error)
	}
	e.assertNoImage(t, "big")
	pullAssertCacheComplete(t, cfg.Root)
	// The layers it cached went too, or the disk would stay full.
	for _, l := range mustLayers(t, big) {
		pullAssertNoLayerBlob(t, cfg, pullDigest(t, l))
	}
	if now := freeBytes(t, mnt); now < free-(2<<20) {
		t.Errorf("%d MiB free after the failed pull, %d MiB before: it left something behind", now>>20, free>>20)
	}
	pullAssertNoOpenFilesUnder(t, filepath.Join(cfg.Root, "staging"))

	// The daemon goes on: it lists, and pulls what fits.
	var list rpc.ImageListResult
	if err := e.c.Call(t.Context(), rpc.MethodImageList, nil, &list); err != nil {
		t.Fatalf("image.list after the full disk: %v", err)
	}
	e.pullOK(t, rpc.ImagePullParams{Ref: reg.Ref("small:1"), Name: "small"})
	pullAssertRootClean(t, cfg, r.d.store)
}

func mustLayers(t *testing.T, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// pullAssertCacheComplete checks that every file in the layer cache is a
// complete blob: its content has the digest it is named by.
func pullAssertCacheComplete(t *testing.T, root string) {
	t.Helper()
	dir := filepath.Join(root, "layers")
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read cached %s: %v", rel, err)
			return nil
		}
		if sum := sha256.Sum256(data); rel != "sha256/"+hex.EncodeToString(sum[:]) {
			t.Errorf("the layer cache holds %s, whose content has sha256 %x", rel, sum)
		}
		return nil
	})
}
