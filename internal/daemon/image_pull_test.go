package daemon

// Integration tests of image.pull: a real registry on loopback
// (ocitest), a real daemon on a socket, real layers flattened and built
// into a real ext4, which the tests read back with debugfs (no mounts).
// They need root (the daemon chowns its socket, the flattener chowns and
// makes device nodes) and e2fsprogs.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/testing/ocitest"
)

// TestPullFlattensEveryLayerIntoTheImage pulls a three-layer image by tag
// and checks what lands in the ext4: owners, modes, links, nodes,
// whiteouts, opaque directories, xattrs, times and a large file; then the
// image's files, its config and the cleanup. A second pull by digest
// reuses the cached layers.
func TestPullFlattensEveryLayerIntoTheImage(t *testing.T) {
	e := pullSetup(t)
	fileTime := time.Date(2021, 6, 15, 12, 34, 56, 0, time.UTC)
	dirTime := time.Date(2020, 2, 29, 8, 0, 0, 0, time.UTC)
	// Large enough to span many of the flattener's and the cache's buffers;
	// under -race, compressing it dominates the test's time.
	const bigSize = 16 << 20

	base := ocitest.Layer(t,
		ocitest.Dir("etc", 0o755),
		ocitest.File("etc/removed", 0o644, "lower layer\n"),
		ocitest.File("etc/kept", 0o644, "kept\n"),
		ocitest.Dir("opq", 0o755),
		ocitest.File("opq/lower", 0o644, "hidden by the opaque marker\n"),
		ocitest.Dir("opq/lowerdir", 0o755),
		ocitest.File("opq/lowerdir/f", 0o644, "hidden too\n"),
		ocitest.Dir("home", 0o755),
		ocitest.Entry{Name: "home/user/", Type: tar.TypeDir, Mode: 0o750, UID: 1000, GID: 1000, ModTime: dirTime},
		ocitest.Entry{Name: "home/user/owned", Mode: 0o640, UID: 1000, GID: 1000, Body: []byte("mine\n"), ModTime: fileTime,
			Xattrs: map[string]string{"user.banger.test": "xattr-value"}},
		ocitest.Dir("usr", 0o755),
		ocitest.Dir("usr/bin", 0o755),
		ocitest.SetuidFile("usr/bin/su", "#!/bin/true\n"),
		ocitest.File("usr/bin/tool", 0o755, "#!/bin/true\n"),
		ocitest.Hardlink("usr/bin/tool-link", "usr/bin/tool"),
		ocitest.Symlink("bin", "usr/bin"),
		ocitest.Dir("srv", 0o755),
		ocitest.Dir("srv/shared", 0o2775),
		ocitest.Dir("scratch", 0o1777),
		ocitest.Dir("dev", 0o755),
		ocitest.CharDev("dev/null", 1, 3),
		ocitest.Dir("var/spool", 0o755),
		ocitest.Fifo("var/spool/pipe"),
	)
	upper := ocitest.Layer(t,
		ocitest.Whiteout("etc/removed"),
		ocitest.File("etc/added", 0o600, "upper layer\n"),
		ocitest.File("opq/before-marker", 0o644, "same layer, before the marker\n"),
		ocitest.Opaque("opq"),
		ocitest.File("opq/after-marker", 0o644, "same layer, after the marker\n"),
	)
	big := ocitest.Layer(t,
		ocitest.Dir("data", 0o755),
		ocitest.SizedFile("data/big.bin", 0o644, bigSize),
	)
	cfg := ocitest.ImageConfig{
		Entrypoint: []string{"/usr/bin/tool"},
		Cmd:        []string{"--flag", "value with spaces"},
		Env:        []string{"PATH=/usr/bin:/bin", "GREETING=hello world"},
		WorkingDir: "/home/user",
		User:       "1000:1000",
	}
	img := ocitest.Image(t, cfg, base, upper, big)
	ref := e.reg.Ref("app:1.0")
	ocitest.Push(t, ref, img)
	digest := pullDigest(t, img)

	im, _ := e.pullOK(t, rpc.ImagePullParams{Ref: ref, Name: "full"})

	// The op's result is the image, as image.show has it.
	wantConfig := rpc.ImageConfig{Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env, WorkingDir: cfg.WorkingDir, User: cfg.User}
	rootfs := filepath.Join(e.cfg.Root, "images", im.ID, "rootfs.ext4")
	if im.Name != "full" || im.Source != "pull" || im.SourceRef != ref || im.Digest != digest || im.Path != rootfs {
		t.Errorf("result image %+v: want name full, source pull %s, digest %s, path %s", im, ref, digest, rootfs)
	}
	if diff := cmp.Diff(wantConfig, im.Config); diff != "" {
		t.Errorf("result image config (-want +got):\n%s", diff)
	}
	var shown rpc.Image
	if err := e.c.Call(context.Background(), rpc.MethodImageShow, rpc.NameRef{Ref: "full"}, &shown); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(im, shown); diff != "" {
		t.Errorf("image.show differs from the op's result (-result +show):\n%s", diff)
	}

	// The image's files: a read-only ext4 and config, nothing in staging.
	fi, err := os.Stat(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o444 || fi.Size() != im.SizeBytes {
		t.Errorf("rootfs.ext4 is %v, %d bytes; want -r--r--r--, %d bytes", fi.Mode(), fi.Size(), im.SizeBytes)
	}
	cfgPath := filepath.Join(e.cfg.Root, "images", im.ID, "config.json")
	if m := pullFileMode(t, cfgPath); m != 0o444 {
		t.Errorf("config.json mode %v, want -r--r--r--", m)
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var recorded struct{ Entrypoint, Cmd, Env []string }
	if err := json.Unmarshal(raw, &recorded); err != nil {
		t.Fatalf("config.json %s: %v", raw, err)
	}
	if !slices.Equal(recorded.Entrypoint, cfg.Entrypoint) || !slices.Equal(recorded.Cmd, cfg.Cmd) || !slices.Equal(recorded.Env, cfg.Env) ||
		!strings.Contains(string(raw), cfg.WorkingDir) || !strings.Contains(string(raw), cfg.User) {
		t.Errorf("config.json = %s, want the image's entrypoint, cmd, env, workdir and user", raw)
	}
	pullAssertRootClean(t, e.cfg, e.r.d.store)
	pullFsck(t, rootfs)

	// What the layers made, as the guest will see it.
	type want struct {
		typ, mode string
		uid, gid  int
	}
	for path, w := range map[string]want{
		"/home/user":       {"directory", "0750", 1000, 1000},
		"/home/user/owned": {"regular", "0640", 1000, 1000},
		"/usr/bin/su":      {"regular", "04755", 0, 0},
		"/srv/shared":      {"directory", "02775", 0, 0},
		"/scratch":         {"directory", "01777", 0, 0},
		"/etc/added":       {"regular", "0600", 0, 0},
		"/bin":             {"symlink", "0777", 0, 0},
		"/dev/null":        {"character special", "0666", 0, 0},
		"/var/spool/pipe":  {"FIFO", "0644", 0, 0},
		"/.banger":         {"directory", "0755", 0, 0},
		"/.banger/init":    {"regular", "0755", 0, 0},
	} {
		in := pullMustStat(t, rootfs, path)
		if got := (want{in.Type, in.Mode, in.UID, in.GID}); got != w {
			t.Errorf("%s is %+v, want %+v", path, got, w)
		}
	}
	owned := pullMustStat(t, rootfs, "/home/user/owned")
	if owned.Mtime != fileTime.Unix() || owned.Xattrs["user.banger.test"] != "xattr-value" {
		t.Errorf("/home/user/owned: mtime %d (want %d), xattrs %v (want user.banger.test=xattr-value)", owned.Mtime, fileTime.Unix(), owned.Xattrs)
	}
	if got := pullCat(t, rootfs, "/home/user/owned"); got != "mine\n" {
		t.Errorf("/home/user/owned holds %q", got)
	}
	if home := pullMustStat(t, rootfs, "/home/user"); home.Mtime != dirTime.Unix() {
		t.Errorf("/home/user mtime %d, want %d (the layer's, kept after its children were added)", home.Mtime, dirTime.Unix())
	}
	if link := pullMustStat(t, rootfs, "/bin"); link.LinkTarget != "usr/bin" {
		t.Errorf("/bin links to %q, want usr/bin", link.LinkTarget)
	}
	tool, toolLink := pullMustStat(t, rootfs, "/usr/bin/tool"), pullMustStat(t, rootfs, "/usr/bin/tool-link")
	if tool.Inode != toolLink.Inode || tool.Links != 2 {
		t.Errorf("hardlink: tool inode %d (%d links), tool-link inode %d; want one inode with 2 links", tool.Inode, tool.Links, toolLink.Inode)
	}
	if dev := pullMustStat(t, rootfs, "/dev/null"); dev.Device != "1:3" {
		t.Errorf("/dev/null is device %q, want 1:3", dev.Device)
	}
	for path, present := range map[string]bool{
		"/etc/removed":       false, // whited out by the upper layer
		"/etc/.wh.removed":   false, // whiteout files never land
		"/etc/kept":          true,
		"/opq/lower":         false, // hidden by the opaque marker
		"/opq/lowerdir":      false,
		"/opq/.wh..wh..opq":  false,
		"/opq/before-marker": true, // the marker's own layer keeps its files
		"/opq/after-marker":  true,
		"/etc/hostname":      true, // made for the guest init
		"/proc":              true,
		"/tmp":               true,
	} {
		if _, ok := pullStat(t, rootfs, path); ok != present {
			t.Errorf("%s present = %v, want %v", path, ok, present)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exeInfo, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	if init := pullMustStat(t, rootfs, "/.banger/init"); init.Size != exeInfo.Size() {
		t.Errorf("/.banger/init is %d bytes, want %d (the daemon's executable)", init.Size, exeInfo.Size())
	}
	// The guest init reads the image's config from /.banger/image.json.
	var guestCfg rpc.ImageConfig
	if err := json.Unmarshal([]byte(pullCat(t, rootfs, "/.banger/image.json")), &guestCfg); err != nil {
		t.Errorf("/.banger/image.json: %v", err)
	} else if diff := cmp.Diff(wantConfig, guestCfg); diff != "" {
		t.Errorf("/.banger/image.json (-want +got):\n%s", diff)
	}
	n, sum := pullCatSHA256(t, rootfs, "/data/big.bin")
	if want := pullBodySHA256(t, "data/big.bin", bigSize); n != bigSize || sum != want {
		t.Errorf("/data/big.bin: %d bytes, sha256 %s; want %d bytes, sha256 %s", n, sum, int64(bigSize), want)
	}

	// The same image by digest: the default name comes from the reference,
	// and every layer comes from the cache.
	byDigest := e.reg.Ref("app@" + digest)
	im2, _ := e.pullOK(t, rpc.ImagePullParams{Ref: byDigest})
	if wantName := "app-" + strings.TrimPrefix(digest, "sha256:")[:12]; im2.Name != wantName || im2.Digest != digest || im2.SourceRef != byDigest {
		t.Errorf("pull by digest made %+v, want name %s, digest %s, source %s", im2, wantName, digest, byDigest)
	}
	for _, l := range []string{pullDigest(t, base), pullDigest(t, upper), pullDigest(t, big)} {
		if n := e.reg.BlobGets(l); n != 1 {
			t.Errorf("layer %s was downloaded %d times, want once (then cached)", l, n)
		}
	}
	if n, sum2 := pullCatSHA256(t, im2.Path, "/data/big.bin"); n != bigSize || sum2 != sum {
		t.Errorf("the image pulled by digest has a different /data/big.bin (%d bytes, %s)", n, sum2)
	}
	pullAssertRootClean(t, e.cfg, e.r.d.store)
}

// TestPullPicksLinuxAmd64FromAnIndex pulls a multi-platform index and gets
// the amd64 variant; an index without one fails and leaves nothing.
func TestPullPicksLinuxAmd64FromAnIndex(t *testing.T) {
	e := pullSetup(t)
	variant := func(platform, arch string) v1.Image {
		return ocitest.Image(t, ocitest.ImageConfig{Platform: platform, Cmd: []string{"/" + arch}},
			ocitest.Layer(t, ocitest.File("arch", 0o644, arch+"\n"), ocitest.File(arch+"-only", 0o644, "")))
	}
	amd64 := variant("linux/amd64", "amd64")
	ref := e.reg.Ref("multi:1")
	ocitest.PushIndex(t, ref, map[string]v1.Image{"linux/arm64": variant("linux/arm64", "arm64"), "linux/amd64": amd64})

	im, _ := e.pullOK(t, rpc.ImagePullParams{Ref: ref})
	if got := pullCat(t, im.Path, "/arch"); got != "amd64\n" {
		t.Errorf("/arch holds %q, want the amd64 variant's", got)
	}
	if _, ok := pullStat(t, im.Path, "/arm64-only"); ok {
		t.Error("the arm64 variant's file is in the image")
	}
	if want := pullDigest(t, amd64); im.Digest != want || !slices.Equal(im.Config.Cmd, []string{"/amd64"}) {
		t.Errorf("image digest %s, cmd %q; want the amd64 manifest's %s and its config", im.Digest, im.Config.Cmd, want)
	}

	noAmd64 := e.reg.Ref("armonly:1")
	ocitest.PushIndex(t, noAmd64, map[string]v1.Image{"linux/arm64": variant("linux/arm64", "arm64"), "linux/arm/v7": variant("linux/arm/v7", "arm")})
	final := e.pullFails(t, rpc.ImagePullParams{Ref: noAmd64, Name: "armonly"})
	if !strings.Contains(final.Error, "linux/amd64") || !strings.Contains(final.Error, noAmd64) {
		t.Errorf("pull of an index without amd64 failed with %q, want it to name the reference and linux/amd64", final.Error)
	}
	e.assertNoImage(t, "armonly")
}

// TestPullReusesCachedLayers pulls an image that shares a layer with one
// pulled before: the shared layer is reported cached and downloaded once,
// and the cache holds each layer read-only under its digest.
func TestPullReusesCachedLayers(t *testing.T) {
	e := pullSetup(t)
	shared := ocitest.Layer(t, ocitest.Dir("usr", 0o755), ocitest.SizedFile("usr/shared.bin", 0o644, 256<<10))
	first := ocitest.Layer(t, ocitest.File("first", 0o644, "1\n"))
	fresh := ocitest.Layer(t, ocitest.File("second", 0o644, "2\n"))
	ocitest.Push(t, e.reg.Ref("first:1"), ocitest.Image(t, ocitest.ImageConfig{}, shared, first))
	// The shared layer sits above one the registry is slow to send, so
	// its cached state lasts long enough for op.watch to show it (watch
	// statuses coalesce).
	ocitest.Push(t, e.reg.Ref("second:1"), ocitest.Image(t, ocitest.ImageConfig{}, fresh, shared))
	sharedDigest := pullDigest(t, shared)

	e.pullOK(t, rpc.ImagePullParams{Ref: e.reg.Ref("first:1")})
	e.reg.SetBlobDelay(300 * time.Millisecond)
	im, events := e.pullOK(t, rpc.ImagePullParams{Ref: e.reg.Ref("second:1")})

	states := map[string][]string{} // layer → the states op.watch showed, in order
	for _, ev := range events {
		for _, it := range ev.Progress.Items {
			if s := states[it.Name]; len(s) == 0 || s[len(s)-1] != it.State {
				states[it.Name] = append(s, it.State)
			}
		}
	}
	if s := states[shortDigest(sharedDigest)]; !slices.Contains(s, "cached") || slices.Contains(s, "downloaded") {
		t.Errorf("the shared layer went through %v, want cached (and never downloaded)", s)
	}
	if s := states[shortDigest(pullDigest(t, fresh))]; !slices.Contains(s, "downloaded") && !slices.Contains(s, "downloading") {
		t.Errorf("the new layer went through %v, want it downloaded", s)
	}
	if n := e.reg.BlobGets(sharedDigest); n != 1 {
		t.Errorf("the shared layer was downloaded %d times, want once", n)
	}
	for _, p := range []string{"/usr/shared.bin", "/second"} {
		if _, ok := pullStat(t, im.Path, p); !ok {
			t.Errorf("the second image has no %s", p)
		}
	}

	// The cache: one read-only file per layer, named by its digest.
	var want []string
	for _, l := range []v1.Layer{shared, first, fresh} {
		d := pullDigest(t, l)
		want = append(want, strings.TrimPrefix(d, "sha256:"))
		size, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(e.cfg.Root, "layers", "sha256", strings.TrimPrefix(d, "sha256:"))
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("layer %s is not cached: %v", d, err)
			continue
		}
		if fi.Mode() != 0o444 || fi.Size() != size {
			t.Errorf("cached layer %s is %v, %d bytes; want -r--r--r--, %d bytes", d, fi.Mode(), fi.Size(), size)
		}
	}
	slices.Sort(want)
	if got := pullDirNames(t, filepath.Join(e.cfg.Root, "layers", "sha256")); !slices.Equal(got, want) {
		t.Errorf("layers/sha256 holds %v, want %v", got, want)
	}
	pullAssertRootClean(t, e.cfg, e.r.d.store)
}

// TestConcurrentPullsShareDownloads pulls one image twice at once, under
// two names: each layer is downloaded once and both images are made.
func TestConcurrentPullsShareDownloads(t *testing.T) {
	e := pullSetup(t)
	layers := []v1.Layer{
		ocitest.Layer(t, ocitest.Dir("opt", 0o755), ocitest.SizedFile("opt/a.bin", 0o644, 1<<20)),
		ocitest.Layer(t, ocitest.SizedFile("opt/b.bin", 0o644, 512<<10)),
		ocitest.Layer(t, ocitest.File("opt/c", 0o644, "c\n")),
	}
	ref := e.reg.Ref("shared:1")
	ocitest.Push(t, ref, ocitest.Image(t, ocitest.ImageConfig{}, layers...))
	// Every blob answer waits, so the two pulls' downloads overlap.
	e.reg.SetBlobDelay(300 * time.Millisecond)

	one := e.mustStart(t, rpc.ImagePullParams{Ref: ref, Name: "one"})
	two := e.mustStart(t, rpc.ImagePullParams{Ref: ref, Name: "two"})
	finals := make(chan rpc.Op, 2)
	for _, id := range []string{one.OpID, two.OpID} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), pullTimeout)
			defer cancel()
			final, err := e.c.WatchOp(ctx, id, nil)
			if err != nil {
				final = rpc.Op{ID: id, State: "watch failed", Error: err.Error()}
			}
			finals <- final
		}()
	}
	for range 2 {
		im := pullResult(t, <-finals)
		if _, ok := pullStat(t, im.Path, "/opt/c"); !ok {
			t.Errorf("image %s has no /opt/c", im.Name)
		}
	}
	for i, l := range layers {
		if n := e.reg.BlobGets(pullDigest(t, l)); n != 1 {
			t.Errorf("layer %d was downloaded %d times by two concurrent pulls, want once", i+1, n)
		}
	}
	var list rpc.ImageListResult
	if err := e.c.Call(context.Background(), rpc.MethodImageList, nil, &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, im := range list.Images {
		if im.State == "ready" {
			names = append(names, im.Name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"one", "two"}) {
		t.Errorf("ready images %v, want [one two]", names)
	}
	pullAssertRootClean(t, e.cfg, e.r.d.store)
}

// pullSlowImage pushes an image whose one layer the registry sends at
// about 256 KiB/s for several seconds, and returns its ref and layer
// digest.
func pullSlowImage(t *testing.T, e *pullEnv, repo string) (ref, layerDigest string) {
	t.Helper()
	l := ocitest.Layer(t, ocitest.Dir("opt", 0o755), ocitest.SizedFile("opt/slow.bin", 0o644, 4<<20))
	ref = e.reg.Ref(repo + ":1")
	ocitest.Push(t, ref, ocitest.Image(t, ocitest.ImageConfig{}, l))
	e.reg.SetBlobRate(256 << 10)
	return ref, pullDigest(t, l)
}

// TestPullCancelLeavesNothing cancels a pull mid-download.
func TestPullCancelLeavesNothing(t *testing.T) {
	e := pullSetup(t)
	ref, layer := pullSlowImage(t, e, "slow")
	started := e.mustStart(t, rpc.ImagePullParams{Ref: ref, Name: "slow"})
	e.waitOp(t, started.OpID, "downloading", pullDownloading)

	begin := time.Now()
	if err := e.c.CancelOp(context.Background(), started.OpID); err != nil {
		t.Fatal(err)
	}
	final, _ := e.watch(t, started.OpID)
	if final.State != "canceled" {
		t.Fatalf("cancelled pull ended %s (%q), want canceled", final.State, final.Error)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the pull took %s to stop after op.cancel", d)
	}
	e.assertNoImage(t, "slow")
	pullAssertNoLayerBlob(t, e.cfg, layer)
	pullAssertNoOpenFilesUnder(t, filepath.Join(e.cfg.Root, "staging"))
}

// TestDaemonStopDuringPull stops the daemon mid-download and opens it
// again: the image is gone and the op says why it ended.
func TestDaemonStopDuringPull(t *testing.T) {
	e := pullSetup(t)
	ref, layer := pullSlowImage(t, e, "slow")
	started := e.mustStart(t, rpc.ImagePullParams{Ref: ref, Name: "slow"})
	e.waitOp(t, started.OpID, "downloading", pullDownloading)
	e.c.Close()
	e.r.stop(t)
	pullAssertNoOpenFilesUnder(t, e.cfg.Root)

	r2 := startDaemon(t, e.cfg)
	e2 := &pullEnv{cfg: e.cfg, r: r2, c: dialDaemon(t, e.cfg), reg: e.reg}
	op, err := e2.c.GetOp(context.Background(), started.OpID)
	if err != nil {
		t.Fatalf("op.get after the restart: %v", err)
	}
	// A stop cuts running ops short: they are recorded as interrupted.

	if op.State != "interrupted" || !strings.Contains(op.Error, "daemon stopped") {
		t.Errorf("op after the restart: %s (%q), want interrupted, saying the daemon stopped", op.State, op.Error)
	}
	e2.assertNoImage(t, "slow")
	pullAssertNoLayerBlob(t, e.cfg, layer)
}

// TestPullRefusesLayerWithWrongDigest pulls through a proxy that alters
// a layer's bytes: the pull fails naming the layer, without waiting for
// another layer the registry never sends, and leaves nothing.
func TestPullRefusesLayerWithWrongDigest(t *testing.T) {
	e := pullSetup(t)
	good := ocitest.Layer(t, ocitest.SizedFile("payload", 0o644, 64<<10))
	stalled := ocitest.Layer(t, ocitest.File("never", 0o644, "sent\n"))
	ocitest.Push(t, e.reg.Ref("tampered:1"), ocitest.Image(t, ocitest.ImageConfig{}, good, stalled))
	goodDigest, stalledDigest := pullDigest(t, good), pullDigest(t, stalled)
	proxy := startPullProxy(t, e.reg.Host(), []string{goodDigest}, []string{stalledDigest})

	begin := time.Now()
	final := e.pullFails(t, rpc.ImagePullParams{Ref: proxy.host + "/tampered:1", Name: "tampered"})
	if !strings.Contains(final.Error, goodDigest) {
		t.Errorf("pull of a tampered layer failed with %q, want the layer's digest %s named", final.Error, goodDigest)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("the failed pull took %s: it waited for the stalled layer", d)
	}
	e.assertNoImage(t, "tampered")
	pullAssertNoLayerBlob(t, e.cfg, goodDigest)
	pullAssertNoLayerBlob(t, e.cfg, stalledDigest)
	pullAssertNoOpenFilesUnder(t, filepath.Join(e.cfg.Root, "staging"))
}

// TestPullRefusesEntriesThatEscape pulls images with tar entries that
// would write outside the image root: each pull fails naming the entry,
// leaves nothing, and a canary directory beside the state root, where the
// entries point, stays untouched.
func TestPullRefusesEntriesThatEscape(t *testing.T) {
	e := pullSetup(t)
	canary := filepath.Join(filepath.Dir(e.cfg.Root), "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	sentinel := filepath.Join(canary, "sentinel")
	if err := os.WriteFile(sentinel, []byte("untouched\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Enough "../" to climb from the staging root (ROOT/staging/ID/rootfs)
	// to the host's / if followed on the host, then down to the canary.
	up := strings.Repeat("../", strings.Count(e.cfg.Root, "/")+5)
	toCanary := up + strings.TrimPrefix(canary, "/")

	base := ocitest.Layer(t, ocitest.Dir("etc", 0o755), ocitest.File("etc/ok", 0o644, "ok\n"))
	tests := []struct {
		name   string
		layers [][]ocitest.Entry // above base
		entry  string            // the entry the error must name
	}{
		{"dot-dot name", [][]ocitest.Entry{{ocitest.File("../x", 0o644, "x")}}, "../x"},
		{"dot-dot inside the name", [][]ocitest.Entry{{ocitest.File("etc/../../x", 0o644, "x")}}, "etc/../../x"},
		{"absolute name", [][]ocitest.Entry{{ocitest.File(canary+"/x", 0o644, "x")}}, canary + "/x"},
		{"write through an escaping symlink of a lower layer",
			[][]ocitest.Entry{{ocitest.Symlink("esc", toCanary)}, {ocitest.File("esc/pwned", 0o644, "x")}}, "esc/pwned"},
		{"directory through an escaping symlink",
			[][]ocitest.Entry{{ocitest.Symlink("esc", toCanary), ocitest.Dir("esc/newdir", 0o755)}}, "esc/newdir/"},
		{"hardlink to a path above the root",
			[][]ocitest.Entry{{ocitest.Hardlink("hl", toCanary+"/sentinel")}}, "hl"},
		{"hardlink to an absolute host path",
			[][]ocitest.Entry{{ocitest.Hardlink("hl", sentinel)}}, "hl"},
		{"hardlink through an escaping symlink",
			[][]ocitest.Entry{{ocitest.Symlink("up", up), ocitest.Hardlink("hl", "up/"+strings.TrimPrefix(sentinel, "/"))}}, "hl"},
		{"whiteout above the root", [][]ocitest.Entry{{ocitest.Whiteout(toCanary + "/sentinel")}}, toCanary + "/.wh.sentinel"},
		{"whiteout through an escaping symlink",
			[][]ocitest.Entry{{ocitest.Symlink("esc", toCanary)}, {ocitest.Whiteout("esc/sentinel")}}, "esc/.wh.sentinel"},
		{"opaque marker through an escaping symlink",
			[][]ocitest.Entry{{ocitest.Symlink("esc", toCanary)}, {ocitest.Opaque("esc")}}, "esc/.wh..wh..opq"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := []v1.Layer{base}
			for _, entries := range tt.layers {
				ls = append(ls, ocitest.Layer(t, entries...))
			}
			repo := "evil" + strconv.Itoa(i)
			ocitest.Push(t, e.reg.Ref(repo+":1"), ocitest.Image(t, ocitest.ImageConfig{}, ls...))
			final := e.pullFails(t, rpc.ImagePullParams{Ref: e.reg.Ref(repo + ":1"), Name: repo})
			if want := "entry " + strconv.Quote(tt.entry); !strings.Contains(final.Error, want) || !strings.Contains(final.Error, "invalid argument") {
				t.Errorf("pull failed with %q, want it to name %s as invalid", final.Error, want)
			}
			e.assertNoImage(t, repo)
			pullAssertNoOpenFilesUnder(t, filepath.Join(e.cfg.Root, "staging"))
			pullAssertCanary(t, canary, sentinel)
		})
	}

	// An absolute symlink is read from the image root, as the guest reads
	// it: a write through it lands inside the image, not on the host.
	ocitest.Push(t, e.reg.Ref("abs:1"), ocitest.Image(t, ocitest.ImageConfig{}, base,
		ocitest.Layer(t, ocitest.Symlink("abs", canary)),
		ocitest.Layer(t, ocitest.File("abs/inside", 0o644, "in the image\n"))))
	im, _ := e.pullOK(t, rpc.ImagePullParams{Ref: e.reg.Ref("abs:1")})
	if got := pullCat(t, im.Path, canary+"/inside"); got != "in the image\n" {
		t.Errorf("%s/inside in the image holds %q", canary, got)
	}
	pullAssertCanary(t, canary, sentinel)
}

// pullAssertCanary checks that canary still holds only sentinel, unchanged
// and with no other link.
func pullAssertCanary(t *testing.T, canary, sentinel string) {
	t.Helper()
	if got := pullDirNames(t, canary); !slices.Equal(got, []string{"sentinel"}) {
		t.Errorf("the canary directory holds %v, want only sentinel", got)
	}
	b, err := os.ReadFile(sentinel)
	if err != nil || string(b) != "untouched\n" {
		t.Errorf("sentinel = %q, %v; want it untouched", b, err)
	}
	if fi, err := os.Lstat(sentinel); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Errorf("sentinel: %v; want exactly one link", err)
	}
	entries, err := os.ReadDir(filepath.Dir(canary))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case "root", "s.sock", "canary":
		default:
			t.Errorf("%s appeared beside the state root", filepath.Join(filepath.Dir(canary), e.Name()))
		}
	}
}

