package hostcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const kvmDevice = "/dev/kvm"

const tcgFallback = "banger falls back to QEMU under TCG (software emulation, slow)"

// checkKVM says whether guests can run under KVM. Only running a vCPU
// tells the truth: /dev/kvm can exist and open on a host whose CPU has no
// VT-x/AMD-V.
func (p *prober) checkKVM() *finding {
	vendor, virt := p.cpuVirt()
	if _, err := p.host.Stat(kvmDevice); err != nil {
		f := unusable(CheckKVM, StatusWarn, "/dev/kvm "+notThere(err)+"; "+tcgFallback, kvmFix(vendor, virt, true))
		f.reason = "/dev/kvm " + notThere(err)
		return f
	}
	if err := p.host.ProbeKVM(kvmDevice); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			f := unusable(CheckKVM, StatusWarn, "cannot open /dev/kvm: permission denied, so whether KVM works is unknown", rootFix)
			f.reason = "/dev/kvm not accessible (permission denied)"
			return f
		}
		f := unusable(CheckKVM, StatusWarn, "/dev/kvm exists but is not usable ("+err.Error()+"); "+tcgFallback, kvmFix(vendor, virt, false))
		f.reason = "/dev/kvm not usable (" + err.Error() + ")"
		return f
	}
	if virt == "" && p.exists("/sys/module/kvm_pvm") {
		f := unusable(CheckKVM, StatusWarn,
			"/dev/kvm is PVM (module kvm_pvm; the CPU has no vmx/svm flag): a test vCPU ran, but PVM runs only guest kernels built with CONFIG_PVM_GUEST and banger boots stock kernels; "+tcgFallback,
			kvmFix(vendor, virt, false))
		f.reason = "/dev/kvm is PVM, which runs only CONFIG_PVM_GUEST kernels"
		return f
	}
	how := "hardware virtualization"
	if virt != "" {
		how = virt
	}
	return ok(CheckKVM, "/dev/kvm works: API version 12, a test vCPU ran to HLT ("+how+")")
}

// kvmFix says how to get a working /dev/kvm.
func kvmFix(vendor, virt string, missing bool) string {
	module := "kvm_intel (Intel) or kvm_amd (AMD)"
	switch vendor {
	case "GenuineIntel":
		module = "kvm_intel"
	case "AuthenticAMD":
		module = "kvm_amd"
	}
	if virt == "" {
		return "optional, for speed: the CPU shows no vmx/svm flag; enable VT-x/AMD-V in the firmware or, on a cloud VM, choose an instance type with nested virtualization, then `modprobe " + module + "`"
	}
	if missing {
		return "optional, for speed: `modprobe " + module + "` (it creates /dev/kvm)"
	}
	return "optional, for speed: see `dmesg | grep -i kvm`; VT-x/AMD-V may be disabled in the firmware"
}

// cpuVirt reads the CPU vendor and its virtualization flag ("vmx", "svm"
// or "") from /proc/cpuinfo.
func (p *prober) cpuVirt() (vendor, virt string) {
	b, err := p.host.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "", ""
	}
	for line := range strings.Lines(string(b)) {
		key, val, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		switch strings.TrimSpace(key) {
		case "vendor_id":
			if vendor == "" {
				vendor = strings.TrimSpace(val)
			}
		case "flags":
			for _, f := range strings.Fields(val) {
				if f == "vmx" || f == "svm" {
					return vendor, f
				}
			}
			return vendor, ""
		}
	}
	return vendor, ""
}

// KVM ioctl numbers (linux/kvm.h) and the sizes of the structures they take.
const (
	kvmGetAPIVersion           = 0xAE00
	kvmCreateVM                = 0xAE01
	kvmGetVCPUMmapSize         = 0xAE04
	kvmCreateVCPU              = 0xAE41
	kvmSetUserMemRegion        = 0x4020AE46 // _IOW(0xAE, 0x46, 32-byte kvm_userspace_memory_region)
	kvmRun                     = 0xAE80
	kvmSetRegs                 = 0x4090AE82 // _IOW(0xAE, 0x82, 144-byte kvm_regs)
	kvmGetSregs                = 0x8138AE83 // _IOR(0xAE, 0x83, 312-byte kvm_sregs)
	kvmSetSregs                = 0x4138AE84 // _IOW(0xAE, 0x84, kvm_sregs)
	kvmAPIVersion              = 12
	kvmExitHLT                 = 5
	probeGuestAddr      uint64 = 0x1000
)

// probeKVM creates a VM with one page of memory holding a HLT instruction,
// runs one real-mode vCPU from it and expects a KVM_EXIT_HLT. Everything
// is closed and unmapped before it returns.
func probeKVM(dev string) (err error) {
	// vCPU ioctls belong to the thread that created the vCPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	kvm, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dev, Err: err}
	}
	defer unix.Close(kvm)
	v, err := ioctl(kvm, kvmGetAPIVersion, 0)
	if err != nil {
		return fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("KVM_GET_API_VERSION returned %d, want %d", v, kvmAPIVersion)
	}
	vm, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	defer unix.Close(int(vm))

	mem, err := unix.Mmap(-1, 0, 0x1000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	mem[0] = 0xf4       // hlt
	var region [32]byte // kvm_userspace_memory_region: slot, flags, guest_phys_addr, memory_size, userspace_addr
	binary.NativeEndian.PutUint64(region[8:], probeGuestAddr)
	binary.NativeEndian.PutUint64(region[16:], uint64(len(mem)))
	binary.NativeEndian.PutUint64(region[24:], uint64(uintptr(unsafe.Pointer(&mem[0]))))
	if _, err := ioctlPtr(int(vm), kvmSetUserMemRegion, unsafe.Pointer(&region)); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	vcpu, err := ioctl(int(vm), kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer unix.Close(int(vcpu))
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	run, err := unix.Mmap(int(vcpu), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap kvm_run: %w", err)
	}
	defer unix.Munmap(run)

	// Real mode with CS base 0, so RIP is the guest physical address.
	var sregs [312]byte
	if _, err := ioctlPtr(int(vcpu), kvmGetSregs, unsafe.Pointer(&sregs)); err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	binary.NativeEndian.PutUint64(sregs[0:], 0)  // cs.base
	binary.NativeEndian.PutUint16(sregs[12:], 0) // cs.selector
	if _, err := ioctlPtr(int(vcpu), kvmSetSregs, unsafe.Pointer(&sregs)); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	var regs [144]byte // kvm_regs: 16 GPRs, rip, rflags
	binary.NativeEndian.PutUint64(regs[128:], probeGuestAddr)
	binary.NativeEndian.PutUint64(regs[136:], 2) // rflags: the reserved bit 1
	if _, err := ioctlPtr(int(vcpu), kvmSetRegs, unsafe.Pointer(&regs)); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}

	// The Go runtime's signals interrupt KVM_RUN with EINTR; retry until
	// the guest halts or the deadline passes.
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := ioctl(int(vcpu), kvmRun, 0)
		if err == nil {
			break
		}
		if err != unix.EINTR || time.Now().After(deadline) {
			return fmt.Errorf("KVM_RUN: %w", err)
		}
	}
	if reason := binary.NativeEndian.Uint32(run[8:]); reason != kvmExitHLT {
		return fmt.Errorf("KVM_RUN: exit reason %d, want %d (KVM_EXIT_HLT)", reason, kvmExitHLT)
	}
	return nil
}

func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}
