package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// outcome is what a case asserts: the decisions and every check that is
// not ok.
type outcome struct {
	VMM, Accel, Disk string
	NotOK            map[string]Status
}

func TestRun(t *testing.T) {
	noVMX := func(f *fakeHost) {
		f.files["proc/cpuinfo"] = file("vendor_id\t: AuthenticAMD\nflags\t\t: fpu lm\n")
	}
	noKVM := func(f *fakeHost) { noVMX(f); delete(f.files, "dev/kvm") }
	noDM := func(f *fakeHost) {
		delete(f.files, "dev/mapper/control")
		f.files["proc/misc"] = file("237 loop-control\n")
	}
	noReflink := func(f *fakeHost) {
		f.reflink = fmt.Errorf("FICLONE: %w", unix.EOPNOTSUPP)
		f.fs.Magic = unix.EXT4_SUPER_MAGIC
	}
	all := func(mods ...func(*fakeHost)) func(*fakeHost) {
		return func(f *fakeHost) {
			for _, m := range mods {
				m(f)
			}
		}
	}

	tests := []struct {
		name      string
		vmm, disk string
		mod       func(*fakeHost)
		want      outcome
		// Substrings the decisions' Why must hold.
		vmmWhy, diskWhy []string
	}{
		{
			name:    "everything works",
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap},
			vmmWhy:  []string{"/dev/kvm works"},
			diskWhy: []string{"device-mapper snapshots"},
		},
		{
			name:   "no /dev/kvm: QEMU under TCG",
			mod:    noKVM,
			want:   outcome{VMM: VMMQEMU, Accel: AccelTCG, Disk: DiskDMSnap, NotOK: map[string]Status{CheckKVM: StatusWarn}},
			vmmWhy: []string{"/dev/kvm does not exist", "TCG"},
		},
		{
			name: "/dev/kvm opens but cannot create a VM",
			mod: all(noVMX, func(f *fakeHost) {
				f.kvm = fmt.Errorf("KVM_CREATE_VM: %w", unix.ENODEV)
			}),
			want:   outcome{VMM: VMMQEMU, Accel: AccelTCG, Disk: DiskDMSnap, NotOK: map[string]Status{CheckKVM: StatusWarn}},
			vmmWhy: []string{"KVM_CREATE_VM: no such device", "TCG (software emulation, slow)"},
		},
		{
			name: "/dev/kvm permission denied",
			mod: func(f *fakeHost) {
				f.kvm = &fs.PathError{Op: "open", Path: "/dev/kvm", Err: unix.EACCES}
			},
			want: outcome{VMM: VMMQEMU, Accel: AccelTCG, Disk: DiskDMSnap, NotOK: map[string]Status{CheckKVM: StatusWarn}},
		},
		{
			name: "PVM without hardware virtualization is not used",
			mod: all(noVMX, func(f *fakeHost) {
				f.files["sys/module/kvm_pvm"] = dir
			}),
			want:   outcome{VMM: VMMQEMU, Accel: AccelTCG, Disk: DiskDMSnap, NotOK: map[string]Status{CheckKVM: StatusWarn}},
			vmmWhy: []string{"PVM"},
		},
		{
			name:   "firecracker missing: QEMU under KVM",
			mod:    func(f *fakeHost) { f.bins["firecracker"] = false },
			want:   outcome{VMM: VMMQEMU, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckFirecracker: StatusWarn}},
			vmmWhy: []string{"firecracker not found in PATH: QEMU microvm under KVM"},
		},
		{
			name: "firecracker does not run",
			mod: func(f *fakeHost) {
				f.cmds["firecracker --version"] = cmdResult{err: errors.New("exec format error")}
			},
			want:   outcome{VMM: VMMQEMU, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckFirecracker: StatusWarn}},
			vmmWhy: []string{"does not run"},
		},
		{
			name: "neither VMM can run",
			mod:  all(noKVM, func(f *fakeHost) { f.bins["qemu-system-x86_64"] = false }),
			want: outcome{VMM: VMMNone, Disk: DiskDMSnap, NotOK: map[string]Status{
				CheckKVM: StatusWarn, CheckQEMU: StatusFail,
			}},
			vmmWhy: []string{"no VMM", "qemu-system-x86_64 not found"},
		},
		{
			name:   "QEMU missing is only a warning when Firecracker runs",
			mod:    func(f *fakeHost) { f.bins["qemu-system-x86_64"] = false },
			want:   outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckQEMU: StatusWarn}},
			vmmWhy: []string{"firecracker is installed"},
		},
		{
			name: "QEMU without microvm",
			mod: all(noKVM, func(f *fakeHost) {
				f.cmds["qemu-system-x86_64 -machine"] = cmdResult{out: "Supported machines are:\npc  Standard PC\n"}
			}),
			want: outcome{VMM: VMMNone, Disk: DiskDMSnap, NotOK: map[string]Status{
				CheckKVM: StatusWarn, CheckQEMU: StatusFail,
			}},
			vmmWhy: []string{"has no microvm machine"},
		},
		{
			name:   "configured firecracker is honoured when it cannot run",
			vmm:    VMMFirecracker,
			mod:    noKVM,
			want:   outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckKVM: StatusFail}},
			vmmWhy: []string{"configured", "cannot run", "/dev/kvm does not exist"},
		},
		{
			name: "configured firecracker, binary missing",
			vmm:  VMMFirecracker,
			mod:  func(f *fakeHost) { f.bins["firecracker"] = false },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{
				CheckFirecracker: StatusFail,
			}},
		},
		{
			name:   "configured qemu under KVM",
			vmm:    VMMQEMU,
			want:   outcome{VMM: VMMQEMU, Accel: AccelKVM, Disk: DiskDMSnap},
			vmmWhy: []string{"configured (vmm = qemu)", "under KVM"},
		},
		{
			name: "configured qemu, missing",
			vmm:  VMMQEMU,
			mod:  func(f *fakeHost) { f.bins["qemu-system-x86_64"] = false },
			want: outcome{VMM: VMMQEMU, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{
				CheckQEMU: StatusFail,
			}},
			vmmWhy: []string{"cannot run", "not found"},
		},
		{
			name:    "unknown preferences decide as auto",
			vmm:     "cloud-hypervisor",
			disk:    "zfs",
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap},
			vmmWhy:  []string{`unknown vmm preference "cloud-hypervisor"`},
			diskWhy: []string{`unknown disk preference "zfs"`},
		},
		{
			name:    "no device-mapper: reflink",
			mod:     noDM,
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink, NotOK: map[string]Status{CheckDeviceMapper: StatusWarn}},
			diskWhy: []string{"no device-mapper in the kernel: reflink clones"},
		},
		{
			name: "device-mapper node missing",
			mod:  func(f *fakeHost) { delete(f.files, "dev/mapper/control") },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink, NotOK: map[string]Status{CheckDeviceMapper: StatusWarn}},
		},
		{
			// dmsetup must not run: libdevmapper would create nodes.
			name: "control node without device-mapper in the kernel",
			mod: func(f *fakeHost) {
				f.open["/dev/mapper/control"] = &fs.PathError{Op: "open", Path: "/dev/mapper/control", Err: unix.ENODEV}
				delete(f.cmds, "dmsetup targets")
			},
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink, NotOK: map[string]Status{CheckDeviceMapper: StatusWarn}},
			diskWhy: []string{"no device-mapper in the kernel"},
		},
		{
			name: "dmsetup missing",
			mod:  func(f *fakeHost) { f.bins["dmsetup"] = false },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink, NotOK: map[string]Status{CheckDeviceMapper: StatusWarn}},
		},
		{
			name: "no snapshot target",
			mod: func(f *fakeHost) {
				f.cmds["dmsetup targets"] = cmdResult{out: "linear v1.4.0\nstriped v1.6.0\n"}
			},
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink, NotOK: map[string]Status{CheckDeviceMapper: StatusWarn}},
			diskWhy: []string{"no device-mapper snapshot target"},
		},
		{
			name: "snapshot target loads on demand",
			mod: func(f *fakeHost) {
				f.cmds["dmsetup targets"] = cmdResult{out: "linear v1.4.0\n"}
				f.files["lib/modules/6.1.0-test-amd64/modules.builtin"] = file("kernel/drivers/md/dm-mod.ko\n")
				f.files["lib/modules/6.1.0-test-amd64/modules.dep"] = file("kernel/drivers/md/dm-snapshot.ko.xz: kernel/drivers/md/dm-bufio.ko.xz\n")
			},
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap},
		},
		{
			name:    "no loop devices: reflink",
			mod:     func(f *fakeHost) { delete(f.files, "dev/loop-control") },
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink, NotOK: map[string]Status{CheckLoop: StatusWarn}},
			diskWhy: []string{"no loop devices"},
		},
		{
			name: "neither device-mapper nor reflink: sparse copies",
			mod:  all(noDM, noReflink),
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskCopy, NotOK: map[string]Status{
				CheckDeviceMapper: StatusWarn, CheckReflink: StatusWarn,
			}},
			diskWhy: []string{"no reflink on ext4", "sparse copies"},
		},
		{
			name: "reflink probe cannot write",
			mod: all(noDM, func(f *fakeHost) {
				f.reflink = &fs.PathError{Op: "open", Path: "/var/lib/x", Err: unix.EACCES}
			}),
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskCopy, NotOK: map[string]Status{
				CheckDeviceMapper: StatusWarn, CheckReflink: StatusWarn,
			}},
			diskWhy: []string{"reflink untested"},
		},
		{
			name: "missing reflink does not matter under device-mapper",
			mod:  noReflink,
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap},
		},
		{
			name:    "configured dmsnap without device-mapper",
			disk:    DiskDMSnap,
			mod:     noDM,
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckDeviceMapper: StatusFail}},
			diskWhy: []string{"configured (disk = dmsnap), but it cannot work: no device-mapper"},
		},
		{
			name:    "configured reflink without reflink",
			disk:    DiskReflink,
			mod:     noReflink,
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink, NotOK: map[string]Status{CheckReflink: StatusFail}},
			diskWhy: []string{"cannot work: no reflink on ext4"},
		},
		{
			name: "configured reflink over usable device-mapper",
			disk: DiskReflink,
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskReflink},
		},
		{
			name:    "configured copy",
			disk:    DiskCopy,
			want:    outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskCopy},
			diskWhy: []string{"configured (disk = copy)"},
		},
		{
			name: "no tun",
			mod:  func(f *fakeHost) { delete(f.files, "dev/net/tun") },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckTUN: StatusFail}},
		},
		{
			name: "tun does not open",
			mod: func(f *fakeHost) {
				f.open["/dev/net/tun"] = &fs.PathError{Op: "open", Path: "/dev/net/tun", Err: unix.ENODEV}
			},
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckTUN: StatusFail}},
		},
		{
			name: "nf_tables missing from the kernel",
			mod:  func(f *fakeHost) { f.nft = fmt.Errorf("NFT_MSG_GETGEN: %w", unix.EOPNOTSUPP) },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckNFTables: StatusFail}},
		},
		{
			name: "nf_tables not queryable without root",
			mod:  func(f *fakeHost) { f.nft = fmt.Errorf("NFT_MSG_GETGEN: %w", unix.EPERM) },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckNFTables: StatusWarn}},
		},
		{
			name: "nft command missing",
			mod:  func(f *fakeHost) { f.bins["nft"] = false },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckNFTables: StatusWarn}},
		},
		{
			name: "forwarding off",
			mod:  func(f *fakeHost) { f.files["proc/sys/net/ipv4/ip_forward"] = file("0\n") },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckIPForward: StatusWarn}},
		},
		{
			name: "mkfs.ext4 missing",
			mod:  func(f *fakeHost) { f.bins["mkfs.ext4"] = false },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckMkfs: StatusFail}},
		},
		{
			name: "mkfs.ext4 without -d",
			mod: func(f *fakeHost) {
				f.cmds["mkfs.ext4 -q"] = cmdResult{err: errors.New("exit status 1: mke2fs: invalid option -- 'd'")}
			},
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckMkfs: StatusFail}},
		},
		{
			name: "1 GiB free",
			mod:  func(f *fakeHost) { f.fs.Avail = 1 << 30 },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckDiskSpace: StatusFail}},
		},
		{
			name: "5 GiB free",
			mod:  func(f *fakeHost) { f.fs.Avail = 5 << 30 },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap, NotOK: map[string]Status{CheckDiskSpace: StatusWarn}},
		},
		{
			name: "exactly 10 GiB free",
			mod:  func(f *fakeHost) { f.fs.Avail = 10 << 30 },
			want: outcome{VMM: VMMFirecracker, Accel: AccelKVM, Disk: DiskDMSnap},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := goodHost()
			if tt.mod != nil {
				tt.mod(f)
			}
			r := Run(context.Background(), Options{Root: "/var/lib/banger", VMM: tt.vmm, Disk: tt.disk, Runner: f, Host: f.host()})

			got := outcome{VMM: r.VMM.Name, Accel: r.Accel, Disk: r.Disk.Name}
			for _, c := range r.Checks {
				if c.Status != StatusOK {
					if got.NotOK == nil {
						got.NotOK = map[string]Status{}
					}
					got.NotOK[c.Name] = c.Status
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s\nreport: %+v", diff, r)
			}
			if r.Failed() != (len(failures(r)) > 0) {
				t.Errorf("Failed() = %v with failures %v", r.Failed(), failures(r))
			}
			for _, s := range tt.vmmWhy {
				if !strings.Contains(r.VMM.Why, s) {
					t.Errorf("VMM.Why = %q, want it to contain %q", r.VMM.Why, s)
				}
			}
			for _, s := range tt.diskWhy {
				if !strings.Contains(r.Disk.Why, s) {
					t.Errorf("Disk.Why = %q, want it to contain %q", r.Disk.Why, s)
				}
			}
			checkShape(t, r)
			if len(f.unexpected) > 0 {
				t.Errorf("unexpected commands: %q", f.unexpected)
			}
		})
	}
}

