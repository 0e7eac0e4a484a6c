package dmsnap

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/errdefs"
	"banger/internal/system/systest"
)

func TestFind(t *testing.T) {
	tests := []struct {
		name      string
		script    func(f *systest.Fake)
		want      Handles
		wantFound bool
		wantLog   string
		wantIs    error
	}{
		{
			name: "snapshot present",
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Output("0 16384 snapshot 7:4 7:5 P 8\n"))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(loopsJSON(
					[4]string{"/dev/loop0", "7:0", "true", testImage}, // another VM's image loop
					[4]string{"/dev/loop4", "7:4", "true", testImage},
					[4]string{"/dev/loop5", "7:5", "false", testCOW},
				)))
			},
			want: Handles{
				VMID: "vm1", Image: testImage, COW: testCOW,
				OriginLoop: "/dev/loop4", COWLoop: "/dev/loop5",
				DMName: "banger-vm1", Device: "/dev/mapper/banger-vm1",
			},
			wantFound: true,
			wantLog:   "dmsetup table banger-vm1\n" + listArgv + "\n",
		},
		{
			name: "snapshot gone, loops left by a crash",
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Exit(1, dmTableGone))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(loopsJSON(
					[4]string{"/dev/loop0", "7:0", "true", testImage}, // held by banger-vm2
					[4]string{"/dev/loop1", "7:1", "false", "/var/lib/banger/vms/vm2/disk.cow"},
					[4]string{"/dev/loop2", "7:2", "false", testImage}, // writable: not ours
					[4]string{"/dev/loop3", "7:3", "true", testImage},  // the leftover
					[4]string{"/dev/loop4", "7:4", "false", testCOW},
				)))
				f.On([]string{"dmsetup", "table"}, systest.Output("banger-vm2: 0 16384 snapshot 7:0 7:1 P 8\n"))
			},
			want: Handles{
				VMID: "vm1", Image: testImage, COW: testCOW,
				OriginLoop: "/dev/loop3", COWLoop: "/dev/loop4",
			},
			wantFound: true,
			wantLog:   "dmsetup table banger-vm1\n" + listArgv + "\ndmsetup table\n",
		},
		{
			name: "only the COW loop left",
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Exit(1, dmTableGone))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(loopsJSON(
					[4]string{"/dev/loop4", "7:4", "false", testCOW},
				)))
			},
			want:      Handles{VMID: "vm1", Image: testImage, COW: testCOW, COWLoop: "/dev/loop4"},
			wantFound: true,
			wantLog:   "dmsetup table banger-vm1\n" + listArgv + "\n",
		},
		{
			name: "image loops all in use",
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Exit(1, dmTableGone))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(loopsJSON(
					[4]string{"/dev/loop0", "7:0", "true", testImage},
					[4]string{"/dev/loop1", "7:1", "false", "/var/lib/banger/vms/vm2/disk.cow"},
				)))
				f.On([]string{"dmsetup", "table"}, systest.Output("banger-vm2: 0 16384 snapshot 7:0 7:1 P 8\n"))
			},
			want:    Handles{VMID: "vm1", Image: testImage, COW: testCOW},
			wantLog: "dmsetup table banger-vm1\n" + listArgv + "\ndmsetup table\n",
		},
		{
			name: "nothing left",
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Exit(1, "device-mapper: table ioctl on banger-vm1  failed: No such device or address\nCommand failed.\n"))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(""))
			},
			want:    Handles{VMID: "vm1", Image: testImage, COW: testCOW},
			wantLog: "dmsetup table banger-vm1\n" + listArgv + "\n",
		},
		{
			name: "a device of that name that is not a snapshot",
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Output("0 16384 linear 7:4 0\n"))
				f.OnPrefix([]string{"losetup", "--list"}, systest.Output(""))
			},
			want:    Handles{},
			wantLog: "dmsetup table banger-vm1\n" + listArgv + "\n",
			wantIs:  errdefs.ErrFailedPrecondition,
		},
		{
			name: "dmsetup fails otherwise",
			script: func(f *systest.Fake) {
				f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Exit(1, "/dev/mapper/control: open failed: Permission denied\n"))
			},
			want:    Handles{},
			wantLog: "dmsetup table banger-vm1\n",
			wantIs:  errAny,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f systest.Fake
			tt.script(&f)
			h, found, err := Find(t.Context(), &f, testSpec)
			switch {
			case tt.wantIs == nil && err != nil:
				t.Fatalf("Find: %v", err)
			case tt.wantIs != nil && err == nil:
				t.Fatalf("Find succeeded, want an error")
			case tt.wantIs != nil && tt.wantIs != errAny && !errors.Is(err, tt.wantIs):
				t.Errorf("Find = %v, want %v", err, tt.wantIs)
			}
			if found != tt.wantFound {
				t.Errorf("found = %v, want %v", found, tt.wantFound)
			}
			if d := cmp.Diff(tt.want, h); d != "" {
				t.Errorf("handles (-want +got):\n%s", d)
			}
			diffLog(t, &f, tt.wantLog)
		})
	}
}

