package store

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestVMCRUD(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	c := newClock()
	s.now = c.Now
	f := newFixtures(t, s)

	in := VM{
		Name: "web", ImageID: f.image.ID, KernelID: f.kernel.ID, VCPUs: 2, MemoryMiB: 2048,
		DiskBytes: 8 << 30, VMM: VMMFirecracker, DiskStrategy: "reflink", MAC: "02:00:00:00:00:01",
		Options: json.RawMessage(`{"entrypoint":true}`),
	}
	created, err := s.CreateVM(ctx, in)
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	want := in
	want.ID = created.ID
	want.State = VMCreated
	want.CreatedAt = created.CreatedAt
	want.UpdatedAt = created.CreatedAt
	if len(created.ID) != 16 || created.CreatedAt.IsZero() {
		t.Errorf("CreateVM did not fill ID/CreatedAt: %+v", created)
	}
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("CreateVM (-want +got):\n%s", diff)
	}

	for name, get := range map[string]func() (VM, error){
		"GetVM":       func() (VM, error) { return s.GetVM(ctx, created.ID) },
		"GetVMByName": func() (VM, error) { return s.GetVMByName(ctx, "web") },
		"ResolveVM":   func() (VM, error) { return s.ResolveVM(ctx, created.ID[:6]) },
	} {
		got, err := get()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}

	// UpdateVM rewrites the mutable fields and bumps UpdatedAt.
	upd := created
	upd.Name = "web2"
	upd.VCPUs = 4
	upd.KernelID = ""
	upd.StateReason = "resized"
	upd.Options = nil
	updated, err := s.UpdateVM(ctx, upd)
	if err != nil {
		t.Fatalf("UpdateVM: %v", err)
	}
	want = upd
	want.Options = json.RawMessage(`{}`)
	want.UpdatedAt = updated.UpdatedAt
	if !updated.UpdatedAt.After(created.UpdatedAt) {
		t.Errorf("UpdatedAt did not advance: %v -> %v", created.UpdatedAt, updated.UpdatedAt)
	}
	if diff := cmp.Diff(want, updated); diff != "" {
		t.Errorf("UpdateVM (-want +got):\n%s", diff)
	}

	// SetVMState: running stamps StartedAt; stopping keeps it.
	running, err := s.SetVMState(ctx, created.ID, VMRunning, "")
	if err != nil {
		t.Fatalf("SetVMState: %v", err)
	}
	if running.State != VMRunning || running.StartedAt.IsZero() || !running.StartedAt.Equal(running.UpdatedAt) {
		t.Errorf("after SetVMState(running): state %s started %v updated %v", running.State, running.StartedAt, running.UpdatedAt)
	}
	stopped, err := s.SetVMState(ctx, created.ID, VMError, "vmm exited 1")
	if err != nil {
		t.Fatalf("SetVMState: %v", err)
	}
	if stopped.State != VMError || stopped.StateReason != "vmm exited 1" || !stopped.StartedAt.Equal(running.StartedAt) {
		t.Errorf("after SetVMState(error): %+v", stopped)
	}

	second := f.vm("db")
	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := vmNames(list); !cmp.Equal(got, []string{"web2", "db"}) {
		t.Errorf("ListVMs = %q, want oldest first [web2 db]", got)
	}

	if err := s.DeleteVM(ctx, created.ID); err != nil {
		t.Fatalf("DeleteVM: %v", err)
	}
	if _, err := s.GetVM(ctx, created.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVM after delete: %v, want not found", err)
	}
	if list, _ := s.ListVMs(ctx); len(list) != 1 || list[0].ID != second.ID {
		t.Errorf("ListVMs after delete = %q", vmNames(list))
	}
}

func vmNames(vms []VM) []string {
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	return names
}

