package daemon

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"

	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// impNode is one file of the tree every import source in
// TestImageImportFormats holds.
type impNode struct {
	name     string
	kind     byte // a tar type flag
	mode     int64
	uid, gid int
	body     string
	link     string // hardlink or symlink target
}

// impTree is a tree with each kind of entry an import must keep as it is:
// owners, a setuid file, a hardlink pair, a fifo, and a symlink whose
// target (outside) lies outside the tree.
func impTree(outside string) []impNode {
	return []impNode{
		{name: "etc", kind: tar.TypeDir, mode: 0o755},
		{name: "etc/hostname", kind: tar.TypeReg, mode: 0o644, body: "imported\n"},
		{name: "bin", kind: tar.TypeDir, mode: 0o755},
		{name: "bin/tool", kind: tar.TypeReg, mode: 0o4755, body: "a setuid tool\n"},
		{name: "bin/tool-again", kind: tar.TypeLink, link: "bin/tool"},
		{name: "home", kind: tar.TypeDir, mode: 0o755},
		{name: "home/user", kind: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		{name: "home/user/notes", kind: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1000, body: "private notes\n"},
		{name: "escape", kind: tar.TypeSymlink, link: outside},
		{name: "pipe", kind: tar.TypeFifo, mode: 0o640, uid: 7, gid: 8},
	}
}

func impTreeTar(t *testing.T, nodes []impNode) []byte {
	t.Helper()
	var es []impEntry
	for _, n := range nodes {
		name := n.name
		if n.kind == tar.TypeDir {
			name += "/"
		}
		es = append(es, impEntry{hdr: tar.Header{Typeflag: n.kind, Name: name, Mode: n.mode, Uid: n.uid, Gid: n.gid, Linkname: n.link}, body: n.body})
	}
	return impTar(t, es...)
}

// impTreeDir makes the tree on disk under dir.
func impTreeDir(t *testing.T, dir string, nodes []impNode) {
	t.Helper()
	for _, n := range nodes {
		p := filepath.Join(dir, n.name)
		var err error
		switch n.kind {
		case tar.TypeDir:
			err = os.Mkdir(p, 0o700)
		case tar.TypeReg:
			err = os.WriteFile(p, []byte(n.body), 0o600)
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, n.link), p)
		case tar.TypeSymlink:
			err = os.Symlink(n.link, p)
		case tar.TypeFifo:
			err = syscall.Mkfifo(p, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n.kind == tar.TypeLink {
			continue
		}
		// Owner first: chown clears the setuid bit.
		if err := os.Lchown(p, n.uid, n.gid); err != nil {
			t.Fatal(err)
		}
		if n.kind != tar.TypeSymlink {
			if err := os.Chmod(p, os.FileMode(n.mode&0o777)|impModeBits(n.mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func impModeBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// checkTree checks that the ext4 img holds nodes exactly, and the
// guest init.
func (e *impEnv) checkTree(t *testing.T, img string, nodes []impNode) {
	t.Helper()
	types := map[byte]string{tar.TypeDir: "directory", tar.TypeReg: "regular", tar.TypeSymlink: "symlink", tar.TypeFifo: "FIFO"}
	for _, n := range nodes {
		got := impMustStat(t, img, "/"+n.name)
		if n.kind == tar.TypeLink {
			target := impMustStat(t, img, "/"+n.link)
			if got.Inode != target.Inode || got.Links != 2 {
				t.Errorf("%s: inode %d with %d links; want a hardlink to %s (inode %d), link count 2", n.name, got.Inode, got.Links, n.link, target.Inode)
			}
			continue
		}
		if got.Type != types[n.kind] || got.UID != n.uid || got.GID != n.gid {
			t.Errorf("%s: %s owned %d:%d; want %s owned %d:%d", n.name, got.Type, got.UID, got.GID, types[n.kind], n.uid, n.gid)
		}
		switch n.kind {
		case tar.TypeSymlink:
			if got.LinkDest != n.link {
				t.Errorf("%s: symlink to %q, want %q (stored, not followed)", n.name, got.LinkDest, n.link)
			}
			continue
		case tar.TypeReg:
			if body := impCat(t, img, "/"+n.name); body != n.body {
				t.Errorf("%s holds %q, want %q", n.name, body, n.body)
			}
		}
		if want := fmt.Sprintf("0%o", n.mode); got.Mode != want {
			t.Errorf("%s: mode %s, want %s", n.name, got.Mode, want)
		}
	}
	init := impMustStat(t, img, "/.banger/init")
	if init.Type != "regular" || init.Mode != "0755" || init.UID != 0 || init.GID != 0 || init.Size != e.initLen {
		t.Errorf("/.banger/init = %+v, want a root:root 0755 file of %d bytes", init, e.initLen)
	}
}

func TestImageImportFormats(t *testing.T) {
	e := impSetup(t)
	outside := filepath.Join(e.scratch, "outside-secret")
	impWrite(t, outside, []byte("SECRET\n"), 0o600)
	nodes := impTree(outside)
	plain := impTreeTar(t, nodes)

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zst := enc.EncodeAll(plain, nil)
	enc.Close()

	treeDir := filepath.Join(e.scratch, "tree")
	if err := os.Mkdir(treeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	impTreeDir(t, treeDir, nodes)

	for _, tc := range []struct {
		name string
		data []byte // nil: the directory
	}{
		{"plain-tar", plain},
		{"gzip-tar", gz.Bytes()},
		{"zstd-tar", zst},
		{"directory", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := treeDir
			if tc.data != nil {
				src = filepath.Join(e.scratch, tc.name)
				impWrite(t, src, tc.data, 0o600)
			}
			im := e.mustImage(t, rpc.MethodImageImport, rpc.ImageImportParams{Path: src, Name: tc.name})
			shown := e.show(t, tc.name)
			if shown.ID != im.ID || shown.State != "ready" || shown.Source != "import" || shown.SourceRef != src ||
				shown.Path != e.rootfs(im.ID) || shown.SizeBytes <= 0 {
				t.Errorf("image.show = %+v; want ready, source import of %s, path %s, a size", shown, src, e.rootfs(im.ID))
			}
			fi, err := os.Stat(e.rootfs(im.ID))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o444 || fi.Size() != shown.SizeBytes {
				t.Errorf("rootfs.ext4 is %v, %d bytes; want 0444 and the size image.show gives (%d)", fi.Mode(), fi.Size(), shown.SizeBytes)
			}
			e.checkTree(t, e.rootfs(im.ID), nodes)
			e.assertStagingEmpty(t)
		})
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "SECRET\n" {
		t.Errorf("the symlink's target outside the tree changed: %q, %v", b, err)
	}
}

func TestImageImportOfGarbageLeavesNothing(t *testing.T) {
	e := impSetup(t)
	for _, tc := range []struct {
		name, data, want string
	}{
		{"text", strings.Repeat("this is not a tar archive\n", 100), "neither gzip, zstd nor a tar archive"},
		{"bzip2", "BZh91AY&SY" + strings.Repeat("x", 600), "bzip2"},
		{"bad-gzip", "\x1f\x8b\x08\x00" + strings.Repeat("\xff", 600), "gzip"},
		{"truncated-tar", string(impTar(t, impFile("big", strings.Repeat("y", 4096), 0o644))[:1024]), "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(e.scratch, tc.name)
			impWrite(t, src, []byte(tc.data), 0o644)
			msg, id := e.failedOp(t, rpc.MethodImageImport, rpc.ImageImportParams{Path: src, Name: tc.name})
			if !strings.Contains(msg, src) || !strings.Contains(msg, tc.want) {
				t.Errorf("import of %s failed with %q; want it to name the file and say %q", tc.name, msg, tc.want)
			}
			if id == "" {
				t.Fatal("the import reserved no image")
			}
			e.assertImageGone(t, id, tc.name)
		})
	}
	if ims := e.images(t); len(ims) != 0 {
		t.Errorf("image.list = %+v after failed imports, want none", ims)
	}
}

// Each tarball breaks one of the flattener's rules. The import must fail
// naming the entry, leave no image, and touch nothing outside the staging
// directory it removes.
func TestImageImportRefusesEscapes(t *testing.T) {
	e := impSetup(t)
	secret := filepath.Join(e.scratch, "secret")
	impWrite(t, secret, []byte("do not link me\n"), 0o600)
	// Where a name relative to a staging rootfs must not reach:
	// ROOT/staging/image-ID/rootfs/../../../../in is the scratch dir.
	up, err := filepath.Rel(filepath.Join(e.cfg.Root, "staging", "image-x", "rootfs"), e.scratch)
	if err != nil {
		t.Fatal(err)
	}
	ok := impFile("ok", "fine\n", 0o644)
	for _, tc := range []struct {
		name    string
		entries []impEntry
		entry   string // the entry the error must name
		want    string
	}{
		{"dotdot", []impEntry{ok, impFile(up+"/dotdot-pwned", "x", 0o644)}, up + "/dotdot-pwned", "leaves the image root"},
		{"dotdot-short", []impEntry{ok, impFile("../x", "x", 0o644)}, "../x", "leaves the image root"},
		{"absolute", []impEntry{ok, impFile(e.scratch+"/abs-pwned", "x", 0o644)}, e.scratch + "/abs-pwned", "absolute path"},
		{"symlink-escape", []impEntry{ok, impSymlink("esc", up), impFile("esc/link-pwned", "x", 0o644)}, "esc/link-pwned", "leaves the image root"},
		{"symlink-escape-dir", []impEntry{ok, impSymlink("esc", up), impDir("esc/sub", 0o755)}, "esc/sub", "leaves the image root"},
		{"hardlink-outside", []impEntry{ok, impHardlink("hl", up+"/secret")}, "hl", "leaves the image root"},
		{"hardlink-absolute", []impEntry{ok, impHardlink("hl", secret)}, "hl", "absolute path"},
		{"hardlink-through-symlink", []impEntry{ok, impSymlink("esc", up), impHardlink("hl", "esc/secret")}, "hl", "leaves the image root"},
		{"hardlink-missing", []impEntry{ok, impHardlink("hl", "nope")}, "hl", `"nope" is not present`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(e.scratch, tc.name+".tar")
			impWrite(t, src, impTar(t, tc.entries...), 0o644)
			before := impSnapshot(t, filepath.Dir(e.cfg.Root))
			msg, id := e.failedOp(t, rpc.MethodImageImport, rpc.ImageImportParams{Path: src, Name: tc.name})
			if !strings.Contains(msg, fmt.Sprintf("entry %q", tc.entry)) || !strings.Contains(msg, tc.want) || !strings.Contains(msg, src) {
				t.Errorf("import failed with %q; want it to name the tarball, entry %q and say %q", msg, tc.entry, tc.want)
			}
			e.assertImageGone(t, id, tc.name)
			if d := impDiff(before, impSnapshot(t, filepath.Dir(e.cfg.Root))); d != "" {
				t.Errorf("the refused import changed files outside its staging:\n%s", d)
			}
		})
	}
}

func TestImageImportParams(t *testing.T) {
	e := impSetup(t)
	good := filepath.Join(e.scratch, "good.tar")
	impWrite(t, good, impTar(t, impFile("etc/hostname", "x\n", 0o644)), 0o644)
	fifo := filepath.Join(e.scratch, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := impCtx(t)
	call := func(p rpc.ImageImportParams) error {
		var started rpc.OpStarted
		err := e.c.Call(ctx, rpc.MethodImageImport, p, &started)
		if err == nil {
			if _, werr := e.c.WatchOp(ctx, started.OpID, nil); werr != nil {
				t.Fatal(werr)
			}
		}
		return err
	}

	t.Run("paths", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			is   func(error) bool
			want string
		}{
			{"good.tar", errdefs.IsInvalidArgument, "not absolute"},
			{"./in/good.tar", errdefs.IsInvalidArgument, "not absolute"},
			{filepath.Join(e.scratch, "nonesuch.tar"), errdefs.IsNotFound, "does not exist"},
			{filepath.Join(e.scratch, "nonesuch", "x.tar"), errdefs.IsNotFound, "does not exist"},
			// Opening a fifo would wait for a writer, forever.
			{fifo, errdefs.IsInvalidArgument, "neither a regular file nor a directory"},
			{"/dev/null", errdefs.IsInvalidArgument, "neither a regular file nor a directory"},
		} {
			err := call(rpc.ImageImportParams{Path: tc.path, Name: "p"})
			if !tc.is(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("import of %q = %v; want an error naming it that says %q", tc.path, err, tc.want)
			}
		}
		if err := call(rpc.ImageImportParams{Name: "p"}); rpcCode(err) != rpc.CodeInvalidParams {
			t.Errorf("import without a path = %v, want invalid params", err)
		}
		if ims := e.images(t); len(ims) != 0 {
			t.Errorf("refused imports recorded images: %+v", ims)
		}
		e.assertStagingEmpty(t)
		if names := impList(t, filepath.Join(e.cfg.Root, "images")); len(names) != 0 {
			t.Errorf("images/ holds %q after refused imports", names)
		}
	})

	t.Run("names", func(t *testing.T) {
		for _, name := range []string{"-leading-dash", ".hidden", "a/b", "with space", "ümlaut", "semi;colon", strings.Repeat("n", 129)} {
			err := call(rpc.ImageImportParams{Path: good, Name: name})
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "invalid name") {
				t.Errorf("import named %q = %v; want invalid argument (invalid name)", name, err)
			}
		}
		if err := call(rpc.ImageImportParams{Path: good}); rpcCode(err) != rpc.CodeInvalidParams {
			t.Errorf("import without a name = %v, want invalid params", err)
		}
		if ims := e.images(t); len(ims) != 0 {
			t.Errorf("refused names recorded images: %+v", ims)
		}
		// The longest name and every allowed character.
		for _, name := range []string{strings.Repeat("n", 128), "Debian_12.5:slim-x"} {
			if err := call(rpc.ImageImportParams{Path: good, Name: name}); err != nil {
				t.Errorf("import named %q: %v", name, err)
			}
		}
	})

	t.Run("taken", func(t *testing.T) {
		first := e.mustImage(t, rpc.MethodImageImport, rpc.ImageImportParams{Path: good, Name: "taken"})
		err := call(rpc.ImageImportParams{Path: good, Name: "taken"})
		if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), `"taken" is taken`) {
			t.Errorf("second import named taken = %v; want already exists saying the name is taken", err)
		}
		// A name a pending image holds is taken too.
		if _, err := e.r.d.store.CreateImage(ctx, store.Image{Name: "in-progress", State: store.ImagePending, SourceKind: store.SourceImport}); err != nil {
			t.Fatal(err)
		}
		if err := call(rpc.ImageImportParams{Path: good, Name: "in-progress"}); !errdefs.IsAlreadyExists(err) {
			t.Errorf("import named like a pending image = %v; want already exists", err)
		}
		if got := e.show(t, "taken"); got.ID != first.ID || got.State != "ready" {
			t.Errorf("the first image changed: %+v", got)
		}
		e.assertStagingEmpty(t)
	})
}

func TestImageRemove(t *testing.T) {
	e := impSetup(t)
	ctx := impCtx(t)
	src := filepath.Join(e.scratch, "rootfs.tar")
	impWrite(t, src, impTar(t, impFile("etc/hostname", "x\n", 0o644)), 0o644)
	im := e.mustImage(t, rpc.MethodImageImport, rpc.ImageImportParams{Path: src, Name: "busy"})
	rm := func(ref string) error { return e.c.Call(ctx, rpc.MethodImageRemove, rpc.NameRef{Ref: ref}, nil) }

	// No VM lifecycle exists yet: a VM row stands in for a VM.
	vm, err := e.r.d.store.CreateVM(ctx, store.VM{Name: "user-vm", ImageID: im.ID, VCPUs: 1, MemoryMiB: 256, VMM: store.VMMFirecracker})
	if err != nil {
		t.Fatal(err)
	}
	err = rm("busy")
	if !errdefs.IsBusy(err) || !strings.Contains(err.Error(), `"user-vm"`) {
		t.Fatalf("image.rm of an image a VM uses = %v; want busy naming the VM", err)
	}
	if _, err := os.Stat(e.rootfs(im.ID)); err != nil {
		t.Errorf("the refused rm removed the image's files: %v", err)
	}
	if got := e.show(t, "busy"); got.State != "ready" || len(got.UsedBy) != 1 || got.UsedBy[0] != "user-vm" {
		t.Errorf("image.show after the refused rm = %+v; want ready, used by user-vm", got)
	}

	if err := e.r.d.store.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := rm(im.ID[:8]); err != nil { // by id prefix
		t.Fatalf("image.rm once no VM uses it: %v", err)
	}
	impAssertMissing(t, filepath.Join(e.cfg.Root, "images", im.ID))
	if err := e.c.Call(ctx, rpc.MethodImageShow, rpc.NameRef{Ref: "busy"}, nil); !errdefs.IsNotFound(err) {
		t.Errorf("image.show after rm = %v, want not found", err)
	}

	if err := rm("busy"); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `"busy"`) {
		t.Errorf("image.rm of a removed image = %v, want not found naming it", err)
	}
	if err := rm("nonesuch"); !errdefs.IsNotFound(err) {
		t.Errorf("image.rm of an unknown ref = %v, want not found", err)
	}
	if err := e.c.Call(ctx, rpc.MethodImageRemove, rpc.NameRef{}, nil); rpcCode(err) != rpc.CodeInvalidParams {
		t.Errorf("image.rm without a ref = %v, want invalid params", err)
	}

	pending, err := e.r.d.store.CreateImage(ctx, store.Image{Name: "half-made", State: store.ImagePending, SourceKind: store.SourceImport})
	if err != nil {
		t.Fatal(err)
	}
	if err := rm("half-made"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "still being made") {
		t.Errorf("image.rm of a pending image = %v; want failed precondition", err)
	}
	if _, err := e.r.d.store.GetImage(ctx, pending.ID); err != nil {
		t.Errorf("the refused rm removed the pending image's row: %v", err)
	}
}

