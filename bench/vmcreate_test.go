package bench

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon/qemu"
	"banger/internal/testing/guestkernel"
)

// BenchmarkVMCreate measures `banger create` on this host (TCG here) and
// splits it: the daemon's own work (prepare + finish, from its "vm
// created" log line), the VMM's start, the guest's boot to its init
// announcing SSH, the init's own time from exec to SSH listening (the
// BANGER-READY line it prints), and the SSH handshake. Baseline in the same
// run: the same kernel and image booted by plain QEMU to a shell script
// that prints a marker (no banger, no network, no SSH). Also: the daemon's
// memory per running VM (its RSS growth over 3 running VMs).
func BenchmarkVMCreate(b *testing.B) {
	// The baseline's guest powers off after the marker.
	d, kdir := busyboxDaemon(b, "exec poweroff -f")

	var total, daemon, vmmStart, guestBoot, ssh, initMS, listenMS, baseline time.Duration
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("b%d", i)
		start := time.Now()
		d.ok("create", "--image", "busybox", "--name", name)
		total += time.Since(start)
		line := d.lastLogLine(`msg="vm created" vm=` + name)
		daemon += logDur(b, line, "prepare") + logDur(b, line, "finish")
		vmmStart += logDur(b, line, "vmm_start")
		guestBoot += logDur(b, line, "guest_boot")
		ssh += logDur(b, line, "ssh")
		ready, listen := d.initReady(name)
		initMS += ready
		listenMS += listen
		d.ok("rm", "--force", name)
		baseline += plainQEMUBoot(b, kdir, d.imagePath("busybox"))
	}
	n := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64(d/n) / float64(time.Millisecond) }
	b.ReportMetric(ms(total), "create-ms")
	b.ReportMetric(ms(daemon), "daemon-own-ms")
	b.ReportMetric(ms(vmmStart), "vmm-start-ms")
	b.ReportMetric(ms(guestBoot), "guest-boot-ms")
	b.ReportMetric(ms(initMS), "init-to-ready-ms")
	b.ReportMetric(ms(listenMS), "init-to-listen-ms")
	b.ReportMetric(ms(ssh), "ssh-handshake-ms")
	b.ReportMetric(ms(baseline), "plain-qemu-boot-ms")
	b.ReportMetric(float64(total)/float64(baseline), "create/plain-boot")

	// Daemon memory per running VM.
	before := rssBytes(b, d.daemon.Process.Pid)
	for i := 0; i < 3; i++ {
		d.ok("create", "--image", "busybox", "--name", fmt.Sprintf("m%d", i))
	}
	after := rssBytes(b, d.daemon.Process.Pid)
	b.ReportMetric(float64(after-before)/3/(1<<10), "daemon-KiB-per-vm")
}

type netnsDaemon struct {
	b      *testing.B
	bin    string
	dir    string
	netns  string
	args   []string
	daemon *exec.Cmd
	log    *bytes.Buffer
}

