package kernelboot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// marker is what the guest init prints when all its checks passed.
	marker = "BANGER-KERNELBOOT-OK"
	// failMarker is what it prints when one failed.
	failMarker = "BANGER-KERNELBOOT-FAIL"
)

// guestInitSource is the guest's /sbin/init: it checks it runs as PID 1 with
// /dev/vda mounted as /, prints the marker with the kernel release and the
// root fs type on the console and powers the VM off.
const guestInitSource = `package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	release, fstype, err := check()
	if err != nil {
		fmt.Printf("\n` + failMarker + ` %v\n", err)
	} else {
		fmt.Printf("\n` + marker + ` %s %s\n", release, fstype)
	}
	unix.Sync()
	err = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Printf("` + failMarker + ` reboot(POWER_OFF): %v\n", err)
	os.Exit(1)
}

func check() (release, fstype string, err error) {
	if pid := os.Getpid(); pid != 1 {
		return "", "", fmt.Errorf("running as PID %d, not 1", pid)
	}
	if _, err := os.Stat("/proc/self/mounts"); err != nil {
		if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
			return "", "", fmt.Errorf("mount /proc: %v", err)
		}
	}
	if _, err := os.Stat("/dev/vda"); err != nil {
		if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
			return "", "", fmt.Errorf("mount /dev: %v", err)
		}
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "", "", err
	}
	release = unix.ByteSliceToString(uts.Release[:])

	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	var dev string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[1] == "/" {
			dev, fstype = fields[0], fields[2] // the last mount on / is the visible one
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if dev != "/dev/vda" {
		return "", "", fmt.Errorf("/ is %q (%s), not /dev/vda", dev, fstype)
	}
	var root, vda unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		return "", "", err
	}
	if err := unix.Stat("/dev/vda", &vda); err != nil {
		return "", "", err
	}
	if vda.Mode&unix.S_IFMT != unix.S_IFBLK || vda.Rdev != root.Dev {
		return "", "", errors.New("/dev/vda is not the device that holds /")
	}
	return release, fstype, nil
}
`

// bootResult is what one QEMU run gave.
type bootResult struct {
	exitErr  error         // QEMU's exit (nil: status 0)
	timedOut bool          // killed after the timeout
	toMarker time.Duration // QEMU start to the marker on the console (0: never)
	toExit   time.Duration // QEMU start to QEMU's exit
	serial   string        // the console log
	stderr   string        // QEMU's own output
}

// bootQEMU boots kernel dir + img under QEMU's microvm machine and waits for
// QEMU to exit, killing it (by PID) after timeout. The console log is
// polled to time the marker.
func bootQEMU(t testing.TB, qemu, kdir, img, cmdline, serialLog string, timeout time.Duration) bootResult {
	t.Helper()
	args := []string{
		"-M", "microvm,x-option-roms=off,isa-serial=on",
		"-accel", "tcg,thread=multi",
		"-cpu", "max", "-smp", "2", "-m", "256M",
		"-nodefaults", "-no-user-config", "-nographic", "-monitor", "none", "-no-reboot",
		"-kernel", filepath.Join(kdir, "vmlinux"),
		"-initrd", filepath.Join(kdir, "initrd"),
		"-append", cmdline,
		"-drive", "id=root,if=none,format=raw,file=" + img,
		"-device", "virtio-blk-device,drive=root",
		"-serial", "file:" + serialLog,
	}
	cmd := exec.Command(qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// QEMU dies with the test process, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
	})

	var res bootResult
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	checkMarker := func() {
		if res.toMarker == 0 {
			if data, err := os.ReadFile(serialLog); err == nil && bytes.Contains(data, []byte(marker)) {
				res.toMarker = time.Since(start)
			}
		}
	}
loop:
	for {
		select {
		case err := <-done:
			exited = true
			res.exitErr = err
			res.toExit = time.Since(start)
			break loop
		case <-poll.C:
			checkMarker()
		case <-deadline.C:
			res.timedOut = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
			res.exitErr = <-done
			exited = true
			res.toExit = time.Since(start)
			break loop
		}
	}
	checkMarker()
	if data, err := os.ReadFile(serialLog); err == nil {
		res.serial = string(data)
	}
	res.stderr = stderr.String()
	return res
}

// cpioEntry is one member of a newc ("070701") cpio archive.
type cpioEntry struct {
	name string
	mode uint32
	data []byte
}

// readCpio parses a newc cpio archive up to its TRAILER!!! entry.
func readCpio(r io.Reader) ([]cpioEntry, error) {
	br := bufio.NewReader(r)
	var entries []cpioEntry
	var off int64
	skip := func(n int64) error {
		if pad := (4 - n%4) % 4; pad > 0 {
			if _, err := io.CopyN(io.Discard, br, pad); err != nil {
				return err
			}
			off += pad
		}
		return nil
	}
	for {
		var hdr [110]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("cpio header at %d: %w", off, err)
		}
		off += 110
		if string(hdr[:6]) != "070701" {
			return nil, fmt.Errorf("cpio header at %d: magic %q, want 070701 (newc)", off-110, hdr[:6])
		}
		field := func(i int) (uint32, error) {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			return uint32(v), err
		}
		mode, err1 := field(1)
		size, err2 := field(6)
		namesize, err3 := field(11)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("cpio header at %d: %w", off-110, err)
		}
		name := make([]byte, namesize)
		if _, err := io.ReadFull(br, name); err != nil {
			return nil, err
		}
		off += int64(namesize)
		if err := skip(110 + int64(namesize)); err != nil {
			return nil, err
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, err
		}
		off += int64(size)
		if err := skip(int64(size)); err != nil {
			return nil, err
		}
		n := strings.TrimRight(string(name), "\x00")
		if n == "TRAILER!!!" {
			return entries, nil
		}
		entries = append(entries, cpioEntry{name: strings.TrimPrefix(n, "./"), mode: mode, data: data})
	}
}
