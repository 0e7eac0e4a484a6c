package qemu

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
)

// typicalTCG is a config as the daemon would give it on a host without KVM.
func typicalTCG() Config {
	return Config{
		ID:         "vm1",
		Kernel:     "/var/lib/banger/kernels/k1/vmlinux",
		Initrd:     "/var/lib/banger/kernels/k1/initrd",
		Cmdline:    BaseCmdline() + " root=/dev/vda rw",
		Disks:      []Disk{{Path: "/var/lib/banger/vms/vm1/root.ext4"}},
		NICs:       []NIC{{TAP: "tap-vm1", MAC: "02:42:AC:11:00:07"}},
		VCPUs:      2,
		MemoryMiB:  512,
		Accel:      AccelTCG,
		TSCkHz:     2300000,
		ConsoleLog: "/var/lib/banger/vms/vm1/console.log",
		QMPSocket:  "/run/banger/vm1.qmp",
	}
}

func TestArgvTypicalTCG(t *testing.T) {
	got, err := Argv(typicalTCG())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"qemu-system-x86_64",
		"-name", "guest=banger-vm1",
		"-M", "microvm,x-option-roms=off,isa-serial=on",
		"-accel", "tcg,thread=multi", "-cpu", "max",
		"-smp", "2", "-m", "512M",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-device", "i8042",
		"-kernel", "/var/lib/banger/kernels/k1/vmlinux",
		"-initrd", "/var/lib/banger/kernels/k1/initrd",
		"-append", "console=ttyS0 reboot=k panic=-1 root=/dev/vda rw tsc_early_khz=2300000",
		"-drive", "id=disk0,if=none,format=raw,file=/var/lib/banger/vms/vm1/root.ext4",
		"-device", "virtio-blk-device,drive=disk0",
		"-netdev", "tap,id=net0,ifname=tap-vm1,script=no,downscript=no",
		"-device", "virtio-net-device,netdev=net0,mac=02:42:ac:11:00:07",
		"-chardev", "file,id=console,path=/var/lib/banger/vms/vm1/console.log",
		"-serial", "chardev:console",
		"-chardev", "socket,id=qmp,path=/run/banger/vm1.qmp,server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Argv (-want +got):\n%s", diff)
	}
}

// flagValue returns the values following each occurrence of flag.
func flagValues(argv []string, flag string) []string {
	var vals []string
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			vals = append(vals, argv[i+1])
		}
	}
	return vals
}