func failures(r Report) []string {
	var fs []string
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			fs = append(fs, c.Name)
		}
	}
	return fs
}

// checkShape asserts what holds for every report: the thirteen checks in
// order, each saying what was found, and a fix exactly for those not ok.
func checkShape(t *testing.T, r Report) {
	t.Helper()
	want := []string{CheckKVM, CheckFirecracker, CheckQEMU, CheckDeviceMapper, CheckLoop, CheckReflink,
		CheckTUN, CheckBridge, CheckNFTables, CheckIPForward, CheckMkfs, CheckDiskSpace, CheckJailer}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
		switch c.Status {
		case StatusOK:
			if c.Fix != "" {
				t.Errorf("check %s is ok but has a fix %q", c.Name, c.Fix)
			}
		case StatusWarn, StatusFail:
			if c.Fix == "" {
				t.Errorf("check %s is %s without a fix (detail %q)", c.Name, c.Status, c.Detail)
			}
		default:
			t.Errorf("check %s has status %q", c.Name, c.Status)
		}
		if c.Detail == "" {
			t.Errorf("check %s has no detail", c.Name)
		}
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("check names (-want +got):\n%s", diff)
	}
	if r.VMM.Why == "" || r.Disk.Why == "" {
		t.Errorf("a decision has no reason: VMM %+v, Disk %+v", r.VMM, r.Disk)
	}
}

