package daemon

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// impPatched writes a copy of src with the bytes at off replaced.
func impPatched(t *testing.T, src, dst string, off int, b []byte) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[off:], b)
	impWrite(t, dst, data, 0o644)
	return dst
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

// assertKernelFiles checks kernels/ID holds exactly the named files, each
// 0444 with the given source's contents.
func (e *impEnv) assertKernelFiles(t *testing.T, id string, want map[string]string) {
	t.Helper()
	dir := filepath.Join(e.cfg.Root, "kernels", id)
	var names []string
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	if got := impList(t, dir); !slices.Equal(got, names) {
		t.Errorf("kernels/%s holds %q, want %q", id, got, names)
	}
	for name, src := range want {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("%s is %v, want 0444", p, fi.Mode())
		}
		if impSHA256(t, p) != impSHA256(t, src) {
			t.Errorf("%s differs from %s", p, src)
		}
	}
}

// assertKernels checks the kernel list's names and which one is the
// default ("" for none), and that kernels/ holds one directory per kernel.
func (e *impEnv) assertKernels(t *testing.T, names []string, def string) {
	t.Helper()
	ks := e.kernels(t)
	var got, ids []string
	var defs []string
	for _, k := range ks {
		got = append(got, k.Name)
		ids = append(ids, k.ID)
		if k.Default {
			defs = append(defs, k.Name)
		}
	}
	if !slices.Equal(got, names) {
		t.Errorf("kernel.list names %q, want %q", got, names)
	}
	if (def == "" && len(defs) != 0) || (def != "" && !slices.Equal(defs, []string{def})) {
		t.Errorf("default kernels %q, want exactly %q", defs, def)
	}
	slices.Sort(ids)
	if dirs := impList(t, filepath.Join(e.cfg.Root, "kernels")); !slices.Equal(dirs, ids) {
		t.Errorf("kernels/ holds %q, want one directory per kernel %q", dirs, ids)
	}
	e.assertStagingEmpty(t)
}

