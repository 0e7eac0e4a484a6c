package kernelboot

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"banger/internal/daemon/qemu"
	"banger/internal/testing/guestboot"
	"banger/internal/testing/guestkernel"
)

// bootTimeout bounds one boot; TCG on a loaded host is slow, an idle one
// boots in about 2 s.
const bootTimeout = 120 * time.Second

// TestBootQEMUMicrovm builds (or reuses) the guest kernel and initrd, makes
// a raw ext4 root disk whose /sbin/init is a small Go program, boots it
// under QEMU's microvm machine and checks the guest init's report.
func TestBootQEMUMicrovm(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the QEMU boot in -short mode")
	}
	if uid := os.Getuid(); uid != 0 {
		guestboot.SkipOrFail(t, "the QEMU boot", fmt.Sprintf("needs root (building the kernel runs apt-get; uid is %d)", uid))
	}
	qemuBin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		guestboot.SkipOrFail(t, "the QEMU boot", "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		guestboot.SkipOrFail(t, "the QEMU boot", "mkfs.ext4 is not installed (Debian package e2fsprogs)")
	}
	if v, err := exec.Command(qemuBin, "--version").Output(); err == nil {
		t.Logf("qemu: %s (%s)", qemuBin, strings.SplitN(string(v), "\n", 2)[0])
	}

	kdir := guestkernel.Dir(t)
	t.Logf("kernel: using %s", kdir)
	info := guestkernel.Info(t, kdir)
	t.Logf("kernel: %s from %s %s", info["kernel_version"], info["package"], info["package_version"])

	work := t.TempDir()
	img := guestboot.RootImage(t, work, guestInitSource, map[string]string{"etc/hostname": "kernelboot\n"})

	cmdline := "console=ttyS0 root=/dev/vda rw init=/sbin/init panic=-1 quiet"
	if khz, err := qemu.HostTSCkHz(); err == nil {
		cmdline += fmt.Sprintf(" tsc_early_khz=%d", khz)
		t.Logf("tsc_early_khz=%d (from qemu.HostTSCkHz)", khz)
	} else {
		t.Logf("warning: %v; booting without tsc_early_khz (may hang on a busy host)", err)
	}
	timeout := bootTimeout
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - 10*time.Second; left < timeout {
			timeout = left
		}
	}

	serial := filepath.Join(work, "serial.log")
	res := bootQEMU(t, qemuBin, kdir, img, cmdline, serial, timeout)
	diag := fmt.Sprintf("accel tcg, cmdline %q\n--- QEMU output:\n%s\n--- serial console (last 40 lines):\n%s",
		cmdline, strings.TrimSpace(res.stderr), guestboot.LastLines(res.serial, 40))
	if res.timedOut {
		t.Fatalf("QEMU did not exit within %v; killed it\n%s", timeout, diag)
	}
	if res.exitErr != nil {
		t.Fatalf("QEMU exited with %v, want status 0\n%s", res.exitErr, diag)
	}
	if m := regexp.MustCompile(failMarker + ` (.*)`).FindStringSubmatch(res.serial); m != nil {
		t.Fatalf("the guest init reported: %s\n%s", m[1], diag)
	}
	m := regexp.MustCompile(marker + ` (\S+) (\S+)`).FindStringSubmatch(res.serial)
	if m == nil {
		t.Fatalf("no %s line on the serial console\n%s", marker, diag)
	}
	if m[2] != "ext4" {
		t.Errorf("root fs type is %q, want ext4\n%s", m[2], diag)
	}
	if want := info["kernel_version"]; m[1] != want {
		t.Errorf("guest runs kernel %q, kernel.txt says %q", m[1], want)
	}
	t.Logf("booted: %s %s %s; QEMU start -> marker %v, -> QEMU exit %v",
		marker, m[1], m[2], res.toMarker.Round(time.Millisecond), res.toExit.Round(time.Millisecond))
}

