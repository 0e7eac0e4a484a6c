package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKernelCRUD(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	in := Kernel{Name: "6.1-cloud", Version: "6.1.0-31-cloud-amd64", Source: "https://example.invalid/k.tar", HasInitrd: true}
	created, err := s.CreateKernel(ctx, in)
	if err != nil {
		t.Fatalf("CreateKernel: %v", err)
	}
	want := in
	want.ID = created.ID
	want.CreatedAt = created.CreatedAt
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("CreateKernel (-want +got):\n%s", diff)
	}
	for name, get := range map[string]func() (Kernel, error){
		"GetKernel":       func() (Kernel, error) { return s.GetKernel(ctx, created.ID) },
		"GetKernelByName": func() (Kernel, error) { return s.GetKernelByName(ctx, "6.1-cloud") },
		"ResolveKernel":   func() (Kernel, error) { return s.ResolveKernel(ctx, created.ID[:3]) },
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
	plain, err := s.CreateKernel(ctx, Kernel{ID: "0123456789abcdef", Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	if plain.ID != "0123456789abcdef" || plain.HasInitrd {
		t.Errorf("CreateKernel(plain) = %+v", plain)
	}
	list, err := s.ListKernels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != created.ID || list[1].ID != plain.ID {
		t.Errorf("ListKernels = %+v", list)
	}
	if err := s.DeleteKernel(ctx, created.ID); err != nil {
		t.Fatalf("DeleteKernel: %v", err)
	}
	if _, err := s.GetKernel(ctx, created.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetKernel after delete: %v", err)
	}
}

func TestKernelErrors(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	k, err := s.CreateKernel(ctx, Kernel{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	im, err := s.CreateImage(ctx, Image{Name: "img", SourceKind: SourceRegister})
	if err != nil {
		t.Fatal(err)
	}
	vm := testVM("pinned", im.ID)
	vm.KernelID = k.ID
	if _, err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		run     func() error
		is      error
		message string
	}{
		{"get missing", func() error { _, err := s.GetKernel(ctx, "nope"); return err }, ErrNotFound, `kernel "nope": not found`},
		{"get by missing name", func() error { _, err := s.GetKernelByName(ctx, "nope"); return err }, ErrNotFound, `kernel "nope": not found`},
		{"delete missing", func() error { return s.DeleteKernel(ctx, "nope") }, ErrNotFound, `kernel "nope": not found`},
		{"duplicate name", func() error { _, err := s.CreateKernel(ctx, Kernel{Name: "k"}); return err }, ErrAlreadyExists, `kernel name "k": already exists`},
		{"duplicate id", func() error { _, err := s.CreateKernel(ctx, Kernel{ID: k.ID, Name: "k2"}); return err }, ErrAlreadyExists, `kernel id "` + k.ID + `": already exists`},
		{"empty name", func() error { _, err := s.CreateKernel(ctx, Kernel{}); return err }, ErrInvalidArgument, "name <> ''"},
		{"delete kernel a vm boots", func() error { return s.DeleteKernel(ctx, k.ID) }, ErrBusy, `kernel "k" is used by vm "pinned": delete it`},
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
}

func TestDefaultKernel(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	if _, err := s.DefaultKernel(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DefaultKernel with none = %v, want ErrNotFound", err)
	}
	a, err := s.CreateKernel(ctx, Kernel{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateKernel(ctx, Kernel{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Default || b.Default {
		t.Fatal("a new kernel is the default")
	}
	for _, want := range []Kernel{a, b, a} {
		if err := s.SetDefaultKernel(ctx, want.ID); err != nil {
			t.Fatal(err)
		}
		got, err := s.DefaultKernel(ctx)
		if err != nil || got.ID != want.ID || !got.Default {
			t.Fatalf("DefaultKernel = %+v, %v; want %s", got, err, want.Name)
		}
		ks, _ := s.ListKernels(ctx)
		n := 0
		for _, k := range ks {
			if k.Default {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d default kernels, want 1", n)
		}
	}
	if err := s.SetDefaultKernel(ctx, "nonesuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetDefaultKernel of a missing kernel = %v, want ErrNotFound", err)
	}
	if got, _ := s.DefaultKernel(ctx); got.ID != a.ID {
		t.Fatalf("a failed SetDefaultKernel changed the default to %q", got.Name)
	}
}