func TestRunProbesNearestExistingParent(t *testing.T) {
	f := goodHost()
	r := Run(context.Background(), Options{Root: "/var/lib/banger/state", Runner: f, Host: f.host()})
	want := []string{"statfs /var/lib", "reflink /var/lib", "statfs /var/lib"}
	if diff := cmp.Diff(want, f.probedDirs); diff != "" {
		t.Errorf("probed dirs (-want +got):\n%s", diff)
	}
	c, _ := r.Check(CheckDiskSpace)
	if !strings.Contains(c.Detail, "/var/lib (nearest existing parent of /var/lib/banger/state)") {
		t.Errorf("disk-space detail = %q, want it to name the parent it measured", c.Detail)
	}
	if wantDetail := "50.0 GiB free of 100.0 GiB on xfs"; !strings.HasPrefix(c.Detail, wantDetail) {
		t.Errorf("disk-space detail = %q, want prefix %q", c.Detail, wantDetail)
	}
}

func TestBridge(t *testing.T) {
	const mods = "lib/modules/6.1.0-test-amd64/"
	tests := []struct {
		name  string
		files map[string]string
		want  Status
	}{
		{"loaded", map[string]string{"sys/module/bridge/refcnt": "0\n"}, StatusOK},
		{"installed", map[string]string{mods + "modules.builtin": "", mods + "modules.dep": "kernel/net/bridge/bridge.ko.zst: kernel/net/802/stp.ko.zst\n"}, StatusOK},
		{"built in", map[string]string{mods + "modules.builtin": "kernel/net/bridge/bridge.ko\n"}, StatusOK},
		{"absent", map[string]string{mods + "modules.builtin": "kernel/fs/ext4/ext4.ko\n", mods + "modules.dep": "kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\n"}, StatusFail},
		{"cannot tell", nil, StatusWarn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := goodHost()
			delete(f.files, "sys/module/bridge")
			for name, data := range tt.files {
				f.files[name] = file(data)
			}
			p := newProber(Options{Root: "/var/lib/banger", Runner: f, Host: f.host()})
			if got := p.checkBridge(); got.Status != tt.want {
				t.Errorf("bridge check = %+v, want status %s", got.Check, tt.want)
			}
		})
	}
}

