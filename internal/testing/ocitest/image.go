package ocitest

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageConfig is the part of an image's config that banger reads.
type ImageConfig struct {
	Platform   string // "os/arch[/variant]"; empty means "linux/amd64"
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

// Image is an OCI image of layers (bottom first) with cfg.
func Image(t testing.TB, cfg ImageConfig, layers ...v1.Layer) v1.Image {
	t.Helper()
	p := cfg.Platform
	if p == "" {
		p = "linux/amd64"
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil {
		t.Fatalf("ocitest: image platform: %v", err)
	}
	cf := &v1.ConfigFile{
		OS:           plat.OS,
		Architecture: plat.Architecture,
		Variant:      plat.Variant,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: cfg.Entrypoint,
			Cmd:        cfg.Cmd,
			Env:        cfg.Env,
			WorkingDir: cfg.WorkingDir,
			User:       cfg.User,
		},
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	base, err = mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatalf("ocitest: image config: %v", err)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatalf("ocitest: image layers: %v", err)
	}
	return img
}

// Push writes img to ref (e.g. reg.Ref("app:1")) over plain HTTP. opts go
// to remote.Write, e.g. remote.WithAuth for a registry with auth.
func Push(t testing.TB, ref string, img v1.Image, opts ...remote.Option) {
	t.Helper()
	r := parseRef(t, ref)
	if err := remote.Write(r, img, withContext(t, opts)...); err != nil {
		t.Fatalf("ocitest: pushing %s: %v", ref, err)
	}
}

// PushIndex writes a multi-platform index of imgs, keyed by platform
// ("linux/amd64", "linux/arm64/v8"), to ref and returns it. Each image's
// config must name the platform it is listed under.
func PushIndex(t testing.TB, ref string, imgs map[string]v1.Image, opts ...remote.Option) v1.ImageIndex {
	t.Helper()
	r := parseRef(t, ref)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, key := range slices.Sorted(maps.Keys(imgs)) {
		plat, err := imagePlatform(imgs[key], key)
		if err != nil {
			t.Fatalf("ocitest: index %s: %v", ref, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        imgs[key],
			Descriptor: v1.Descriptor{Platform: plat},
		})
	}
	if err := remote.WriteIndex(r, idx, withContext(t, opts)...); err != nil {
		t.Fatalf("ocitest: pushing index %s: %v", ref, err)
	}
	return idx
}

// imagePlatform parses key and checks that img's config agrees with it.
func imagePlatform(img v1.Image, key string) (*v1.Platform, error) {
	want, err := v1.ParsePlatform(key)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	if got := cf.Platform(); got == nil || !got.Equals(*want) {
		return nil, fmt.Errorf("image listed as %s has config platform %v", key, got)
	}
	return want, nil
}

func parseRef(t testing.TB, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("ocitest: %v", err)
	}
	return r
}

// withContext puts the test's context before opts, which may override it.
func withContext(t testing.TB, opts []remote.Option) []remote.Option {
	return append([]remote.Option{remote.WithContext(t.Context())}, opts...)
}
