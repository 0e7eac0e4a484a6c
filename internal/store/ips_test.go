package store

import (
	"errors"
	"strings"
	"testing"
)

func TestIPAllocation(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	web, db, idle := f.vm("web"), f.vm("db"), f.vm("idle")

	if err := s.AllocateIP(ctx, web.ID, "10.0.0.2"); err != nil {
		t.Fatalf("AllocateIP: %v", err)
	}
	// Stored canonically: an IPv4-mapped IPv6 form is the same address.
	if err := s.AllocateIP(ctx, db.ID, "::ffff:10.0.0.3"); err != nil {
		t.Fatalf("AllocateIP: %v", err)
	}
	got, err := s.GetIPAllocation(ctx, db.ID)
	if err != nil || got.IP != "10.0.0.3" || got.VMID != db.ID || got.AllocatedAt.IsZero() {
		t.Errorf("GetIPAllocation(db) = %+v, %v", got, err)
	}

	tests := []struct {
		name    string
		run     func() error
		is      error
		message string
	}{
		{"ip taken", func() error { return s.AllocateIP(ctx, idle.ID, "10.0.0.2") }, ErrAlreadyExists, `ip 10.0.0.2: already exists (allocated to vm "web")`},
		{"ip taken, other spelling", func() error { return s.AllocateIP(ctx, idle.ID, "::ffff:10.0.0.2") }, ErrAlreadyExists, "ip 10.0.0.2: already exists"},
		{"vm has one", func() error { return s.AllocateIP(ctx, web.ID, "10.0.0.9") }, ErrAlreadyExists, "(it has 10.0.0.2)"},
		{"unknown vm", func() error { return s.AllocateIP(ctx, "nope", "10.0.0.9") }, ErrNotFound, `vm "nope": not found`},
		{"not an ip", func() error { return s.AllocateIP(ctx, idle.ID, "10.0.0.300") }, ErrInvalidArgument, "not an IP address"},
		{"empty ip", func() error { return s.AllocateIP(ctx, idle.ID, "") }, ErrInvalidArgument, "not an IP address"},
		{"get none", func() error { _, err := s.GetIPAllocation(ctx, idle.ID); return err }, ErrNotFound, `ip of vm "` + idle.ID + `": not found`},
		{"release none", func() error { return s.ReleaseIP(ctx, idle.ID) }, ErrNotFound, `ip of vm "` + idle.ID + `": not found`},
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

	list, err := s.ListIPAllocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, a := range list {
		held[a.IP] = a.VMID
	}
	if len(list) != 2 || held["10.0.0.2"] != web.ID || held["10.0.0.3"] != db.ID {
		t.Errorf("ListIPAllocations = %+v", list)
	}

	if err := s.ReleaseIP(ctx, web.ID); err != nil {
		t.Fatalf("ReleaseIP: %v", err)
	}
	if err := s.AllocateIP(ctx, idle.ID, "10.0.0.2"); err != nil {
		t.Errorf("allocate released ip: %v", err)
	}
	if list, _ := s.ListIPAllocations(ctx); len(list) != 2 {
		t.Errorf("ListIPAllocations after release and reuse = %+v", list)
	}
}
