package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// ext4 makes a 32 MiB ext4 holding /etc/hostname and /srv/data, with
// mkfs.ext4 -d (no mount).
func (e *impEnv) ext4(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join(e.scratch, name+"-tree")
	for _, d := range []string{"etc", "srv"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	impWrite(t, filepath.Join(src, "etc", "hostname"), []byte("registered\n"), 0o644)
	impWrite(t, filepath.Join(src, "srv", "data"), []byte(strings.Repeat("d", 10000)), 0o600)
	img := filepath.Join(e.scratch, name+".ext4")
	impMkfs(t, src, img, "32M")
	return img
}

func TestImageRegister(t *testing.T) {
	e := impSetup(t)
	img := e.ext4(t, "base")
	before := impSHA256(t, img)
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}

	im := e.mustImage(t, rpc.MethodImageRegister, rpc.ImageRegisterParams{Rootfs: img, Name: "reg"})
	shown := e.show(t, "reg")
	if shown.State != "ready" || shown.Source != "register" || shown.SourceRef != img || shown.Path != e.rootfs(im.ID) ||
		shown.SizeBytes != fi.Size() || shown.DefaultKernel != "" {
		t.Errorf("image.show = %+v; want ready, source register of %s, %d bytes, no kernel", shown, img, fi.Size())
	}
	copyFI, err := os.Stat(e.rootfs(im.ID))
	if err != nil {
		t.Fatal(err)
	}
	if copyFI.Mode().Perm() != 0o444 || copyFI.Size() != fi.Size() {
		t.Errorf("the registered copy is %v, %d bytes; want 0444, %d bytes", copyFI.Mode(), copyFI.Size(), fi.Size())
	}
	init := impMustStat(t, e.rootfs(im.ID), "/.banger/init")
	if init.Type != "regular" || init.Mode != "0755" || init.UID != 0 || init.GID != 0 || init.Size != e.initLen {
		t.Errorf("/.banger/init in the copy = %+v; want a root:root 0755 file of %d bytes", init, e.initLen)
	}
	if dir := impMustStat(t, e.rootfs(im.ID), "/.banger"); dir.Type != "directory" || dir.Mode != "0755" || dir.UID != 0 {
		t.Errorf("/.banger in the copy = %+v; want a root 0755 directory", dir)
	}
	if got := impCat(t, e.rootfs(im.ID), "/etc/hostname"); got != "registered\n" {
		t.Errorf("/etc/hostname in the copy = %q", got)
	}
	if got := impCat(t, e.rootfs(im.ID), "/srv/data"); got != strings.Repeat("d", 10000) {
		t.Errorf("/srv/data in the copy is %d bytes, want the original's 10000", len(got))
	}
	if got := impSHA256(t, img); got != before {
		t.Errorf("registering changed the original file (sha256 %s, was %s)", got, before)
	}
	if _, ok := impStat(t, img, "/.banger/init"); ok {
		t.Error("the guest init was injected into the original file, not the copy")
	}
	e.assertStagingEmpty(t)
}

func TestImageRegisterRefusals(t *testing.T) {
	e := impSetup(t)
	img := e.ext4(t, "base")
	ctx := impCtx(t)

	t.Run("not ext4", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			data []byte
			want string
		}{
			{"text", []byte(strings.Repeat("not a file system\n", 200)), "no ext superblock magic"},
			{"short", []byte("tiny"), "too short"},
			{"zeros", make([]byte, 1<<20), "no ext superblock magic"},
		} {
			src := filepath.Join(e.scratch, tc.name+".img")
			impWrite(t, src, tc.data, 0o644)
			msg, id := e.failedOp(t, rpc.MethodImageRegister, rpc.ImageRegisterParams{Rootfs: src, Name: tc.name})
			if !strings.Contains(msg, src) || !strings.Contains(msg, "not an ext4 filesystem") || !strings.Contains(msg, tc.want) {
				t.Errorf("register of %s failed with %q; want it to name the file and say it is not ext4 (%s)", tc.name, msg, tc.want)
			}
			e.assertImageGone(t, id, tc.name)
		}
	})

	t.Run("at the call", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			p    rpc.ImageRegisterParams
			is   func(error) bool
			want string
		}{
			{"directory", rpc.ImageRegisterParams{Rootfs: e.scratch, Name: "d"}, errdefs.IsInvalidArgument, "is a directory"},
			{"relative", rpc.ImageRegisterParams{Rootfs: "base.ext4", Name: "r"}, errdefs.IsInvalidArgument, "not absolute"},
			{"missing", rpc.ImageRegisterParams{Rootfs: filepath.Join(e.scratch, "nonesuch.ext4"), Name: "m"}, errdefs.IsNotFound, "does not exist"},
			{"missing kernel", rpc.ImageRegisterParams{Rootfs: img, Name: "k", Kernel: "no-such-kernel"}, errdefs.IsNotFound, `kernel "no-such-kernel"`},
			{"bad name", rpc.ImageRegisterParams{Rootfs: img, Name: "no/slash"}, errdefs.IsInvalidArgument, "invalid name"},
		} {
			var started rpc.OpStarted
			err := e.c.Call(ctx, rpc.MethodImageRegister, tc.p, &started)
			if !tc.is(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: image.register = %v, %+v; want an error saying %q", tc.name, err, started, tc.want)
			}
		}
		if err := e.c.Call(ctx, rpc.MethodImageRegister, rpc.ImageRegisterParams{Name: "x"}, nil); rpcCode(err) != rpc.CodeInvalidParams {
			t.Errorf("image.register without a rootfs = %v, want invalid params", err)
		}
	})

	if ims := e.images(t); len(ims) != 0 {
		t.Errorf("image.list = %+v after refused registrations, want none", ims)
	}
	if names := impList(t, filepath.Join(e.cfg.Root, "images")); len(names) != 0 {
		t.Errorf("images/ holds %q after refused registrations", names)
	}
	e.assertStagingEmpty(t)
}

func TestImageRegisterWithKernel(t *testing.T) {
	e := impSetup(t)
	vmlinux := impVmlinux(t, e.scratch)
	if _, err := e.importKernel(t, rpc.KernelImportParams{Vmlinux: vmlinux, Name: "k1"}); err != nil {
		t.Fatal(err)
	}
	img := e.ext4(t, "base")
	e.mustImage(t, rpc.MethodImageRegister, rpc.ImageRegisterParams{Rootfs: img, Name: "with-kernel", Kernel: "k1"})
	if got := e.show(t, "with-kernel"); got.DefaultKernel != "k1" {
		t.Errorf("image.show default_kernel = %q, want k1", got.DefaultKernel)
	}
	var ims rpc.ImageListResult
	if err := e.c.Call(impCtx(t), rpc.MethodImageList, nil, &ims); err != nil || len(ims.Images) != 1 || ims.Images[0].DefaultKernel != "k1" {
		t.Errorf("image.list = %+v, %v; want the image with kernel k1", ims.Images, err)
	}
}