func startNetnsDaemon(b *testing.B, bin string) *netnsDaemon {
	dir, err := os.MkdirTemp("", "bgv")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	r := make([]byte, 4)
	rand.Read(r)
	d := &netnsDaemon{b: b, bin: bin, dir: dir, netns: "bgv-" + hex.EncodeToString(r), log: &bytes.Buffer{}}
	cfg := fmt.Sprintf("group = \"root\"\nnetns = %q\ndns_upstreams = [\"127.0.0.1:53\"]\ntap_pool_size = 2\nvm_vcpus = 2\nvm_memory_mib = 256\nimage_headroom_mib = 32\n", d.netns)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	d.args = []string{"--root", filepath.Join(dir, "root"), "--socket", filepath.Join(dir, "s.sock"), "--config", filepath.Join(dir, "config.toml")}
	d.daemon = exec.Command(bin, append([]string{"daemon"}, d.args...)...)
	d.daemon.Stderr = d.log
	if err := d.daemon.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.stop)
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command(bin, append(append([]string{}, d.args...), "ls")...).Run() != nil {
		if time.Now().After(deadline) {
			b.Fatal("daemon did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

func (d *netnsDaemon) ok(args ...string) string {
	d.b.Helper()
	out, err := exec.Command(d.bin, append(append([]string{}, d.args...), args...)...).CombinedOutput()
	if err != nil {
		d.b.Fatalf("banger %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (d *netnsDaemon) stop() {
	exec.Command(d.bin, append(append([]string{}, d.args...), "rm", "--force", "m0", "m1", "m2")...).Run()
	d.daemon.Process.Signal(syscall.SIGTERM)
	d.daemon.Wait()
	exec.Command("ip", "netns", "delete", d.netns).Run()
	os.RemoveAll(d.dir)
}

func (d *netnsDaemon) lastLogLine(substr string) string {
	var last string
	sc := bufio.NewScanner(bytes.NewReader(d.log.Bytes()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			last = sc.Text()
		}
	}
	if last == "" {
		d.b.Fatalf("no daemon log line with %q", substr)
	}
	return last
}

// initReady reads the guest init's own times from the BANGER-READY line on
// the VM's console: exec to ready (SSH listening and the NIC up) and exec
// to SSH listening.
func (d *netnsDaemon) initReady(name string) (ready, listen time.Duration) {
	d.b.Helper()
	var id string
	for _, line := range strings.Split(d.ok("show", name), "\n") {
		if v, ok := strings.CutPrefix(line, "ID:"); ok {
			id = strings.TrimSpace(v)
		}
	}
	console, err := os.ReadFile(filepath.Join(d.dir, "root", "vms", id, "console.log"))
	if err != nil {
		d.b.Fatal(err)
	}
	m := regexp.MustCompile(`BANGER-READY (\d+) listen=(\d+)`).FindSubmatch(console)
	if m == nil {
		d.b.Fatalf("no BANGER-READY on %s's console", name)
	}
	r, _ := strconv.Atoi(string(m[1]))
	l, _ := strconv.Atoi(string(m[2]))
	return time.Duration(r) * time.Millisecond, time.Duration(l) * time.Millisecond
}

func (d *netnsDaemon) imagePath(name string) string {
	for _, line := range strings.Split(d.ok("image", "show", name), "\n") {
		if v, ok := strings.CutPrefix(line, "Path:"); ok {
			return strings.TrimSpace(v)
		}
	}
	d.b.Fatalf("image %s has no path", name)
	return ""
}

func logDur(b *testing.B, line, key string) time.Duration {
	m := regexp.MustCompile(key + `=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		b.Fatalf("no %s in %q", key, line)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		b.Fatalf("%s=%s: %v", key, m[1], err)
	}
	return d
}

// plainQEMUBoot boots kernel + image with plain QEMU (a copy of the disk,
// no NIC) to a script that prints a marker, and returns the time from
// spawn to the marker.
func plainQEMUBoot(b *testing.B, kdir, image string) time.Duration {
	b.Helper()
	cmd, took := plainQEMUStart(b, b.TempDir(), kdir, image, "/bench-init")
	cmd.Process.Kill()
	cmd.Wait()
	return took
}

// plainQEMUStart boots kernel + image (copied into dir) with plain QEMU to
// the script init, which prints a marker, and returns QEMU still running
// (the caller kills it; a failed benchmark's cleanup does too) and the time
// from spawn to the marker.
func plainQEMUStart(b *testing.B, dir, kdir, image, init string) (*exec.Cmd, time.Duration) {
	b.Helper()
	disk := filepath.Join(dir, "disk.ext4")
	if _, err := os.Stat(disk); err != nil { // a second boot in dir keeps the disk
		if out, err := exec.Command("cp", "--sparse=always", image, disk).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v\n%s", err, out)
		}
	}
	os.Chmod(disk, 0o644)
	tsc, err := qemu.HostTSCkHz()
	if err != nil {
		b.Fatal(err)
	}
	console := filepath.Join(dir, "console.log")
	cfg := qemu.Config{
		ID: "bench", Kernel: filepath.Join(kdir, "vmlinux"), Initrd: filepath.Join(kdir, "initrd"),
		Cmdline: qemu.BaseCmdline() + " root=/dev/vda rw init=" + init,
		Disks:   []qemu.Disk{{Path: disk}},
		VCPUs:   2, MemoryMiB: 256, Accel: qemu.AccelTCG, TSCkHz: tsc,
		ConsoleLog: console, QMPSocket: filepath.Join(dir, "qmp.sock"),
	}
	argv, err := qemu.Argv(cfg)
	if err != nil {
		b.Fatal(err)
	}
	os.Remove(console)
	os.Remove(cfg.QMPSocket)
	start := time.Now()
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	for time.Since(start) < 120*time.Second {
		if data, _ := os.ReadFile(console); bytes.Contains(data, []byte("BENCH-READY")) {
			return cmd, time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("plain QEMU boot did not reach the marker in 120s")
	return nil, 0
}

func rssBytes(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(data)
	if m == nil {
		b.Fatal("no VmRSS")
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// busyboxDaemon starts a daemon whose VM network lives in a namespace of
// its own, with the guest kernel imported as the default and a busybox
// image (scripts/base-image.sh) named busybox whose /bench-init, the plain
// QEMU baseline's init, prints BENCH-READY and then runs then. It skips
// without root or QEMU.
func busyboxDaemon(b *testing.B, then string) (*netnsDaemon, string) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: network namespace, TAPs, the daemon")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Skip("qemu-system-x86_64 not installed")
	}
	bin := bangerBinary(b)
	kdir := guestkernel.Dir(b)
	d := startNetnsDaemon(b, bin)
	d.ok("kernel", "import", filepath.Join(kdir, "vmlinux"), "--initrd", filepath.Join(kdir, "initrd"), "--name", "k", "--default")
	tree := filepath.Join(d.dir, "tree")
	if out, err := exec.Command("bash", filepath.Join(guestkernel.RepoRoot(b), "scripts", "base-image.sh"), tree).CombinedOutput(); err != nil {
		b.Fatalf("base-image.sh: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(tree, "bench-init"), []byte("#!/bin/sh\necho BENCH-READY\n"+then+"\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	d.ok("image", "import", tree, "--name", "busybox")
	return d, kdir
}
