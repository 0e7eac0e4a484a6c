package dmsnap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/errdefs"
	"banger/internal/system/systest"
)

var bothLoops = loopsJSON(
	[4]string{"/dev/loop0", "7:0", "true", testImage},
	[4]string{"/dev/loop1", "7:1", "false", testCOW},
)

func TestCleanup(t *testing.T) {
	tests := []struct {
		name    string
		h       Handles
		script  func(f *systest.Fake)
		wantLog string
		wantErr []string // substrings; none means success
		wantIs  error
	}{
		{
			name: "everything present",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(bothLoops))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\nlosetup -d /dev/loop0\nlosetup -d /dev/loop1\n",
		},
		{
			name: "everything already gone",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "remove", "--retry", "banger-vm1"}, systest.Exit(1, dmRemoveGone))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(""))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\n",
		},
		{
			name: "device gone with 'not found', loops vanish while detaching",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "remove", "--retry", "banger-vm1"}, systest.Exit(1, "Device banger-vm1 not found\nCommand failed.\n"))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(bothLoops))
				f.On([]string{"losetup", "-d", "/dev/loop0"}, systest.Exit(1, loopGone))
				f.On([]string{"losetup", "-d", "/dev/loop1"}, systest.Exit(1, "losetup: /dev/loop1: failed to use device: No such device\n"))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\nlosetup -d /dev/loop0\nlosetup -d /dev/loop1\n",
		},
		{
			name: "loop numbers reused by other files are left alone",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "remove", "--retry", "banger-vm1"}, systest.Exit(1, dmRemoveGone))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(loopsJSON(
					[4]string{"/dev/loop0", "7:0", "true", "/var/lib/banger/images/other/rootfs.ext4"},
					[4]string{"/dev/loop1", "7:1", "false", "/var/lib/banger/vms/vm2/disk.cow"},
				)))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\n",
		},
		{
			name: "backing files deleted",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(loopsJSON(
					[4]string{"/dev/loop0", "7:0", "true", testImage + " (deleted)"},
					[4]string{"/dev/loop1", "7:1", "false", testCOW + " (deleted)"},
				)))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\nlosetup -d /dev/loop0\nlosetup -d /dev/loop1\n",
		},
		{
			name: "only loops (device never made)",
			h:    Handles{VMID: "vm1", Image: testImage, COW: testCOW, COWLoop: "/dev/loop1"},
			script: func(f *systest.Fake) {
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(bothLoops))
			},
			wantLog: listArgv + "\nlosetup -d /dev/loop1\n",
		},
		{
			name:    "nothing to do",
			h:       Handles{VMID: "vm1"},
			script:  func(f *systest.Fake) {},
			wantLog: "",
		},
		{
			name: "snapshot in use: loops still detached, busy reported",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "remove", "--retry", "banger-vm1"}, systest.Exit(1, "device-mapper: remove ioctl on banger-vm1  failed: Device or resource busy\nCommand failed.\n"))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(bothLoops))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\nlosetup -d /dev/loop0\nlosetup -d /dev/loop1\n",
			wantErr: []string{"dmsnap vm1: remove snapshot banger-vm1", "Device or resource busy"},
			wantIs:  errdefs.ErrBusy,
		},
		{
			name: "real failures are joined",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "remove", "--retry", "banger-vm1"}, systest.Exit(1, "device-mapper: remove ioctl on banger-vm1  failed: Permission denied\n"))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(bothLoops))
				f.On([]string{"losetup", "-d", "/dev/loop0"}, systest.Exit(1, "losetup: /dev/loop0: detach failed: Permission denied\n"))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\nlosetup -d /dev/loop0\nlosetup -d /dev/loop1\n",
			wantErr: []string{"remove snapshot banger-vm1", "detach /dev/loop0"},
		},
		{
			name: "listing fails",
			h:    testHandles,
			script: func(f *systest.Fake) {
				f.OnPrefix([]string{"losetup", "--list"}, systest.Exit(1, "losetup: cannot open /sys/block: Permission denied\n"))
			},
			wantLog: "dmsetup remove --retry banger-vm1\n" + listArgv + "\n",
			wantErr: []string{"list loop devices"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f systest.Fake
			f.Default(systest.Response{})
			tt.script(&f)
			err := Cleanup(t.Context(), &f, tt.h)
			switch {
			case len(tt.wantErr) == 0 && err != nil:
				t.Errorf("Cleanup: %v", err)
			case len(tt.wantErr) > 0 && err == nil:
				t.Errorf("Cleanup succeeded, want an error with %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if err != nil && !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			diffLog(t, &f, tt.wantLog)
		})
	}
}

func TestRemove(t *testing.T) {
	t.Run("deletes the COW file", func(t *testing.T) {
		cow := filepath.Join(t.TempDir(), "disk.cow")
		if err := MakeCOW(cow, 1<<20); err != nil {
			t.Fatal(err)
		}
		var f systest.Fake
		f.Default(systest.Response{})
		f.OnPrefix([]string{"losetup", "--list"}, systest.Output(bothLoops))
		if err := Remove(t.Context(), &f, testHandles, cow); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if _, err := os.Stat(cow); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("COW file still there: %v", err)
		}
		// Repeating it is fine: everything is gone.
		f.On([]string{"dmsetup", "remove", "--retry", "banger-vm1"}, systest.Exit(1, dmRemoveGone))
		f.OnPrefix([]string{"losetup", "--list"}, systest.Output(""))
		if err := Remove(t.Context(), &f, testHandles, cow); err != nil {
			t.Errorf("second Remove: %v", err)
		}
	})
	t.Run("keeps the COW file when the snapshot stays", func(t *testing.T) {
		cow := filepath.Join(t.TempDir(), "disk.cow")
		if err := MakeCOW(cow, 1<<20); err != nil {
			t.Fatal(err)
		}
		var f systest.Fake
		f.Default(systest.Response{})
		f.OnPrefix([]string{"losetup", "--list"}, systest.Output(bothLoops))
		f.On([]string{"dmsetup", "remove", "--retry", "banger-vm1"}, systest.Exit(1, "device-mapper: remove ioctl on banger-vm1  failed: Device or resource busy\n"))
		if err := Remove(t.Context(), &f, testHandles, cow); !errors.Is(err, errdefs.ErrBusy) {
			t.Fatalf("Remove = %v, want ErrBusy", err)
		}
		if _, err := os.Stat(cow); err != nil {
			t.Errorf("COW file deleted under a busy snapshot: %v", err)
		}
	})
}

func TestCleanupRefusesForeignHandles(t *testing.T) {
	for _, h := range []Handles{
		{VMID: "vm1", DMName: "--all"},
		{VMID: "vm1", DMName: "vg0-root"},
		{VMID: "-x", DMName: "banger--x"},
		{VMID: "vm1", OriginLoop: "/dev/sda"},
		{VMID: "vm1", COWLoop: "-d"},
	} {
		var f systest.Fake
		if err := Cleanup(t.Context(), &f, h); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Cleanup(%+v) = %v, want ErrInvalidArgument", h, err)
		}
		if log := f.Log(); log != "" {
			t.Errorf("Cleanup(%+v) ran commands:\n%s", h, log)
		}
	}
}