// errAny marks a test case that wants some error, whatever it wraps.
var errAny = errors.New("any error")

// TestFindThenCleanup runs the reconciler's sequence on crash leftovers:
// what Find reports, Cleanup removes, and only that.
func TestFindThenCleanup(t *testing.T) {
	var f systest.Fake
	f.On([]string{"dmsetup", "table", "banger-vm1"}, systest.Exit(1, dmTableGone))
	f.OnPrefix([]string{"losetup", "--list"}, systest.Output(loopsJSON(
		[4]string{"/dev/loop0", "7:0", "true", testImage},
		[4]string{"/dev/loop1", "7:1", "false", "/var/lib/banger/vms/vm2/disk.cow"},
		[4]string{"/dev/loop3", "7:3", "true", testImage},
	)))
	f.On([]string{"dmsetup", "table"}, systest.Output("banger-vm2: 0 16384 snapshot 7:0 7:1 P 8\n"))
	f.On([]string{"losetup", "-d", "/dev/loop3"})
	h, found, err := Find(t.Context(), &f, testSpec)
	if err != nil || !found {
		t.Fatalf("Find = %+v, %v, %v", h, found, err)
	}
	f.Reset()
	if err := Cleanup(t.Context(), &f, h); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	diffLog(t, &f, listArgv+"\nlosetup -d /dev/loop3\n")
}

func TestParseLoops(t *testing.T) {
	// util-linux before 2.37 printed booleans as strings.
	old := `{"loopdevices": [{"name": "/dev/loop0", "maj:min": "7:0", "ro": "1", "back-file": "/a b/img (deleted)"}]}`
	got, err := parseLoops([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	want := []loopDev{{Name: "/dev/loop0", Devno: "7:0", ReadOnly: true, BackFile: "/a b/img"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("parseLoops (-want +got):\n%s", d)
	}
	if _, err := parseLoops([]byte("losetup: oops")); err == nil {
		t.Error("parseLoops accepted garbage")
	}
}

func TestParseSnapshotTable(t *testing.T) {
	tests := []struct {
		table       string
		origin, cow string
		ok          bool
	}{
		{"0 16384 snapshot 7:0 7:1 P 8\n", "7:0", "7:1", true},
		{"0 16384 snapshot 7:0 7:1 PO 8 1 discard_zeroes_cow", "7:0", "7:1", true},
		{"0 16384 linear 7:0 0\n", "", "", false},
		{"0 8 snapshot 7:0 7:1 P 8\n8 8 linear 7:2 0\n", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		o, c, ok := parseSnapshotTable(tt.table)
		if o != tt.origin || c != tt.cow || ok != tt.ok {
			t.Errorf("parseSnapshotTable(%q) = %q, %q, %v; want %q, %q, %v", tt.table, o, c, ok, tt.origin, tt.cow, tt.ok)
		}
	}
}