// TestPullNames checks --name handling: bad names are refused before any
// op starts, a taken name is refused, and the default comes from the ref.
func TestPullNames(t *testing.T) {
	e := pullSetup(t)
	ref := e.reg.Ref("library/app:1.2")
	ocitest.Push(t, ref, ocitest.Image(t, ocitest.ImageConfig{}, ocitest.Layer(t, ocitest.File("f", 0o644, "f\n"))))
	ctx := context.Background()

	for _, tt := range []struct{ what, name, ref string }{
		{"slash", "bad/name", ref},
		{"blank", " ", ref},
		{"leading dash", "-x", ref},
		{"200 bytes", strings.Repeat("a", 200), ref},
		{"bad reference", "fine", "UPPER/Case::x"},
	} {
		if started, err := e.start(t, rpc.ImagePullParams{Ref: tt.ref, Name: tt.name}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: image.pull = %+v, %v; want invalid argument", tt.what, started, err)
		}
	}
	if ops, err := e.c.ListOps(ctx); err != nil || len(ops) != 0 {
		t.Errorf("op.list after refused pulls = %+v, %v; want no ops", ops, err)
	}
	pullAssertRootClean(t, e.cfg, e.r.d.store)

	im, _ := e.pullOK(t, rpc.ImagePullParams{Ref: ref})
	if im.Name != "app:1.2" {
		t.Errorf("default name %q, want app:1.2 (the repository's last component and the tag)", im.Name)
	}
	_, err := e.start(t, rpc.ImagePullParams{Ref: ref})
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "app:1.2") || !strings.Contains(err.Error(), "--name") {
		t.Errorf("pull under a taken name = %v, want already exists naming it and suggesting --name", err)
	}
	if ops, err := e.c.ListOps(ctx); err != nil || len(ops) != 1 {
		t.Errorf("op.list = %+v, %v; want only the one pull", ops, err)
	}
	pullAssertRootClean(t, e.cfg, e.r.d.store)
}