func TestKernelImport(t *testing.T) {
	e := impSetup(t)
	ctx := impCtx(t)
	vmlinux := impVmlinux(t, e.scratch)
	fi, err := os.Stat(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(e.scratch, "initrd.img")
	impWrite(t, initrd, []byte("an initramfs\n"), 0o644)

	k1, err := e.importKernel(t, rpc.KernelImportParams{Vmlinux: vmlinux, Name: "k1", Default: true})
	if err != nil {
		t.Fatal(err)
	}
	if k1.Version != impKernelVersion || k1.HasInitrd || !k1.Default || k1.SizeBytes != fi.Size() || k1.Source != vmlinux {
		t.Errorf("kernel.import k1 = %+v; want version %s, no initrd, default, %d bytes, source %s", k1, impKernelVersion, fi.Size(), vmlinux)
	}
	e.assertKernelFiles(t, k1.ID, map[string]string{"vmlinux": vmlinux})

	k2, err := e.importKernel(t, rpc.KernelImportParams{Vmlinux: vmlinux, Initrd: initrd, Name: "k2", Default: true})
	if err != nil {
		t.Fatal(err)
	}
	if !k2.HasInitrd || !k2.Default {
		t.Errorf("kernel.import k2 = %+v; want an initrd and default", k2)
	}
	e.assertKernelFiles(t, k2.ID, map[string]string{"vmlinux": vmlinux, "initrd.img": initrd})
	e.assertKernels(t, []string{"k1", "k2"}, "k2") // the second --default moved it

	if _, err := e.importKernel(t, rpc.KernelImportParams{Vmlinux: vmlinux, Name: "k3"}); err != nil {
		t.Fatal(err)
	}
	e.assertKernels(t, []string{"k1", "k2", "k3"}, "k2")
	for _, k := range e.kernels(t) {
		if k.SizeBytes != fi.Size() || k.HasInitrd != (k.Name == "k2") || k.Version != impKernelVersion {
			t.Errorf("kernel.list entry %+v; want %d bytes, version %s, an initrd only for k2", k, fi.Size(), impKernelVersion)
		}
	}

	// In use as an image's default kernel: refused, naming the image.
	img := e.ext4(t, "base")
	e.mustImage(t, rpc.MethodImageRegister, rpc.ImageRegisterParams{Rootfs: img, Name: "uses-k1", Kernel: "k1"})
	var shown rpc.Kernel
	if err := e.c.Call(ctx, rpc.MethodKernelShow, rpc.NameRef{Ref: "k1"}, &shown); err != nil {
		t.Fatal(err)
	}
	if shown.ID != k1.ID || shown.Default || shown.SizeBytes != fi.Size() || !slices.Equal(shown.UsedBy, []string{"image uses-k1"}) {
		t.Errorf("kernel.show k1 = %+v; want not default, %d bytes, used by image uses-k1", shown, fi.Size())
	}
	rm := func(ref string) error { return e.c.Call(ctx, rpc.MethodKernelRemove, rpc.NameRef{Ref: ref}, nil) }
	if err := rm("k1"); !errdefs.IsBusy(err) || !strings.Contains(err.Error(), `image "uses-k1"`) {
		t.Errorf("kernel.rm of a kernel an image uses = %v; want busy naming the image", err)
	}
	e.assertKernelFiles(t, k1.ID, map[string]string{"vmlinux": vmlinux})
	if err := e.c.Call(ctx, rpc.MethodImageRemove, rpc.NameRef{Ref: "uses-k1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := rm("k1"); err != nil {
		t.Fatalf("kernel.rm once no image uses it: %v", err)
	}
	impAssertMissing(t, filepath.Join(e.cfg.Root, "kernels", k1.ID))
	if err := rm("k2"); err != nil { // the default may go; then there is none
		t.Fatal(err)
	}
	e.assertKernels(t, []string{"k3"}, "")
	if err := rm("k1"); !errdefs.IsNotFound(err) {
		t.Errorf("kernel.rm of a removed kernel = %v, want not found", err)
	}
	if err := e.c.Call(ctx, rpc.MethodKernelShow, rpc.NameRef{Ref: "nonesuch"}, nil); !errdefs.IsNotFound(err) {
		t.Errorf("kernel.show of an unknown kernel = %v, want not found", err)
	}
}

func TestKernelImportRefusals(t *testing.T) {
	e := impSetup(t)
	vmlinux := impVmlinux(t, e.scratch)
	in := func(name string) string { return filepath.Join(e.scratch, name) }
	text := in("bzImage")
	impWrite(t, text, []byte(strings.Repeat("MZ not an elf\n", 100)), 0o644)
	empty := in("empty")
	impWrite(t, empty, nil, 0o644)
	fifo := in("fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	const needs = "banger needs an uncompressed x86-64 vmlinux"
	if _, err := e.importKernel(t, rpc.KernelImportParams{Vmlinux: vmlinux, Name: "taken"}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		p    rpc.KernelImportParams
		is   func(error) bool
		want string
	}{
		{"not elf", rpc.KernelImportParams{Vmlinux: text, Name: "a"}, errdefs.IsInvalidArgument, needs},
		{"i386", rpc.KernelImportParams{Vmlinux: impPatched(t, vmlinux, in("i386"), 18, le16(3)), Name: "a"}, errdefs.IsInvalidArgument, needs},
		{"arm64", rpc.KernelImportParams{Vmlinux: impPatched(t, vmlinux, in("arm64"), 18, le16(183)), Name: "a"}, errdefs.IsInvalidArgument, needs},
		{"32-bit class", rpc.KernelImportParams{Vmlinux: impPatched(t, vmlinux, in("elf32"), 4, []byte{1}), Name: "a"}, errdefs.IsInvalidArgument, needs},
		{"shared object", rpc.KernelImportParams{Vmlinux: impPatched(t, vmlinux, in("dyn"), 16, le16(3)), Name: "a"}, errdefs.IsInvalidArgument, needs},
		{"empty", rpc.KernelImportParams{Vmlinux: empty, Name: "a"}, errdefs.IsInvalidArgument, "is empty"},
		{"directory", rpc.KernelImportParams{Vmlinux: e.scratch, Name: "a"}, errdefs.IsInvalidArgument, "is a directory"},
		{"fifo", rpc.KernelImportParams{Vmlinux: fifo, Name: "a"}, errdefs.IsInvalidArgument, "neither a regular file nor a directory"},
		{"relative", rpc.KernelImportParams{Vmlinux: "vmlinux", Name: "a"}, errdefs.IsInvalidArgument, "not absolute"},
		{"missing", rpc.KernelImportParams{Vmlinux: in("nonesuch"), Name: "a"}, errdefs.IsNotFound, "does not exist"},
		{"missing initrd", rpc.KernelImportParams{Vmlinux: vmlinux, Initrd: in("nonesuch.img"), Name: "a"}, errdefs.IsNotFound, "does not exist"},
		{"empty initrd", rpc.KernelImportParams{Vmlinux: vmlinux, Initrd: empty, Name: "a"}, errdefs.IsInvalidArgument, "is empty"},
		{"taken", rpc.KernelImportParams{Vmlinux: vmlinux, Name: "taken"}, errdefs.IsAlreadyExists, `"taken" is taken`},
		{"bad name", rpc.KernelImportParams{Vmlinux: vmlinux, Name: "../k"}, errdefs.IsInvalidArgument, "invalid name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := e.importKernel(t, tc.p)
			if !tc.is(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("kernel.import = %+v, %v; want an error saying %q", k, err, tc.want)
			}
			e.assertKernels(t, []string{"taken"}, "")
		})
	}
	if _, err := e.importKernel(t, rpc.KernelImportParams{Name: "a"}); rpcCode(err) != rpc.CodeInvalidParams {
		t.Errorf("kernel.import without a vmlinux = %v, want invalid params", err)
	}
}

// impBundle is a gzip tar holding entries.
func impBundle(t *testing.T, entries ...impEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(impTar(t, entries...))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestKernelFetch(t *testing.T) {
	e := impSetup(t)
	vmlinux := impVmlinux(t, e.scratch)
	kernel, err := os.ReadFile(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(e.scratch, "initrd.img")
	impWrite(t, initrd, []byte("an initramfs\n"), 0o644)
	sum := sha256.Sum256(kernel)
	kernelSum := hex.EncodeToString(sum[:])

	files := map[string][]byte{
		"/vmlinux": kernel,
		// Junk first: none of it may be written anywhere.
		"/bundle.tar.gz": impBundle(t,
			impFile("../evil", "evil\n", 0o644),
			impSymlink("vmlinux", "/etc/passwd"),
			impDir("vmlinux", 0o755),
			impHardlink("initrd", "../evil"),
			impFile(strings.Repeat("long-name-", 40), "junk\n", 0o644),
			impFile("boot/vmlinux", string(kernel), 0o644),
			impFile("boot/initrd.img", "an initramfs\n", 0o644),
			impFile("boot/vmlinux", "a second vmlinux is ignored", 0o644),
		),
		"/no-kernel.tar.gz": impBundle(t, impFile("boot/bzImage", "MZ", 0o644), impFile("initrd.img", "x", 0o644)),
		"/garbage":          []byte(strings.Repeat("neither a vmlinux nor a tar\n", 50)),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	fetch := func(p rpc.KernelFetchParams) (rpc.Op, error) {
		_, final, err := e.runOp(t, rpc.MethodKernelFetch, p)
		return final, err
	}
	mustFetch := func(p rpc.KernelFetchParams) rpc.Kernel {
		t.Helper()
		final, err := fetch(p)
		if err != nil || final.State != "succeeded" {
			t.Fatalf("kernel.fetch %+v = %+v, %v; want it to succeed", p, final, err)
		}
		var k rpc.Kernel
		if err := json.Unmarshal(final.Result, &k); err != nil {
			t.Fatal(err)
		}
		return k
	}

	k := mustFetch(rpc.KernelFetchParams{URL: srv.URL + "/vmlinux", Name: "plain", Default: true})
	if k.Version != impKernelVersion || k.HasInitrd || !k.Default || k.Source != srv.URL+"/vmlinux" || k.SizeBytes != int64(len(kernel)) {
		t.Errorf("fetched vmlinux = %+v; want version %s, no initrd, default, source the URL", k, impKernelVersion)
	}
	e.assertKernelFiles(t, k.ID, map[string]string{"vmlinux": vmlinux})

	before := impSnapshot(t, filepath.Dir(e.cfg.Root))
	k = mustFetch(rpc.KernelFetchParams{URL: srv.URL + "/bundle.tar.gz", Name: "bundle"})
	if !k.HasInitrd || k.Default || k.Version != impKernelVersion {
		t.Errorf("fetched bundle = %+v; want an initrd, not default", k)
	}
	e.assertKernelFiles(t, k.ID, map[string]string{"vmlinux": vmlinux, "initrd.img": initrd})
	kdir := filepath.Join(e.cfg.Root, "kernels", k.ID)
	var added []string
	for _, line := range strings.Split(impDiff(before, impSnapshot(t, filepath.Dir(e.cfg.Root))), "\n") {
		added = append(added, strings.SplitN(line, " (", 2)[0])
	}
	if want := []string{"added " + kdir, "added " + kdir + "/initrd.img", "added " + kdir + "/vmlinux"}; !slices.Equal(added, want) {
		t.Errorf("the bundle fetch changed:\n%s\nwant only\n%s", strings.Join(added, "\n"), strings.Join(want, "\n"))
	}

	k = mustFetch(rpc.KernelFetchParams{URL: srv.URL + "/vmlinux", SHA256: strings.ToUpper(kernelSum), Name: "checked"})
	e.assertKernelFiles(t, k.ID, map[string]string{"vmlinux": vmlinux})
	k = mustFetch(rpc.KernelFetchParams{URL: "file://" + vmlinux, SHA256: "sha256:" + kernelSum, Name: "from-file", Default: true})
	if k.Source != "file://"+vmlinux || !k.Default {
		t.Errorf("kernel from a file URL = %+v", k)
	}
	e.assertKernelFiles(t, k.ID, map[string]string{"vmlinux": vmlinux})
	names := []string{"plain", "bundle", "checked", "from-file"}
	e.assertKernels(t, names, "from-file")

	t.Run("failing ops", func(t *testing.T) {
		wrongSum := strings.Repeat("ab", 32)
		for _, tc := range []struct {
			name string
			p    rpc.KernelFetchParams
			want []string
		}{
			{"no vmlinux in the bundle", rpc.KernelFetchParams{URL: srv.URL + "/no-kernel.tar.gz", Name: "x"}, []string{"no file named vmlinux"}},
			{"wrong sha256", rpc.KernelFetchParams{URL: srv.URL + "/vmlinux", SHA256: wrongSum, Name: "x"}, []string{kernelSum, wrongSum}},
			{"not a kernel", rpc.KernelFetchParams{URL: srv.URL + "/garbage", Name: "x"}, []string{"neither a vmlinux nor a tar"}},
			{"http 404", rpc.KernelFetchParams{URL: srv.URL + "/nonesuch", Name: "x"}, []string{"HTTP 404 Not Found"}},
			{"missing file", rpc.KernelFetchParams{URL: "file://" + e.scratch + "/nonesuch", Name: "x"}, []string{"does not exist"}},
		} {
			final, err := fetch(tc.p)
			if err != nil {
				t.Errorf("%s: the call failed (%v); want an op that fails", tc.name, err)
				continue
			}
			if final.State != "failed" {
				t.Errorf("%s: op ended %s, want failed", tc.name, final.State)
			}
			for _, w := range append(tc.want, tc.p.URL) {
				if !strings.Contains(final.Error, w) {
					t.Errorf("%s: op error %q does not say %q", tc.name, final.Error, w)
				}
			}
			e.assertKernels(t, names, "from-file")
		}
	})

	t.Run("refused calls", func(t *testing.T) {
		ops, err := e.c.ListOps(impCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			p    rpc.KernelFetchParams
			is   func(error) bool
			want string
		}{
			{rpc.KernelFetchParams{URL: "ftp://127.0.0.1/vmlinux", Name: "x"}, errdefs.IsInvalidArgument, "want an http, https or file URL"},
			{rpc.KernelFetchParams{URL: "127.0.0.1/vmlinux", Name: "x"}, errdefs.IsInvalidArgument, "want an http, https or file URL"},
			{rpc.KernelFetchParams{URL: vmlinux, Name: "x"}, errdefs.IsInvalidArgument, "want an http, https or file URL"},
			{rpc.KernelFetchParams{URL: "http://[::1", Name: "x"}, errdefs.IsInvalidArgument, "want an http, https or file URL"},
			{rpc.KernelFetchParams{URL: "file://vmlinux", Name: "x"}, errdefs.IsInvalidArgument, "absolute path on this host"},
			{rpc.KernelFetchParams{URL: "file:vmlinux", Name: "x"}, errdefs.IsInvalidArgument, "absolute path on this host"},
			{rpc.KernelFetchParams{URL: "file://elsewhere" + vmlinux, Name: "x"}, errdefs.IsInvalidArgument, "absolute path on this host"},
			{rpc.KernelFetchParams{URL: srv.URL + "/vmlinux", SHA256: "abc", Name: "x"}, errdefs.IsInvalidArgument, "not 64 hex digits"},
			{rpc.KernelFetchParams{URL: srv.URL + "/vmlinux", Name: "plain"}, errdefs.IsAlreadyExists, `"plain" is taken`},
			{rpc.KernelFetchParams{URL: srv.URL + "/vmlinux", Name: "bad name"}, errdefs.IsInvalidArgument, "invalid name"},
		} {
			_, _, err := e.runOp(t, rpc.MethodKernelFetch, tc.p)
			if !tc.is(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("kernel.fetch %+v = %v; want an error at the call saying %q", tc.p, err, tc.want)
			}
		}
		if _, _, err := e.runOp(t, rpc.MethodKernelFetch, rpc.KernelFetchParams{Name: "x"}); rpcCode(err) != rpc.CodeInvalidParams {
			t.Errorf("kernel.fetch without a URL = %v, want invalid params", err)
		}
		after, err := e.c.ListOps(impCtx(t))
		if err != nil || len(after) != len(ops) {
			t.Errorf("refused calls started operations: %d before, %d after (%v)", len(ops), len(after), err)
		}
		e.assertKernels(t, names, "from-file")
	})
}
