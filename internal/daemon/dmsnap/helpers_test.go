package dmsnap

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/system"
	"banger/internal/system/systest"
)

var (
	_ Runner = (*system.ExecRunner)(nil)
	_ Runner = (*systest.Fake)(nil)
)

// Paths the scripted tests use; they do not exist, so absPath keeps them.
const (
	testImage = "/var/lib/banger/images/img1/rootfs.ext4"
	testCOW   = "/var/lib/banger/vms/vm1/disk.cow"
	listArgv  = "losetup --list --json --output NAME,MAJ:MIN,RO,BACK-FILE"
)

var (
	testSpec = Spec{VMID: "vm1", Image: testImage, COW: testCOW}
	// testHandles is what Create returns for testSpec on the happy path.
	testHandles = Handles{
		VMID: "vm1", Image: testImage, COW: testCOW,
		OriginLoop: "/dev/loop0", COWLoop: "/dev/loop1",
		DMName: "banger-vm1", Device: "/dev/mapper/banger-vm1",
	}
)

// goneStderr are the tools' real messages for objects that do not exist.
const (
	dmRemoveGone = "device-mapper: remove ioctl on banger-vm1  failed: No such device or address\nCommand failed.\n"
	dmTableGone  = "Device does not exist.\nCommand failed.\n"
	loopGone     = "losetup: /dev/loop0: detach failed: No such device or address\n"
)

// scriptCreate scripts every step of a successful Create of testSpec.
func scriptCreate(f *systest.Fake) {
	f.On([]string{"losetup", "--find", "--show", "--read-only", testImage}, systest.Output("/dev/loop0\n"))
	f.On([]string{"losetup", "--find", "--show", testCOW}, systest.Output("/dev/loop1\n"))
	f.On([]string{"blockdev", "--getsz", "/dev/loop0"}, systest.Output("16384\n"))
	f.On([]string{"dmsetup", "create", "banger-vm1", "--table", "0 16384 snapshot /dev/loop0 /dev/loop1 P 8"})
	f.On([]string{"losetup", "-d", "/dev/loop0"})
	f.On([]string{"losetup", "-d", "/dev/loop1"})
}

// loopsJSON renders losetup's JSON for rows of {name, maj:min, ro, file}.
func loopsJSON(rows ...[4]string) string {
	s := "{\n   \"loopdevices\": [\n"
	for i, r := range rows {
		if i > 0 {
			s += ",\n"
		}
		s += `      {"name": "` + r[0] + `", "maj:min": "  ` + r[1] + `  ", "ro": ` + r[2] + `, "back-file": "` + r[3] + `"}`
	}
	return s + "\n   ]\n}\n"
}

func diffLog(t *testing.T, f *systest.Fake, want string) {
	t.Helper()
	if d := cmp.Diff(want, f.Log()); d != "" {
		t.Errorf("commands run (-want +got):\n%s", d)
	}
}
