package qemu

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"banger/internal/errdefs"
)

func TestTSCFromKernelLog(t *testing.T) {
	rec := func(s ...string) [][]byte {
		var out [][]byte
		for _, r := range s {
			out = append(out, []byte(r))
		}
		return out
	}
	tests := []struct {
		name    string
		records [][]byte
		want    int64
	}{
		{"detected only", rec("6,123,0,-;tsc: Detected 2299.998 MHz processor"), 2299998},
		{"refined wins, whatever the order", rec(
			"6,200,5,-;clocksource: Switched to clocksource tsc",
			"6,201,5,-;tsc: Refined TSC clocksource calibration: 2300.002 MHz",
			"6,100,0,-;tsc: Detected 2299.998 MHz processor",
		), 2300002},
		{"fast calibration line", rec("6,1,0,-;tsc: Detected 3000.000 MHz TSC"), 3000000},
		{"none", rec("6,1,0,-;Linux version 6.1", "garbage"), 0},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tscFromKernelLog(tt.records); got != tt.want {
				t.Errorf("tscFromKernelLog = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTSCFromCPUInfo(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu MHz\t\t: 2300.000\ncache size\t: 512 KB\nprocessor\t: 1\ncpu MHz\t\t: 1500.000\n", 2300000},
		{"processor\t: 0\ncpu MHz\t\t: 2399.9995\n", 2400000},
		{"processor\t: 0\nBogoMIPS\t: 48.00\n", 0}, // arm64 has no cpu MHz
		{"cpu MHz\t\t: 0.000\n", 0},
	}
	for _, tt := range tests {
		if got := tscFromCPUInfo([]byte(tt.in)); got != tt.want {
			t.Errorf("tscFromCPUInfo(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestHasVirtFlag(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"vendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse\n", true},
		{"vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm sse\n", true},
		{"vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse hypervisor\n", false},
		{"flags\t\t: fpu\nflags\t\t: vmx\n", false}, // only the first CPU's line counts
		{"", false},
	}
	for _, tt := range tests {
		if got := hasVirtFlag([]byte(tt.in)); got != tt.want {
			t.Errorf("hasVirtFlag(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestHostTSCkHz reads this host's value. Reading /dev/kmsg with a
// blocking read never ends; this fails instead of hanging if that comes
// back.
func TestHostTSCkHz(t *testing.T) {
	type result struct {
		khz int64
		err error
	}
	ch := make(chan result, 1)
	go func() {
		khz, err := HostTSCkHz()
		ch <- result{khz, err}
	}()
	select {
	case r := <-ch:
		cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
		if r.err != nil {
			if tscFromCPUInfo(cpuinfo) > 0 {
				t.Fatalf("HostTSCkHz: %v, but /proc/cpuinfo has a cpu MHz", r.err)
			}
			t.Skipf("this host has no TSC frequency to read: %v", r.err)
		}
		if r.khz < 100_000 || r.khz > 10_000_000 {
			t.Errorf("HostTSCkHz = %d kHz, not a plausible CPU clock", r.khz)
		}
		t.Logf("host TSC: %d kHz (cpu MHz in /proc/cpuinfo: %d kHz)", r.khz, tscFromCPUInfo(cpuinfo))
	case <-time.After(10 * time.Second):
		t.Fatal("HostTSCkHz did not return within 10 s (a blocking read of /dev/kmsg?)")
	}
}

// TestKVMUsableAgreesWithCPU: without vmx/svm, KVM must not be usable
// (this rules out PVM); with them, it is at least not a crash.
func TestKVMUsableAgreesWithCPU(t *testing.T) {
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	usable := KVMUsable()
	t.Logf("KVMUsable = %v; CPU virtualization flag: %v", usable, hasVirtFlag(cpuinfo))
	if usable && !hasVirtFlag(cpuinfo) {
		t.Errorf("KVMUsable on a CPU without vmx/svm")
	}
}

// fakeRunner answers Run with canned output per argv[1].
type fakeRunner map[string]string

func (f fakeRunner) Run(_ context.Context, argv ...string) ([]byte, error) {
	out, ok := f[argv[1]]
	if !ok {
		return nil, errors.New("exit status 1")
	}
	return []byte(out), nil
}

func TestVersionAndMicrovm(t *testing.T) {
	ctx := context.Background()
	good := fakeRunner{
		"--version": "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n",
		"-machine":  "Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC (alias of pc-i440fx-7.2)\n",
	}
	v, err := Version(ctx, good, "")
	if err != nil || v != "7.2.22" {
		t.Errorf("Version = %q, %v; want 7.2.22", v, err)
	}
	if err := CheckMicrovm(ctx, good, ""); err != nil {
		t.Errorf("CheckMicrovm: %v", err)
	}

	bad := fakeRunner{
		"--version": "qemu-kvm 1.0\n",
		"-machine":  "Supported machines are:\npc                   Standard PC\nmicrovm-like         not it\n",
	}
	if _, err := Version(ctx, bad, "qemu"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Version on odd output: %v, want ErrUnavailable", err)
	}
	if err := CheckMicrovm(ctx, bad, "qemu"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("CheckMicrovm without microvm: %v, want ErrUnavailable", err)
	}
	if _, err := Version(ctx, fakeRunner{}, "qemu"); err == nil {
		t.Errorf("Version with a failing command: no error")
	}
}