// A daemon that stopped in the middle of making an image, or between
// moving a kernel into place and recording it, is cleaned up at Open;
// finished images and kernels are kept.
func TestOpenCleansUpAfterACrash(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	ctx := impCtx(t)
	root := cfg.Root
	for _, d := range []string{"staging", "images", "kernels"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o711); err != nil {
			t.Fatal(err)
		}
	}
	s, err := store.Open(ctx, filepath.Join(root, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := s.CreateKernel(ctx, store.Kernel{Name: "kept-kernel"})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := s.CreateImage(ctx, store.Image{Name: "interrupted", State: store.ImagePending, SourceKind: store.SourceImport, SourceRef: "/x.tar"})
	if err != nil {
		t.Fatal(err)
	}
	ready, err := s.CreateImage(ctx, store.Image{Name: "finished", State: store.ImageReady, SourceKind: store.SourceImport, DefaultKernelID: kept.ID})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	files := map[string]string{
		"images/" + pending.ID + "/rootfs.ext4":  "half",
		"images/" + ready.ID + "/rootfs.ext4":    "whole",
		"staging/image-" + pending.ID + "/x":     "partial",
		"kernels/" + kept.ID + "/vmlinux":        "kernel",
		"kernels/ORPHAN/vmlinux":                 "orphan",
		"images/ORPHAN/rootfs.ext4":              "orphan",
		"staging/kernel-" + store.NewID() + "/x": "partial",
	}
	for rel, body := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		impWrite(t, p, []byte(body), 0o444)
	}

	r := impStart(t, cfg, "/bin/true")
	if _, err := r.d.store.GetImage(ctx, pending.ID); !errdefs.IsNotFound(err) {
		t.Errorf("the pending image's row survived Open: %v", err)
	}
	impAssertMissing(t, filepath.Join(root, "images", pending.ID))
	impAssertMissing(t, filepath.Join(root, "kernels", "ORPHAN"))
	impAssertMissing(t, filepath.Join(root, "images", "ORPHAN"))
	if names := impList(t, filepath.Join(root, "staging")); len(names) != 0 {
		t.Errorf("staging holds %q after Open", names)
	}
	if got, err := r.d.store.GetImage(ctx, ready.ID); err != nil || got.State != store.ImageReady {
		t.Errorf("the finished image = %+v, %v; want it kept", got, err)
	}
	for _, rel := range []string{"images/" + ready.ID + "/rootfs.ext4", "kernels/" + kept.ID + "/vmlinux"} {
		if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
			t.Errorf("Open removed %s: %v", rel, err)
		}
	}
	c := dialDaemon(t, cfg)
	var ims rpc.ImageListResult
	if err := c.Call(ctx, rpc.MethodImageList, nil, &ims); err != nil || len(ims.Images) != 1 || ims.Images[0].Name != "finished" {
		t.Errorf("image.list = %+v, %v; want only the finished image", ims.Images, err)
	}
}