func TestArgvVariants(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		check func(t *testing.T, argv []string)
	}{
		{
			name: "kvm uses the host CPU and no tsc_early_khz",
			edit: func(c *Config) { c.Accel = AccelKVM; c.TSCkHz = 0 },
			check: func(t *testing.T, argv []string) {
				if got := flagValues(argv, "-accel"); !slices.Equal(got, []string{"kvm"}) {
					t.Errorf("-accel %v, want [kvm]", got)
				}
				if got := flagValues(argv, "-cpu"); !slices.Equal(got, []string{"host"}) {
					t.Errorf("-cpu %v, want [host]", got)
				}
				if app := flagValues(argv, "-append")[0]; strings.Contains(app, "tsc_early_khz") {
					t.Errorf("-append %q has tsc_early_khz under KVM", app)
				}
			},
		},
		{
			name: "tcg keeps a tsc_early_khz the caller gave",
			edit: func(c *Config) { c.Cmdline = "console=ttyS0 tsc_early_khz=1000"; c.TSCkHz = 0 },
			check: func(t *testing.T, argv []string) {
				if app := flagValues(argv, "-append")[0]; app != "console=ttyS0 tsc_early_khz=1000" {
					t.Errorf("-append %q", app)
				}
			},
		},
		{
			name: "tcg puts tsc_early_khz before init's arguments",
			edit: func(c *Config) { c.Cmdline = `console=ttyS0 x="a -- b" -- init-arg tsc_early_khz=5` },
			check: func(t *testing.T, argv []string) {
				want := `console=ttyS0 x="a -- b" tsc_early_khz=2300000 -- init-arg tsc_early_khz=5`
				if app := flagValues(argv, "-append")[0]; app != want {
					t.Errorf("-append %q, want %q", app, want)
				}
			},
		},
		{
			name: "disks in order, read-only flag, commas escaped",
			edit: func(c *Config) {
				c.Disks = []Disk{{Path: "/img/root.ext4", ReadOnly: true}, {Path: "/img/da,ta.ext4"}}
			},
			check: func(t *testing.T, argv []string) {
				want := []string{
					"id=disk0,if=none,format=raw,file=/img/root.ext4,readonly=on",
					"id=disk1,if=none,format=raw,file=/img/da,,ta.ext4",
				}
				if diff := cmp.Diff(want, flagValues(argv, "-drive")); diff != "" {
					t.Errorf("-drive (-want +got):\n%s", diff)
				}
				devs := flagValues(argv, "-device")
				if !slices.Contains(devs, "virtio-blk-device,drive=disk0") || !slices.Contains(devs, "virtio-blk-device,drive=disk1") ||
					slices.Index(devs, "virtio-blk-device,drive=disk0") > slices.Index(devs, "virtio-blk-device,drive=disk1") {
					t.Errorf("-device %v: want disk0 then disk1", devs)
				}
			},
		},
		{
			name: "two NICs in order",
			edit: func(c *Config) {
				c.NICs = append(c.NICs, NIC{TAP: "tap2", MAC: "02:00:00:00:00:02"})
			},
			check: func(t *testing.T, argv []string) {
				want := []string{
					"tap,id=net0,ifname=tap-vm1,script=no,downscript=no",
					"tap,id=net1,ifname=tap2,script=no,downscript=no",
				}
				if diff := cmp.Diff(want, flagValues(argv, "-netdev")); diff != "" {
					t.Errorf("-netdev (-want +got):\n%s", diff)
				}
				if !slices.Contains(argv, "virtio-net-device,netdev=net1,mac=02:00:00:00:00:02") {
					t.Errorf("no second virtio-net-device in %v", argv)
				}
			},
		},
		{
			name: "no NIC",
			edit: func(c *Config) { c.NICs = nil },
			check: func(t *testing.T, argv []string) {
				if got := flagValues(argv, "-netdev"); got != nil {
					t.Errorf("-netdev %v without NICs", got)
				}
			},
		},
		{
			name: "no console log drops the serial output",
			edit: func(c *Config) { c.ConsoleLog = "" },
			check: func(t *testing.T, argv []string) {
				if got := flagValues(argv, "-serial"); !slices.Equal(got, []string{"null"}) {
					t.Errorf("-serial %v, want [null]", got)
				}
				if got := flagValues(argv, "-chardev"); len(got) != 1 || !strings.HasPrefix(got[0], "socket,id=qmp,") {
					t.Errorf("-chardev %v, want only the QMP socket", got)
				}
			},
		},
		{
			name: "network namespace by name wraps in nsenter",
			edit: func(c *Config) { c.NetNS = "banger" },
			check: func(t *testing.T, argv []string) {
				want := []string{"nsenter", "--net=/run/netns/banger", "--", "qemu-system-x86_64", "-name"}
				if diff := cmp.Diff(want, argv[:5]); diff != "" {
					t.Errorf("argv prefix (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "network namespace by path",
			edit: func(c *Config) { c.NetNS = "/proc/123/ns/net"; c.Binary = "/opt/qemu/bin/qemu-system-x86_64" },
			check: func(t *testing.T, argv []string) {
				want := []string{"nsenter", "--net=/proc/123/ns/net", "--", "/opt/qemu/bin/qemu-system-x86_64"}
				if diff := cmp.Diff(want, argv[:4]); diff != "" {
					t.Errorf("argv prefix (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "defaults for cpus and memory; pid file; no initrd",
			edit: func(c *Config) { c.VCPUs, c.MemoryMiB, c.PIDFile, c.Initrd = 0, 0, "/run/banger/vm1.pid", "" },
			check: func(t *testing.T, argv []string) {
				if got := flagValues(argv, "-smp"); !slices.Equal(got, []string{"1"}) {
					t.Errorf("-smp %v, want [1]", got)
				}
				if got := flagValues(argv, "-m"); !slices.Equal(got, []string{"256M"}) {
					t.Errorf("-m %v, want [256M]", got)
				}
				if got := flagValues(argv, "-pidfile"); !slices.Equal(got, []string{"/run/banger/vm1.pid"}) {
					t.Errorf("-pidfile %v", got)
				}
				if got := flagValues(argv, "-initrd"); got != nil {
					t.Errorf("-initrd %v without an initrd", got)
				}
			},
		},
		{
			name: "QMP socket and console paths with commas",
			edit: func(c *Config) { c.QMPSocket = "/run/a,b.qmp"; c.ConsoleLog = "/log/c,d" },
			check: func(t *testing.T, argv []string) {
				want := []string{"file,id=console,path=/log/c,,d", "socket,id=qmp,path=/run/a,,b.qmp,server=on,wait=off"}
				if diff := cmp.Diff(want, flagValues(argv, "-chardev")); diff != "" {
					t.Errorf("-chardev (-want +got):\n%s", diff)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := typicalTCG()
			tt.edit(&cfg)
			argv, err := Argv(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, argv)
			if id, ok := IDFromArgv(argv); !ok || id != cfg.ID {
				t.Errorf("IDFromArgv = %q, %v; want %q", id, ok, cfg.ID)
			}
		})
	}
}

func TestArgvRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // in the error
	}{
		{"no id", func(c *Config) { c.ID = "" }, "VM id"},
		{"id with a comma", func(c *Config) { c.ID = "a,b" }, "VM id"},
		{"no kernel", func(c *Config) { c.Kernel = "" }, "kernel is not set"},
		{"relative kernel", func(c *Config) { c.Kernel = "vmlinux" }, "not an absolute path"},
		{"no disk", func(c *Config) { c.Disks = nil }, "no disks"},
		{"relative disk", func(c *Config) { c.Disks = []Disk{{Path: "root.ext4"}} }, "disk 0"},
		{"no QMP socket", func(c *Config) { c.QMPSocket = "" }, "QMP socket is not set"},
		{"long QMP socket", func(c *Config) { c.QMPSocket = "/" + strings.Repeat("s", 120) }, "longer than a unix socket path"},
		{"NIC without MAC", func(c *Config) { c.NICs[0].MAC = "" }, "no MAC"},
		{"NIC multicast MAC", func(c *Config) { c.NICs[0].MAC = "01:00:5e:00:00:01" }, "multicast"},
		{"NIC bad MAC", func(c *Config) { c.NICs[0].MAC = "02:00:00:00:00" }, "not a 6-byte MAC"},
		{"NIC long TAP", func(c *Config) { c.NICs[0].TAP = "tap-0123456789abcdef" }, "longer than 15"},
		{"NIC TAP with comma", func(c *Config) { c.NICs[0].TAP = "tap,x" }, "not a valid interface name"},
		{"negative cpus", func(c *Config) { c.VCPUs = -1 }, "vCPUs"},
		{"tiny memory", func(c *Config) { c.MemoryMiB = 8 }, "MiB of memory"},
		{"no accel", func(c *Config) { c.Accel = "" }, "no accelerator"},
		{"unknown accel", func(c *Config) { c.Accel = "hvf" }, `accelerator "hvf"`},
		{"tcg without tsc", func(c *Config) { c.TSCkHz = 0 }, "tsc_early_khz"},
		{"tsc only after --", func(c *Config) { c.TSCkHz = 0; c.Cmdline = "console=ttyS0 -- tsc_early_khz=5" }, "tsc_early_khz"},
		{"newline in cmdline", func(c *Config) { c.Cmdline = "a\nb" }, "newline"},
		{"long cmdline", func(c *Config) { c.Cmdline = strings.Repeat("x", 2040) }, "more than the kernel takes"},
		{"netns relative path", func(c *Config) { c.NetNS = "a/b" }, "network namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := typicalTCG()
			tt.edit(&cfg)
			argv, err := Argv(cfg)
			if err == nil {
				t.Fatalf("Argv accepted it: %q", argv)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v does not wrap ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestIDFromArgv(t *testing.T) {
	tests := []struct {
		argv []string
		id   string
		ok   bool
	}{
		{[]string{"qemu-system-x86_64", "-name", "guest=banger-abc", "-M", "microvm"}, "abc", true},
		{[]string{"qemu-system-x86_64", "-name", "debug-threads=on,guest=banger-x.y_z"}, "x.y_z", true},
		{[]string{"qemu-system-x86_64", "-name", "guest=other-abc"}, "", false},
		{[]string{"qemu-system-x86_64", "-name", "banger-abc"}, "", false},
		{[]string{"qemu-system-x86_64", "-name"}, "", false},
		{[]string{"sleep", "100"}, "", false},
	}
	for _, tt := range tests {
		id, ok := IDFromArgv(tt.argv)
		if id != tt.id || ok != tt.ok {
			t.Errorf("IDFromArgv(%q) = %q, %v; want %q, %v", tt.argv, id, ok, tt.id, tt.ok)
		}
	}
}

// TestArgvTAPFiles: a NIC with an open TAP is handed to QEMU by descriptor,
// numbered after stdin, stdout and stderr in NIC order; others by name.
func TestArgvTAPFiles(t *testing.T) {
	cfg := typicalTCG()
	f := os.NewFile(uintptr(0), "tap") // any non-nil file: Argv only numbers it
	cfg.NICs = []NIC{
		{TAP: "tap-a", MAC: "02:00:00:00:00:01", File: f},
		{TAP: "tap-b", MAC: "02:00:00:00:00:02"},
		{TAP: "tap-c", MAC: "02:00:00:00:00:03", File: f},
	}
	argv, err := Argv(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tap,id=net0,fd=3", "tap,id=net1,ifname=tap-b,script=no,downscript=no", "tap,id=net2,fd=4"}
	if diff := cmp.Diff(want, flagValues(argv, "-netdev")); diff != "" {
		t.Errorf("-netdev (-want +got):\n%s", diff)
	}
}
