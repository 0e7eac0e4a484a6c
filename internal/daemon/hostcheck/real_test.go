package hostcheck

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRunRealHost runs every real probe on this machine. It asserts only
// what is true on any host, and logs the report for the reader.
func TestRunRealHost(t *testing.T) {
	tmp := t.TempDir()
	root := filepath.Join(tmp, "not", "yet")
	r := Run(context.Background(), Options{Root: root})

	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report on this host:\n%s", b)

	checkShape(t, r)
	if !slices.Contains([]string{VMMFirecracker, VMMQEMU, VMMNone}, r.VMM.Name) {
		t.Errorf("VMM = %q", r.VMM.Name)
	}
	if !slices.Contains([]string{DiskDMSnap, DiskReflink, DiskCopy}, r.Disk.Name) {
		t.Errorf("Disk = %q", r.Disk.Name)
	}
	wantAccel := map[string][]string{VMMFirecracker: {AccelKVM}, VMMQEMU: {AccelKVM, AccelTCG}, VMMNone: {""}}[r.VMM.Name]
	if !slices.Contains(wantAccel, r.Accel) {
		t.Errorf("Accel = %q with VMM %q", r.Accel, r.VMM.Name)
	}
	kvm, _ := r.Check(CheckKVM)
	if (r.Accel == AccelKVM) != (kvm.Status == StatusOK) && r.VMM.Name == VMMQEMU {
		t.Errorf("QEMU accel %q but kvm check %+v", r.Accel, kvm)
	}
	space, _ := r.Check(CheckDiskSpace)
	if !strings.Contains(space.Detail, tmp+" (nearest existing parent of "+root+")") {
		t.Errorf("disk-space detail %q does not name %s", space.Detail, tmp)
	}
	// The probes clean up after themselves.
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
		t.Errorf("probes left %v in %s (err %v)", ents, tmp, err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("Run created the state root %s (err %v)", root, err)
	}
}