// TestKernelArtifacts checks the built files without booting: vmlinux is an
// x86-64 ELF executable with the PVH entry note QEMU boots through, and
// initrd is a gzip'd newc cpio with /init, busybox, /dev/console and the
// virtio_blk module of the kernel's version. It needs no QEMU and no root,
// only a built kernel (BANGER_TEST_KERNEL_DIR or the cache the boot test
// fills); it skips without one.
func TestKernelArtifacts(t *testing.T) {
	kdir := guestkernel.Existing(t)
	if kdir == "" {
		t.Skipf("no built kernel: set BANGER_TEST_KERNEL_DIR or run the boot test as root to fill %s", guestkernel.CacheDir(t))
	}
	info := guestkernel.Info(t, kdir)
	kver := info["kernel_version"]
	if kver == "" || info["package"] == "" || info["package_version"] == "" {
		t.Errorf("kernel.txt lacks kernel_version, package or package_version: %v", info)
	}

	f, err := elf.Open(filepath.Join(kdir, "vmlinux"))
	if err != nil {
		t.Fatalf("vmlinux is not an ELF file: %v", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Errorf("vmlinux is %v %v %v, want ELFCLASS64 EM_X86_64 ET_EXEC", f.Class, f.Machine, f.Type)
	}
	if !hasPVHNote(t, f) {
		t.Errorf("vmlinux has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): QEMU cannot boot it as an ELF")
	}

	raw, err := os.ReadFile(filepath.Join(kdir, "initrd"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("initrd is not gzip: %v", err)
	}
	entries, err := readCpio(zr)
	if err != nil {
		t.Fatalf("initrd is not a newc cpio: %v", err)
	}
	byName := map[string]cpioEntry{}
	for _, e := range entries {
		byName[e.name] = e
	}
	const (
		sIFMT  = 0o170000
		sIFREG = 0o100000
		sIFCHR = 0o020000
	)
	initEntry, ok := byName["init"]
	switch {
	case !ok:
		t.Errorf("initrd has no /init")
	case initEntry.mode&sIFMT != sIFREG || initEntry.mode&0o111 == 0:
		t.Errorf("/init has mode %o, want an executable regular file", initEntry.mode)
	case !bytes.HasPrefix(initEntry.data, []byte("#!/bin/sh\n")):
		t.Errorf("/init does not start with #!/bin/sh")
	}
	if bb, ok := byName["bin/busybox"]; !ok || !bytes.HasPrefix(bb.data, []byte("\x7fELF")) {
		t.Errorf("initrd has no /bin/busybox ELF")
	}
	if c, ok := byName["dev/console"]; !ok || c.mode&sIFMT != sIFCHR {
		t.Errorf("initrd has no /dev/console character device (the kernel needs it to give /init a console)")
	}
	var blk string
	for name := range byName {
		if strings.HasSuffix(name, "/virtio_blk.ko") {
			blk = name
		}
	}
	if blk == "" {
		t.Fatalf("initrd has no virtio_blk.ko")
	}
	if want := "lib/modules/" + kver + "/"; !strings.HasPrefix(blk, want) {
		t.Errorf("virtio_blk.ko is at %s, want it under %s", blk, want)
	}
	if order, ok := byName["lib/modules/load-order"]; !ok || !strings.Contains(string(order.data), "/virtio_blk.ko") {
		t.Errorf("lib/modules/load-order does not load virtio_blk.ko")
	}
	t.Logf("kernel %s: vmlinux %d bytes, initrd %d bytes gzip, %d cpio entries",
		kver, fileSize(t, filepath.Join(kdir, "vmlinux")), len(raw), len(entries))
}

// hasPVHNote reports whether f has a "Xen" ELF note of type 18
// (XEN_ELFNOTE_PHYS32_ENTRY), the entry QEMU uses for an ELF kernel.
func hasPVHNote(t *testing.T, f *elf.File) bool {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			t.Fatalf("reading vmlinux's notes: %v", err)
		}
		for len(data) >= 12 {
			namesz := binary.LittleEndian.Uint32(data[0:])
			descsz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + int(namesz+3)&^3
			end := nameEnd + int(descsz+3)&^3
			if end > len(data) {
				break
			}
			if typ == 18 && string(bytes.TrimRight(data[12:12+namesz], "\x00")) == "Xen" {
				return true
			}
			data = data[end:]
		}
	}
	return false
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