// TestPullWithCredentials pulls from a registry that wants basic auth.
func TestPullWithCredentials(t *testing.T) {
	needRoot(t)
	reg := ocitest.StartRegistryWithAuth(t, "alice", "s3cret")
	e := pullSetupWithRegistry(t, reg)
	ref := reg.Ref("private:1")
	ocitest.Push(t, ref, ocitest.Image(t, ocitest.ImageConfig{}, ocitest.Layer(t, ocitest.File("secret", 0o600, "s\n"))),
		remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))

	for _, tt := range []struct {
		what string
		auth *rpc.RegistryAuth
	}{
		{"no credentials", nil},
		{"a wrong password", &rpc.RegistryAuth{Username: "alice", Password: "guess"}},
	} {
		final := e.pullFails(t, rpc.ImagePullParams{Ref: ref, Name: "private", Auth: tt.auth})
		if !strings.Contains(strings.ToLower(final.Error), "unauthorized") {
			t.Errorf("pull with %s failed with %q, want it to say unauthorized", tt.what, final.Error)
		}
		e.assertNoImage(t, "private")
	}
	im, _ := e.pullOK(t, rpc.ImagePullParams{Ref: ref, Name: "private", Auth: &rpc.RegistryAuth{Username: "alice", Password: "s3cret"}})
	if got := pullCat(t, im.Path, "/secret"); got != "s\n" {
		t.Errorf("/secret holds %q", got)
	}
}

