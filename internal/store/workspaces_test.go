package store

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWorkspace(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	c := newClock()
	s.now = c.Now
	f := newFixtures(t, s)
	vm := f.vm("web")

	if _, err := s.GetWorkspace(ctx, vm.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetWorkspace before prepare: %v, want not found", err)
	}

	in := Workspace{
		VMID: vm.ID, HostPath: "/home/me/src/proj", GuestDest: "/workspace",
		BaseCommit: "0123456789abcdef0123456789abcdef01234567", Branch: "main",
		Manifest: json.RawMessage(`{"files":3,"dirty":true}`),
	}
	put, err := s.PutWorkspace(ctx, in)
	if err != nil {
		t.Fatalf("PutWorkspace: %v", err)
	}
	want := in
	want.PreparedAt = put.PreparedAt
	if put.PreparedAt.IsZero() {
		t.Error("PreparedAt not set")
	}
	if diff := cmp.Diff(want, put); diff != "" {
		t.Errorf("PutWorkspace (-want +got):\n%s", diff)
	}
	if got, err := s.GetWorkspace(ctx, vm.ID); err != nil || !cmp.Equal(want, got) {
		t.Errorf("GetWorkspace = %+v, %v; diff %s", got, err, cmp.Diff(want, got))
	}

	// Preparing again replaces the record.
	again := Workspace{VMID: vm.ID, HostPath: "/other", GuestDest: "/src", PreparedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := s.PutWorkspace(ctx, again); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetWorkspace(ctx, vm.ID); err != nil || !cmp.Equal(again, got) {
		t.Errorf("after re-prepare (-want +got):\n%s (err %v)", cmp.Diff(again, got), err)
	}

	for name, w := range map[string]Workspace{
		"unknown vm":    {VMID: "nope", HostPath: "/a", GuestDest: "/b"},
		"empty path":    {VMID: vm.ID, GuestDest: "/b"},
		"bad manifest":  {VMID: vm.ID, HostPath: "/a", GuestDest: "/b", Manifest: json.RawMessage(`{"x":`)},
		"no guest dest": {VMID: vm.ID, HostPath: "/a"},
	} {
		_, err := s.PutWorkspace(ctx, w)
		want := ErrInvalidArgument
		if name == "unknown vm" {
			want = ErrNotFound
		}
		if !errors.Is(err, want) {
			t.Errorf("PutWorkspace(%s) = %v, want errors.Is %v", name, err, want)
		}
	}

	if err := s.DeleteWorkspace(ctx, vm.ID); err != nil {
		t.Fatalf("DeleteWorkspace: %v", err)
	}
	if err := s.DeleteWorkspace(ctx, vm.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteWorkspace: %v, want not found", err)
	}
}
