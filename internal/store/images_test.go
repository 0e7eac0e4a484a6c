package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestImageCRUD(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	c := newClock()
	s.now = c.Now
	k, err := s.CreateKernel(ctx, Kernel{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}

	in := Image{
		Name: "debian", SourceKind: SourcePull, SourceRef: "docker.io/library/debian:bookworm",
		Config: ImageConfig{
			Entrypoint: []string{"/docker-entrypoint.sh"}, Cmd: []string{"bash"},
			Env: []string{"PATH=/usr/bin"}, WorkingDir: "/root", User: "0:0",
		},
	}
	created, err := s.CreateImage(ctx, in)
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	want := in
	want.ID = created.ID
	want.State = ImagePending
	want.CreatedAt = created.CreatedAt
	want.UpdatedAt = created.CreatedAt
	if len(created.ID) != 16 || created.CreatedAt.IsZero() {
		t.Errorf("CreateImage did not fill ID/CreatedAt: %+v", created)
	}
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("CreateImage (-want +got):\n%s", diff)
	}
	for name, get := range map[string]func() (Image, error){
		"GetImage":       func() (Image, error) { return s.GetImage(ctx, created.ID) },
		"GetImageByName": func() (Image, error) { return s.GetImageByName(ctx, "debian") },
		"ResolveImage":   func() (Image, error) { return s.ResolveImage(ctx, "debian") },
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

	// The pull finishes: digest, size, kernel, ready.
	upd := created
	upd.State = ImageReady
	upd.ManifestDigest = "sha256:" + strings.Repeat("ab", 32)
	upd.SizeBytes = 123 << 20
	upd.DefaultKernelID = k.ID
	upd.Config.Cmd = []string{"sh"}
	upd.SourceRef = "ignored: fixed at creation"
	updated, err := s.UpdateImage(ctx, upd)
	if err != nil {
		t.Fatalf("UpdateImage: %v", err)
	}
	want = upd
	want.SourceRef = created.SourceRef
	want.UpdatedAt = updated.UpdatedAt
	if !updated.UpdatedAt.After(created.UpdatedAt) {
		t.Errorf("UpdatedAt did not advance")
	}
	if diff := cmp.Diff(want, updated); diff != "" {
		t.Errorf("UpdateImage (-want +got):\n%s", diff)
	}

	failed, err := s.SetImageState(ctx, created.ID, ImageFailed, "registry said 401")
	if err != nil {
		t.Fatal(err)
	}
	if failed.State != ImageFailed || failed.StateReason != "registry said 401" || failed.SizeBytes != upd.SizeBytes {
		t.Errorf("SetImageState = %+v", failed)
	}

	// A promoted image records its parent; deleting the parent only
	// unlinks it.
	child, err := s.CreateImage(ctx, Image{
		Name: "debian-dev", State: ImageReady, SourceKind: SourcePromote, SourceRef: "vm-id", ParentImageID: created.ID,
	})
	if err != nil {
		t.Fatal(err)
	}
	if child.ParentImageID != created.ID {
		t.Errorf("ParentImageID = %q, want %q", child.ParentImageID, created.ID)
	}
	list, err := s.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "debian" || list[1].Name != "debian-dev" {
		t.Errorf("ListImages = %+v", list)
	}
	if err := s.DeleteImage(ctx, created.ID); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if got, err := s.GetImage(ctx, child.ID); err != nil || got.ParentImageID != "" {
		t.Errorf("child after deleting parent = %+v, %v; want ParentImageID cleared", got, err)
	}
	if _, err := s.GetImage(ctx, created.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetImage after delete: %v", err)
	}
}

func TestImageErrors(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	f.vm("web")
	f.vm("db")
	pull := func(name string) Image { return Image{Name: name, SourceKind: SourcePull} }
	with := func(fn func(*Image)) Image {
		im := pull("new")
		fn(&im)
		return im
	}

	tests := []struct {
		name    string
		run     func() error
		is      error
		message string
	}{
		{"get missing", func() error { _, err := s.GetImage(ctx, "nope"); return err }, ErrNotFound, `image "nope": not found`},
		{"get by missing name", func() error { _, err := s.GetImageByName(ctx, "nope"); return err }, ErrNotFound, `image "nope": not found`},
		{"resolve missing", func() error { _, err := s.ResolveImage(ctx, "nope"); return err }, ErrNotFound, `image "nope": not found`},
		{"update missing", func() error {
			_, err := s.UpdateImage(ctx, with(func(im *Image) { im.ID = "nope"; im.State = ImageReady }))
			return err
		}, ErrNotFound, `image "nope": not found`},
		{"set state missing", func() error { _, err := s.SetImageState(ctx, "nope", ImageReady, ""); return err }, ErrNotFound, `image "nope": not found`},
		{"delete missing", func() error { return s.DeleteImage(ctx, "nope") }, ErrNotFound, `image "nope": not found`},
		{"duplicate name", func() error { _, err := s.CreateImage(ctx, pull("debian")); return err }, ErrAlreadyExists, `image name "debian": already exists`},
		{"missing kernel", func() error {
			_, err := s.CreateImage(ctx, with(func(im *Image) { im.DefaultKernelID = "nok" }))
			return err
		}, ErrNotFound, `kernel "nok": not found`},
		{"missing parent", func() error {
			_, err := s.CreateImage(ctx, with(func(im *Image) { im.ParentImageID = "nop" }))
			return err
		}, ErrNotFound, `image "nop": not found`},
		{"bad state", func() error { _, err := s.CreateImage(ctx, with(func(im *Image) { im.State = "half" })); return err }, ErrInvalidArgument, "state IN"},
		{"bad source", func() error {
			_, err := s.CreateImage(ctx, with(func(im *Image) { im.SourceKind = "scp" }))
			return err
		}, ErrInvalidArgument, "source_kind IN"},
		{"negative size", func() error { _, err := s.CreateImage(ctx, with(func(im *Image) { im.SizeBytes = -1 })); return err }, ErrInvalidArgument, "size_bytes >= 0"},
		// RESTRICT: an image VMs use cannot go, and the error names them.
		{"delete image in use", func() error { return s.DeleteImage(ctx, f.image.ID) }, ErrBusy, `image "debian" is used by vms "web", "db"`},
		{"delete kernel in use", func() error { return s.DeleteKernel(ctx, f.kernel.ID) }, ErrBusy, `kernel "6.1-cloud" is used by image "debian"`},
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
	if _, err := s.GetImage(ctx, f.image.ID); err != nil {
		t.Errorf("image in use was deleted anyway: %v", err)
	}
	if list, _ := s.ListImages(ctx); len(list) != 1 {
		t.Errorf("failed writes left images behind: %+v", list)
	}

	// Once its VMs are gone the image can be deleted.
	vms, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if err := s.DeleteVM(ctx, vm.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteImage(ctx, f.image.ID); err != nil {
		t.Errorf("DeleteImage with no VMs: %v", err)
	}
}