func TestListsModule(t *testing.T) {
	list := []byte("kernel/drivers/md/dm-snapshot.ko.xz: kernel/drivers/md/dm-bufio.ko.xz\nkernel/drivers/net/tun.ko:\n")
	for name, want := range map[string]bool{"dm_snapshot": true, "tun": true, "dm_bufio": false, "dm": false} {
		if got := listsModule(list, name); got != want {
			t.Errorf("listsModule(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestCPUVirt(t *testing.T) {
	tests := []struct{ cpuinfo, vendor, virt string }{
		{"vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx lm\n", "GenuineIntel", "vmx"},
		{"vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm lm\n", "AuthenticAMD", "svm"},
		{"vendor_id\t: AuthenticAMD\nflags\t\t: fpu hypervisor lm\n", "AuthenticAMD", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		f := goodHost()
		f.files["proc/cpuinfo"] = file(tt.cpuinfo)
		p := newProber(Options{Runner: f, Host: f.host()})
		if vendor, virt := p.cpuVirt(); vendor != tt.vendor || virt != tt.virt {
			t.Errorf("cpuVirt(%q) = %q, %q; want %q, %q", tt.cpuinfo, vendor, virt, tt.vendor, tt.virt)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB", 2 << 30: "2.0 GiB", 5 << 40: "5.0 TiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFailed(t *testing.T) {
	r := Report{Checks: []Check{{Name: "a", Status: StatusOK}, {Name: "b", Status: StatusWarn}}}
	if r.Failed() {
		t.Error("Failed() with no failing check")
	}
	r.Checks = append(r.Checks, Check{Name: "c", Status: StatusFail})
	if !r.Failed() {
		t.Error("not Failed() with a failing check")
	}
}

func TestJailerCheck(t *testing.T) {
	for _, tt := range []struct {
		name   string
		bin    string
		uid    int
		want   Status
		detail string
	}{
		{"not configured", "", 0, StatusOK, "not configured"},
		{"missing", "jailer", 123, StatusFail, "not found"},
		{"found", "firecracker", 123, StatusOK, "under the jailer at /usr/bin/firecracker"},
		{"found, as root", "firecracker", 0, StatusWarn, "as root"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := goodHost()
			r := Run(context.Background(), Options{Root: "/var/lib/banger", Jailer: tt.bin, JailerUID: tt.uid, Runner: f, Host: f.host()})
			checkShape(t, r)
			c, _ := r.Check(CheckJailer)
			if c.Status != tt.want || !strings.Contains(c.Detail, tt.detail) {
				t.Errorf("jailer check %+v; want %s mentioning %q", c, tt.want, tt.detail)
			}
		})
	}
}
