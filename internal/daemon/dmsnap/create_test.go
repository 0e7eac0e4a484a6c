package dmsnap

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
	"banger/internal/system/systest"
)

const createLog = `losetup --find --show --read-only /var/lib/banger/images/img1/rootfs.ext4
losetup --find --show /var/lib/banger/vms/vm1/disk.cow
blockdev --getsz /dev/loop0
dmsetup create banger-vm1 --table "0 16384 snapshot /dev/loop0 /dev/loop1 P 8"
`

func TestCreate(t *testing.T) {
	var f systest.Fake
	scriptCreate(&f)
	h, err := Create(t.Context(), &f, testSpec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if d := cmp.Diff(testHandles, h); d != "" {
		t.Errorf("handles (-want +got):\n%s", d)
	}
	diffLog(t, &f, createLog)
}

func TestCreateFailureUndoes(t *testing.T) {
	tests := []struct {
		name     string
		fail     []string // the argv that fails
		stderr   string
		wantStep string
		wantIs   error
		wantLog  string
	}{
		{
			name:     "origin loop fails",
			fail:     []string{"losetup", "--find", "--show", "--read-only", testImage},
			stderr:   "losetup: /var/lib/banger/images/img1/rootfs.ext4: failed to set up loop device: No such file or directory\n",
			wantStep: "attach image /var/lib/banger/images/img1/rootfs.ext4 read-only to a loop device",
			wantLog: `losetup --find --show --read-only /var/lib/banger/images/img1/rootfs.ext4
`,
		},
		{
			name:     "cow loop fails",
			fail:     []string{"losetup", "--find", "--show", testCOW},
			stderr:   "losetup: cannot find an unused loop device\n",
			wantStep: "attach COW file /var/lib/banger/vms/vm1/disk.cow to a loop device",
			wantLog: `losetup --find --show --read-only /var/lib/banger/images/img1/rootfs.ext4
losetup --find --show /var/lib/banger/vms/vm1/disk.cow
losetup -d /dev/loop0
`,
		},
		{
			name:     "sizing fails",
			fail:     []string{"blockdev", "--getsz", "/dev/loop0"},
			stderr:   "blockdev: cannot open /dev/loop0: No such device or address\n",
			wantStep: "size image loop /dev/loop0",
			wantLog: `losetup --find --show --read-only /var/lib/banger/images/img1/rootfs.ext4
losetup --find --show /var/lib/banger/vms/vm1/disk.cow
blockdev --getsz /dev/loop0
losetup -d /dev/loop1
losetup -d /dev/loop0
`,
		},
		{
			name:     "dmsetup fails",
			fail:     []string{"dmsetup", "create", "banger-vm1", "--table", "0 16384 snapshot /dev/loop0 /dev/loop1 P 8"},
			stderr:   "device-mapper: reload ioctl on banger-vm1  failed: Invalid argument\nCommand failed.\n",
			wantStep: "create snapshot banger-vm1",
			wantLog:  createLog + "losetup -d /dev/loop1\nlosetup -d /dev/loop0\n",
		},
		{
			name:     "snapshot already exists",
			fail:     []string{"dmsetup", "create", "banger-vm1", "--table", "0 16384 snapshot /dev/loop0 /dev/loop1 P 8"},
			stderr:   "device-mapper: create ioctl on banger-vm1  failed: Device or resource busy\nCommand failed.\n",
			wantStep: "create snapshot banger-vm1",
			wantIs:   errdefs.ErrAlreadyExists,
			// The existing device is someone else's: only our loops go.
			wantLog: createLog + "losetup -d /dev/loop1\nlosetup -d /dev/loop0\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f systest.Fake
			scriptCreate(&f)
			f.On(tt.fail, systest.Exit(1, tt.stderr))
			h, err := Create(t.Context(), &f, testSpec)
			if err == nil {
				t.Fatalf("Create succeeded with %v, want an error", h)
			}
			if want := "dmsnap vm1: " + tt.wantStep + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			if !strings.Contains(err.Error(), strings.TrimSpace(strings.Split(tt.stderr, "\n")[0])) {
				t.Errorf("error %q does not carry the tool's message", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if h != (Handles{}) {
				t.Errorf("handles = %+v, want zero on failure", h)
			}
			diffLog(t, &f, tt.wantLog)
		})
	}
}

func TestCreateUndoFailureIsReported(t *testing.T) {
	var f systest.Fake
	scriptCreate(&f)
	f.On([]string{"blockdev", "--getsz", "/dev/loop0"}, systest.Exit(1, "blockdev: boom\n"))
	f.On([]string{"losetup", "-d", "/dev/loop1"}, systest.Exit(1, "losetup: /dev/loop1: detach failed: Permission denied\n"))
	_, err := Create(t.Context(), &f, testSpec)
	if err == nil {
		t.Fatal("Create succeeded, want an error")
	}
	for _, want := range []string{"size image loop /dev/loop0", "undo: detach /dev/loop1", "Permission denied"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// The origin loop is still detached after the COW loop's failure.
	if !strings.HasSuffix(f.Log(), "losetup -d /dev/loop1\nlosetup -d /dev/loop0\n") {
		t.Errorf("undo did not try both loops:\n%s", f.Log())
	}
}

func TestCreateUndoesAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var f systest.Fake
	scriptCreate(&f)
	f.On([]string{"dmsetup", "create", "banger-vm1", "--table", "0 16384 snapshot /dev/loop0 /dev/loop1 P 8"},
		systest.Response{Func: func(ctx context.Context, _ systest.Call) ([]byte, error) {
			cancel() // the caller gives up while dmsetup runs
			return nil, context.Canceled
		}})
	if _, err := Create(ctx, &f, testSpec); !errors.Is(err, context.Canceled) {
		t.Fatalf("Create = %v, want context.Canceled", err)
	}
	diffLog(t, &f, createLog+"losetup -d /dev/loop1\nlosetup -d /dev/loop0\n")
}

func TestCreateRejectsBadSpecs(t *testing.T) {
	for _, spec := range []Spec{
		{VMID: "", Image: testImage, COW: testCOW},
		{VMID: "vm/1", Image: testImage, COW: testCOW},
		{VMID: "vm 1", Image: testImage, COW: testCOW},
		{VMID: "-vm1", Image: testImage, COW: testCOW},
		{VMID: strings.Repeat("a", 65), Image: testImage, COW: testCOW},
		{VMID: "vm1", COW: testCOW},
		{VMID: "vm1", Image: testImage},
	} {
		var f systest.Fake
		if _, err := Create(t.Context(), &f, spec); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Create(%+v) = %v, want ErrInvalidArgument", spec, err)
		}
		if log := f.Log(); log != "" {
			t.Errorf("Create(%+v) ran commands:\n%s", spec, log)
		}
	}
}

func TestCreateRejectsOddToolOutput(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		out  string
	}{
		{"losetup prints no device", []string{"losetup", "--find", "--show", "--read-only", testImage}, "\n"},
		{"blockdev prints garbage", []string{"blockdev", "--getsz", "/dev/loop0"}, "lots\n"},
		{"blockdev prints zero", []string{"blockdev", "--getsz", "/dev/loop0"}, "0\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f systest.Fake
			scriptCreate(&f)
			f.On(tt.argv, systest.Output(tt.out))
			if _, err := Create(t.Context(), &f, testSpec); err == nil {
				t.Fatalf("Create succeeded; log:\n%s", f.Log())
			}
			if strings.Contains(f.Log(), "dmsetup create") {
				t.Errorf("dmsetup ran after bad output:\n%s", f.Log())
			}
		})
	}
}