func TestVMErrors(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	web := f.vm("web")
	withMAC := testVM("mac1", f.image.ID)
	withMAC.MAC = "02:00:00:00:00:09"
	if _, err := s.CreateVM(ctx, withMAC); err != nil {
		t.Fatal(err)
	}

	mod := func(fn func(*VM)) VM {
		vm := testVM("new", f.image.ID)
		fn(&vm)
		return vm
	}
	tests := []struct {
		name    string
		run     func() error
		is      error
		message string // a substring the error must contain
	}{
		{"get missing", func() error { _, err := s.GetVM(ctx, "nope"); return err }, ErrNotFound, `vm "nope": not found`},
		{"get by missing name", func() error { _, err := s.GetVMByName(ctx, "nope"); return err }, ErrNotFound, `vm "nope": not found`},
		{"update missing", func() error { _, err := s.UpdateVM(ctx, mod(func(v *VM) { v.ID = "nope" })); return err }, ErrNotFound, `vm "nope": not found`},
		{"set state missing", func() error { _, err := s.SetVMState(ctx, "nope", VMRunning, ""); return err }, ErrNotFound, `vm "nope": not found`},
		{"delete missing", func() error { return s.DeleteVM(ctx, "nope") }, ErrNotFound, `vm "nope": not found`},
		{"duplicate name", func() error { _, err := s.CreateVM(ctx, testVM("web", f.image.ID)); return err }, ErrAlreadyExists, `vm name "web": already exists`},
		{"duplicate id", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.ID = web.ID })); return err }, ErrAlreadyExists, `vm id "` + web.ID + `": already exists`},
		{"duplicate mac", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.MAC = withMAC.MAC })); return err }, ErrAlreadyExists, "mac 02:00:00:00:00:09: already exists"},
		{"rename onto taken name", func() error { w := web; w.Name = "mac1"; _, err := s.UpdateVM(ctx, w); return err }, ErrAlreadyExists, `vm name "mac1": already exists`},
		{"missing image", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.ImageID = "noimage" })); return err }, ErrNotFound, `image "noimage": not found`},
		{"missing kernel", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.KernelID = "nokernel" })); return err }, ErrNotFound, `kernel "nokernel": not found`},
		{"bad state", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.State = "exploded" })); return err }, ErrInvalidArgument, "CHECK constraint failed"},
		{"bad state via SetVMState", func() error { _, err := s.SetVMState(ctx, web.ID, "exploded", ""); return err }, ErrInvalidArgument, "CHECK constraint failed"},
		{"bad vmm", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.VMM = "bochs" })); return err }, ErrInvalidArgument, "vmm IN"},
		{"no vmm", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.VMM = "" })); return err }, ErrInvalidArgument, "vmm IN"},
		{"zero vcpus", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.VCPUs = 0 })); return err }, ErrInvalidArgument, "vcpus > 0"},
		{"empty name", func() error { _, err := s.CreateVM(ctx, mod(func(v *VM) { v.Name = "" })); return err }, ErrInvalidArgument, "name <> ''"},
		{"options not an object", func() error {
			_, err := s.CreateVM(ctx, mod(func(v *VM) { v.Options = json.RawMessage(`[1]`) }))
			return err
		}, ErrInvalidArgument, "options_json"},
		{"options not json", func() error {
			_, err := s.CreateVM(ctx, mod(func(v *VM) { v.Options = json.RawMessage(`{`) }))
			return err
		}, ErrInvalidArgument, "options_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if !errors.Is(err, tt.is) {
				t.Fatalf("error = %v, want errors.Is %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error = %q, want it to contain %q", err, tt.message)
			}
		})
	}
	// None of the failed writes left a row behind.
	if list, _ := s.ListVMs(ctx); len(list) != 2 {
		t.Errorf("ListVMs after failed writes = %q, want [web mac1]", vmNames(list))
	}
}

func TestResolveVM(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	mk := func(id, name string) {
		vm := testVM(name, f.image.ID)
		vm.ID = id
		if _, err := s.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	mk("aa11000000000000", "web")
	mk("aa22000000000000", "db")
	mk("bb33000000000000", "aa11") // a name that is also a prefix of web's id

	tests := []struct {
		ref     string
		want    string // name of the VM it resolves to
		is      error
		message string
	}{
		{ref: "web", want: "web"},
		{ref: "aa22000000000000", want: "db"},
		{ref: "aa2", want: "db"},
		{ref: "b", want: "aa11"},
		{ref: "aa11", want: "aa11"}, // the exact name beats the id prefix
		{ref: "aa11000000000000", want: "web"},
		{ref: "aa", is: ErrInvalidArgument, message: `vm id prefix "aa" is ambiguous: it matches vms "db", "web"`},
		{ref: "a", is: ErrInvalidArgument, message: `"db", "web"`},
		{ref: "zz", is: ErrNotFound, message: `vm "zz": not found`},
		{ref: "WEB", is: ErrNotFound}, // names are case-sensitive
		{ref: "", is: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := s.ResolveVM(ctx, tt.ref)
			if tt.is != nil {
				if !errors.Is(err, tt.is) {
					t.Fatalf("ResolveVM(%q) = %+v, %v; want errors.Is %v", tt.ref, got, err, tt.is)
				}
				if !strings.Contains(err.Error(), tt.message) {
					t.Errorf("error = %q, want it to contain %q", err, tt.message)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveVM(%q): %v", tt.ref, err)
			}
			if got.Name != tt.want {
				t.Errorf("ResolveVM(%q) = %q, want %q", tt.ref, got.Name, tt.want)
			}
		})
	}
}

func TestVMCascade(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	web, db := f.vm("web"), f.vm("db")
	for _, a := range []struct{ vm, ip string }{{web.ID, "10.0.0.2"}, {db.ID, "10.0.0.3"}} {
		if err := s.AllocateIP(ctx, a.vm, a.ip); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutWorkspace(ctx, Workspace{VMID: web.ID, HostPath: "/src", GuestDest: "/workspace"}); err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteVM(ctx, web.ID); err != nil {
		t.Fatal(err)
	}
	ips, err := s.ListIPAllocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 1 || ips[0].VMID != db.ID || ips[0].IP != "10.0.0.3" {
		t.Errorf("allocations after deleting web = %+v, want only db's", ips)
	}
	if _, err := s.GetWorkspace(ctx, web.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("workspace after deleting its vm: %v, want not found", err)
	}
	// The freed address can be handed out again.
	again := f.vm("again")
	if err := s.AllocateIP(ctx, again.ID, "10.0.0.2"); err != nil {
		t.Errorf("reallocate freed ip: %v", err)
	}
}

func TestVMStartedAtRoundTrip(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	vm := testVM("x", f.image.ID)
	vm.StartedAt = time.Date(2024, 1, 1, 0, 0, 0, 5, time.FixedZone("CET", 3600))
	got, err := s.CreateVM(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	if !got.StartedAt.Equal(vm.StartedAt) {
		t.Errorf("StartedAt = %v, want %v", got.StartedAt, vm.StartedAt)
	}
	got.StartedAt = time.Time{}
	if got, err = s.UpdateVM(ctx, got); err != nil || !got.StartedAt.IsZero() {
		t.Errorf("UpdateVM clearing StartedAt = %v, %v", got.StartedAt, err)
	}
}