// callerFiles reads as a non-root caller through `banger internal read`,
// run as that caller. The stream belongs to the operation that reads it,
// not to the request that opened it: it must stay whole after the
// request's context ends.
func TestCallerFilesReadAsTheCaller(t *testing.T) {
	needRoot(t)
	bin := impBangerBinary(t)
	const nobody = 65534
	dir, err := os.MkdirTemp("", "bgimpcf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A process of the caller's, whose groups the daemon reads from /proc.
	peerProc := exec.Command("sleep", "120")
	peerProc.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if err := peerProc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peerProc.Process.Kill(); peerProc.Wait() })
	peer := rpc.PeerCred{UID: nobody, GID: nobody, PID: int32(peerProc.Process.Pid)}
	cf := callerFiles{exe: bin, procRoot: "/proc"}

	big := make([]byte, 4<<20) // far more than a pipe holds
	rand.Read(big)
	public := filepath.Join(dir, "public")
	impWrite(t, public, big, 0o644)
	private := filepath.Join(dir, "private")
	impWrite(t, private, []byte("root only\n"), 0o600)
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	impWrite(t, filepath.Join(tree, "f"), []byte("in a tree\n"), 0o644)

	t.Run("file outlives the request", func(t *testing.T) {
		reqCtx, endRequest := context.WithCancel(context.Background())
		s, err := cf.open(reqCtx, peer, public)
		if err != nil {
			t.Fatal(err)
		}
		endRequest() // the RPC call returned; the op reads on
		got, rerr := io.ReadAll(s)
		cerr := s.Close()
		if rerr != nil || cerr != nil || s.IsDir || !bytes.Equal(got, big) {
			t.Fatalf("read %d of %d bytes (read err %v, close err %v, dir %v); want the whole file", len(got), len(big), rerr, cerr, s.IsDir)
		}
	})
	t.Run("directory", func(t *testing.T) {
		s, err := cf.open(context.Background(), peer, tree)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if !s.IsDir {
			t.Fatal("a directory did not come as a tar stream")
		}
		tr := tar.NewReader(s)
		var names []string
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		if strings.Join(names, " ") != "./ f" {
			t.Errorf("tar of the tree holds %q, want ./ and f", names)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Run("closing early stops the reader", func(t *testing.T) {
		s, err := cf.open(context.Background(), peer, public)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close of a stream the reader abandoned: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	for _, tc := range []struct {
		name, path string
		is         func(error) bool
		want       string
	}{
		{"unreadable", private, errdefs.IsInvalidArgument, "permission denied"},
		{"missing", filepath.Join(dir, "nonesuch"), errdefs.IsNotFound, "does not exist"},
		{"relative", "public", errdefs.IsInvalidArgument, "not absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := cf.open(context.Background(), peer, tc.path)
			if err == nil {
				s.Close()
			}
			if !tc.is(err) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("open %s as nobody = %v; want an error naming it that says %q", tc.path, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "banger:") {
				t.Errorf("the error %q carries the helper's own prefix", err)
			}
		})
	}
}