// TestPullRefusesCorruptCachedLayer changes a cached layer's bytes on disk
// (same size, so the cache's size check passes): the next pull that uses
// it fails naming the layer and the corruption, removes the blob and
// leaves nothing; the pull after downloads it again and succeeds.
func TestPullRefusesCorruptCachedLayer(t *testing.T) {
	e := pullSetup(t)
	layer := ocitest.Layer(t, ocitest.Dir("usr", 0o755), ocitest.SizedFile("usr/payload", 0o644, 128<<10))
	ocitest.Push(t, e.reg.Ref("cached:1"), ocitest.Image(t, ocitest.ImageConfig{}, layer))
	digest := pullDigest(t, layer)
	e.pullOK(t, rpc.ImagePullParams{Ref: e.reg.Ref("cached:1"), Name: "first"})

	blob := filepath.Join(e.cfg.Root, "layers", "sha256", strings.TrimPrefix(digest, "sha256:"))
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}

	final := e.pullFails(t, rpc.ImagePullParams{Ref: e.reg.Ref("cached:1"), Name: "second"})
	if !strings.Contains(final.Error, digest) || !strings.Contains(final.Error, "corrupt") {
		t.Errorf("pull from a corrupt cached layer failed with %q, want the layer %s named as corrupt", final.Error, digest)
	}
	e.assertNoImage(t, "second")
	pullAssertNoLayerBlob(t, e.cfg, digest)

	e.pullOK(t, rpc.ImagePullParams{Ref: e.reg.Ref("cached:1"), Name: "second"})
	if n := e.reg.BlobGets(digest); n != 2 {
		t.Errorf("the layer was downloaded %d times, want twice (again after the corrupt copy went)", n)
	}
	got, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Errorf("the re-downloaded blob does not have digest %s", digest)
	}
}
