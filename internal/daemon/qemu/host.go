package qemu

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// HostTSCkHz returns the host's TSC frequency in kHz, for a TCG guest's
// tsc_early_khz=. It prefers the kernel's own measurement in the kernel
// log ("tsc: Refined TSC clocksource calibration: N MHz", else "tsc:
// Detected N MHz") over /proc/cpuinfo's "cpu MHz", which may be a scaled
// current clock. The value is read once per process.
func HostTSCkHz() (int64, error) {
	return hostTSC()
}

var hostTSC = sync.OnceValues(func() (int64, error) {
	if khz := tscFromKernelLog(readKernelLog()); khz > 0 {
		return khz, nil
	}
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0, fmt.Errorf("host TSC frequency: no tsc: line in the kernel log and %w: %w", err, errdefs.ErrUnavailable)
	}
	if khz := tscFromCPUInfo(data); khz > 0 {
		return khz, nil
	}
	return 0, fmt.Errorf("host TSC frequency: no tsc: line in the kernel log and no cpu MHz in /proc/cpuinfo: %w", errdefs.ErrUnavailable)
})

// readKernelLog returns the records /dev/kmsg still holds, or nil. The fd
// is a raw non-blocking one: a blocking read waits for new records at the
// end of the log, and through os.File Go's poller would do the same.
func readKernelLog() [][]byte {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var records [][]byte
	buf := make([]byte, 8192) // a record is at most ~1 KiB
	for range 1 << 20 {       // a bound, should the log grow as fast as we read
		n, err := unix.Read(fd, buf)
		if err == unix.EPIPE || err == unix.EINTR {
			continue // records were overwritten while reading: go on from the next
		}
		if err != nil || n <= 0 {
			break // EAGAIN: the end of the log
		}
		records = append(records, bytes.Clone(buf[:n]))
	}
	return records
}

var tscLine = regexp.MustCompile(`tsc: (Refined TSC clocksource calibration: |Detected )([0-9.]+) MHz`)

// tscFromKernelLog finds the TSC frequency in kernel log records: the
// refined calibration when present, else the detected one; 0 when neither.
func tscFromKernelLog(records [][]byte) int64 {
	var detected, refined int64
	for _, r := range records {
		m := tscLine.FindSubmatch(r)
		if m == nil {
			continue
		}
		khz := mhzToKHz(string(m[2]))
		if strings.HasPrefix(string(m[1]), "Detected") {
			detected = khz
		} else {
			refined = khz
		}
	}
	if refined > 0 {
		return refined
	}
	return detected
}

var cpuMHzLine = regexp.MustCompile(`(?m)^cpu MHz\s*:\s*([0-9.]+)`)

// tscFromCPUInfo reads the first "cpu MHz" of /proc/cpuinfo; 0 if none.
func tscFromCPUInfo(cpuinfo []byte) int64 {
	m := cpuMHzLine.FindSubmatch(cpuinfo)
	if m == nil {
		return 0
	}
	return mhzToKHz(string(m[1]))
}

func mhzToKHz(s string) int64 {
	mhz, err := strconv.ParseFloat(s, 64)
	if err != nil || mhz <= 0 || mhz > 1e6 {
		return 0
	}
	return int64(math.Round(mhz * 1000))
}

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// KVMUsable reports whether QEMU can run stock kernels under KVM here:
// /dev/kvm opens, speaks API version 12 and creates a VM, and the CPU has
// hardware virtualization (vmx or svm). The last rules out PVM, whose
// /dev/kvm works but runs only kernels built as PVM guests. It does not
// run a vCPU; `banger doctor` does that.
func KVMUsable() bool {
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !hasVirtFlag(cpuinfo) {
		return false
	}
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion); err != nil || v != kvmAPIVersion {
		return false
	}
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		return false
	}
	unix.Close(vm)
	return true
}

// hasVirtFlag reports whether /proc/cpuinfo's first flags line has vmx or
// svm.
func hasVirtFlag(cpuinfo []byte) bool {
	for line := range strings.Lines(string(cpuinfo)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
		return false
	}
	return false
}
